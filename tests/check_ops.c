/* One harness for the math ops: each op's fast path against its reference, and its backward against finite differences, on random shapes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers/hash.h"
#include "layers/layers.h"
#include "tests/testutil.h"

/* How an op is checked (one row of OPS below per op):
 *   1. forward: fast and reference on the same inputs agree to fwd_tol, relative to the
 *      output's RMS (sums run in other orders, and the fast exp is not libm's);
 *   2. backward: fast and reference gradients of every input agree to bwd_tol;
 *   3. the fast backward adds: run twice into the same buffers it gives twice (to rounding);
 *   4. finite differences of L = <wout, forward(inputs)> (or of the op's own scalar, for
 *      a loss) match the fast backward's gradients to FD_TOL.
 * Shapes are drawn per op; widths are taken around and off the vector width (16), so the
 * masked tails of the vector loops are exercised. A flipped sign gives an FD error near 1, a
 * missing term usually > 0.1; fast-vs-reference tolerances are 1e-5 .. 1e-4. */

#define FD_EPS 1e-2f
#define FD_FLOOR 1e-2
#define FD_TOL 1e-2
#define FD_CHECKS 120

enum { MAX_IN = 4 };

/* One op at one shape. in[i] (nin[i]) are the inputs that get gradients; aux holds what
 * forward saves for backward (rstd, att, ...), ints integer inputs (targets, tokens). */
typedef struct op_case {
    int dims[6];
    int nin;
    float *in[MAX_IN];
    size_t n_in[MAX_IN];
    const char *in_name[MAX_IN];
    float *out, *aux, *aux2;
    size_t nout, naux, naux2;
    int32_t *ints;
    float scalar_out; /* 1: out is a loss (crossentropy); L = that loss */
} op_case;

typedef struct op_def {
    const char *name;
    int nshapes;
    /* fills c for shape s (inputs random, outputs allocated) */
    void (*setup)(op_case *c, int s, layer_rng *r);
    /* ref = 0 fast, 1 reference; returns the loss for scalar ops, else 0 */
    double (*forward)(op_case *c, int ref);
    /* adds the gradients of L = <dout, out> (or of the loss) into d[0..nin) */
    void (*backward)(op_case *c, int ref, const float *dout, float **d);
    double fwd_tol, bwd_tol;
} op_def;

static void alloc_out(op_case *c, size_t nout, size_t naux, size_t naux2) {
    c->nout = nout, c->naux = naux, c->naux2 = naux2;
    c->out = tu_zeros(nout ? nout : 1);
    c->aux = tu_zeros(naux ? naux : 1);
    c->aux2 = tu_zeros(naux2 ? naux2 : 1);
}

static void add_in(op_case *c, layer_rng *r, const char *name, size_t n, float std) {
    c->in_name[c->nin] = name;
    c->n_in[c->nin] = n;
    c->in[c->nin++] = tu_randn(r, n, std);
}

static void case_free(op_case *c) {
    for (int i = 0; i < c->nin; i++) free(c->in[i]);
    free(c->out), free(c->aux), free(c->aux2), free(c->ints);
}

/* ---------------- GELU ---------------- */

static void gelu_setup(op_case *c, int s, layer_rng *r) {
    int N = s == 0 ? 1 : s == 1 ? 16 : s == 2 ? 33 : tu_randint(r, 2, 300);
    c->dims[0] = N;
    add_in(c, r, "x", N, 3.0f);
    alloc_out(c, N, 0, 0);
}
static double gelu_forward(op_case *c, int ref) {
    (ref ? layer_gelu_forward_ref : layer_gelu_forward)(c->out, c->in[0], c->dims[0]);
    return 0;
}
static void gelu_backward(op_case *c, int ref, const float *dout, float **d) {
    (ref ? layer_gelu_backward_ref : layer_gelu_backward)(d[0], c->in[0], dout, c->dims[0]);
}

/* ---------------- RMSNorm ---------------- */

