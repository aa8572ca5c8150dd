/* Tests of the dense layers: embedding, positions, RMSNorm, linear, GELU, cross-entropy. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers/layers.h"
#include "tests/testutil.h"

/* Finite differences in float32: eps 1e-2 keeps round-off in the loss small against the step,
 * and the curvature error of a central difference (eps^2) well under the tolerance. A flipped
 * sign gives an error of 1, a missing term usually > 0.1. */
#define FD_EPS 1e-2f
#define FD_FLOOR 1e-2
#define FD_TOL 1e-2
#define FD_CHECKS 150
/* A scalar loss L = <wout, out>, out recomputed by run() from the current inputs, so that
 * dL/dout = wout is what each backward receives. */
typedef struct fd_ctx {
    void (*run)(struct fd_ctx *);
    float *out;
    const float *wout;
    size_t nout;
} fd_ctx;

static double fd_loss(void *p) {
    fd_ctx *c = p;
    c->run(c);
    return tu_dot(c->wout, c->out, c->nout);
}

#define GRADCHECK(ctx, param, grad, n, r)                                                       \
    do {                                                                                        \
        double e_ = tu_gradcheck(fd_loss, (ctx), (param), (grad), (int)(n), FD_EPS, FD_FLOOR,  \
                                 FD_CHECKS, (r));                                               \
        ck_assert_msg(e_ < FD_TOL, "%s: gradient of %s off by %g", __func__, #param, e_);      \
    } while (0)

/* g2 must be twice g1: a backward that overwrites instead of adding fails this. */
static void assert_doubled(const float *g1, const float *g2, size_t n, const char *what) {
    float *twice = layer_xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) twice[i] = 2.0f * g1[i];
    double e = tu_max_relerr(twice, g2, n, 1e-6);
    free(twice);
    ck_assert_msg(e < 1e-5, "%s does not accumulate (relerr %g)", what, e);
}

/* ---------------- embedding ---------------- */

typedef struct {
    fd_ctx base;
    const int32_t *tok;
    float *wte;
    int N, C;
} emb_ctx;

static void emb_run(fd_ctx *c) {
    emb_ctx *e = (emb_ctx *)c;
    layer_embedding_forward(c->out, e->tok, e->wte, e->N, e->C);
}

START_TEST(test_embedding) {
    layer_rng r;
    tu_seed(&r, __func__);
    int V = 9, N = 11, C = 12;
    int32_t tok[11];
    for (int n = 0; n < N; n++) tok[n] = tu_randint(&r, 0, V - 2);
    tok[3] = tok[7] = V - 1; /* a repeated token: its gradient row must collect both */
    float *wte = tu_randn(&r, (size_t)V * C, 1.0f);  /* (V,C) */
    float *out = tu_zeros((size_t)N * C);            /* (N,C) */
    float *wout = tu_randn(&r, (size_t)N * C, 1.0f); /* (N,C) */
    layer_embedding_forward(out, tok, wte, N, C);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) ck_assert_float_eq(out[n * C + c], wte[tok[n] * C + c]);

    float *dwte = tu_zeros((size_t)V * C); /* (V,C) */
    layer_embedding_backward(dwte, wout, tok, N, C);
    ck_assert_float_eq_tol(dwte[(V - 1) * C + 5], wout[3 * C + 5] + wout[7 * C + 5], 1e-6);
    emb_ctx ctx = {{emb_run, out, wout, (size_t)N * C}, tok, wte, N, C};
    GRADCHECK(&ctx, wte, dwte, V * C, &r);

    float *d2 = tu_zeros((size_t)V * C);
    layer_embedding_backward(d2, wout, tok, N, C);
    layer_embedding_backward(d2, wout, tok, N, C);
    assert_doubled(dwte, d2, (size_t)V * C, "embedding backward");
    free(wte), free(out), free(wout), free(dwte), free(d2);
}
END_TEST

/* ---------------- learned positions ---------------- */

typedef struct {
    fd_ctx base;
    float *in, *wpe;
    int B, T, C;
} pos_ctx;

static void pos_run(fd_ctx *c) {
    pos_ctx *p = (pos_ctx *)c;
    layer_posemb_forward(c->out, p->in, p->wpe, p->B, p->T, p->C);
}

