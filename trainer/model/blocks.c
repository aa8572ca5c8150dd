/* Projections, attention and feed-forward sublayers and the memory writer, forward and backward. */
#include "trainer/model/blocks.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* ---------------- parameters ---------------- */

void mt_builder_param(mt_builder *b, mt_param *p, const char *name, size_t size, trainer_init init,
                      float std, int decay) {
    p->off = trainer_params_add(b->params, name, size, init, std, decay);
    p->w = p->g = NULL;
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        mt_param **r = layer_xmalloc((size_t)b->cap * sizeof(*r));
        if (b->n) memcpy(r, b->refs, (size_t)b->n * sizeof(*r));
        free(b->refs);
        b->refs = r;
    }
    b->refs[b->n++] = p;
}

void mt_builder_bind(mt_builder *b) {
    LAYER_ASSERT(b->params->data != NULL);
    for (int i = 0; i < b->n; i++) {
        b->refs[i]->w = b->params->data + b->refs[i]->off;
        b->refs[i]->g = b->params->grad + b->refs[i]->off;
    }
    free(b->refs);
    b->refs = NULL;
    b->n = b->cap = 0;
}

/* ---------------- projections ---------------- */

/* A hashed projection of nout outputs whose table group is `group` and biases `bias%d`. */
static void proj_hashed(mt_builder *c, mt_proj *p, const char *group, const char *bias, int nout,
                        int C, int OC, int tau, int rows) {
    char nm[96];
    LAYER_ASSERT(C % tau == 0);
    p->tau = tau;
    p->K = C / tau;
    for (int j = 0; j < nout; j++) {
        snprintf(nm, sizeof(nm), bias, j);
        /* MemoryFormer biases start at N(0, 0.001^2) */
        mt_builder_param(c, &p->b[j], nm, OC, TRAINER_INIT_NORMAL, 0.001f, 0);
    }
    p->group = trainer_tables_add(c->tables, group, nout, p->K, tau, OC, rows);
}

void mt_proj_define(mt_builder *c, mt_proj *p, const char *name, int nout, int C, int OC, int hash,
                    int tau, int rows) {
    char nm[96], bias[96];
    memset(p, 0, sizeof(*p));
    p->nout = nout;
    p->C = C;
    p->OC = OC;
    p->hash = hash;
    snprintf(bias, sizeof(bias), "%s.b%%d", name);
    if (hash) {
        proj_hashed(c, p, name, bias, nout, C, OC, tau, rows);
        return;
    }
    for (int j = 0; j < nout; j++) {
        snprintf(nm, sizeof(nm), "%s.w%d", name, j);
        mt_builder_param(c, &p->w[j], nm, (size_t)OC * C, TRAINER_INIT_NORMAL, 0.02f, 1);
        snprintf(nm, sizeof(nm), "%s.b%d", name, j);
        mt_builder_param(c, &p->b[j], nm, OC, TRAINER_INIT_ZEROS, 0, 0);
    }
}

void mt_proj_forward(const mt_env *c, trainer_arena *ar, const mt_proj *p, mt_proj_act *a,
                     float **out, const float *in, int N) {
    if (!p->hash) {
        for (int j = 0; j < p->nout; j++)
            layer_linear_forward(out[j], in, p->w[j].w, p->b[j].w, N, p->C, p->OC);
        return;
    }
    size_t nk = (size_t)N * p->K;
    a->idx = trainer_arena_ints(ar, nk);
    a->s = trainer_arena_floats(ar, nk);
    layer_hash_index(a->idx, a->s, in, N, p->K, p->tau, c->score, c->hash_temp);
    const float *b[3] = {p->b[0].w, p->b[1].w, p->b[2].w};
    trainer_tables_forward(c->tables, p->group, a->idx, a->s, N, out, b, &a->tact, ar);
}

