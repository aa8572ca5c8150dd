/* Projections, attention and feed-forward sublayers and the memory writer, forward and backward. */
#include "trainer/blocks.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static float *A(mt_ctx *c, size_t n) { return trainer_arena_floats(c->arena, n); }
static float *Z(mt_ctx *c, size_t n) { return trainer_arena_zeros(c->arena, n); }

/* ---------------- projections ---------------- */

void mt_proj_define(mt_ctx *c, mt_proj *p, const char *name, int nout, int C, int OC, int hash,
                    int tau) {
    char nm[96];
    memset(p, 0, sizeof(*p));
    p->nout = nout;
    p->C = C;
    p->OC = OC;
    p->hash = hash;
    for (int j = 0; j < nout; j++) {
        if (!hash) {
            snprintf(nm, sizeof(nm), "%s.w%d", name, j);
            p->w[j] = trainer_params_add(c->params, nm, (size_t)OC * C, TRAINER_INIT_NORMAL,
                                         0.02f, 1);
        }
        snprintf(nm, sizeof(nm), "%s.b%d", name, j);
        /* MemoryFormer biases start at N(0, 0.001^2); dense biases at zero */
        p->b[j] = trainer_params_add(c->params, nm, OC,
                                     hash ? TRAINER_INIT_NORMAL : TRAINER_INIT_ZEROS, 0.001f, 0);
    }
    if (hash) {
        LAYER_ASSERT(C % tau == 0);
        p->tau = tau;
        p->K = C / tau;
        p->group = trainer_tables_add(c->tables, name, nout, p->K, tau, OC);
    }
}

void mt_proj_forward(mt_ctx *c, const mt_proj *p, mt_proj_act *a, float **out, const float *in,
                     int N) {
    if (!p->hash) {
        for (int j = 0; j < p->nout; j++)
            layer_linear_forward(out[j], in, MT_W(c, p->w[j]), MT_W(c, p->b[j]), N, p->C, p->OC);
        return;
    }
    size_t nk = (size_t)N * p->K;
    a->idx = trainer_arena_ints(c->arena, nk);
    a->rowid = trainer_arena_ints(c->arena, nk);
    a->s = A(c, nk);
    layer_hash_index(a->idx, a->s, in, N, p->K, p->tau, c->score, c->hash_temp);
    trainer_tables_resolve(c->tables, p->group, a->idx, N, a->rowid, a->rows);
    if (p->nout == 3) {
        layer_hashqkv_forward(out[0], out[1], out[2], a->rowid, a->s, a->rows[0].rows,
                              a->rows[1].rows, a->rows[2].rows, MT_W(c, p->b[0]),
                              MT_W(c, p->b[1]), MT_W(c, p->b[2]), N, p->K, a->rows[0].R, p->OC);
    } else {
        for (int j = 0; j < p->nout; j++)
            layer_hash_forward(out[j], a->rowid, a->s, a->rows[j].rows, MT_W(c, p->b[j]), N,
                               p->K, a->rows[j].R, p->OC);
    }
}

void mt_proj_backward(mt_ctx *c, const mt_proj *p, const mt_proj_act *a, float *din,
                      float *const *dout, const float *in, int N) {
    if (!p->hash) {
        for (int j = 0; j < p->nout; j++)
            layer_linear_backward(din, MT_G(c, p->w[j]), MT_G(c, p->b[j]), dout[j], in,
                                  MT_W(c, p->w[j]), N, p->C, p->OC);
        return;
    }
    float *gs = din ? Z(c, (size_t)N * p->K) : NULL;
    if (p->nout == 3) {
        layer_hashqkv_backward(a->rows[0].drows, a->rows[1].drows, a->rows[2].drows, gs,
                               MT_G(c, p->b[0]), MT_G(c, p->b[1]), MT_G(c, p->b[2]), dout[0],
                               dout[1], dout[2], a->rowid, a->s, a->rows[0].rows, a->rows[1].rows,
                               a->rows[2].rows, N, p->K, a->rows[0].R, p->OC);
    } else {
        for (int j = 0; j < p->nout; j++)
            layer_hash_backward(a->rows[j].drows, gs, MT_G(c, p->b[j]), dout[j], a->rowid, a->s,
                                a->rows[j].rows, N, p->K, a->rows[j].R, p->OC);
    }
    if (din) layer_hash_score_backward(din, gs, in, N, p->K, p->tau, c->score, c->hash_temp);
}

