/* Tests of the MemoryFormer memory layer: bucket index, scores, gradients, fast kernels, memory block, LayerNorm. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers/hash.h"
#include "layers/layers.h"
#include "tests/testutil.h"

/* Normal values pushed at least `margin` away from 0, so a finite-difference step of less than
 * margin never flips a bucket bit (the layer is discontinuous there). */
/* A store of R rows of OC (padding zero) holding R*OC normal draws, row after row: the draws
 * do not depend on the store's layout. Released with free(). */
static float *store_randn(layer_rng *r, int R, int OC, float std) {
    float *rows = tu_randn(r, (size_t)R * OC, std), *st = tu_zeros(layer_hash_store_floats(R, OC));
    for (int i = 0; i < R; i++) layer_hash_store_put(st, R, OC, i, rows + (size_t)i * OC);
    free(rows);
    return st;
}

static float *rand_away(layer_rng *r, size_t n, float margin) {
    float *x = tu_randn(r, n, 1.0f);
    for (size_t i = 0; i < n; i++) x[i] = x[i] >= 0.0f ? margin + x[i] : -margin + x[i];
    return x;
}

static const char *mode_name(layer_score_mode m) { return m == LAYER_SCORE_PROB ? "prob" : "l1prob"; }

/* ---------------- LayerNorm ---------------- */

START_TEST(test_layernorm_forward_values) {
    /* Row (1,2,3,4): mean 2.5, variance 1.25. */
    float in[4] = {1, 2, 3, 4}, w[4] = {1, 2, 1, 1}, b[4] = {0, 0, 0, 0.5f}, out[4], mean, rstd;
    layer_layernorm_forward(out, &mean, &rstd, in, w, b, 1, 4);
    float r = 1.0f / sqrtf(1.25f + 1e-5f);
    ck_assert_float_eq_tol(mean, 2.5f, 1e-6f);
    ck_assert_float_eq_tol(rstd, r, 1e-6f);
    ck_assert_float_eq_tol(out[0], -1.5f * r, 1e-6f);
    ck_assert_float_eq_tol(out[1], -0.5f * r * 2.0f, 1e-6f);
    ck_assert_float_eq_tol(out[3], 1.5f * r + 0.5f, 1e-6f);
}
END_TEST

/* ---------------- bucket index and scores ---------------- */

START_TEST(test_index_bits_hand_made) {
    /* TAU = 3, K = 4; first element is the most significant bit; both zeros count as >= 0. */
    const float x[12] = {1.0f, -1.0f, 0.0f,   /* 1 0 1 -> 5 */
                         -0.0f, 2.0f, -3.0f,  /* 1 1 0 -> 6 */
                         -1.0f, -2.0f, -0.5f, /* 0 0 0 -> 0 */
                         -1.0f, -2.0f, 0.5f}; /* 0 0 1 -> 1 */
    int32_t idx[4];
    float s[4];
    layer_hash_index(idx, s, x, 1, 4, 3, LAYER_SCORE_PROB, 1.0f);
    ck_assert_int_eq(idx[0], 5);
    ck_assert_int_eq(idx[1], 6);
    ck_assert_int_eq(idx[2], 0);
    ck_assert_int_eq(idx[3], 1);
    /* TAU = 8 over two tokens: only the first element non-negative -> 128; only the last -> 1. */
    float y[16];
    for (int i = 0; i < 16; i++) y[i] = -1.0f;
    y[0] = 0.25f;
    y[15] = 0.0f;
    int32_t id2[2];
    float s2[2];
    layer_hash_index(id2, s2, y, 2, 1, 8, LAYER_SCORE_L1PROB, 1.0f);
    ck_assert_int_eq(id2[0], 128);
    ck_assert_int_eq(id2[1], 1);
    /* rowid of the local layout: k * 2^TAU + idx. */
    int32_t rid[4];
    layer_hash_rowid_local(rid, idx, 1, 4, 3);
    ck_assert_int_eq(rid[0], 5);
    ck_assert_int_eq(rid[1], 8 + 6);
    ck_assert_int_eq(rid[2], 16 + 0);
    ck_assert_int_eq(rid[3], 24 + 1);
}
END_TEST

START_TEST(test_index_bits_wide_rows) {
    /* Rows long enough for the vector paths (TAU dividing 16: several chunks per vector) and a
     * chunk count that leaves a tail; zeros of both signs and tiny values included. Bits are
     * checked against the definition, scores against a double-precision evaluation. */
    layer_rng r;
    tu_seed(&r, "index_wide");
    const int taus[] = {1, 2, 4, 8, 16, 3, 10};
    for (size_t ti = 0; ti < sizeof(taus) / sizeof(taus[0]); ti++) {
        int TAU = taus[ti], K = 37, N = 3;
        size_t nx = (size_t)N * K * TAU, nk = (size_t)N * K;
        float *x = tu_randn(&r, nx, 1.0f);
        for (size_t i = 0; i < nx; i += 7) x[i] = (i / 7) % 2 ? -0.0f : 0.0f;
        for (size_t i = 3; i < nx; i += 11) x[i] = x[i] * 1e-30f;
        int32_t *idx = malloc(nk * sizeof(int32_t));
        float *s = malloc(nk * sizeof(float));
        for (int mode = 0; mode < 2; mode++) {
            layer_score_mode md = mode ? LAYER_SCORE_L1PROB : LAYER_SCORE_PROB;
            double t = mode ? 1.0 : 0.7;
            layer_hash_index(idx, s, x, N, K, TAU, md, (float)t);
            for (size_t e = 0; e < nk; e++) {
                const float *z = x + e * TAU;
                int32_t want = 0;
                double p = 1.0, S = 0.0;
                for (int i = 0; i < TAU; i++) {
                    want |= (int32_t)(!signbit(z[i]) || z[i] == 0.0f) << (TAU - 1 - i);
                    p /= 1.0 + exp(-2.0 * fabs((double)z[i]) / t);
                    S += fabs((double)z[i]);
                }
                double sw = mode ? S * p : p;
                ck_assert_msg(idx[e] == want, "TAU=%d entry %zu: idx %d, want %d", TAU, e, idx[e], want);
                ck_assert_msg(fabs(s[e] - sw) <= 2e-6 * sw + 1e-30, "TAU=%d mode %d entry %zu: %g vs %g",
                              TAU, mode, e, s[e], sw);
            }
        }
        free(x); free(idx); free(s);
    }
}
END_TEST

