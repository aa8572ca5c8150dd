/* Tests of trainer/optim: learning-rate schedule, AdamW, lazy sparse Adam, gradient clipping. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/testutil.h"
#include "trainer/config/config.h"
#include "trainer/base/optim.h"

static trainer_config schedule_config(void) {
    trainer_config c;
    trainer_config_defaults(&c);
    c.lr = 1e-3f;
    c.min_lr = 1e-4f;
    c.warmup = 50;
    c.steps = 200;
    return c;
}

START_TEST(test_lr_warmup) {
    trainer_config c = schedule_config();
    /* (step+1)/warmup: the first step already moves, the last warmup step reaches lr. */
    ck_assert_float_eq_tol(trainer_lr_at(0, &c), 2e-5f, 1e-11f);
    ck_assert_float_eq_tol(trainer_lr_at(24, &c), 5e-4f, 1e-10f);
    ck_assert_float_eq_tol(trainer_lr_at(49, &c), 1e-3f, 1e-10f);
    ck_assert_float_eq_tol(trainer_lr_at(-3, &c), 2e-5f, 1e-11f);
    c.warmup = 0;
    ck_assert_float_eq_tol(trainer_lr_at(0, &c), 1e-3f, 1e-10f);
}
END_TEST

START_TEST(test_lr_cosine) {
    trainer_config c = schedule_config();
    /* Decay starts at lr right after warmup... */
    ck_assert_float_eq_tol(trainer_lr_at(50, &c), 1e-3f, 1e-10f);
    /* ...is halfway between lr and min_lr at the middle of the 150 decay steps... */
    ck_assert_float_eq_tol(trainer_lr_at(125, &c), 5.5e-4f, 1e-10f);
    /* ...and follows the cosine in between (37 of 150 decay steps). */
    ck_assert_double_eq_tol(trainer_lr_at(50 + 37, &c),
                            1e-4 + 0.5 * 9e-4 * (1.0 + cos(3.14159265358979323846 * 37.0 / 150.0)),
                            1e-9);
    /* ...the last step is just above min_lr, and the end and beyond are exactly min_lr. */
    double last = 1e-4 + 0.5 * 9e-4 * (1.0 + cos(3.14159265358979323846 * 149.0 / 150.0));
    ck_assert_double_eq_tol(trainer_lr_at(199, &c), last, 1e-10);
    ck_assert(trainer_lr_at(199, &c) > 1e-4f);
    ck_assert_float_eq(trainer_lr_at(200, &c), 1e-4f);
    ck_assert_float_eq(trainer_lr_at(5000, &c), 1e-4f);
    /* Monotone decreasing over the decay. */
    for (int64_t s = 51; s < 200; s++) ck_assert(trainer_lr_at(s, &c) <= trainer_lr_at(s - 1, &c));
}
END_TEST

START_TEST(test_adamw_two_steps) {
    /* Worked by hand (lr 0.1, betas 0.9/0.95, eps 1e-8, wd 0.1). Step 1, p0 = 0.5, g = 0.1:
     * m = 0.01, v = 5e-4, m_hat = 0.1, v_hat = 0.01, so p = 0.5 - 0.1 * (1 + 0.1 * 0.5) = 0.395.
     * Step 2 uses grad_scale 0.5, so the gradient 0.3 counts as 0.15. Entry 2 has no gradient
     * in step 1 and only decays: 2 - 0.1 * 0.1 * 2 = 1.98. */
    float p[3] = {0.5f, -1.0f, 2.0f}, m[3] = {0}, v[3] = {0};
    const float g1[3] = {0.1f, -0.2f, 0.0f}, g2[3] = {0.3f, 0.1f, -0.5f};
    trainer_adamw_step(p, g1, m, v, 3, 0.1f, 0.9f, 0.95f, 1e-8f, 0.1f, 1, 1.0f);
    const float p1[3] = {0.395f, -0.89f, 1.98f};
    const float m1[3] = {0.01f, -0.02f, 0.0f}, v1[3] = {5e-4f, 2e-3f, 0.0f};
    for (int i = 0; i < 3; i++) {
        ck_assert_float_eq_tol(p[i], p1[i], 1e-6f);
        ck_assert_float_eq_tol(m[i], m1[i], 1e-8f);
        ck_assert_float_eq_tol(v[i], v1[i], 1e-9f);
    }
    trainer_adamw_step(p, g2, m, v, 3, 0.1f, 0.9f, 0.95f, 1e-8f, 0.1f, 2, 0.5f);
    const float p2[3] = {0.292444786f, -0.833623415f, 2.033696f};
    const float m2[3] = {0.024f, -0.013f, -0.025f}, v2[3] = {0.0016f, 0.002025f, 0.003125f};
    for (int i = 0; i < 3; i++) {
        ck_assert_float_eq_tol(p[i], p2[i], 2e-6f);
        ck_assert_float_eq_tol(m[i], m2[i], 1e-8f);
        ck_assert_float_eq_tol(v[i], v2[i], 1e-9f);
    }
}
END_TEST