static void rms_setup(op_case *c, int s, layer_rng *r) {
    int N = tu_randint(r, 1, 7), C = s == 0 ? 16 : s == 1 ? 5 : tu_randint(r, 17, 140);
    c->dims[0] = N, c->dims[1] = C;
    add_in(c, r, "x", (size_t)N * C, 1.5f);
    add_in(c, r, "w", C, 1.0f);
    for (int i = 0; i < C; i++) c->in[1][i] += 1.0f;
    alloc_out(c, (size_t)N * C, N, 0);
}
static double rms_forward(op_case *c, int ref) {
    (ref ? layer_rmsnorm_forward_ref : layer_rmsnorm_forward)(c->out, c->aux, c->in[0], c->in[1],
                                                              c->dims[0], c->dims[1]);
    return 0;
}
static void rms_backward(op_case *c, int ref, const float *dout, float **d) {
    (ref ? layer_rmsnorm_backward_ref : layer_rmsnorm_backward)(d[0], d[1], dout, c->in[0],
                                                                c->in[1], c->aux, c->dims[0],
                                                                c->dims[1]);
}

/* ---------------- LayerNorm ---------------- */

static void ln_setup(op_case *c, int s, layer_rng *r) {
    int N = tu_randint(r, 1, 7), C = s == 0 ? 32 : s == 1 ? 3 : tu_randint(r, 17, 100);
    c->dims[0] = N, c->dims[1] = C;
    add_in(c, r, "x", (size_t)N * C, 2.0f);
    add_in(c, r, "w", C, 1.0f);
    add_in(c, r, "b", C, 1.0f);
    for (size_t i = 0; i < (size_t)N * C; i++) c->in[0][i] += 0.5f; /* off-centre rows */
    alloc_out(c, (size_t)N * C, N, N);
}
static double ln_forward(op_case *c, int ref) {
    (ref ? layer_layernorm_forward_ref : layer_layernorm_forward)(
        c->out, c->aux, c->aux2, c->in[0], c->in[1], c->in[2], c->dims[0], c->dims[1]);
    return 0;
}
static void ln_backward(op_case *c, int ref, const float *dout, float **d) {
    (ref ? layer_layernorm_backward_ref : layer_layernorm_backward)(
        d[0], d[1], d[2], dout, c->in[0], c->in[1], c->aux, c->aux2, c->dims[0], c->dims[1]);
}

/* ---------------- softmax cross-entropy (a loss: L is its value) ---------------- */

static void ce_setup(op_case *c, int s, layer_rng *r) {
    int N = tu_randint(r, 2, 9), V = s == 0 ? 256 : s == 1 ? 7 : tu_randint(r, 17, 90);
    c->dims[0] = N, c->dims[1] = V;
    add_in(c, r, "logits", (size_t)N * V, 2.5f);
    c->ints = layer_xmalloc((size_t)N * sizeof(int32_t));
    for (int n = 0; n < N; n++) c->ints[n] = n % 4 == 1 ? -1 : tu_randint(r, 0, V - 1);
    c->scalar_out = 1;
    alloc_out(c, 1, 0, 0);
}
static double ce_forward(op_case *c, int ref) {
    int cnt;
    double l = (ref ? layer_crossentropy_ref : layer_crossentropy)(NULL, &cnt, c->in[0], c->ints,
                                                                    c->dims[0], c->dims[1], 1.0f);
    c->out[0] = (float)l;
    return l;
}
static void ce_backward(op_case *c, int ref, const float *dout, float **d) {
    (void)dout;
    int cnt;
    size_t n = (size_t)c->dims[0] * c->dims[1];
    float *g = tu_zeros(n); /* crossentropy writes its gradient: add it for the harness */
    (ref ? layer_crossentropy_ref : layer_crossentropy)(g, &cnt, c->in[0], c->ints, c->dims[0],
                                                        c->dims[1], 1.0f);
    for (size_t i = 0; i < n; i++) d[0][i] += g[i];
    free(g);
}

/* ---------------- dense linear (OpenBLAS against the loops) ---------------- */

static void lin_setup(op_case *c, int s, layer_rng *r) {
    int N = tu_randint(r, 1, 9), C = s == 0 ? 16 : tu_randint(r, 1, 40), OC = tu_randint(r, 1, 37);
    c->dims[0] = N, c->dims[1] = C, c->dims[2] = OC;
    add_in(c, r, "x", (size_t)N * C, 1.0f);
    add_in(c, r, "w", (size_t)OC * C, 1.0f);
    add_in(c, r, "b", OC, 1.0f);
    alloc_out(c, (size_t)N * OC, 0, 0);
}
static double lin_forward(op_case *c, int ref) {
    (ref ? layer_linear_forward_ref : layer_linear_forward)(c->out, c->in[0], c->in[1], c->in[2],
                                                            c->dims[0], c->dims[1], c->dims[2]);
    return 0;
}
static void lin_backward(op_case *c, int ref, const float *dout, float **d) {
    (ref ? layer_linear_backward_ref : layer_linear_backward)(d[0], d[1], d[2], dout, c->in[0],
                                                              c->in[1], c->dims[0], c->dims[1],
                                                              c->dims[2]);
}