/* The paper's score: the probability of the chosen code c* = sign(z) under a softmax over all
 * codes c in {-1,+1}^tau of <z, c>/t, summed here term by term in double. Since
 * sum_c exp(<z,c>/t) = prod_i (e^{z_i/t} + e^{-z_i/t}) and <z,c*> = sum_i |z_i|, it equals
 * prod_i 1/(1 + exp(-2|z_i|/t)), the form the layer evaluates. */
static double softmax_chosen(const float *z, int tau, double t) {
    double num = 0.0, den = 0.0;
    for (int i = 0; i < tau; i++) num += fabs((double)z[i]) / t;
    for (int c = 0; c < (1 << tau); c++) {
        double dot = 0.0;
        for (int i = 0; i < tau; i++) dot += ((c >> (tau - 1 - i)) & 1 ? 1.0 : -1.0) * z[i];
        den += exp(dot / t);
    }
    return exp(num) / den;
}

START_TEST(test_score_vs_softmax_over_codes) {
    layer_rng r;
    tu_seed(&r, "score_softmax");
    const float temps[3] = {1.0f, 0.6f, 2.5f};
    for (int trial = 0; trial < 12; trial++) {
        int tau = tu_randint(&r, 1, 10), K = tu_randint(&r, 1, 7), N = tu_randint(&r, 1, 4);
        float t = temps[trial % 3];
        size_t nx = (size_t)N * K * tau;
        float *x = tu_randn(&r, nx, 0.8f);
        if (trial == 0) x[0] = 0.0f; /* a zero contributes a factor 1/2 */
        int32_t *idx = malloc((size_t)N * K * sizeof(int32_t));
        float *sp = malloc((size_t)N * K * sizeof(float)), *sl = malloc((size_t)N * K * sizeof(float));
        layer_hash_index(idx, sp, x, N, K, tau, LAYER_SCORE_PROB, t);
        /* l1prob ignores the temperature: pass a wrong one on purpose. */
        layer_hash_index(idx, sl, x, N, K, tau, LAYER_SCORE_L1PROB, 0.3f);
        for (int e = 0; e < N * K; e++) {
            const float *z = x + (size_t)e * tau;
            double p = softmax_chosen(z, tau, t), p1 = softmax_chosen(z, tau, 1.0);
            double S = 0.0;
            for (int i = 0; i < tau; i++) S += fabs((double)z[i]);
            ck_assert_msg(fabs(sp[e] - p) <= 2e-6 * p, "prob tau=%d t=%g: %g vs %g", tau, t,
                          sp[e], p);
            ck_assert_msg(fabs(sl[e] - S * p1) <= 2e-6 * S * p1 + 1e-30,
                          "l1prob tau=%d: %g vs %g", tau, sl[e], S * p1);
        }
        free(x); free(idx); free(sp); free(sl);
    }
}
END_TEST

typedef struct score_ctx {
    float *x, *s, *w; /* x (N,K*TAU); s, w (N,K) */
    int32_t *idx;     /* (N,K) */
    int N, K, TAU;
    layer_score_mode mode;
    float temp;
} score_ctx;

static double score_loss(void *p) {
    score_ctx *c = p;
    layer_hash_index(c->idx, c->s, c->x, c->N, c->K, c->TAU, c->mode, c->temp);
    return tu_dot(c->w, c->s, (size_t)c->N * c->K);
}

START_TEST(test_score_backward_fd) {
    layer_rng r;
    tu_seed(&r, "score_fd");
    /* (K,TAU) pairs: row widths 15 (below one vector), 35 (two vectors and a tail), 64. */
    const int shapes[3][2] = {{5, 3}, {7, 5}, {8, 8}};
    for (int m = 0; m < 2; m++)
        for (int sh = 0; sh < 3; sh++) {
            score_ctx c = {.N = 3, .K = shapes[sh][0], .TAU = shapes[sh][1],
                           .mode = (layer_score_mode)m, .temp = 0.7f};
            size_t nx = (size_t)c.N * c.K * c.TAU, nk = (size_t)c.N * c.K;
            c.x = rand_away(&r, nx, 0.1f);
            c.w = tu_randn(&r, nk, 1.0f);
            c.s = tu_zeros(nk);
            c.idx = malloc(nk * sizeof(int32_t));
            float *dx = tu_zeros(nx);
            layer_hash_score_backward(dx, c.w, c.x, c.N, c.K, c.TAU, c.mode, c.temp);
            double err = tu_gradcheck(score_loss, &c, c.x, dx, (int)nx, 1e-2f, 1e-4, 1000, &r);
            ck_assert_msg(err < 5e-3, "%s K=%d TAU=%d: rel err %g", mode_name(c.mode), c.K, c.TAU,
                          err);
            /* An exact zero gets no gradient (sign'(0) = 0); its neighbours still do. */
            c.x[1] = 0.0f;
            c.x[2] = -0.0f;
            memset(dx, 0, nx * sizeof(float));
            layer_hash_score_backward(dx, c.w, c.x, c.N, c.K, c.TAU, c.mode, c.temp);
            ck_assert(dx[1] == 0.0f && dx[2] == 0.0f);
            ck_assert(dx[0] != 0.0f);
            free(c.x); free(c.w); free(c.s); free(c.idx); free(dx);
        }
}
END_TEST

