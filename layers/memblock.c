/* MemoryFormer memory block (the FFN replacement): hashed ML1 -> LayerNorm -> hashed ML2. */
#include <stdlib.h>
#include <string.h>

#include "layers/hash.h"
#include "layers/layers.h"

static int memblock_h(const layer_memblock *m) { return m->K * (m->TAU + m->E); }

static void memblock_check(const layer_memblock *m) {
    LAYER_ASSERT(m && m->K > 0 && m->TAU >= 1 && m->E >= 0 && m->TAU + m->E <= 30);
    LAYER_ASSERT(m->C == m->K * m->TAU);
    LAYER_ASSERT(m->resolve && m->b1 && m->ln_w && m->ln_b && m->b2);
}

layer_memblock_act *layer_memblock_act_create(const layer_memblock *m, int N) {
    memblock_check(m);
    LAYER_ASSERT(N >= 0);
    size_t nk = (size_t)N * m->K, nh = (size_t)N * memblock_h(m);
    layer_memblock_act *a = layer_xcalloc(1, sizeof(*a));
    a->N = N;
    a->idx1 = layer_xmalloc(nk * sizeof(int32_t));
    a->rowid1 = layer_xmalloc(nk * sizeof(int32_t));
    a->idx2 = layer_xmalloc(nk * sizeof(int32_t));
    a->rowid2 = layer_xmalloc(nk * sizeof(int32_t));
    a->s1 = layer_xmalloc(nk * sizeof(float));
    a->s2 = layer_xmalloc(nk * sizeof(float));
    a->v = layer_xmalloc(nh * sizeof(float));
    a->vn = layer_xmalloc(nh * sizeof(float));
    a->mean = layer_xmalloc((size_t)N * sizeof(float));
    a->rstd = layer_xmalloc((size_t)N * sizeof(float));
    return a;
}

void layer_memblock_act_free(layer_memblock_act *a) {
    if (!a) return;
    free(a->idx1);
    free(a->rowid1);
    free(a->idx2);
    free(a->rowid2);
    free(a->s1);
    free(a->s2);
    free(a->v);
    free(a->vn);
    free(a->mean);
    free(a->rstd);
    free(a);
}

/* out (N,C); u (N,C); a created for this N. Fills a (including the resolved row stores). */
void layer_memblock_forward(float *out, layer_memblock_act *a, const layer_memblock *m,
                            const float *u, int N) {
    memblock_check(m);
    LAYER_ASSERT(a && a->N == N);
    const int C = m->C, K = m->K, H = memblock_h(m);
    layer_hash_index(a->idx1, a->s1, u, N, K, m->TAU, m->mode, m->temp);
    m->resolve(m->ctx, 0, a->idx1, N, a->rowid1, &a->r1);
    layer_hash_forward(a->v, a->rowid1, a->s1, a->r1.rows, m->b1, N, K, a->r1.R, H);
    layer_layernorm_forward(a->vn, a->mean, a->rstd, a->v, m->ln_w, m->ln_b, N, H);
    layer_hash_index(a->idx2, a->s2, a->vn, N, K, m->TAU + m->E, m->mode, m->temp);
    m->resolve(m->ctx, 1, a->idx2, N, a->rowid2, &a->r2);
    layer_hash_forward(out, a->rowid2, a->s2, a->r2.rows, m->b2, N, K, a->r2.R, C);
}

/* du (N,C) += gradient (du may be NULL); dout, u (N,C). Row gradients go to a->r*.drows,
 * parameter gradients to m->d* (each skipped when NULL). */
void layer_memblock_backward(float *du, const layer_memblock *m, const layer_memblock_act *a,
                             const float *dout, const float *u, int N) {
    memblock_check(m);
    LAYER_ASSERT(a && a->N == N);
    const int C = m->C, K = m->K, H = memblock_h(m);
    size_t nk = (size_t)N * K, nh = (size_t)N * H;
    float *gs = layer_xcalloc(nk, sizeof(float));  /* (N,K) score gradient, reused by ML2 then ML1 */
    float *dvn = layer_xcalloc(nh, sizeof(float)); /* (N,H) gradient after LayerNorm */
    float *dv = layer_xcalloc(nh, sizeof(float));  /* (N,H) gradient before LayerNorm */

    layer_hash_backward(a->r2.drows, gs, m->db2, dout, a->rowid2, a->s2, a->r2.rows, N, K,
                        a->r2.R, C);
    layer_hash_score_backward(dvn, gs, a->vn, N, K, m->TAU + m->E, m->mode, m->temp);
    layer_layernorm_backward(dv, m->dln_w, m->dln_b, dvn, a->v, m->ln_w, a->mean, a->rstd, N, H);
    memset(gs, 0, nk * sizeof(float));
    layer_hash_backward(a->r1.drows, du ? gs : NULL, m->db1, dv, a->rowid1, a->s1, a->r1.rows, N,
                        K, a->r1.R, H);
    if (du) layer_hash_score_backward(du, gs, u, N, K, m->TAU, m->mode, m->temp);

    free(gs);
    free(dvn);
    free(dv);
}
