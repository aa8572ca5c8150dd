/* Assembles the decoder and Memformer models from blocks and runs one segment forward and backward. */
#include "trainer/model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/config/config.h"

#include "layers/layers.h"
#include "trainer/model/blocks.h"

struct trainer_model {
    trainer_model_spec spec;
    trainer_params params;
    trainer_tables *tables;
    mt_env env;
    int Vin;                      /* input ids: vocab + BOS */
    mt_param wte;                 /* (Vin, C) */
    mt_param wpe;                 /* (L, C), learned positions only */
    mt_param enc_norm, dec_norm;  /* (C) */
    mt_param lm_head;             /* (vocab, C) */
    int n_dec, n_enc;
    trainer_arena *scratch;       /* one sublayer's backward temporaries, reset after it */
    mt_attn *dec_self, *dec_cross, *enc_self, *enc_reader;
    mt_ffn *dec_ffn, *enc_ffn;
    mt_writer writer;
};

/* Everything one segment's backward needs. Lives in the arena. */
struct trainer_step_act {
    trainer_batch b;
    trainer_arena *arena;
    float *M_in;                  /* (B,S,C) memory the encoder read */
    float *xe0, *xe_last, *E, *enc_rstd;
    mt_attn_act *enc_self, *enc_reader;
    mt_ffn_act *enc_ffn;
    mt_writer_act writer;
    float *xd0, *xd_last, *hfin, *dec_rstd, *logits;
    mt_attn_act *dec_self, *dec_cross;
    mt_ffn_act *dec_ffn;
};

static int uses_memory(const trainer_model *m) { return m->spec.memformer && m->spec.memory; }

trainer_model *trainer_model_create(const trainer_model_spec *spec, comm_ctx *comm) {
    layer_blas_single_thread(); /* results must not depend on the cores a rank runs on */
    trainer_model *m = layer_xcalloc(1, sizeof(*m));
    m->spec = *spec;
    const trainer_model_spec *s = &m->spec;
    int C = s->C, hash = s->hash;
    LAYER_ASSERT(C % s->NH == 0);
    trainer_params_init(&m->params);
    m->tables = trainer_tables_create(comm);
    m->env = (mt_env){.tables = m->tables, .NH = s->NH, .score = s->score,
                      .hash_temp = s->hash_temp, .rope_dims = s->rope_dims};
    mt_builder bld = {.params = &m->params, .tables = m->tables};
    mt_builder *c = &bld;
    m->Vin = s->vocab + 1;
    mt_builder_param(c, &m->wte, "wte", (size_t)m->Vin * C, TRAINER_INIT_NORMAL, 0.02f, 0);
    if (s->rope_dims == 0)
        mt_builder_param(c, &m->wpe, "wpe", (size_t)s->L * C, TRAINER_INIT_NORMAL, 0.01f, 0);
    char nm[64];
    m->n_dec = s->memformer ? s->dec_layers : s->n_layers;
    m->dec_self = layer_xcalloc(m->n_dec, sizeof(mt_attn));
    m->dec_cross = layer_xcalloc(m->n_dec, sizeof(mt_attn));
    m->dec_ffn = layer_xcalloc(m->n_dec, sizeof(mt_ffn));
    for (int l = 0; l < m->n_dec; l++) {
        snprintf(nm, sizeof(nm), "dec%d.self", l);
        mt_attn_define(c, &m->dec_self[l], nm, C, 1, LAYER_ATTN_CAUSAL, hash, s->tau, s->L, s->L);
        if (s->memformer) {
            snprintf(nm, sizeof(nm), "dec%d.cross", l);
            mt_attn_define(c, &m->dec_cross[l], nm, C, 0, LAYER_ATTN_FULL, hash, s->tau, s->L, s->L);
        }
        snprintf(nm, sizeof(nm), "dec%d.ffn", l);
        mt_ffn_define(c, &m->dec_ffn[l], nm, C, hash, s->tau, s->expand_bits, s->L);
    }
    int replayed0 = trainer_tables_ngroups(m->tables); /* the encoder's and writer's groups */
    if (s->memformer) {
        m->n_enc = s->enc_layers;
        m->enc_self = layer_xcalloc(m->n_enc, sizeof(mt_attn));
        m->enc_reader = layer_xcalloc(m->n_enc, sizeof(mt_attn));
        m->enc_ffn = layer_xcalloc(m->n_enc, sizeof(mt_ffn));
        for (int l = 0; l < m->n_enc; l++) {
            snprintf(nm, sizeof(nm), "enc%d.self", l);
            mt_attn_define(c, &m->enc_self[l], nm, C, 1, LAYER_ATTN_FULL, hash, s->tau, s->L, s->L);
            if (s->memory) {
                snprintf(nm, sizeof(nm), "enc%d.reader", l);
                mt_attn_define(c, &m->enc_reader[l], nm, C, 0, LAYER_ATTN_FULL, hash, s->tau, s->L, s->S);
            }
            snprintf(nm, sizeof(nm), "enc%d.ffn", l);
            mt_ffn_define(c, &m->enc_ffn[l], nm, C, hash, s->tau, s->expand_bits, s->L);
        }
        mt_builder_param(c, &m->enc_norm, "enc.norm", C, TRAINER_INIT_ONES, 0, 0);
        if (s->memory)
            mt_writer_define(c, &m->writer, C, s->S, s->L, s->write_temp, s->forgetting, hash, s->tau);
        if (s->memory) /* what the memory pass runs: trainer_model_write_memory */
            for (int g = replayed0; g < trainer_tables_ngroups(m->tables); g++)
                trainer_tables_set_replayed(m->tables, g);
    }
    mt_builder_param(c, &m->dec_norm, "dec.norm", C, TRAINER_INIT_ONES, 0, 0);
    mt_builder_param(c, &m->lm_head, "lm_head", (size_t)s->vocab * C, TRAINER_INIT_NORMAL, 0.02f, 1);
    if (s->define_only) {
        free(bld.refs);
        return m;
    }
    trainer_params_alloc(&m->params, s->seed);
    mt_builder_bind(c);
    if (s->hash && s->tables.streams > 0) {
        m->spec.tables.P = comm_size(comm);
        m->spec.tables.node_ranks = comm_node_size(comm);
        m->spec.tables.batched = !uses_memory(m);
        trainer_tables_plan(m->tables, &m->spec.tables);
        const trainer_plan_run *r = &m->spec.tables;
        trainer_tables_set_blocks(m->tables, (int)trainer_nblocks(r->streams, r->block));
    }
    trainer_tables_set_fast(m->tables, s->tables.fast);
    trainer_tables_alloc(m->tables, s->seed);
    m->scratch = trainer_arena_create((size_t)1 << 20);
    m->env.scratch = m->scratch;
    return m;
}