START_TEST(test_score_backward_wide_rows) {
    /* The vector path (TAU dividing 16, several chunks per vector, chunks running on across
     * rows) and its tail against ds/dz evaluated in double, with a distinct gs per chunk so a
     * chunk given its neighbour's weight shows; zeros of both signs, tiny and large values. */
    layer_rng r;
    tu_seed(&r, "score_bwd_wide");
    const int taus[] = {1, 2, 4, 8, 16, 3, 10};
    for (size_t ti = 0; ti < sizeof(taus) / sizeof(taus[0]); ti++) {
        int TAU = taus[ti], K = 37, N = 3;
        size_t nx = (size_t)N * K * TAU, nk = (size_t)N * K;
        float *x = tu_randn(&r, nx, 1.0f), *gs = tu_randn(&r, nk, 1.0f);
        for (size_t i = 0; i < nx; i += 7) x[i] = (i / 7) % 2 ? -0.0f : 0.0f;
        for (size_t i = 3; i < nx; i += 11) x[i] = x[i] * 1e-30f;
        for (size_t i = 5; i < nx; i += 13) x[i] = x[i] * 30.0f;
        float *dx = tu_zeros(nx);
        for (int mode = 0; mode < 2; mode++) {
            layer_score_mode md = mode ? LAYER_SCORE_L1PROB : LAYER_SCORE_PROB;
            double t = mode ? 1.0 : 0.7;
            memset(dx, 0, nx * sizeof(float));
            layer_hash_score_backward(dx, gs, x, N, K, TAU, md, (float)t);
            for (size_t e = 0; e < nk; e++) {
                const float *z = x + e * TAU;
                /* exp's argument rounded to float as the layer forms it: at |arg| ~ 70 that
                 * rounding alone moves exp by 4e-6, which no kernel can recover */
                const float c = -2.0f / (float)t;
                double D = 1.0, S = 0.0;
                for (int i = 0; i < TAU; i++) {
                    D *= 1.0 + exp((double)(c * fabsf(z[i])));
                    S += fabs((double)z[i]);
                }
                for (int j = 0; j < TAU; j++) {
                    double ej = exp((double)(c * fabsf(z[j]))), sg = ej / (1.0 + ej);
                    double sz = z[j] > 0.0f ? 1.0 : z[j] < 0.0f ? -1.0 : 0.0;
                    double w = gs[e] * sz * (mode ? (1.0 + 2.0 * S * sg) / D : (2.0 / t) * sg / D);
                    float got = dx[e * TAU + j];
                    ck_assert_msg(fabs(got - w) <= 4e-6 * fabs(w) + 1e-37,
                                  "%s TAU=%d chunk %zu elem %d: %g vs %g", mode_name(md), TAU, e, j,
                                  got, w);
                }
            }
            /* the gradient is added to dx, not stored: a second call doubles it exactly */
            float *once = malloc(nx * sizeof(float));
            memcpy(once, dx, nx * sizeof(float));
            layer_hash_score_backward(dx, gs, x, N, K, TAU, md, (float)t);
            for (size_t i = 0; i < nx; i++) ck_assert(dx[i] == 2.0f * once[i]);
            free(once);
        }
        free(x); free(gs); free(dx);
    }
}
END_TEST

/* ---------------- hashed projection end to end ---------------- */

typedef struct layer_ctx {
    float *x, *rows, *b, *w, *s, *y; /* x (N,K*TAU); rows a store; b (OC); w, y (N,OC); s (N,K) */
    int32_t *idx, *rowid;            /* (N,K) */
    int N, K, TAU, OC, R;
    layer_score_mode mode;
    float temp;
} layer_ctx;

static double layer_loss(void *p) {
    layer_ctx *c = p;
    layer_hash_index(c->idx, c->s, c->x, c->N, c->K, c->TAU, c->mode, c->temp);
    layer_hash_rowid_local(c->rowid, c->idx, c->N, c->K, c->TAU);
    layer_hash_forward(c->y, c->rowid, c->s, c->rows, c->b, c->N, c->K, c->R, c->OC);
    return tu_dot(c->w, c->y, (size_t)c->N * c->OC);
}

START_TEST(test_layer_backward_fd) {
    layer_rng r;
    tu_seed(&r, "layer_fd");
    for (int m = 0; m < 2; m++)
        for (int trial = 0; trial < 3; trial++) {
            layer_ctx c = {.mode = (layer_score_mode)m, .temp = trial == 1 ? 1.0f : 0.8f};
            c.N = tu_randint(&r, 2, 9);
            c.K = trial == 0 ? 5 : tu_randint(&r, 1, 6);
            c.TAU = trial == 0 ? 3 : tu_randint(&r, 2, 6);
            c.OC = trial == 0 ? 13 : tu_randint(&r, 1, 40);
            c.R = c.K << c.TAU;
            size_t nx = (size_t)c.N * c.K * c.TAU, nk = (size_t)c.N * c.K;
            size_t nr = layer_hash_store_floats(c.R, c.OC), ny = (size_t)c.N * c.OC;
            c.x = rand_away(&r, nx, 0.1f);
            c.rows = store_randn(&r, c.R, c.OC, 1.0f);
            c.b = tu_randn(&r, c.OC, 1.0f);
            c.w = tu_randn(&r, ny, 1.0f);
            c.s = tu_zeros(nk);
            c.y = tu_zeros(ny);
            c.idx = malloc(nk * sizeof(int32_t));
            c.rowid = malloc(nk * sizeof(int32_t));
            float *dx = tu_zeros(nx), *drows = tu_zeros(nr), *db = tu_zeros(c.OC), *gs = tu_zeros(nk);
            layer_loss(&c);
            layer_hash_backward(drows, gs, db, c.w, c.rowid, c.s, c.rows, c.N, c.K, c.R, c.OC);
            layer_hash_score_backward(dx, gs, c.x, c.N, c.K, c.TAU, c.mode, c.temp);
            double ex = tu_gradcheck(layer_loss, &c, c.x, dx, (int)nx, 1e-2f, 1e-3, 400, &r);
            double er = tu_gradcheck(layer_loss, &c, c.rows, drows, (int)nr, 1e-2f, 1e-3, 4000, &r);
            double eb = tu_gradcheck(layer_loss, &c, c.b, db, c.OC, 1e-2f, 1e-3, 100, &r);
            ck_assert_msg(ex < 1e-2 && er < 1e-2 && eb < 1e-2,
                          "%s N=%d K=%d TAU=%d OC=%d: x %g rows %g b %g", mode_name(c.mode), c.N,
                          c.K, c.TAU, c.OC, ex, er, eb);
            /* Only hit rows receive gradient; every other entry stays exactly 0. */
            unsigned char *hit = calloc(c.R, 1);
            for (size_t e = 0; e < nk; e++) hit[c.rowid[e]] = 1;
            for (int row = 0; row < c.R; row++) {
                int nz = 0;
                for (int o = 0; o < c.OC; o++) nz |= drows[layer_hash_store_at(c.R, row, o)] != 0.0f;
                if (!hit[row]) ck_assert_msg(!nz, "row %d not hit but has gradient", row);
            }
            free(hit);
            free(c.x); free(c.rows); free(c.b); free(c.w); free(c.s); free(c.y); free(c.idx);
            free(c.rowid); free(dx); free(drows); free(db); free(gs);
        }
}
END_TEST