void mt_proj_backward(const mt_env *c, trainer_arena *ar, const mt_proj *p, const mt_proj_act *a,
                      float *din, float *const *dout, const float *in, int N) {
    if (!p->hash) {
        for (int j = 0; j < p->nout; j++)
            layer_linear_backward(din, p->w[j].g, p->b[j].g, dout[j], in, p->w[j].w, N, p->C,
                                  p->OC);
        return;
    }
    float *gs = din ? trainer_arena_zeros(ar, (size_t)N * p->K) : NULL;
    float *db[3] = {p->b[0].g, p->b[1].g, p->b[2].g};
    trainer_tables_backward(c->tables, p->group, &a->tact, (const float *const *)dout, gs, db);
    if (din) layer_hash_score_backward(din, gs, in, N, p->K, p->tau, c->score, c->hash_temp);
}

/* ---------------- attention sublayer ---------------- */

void mt_attn_define(mt_builder *c, mt_attn *m, const char *name, int C, int self,
                    layer_attn_mask mask, int hash, int tau, int q_rows, int kv_rows) {
    char nm[96];
    memset(m, 0, sizeof(*m));
    m->self = self;
    m->C = C;
    m->mask = mask;
    snprintf(nm, sizeof(nm), "%s.norm", name);
    mt_builder_param(c, &m->norm, nm, C, TRAINER_INIT_ONES, 0, 0);
    if (self) {
        snprintf(nm, sizeof(nm), "%s.qkv", name);
        mt_proj_define(c, &m->qkv, nm, 3, C, C, hash, tau, q_rows);
    } else {
        snprintf(nm, sizeof(nm), "%s.q", name);
        mt_proj_define(c, &m->q, nm, 1, C, C, hash, tau, q_rows);
        snprintf(nm, sizeof(nm), "%s.kv", name);
        mt_proj_define(c, &m->kv, nm, 2, C, C, hash, tau, kv_rows);
    }
    m->has_o = !hash;
    if (m->has_o) {
        snprintf(nm, sizeof(nm), "%s.o", name);
        mt_proj_define(c, &m->o, nm, 1, C, C, 0, tau, q_rows);
    }
}

float *mt_attn_forward(const mt_env *c, trainer_arena *ar, const mt_attn *m, mt_attn_act *a,
                       const float *x0, const float *src, int B, int Tq, int Tk) {
    int C = m->C, NH = c->NH;
    size_t nq = (size_t)B * Tq * C, nk = (size_t)B * Tk * C;
    memset(a, 0, sizeof(*a));
    a->B = B;
    a->Tq = Tq;
    a->Tk = Tk;
    a->x0 = x0;
    a->src = src;
    /* h = RMSNorm(x0) is read only by the projections below: it lives where x1 goes (the
       backward recomputes it from x0 and rstd), and without an output projection the
       attention output is written there too and the residual added in place */
    a->x1 = trainer_arena_floats(ar, nq);
    float *h = a->x1;
    a->rstd = trainer_arena_floats(ar, (size_t)B * Tq);
    layer_rmsnorm_forward(h, a->rstd, x0, m->norm.w, B * Tq, C);
    a->q = trainer_arena_floats(ar, nq);
    a->k = trainer_arena_floats(ar, nk);
    a->v = trainer_arena_floats(ar, nk);
    if (m->self) {
        float *out[3] = {a->q, a->k, a->v};
        mt_proj_forward(c, ar, &m->qkv, &a->pa_q, out, h, B * Tq);
        if (c->rope_dims > 0) {
            layer_rope_forward(a->q, a->q, B, Tq, C, NH, c->rope_dims, 10000.0f, 0);
            layer_rope_forward(a->k, a->k, B, Tk, C, NH, c->rope_dims, 10000.0f, 0);
        }
    } else {
        float *oq[1] = {a->q};
        float *okv[2] = {a->k, a->v};
        mt_proj_forward(c, ar, &m->q, &a->pa_q, oq, h, B * Tq);
        mt_proj_forward(c, ar, &m->kv, &a->pa_kv, okv, src, B * Tk);
    }
    a->att = trainer_arena_floats(ar, (size_t)B * NH * Tq * Tk);
    a->y = m->has_o ? trainer_arena_floats(ar, nq) : a->x1; /* O's backward reads y */
    float scale = 1.0f / sqrtf((float)(C / NH));
    layer_attention_forward(a->y, a->att, a->q, a->k, a->v, B, Tq, Tk, C, NH, scale, m->mask);
    if (m->has_o) {
        float *oo[1] = {a->x1};
        mt_proj_forward(c, ar, &m->o, &a->pa_o, oo, a->y, B * Tq);
    }
    for (size_t i = 0; i < nq; i++) a->x1[i] += x0[i];
    return a->x1;
}