void trainer_model_free(trainer_model *m) {
    if (!m) return;
    trainer_params_release(&m->params);
    trainer_tables_free(m->tables);
    trainer_arena_free(m->scratch);
    free(m->dec_self);
    free(m->dec_cross);
    free(m->dec_ffn);
    free(m->enc_self);
    free(m->enc_reader);
    free(m->enc_ffn);
    free(m);
}

const trainer_model_spec *trainer_model_get_spec(const trainer_model *m) { return &m->spec; }
trainer_params *trainer_model_params(trainer_model *m) { return &m->params; }
trainer_tables *trainer_model_tables(trainer_model *m) { return m->tables; }

size_t trainer_model_scratch_peak(const trainer_model *m) { return trainer_arena_peak(m->scratch); }

size_t trainer_model_memory_size(const trainer_model *m) {
    return uses_memory(m) ? (size_t)m->spec.S * m->spec.C : 0;
}

/* Projection cost per input row: C*OC multiply-adds dense, K*OC hashed (tau times fewer). */
static double proj_cost(const trainer_model_spec *s, int C, int OC) {
    return s->hash ? (double)(C / s->tau) * OC : (double)C * OC;
}

double trainer_model_flops_per_token(const trainer_model *m) {
    const trainer_model_spec *s = &m->spec;
    int C = s->C, L = s->L, S = s->S, tau = s->tau, H = (C / tau) * (tau + s->expand_bits);
    double attn_self = 3 * proj_cost(s, C, C) + (s->hash ? 0 : (double)C * C) + 2.0 * L * C;
    double ffn = s->hash ? (double)(C / tau) * H + (double)(C / tau) * C : 8.0 * C * C;
    double cross_tok = proj_cost(s, C, C) + (s->hash ? 0 : (double)C * C); /* q (+o) per token */
    double f = m->n_dec * (attn_self + ffn) + (double)C * s->vocab;
    if (s->memformer) {
        /* decoder cross-attention: q per token, k/v over the L encoder outputs, scores */
        f += m->n_dec * (cross_tok + 2 * proj_cost(s, C, C) + 2.0 * L * C);
        f += m->n_enc * (attn_self + ffn);
        if (s->memory) {
            f += m->n_enc * (cross_tok + (2 * proj_cost(s, C, C) * S) / L + 2.0 * S * C);
            f += (proj_cost(s, C, C) * S + 2 * proj_cost(s, C, C) * (S + L) +
                  2.0 * S * (S + L) * C) / L;
        }
    }
    return f;
}