/* ---------------- attention sublayer ---------------- */

void mt_attn_define(mt_ctx *c, mt_attn *m, const char *name, int C, int self,
                    layer_attn_mask mask, int hash, int tau) {
    char nm[96];
    memset(m, 0, sizeof(*m));
    m->self = self;
    m->C = C;
    m->mask = mask;
    snprintf(nm, sizeof(nm), "%s.norm", name);
    m->norm_w = trainer_params_add(c->params, nm, C, TRAINER_INIT_ONES, 0, 0);
    if (self) {
        snprintf(nm, sizeof(nm), "%s.qkv", name);
        mt_proj_define(c, &m->qkv, nm, 3, C, C, hash, tau);
    } else {
        snprintf(nm, sizeof(nm), "%s.q", name);
        mt_proj_define(c, &m->q, nm, 1, C, C, hash, tau);
        snprintf(nm, sizeof(nm), "%s.kv", name);
        mt_proj_define(c, &m->kv, nm, 2, C, C, hash, tau);
    }
    m->has_o = !hash;
    if (m->has_o) {
        snprintf(nm, sizeof(nm), "%s.o", name);
        mt_proj_define(c, &m->o, nm, 1, C, C, 0, tau);
    }
}

float *mt_attn_forward(mt_ctx *c, const mt_attn *m, mt_attn_act *a, const float *x0,
                       const float *src, int B, int Tq, int Tk) {
    int C = m->C, NH = c->NH;
    size_t nq = (size_t)B * Tq * C, nk = (size_t)B * Tk * C;
    memset(a, 0, sizeof(*a));
    a->B = B;
    a->Tq = Tq;
    a->Tk = Tk;
    a->x0 = x0;
    a->src = src;
    a->h = A(c, nq);
    a->rstd = A(c, (size_t)B * Tq);
    layer_rmsnorm_forward(a->h, a->rstd, x0, MT_W(c, m->norm_w), B * Tq, C);
    a->q = A(c, nq);
    a->k = A(c, nk);
    a->v = A(c, nk);
    if (m->self) {
        float *out[3] = {a->q, a->k, a->v};
        mt_proj_forward(c, &m->qkv, &a->pa_q, out, a->h, B * Tq);
        if (c->rope_dims > 0) {
            layer_rope_forward(a->q, a->q, B, Tq, C, NH, c->rope_dims, 10000.0f, 0);
            layer_rope_forward(a->k, a->k, B, Tk, C, NH, c->rope_dims, 10000.0f, 0);
        }
    } else {
        float *oq[1] = {a->q};
        float *okv[2] = {a->k, a->v};
        mt_proj_forward(c, &m->q, &a->pa_q, oq, a->h, B * Tq);
        mt_proj_forward(c, &m->kv, &a->pa_kv, okv, src, B * Tk);
    }
    a->att = A(c, (size_t)B * NH * Tq * Tk);
    a->y = A(c, nq);
    float scale = 1.0f / sqrtf((float)(C / NH));
    layer_attention_forward(a->y, a->att, a->q, a->k, a->v, B, Tq, Tk, C, NH, scale, m->mask);
    a->x1 = A(c, nq);
    if (m->has_o) {
        float *oo[1] = {a->x1};
        mt_proj_forward(c, &m->o, &a->pa_o, oo, a->y, B * Tq);
        for (size_t i = 0; i < nq; i++) a->x1[i] += x0[i];
    } else {
        for (size_t i = 0; i < nq; i++) a->x1[i] = x0[i] + a->y[i];
    }
    return a->x1;
}

