/* Tests of the attention core: mask semantics, sgemm path against the loops, gradients. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers/layers.h"
#include "tests/testutil.h"

/* See check_layers.c for the reasoning behind these numbers. */
#define FD_EPS 1e-2f
#define FD_FLOOR 1e-2
#define FD_TOL 1e-2
#define FD_CHECKS 120
#define REF_TOL 1e-5

static double ref_err(const float *fast, const float *ref, size_t n) {
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)ref[i] * ref[i];
    return tu_max_relerr(fast, ref, n, fmax(sqrt(ss / (double)n), 1e-30));
}

/* One attention problem: sizes, inputs, and the output weights of the scalar loss. */
typedef struct attn_case {
    int B, Tq, Tk, C, NH;
    float scale;
    layer_attn_mask mask;
    int use_ref; /* which forward the finite differences go through */
    float *q, *k, *v;  /* (B,Tq,C), (B,Tk,C), (B,Tk,C) */
    float *out, *att;  /* (B,Tq,C), (B,NH,Tq,Tk) */
    float *wout;       /* (B,Tq,C) = dL/dout */
} attn_case;

static attn_case attn_case_make(layer_rng *r, int B, int Tq, int Tk, int NH, int HS,
                                layer_attn_mask mask, float scale) {
    attn_case a = {B, Tq, Tk, NH * HS, NH, scale, mask, 0, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t nq = (size_t)B * Tq * a.C, nk = (size_t)B * Tk * a.C;
    a.q = tu_randn(r, nq, 1.0f);
    a.k = tu_randn(r, nk, 1.0f);
    a.v = tu_randn(r, nk, 1.0f);
    a.out = tu_zeros(nq);
    a.att = tu_zeros((size_t)B * NH * Tq * Tk);
    a.wout = tu_randn(r, nq, 1.0f);
    return a;
}

static void attn_case_free(attn_case *a) {
    free(a->q), free(a->k), free(a->v), free(a->out), free(a->att), free(a->wout);
}

static void attn_case_forward(attn_case *a) {
    if (a->use_ref)
        layer_attention_forward_ref(a->out, a->att, a->q, a->k, a->v, a->B, a->Tq, a->Tk, a->C,
                                    a->NH, a->scale, a->mask);
    else
        layer_attention_forward(a->out, a->att, a->q, a->k, a->v, a->B, a->Tq, a->Tk, a->C,
                                a->NH, a->scale, a->mask);
}

/* The masks as the header words them, written out independently of attention.c. */
static int sees(layer_attn_mask mask, int i, int j, int Tq) {
    switch (mask) {
    case LAYER_ATTN_FULL: return 1;
    case LAYER_ATTN_CAUSAL: return j <= i;
    case LAYER_ATTN_SLOT: return j == i || j >= Tq;
    }
    return 0;
}

/* The forward in double from the definition, compared with out and att of the case. */
static void assert_forward_matches_definition(const attn_case *a) {
    int HS = a->C / a->NH;
    double *p = malloc((size_t)a->Tk * sizeof(double)); /* (Tk) */
    double worst = 0.0;
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < a->NH; h++)
            for (int i = 0; i < a->Tq; i++) {
                double mx = -INFINITY, sum = 0.0;
                for (int j = 0; j < a->Tk; j++) {
                    double s = 0.0;
                    for (int d = 0; d < HS; d++)
                        s += (double)a->q[((size_t)b * a->Tq + i) * a->C + h * HS + d] *
                             a->k[((size_t)b * a->Tk + j) * a->C + h * HS + d];
                    p[j] = s * a->scale;
                    if (sees(a->mask, i, j, a->Tq) && p[j] > mx) mx = p[j];
                }
                for (int j = 0; j < a->Tk; j++) {
                    p[j] = sees(a->mask, i, j, a->Tq) ? exp(p[j] - mx) : 0.0;
                    sum += p[j];
                }
                const float *ar = a->att + (((size_t)b * a->NH + h) * a->Tq + i) * a->Tk;
                for (int j = 0; j < a->Tk; j++) {
                    p[j] /= sum;
                    if (!sees(a->mask, i, j, a->Tq))
                        ck_assert_msg(ar[j] == 0.0f, "masked att[%d][%d] = %g", i, j, ar[j]);
                    worst = fmax(worst, fabs(ar[j] - p[j]));
                }
                for (int d = 0; d < HS; d++) {
                    double o = 0.0;
                    for (int j = 0; j < a->Tk; j++)
                        o += p[j] * a->v[((size_t)b * a->Tk + j) * a->C + h * HS + d];
                    worst = fmax(worst, fabs(a->out[((size_t)b * a->Tq + i) * a->C + h * HS + d] - o));
                }
            }
    free(p);
    ck_assert_msg(worst < 1e-5, "attention (mask %d) differs from definition by %g", a->mask, worst);
}

/* The configurations every test runs: self- and cross-attention, each mask, odd sizes. */
typedef struct {
    int B, Tq, Tk, NH, HS;
    layer_attn_mask mask;
    float scale; /* 0: 1/sqrt(HS) */
} attn_shape;