void mt_attn_backward(const mt_env *c, trainer_arena *ar, const mt_attn *m, const mt_attn_act *a,
                      float *dx0, float *dsrc, const float *dx1) {
    int C = m->C, NH = c->NH, B = a->B, Tq = a->Tq, Tk = a->Tk;
    size_t nq = (size_t)B * Tq * C, nk = (size_t)B * Tk * C;
    for (size_t i = 0; i < nq; i++) dx0[i] += dx1[i];
    float *dy;
    if (m->has_o) {
        dy = trainer_arena_zeros(ar, nq);
        float *const dd[1] = {(float *)dx1};
        mt_proj_backward(c, ar, &m->o, &a->pa_o, dy, dd, a->y, B * Tq);
    } else {
        dy = (float *)dx1;
    }
    float *dq = trainer_arena_zeros(ar, nq), *dk = trainer_arena_zeros(ar, nk), *dv = trainer_arena_zeros(ar, nk);
    float *scratch = trainer_arena_floats(ar, (size_t)Tq * Tk);
    float scale = 1.0f / sqrtf((float)(C / NH));
    layer_attention_backward(dq, dk, dv, scratch, dy, a->q, a->k, a->v, a->att, B, Tq, Tk, C, NH,
                             scale, m->mask);
    float *dh = trainer_arena_zeros(ar, nq), *h = trainer_arena_floats(ar, nq);
    layer_rmsnorm_apply(h, a->x0, m->norm.w, a->rstd, B * Tq, C);
    if (m->self) {
        if (c->rope_dims > 0) { /* gradient before rotation: rotate back */
            float *dq0 = trainer_arena_zeros(ar, nq), *dk0 = trainer_arena_zeros(ar, nk);
            layer_rope_backward(dq0, dq, B, Tq, C, NH, c->rope_dims, 10000.0f, 0);
            layer_rope_backward(dk0, dk, B, Tk, C, NH, c->rope_dims, 10000.0f, 0);
            dq = dq0;
            dk = dk0;
        }
        float *const dd[3] = {dq, dk, dv};
        mt_proj_backward(c, ar, &m->qkv, &a->pa_q, dh, dd, h, B * Tq);
    } else {
        float *const ddq[1] = {dq};
        float *const ddkv[2] = {dk, dv};
        mt_proj_backward(c, ar, &m->q, &a->pa_q, dh, ddq, h, B * Tq);
        mt_proj_backward(c, ar, &m->kv, &a->pa_kv, dsrc, ddkv, a->src, B * Tk);
    }
    layer_rmsnorm_backward(dx0, m->norm.g, dh, a->x0, m->norm.w, a->rstd, B * Tq, C);
}

/* ---------------- feed-forward sublayer ---------------- */