void mt_attn_backward(mt_ctx *c, const mt_attn *m, const mt_attn_act *a, float *dx0, float *dsrc,
                      const float *dx1) {
    int C = m->C, NH = c->NH, B = a->B, Tq = a->Tq, Tk = a->Tk;
    size_t nq = (size_t)B * Tq * C, nk = (size_t)B * Tk * C;
    for (size_t i = 0; i < nq; i++) dx0[i] += dx1[i];
    float *dy;
    if (m->has_o) {
        dy = Z(c, nq);
        float *const dd[1] = {(float *)dx1};
        mt_proj_backward(c, &m->o, &a->pa_o, dy, dd, a->y, B * Tq);
    } else {
        dy = (float *)dx1;
    }
    float *dq = Z(c, nq), *dk = Z(c, nk), *dv = Z(c, nk);
    float *scratch = A(c, (size_t)Tq * Tk);
    float scale = 1.0f / sqrtf((float)(C / NH));
    layer_attention_backward(dq, dk, dv, scratch, dy, a->q, a->k, a->v, a->att, B, Tq, Tk, C, NH,
                             scale, m->mask);
    float *dh = Z(c, nq);
    if (m->self) {
        if (c->rope_dims > 0) { /* gradient before rotation: rotate back */
            float *dq0 = Z(c, nq), *dk0 = Z(c, nk);
            layer_rope_backward(dq0, dq, B, Tq, C, NH, c->rope_dims, 10000.0f, 0);
            layer_rope_backward(dk0, dk, B, Tk, C, NH, c->rope_dims, 10000.0f, 0);
            dq = dq0;
            dk = dk0;
        }
        float *const dd[3] = {dq, dk, dv};
        mt_proj_backward(c, &m->qkv, &a->pa_q, dh, dd, a->h, B * Tq);
    } else {
        float *const ddq[1] = {dq};
        float *const ddkv[2] = {dk, dv};
        mt_proj_backward(c, &m->q, &a->pa_q, dh, ddq, a->h, B * Tq);
        mt_proj_backward(c, &m->kv, &a->pa_kv, dsrc, ddkv, a->src, B * Tk);
    }
    layer_rmsnorm_backward(dx0, MT_G(c, m->norm_w), dh, a->x0, MT_W(c, m->norm_w), a->rstd,
                           B * Tq, C);
}

/* ---------------- feed-forward sublayer ---------------- */

void mt_ffn_define(mt_ctx *c, mt_ffn *m, const char *name, int C, int hash, int tau, int E) {
    char nm[96];
    memset(m, 0, sizeof(*m));
    m->C = C;
    m->hash = hash;
    snprintf(nm, sizeof(nm), "%s.norm", name);
    m->norm_w = trainer_params_add(c->params, nm, C, TRAINER_INIT_ONES, 0, 0);
    if (!hash) {
        m->H = 4 * C;
        snprintf(nm, sizeof(nm), "%s.fc1", name);
        mt_proj_define(c, &m->fc1, nm, 1, C, m->H, 0, tau);
        snprintf(nm, sizeof(nm), "%s.fc2", name);
        mt_proj_define(c, &m->fc2, nm, 1, m->H, C, 0, tau);
        return;
    }
    int K = C / tau;
    LAYER_ASSERT(C % tau == 0);
    m->H = K * (tau + E);
    m->tables = c->tables;
    snprintf(nm, sizeof(nm), "%s.ml1", name);
    m->g1 = trainer_tables_add(c->tables, nm, 1, K, tau, m->H);
    snprintf(nm, sizeof(nm), "%s.ml1.b", name);
    m->b1 = trainer_params_add(c->params, nm, m->H, TRAINER_INIT_NORMAL, 0.001f, 0);
    snprintf(nm, sizeof(nm), "%s.ln.w", name);
    m->ln_w = trainer_params_add(c->params, nm, m->H, TRAINER_INIT_ONES, 0, 0);
    snprintf(nm, sizeof(nm), "%s.ln.b", name);
    m->ln_b = trainer_params_add(c->params, nm, m->H, TRAINER_INIT_ZEROS, 0, 0);
    snprintf(nm, sizeof(nm), "%s.ml2", name);
    m->g2 = trainer_tables_add(c->tables, nm, 1, K, tau + E, C);
    snprintf(nm, sizeof(nm), "%s.ml2.b", name);
    m->b2 = trainer_params_add(c->params, nm, C, TRAINER_INIT_NORMAL, 0.001f, 0);
}

static void memblock_resolve(void *ctx, int which, const int32_t *idx, int N, int32_t *rowid,
                             layer_hash_rows *out) {
    const mt_ffn *m = ctx;
    trainer_tables_resolve(m->tables, which == 0 ? m->g1 : m->g2, idx, N, rowid, out);
}