static void embed(trainer_model *m, float *x, const int32_t *tok, int B, int L) {
    const trainer_model_spec *s = &m->spec;
    layer_embedding_forward(x, tok, m->wte.w, B * L, s->C);
    if (s->rope_dims == 0) layer_posemb_forward(x, x, m->wpe.w, B, L, s->C);
}

static void embed_backward(trainer_model *m, const float *dx, const int32_t *tok, int B, int L) {
    const trainer_model_spec *s = &m->spec;
    if (s->rope_dims == 0)
        layer_posemb_backward(NULL, m->wpe.g, dx, B, L, s->C);
    layer_embedding_backward(m->wte.g, dx, tok, B * L, s->C);
}

/* decode = 0 stops after the memory writer: all a memory-only pass needs. */
static double forward_impl(trainer_model *m, trainer_arena *arena, const trainer_batch *b,
                           const float *M_prev, float *M_next, int *count,
                           trainer_step_act **act_out, int decode) {
    const trainer_model_spec *s = &m->spec;
    const mt_env *c = &m->env;
    int B = b->B, L = b->L, C = s->C, S = s->S, N = B * L;
    LAYER_ASSERT(L <= s->L || s->rope_dims > 0);
    trainer_step_act *a = trainer_arena_struct(arena, sizeof(trainer_step_act));
    a->b = *b;
    a->arena = arena;
    const float *E = NULL;
    if (s->memformer) {
        if (s->memory) {
            size_t ms = (size_t)S * C;
            a->M_in = trainer_arena_floats(arena, (size_t)B * ms);
            float *M0 = trainer_arena_floats(arena, ms);
            mt_writer_initial(arena, &m->writer, M0);
            for (int i = 0; i < B; i++)
                memcpy(a->M_in + i * ms, (b->reset[i] || !M_prev) ? M0 : M_prev + i * ms,
                       ms * sizeof(float));
        }
        a->enc_self = trainer_arena_struct(arena, m->n_enc * sizeof(mt_attn_act));
        a->enc_reader = trainer_arena_struct(arena, m->n_enc * sizeof(mt_attn_act));
        a->enc_ffn = trainer_arena_struct(arena, m->n_enc * sizeof(mt_ffn_act));
        float *x = a->xe0 = trainer_arena_floats(arena, (size_t)N * C);
        embed(m, x, b->enc_tok, B, L);
        for (int l = 0; l < m->n_enc; l++) {
            x = mt_attn_forward(c, arena, &m->enc_self[l], &a->enc_self[l], x, NULL, B, L, L);
            if (s->memory)
                x = mt_attn_forward(c, arena, &m->enc_reader[l], &a->enc_reader[l], x, a->M_in, B, L, S);
            x = mt_ffn_forward(c, arena, &m->enc_ffn[l], &a->enc_ffn[l], x, N);
        }
        a->xe_last = x;
        a->E = trainer_arena_floats(arena, (size_t)N * C);
        a->enc_rstd = trainer_arena_floats(arena, N);
        layer_rmsnorm_forward(a->E, a->enc_rstd, x, m->enc_norm.w, N, C);
        E = a->E;
        if (s->memory) {
            const float *Mout = mt_writer_forward(c, arena, &m->writer, &a->writer, a->M_in, E, B, L);
            if (M_next) memcpy(M_next, Mout, (size_t)B * S * C * sizeof(float));
        }
    }
    if (!decode) return 0.0;
    a->dec_self = trainer_arena_struct(arena, m->n_dec * sizeof(mt_attn_act));
    a->dec_cross = trainer_arena_struct(arena, m->n_dec * sizeof(mt_attn_act));
    a->dec_ffn = trainer_arena_struct(arena, m->n_dec * sizeof(mt_ffn_act));
    float *x = a->xd0 = trainer_arena_floats(arena, (size_t)N * C);
    embed(m, x, b->dec_tok, B, L);
    for (int l = 0; l < m->n_dec; l++) {
        x = mt_attn_forward(c, arena, &m->dec_self[l], &a->dec_self[l], x, NULL, B, L, L);
        if (s->memformer)
            x = mt_attn_forward(c, arena, &m->dec_cross[l], &a->dec_cross[l], x, E, B, L, L);
        x = mt_ffn_forward(c, arena, &m->dec_ffn[l], &a->dec_ffn[l], x, N);
    }
    a->xd_last = x;
    a->hfin = trainer_arena_floats(arena, (size_t)N * C);
    a->dec_rstd = trainer_arena_floats(arena, N);
    layer_rmsnorm_forward(a->hfin, a->dec_rstd, x, m->dec_norm.w, N, C);
    a->logits = trainer_arena_floats(arena, (size_t)N * s->vocab);
    layer_linear_forward(a->logits, a->hfin, m->lm_head.w, NULL, N, C, s->vocab);
    int cnt = 0;
    double loss = layer_crossentropy(NULL, &cnt, a->logits, b->tgt, N, s->vocab, 0.0f);
    if (count) *count = cnt;
    if (act_out) *act_out = a;
    return loss;
}