void mt_ffn_define(mt_builder *c, mt_ffn *m, const char *name, int C, int hash, int tau, int E,
                   int rows) {
    char nm[96], bias[96];
    memset(m, 0, sizeof(*m));
    m->C = C;
    m->hash = hash;
    snprintf(nm, sizeof(nm), "%s.norm", name);
    mt_builder_param(c, &m->norm, nm, C, TRAINER_INIT_ONES, 0, 0);
    if (!hash) {
        m->H = 4 * C;
        snprintf(nm, sizeof(nm), "%s.fc1", name);
        mt_proj_define(c, &m->fc1, nm, 1, C, m->H, 0, tau, rows);
        snprintf(nm, sizeof(nm), "%s.fc2", name);
        mt_proj_define(c, &m->fc2, nm, 1, m->H, C, 0, tau, rows);
        return;
    }
    /* the memory block: ML1 (tau bits) -> LayerNorm -> ML2 (tau + E bits), no activation */
    LAYER_ASSERT(C % tau == 0);
    m->H = C / tau * (tau + E);
    m->fc1 = (mt_proj){.nout = 1, .C = C, .OC = m->H, .hash = 1};
    m->fc2 = (mt_proj){.nout = 1, .C = m->H, .OC = C, .hash = 1};
    snprintf(nm, sizeof(nm), "%s.ml1", name);
    snprintf(bias, sizeof(bias), "%s.ml1.b", name);
    proj_hashed(c, &m->fc1, nm, bias, 1, C, m->H, tau, rows);
    snprintf(nm, sizeof(nm), "%s.ln.w", name);
    mt_builder_param(c, &m->ln_w, nm, m->H, TRAINER_INIT_ONES, 0, 0);
    snprintf(nm, sizeof(nm), "%s.ln.b", name);
    mt_builder_param(c, &m->ln_b, nm, m->H, TRAINER_INIT_ZEROS, 0, 0);
    snprintf(nm, sizeof(nm), "%s.ml2", name);
    snprintf(bias, sizeof(bias), "%s.ml2.b", name);
    proj_hashed(c, &m->fc2, nm, bias, 1, m->H, C, tau + E, rows);
}

float *mt_ffn_forward(const mt_env *c, trainer_arena *ar, const mt_ffn *m, mt_ffn_act *a,
                      const float *x0, int N) {
    int C = m->C;
    size_t n = (size_t)N * C, nh = (size_t)N * m->H;
    a->N = N;
    a->x0 = x0;
    /* h = RMSNorm(x0), read only by fc1, and F's output live where x1 goes: the residual is
       added in place, and the backward recomputes h from x0 and rstd */
    a->x1 = trainer_arena_floats(ar, n);
    float *h = a->x1;
    a->rstd = trainer_arena_floats(ar, N);
    layer_rmsnorm_forward(h, a->rstd, x0, m->norm.w, N, C);
    a->u = trainer_arena_floats(ar, nh);
    /* gl, fc2's input, is a temporary: the backward recomputes it from u */
    float *gl = trainer_arena_floats(c->scratch, nh);
    float *o1[1] = {a->u}, *o2[1] = {a->x1};
    mt_proj_forward(c, ar, &m->fc1, &a->pa1, o1, h, N);
    if (!m->hash) {
        layer_gelu_forward(gl, a->u, N * m->H);
    } else {
        a->lmean = trainer_arena_floats(ar, N);
        a->lrstd = trainer_arena_floats(ar, N);
        layer_layernorm_forward(gl, a->lmean, a->lrstd, a->u, m->ln_w.w, m->ln_b.w, N, m->H);
    }
    mt_proj_forward(c, ar, &m->fc2, &a->pa2, o2, gl, N);
    trainer_arena_reset(c->scratch);
    for (size_t i = 0; i < n; i++) a->x1[i] += x0[i];
    return a->x1;
}

void mt_ffn_backward(const mt_env *c, trainer_arena *ar, const mt_ffn *m, const mt_ffn_act *a,
                     float *dx0, const float *dx1) {
    int C = m->C, N = a->N;
    size_t n = (size_t)N * C, nh = (size_t)N * m->H;
    for (size_t i = 0; i < n; i++) dx0[i] += dx1[i];
    float *dh = trainer_arena_zeros(ar, n), *dgl = trainer_arena_zeros(ar, nh), *du = trainer_arena_zeros(ar, nh);
    float *gl = trainer_arena_floats(ar, nh);
    if (!m->hash)
        layer_gelu_forward(gl, a->u, N * m->H);
    else
        layer_layernorm_apply(gl, a->u, m->ln_w.w, m->ln_b.w, a->lmean, a->lrstd, N, m->H);
    float *const d2[1] = {(float *)dx1};
    mt_proj_backward(c, ar, &m->fc2, &a->pa2, dgl, d2, gl, N);
    if (!m->hash)
        layer_gelu_backward(du, a->u, dgl, N * m->H);
    else
        layer_layernorm_backward(du, m->ln_w.g, m->ln_b.g, dgl, a->u, m->ln_w.w, a->lmean,
                                 a->lrstd, N, m->H);
    float *const d1[1] = {du};
    float *h = trainer_arena_floats(ar, n);
    layer_rmsnorm_apply(h, a->x0, m->norm.w, a->rstd, N, C);
    mt_proj_backward(c, ar, &m->fc1, &a->pa1, dh, d1, h, N);
    layer_rmsnorm_backward(dx0, m->norm.g, dh, a->x0, m->norm.w, a->rstd, N, C);
}