/* ---------------- fast kernels against the reference loops ---------------- */

/* One comparison of fast against reference on a given shape; `local` uses the k*2^TAU + idx
 * layout, otherwise row ids are arbitrary in [0,R) (a compact store). */
static void compare_fast_ref(layer_rng *r, int N, int K, int R, int OC, int local, int TAU) {
    size_t nk = (size_t)N * K, nr = layer_hash_store_floats(R, OC), ny = (size_t)N * OC;
    int32_t *rowid = malloc(nk * sizeof(int32_t));
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            rowid[(size_t)n * K + k] = local ? (k << TAU) + tu_randint(r, 0, (1 << TAU) - 1)
                                             : tu_randint(r, 0, R - 1);
    float *s = tu_randn(r, nk, 1.0f), *rows = tu_randn(r, nr, 1.0f), *b = tu_randn(r, OC, 1.0f);
    float *dy = tu_randn(r, ny, 1.0f);
    float *y1 = tu_randn(r, ny, 1.0f), *y2 = tu_randn(r, ny, 1.0f);
    /* Sums run in a different order (and with fused multiply-adds): compare with a floor of 1,
     * the size of the summands, so near-cancelling sums do not count as relative errors. */
    layer_hash_forward(y1, rowid, s, rows, b, N, K, R, OC);
    layer_hash_forward_ref(y2, rowid, s, rows, b, N, K, R, OC);
    double ef = tu_max_relerr(y1, y2, ny, 1.0);
    /* With the next region's prefetches and without them, the same bits as the default
       (whichever of the two its tuning is on) */
    for (int mode = LAYER_HASH_PREFETCH_OFF; mode <= LAYER_HASH_PREFETCH_ON; mode++) {
        float *y3 = tu_randn(r, ny, 1.0f);
        layer_hash_set_prefetch(mode);
        layer_hash_forward(y3, rowid, s, rows, b, N, K, R, OC);
        layer_hash_set_prefetch(LAYER_HASH_PREFETCH_AUTO);
        ck_assert_msg(memcmp(y3, y1, ny * sizeof(float)) == 0,
                      "N=%d K=%d OC=%d: the forward with prefetch %d differs", N, K, OC, mode);
        free(y3);
    }
    layer_hash_forward(y1, rowid, s, rows, NULL, N, K, R, OC);
    layer_hash_forward_ref(y2, rowid, s, rows, NULL, N, K, R, OC);
    double ef0 = tu_max_relerr(y1, y2, ny, 1.0);
    /* Outputs a stride apart: the same values as the plain call (the fast kernel's bitwise),
     * and what lies between left alone. */
    int ld = OC + 1 + (int)(N % 7);
    size_t nl = (size_t)N * ld;
    float *yl1 = tu_randn(r, nl, 1.0f), *yl2 = malloc(nl * sizeof(float));
    float *yl0 = malloc(nl * sizeof(float));
    memcpy(yl2, yl1, nl * sizeof(float));
    memcpy(yl0, yl1, nl * sizeof(float));
    layer_hash_forward(y1, rowid, s, rows, b, N, K, R, OC);
    layer_hash_forward_ld(yl1, ld, rowid, s, rows, b, N, K, R, OC);
    layer_hash_forward_ld_ref(yl2, ld, rowid, s, rows, b, N, K, R, OC);
    double efa = 0.0;
    for (int n = 0; n < N; n++) {
        const float *a1 = yl1 + (size_t)n * ld, *a2 = yl2 + (size_t)n * ld, *a0 = yl0 + (size_t)n * ld;
        ck_assert_msg(memcmp(a1, y1 + (size_t)n * OC, (size_t)OC * sizeof(float)) == 0,
                      "N=%d OC=%d: strided outputs differ from the plain call at token %d", N, OC, n);
        ck_assert_msg(memcmp(a1 + OC, a0 + OC, (size_t)(ld - OC) * sizeof(float)) == 0 &&
                          memcmp(a2 + OC, a0 + OC, (size_t)(ld - OC) * sizeof(float)) == 0,
                      "N=%d OC=%d: the strided forward wrote between the rows", N, OC);
        double e = tu_max_relerr(a1, a2, (size_t)OC, 1.0);
        efa = e > efa ? e : efa;
    }
    free(yl0), free(yl1), free(yl2);
    /* Gradients start from the same random values: both must add, not overwrite. */
    float *dr1 = tu_randn(r, nr, 1.0f), *dr2 = malloc(nr * sizeof(float));
    float *gs1 = tu_randn(r, nk, 1.0f), *gs2 = malloc(nk * sizeof(float));
    float *db1 = tu_randn(r, OC, 1.0f), *db2 = malloc(OC * sizeof(float));
    memcpy(dr2, dr1, nr * sizeof(float));
    memcpy(gs2, gs1, nk * sizeof(float));
    memcpy(db2, db1, OC * sizeof(float));
    float *db0 = malloc(OC * sizeof(float)); /* the bias gradient alone, by its own path */
    memcpy(db0, db1, OC * sizeof(float));
    layer_hash_backward(NULL, NULL, db0, dy, rowid, s, rows, N, K, R, OC);
    layer_hash_backward(dr1, gs1, db1, dy, rowid, s, rows, N, K, R, OC);
    /* the trainer sums a bias gradient by either path: they must agree bit for bit */
    ck_assert_msg(memcmp(db0, db1, OC * sizeof(float)) == 0,
                  "N=%d OC=%d: the bias gradient alone differs from the full backward's", N, OC);
    free(db0);
    layer_hash_backward_ref(dr2, gs2, db2, dy, rowid, s, rows, N, K, R, OC);
    double er = tu_max_relerr(dr1, dr2, nr, 1.0), eg = tu_max_relerr(gs1, gs2, nk, 1.0);
    double eb = tu_max_relerr(db1, db2, OC, 1.0);
    ck_assert_msg(ef < 1e-4 && ef0 < 1e-4 && efa < 1e-4 && er < 1e-4 && eg < 1e-4 && eb < 1e-4,
                  "N=%d K=%d R=%d OC=%d local=%d: y %g y(no b) %g y(strided) %g drows %g gs %g db %g",
                  N, K, R, OC, local, ef, ef0, efa, er, eg, eb);
    /* Each output of the backward alone (the others NULL) gives the same values. */
    float *gs3 = tu_zeros(nk), *gs4 = tu_zeros(nk);
    layer_hash_backward(NULL, gs3, NULL, dy, rowid, s, rows, N, K, R, OC);
    layer_hash_backward_ref(NULL, gs4, NULL, dy, rowid, s, rows, N, K, R, OC);
    ck_assert_double_le(tu_max_relerr(gs3, gs4, nk, 1.0), 1e-4);
    free(rowid); free(s); free(rows); free(b); free(dy); free(y1); free(y2); free(dr1);
    free(dr2); free(gs1); free(gs2); free(db1); free(db2); free(gs3); free(gs4);
}