static const attn_shape SHAPES[] = {
    {2, 7, 7, 3, 4, LAYER_ATTN_FULL, 0},    /* C = 12, bidirectional self-attention */
    {2, 5, 9, 3, 4, LAYER_ATTN_FULL, 0},    /* cross-attention, Tq < Tk */
    {1, 9, 4, 2, 5, LAYER_ATTN_FULL, 0.7f}, /* cross-attention, Tq > Tk */
    {2, 7, 7, 3, 4, LAYER_ATTN_CAUSAL, 0},
    {1, 11, 11, 1, 6, LAYER_ATTN_CAUSAL, 0.3f},
    {2, 4, 10, 3, 4, LAYER_ATTN_SLOT, 4.0f}, /* 4 slots + 6 encoder outputs, temperature 0.25 */
    {1, 5, 5, 2, 3, LAYER_ATTN_SLOT, 1.0f},  /* no encoder outputs: each slot sees itself only */
};
#define NSHAPES ((int)(sizeof SHAPES / sizeof SHAPES[0]))

static attn_case shape_case(layer_rng *r, const attn_shape *s) {
    float scale = s->scale != 0.0f ? s->scale : 1.0f / sqrtf((float)s->HS);
    return attn_case_make(r, s->B, s->Tq, s->Tk, s->NH, s->HS, s->mask, scale);
}

START_TEST(test_attention_forward_definition) {
    layer_rng r;
    tu_seed(&r, __func__);
    for (int s = 0; s < NSHAPES; s++)
        for (int use_ref = 0; use_ref < 2; use_ref++) {
            attn_case a = shape_case(&r, &SHAPES[s]);
            a.use_ref = use_ref;
            attn_case_forward(&a);
            assert_forward_matches_definition(&a);
            attn_case_free(&a);
        }
}
END_TEST

/* Two backward calls give twice the gradient; NULL gradients are skipped and leave the
 * others unchanged. */
START_TEST(test_attention_accumulates) {
    layer_rng r;
    tu_seed(&r, __func__);
    for (int s = 0; s < NSHAPES; s++) {
        attn_case a = shape_case(&r, &SHAPES[s]);
        size_t nq = (size_t)a.B * a.Tq * a.C, nk = (size_t)a.B * a.Tk * a.C;
        float *scratch = tu_zeros((size_t)a.Tq * a.Tk);
        float *g1[3] = {tu_zeros(nq), tu_zeros(nk), tu_zeros(nk)};
        float *g2[3] = {tu_zeros(nq), tu_zeros(nk), tu_zeros(nk)};
        attn_case_forward(&a);
        layer_attention_backward(g1[0], g1[1], g1[2], scratch, a.wout, a.q, a.k, a.v, a.att, a.B,
                                 a.Tq, a.Tk, a.C, a.NH, a.scale, a.mask);
        for (int rep = 0; rep < 2; rep++)
            layer_attention_backward(g2[0], g2[1], g2[2], scratch, a.wout, a.q, a.k, a.v, a.att,
                                     a.B, a.Tq, a.Tk, a.C, a.NH, a.scale, a.mask);
        for (int w = 0; w < 3; w++) {
            size_t n = w == 0 ? nq : nk;
            for (size_t i = 0; i < n; i++) g1[w][i] *= 2.0f;
            ck_assert_msg(tu_max_relerr(g1[w], g2[w], n, 1e-6) < 1e-5, "shape %d: d%c", s, "qkv"[w]);
            memset(g2[w], 0, n * sizeof(float));
        }
        for (int rep = 0; rep < 2; rep++)
            layer_attention_backward_ref(g2[0], g2[1], g2[2], a.wout, a.q, a.k, a.v, a.att, a.B,
                                         a.Tq, a.Tk, a.C, a.NH, a.scale, a.mask);
        for (int w = 0; w < 3; w++)
            ck_assert_msg(ref_err(g2[w], g1[w], w == 0 ? nq : nk) < REF_TOL, "ref shape %d", s);

        /* each gradient alone, the other two NULL */
        for (int w = 0; w < 3; w++) {
            size_t n = w == 0 ? nq : nk;
            float *one = tu_zeros(n);
            layer_attention_backward(w == 0 ? one : NULL, w == 1 ? one : NULL, w == 2 ? one : NULL,
                                     scratch, a.wout, a.q, a.k, a.v, a.att, a.B, a.Tq, a.Tk, a.C,
                                     a.NH, a.scale, a.mask);
            for (size_t i = 0; i < n; i++) one[i] *= 2.0f;
            ck_assert_msg(tu_max_relerr(one, g1[w], n, 1e-6) < 1e-5, "alone d%c", "qkv"[w]);
            free(one);
        }
        for (int w = 0; w < 3; w++) free(g1[w]), free(g2[w]);
        free(scratch);
        attn_case_free(&a);
    }
}
END_TEST

/* Causality: changing a later key or value must not change an earlier query's output. */
START_TEST(test_attention_causal_no_future) {
    layer_rng r;
    tu_seed(&r, __func__);
    attn_case a = attn_case_make(&r, 1, 8, 8, 2, 5, LAYER_ATTN_CAUSAL, 0.5f);
    size_t nq = (size_t)8 * a.C;
    float *before = tu_zeros(nq);
    attn_case_forward(&a);
    memcpy(before, a.out, nq * sizeof(float));
    for (int c = 0; c < a.C; c++) a.k[5 * a.C + c] += 3.0f, a.v[5 * a.C + c] -= 2.0f;
    attn_case_forward(&a);
    for (int t = 0; t < 8; t++)
        for (int c = 0; c < a.C; c++) {
            float x = a.out[t * a.C + c], y = before[t * a.C + c];
            if (t < 5) ck_assert_float_eq(x, y);
            else ck_assert(x != y);
        }
    free(before);
    attn_case_free(&a);
}
END_TEST

static Suite *attention_suite(void) {
    Suite *s = suite_create("attention");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_attention_forward_definition);
    tcase_add_test(tc, test_attention_accumulates);
    tcase_add_test(tc, test_attention_causal_no_future);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(attention_suite()); }