/* ---------------- memory writer ---------------- */

void mt_writer_define(mt_builder *c, mt_writer *w, int C, int S, int L, float temp,
                      int forgetting, int hash, int tau) {
    memset(w, 0, sizeof(*w));
    w->C = C;
    w->S = S;
    w->temp = temp;
    w->forgetting = forgetting;
    mt_proj_define(c, &w->q, "writer.q", 1, C, C, hash, tau, S);
    mt_proj_define(c, &w->kv, "writer.kv", 2, C, C, hash, tau, S + L);
    mt_builder_param(c, &w->vbias, "writer.vbias", (size_t)S * C, TRAINER_INIT_NORMAL, 1.0f, 0);
}

/* y = x / |x| per row of width C; norm (rows) keeps |x|. */
static void rownorm_forward(float *y, float *norm, const float *x, int rows, int C) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += (double)xr[i] * xr[i];
        float nrm = (float)sqrt(ss) + 1e-6f;
        norm[r] = nrm;
        for (int i = 0; i < C; i++) y[(size_t)r * C + i] = xr[i] / nrm;
    }
}

/* dx += (dy - y <y, dy>) / |x| */
static void rownorm_backward(float *dx, const float *dy, const float *y, const float *norm,
                             int rows, int C) {
    for (int r = 0; r < rows; r++) {
        const float *yr = y + (size_t)r * C, *dyr = dy + (size_t)r * C;
        double dot = 0.0;
        for (int i = 0; i < C; i++) dot += (double)yr[i] * dyr[i];
        for (int i = 0; i < C; i++)
            dx[(size_t)r * C + i] += (dyr[i] - yr[i] * (float)dot) / norm[r];
    }
}

float *mt_writer_forward(const mt_env *c, trainer_arena *ar, const mt_writer *w, mt_writer_act *a,
                         const float *M, const float *E, int B, int L) {
    int C = w->C, S = w->S, NH = c->NH, T = S + L;
    size_t nm = (size_t)B * S * C, nc = (size_t)B * T * C;
    memset(a, 0, sizeof(*a));
    a->B = B;
    a->L = L;
    a->M = M;
    a->E = E;
    a->cat = trainer_arena_floats(ar, nc);
    for (int b = 0; b < B; b++) {
        memcpy(a->cat + (size_t)b * T * C, M + (size_t)b * S * C, (size_t)S * C * sizeof(float));
        memcpy(a->cat + ((size_t)b * T + S) * C, E + (size_t)b * L * C,
               (size_t)L * C * sizeof(float));
    }
    a->q = trainer_arena_floats(ar, nm);
    a->k = trainer_arena_floats(ar, nc);
    a->v = trainer_arena_floats(ar, nc);
    float *oq[1] = {a->q}, *okv[2] = {a->k, a->v};
    mt_proj_forward(c, ar, &w->q, &a->pa_q, oq, M, B * S);
    mt_proj_forward(c, ar, &w->kv, &a->pa_kv, okv, a->cat, B * T);
    /* a slot's own value is its content, not a projection of it */
    for (int b = 0; b < B; b++)
        memcpy(a->v + (size_t)b * T * C, M + (size_t)b * S * C, (size_t)S * C * sizeof(float));
    a->att = trainer_arena_floats(ar, (size_t)B * NH * S * T);
    a->mp = trainer_arena_floats(ar, nm);
    float scale = 1.0f / (sqrtf((float)(C / NH)) * w->temp);
    layer_attention_forward(a->mp, a->att, a->q, a->k, a->v, B, S, T, C, NH, scale,
                            LAYER_ATTN_SLOT);
    a->u = trainer_arena_floats(ar, nm);
    const float *vb = w->vbias.w;
    for (int b = 0; b < B; b++)
        for (size_t i = 0; i < (size_t)S * C; i++)
            a->u[(size_t)b * S * C + i] = a->mp[(size_t)b * S * C + i] + (w->forgetting ? vb[i] : 0);
    a->norm = trainer_arena_floats(ar, (size_t)B * S);
    a->Mout = trainer_arena_floats(ar, nm);
    rownorm_forward(a->Mout, a->norm, a->u, B * S, C);
    return a->Mout;
}