START_TEST(test_fast_vs_ref_edges) {
    layer_rng r;
    tu_seed(&r, "fast_vs_ref");
    /* Column counts around the vector (16) and block widths, below one vector, and odd. */
    const int ocs[] = {1, 13, 16, 17, 63, 64, 65, 127, 129, 200, 529};
    for (size_t i = 0; i < sizeof(ocs) / sizeof(ocs[0]); i++) {
        compare_fast_ref(&r, tu_randint(&r, 1, 40), 5, 5 << 3, ocs[i], 1, 3);
        compare_fast_ref(&r, tu_randint(&r, 1, 40), tu_randint(&r, 1, 9), 37, ocs[i], 0, 0);
    }
    /* Several chunk groups in the forward (20 tables of 256 rows exceed one group) and a
     * last group that is not full; OC = 529 also gives the backward a partial column block. */
    compare_fast_ref(&r, 300, 20, 20 << 8, 64, 1, 8);
    compare_fast_ref(&r, 200, 13, 13 << 8, 200, 1, 8);
    /* Many tokens per row (N = 3000 over 16 buckets), and a single token. */
    compare_fast_ref(&r, 3000, 3, 3 << 4, 100, 1, 4);
    compare_fast_ref(&r, 1, 64, 64 << 8, 96, 1, 8);
}
END_TEST

/* Shards: a rank that owns some shards of a projection computes their partial sums and the
 * rows' gradients and score gradients of their chunks alone; the requester adds the
 * partials in shard order. All of it must be bitwise what one call over every chunk gives,
 * or results would depend on how shards are dealt to ranks. */