START_TEST(test_posemb) {
    layer_rng r;
    tu_seed(&r, __func__);
    int B = 2, T = 7, C = 12, Tmax = 10;
    size_t n = (size_t)B * T * C;
    float *in = tu_randn(&r, n, 1.0f);                   /* (B,T,C) */
    float *wpe = tu_randn(&r, (size_t)Tmax * C, 1.0f);   /* (Tmax,C) */
    float *out = tu_zeros(n), *wout = tu_randn(&r, n, 1.0f);
    layer_posemb_forward(out, in, wpe, B, T, C);
    ck_assert_float_eq_tol(out[(1 * T + 5) * C + 3], in[(1 * T + 5) * C + 3] + wpe[5 * C + 3], 1e-6);

    float *din = tu_zeros(n), *dwpe = tu_zeros((size_t)Tmax * C); /* (B,T,C), (T,C) used */
    layer_posemb_backward(din, dwpe, wout, B, T, C);
    pos_ctx ctx = {{pos_run, out, wout, n}, in, wpe, B, T, C};
    GRADCHECK(&ctx, in, din, n, &r);
    GRADCHECK(&ctx, wpe, dwpe, Tmax * C, &r); /* rows >= T: both 0 */

    float *din2 = tu_zeros(n), *dwpe2 = tu_zeros((size_t)T * C);
    for (int k = 0; k < 2; k++) layer_posemb_backward(din2, dwpe2, wout, B, T, C);
    assert_doubled(din, din2, n, "posemb backward dinp");
    assert_doubled(dwpe, dwpe2, (size_t)T * C, "posemb backward dwpe");

    /* in place, as the header allows */
    float *copy = layer_xmalloc(n * sizeof(float));
    memcpy(copy, in, n * sizeof(float));
    layer_posemb_forward(copy, copy, wpe, B, T, C);
    ck_assert(tu_max_relerr(copy, out, n, 1e-6) == 0.0);
    free(in), free(wpe), free(out), free(wout), free(din), free(dwpe), free(din2), free(dwpe2),
        free(copy);
}
END_TEST

/* ---------------- rotary ---------------- */

typedef struct {
    fd_ctx base;
    float *x;
    int B, T, C, NH, rot, pos0;
    float base_;
} rope_ctx;

static void rope_run(fd_ctx *c) {
    rope_ctx *p = (rope_ctx *)c;
    layer_rope_forward(c->out, p->x, p->B, p->T, p->C, p->NH, p->rot, p->base_, p->pos0);
}

START_TEST(test_rope_forward_values) {
    layer_rng r;
    tu_seed(&r, __func__);
    int B = 2, T = 7, NH = 3, HS = 6, C = NH * HS, rot = 4, pos0 = 5;
    float base = 100.0f;
    size_t n = (size_t)B * T * C;
    float *x = tu_randn(&r, n, 1.0f), *out = tu_zeros(n); /* (B,T,C) */
    layer_rope_forward(out, x, B, T, C, NH, rot, base, pos0);
    double worst = 0.0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++) {
                size_t o = ((size_t)b * T + t) * C + (size_t)h * HS;
                for (int i = 0; i < rot / 2; i++) {
                    double th = (pos0 + t) * pow(base, -2.0 * i / rot);
                    double x0 = x[o + 2 * i], x1 = x[o + 2 * i + 1];
                    worst = fmax(worst, fabs(out[o + 2 * i] - (x0 * cos(th) - x1 * sin(th))));
                    worst = fmax(worst, fabs(out[o + 2 * i + 1] - (x0 * sin(th) + x1 * cos(th))));
                }
                for (int d = rot; d < HS; d++) ck_assert_float_eq(out[o + d], x[o + d]);
            }
    ck_assert_msg(worst < 1e-5, "rope value off by %g", worst);

    /* The point of rotary: a query/key dot product depends only on the position difference. */
    int hs2 = 8, nh2 = 1;
    float *qk = tu_randn(&r, 2 * (size_t)hs2, 1.0f); /* (1,2,hs2): q at t=0, k at t=1 */
    float *a = tu_zeros(2 * (size_t)hs2), *bb = tu_zeros(2 * (size_t)hs2);
    layer_rope_forward(a, qk, 1, 2, hs2, nh2, hs2, 10000.0f, 3);
    layer_rope_forward(bb, qk, 1, 2, hs2, nh2, hs2, 10000.0f, 40);
    double da = tu_dot(a, a + hs2, hs2), db = tu_dot(bb, bb + hs2, hs2);
    double plain = tu_dot(qk, qk + hs2, hs2);
    ck_assert_msg(fabs(da - db) < 1e-4, "rope dot %g vs %g", da, db);
    ck_assert(fabs(da - plain) > 1e-3); /* and it is not the identity */

    /* in place */
    layer_rope_forward(x, x, B, T, C, NH, rot, base, pos0);
    ck_assert(tu_max_relerr(x, out, n, 1e-6) == 0.0);
    free(x), free(out), free(qk), free(a), free(bb);
}
END_TEST