static layer_memblock memblock_of(mt_ctx *c, const mt_ffn *m) {
    const trainer_table_group *g1 = trainer_tables_group(c->tables, m->g1);
    const trainer_table_group *g2 = trainer_tables_group(c->tables, m->g2);
    layer_memblock mb = {
        .C = m->C, .K = g1->K, .TAU = g1->tau, .E = g2->tau - g1->tau,
        .mode = c->score, .temp = c->hash_temp,
        .b1 = MT_W(c, m->b1), .ln_w = MT_W(c, m->ln_w), .ln_b = MT_W(c, m->ln_b),
        .b2 = MT_W(c, m->b2),
        .db1 = MT_G(c, m->b1), .dln_w = MT_G(c, m->ln_w), .dln_b = MT_G(c, m->ln_b),
        .db2 = MT_G(c, m->b2),
        .resolve = memblock_resolve, .ctx = (void *)m,
    };
    return mb;
}

float *mt_ffn_forward(mt_ctx *c, const mt_ffn *m, mt_ffn_act *a, const float *x0, int N) {
    int C = m->C;
    size_t n = (size_t)N * C;
    a->N = N;
    a->x0 = x0;
    a->h = A(c, n);
    a->rstd = A(c, N);
    layer_rmsnorm_forward(a->h, a->rstd, x0, MT_W(c, m->norm_w), N, C);
    a->x1 = A(c, n);
    float *f = A(c, n);
    if (!m->hash) {
        a->u = A(c, (size_t)N * m->H);
        a->gl = A(c, (size_t)N * m->H);
        float *o1[1] = {a->u}, *o2[1] = {f};
        mt_proj_forward(c, &m->fc1, &a->pa1, o1, a->h, N);
        layer_gelu_forward(a->gl, a->u, N * m->H);
        mt_proj_forward(c, &m->fc2, &a->pa2, o2, a->gl, N);
    } else {
        layer_memblock mb = memblock_of(c, m);
        /* the block's activations come from the step arena like every other activation */
        size_t nk = (size_t)N * mb.K, nh = (size_t)N * m->H;
        layer_memblock_act *ma = &a->mba;
        ma->N = N;
        ma->idx1 = trainer_arena_ints(c->arena, nk);
        ma->rowid1 = trainer_arena_ints(c->arena, nk);
        ma->idx2 = trainer_arena_ints(c->arena, nk);
        ma->rowid2 = trainer_arena_ints(c->arena, nk);
        ma->s1 = A(c, nk);
        ma->s2 = A(c, nk);
        ma->v = A(c, nh);
        ma->vn = A(c, nh);
        ma->mean = A(c, N);
        ma->rstd = A(c, N);
        layer_memblock_forward(f, ma, &mb, a->h, N);
    }
    for (size_t i = 0; i < n; i++) a->x1[i] = x0[i] + f[i];
    return a->x1;
}

void mt_ffn_backward(mt_ctx *c, const mt_ffn *m, const mt_ffn_act *a, float *dx0, const float *dx1) {
    int C = m->C, N = a->N;
    size_t n = (size_t)N * C;
    for (size_t i = 0; i < n; i++) dx0[i] += dx1[i];
    float *dh = Z(c, n);
    if (!m->hash) {
        float *dgl = Z(c, (size_t)N * m->H), *du = Z(c, (size_t)N * m->H);
        float *const d2[1] = {(float *)dx1};
        mt_proj_backward(c, &m->fc2, &a->pa2, dgl, d2, a->gl, N);
        layer_gelu_backward(du, a->u, dgl, N * m->H);
        float *const d1[1] = {du};
        mt_proj_backward(c, &m->fc1, &a->pa1, dh, d1, a->h, N);
    } else {
        layer_memblock mb = memblock_of(c, m);
        layer_memblock_backward(dh, &mb, &a->mba, dx1, a->h, N);
    }
    layer_rmsnorm_backward(dx0, MT_G(c, m->norm_w), dh, a->x0, MT_W(c, m->norm_w), a->rstd, N, C);
}

/* ---------------- memory writer ---------------- */