double trainer_model_forward(trainer_model *m, trainer_arena *arena, const trainer_batch *b,
                             const float *M_prev, float *M_next, int *count,
                             trainer_step_act **act) {
    return forward_impl(m, arena, b, M_prev, M_next, count, act, 1);
}

const float *trainer_step_logits(const trainer_step_act *act) { return act->logits; }

void trainer_model_write_memory(trainer_model *m, trainer_arena *arena, const trainer_batch *b,
                                const float *M_prev, float *M_next) {
    if (uses_memory(m)) forward_impl(m, arena, b, M_prev, M_next, NULL, NULL, 0);
}

/* The residual gradient of a stack goes down through two buffers in turn: a sublayer reads
 * one (dx) and adds into the other (dp, zeroed first); what a sublayer's backward needs
 * besides comes from the model's scratch arena and is dropped when it returns. */
typedef struct residual {
    float *buf[2];
    int cur;
    size_t n;
} residual;

static float *residual_next(residual *r) {
    r->cur ^= 1;
    memset(r->buf[r->cur], 0, r->n * sizeof(float));
    return r->buf[r->cur];
}

void trainer_model_backward(trainer_model *m, trainer_step_act *a, float grad_scale,
                            const float *dM_next, float *dM_prev) {
    const trainer_model_spec *s = &m->spec;
    const mt_env *c = &m->env;
    trainer_arena *arena = a->arena, *x = m->scratch;
    const trainer_batch *b = &a->b;
    int B = b->B, L = b->L, C = s->C, S = s->S, N = B * L;
    size_t nx = (size_t)N * C;
    residual r = {{trainer_arena_floats(arena, nx), trainer_arena_floats(arena, nx)}, 1, nx};
    float *dlogits = trainer_arena_floats(x, (size_t)N * s->vocab);
    int cnt;
    layer_crossentropy(dlogits, &cnt, a->logits, b->tgt, N, s->vocab, grad_scale);
    float *dh = trainer_arena_zeros(x, nx);
    layer_linear_backward(dh, m->lm_head.g, NULL, dlogits, a->hfin, m->lm_head.w, N, C, s->vocab);
    float *dx = residual_next(&r);
    layer_rmsnorm_backward(dx, m->dec_norm.g, dh, a->xd_last, m->dec_norm.w, a->dec_rstd, N, C);
    trainer_arena_reset(x);
    float *dE = s->memformer ? trainer_arena_zeros(arena, nx) : NULL;
    for (int l = m->n_dec - 1; l >= 0; l--) {
        float *dp = residual_next(&r);
        mt_ffn_backward(c, x, &m->dec_ffn[l], &a->dec_ffn[l], dp, dx);
        trainer_arena_reset(x);
        dx = dp;
        if (s->memformer) {
            dp = residual_next(&r);
            mt_attn_backward(c, x, &m->dec_cross[l], &a->dec_cross[l], dp, dE, dx);
            trainer_arena_reset(x);
            dx = dp;
        }
        dp = residual_next(&r);
        mt_attn_backward(c, x, &m->dec_self[l], &a->dec_self[l], dp, NULL, dx);
        trainer_arena_reset(x);
        dx = dp;
    }
    embed_backward(m, dx, b->dec_tok, B, L);
    if (!s->memformer) return;

    size_t ms = (size_t)S * C;
    float *dM_in = s->memory ? trainer_arena_zeros(arena, (size_t)B * ms) : NULL;
    if (s->memory && dM_next) {
        mt_writer_backward(c, x, &m->writer, &a->writer, dM_in, dE, dM_next);
        trainer_arena_reset(x);
    }
    dx = residual_next(&r);
    layer_rmsnorm_backward(dx, m->enc_norm.g, dE, a->xe_last, m->enc_norm.w, a->enc_rstd, N, C);
    for (int l = m->n_enc - 1; l >= 0; l--) {
        float *dp = residual_next(&r);
        mt_ffn_backward(c, x, &m->enc_ffn[l], &a->enc_ffn[l], dp, dx);
        trainer_arena_reset(x);
        dx = dp;
        if (s->memory) {
            dp = residual_next(&r);
            mt_attn_backward(c, x, &m->enc_reader[l], &a->enc_reader[l], dp, dM_in, dx);
            trainer_arena_reset(x);
            dx = dp;
        }
        dp = residual_next(&r);
        mt_attn_backward(c, x, &m->enc_self[l], &a->enc_self[l], dp, NULL, dx);
        trainer_arena_reset(x);
        dx = dp;
    }
    embed_backward(m, dx, b->enc_tok, B, L);
    if (!s->memory) return;
    /* streams that restarted read M_0 = v/|v|: their memory gradient belongs to v */
    float *dM0 = NULL;
    for (int i = 0; i < B; i++) {
        if (b->reset[i]) {
            if (!dM0) dM0 = trainer_arena_zeros(arena, ms);
            for (size_t j = 0; j < ms; j++) dM0[j] += dM_in[i * ms + j];
            if (dM_prev) memset(dM_prev + i * ms, 0, ms * sizeof(float));
        } else if (dM_prev) {
            memcpy(dM_prev + i * ms, dM_in + i * ms, ms * sizeof(float));
        }
    }
    if (dM0) {
        mt_writer_initial_backward(x, &m->writer, dM0);
        trainer_arena_reset(x);
    }
}