/* ---------------- attention core: every mask, self and cross ---------------- */

typedef struct {
    int B, Tq, Tk, NH, HS;
    layer_attn_mask mask;
    float scale; /* 0: 1/sqrt(HS) */
} attn_shape;

static const attn_shape ATTN[] = {
    {2, 7, 7, 3, 4, LAYER_ATTN_FULL, 0},      /* C = 12, bidirectional self-attention */
    {2, 5, 9, 3, 4, LAYER_ATTN_FULL, 0},      /* cross-attention, Tq < Tk */
    {1, 9, 4, 2, 5, LAYER_ATTN_FULL, 0.7f},   /* cross-attention, Tq > Tk */
    {2, 7, 7, 3, 4, LAYER_ATTN_CAUSAL, 0},
    {1, 21, 21, 1, 6, LAYER_ATTN_CAUSAL, 0.3f}, /* rows past one vector of keys */
    {1, 3, 40, 2, 4, LAYER_ATTN_FULL, 0},     /* 40 keys: two full vectors and a tail */
    {2, 4, 10, 3, 4, LAYER_ATTN_SLOT, 4.0f},  /* 4 slots + 6 encoder outputs */
    {1, 5, 5, 2, 3, LAYER_ATTN_SLOT, 1.0f},   /* no encoder outputs: each slot sees itself */
};
#define NATTN ((int)(sizeof ATTN / sizeof ATTN[0]))

static void attn_setup(op_case *c, int s, layer_rng *r) {
    const attn_shape *a = &ATTN[s];
    int C = a->NH * a->HS;
    memcpy(c->dims, (int[6]){a->B, a->Tq, a->Tk, C, a->NH, (int)a->mask}, sizeof(c->dims));
    add_in(c, r, "q", (size_t)a->B * a->Tq * C, 1.0f);
    add_in(c, r, "k", (size_t)a->B * a->Tk * C, 1.0f);
    add_in(c, r, "v", (size_t)a->B * a->Tk * C, 1.0f);
    alloc_out(c, (size_t)a->B * a->Tq * C, (size_t)a->B * a->NH * a->Tq * a->Tk, (size_t)a->Tq * a->Tk);
}
static float attn_scale(const op_case *c, int s) {
    (void)c;
    return ATTN[s].scale != 0.0f ? ATTN[s].scale : 1.0f / sqrtf((float)ATTN[s].HS);
}
static int attn_shape_of(const op_case *c) {
    for (int s = 0; s < NATTN; s++)
        if (ATTN[s].B == c->dims[0] && ATTN[s].Tq == c->dims[1] && ATTN[s].Tk == c->dims[2] &&
            ATTN[s].NH == c->dims[4] && (int)ATTN[s].mask == c->dims[5] &&
            ATTN[s].NH * ATTN[s].HS == c->dims[3])
            return s;
    LAYER_ASSERT(0);
    return 0;
}
static double attn_forward(op_case *c, int ref) {
    int *d = c->dims;
    float sc = attn_scale(c, attn_shape_of(c));
    (ref ? layer_attention_forward_ref : layer_attention_forward)(
        c->out, c->aux, c->in[0], c->in[1], c->in[2], d[0], d[1], d[2], d[3], d[4], sc,
        (layer_attn_mask)d[5]);
    return 0;
}
static void attn_backward(op_case *c, int ref, const float *dout, float **g) {
    int *d = c->dims;
    float sc = attn_scale(c, attn_shape_of(c));
    if (ref)
        layer_attention_backward_ref(g[0], g[1], g[2], dout, c->in[0], c->in[1], c->in[2], c->aux,
                                     d[0], d[1], d[2], d[3], d[4], sc, (layer_attn_mask)d[5]);
    else
        layer_attention_backward(g[0], g[1], g[2], c->aux2, dout, c->in[0], c->in[1], c->in[2],
                                 c->aux, d[0], d[1], d[2], d[3], d[4], sc, (layer_attn_mask)d[5]);
}