void mt_writer_define(mt_ctx *c, mt_writer *w, int C, int S, float temp, int forgetting, int hash,
                      int tau) {
    memset(w, 0, sizeof(*w));
    w->C = C;
    w->S = S;
    w->temp = temp;
    w->forgetting = forgetting;
    mt_proj_define(c, &w->q, "writer.q", 1, C, C, hash, tau);
    mt_proj_define(c, &w->kv, "writer.kv", 2, C, C, hash, tau);
    w->vbias = trainer_params_add(c->params, "writer.vbias", (size_t)S * C, TRAINER_INIT_NORMAL,
                                  1.0f, 0);
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

float *mt_writer_forward(mt_ctx *c, const mt_writer *w, mt_writer_act *a, const float *M,
                         const float *E, int B, int L) {
    int C = w->C, S = w->S, NH = c->NH, T = S + L;
    size_t nm = (size_t)B * S * C, nc = (size_t)B * T * C;
    memset(a, 0, sizeof(*a));
    a->B = B;
    a->L = L;
    a->M = M;
    a->E = E;
    a->cat = A(c, nc);
    for (int b = 0; b < B; b++) {
        memcpy(a->cat + (size_t)b * T * C, M + (size_t)b * S * C, (size_t)S * C * sizeof(float));
        memcpy(a->cat + ((size_t)b * T + S) * C, E + (size_t)b * L * C,
               (size_t)L * C * sizeof(float));
    }
    a->q = A(c, nm);
    a->k = A(c, nc);
    a->v = A(c, nc);
    float *oq[1] = {a->q}, *okv[2] = {a->k, a->v};
    mt_proj_forward(c, &w->q, &a->pa_q, oq, M, B * S);
    mt_proj_forward(c, &w->kv, &a->pa_kv, okv, a->cat, B * T);
    /* a slot's own value is its content, not a projection of it */
    for (int b = 0; b < B; b++)
        memcpy(a->v + (size_t)b * T * C, M + (size_t)b * S * C, (size_t)S * C * sizeof(float));
    a->att = A(c, (size_t)B * NH * S * T);
    a->mp = A(c, nm);
    float scale = 1.0f / (sqrtf((float)(C / NH)) * w->temp);
    layer_attention_forward(a->mp, a->att, a->q, a->k, a->v, B, S, T, C, NH, scale,
                            LAYER_ATTN_SLOT);
    a->u = A(c, nm);
    const float *vb = MT_W(c, w->vbias);
    for (int b = 0; b < B; b++)
        for (size_t i = 0; i < (size_t)S * C; i++)
            a->u[(size_t)b * S * C + i] = a->mp[(size_t)b * S * C + i] + (w->forgetting ? vb[i] : 0);
    a->norm = A(c, (size_t)B * S);
    a->Mout = A(c, nm);
    rownorm_forward(a->Mout, a->norm, a->u, B * S, C);
    return a->Mout;
}

void mt_writer_backward(mt_ctx *c, const mt_writer *w, const mt_writer_act *a, float *dM, float *dE,
                        const float *dMout) {
    int C = w->C, S = w->S, NH = c->NH, B = a->B, L = a->L, T = S + L;
    size_t nm = (size_t)B * S * C, nc = (size_t)B * T * C;
    float *du = Z(c, nm);
    rownorm_backward(du, dMout, a->Mout, a->norm, B * S, C);
    if (w->forgetting) {
        float *dvb = MT_G(c, w->vbias);
        for (int b = 0; b < B; b++)
            for (size_t i = 0; i < (size_t)S * C; i++) dvb[i] += du[(size_t)b * S * C + i];
    }
    float *dq = Z(c, nm), *dk = Z(c, nc), *dv = Z(c, nc);
    float *scratch = A(c, (size_t)S * T);
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
    float *dcat = Z(c, nc);
    float *const dd[2] = {dk, dv};
    mt_proj_backward(c, &w->kv, &a->pa_kv, dcat, dd, a->cat, B * T);
    float *const ddq[1] = {dq};
    mt_proj_backward(c, &w->q, &a->pa_q, dM, ddq, a->M, B * S);
    for (int b = 0; b < B; b++) {
        const float *dcb = dcat + (size_t)b * T * C;
        float *dmb = dM + (size_t)b * S * C, *deb = dE + (size_t)b * L * C;
        for (size_t i = 0; i < (size_t)S * C; i++) dmb[i] += dcb[i];
        for (size_t i = 0; i < (size_t)L * C; i++) deb[i] += dcb[(size_t)S * C + i];
    }
}

void mt_writer_initial(mt_ctx *c, const mt_writer *w, float *M0) {
    float *norm = A(c, w->S);
    rownorm_forward(M0, norm, MT_W(c, w->vbias), w->S, w->C);
}

void mt_writer_initial_backward(mt_ctx *c, const mt_writer *w, const float *dM0) {
    float *norm = A(c, w->S), *M0 = A(c, (size_t)w->S * w->C);
    rownorm_forward(M0, norm, MT_W(c, w->vbias), w->S, w->C);
    rownorm_backward(MT_G(c, w->vbias), dM0, M0, norm, w->S, w->C);
}