void mt_writer_backward(const mt_env *c, trainer_arena *ar, const mt_writer *w,
                        const mt_writer_act *a, float *dM, float *dE, const float *dMout) {
    int C = w->C, S = w->S, NH = c->NH, B = a->B, L = a->L, T = S + L;
    size_t nm = (size_t)B * S * C, nc = (size_t)B * T * C;
    float *du = trainer_arena_zeros(ar, nm);
    rownorm_backward(du, dMout, a->Mout, a->norm, B * S, C);
    if (w->forgetting) {
        float *dvb = w->vbias.g;
        for (int b = 0; b < B; b++)
            for (size_t i = 0; i < (size_t)S * C; i++) dvb[i] += du[(size_t)b * S * C + i];
    }
    float *dq = trainer_arena_zeros(ar, nm), *dk = trainer_arena_zeros(ar, nc), *dv = trainer_arena_zeros(ar, nc);
    float *scratch = trainer_arena_floats(ar, (size_t)S * T);
    float scale = 1.0f / (sqrtf((float)(C / NH)) * w->temp);
    layer_attention_backward(dq, dk, dv, scratch, du, a->q, a->k, a->v, a->att, B, S, T, C, NH,
                             scale, LAYER_ATTN_SLOT);
    /* the slots' own values were M itself: route that gradient to dM, not to W_V */
    for (int b = 0; b < B; b++) {
        float *dvs = dv + (size_t)b * T * C;
        float *dmb = dM + (size_t)b * S * C;
        for (size_t i = 0; i < (size_t)S * C; i++) {
            dmb[i] += dvs[i];
            dvs[i] = 0.0f;
        }
    }
    float *dcat = trainer_arena_zeros(ar, nc);
    float *const dd[2] = {dk, dv};
    mt_proj_backward(c, ar, &w->kv, &a->pa_kv, dcat, dd, a->cat, B * T);
    float *const ddq[1] = {dq};
    mt_proj_backward(c, ar, &w->q, &a->pa_q, dM, ddq, a->M, B * S);
    for (int b = 0; b < B; b++) {
        const float *dcb = dcat + (size_t)b * T * C;
        float *dmb = dM + (size_t)b * S * C, *deb = dE + (size_t)b * L * C;
        for (size_t i = 0; i < (size_t)S * C; i++) dmb[i] += dcb[i];
        for (size_t i = 0; i < (size_t)L * C; i++) deb[i] += dcb[(size_t)S * C + i];
    }
}

void mt_writer_initial(trainer_arena *ar, const mt_writer *w, float *M0) {
    float *norm = trainer_arena_floats(ar, w->S);
    rownorm_forward(M0, norm, w->vbias.w, w->S, w->C);
}

void mt_writer_initial_backward(trainer_arena *ar, const mt_writer *w, const float *dM0) {
    float *norm = trainer_arena_floats(ar, w->S), *M0 = trainer_arena_floats(ar, (size_t)w->S * w->C);
    rownorm_forward(M0, norm, w->vbias.w, w->S, w->C);
    rownorm_backward(w->vbias.g, dM0, M0, norm, w->S, w->C);
}