START_TEST(test_rope_backward) {
    layer_rng r;
    tu_seed(&r, __func__);
    for (int trial = 0; trial < 3; trial++) {
        int B = tu_randint(&r, 1, 3), T = tu_randint(&r, 3, 9), NH = tu_randint(&r, 1, 4);
        int HS = 2 * tu_randint(&r, 1, 4) + (trial == 1); /* an odd head size once */
        int C = NH * HS, rot = 2 * tu_randint(&r, 1, HS / 2), pos0 = tu_randint(&r, 0, 50);
        float base = trial == 0 ? 10000.0f : 10.0f;
        size_t n = (size_t)B * T * C;
        float *x = tu_randn(&r, n, 1.0f), *out = tu_zeros(n), *wout = tu_randn(&r, n, 1.0f);
        float *dx = tu_zeros(n), *dx2 = tu_zeros(n);
        layer_rope_backward(dx, wout, B, T, C, NH, rot, base, pos0);
        rope_ctx ctx = {{rope_run, out, wout, n}, x, B, T, C, NH, rot, pos0, base};
        GRADCHECK(&ctx, x, dx, n, &r);
        for (int k = 0; k < 2; k++) layer_rope_backward(dx2, wout, B, T, C, NH, rot, base, pos0);
        assert_doubled(dx, dx2, n, "rope backward");
        free(x), free(out), free(wout), free(dx), free(dx2);
    }
}
END_TEST

/* ---------------- RMSNorm ---------------- */

START_TEST(test_rmsnorm) {
    /* values from the definition; gradients and the reference in check_ops */
    layer_rng r;
    tu_seed(&r, __func__);
    int N = tu_randint(&r, 5, 9), C = 12 + tu_randint(&r, 0, 7);
    size_t n = (size_t)N * C;
    float *in = tu_randn(&r, n, 1.5f), *w = tu_randn(&r, (size_t)C, 1.0f); /* (N,C), (C) */
    float *out = tu_zeros(n), *rstd = tu_zeros((size_t)N);
    layer_rmsnorm_forward(out, rstd, in, w, N, C);
    for (int i = 0; i < N; i++) {
        double ss = 0.0;
        for (int c = 0; c < C; c++) ss += (double)in[i * C + c] * in[i * C + c];
        double rs = 1.0 / sqrt(ss / C + 1e-5);
        ck_assert_double_eq_tol(rstd[i], rs, 1e-5 * rs);
        for (int c = 0; c < C; c++)
            ck_assert_double_eq_tol(out[i * C + c], in[i * C + c] * rs * w[c], 1e-5);
    }
    /* the backward's recomputation from the kept rstd is the forward's output bit for bit */
    float *again = tu_zeros(n);
    layer_rmsnorm_apply(again, in, w, rstd, N, C);
    ck_assert_int_eq(memcmp(again, out, n * sizeof(float)), 0);
    free(in), free(w), free(out), free(rstd), free(again);
}
END_TEST

START_TEST(test_layernorm_apply) {
    /* the backward recomputes the LayerNorm output from the kept statistics: bit for bit */
    layer_rng r;
    tu_seed(&r, __func__);
    int N = tu_randint(&r, 5, 9), C = 17 + tu_randint(&r, 0, 300);
    size_t n = (size_t)N * C;
    float *in = tu_randn(&r, n, 1.5f), *w = tu_randn(&r, (size_t)C, 1.0f);
    float *b = tu_randn(&r, (size_t)C, 1.0f), *out = tu_zeros(n), *again = tu_zeros(n);
    float *mean = tu_zeros((size_t)N), *rstd = tu_zeros((size_t)N);
    layer_layernorm_forward(out, mean, rstd, in, w, b, N, C);
    layer_layernorm_apply(again, in, w, b, mean, rstd, N, C);
    ck_assert_int_eq(memcmp(again, out, n * sizeof(float)), 0);
    free(in), free(w), free(b), free(out), free(again), free(mean), free(rstd);
}
END_TEST

/* ---------------- linear ---------------- */