/* ---------------- hashed projection (tiled store, local row ids) ---------------- */

/* in[0] x (N, K*TAU), in[1] rows (a store of R = K<<TAU rows), in[2] b (OC); the index and
 * score are part of the op, so finite differences of x go through the score. Inputs are
 * kept away from 0, where the bucket (a sign) would flip under the FD step. */
static void hash_setup(op_case *c, int s, layer_rng *r) {
    int N = tu_randint(r, 1, 40), K = tu_randint(r, 1, 6), TAU = tu_randint(r, 2, 6);
    int OC = s == 0 ? 16 : s == 1 ? 33 : tu_randint(r, 1, 70), mode = s % 2;
    int R = K << TAU;
    memcpy(c->dims, (int[6]){N, K, TAU, OC, R, mode}, sizeof(c->dims));
    add_in(c, r, "x", (size_t)N * K * TAU, 1.0f);
    for (size_t i = 0; i < c->n_in[0]; i++)
        c->in[0][i] += c->in[0][i] >= 0 ? 0.1f : -0.1f;
    add_in(c, r, "rows", layer_hash_store_floats(R, OC), 1.0f);
    add_in(c, r, "b", OC, 1.0f);
    c->ints = layer_xmalloc(2 * (size_t)N * K * sizeof(int32_t)); /* idx, rowid */
    alloc_out(c, (size_t)N * OC, (size_t)N * K, 0);
}
static double hash_forward(op_case *c, int ref) {
    int *d = c->dims, N = d[0], K = d[1];
    int32_t *idx = c->ints, *rowid = c->ints + (size_t)N * K;
    layer_hash_index(idx, c->aux, c->in[0], N, K, d[2], (layer_score_mode)d[5], 0.8f);
    layer_hash_rowid_local(rowid, idx, N, K, d[2]);
    (ref ? layer_hash_forward_ref : layer_hash_forward)(c->out, rowid, c->aux, c->in[1], c->in[2],
                                                        N, K, d[4], d[3]);
    return 0;
}
static void hash_backward(op_case *c, int ref, const float *dout, float **g) {
    int *d = c->dims, N = d[0], K = d[1];
    const int32_t *rowid = c->ints + (size_t)N * K;
    float *gs = tu_zeros((size_t)N * K);
    (ref ? layer_hash_backward_ref : layer_hash_backward)(g[1], gs, g[2], dout, rowid, c->aux,
                                                          c->in[1], N, K, d[4], d[3]);
    layer_hash_score_backward(g[0], gs, c->in[0], N, K, d[2], (layer_score_mode)d[5], 0.8f);
    free(gs);
}

static const op_def OPS[] = {
    {"gelu", 6, gelu_setup, gelu_forward, gelu_backward, 1e-5, 1e-5},
    {"rmsnorm", 5, rms_setup, rms_forward, rms_backward, 1e-5, 1e-5},
    {"layernorm", 5, ln_setup, ln_forward, ln_backward, 1e-5, 1e-4},
    {"crossentropy", 5, ce_setup, ce_forward, ce_backward, 1e-5, 1e-5},
    {"linear", 4, lin_setup, lin_forward, lin_backward, 1e-5, 1e-5},
    {"attention", NATTN, attn_setup, attn_forward, attn_backward, 1e-5, 1e-4},
    {"hash", 6, hash_setup, hash_forward, hash_backward, 1e-5, 1e-4},
};
#define NOPS ((int)(sizeof OPS / sizeof OPS[0]))

/* Largest |a - b| relative to b's RMS (entries near zero judged against the typical size). */
static double rms_err(const float *a, const float *b, size_t n) {
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)b[i] * b[i];
    return tu_max_relerr(a, b, n, fmax(sqrt(ss / (double)(n ? n : 1)), 1e-30));
}

typedef struct fd_ctx {
    const op_def *op;
    op_case *c;
    const float *wout;
} fd_ctx;

static double fd_loss(void *p) {
    fd_ctx *f = p;
    double l = f->op->forward(f->c, 0);
    return f->c->scalar_out ? l : tu_dot(f->wout, f->c->out, f->c->nout);
}