trainer_segments *trainer_segments_create(const trainer_model *m, int B) {
    trainer_segments *s = layer_xcalloc(1, sizeof(*s));
    s->B = B;
    s->L = m->spec.L;
    s->msize = trainer_model_memory_size(m);
    size_t n = (size_t)B * s->L + 1;
    s->enc = layer_xmalloc(n * sizeof(int32_t));
    s->dec = layer_xmalloc(n * sizeof(int32_t));
    s->tgt = layer_xmalloc(n * sizeof(int32_t));
    s->reset = layer_xcalloc((size_t)B + 1, 1);
    s->M = layer_xcalloc((size_t)B * s->msize + 1, sizeof(float));
    s->Mn = layer_xcalloc((size_t)B * s->msize + 1, sizeof(float));
    s->arena = trainer_arena_create((size_t)4 << 20);
    return s;
}

void trainer_segments_free(trainer_segments *s) {
    if (!s) return;
    trainer_arena_free(s->arena);
    free(s->enc);
    free(s->dec);
    free(s->tgt);
    free(s->reset);
    free(s->M);
    free(s->Mn);
    free(s);
}

static trainer_batch segments_batch(const trainer_segments *s) {
    trainer_batch b = {.B = s->B, .L = s->L, .enc_tok = s->enc, .dec_tok = s->dec,
                       .tgt = s->tgt, .reset = s->reset};
    return b;
}

double trainer_segments_forward(trainer_model *m, trainer_segments *s, int *count,
                                trainer_step_act **act) {
    trainer_batch b = segments_batch(s);
    trainer_arena_reset(s->arena);
    return trainer_model_forward(m, s->arena, &b, s->msize ? s->M : NULL,
                                 s->msize ? s->Mn : NULL, count, act);
}

double trainer_segments_forward_prefix(trainer_model *m, trainer_segments *s, int n, int *count,
                                       trainer_step_act **act) {
    LAYER_ASSERT(!m->spec.memformer && n >= 1 && n <= s->L);
    trainer_batch b = segments_batch(s);
    b.L = n;
    trainer_arena_reset(s->arena);
    return trainer_model_forward(m, s->arena, &b, NULL, NULL, count, act);
}

void trainer_segments_advance(trainer_model *m, trainer_segments *s, int written) {
    if (!written) {
        trainer_batch b = segments_batch(s);
        trainer_arena_reset(s->arena);
        trainer_model_write_memory(m, s->arena, &b, s->msize ? s->M : NULL,
                                   s->msize ? s->Mn : NULL);
    }
    float *x = s->M;
    s->M = s->Mn;
    s->Mn = x;
}