START_TEST(test_shards_bitwise) {
    layer_rng r;
    tu_seed(&r, "shards");
    const int shapes[][4] = {{37, 20, 3, 45}, {300, 40, 8, 64}, {64, 33, 10, 33}, {5, 17, 6, 17}};
    for (int c = 0; c < 4; c++) {
        int N = shapes[c][0], K = shapes[c][1], TAU = shapes[c][2], OC = shapes[c][3];
        int R = K << TAU, nsh = (K + LAYER_HASH_SHARD - 1) / LAYER_HASH_SHARD;
        size_t nk = (size_t)N * K, ny = (size_t)N * OC, nr = layer_hash_store_floats(R, OC);
        int32_t *rowid = malloc(nk * sizeof(int32_t));
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++)
                rowid[(size_t)n * K + k] = (k << TAU) + tu_randint(&r, 0, (1 << TAU) - 1);
        float *sc = tu_randn(&r, nk, 1.0f), *rows = store_randn(&r, R, OC, 1.0f);
        float *b = tu_randn(&r, OC, 1.0f), *dy = tu_randn(&r, ny, 1.0f);
        float *y = tu_zeros(ny), *yc = tu_zeros(ny), *part = tu_zeros(ny), *ya = tu_zeros(ny);
        /* an owner's reply: token-major (N, nsh, OC), written by one call per shard over the
           tokens in another order (rotated by N/3: tokens of several sources in one call) */
        int rot = N / 3;
        float *tm = tu_zeros(ny * (size_t)nsh);
        float *dr = tu_zeros(nr), *gs = tu_zeros(nk), *drs = tu_zeros(nr), *gss = tu_zeros(nk);
        layer_hash_forward(y, rowid, sc, rows, b, N, K, R, OC);
        layer_hash_backward(dr, gs, NULL, dy, rowid, sc, rows, N, K, R, OC);
        for (int i = 0; i < nsh; i++) {
            int k0 = i * LAYER_HASH_SHARD, Ks = K - k0 < LAYER_HASH_SHARD ? K - k0 : LAYER_HASH_SHARD;
            int32_t *rid = malloc((size_t)N * Ks * sizeof(int32_t));
            float *ss = malloc((size_t)N * Ks * sizeof(float)), *g = tu_zeros((size_t)N * Ks);
            for (int n = 0; n < N; n++)
                for (int j = 0; j < Ks; j++) {
                    rid[(size_t)n * Ks + j] = rowid[(size_t)n * K + k0 + j];
                    ss[(size_t)n * Ks + j] = sc[(size_t)n * K + k0 + j];
                }
            layer_hash_forward(part, rid, ss, rows, NULL, N, Ks, R, OC);
            for (size_t e = 0; e < ny; e++) yc[e] = i ? yc[e] + part[e] : b[e % OC] + part[e];
            int32_t *rr = malloc((size_t)N * Ks * sizeof(int32_t));
            float *sr = malloc((size_t)N * Ks * sizeof(float));
            for (int n = 0; n < N; n++) { /* call position n holds token (n + rot) % N */
                memcpy(rr + (size_t)n * Ks, rid + (size_t)((n + rot) % N) * Ks, (size_t)Ks * 4);
                memcpy(sr + (size_t)n * Ks, ss + (size_t)((n + rot) % N) * Ks, (size_t)Ks * 4);
            }
            layer_hash_forward_ld(tm + (size_t)i * OC, nsh * OC, rr, sr, rows, NULL, N, Ks, R, OC);
            free(rr), free(sr);
            layer_hash_backward(drs, g, NULL, dy, rid, ss, rows, N, Ks, R, OC);
            for (int n = 0; n < N; n++)
                for (int j = 0; j < Ks; j++) gss[(size_t)n * K + k0 + j] = g[(size_t)n * Ks + j];
            free(rid), free(ss), free(g);
        }
        ck_assert_msg(memcmp(y, yc, ny * sizeof(float)) == 0,
                      "N=%d K=%d TAU=%d OC=%d: partials summed by shard differ from one call", N, K,
                      TAU, OC);
        for (int n = 0; n < N; n++) /* the requester's sum, token by token in shard order */
            for (int i = 0; i < nsh; i++) {
                const float *pn = tm + ((size_t)((n - rot + N) % N) * nsh + i) * OC;
                float *yn = ya + (size_t)n * OC;
                for (int o = 0; o < OC; o++) yn[o] = i ? yn[o] + pn[o] : b[o] + pn[o];
            }
        ck_assert_msg(memcmp(y, ya, ny * sizeof(float)) == 0,
                      "N=%d K=%d: partials from token-major replies of merged calls differ from one call", N, K);
        ck_assert_msg(memcmp(dr, drs, nr * sizeof(float)) == 0, "row gradients by shard differ");
        ck_assert_msg(memcmp(gs, gss, nk * sizeof(float)) == 0, "score gradients by shard differ");
        free(rowid), free(sc), free(rows), free(b), free(dy), free(y), free(yc), free(part), free(ya);
        free(tm), free(dr), free(gs), free(drs), free(gss);
    }
}
END_TEST

/* The store layout: put/get round trip, element addresses, and a fresh store zeroed and on
 * whole cache lines. */
/* An owner's backward over the tokens of several sources whose output gradients lie in
 * different buffers (layer_hash_backward_parts) is bitwise the calls over each source's
 * tokens one after another: for one projection and for Q/K/V, in four parts with one of no
 * tokens among them (tau 4 over 301 tokens: every row is hit by several parts) and in two,
 * as an owner's call at P = 2 (rows hit by the first part only, the second only and both; and
 * an empty first part); the sum of squares it keeps while writing is what the squares of the
 * rows' gradients grew by. */