static void check_op(const op_def *op, int s, layer_rng *r) {
    op_case c;
    memset(&c, 0, sizeof(c));
    op->setup(&c, s, r);
    float *ref_out = tu_zeros(c.nout);
    op->forward(&c, 1);
    memcpy(ref_out, c.out, c.nout * sizeof(float));
    op->forward(&c, 0);
    double ef = rms_err(c.out, ref_out, c.nout);
    ck_assert_msg(ef < op->fwd_tol, "%s shape %d: fast forward differs from reference by %g",
                  op->name, s, ef);

    float *wout = tu_randn(r, c.nout, 1.0f);
    float *gf[MAX_IN], *gr[MAX_IN], *g2[MAX_IN];
    for (int i = 0; i < c.nin; i++) {
        gf[i] = tu_zeros(c.n_in[i]);
        gr[i] = tu_zeros(c.n_in[i]);
        g2[i] = tu_zeros(c.n_in[i]);
    }
    op->forward(&c, 1);
    op->backward(&c, 1, wout, gr);
    op->forward(&c, 0);
    op->backward(&c, 0, wout, gf);
    for (int k = 0; k < 2; k++) op->backward(&c, 0, wout, g2);
    for (int i = 0; i < c.nin; i++) {
        double eb = rms_err(gf[i], gr[i], c.n_in[i]);
        ck_assert_msg(eb < op->bwd_tol, "%s shape %d: fast d%s differs from reference by %g",
                      op->name, s, c.in_name[i], eb);
        /* sums over rows (dw, db) add row by row onto the first result: equal to rounding */
        for (size_t j = 0; j < c.n_in[i]; j++) gr[i][j] = 2.0f * gf[i][j];
        double e2 = rms_err(g2[i], gr[i], c.n_in[i]);
        ck_assert_msg(e2 < 1e-5, "%s shape %d: d%s is not added (off by %g)", op->name, s,
                      c.in_name[i], e2);
    }
    fd_ctx f = {op, &c, wout};
    for (int i = 0; i < c.nin; i++) {
        double e = tu_gradcheck(fd_loss, &f, c.in[i], gf[i], (int)c.n_in[i], FD_EPS, FD_FLOOR,
                                FD_CHECKS, r);
        ck_assert_msg(e < FD_TOL, "%s shape %d: d%s off finite differences by %g", op->name, s,
                      c.in_name[i], e);
    }
    for (int i = 0; i < c.nin; i++) free(gf[i]), free(gr[i]), free(g2[i]);
    free(ref_out);
    free(wout);
    case_free(&c);
}

START_TEST(test_ops) {
    const op_def *op = &OPS[_i];
    layer_rng r;
    tu_seed(&r, op->name);
    for (int s = 0; s < op->nshapes; s++) check_op(op, s, &r);
}
END_TEST

/* Inputs far out in the tails: the vector exp saturates as the reference does. */
START_TEST(test_ops_extremes) {
    const float x[8] = {-1e4f, -60.0f, -9.0f, -1e-30f, 0.0f, 1e-30f, 12.0f, 1e4f};
    float y[8], yr[8], d[8] = {0}, dr[8] = {0};
    const float g[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    layer_gelu_forward(y, x, 8);
    layer_gelu_forward_ref(yr, x, 8);
    layer_gelu_backward(d, x, g, 8);
    layer_gelu_backward_ref(dr, x, g, 8);
    for (int i = 0; i < 8; i++) {
        ck_assert_msg(isfinite(y[i]) && fabsf(y[i] - yr[i]) <= 1e-6f * fmaxf(1.0f, fabsf(yr[i])),
                      "gelu(%g) = %g, reference %g", x[i], y[i], yr[i]);
        ck_assert_msg(fabsf(d[i] - dr[i]) <= 1e-5f, "gelu'(%g) = %g, reference %g", x[i], d[i], dr[i]);
    }
    /* logits 1000 apart: the loss of the small one is 1000, no overflow */
    const float l[2] = {1000.0f, 0.0f};
    const int32_t t[1] = {1};
    int cnt;
    double loss = layer_crossentropy(NULL, &cnt, l, t, 1, 2, 1.0f);
    ck_assert_double_eq_tol(loss, 1000.0, 1e-9);
}
END_TEST

static Suite *ops_suite(void) {
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_ops, 0, NOPS);
    tcase_add_test(tc, test_ops_extremes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(ops_suite()); }