START_TEST(test_adamw_no_decay) {
    /* wd = 0 with zero gradient leaves the parameter exactly where it was. */
    float p[2] = {1.5f, -2.5f}, m[2] = {0}, v[2] = {0};
    const float g[2] = {0.0f, 0.0f};
    trainer_adamw_step(p, g, m, v, 2, 0.1f, 0.9f, 0.95f, 1e-8f, 0.0f, 1, 1.0f);
    ck_assert_float_eq(p[0], 1.5f);
    ck_assert_float_eq(p[1], -2.5f);
}
END_TEST

START_TEST(test_sparse_untouched_rows) {
    layer_rng r;
    tu_seed(&r, "sparse_untouched");
    enum { R = 6, W = 5 };
    float *rows = tu_randn(&r, R * W, 1.0f);
    float *m = tu_randn(&r, R * W, 0.1f);
    float *v = tu_randn(&r, R * W, 0.1f);
    for (int i = 0; i < R * W; i++) v[i] = v[i] * v[i]; /* second moments are non-negative */
    float *rows0 = malloc(sizeof(float) * R * W), *m0 = malloc(sizeof(float) * R * W),
          *v0 = malloc(sizeof(float) * R * W);
    memcpy(rows0, rows, sizeof(float) * R * W);
    memcpy(m0, m, sizeof(float) * R * W);
    memcpy(v0, v, sizeof(float) * R * W);
    const int32_t uniq[2] = {4, 1};
    float *grad = tu_randn(&r, 2 * W, 1.0f);
    const int64_t t = 7;
    /* the lazy pass: only the touched rows, each with its gradient row (cleared after) */
    trainer_adam k = trainer_adam_at(0.01f, 0.9f, 0.95f, 1e-8f, 0.0f, t, 0.7f);
    float *gcopy = malloc(sizeof(float) * 2 * W);
    memcpy(gcopy, grad, sizeof(float) * 2 * W);
    for (int i = 0; i < 2; i++)
        trainer_adam_apply(rows + uniq[i] * W, m + uniq[i] * W, v + uniq[i] * W, gcopy + i * W, W, &k);
    for (int i = 0; i < 2 * W; i++) ck_assert(gcopy[i] == 0.0f);
    free(gcopy);
    for (int row = 0; row < R; row++) {
        size_t o = (size_t)row * W;
        if (row == 4 || row == 1) {
            /* Touched: what dense Adam (no decay) does to that row alone, bitwise. */
            int gi = row == 4 ? 0 : 1;
            float p[W], mm[W], vv[W];
            memcpy(p, rows0 + o, sizeof p);
            memcpy(mm, m0 + o, sizeof mm);
            memcpy(vv, v0 + o, sizeof vv);
            trainer_adamw_step(p, grad + gi * W, mm, vv, W, 0.01f, 0.9f, 0.95f, 1e-8f, 0.0f, t,
                               0.7f);
            ck_assert_mem_eq(rows + o, p, sizeof p);
            ck_assert_mem_eq(m + o, mm, sizeof mm);
            ck_assert_mem_eq(v + o, vv, sizeof vv);
            ck_assert(memcmp(rows + o, rows0 + o, sizeof p) != 0);
        } else {
            /* Untouched: parameters and moments bitwise unchanged (no moment decay). */
            ck_assert_mem_eq(rows + o, rows0 + o, sizeof(float) * W);
            ck_assert_mem_eq(m + o, m0 + o, sizeof(float) * W);
            ck_assert_mem_eq(v + o, v0 + o, sizeof(float) * W);
        }
    }
    free(rows); free(m); free(v); free(rows0); free(m0); free(v0); free(grad);
}
END_TEST