START_TEST(test_backward_parts) {
    layer_rng r;
    tu_seed(&r, "backward_parts");
    const int shapes[][4] = {{301, 16, 8, 64}, {301, 5, 4, 45}, {40, 7, 6, 33}};
    for (int c = 0; c < 9; c++) {
        int N = shapes[c % 3][0], K = shapes[c % 3][1], TAU = shapes[c % 3][2];
        int OC = shapes[c % 3][3], R = K << TAU, np = c < 3 ? 4 : 2;
        int ndy[4] = {N / 3, 0, N / 2, N - N / 3 - N / 2};
        if (c >= 3) ndy[0] = c < 6 ? N / 3 : 0, ndy[1] = N - ndy[0];
        size_t nk = (size_t)N * K, ny = (size_t)N * OC, nr = layer_hash_store_floats(R, OC);
        int32_t *rowid = malloc(nk * sizeof(int32_t));
        for (size_t e = 0; e < nk; e++)
            rowid[e] = (int32_t)(e % (size_t)K << TAU) + tu_randint(&r, 0, (1 << TAU) - 1);
        float *sc = tu_randn(&r, nk, 1.0f);
        float *rows[3], *dy[3], *dr1[3], *dr2[3];
        const float *parts[12];
        for (int j = 0; j < 3; j++) {
            rows[j] = store_randn(&r, R, OC, 1.0f);
            dy[j] = tu_randn(&r, ny, 1.0f);
            dr1[j] = tu_randn(&r, nr, 1.0f); /* both add to the same start */
            dr2[j] = malloc(nr * sizeof(float));
            memcpy(dr2[j], dr1[j], nr * sizeof(float));
            /* each part in a buffer of its own, as the sources' gradients arrive */
            for (int i = 0, n = 0; i < np; n += ndy[i++]) {
                float *q = malloc((size_t)(ndy[i] + 1) * OC * sizeof(float));
                memcpy(q, dy[j] + (size_t)n * OC, (size_t)ndy[i] * OC * sizeof(float));
                parts[j * 4 + i] = q;
            }
        }
        float *gs1 = tu_randn(&r, nk, 1.0f), *gs2 = malloc(nk * sizeof(float));
        memcpy(gs2, gs1, nk * sizeof(float));
        for (int nout = 1; nout <= 3; nout += 2) {
            for (int i = 0, n = 0; i < np; n += ndy[i++]) {
                size_t e = (size_t)n * K;
                if (!ndy[i]) continue;
                if (nout == 1)
                    layer_hash_backward(dr1[0], gs1 + e, NULL, parts[i], rowid + e, sc + e, rows[0],
                                        ndy[i], K, R, OC);
                else
                    layer_hashqkv_backward(dr1[0], dr1[1], dr1[2], gs1 + e, NULL, NULL, NULL,
                                           parts[i], parts[4 + i], parts[8 + i], rowid + e, sc + e,
                                           rows[0], rows[1], rows[2], ndy[i], K, R, OC);
            }
            double before = 0.0, after = 0.0, sq = 0.0;
            for (int j = 0; j < nout; j++)
                for (size_t i = 0; i < nr; i++) before += (double)dr2[j][i] * dr2[j][i];
            const float *pp[12]; /* (nout, np) */
            for (int j = 0; j < nout; j++)
                for (int i = 0; i < np; i++) pp[j * np + i] = parts[j * 4 + i];
            layer_hash_backward_parts(nout, dr2, gs2, &sq, pp, ndy, np, rowid, sc,
                                      (const float *const *)rows, N, K, R, OC);
            for (int j = 0; j < nout; j++) {
                ck_assert_msg(memcmp(dr1[j], dr2[j], nr * sizeof(float)) == 0,
                              "N=%d OC=%d nout=%d: row gradients %d from parts differ", N, OC, nout, j);
                for (size_t i = 0; i < nr; i++) after += (double)dr2[j][i] * dr2[j][i];
            }
            /* the squares' sum the call kept as it wrote: what the rows' squares grew by */
            ck_assert_msg(fabs(sq - (after - before)) <= 1e-10 * (after + before),
                          "N=%d OC=%d nout=%d: the written squares sum to %.17g, the rows' squares "
                          "grew by %.17g", N, OC, nout, sq, after - before);
            ck_assert_msg(memcmp(gs1, gs2, nk * sizeof(float)) == 0,
                          "N=%d OC=%d nout=%d: score gradients from parts differ", N, OC, nout);
        }
        for (int j = 0; j < 3; j++) {
            free(rows[j]), free(dy[j]), free(dr1[j]), free(dr2[j]);
            for (int i = 0; i < np; i++) free((void *)parts[j * 4 + i]);
        }
        free(rowid), free(sc), free(gs1), free(gs2);
    }
}
END_TEST

START_TEST(test_store_layout) {
    layer_rng r;
    tu_seed(&r, "store_layout");
    const int R = 7, OC = 45; /* two tiles, the second partial */
    float *st = layer_hash_store_new(R, OC);
    ck_assert_uint_eq((uintptr_t)st % 64, 0);
    ck_assert_uint_eq(layer_hash_store_floats(R, OC), (size_t)2 * R * LAYER_HASH_TILE);
    for (size_t i = 0; i < layer_hash_store_floats(R, OC); i++) ck_assert(st[i] == 0.0f);
    float *rows = tu_randn(&r, (size_t)R * OC, 1.0f), back[45];
    for (int i = 0; i < R; i++) layer_hash_store_put(st, R, OC, i, rows + (size_t)i * OC);
    for (int i = 0; i < R; i++) {
        layer_hash_store_get(back, st, R, OC, i);
        for (int o = 0; o < OC; o++) {
            ck_assert(back[o] == rows[(size_t)i * OC + o]);
            ck_assert(st[layer_hash_store_at(R, i, o)] == rows[(size_t)i * OC + o]);
        }
    }
    /* column 33 of row 2: tile 1, after the R rows of tile 0 and the 2 rows before it */
    ck_assert_uint_eq(layer_hash_store_at(R, 2, 33), (size_t)(R + 2) * LAYER_HASH_TILE + 1);
    free(rows);
    layer_hash_store_free(st);
    layer_hash_store_free(NULL);
}
END_TEST

/* The padding past OC is never read into a result: NaN there changes nothing, and the
 * gradient store's padding is left as it was. */
START_TEST(test_store_padding_unused) {
    layer_rng r;
    tu_seed(&r, "store_padding");
    const int N = 50, K = 6, TAU = 4, R = K << TAU, OC = 37;
    size_t nk = (size_t)N * K, ny = (size_t)N * OC, nr = layer_hash_store_floats(R, OC);
    int32_t *rowid = malloc(nk * sizeof(int32_t));
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) rowid[(size_t)n * K + k] = (k << TAU) + tu_randint(&r, 0, 15);
    float *s = tu_randn(&r, nk, 1.0f), *dy = tu_randn(&r, ny, 1.0f);
    float *rows = store_randn(&r, R, OC, 1.0f), *nanrows = malloc(nr * sizeof(float));
    memcpy(nanrows, rows, nr * sizeof(float));
    float *dr_nan = tu_zeros(nr), *dr_ref = tu_zeros(nr);
    for (int i = 0; i < R; i++)
        for (int o = OC; o < 2 * LAYER_HASH_TILE; o++) {
            nanrows[layer_hash_store_at(R, i, o)] = NAN;
            dr_nan[layer_hash_store_at(R, i, o)] = NAN;
        }
    float *y1 = tu_zeros(ny), *y2 = tu_zeros(ny), *gs1 = tu_zeros(nk), *gs2 = tu_zeros(nk);
    layer_hash_forward(y1, rowid, s, nanrows, NULL, N, K, R, OC);
    layer_hash_forward_ref(y2, rowid, s, rows, NULL, N, K, R, OC);
    layer_hash_backward(dr_nan, gs1, NULL, dy, rowid, s, nanrows, N, K, R, OC);
    layer_hash_backward_ref(dr_ref, gs2, NULL, dy, rowid, s, rows, N, K, R, OC);
    for (size_t i = 0; i < ny; i++) ck_assert(isfinite(y1[i]) && fabsf(y1[i] - y2[i]) <= 1e-4f * (1.0f + fabsf(y2[i])));
    for (size_t i = 0; i < nk; i++) ck_assert(isfinite(gs1[i]) && fabsf(gs1[i] - gs2[i]) <= 1e-4f * (1.0f + fabsf(gs2[i])));
    for (int i = 0; i < R; i++)
        for (int o = 0; o < 2 * LAYER_HASH_TILE; o++) {
            float a = dr_nan[layer_hash_store_at(R, i, o)], b = dr_ref[layer_hash_store_at(R, i, o)];
            if (o >= OC)
                ck_assert(isnan(a));
            else
                ck_assert(isfinite(a) && fabsf(a - b) <= 1e-4f * (1.0f + fabsf(b)));
        }
    free(rowid); free(s); free(dy); free(rows); free(nanrows); free(dr_nan); free(dr_ref);
    free(y1); free(y2); free(gs1); free(gs2);
}
END_TEST