START_TEST(test_linear_hand) {
    /* in (1,2) = [1 2]; w (3,2) = [[1 0] [0 1] [3 -1]]; b = [10 20 30] -> [11 22 31] */
    const float in[2] = {1, 2}, w[6] = {1, 0, 0, 1, 3, -1}, b[3] = {10, 20, 30};
    float out[3], ref[3];
    layer_linear_forward(out, in, w, b, 1, 2, 3);
    layer_linear_forward_ref(ref, in, w, b, 1, 2, 3);
    const float want[3] = {11, 22, 31};
    for (int i = 0; i < 3; i++) {
        ck_assert_float_eq_tol(out[i], want[i], 1e-6);
        ck_assert_float_eq_tol(ref[i], want[i], 1e-6);
    }
}
END_TEST

/* ---------------- GELU ---------------- */

START_TEST(test_gelu) {
    /* tanh-form values: gelu(1) = 0.8411920, gelu(-1) = -0.1588080, gelu(0) = 0; the fast
     * form and the reference are compared on random inputs in check_ops */
    const float x[3] = {1.0f, -1.0f, 0.0f};
    float y[3];
    layer_gelu_forward(y, x, 3);
    ck_assert_float_eq_tol(y[0], 0.8411920f, 1e-6);
    ck_assert_float_eq_tol(y[1], -0.1588080f, 1e-6);
    ck_assert_float_eq(y[2], 0.0f);
}
END_TEST

/* ---------------- cross-entropy ---------------- */

START_TEST(test_crossentropy_hand) {
    /* row 0: logits [1 2 3], target 2: loss = log(e + e^2 + e^3) - 3
     * row 1: ignored; row 2: logits [0 0 0], target 0: loss = log 3 */
    const float logits[9] = {1, 2, 3, 5, -7, 9, 0, 0, 0};
    const int32_t tgt[3] = {2, -1, 0};
    float d[9];
    for (int i = 0; i < 9; i++) d[i] = 123.0f; /* must be overwritten, row 1 with zeros */
    int count = -1;
    double loss = layer_crossentropy(d, &count, logits, tgt, 3, 3, 0.5f);
    double l0 = log(exp(1.0) + exp(2.0) + exp(3.0)) - 3.0, l2 = log(3.0);
    ck_assert_int_eq(count, 2);
    ck_assert_double_eq_tol(loss, l0 + l2, 1e-6);
    double z = exp(1.0) + exp(2.0) + exp(3.0);
    ck_assert_float_eq_tol(d[0], 0.5 * exp(1.0) / z, 1e-6);
    ck_assert_float_eq_tol(d[1], 0.5 * exp(2.0) / z, 1e-6);
    ck_assert_float_eq_tol(d[2], 0.5 * (exp(3.0) / z - 1.0), 1e-6);
    for (int i = 3; i < 6; i++) ck_assert_float_eq(d[i], 0.0f);
    ck_assert_float_eq_tol(d[6], 0.5 * (1.0 / 3 - 1.0), 1e-6);
    ck_assert_float_eq_tol(d[7], 0.5 / 3, 1e-6);

    /* huge logits: the max shift keeps exp finite */
    const float big[3] = {1000.0f, 999.0f, -1000.0f};
    const int32_t t1[1] = {1};
    double lb = layer_crossentropy(NULL, &count, big, t1, 1, 3, 1.0f);
    ck_assert_double_eq_tol(lb, log(1.0 + exp(-1.0) + exp(-2000.0)) + 1.0, 1e-6);
    ck_assert_int_eq(count, 1);

    /* every target ignored */
    const int32_t none[3] = {-1, -1, -5};
    ck_assert_double_eq(layer_crossentropy(d, &count, logits, none, 3, 3, 1.0f), 0.0);
    ck_assert_int_eq(count, 0);
    for (int i = 0; i < 9; i++) ck_assert_float_eq(d[i], 0.0f);
}
END_TEST

static Suite *layers_suite(void) {
    Suite *s = suite_create("layers");
    TCase *tc = tcase_create("dense");
    tcase_add_test(tc, test_embedding);
    tcase_add_test(tc, test_posemb);
    tcase_add_test(tc, test_rope_forward_values);
    tcase_add_test(tc, test_rope_backward);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_test(tc, test_layernorm_apply);
    tcase_add_test(tc, test_linear_hand);
    tcase_add_test(tc, test_gelu);
    tcase_add_test(tc, test_crossentropy_hand);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(layers_suite()); }