START_TEST(test_sparse_matches_dense_all_rows) {
    /* Every row touched every step, listed in a shuffled order: sparse Adam is dense Adam. */
    layer_rng r;
    tu_seed(&r, "sparse_dense");
    enum { R = 4, W = 3, N = R * W };
    float *ps = tu_randn(&r, N, 1.0f), pd[N];
    memcpy(pd, ps, sizeof pd);
    float *ms = tu_zeros(N), *vs = tu_zeros(N), *md = tu_zeros(N), *vd = tu_zeros(N);
    const int32_t uniq[R] = {2, 0, 3, 1};
    for (int64_t t = 1; t <= 3; t++) {
        float *gd = tu_randn(&r, N, 1.0f), gs[N];
        for (int i = 0; i < R; i++) memcpy(gs + i * W, gd + uniq[i] * W, sizeof(float) * W);
        trainer_adam k = trainer_adam_at(0.05f, 0.9f, 0.95f, 1e-8f, 0.0f, t, 0.7f);
        for (int i = 0; i < R; i++)
            trainer_adam_apply(ps + uniq[i] * W, ms + uniq[i] * W, vs + uniq[i] * W, gs + i * W, W, &k);
        trainer_adamw_step(pd, gd, md, vd, N, 0.05f, 0.9f, 0.95f, 1e-8f, 0.0f, t, 0.7f);
        free(gd);
    }
    ck_assert_mem_eq(ps, pd, sizeof pd);
    ck_assert_mem_eq(ms, md, sizeof(float) * N);
    ck_assert_mem_eq(vs, vd, sizeof(float) * N);
    free(ps); free(ms); free(vs); free(md); free(vd);
}
END_TEST

START_TEST(test_sumsq) {
    const float g[7] = {3.0f, 4.0f, -1.0f, 0.5f, 2.0f, -2.0f, 0.25f};
    ck_assert_double_eq(trainer_sumsq(g, 2), 25.0);
    ck_assert_double_eq(trainer_sumsq(g, 7), 9 + 16 + 1 + 0.25 + 4 + 4 + 0.0625);
    ck_assert_double_eq(trainer_sumsq(g, 0), 0.0);
    /* Double accumulation: float squares of 1e20 would overflow. */
    const float big[3] = {1e20f, -1e20f, 1e20f};
    double want = 3.0 * (double)1e20f * (double)1e20f;
    ck_assert_double_eq_tol(trainer_sumsq(big, 3), want, want * 1e-15);
    /* Same input, same bits. */
    layer_rng r;
    tu_seed(&r, "sumsq");
    float *x = tu_randn(&r, 100003, 1.0f);
    double a = trainer_sumsq(x, 100003), b = trainer_sumsq(x, 100003), ref = 0.0;
    for (int i = 0; i < 100003; i++) ref += (double)x[i] * x[i];
    ck_assert_mem_eq(&a, &b, sizeof a);
    ck_assert_double_eq_tol(a, ref, ref * 1e-12);
    free(x);
}
END_TEST

START_TEST(test_clip_scale) {
    ck_assert_float_eq_tol(trainer_clip_scale(2.0, 1.0f), (float)(1.0 / (2.0 + 1e-6)), 1e-9f);
    ck_assert_float_eq_tol(trainer_clip_scale(10.0, 0.5f), 0.05f, 1e-8f);
    ck_assert_float_eq(trainer_clip_scale(0.5, 1.0f), 1.0f);
    /* The 1e-6 guard: a norm exactly at the limit scales very slightly below 1. */
    ck_assert(trainer_clip_scale(1.0, 1.0f) < 1.0f);
    ck_assert_float_eq_tol(trainer_clip_scale(1.0, 1.0f), 0.999999f, 1e-7f);
    ck_assert_float_eq(trainer_clip_scale(0.0, 1.0f), 1.0f);
    /* Clipping off. */
    ck_assert_float_eq(trainer_clip_scale(100.0, 0.0f), 1.0f);
    ck_assert_float_eq(trainer_clip_scale(100.0, -1.0f), 1.0f);
    /* A broken norm does not pass through. */
    ck_assert_float_eq(trainer_clip_scale(NAN, 1.0f), 0.0f);
    ck_assert_float_eq(trainer_clip_scale(INFINITY, 1.0f), 0.0f);
}
END_TEST

static Suite *optim_suite(void) {
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("optim");
    tcase_add_test(tc, test_lr_warmup);
    tcase_add_test(tc, test_lr_cosine);
    tcase_add_test(tc, test_adamw_two_steps);
    tcase_add_test(tc, test_adamw_no_decay);
    tcase_add_test(tc, test_sparse_untouched_rows);
    tcase_add_test(tc, test_sparse_matches_dense_all_rows);
    tcase_add_test(tc, test_sumsq);
    tcase_add_test(tc, test_clip_scale);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(optim_suite()); }