START_TEST(test_unique_rows) {
    const int32_t rowid[9] = {7, 3, 7, 0, 9, 3, 3, 0, 5};
    int32_t uniq[9];
    int m = layer_hash_unique_rows(uniq, rowid, 9, 10);
    ck_assert_int_eq(m, 5);
    const int32_t want[5] = {0, 3, 5, 7, 9};
    for (int i = 0; i < 5; i++) ck_assert_int_eq(uniq[i], want[i]);
    ck_assert_int_eq(layer_hash_unique_rows(uniq, rowid, 0, 10), 0);
}
END_TEST

START_TEST(test_hashqkv_matches_three_projections) {
    layer_rng r;
    tu_seed(&r, "hashqkv");
    int N = 17, K = 4, TAU = 3, OC = 21, R = K << TAU;
    size_t nx = (size_t)N * K * TAU, nk = (size_t)N * K, ny = (size_t)N * OC;
    size_t nr = layer_hash_store_floats(R, OC);
    float *x = tu_randn(&r, nx, 1.0f), *s = tu_zeros(nk);
    int32_t *idx = malloc(nk * sizeof(int32_t)), *rowid = malloc(nk * sizeof(int32_t));
    layer_hash_index(idx, s, x, N, K, TAU, LAYER_SCORE_L1PROB, 1.0f);
    layer_hash_rowid_local(rowid, idx, N, K, TAU);
    float *rows[3], *bias[3], *out[3], *ref[3], *d[3], *dr[3], *drr[3], *db[3], *dbr[3];
    for (int p = 0; p < 3; p++) {
        rows[p] = tu_randn(&r, nr, 1.0f);
        bias[p] = tu_randn(&r, OC, 1.0f);
        out[p] = tu_zeros(ny);
        ref[p] = tu_zeros(ny);
        d[p] = tu_randn(&r, ny, 1.0f);
        dr[p] = tu_zeros(nr);
        drr[p] = tu_zeros(nr);
        db[p] = tu_zeros(OC);
        dbr[p] = tu_zeros(OC);
    }
    layer_hashqkv_forward(out[0], out[1], out[2], rowid, s, rows[0], rows[1], rows[2], bias[0],
                          bias[1], bias[2], N, K, R, OC);
    float *gs = tu_zeros(nk), *gsr = tu_zeros(nk);
    layer_hashqkv_backward(dr[0], dr[1], dr[2], gs, db[0], db[1], db[2], d[0], d[1], d[2], rowid,
                           s, rows[0], rows[1], rows[2], N, K, R, OC);
    for (int p = 0; p < 3; p++) {
        layer_hash_forward_ref(ref[p], rowid, s, rows[p], bias[p], N, K, R, OC);
        /* The one gs collects the three projections' terms. */
        layer_hash_backward_ref(drr[p], gsr, dbr[p], d[p], rowid, s, rows[p], N, K, R, OC);
        ck_assert_double_le(tu_max_relerr(out[p], ref[p], ny, 1.0), 1e-5);
        ck_assert_double_le(tu_max_relerr(dr[p], drr[p], nr, 1.0), 1e-5);
        ck_assert_double_le(tu_max_relerr(db[p], dbr[p], OC, 1.0), 1e-5);
    }
    ck_assert_double_le(tu_max_relerr(gs, gsr, nk, 1.0), 1e-5);
    free(x); free(s); free(idx); free(rowid); free(gs); free(gsr);
    for (int p = 0; p < 3; p++) {
        free(rows[p]); free(bias[p]); free(out[p]); free(ref[p]); free(d[p]); free(dr[p]);
        free(drr[p]); free(db[p]); free(dbr[p]);
    }
}
END_TEST

/* ---------------- memory block ---------------- */


static Suite *hash_suite(void) {
    Suite *s = suite_create("hash");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_layernorm_forward_values);
    tcase_add_test(tc, test_index_bits_hand_made);
    tcase_add_test(tc, test_index_bits_wide_rows);
    tcase_add_test(tc, test_score_vs_softmax_over_codes);
    tcase_add_test(tc, test_score_backward_fd);
    tcase_add_test(tc, test_score_backward_wide_rows);
    tcase_add_test(tc, test_layer_backward_fd);
    tcase_add_test(tc, test_fast_vs_ref_edges);
    tcase_add_test(tc, test_unique_rows);
    tcase_add_test(tc, test_shards_bitwise);
    tcase_add_test(tc, test_backward_parts);
    tcase_add_test(tc, test_store_layout);
    tcase_add_test(tc, test_store_padding_unused);
    tcase_add_test(tc, test_hashqkv_matches_three_projections);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(hash_suite()); }
