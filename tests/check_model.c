/* Whole-model checks: gradients of the four configurations against finite differences, MRBP against full BPTT. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "tests/testutil.h"
#include "trainer/model/model.h"
#include "trainer/engine/rollout.h"

static comm_ctx *g_comm;

static trainer_model_spec tiny_spec(int memformer, int hash) {
    trainer_model_spec s = {
        .memformer = memformer, .hash = hash, .C = 12, .NH = 2, .n_layers = 2, .enc_layers = 1,
        .dec_layers = 1, .L = 5, .S = 3, .memory = 1, .forgetting = 1, .write_temp = 0.5f,
        .rope_dims = 2, .tau = 3, .expand_bits = 1, .score = LAYER_SCORE_L1PROB,
        .hash_temp = 1.0f, .vocab = 7, .seed = 11,
    };
    return s;
}

/* Random segments: some streams restart their document at t = 0 and one restarts later. */
static void fill_random(trainer_rollout *r, int vocab, layer_rng *rng) {
    size_t n = (size_t)r->T * r->B * r->L;
    for (size_t i = 0; i < n; i++) {
        r->enc[i] = tu_randint(rng, 0, vocab);
        r->dec[i] = tu_randint(rng, 0, vocab);
        r->tgt[i] = tu_randint(rng, 0, vocab - 1);
    }
    r->tgt[3] = -1; /* an unscored position */
    for (int b = 0; b < r->B; b++)
        for (int t = 0; t < r->T; t++) r->reset[b * r->T + t] = (uint8_t)(t == 0 && b == 0);
    if (r->T > 2) r->reset[1 * r->T + 2] = 1;
}

typedef struct fd_ctx {
    trainer_model *m;
    trainer_rollout *r;
    float *M0;
    float *M; /* scratch carried memory */
    size_t msize;
} fd_ctx;

/* Loss of the rollout; *digest identifies the hash buckets it used. */
static double rollout_loss_digest(fd_ctx *c, uint64_t *digest) {
    trainer_tables *tb = trainer_model_tables(c->m);
    /* cached rows would hide the perturbed table entry: fetch afresh */
    trainer_tables_clear_cache(tb);
    trainer_tables_reset_stats(tb);
    double l = trainer_rollout_loss(c->r, c->m, c->M0);
    trainer_tables_stats st;
    trainer_tables_get_stats(tb, &st);
    if (digest) *digest = st.key_digest;
    return l;
}

static double rollout_loss(fd_ctx *c) { return rollout_loss_digest(c, NULL); }

/* Central differences at eps/2. A step that moves any hash bucket (the loss jumps there) is
 * detected by the bucket digest and skipped. Returns the worst error of the rest and counts
 * the skipped entries. */
static double gradcheck_robust(fd_ctx *c, float *p, const float *g, size_t n, int checks,
                               layer_rng *rng, int *skipped, int *checked) {
    double worst = 0.0;
    float eps = 1e-2f;
    for (int k = 0; k < checks; k++) {
        size_t i = n <= (size_t)checks ? (size_t)k : (size_t)(layer_rng_next(rng) % n);
        if (i >= n) break;
        float keep = p[i];
        double f[2];
        uint64_t d0, d[2];
        rollout_loss_digest(c, &d0);
        const float steps[2] = {eps / 2, -eps / 2};
        for (int s = 0; s < 2; s++) {
            p[i] = keep + steps[s];
            f[s] = rollout_loss_digest(c, &d[s]);
        }
        p[i] = keep;
        double fd2 = (f[0] - f[1]) / (double)eps;
        if (d[0] != d0 || d[1] != d0) {
            (*skipped)++;
            continue;
        }
        (*checked)++;
        double err = fabs(g[i] - fd2) / fmax(fabs(g[i]) + fabs(fd2), 2e-3);
        if (err > worst) worst = err;
    }
    return worst;
}

static void check_config(int memformer, int hash, trainer_rollout_mode mode) {
    layer_rng rng;
    tu_seed(&rng, memformer ? (hash ? "mf-hash" : "mf-dense") : (hash ? "dec-hash" : "dec-dense"));
    trainer_model_spec spec = tiny_spec(memformer, hash);
    if (hash && !memformer) { /* the other score mode, with a temperature */
        spec.score = LAYER_SCORE_PROB;
        spec.hash_temp = 0.7f;
    }
    trainer_model *m = trainer_model_create(&spec, g_comm);
    int T = memformer ? 3 : 2, B = 2;
    trainer_rollout *r = trainer_rollout_create(m, T, B, mode);
    fill_random(r, spec.vocab, &rng);
    size_t ms = trainer_model_memory_size(m) * B;
    fd_ctx c = {.m = m, .r = r, .msize = ms};
    c.M0 = tu_randn(&rng, ms + 1, 0.3f);
    c.M = tu_zeros(ms + 1);
    /* analytic gradient of the summed loss */
    memcpy(c.M, c.M0, (ms + 1) * sizeof(float));
    double l_bwd = tu_train_rollout(r, m, c.M, 1.0f);
    ck_assert_double_eq_tol(l_bwd, rollout_loss(&c), 1e-9 * fabs(l_bwd));
    trainer_params *P = trainer_model_params(m);
    float *gd = layer_xmalloc(P->total * sizeof(float));
    memcpy(gd, P->grad, P->total * sizeof(float));
    int skipped = 0, checked = 0;
    double worst = 0.0;
    for (int i = 0; i < P->n; i++) {
        const trainer_tensor *t = &P->t[i];
        double e = gradcheck_robust(&c, P->data + t->off, gd + t->off, t->size, 6, &rng, &skipped,
                                    &checked);
        if (e > 5e-2) fprintf(stderr, "tensor %s: relerr %.3g\n", t->name, e);
        if (e > worst) worst = e;
    }
    trainer_tables *tb = trainer_model_tables(m);
    for (int g = 0; g < trainer_tables_ngroups(tb); g++) {
        const trainer_table_group *grp = trainer_tables_group(tb, g);
        size_t n = ((size_t)1 << grp->tau) * grp->OC;
        for (int j = 0; j < grp->nout; j++) {
            /* chunk 0 and the last chunk of every table group */
            for (int k = 0; k < grp->K; k += grp->K > 1 ? grp->K - 1 : 1) {
                /* the unit's gradient (2^tau, OC); entry i is (bucket i / OC, column i % OC) */
                float *gcopy = layer_xmalloc(n * sizeof(float));
                ck_assert_int_eq(trainer_tables_unit_get(tb, g, k, j, NULL, NULL, NULL, gcopy), 0);
                int hit_checks = 0;
                for (size_t i = 0; i < n && hit_checks < 5; i += 1 + (i % 7)) {
                    if (gcopy[i] == 0.0f && hit_checks >= 3) continue; /* and two anywhere */
                    float *entry = trainer_tables_entry(tb, g, k, j, (int)(i / grp->OC), (int)(i % grp->OC));
                    double e = gradcheck_robust(&c, entry, gcopy + i, 1, 1, &rng, &skipped, &checked);
                    if (e > 5e-2) fprintf(stderr, "table %s/%d/%d[%zu]: relerr %.3g\n", grp->name, j, k, i, e);
                    if (e > worst) worst = e;
                    hit_checks++;
                }
                free(gcopy);
            }
        }
    }
    fprintf(stderr, "memformer=%d hash=%d: %d entries checked, %d skipped, worst relerr %.3g\n",
            memformer, hash, checked, skipped, worst);
    /* skipped steps moved a bucket (exactly detected); most entries must still be checked */
    ck_assert_int_gt(checked, 100);
    ck_assert_int_le(skipped, checked);
    ck_assert_double_lt(worst, 5e-2);
    free(gd);
    free(c.M0);
    free(c.M);
    trainer_rollout_free(r);
    trainer_model_free(m);
}

START_TEST(test_gradcheck_decoder_dense) { check_config(0, 0, TRAINER_ROLLOUT_MRBP); }
END_TEST
START_TEST(test_gradcheck_decoder_hash) { check_config(0, 1, TRAINER_ROLLOUT_MRBP); }
END_TEST
START_TEST(test_gradcheck_memformer_dense) { check_config(1, 0, TRAINER_ROLLOUT_FULL); }
END_TEST
START_TEST(test_gradcheck_memformer_hash) { check_config(1, 1, TRAINER_ROLLOUT_MRBP); }
END_TEST

/* Gradients of all parameters and tables after one rollout; returns them concatenated. */
static float *rollout_grads(int hash, trainer_rollout_mode mode, size_t *n_out, double *loss_out) {
    layer_rng rng;
    tu_seed(&rng, "mrbp-vs-full");
    trainer_model_spec spec = tiny_spec(1, hash);
    spec.C = 16;
    spec.tau = 4;
    spec.L = 6;
    spec.S = 4;
    trainer_model *m = trainer_model_create(&spec, g_comm);
    int T = 4, B = 3;
    trainer_rollout *r = trainer_rollout_create(m, T, B, mode);
    fill_random(r, spec.vocab, &rng);
    size_t ms = trainer_model_memory_size(m) * B;
    float *M = tu_randn(&rng, ms, 0.25f);
    int64_t cnt = trainer_rollout_count(r);
    *loss_out = tu_train_rollout(r, m, M, 1.0f / (float)cnt);
    trainer_params *P = trainer_model_params(m);
    trainer_tables *tb = trainer_model_tables(m);
    size_t n = P->total + trainer_tables_numel(tb);
    float *g = layer_xmalloc(n * sizeof(float));
    memcpy(g, P->grad, P->total * sizeof(float));
    size_t off = P->total;
    for (int gi = 0; gi < trainer_tables_ngroups(tb); gi++) {
        const trainer_table_group *grp = trainer_tables_group(tb, gi);
        size_t tn = ((size_t)1 << grp->tau) * grp->OC;
        for (int j = 0; j < grp->nout; j++)
            for (int k = 0; k < grp->K; k++, off += tn)
                ck_assert_int_eq(trainer_tables_unit_get(tb, gi, k, j, NULL, NULL, NULL, g + off), 0);
    }
    *n_out = n;
    free(M);
    trainer_rollout_free(r);
    trainer_model_free(m);
    return g;
}

static void check_mrbp_equals_full(int hash) {
    size_t n1, n2;
    double l1, l2;
    float *g1 = rollout_grads(hash, TRAINER_ROLLOUT_MRBP, &n1, &l1);
    float *g2 = rollout_grads(hash, TRAINER_ROLLOUT_FULL, &n2, &l2);
    ck_assert_uint_eq(n1, n2);
    ck_assert_double_eq_tol(l1, l2, 1e-9 * fabs(l1));
    /* relative to the overall gradient scale, entry by entry */
    double gmax = 0.0, nonzero = 0;
    for (size_t i = 0; i < n1; i++) {
        gmax = fmax(gmax, fabs(g2[i]));
        nonzero += g2[i] != 0.0f;
    }
    ck_assert(gmax > 0.0);
    ck_assert(nonzero > 100);
    double err = tu_max_relerr(g1, g2, n1, 1e-3 * gmax);
    fprintf(stderr, "hash=%d: MRBP vs full BPTT max relerr %.3g over %zu gradients\n", hash, err, n1);
    ck_assert_double_lt(err, 1e-4);
    free(g1);
    free(g2);
}

START_TEST(test_mrbp_equals_full_dense) { check_mrbp_equals_full(0); }
END_TEST
START_TEST(test_mrbp_equals_full_hash) { check_mrbp_equals_full(1); }
END_TEST

/* The tables' part of the gradient norm is the sum of the squares of the table gradients, in
 * both modes: under bitwise a pass over the owned shards sums them, under fast (one rank) the
 * kernels sum them as they write. The hashed Memformer under MRBP writes each group's
 * gradients in several calls (one per segment recomputed); two rollouts add into the same
 * gradients; after the optimizer step a new sum starts from nothing. */
static double table_grad_sumsq_direct(trainer_tables *tb) {
    double sq = 0.0;
    for (int g = 0; g < trainer_tables_ngroups(tb); g++) {
        const trainer_table_group *grp = trainer_tables_group(tb, g);
        size_t n = ((size_t)1 << grp->tau) * grp->OC;
        float *gu = layer_xmalloc(n * sizeof(float));
        for (int j = 0; j < grp->nout; j++)
            for (int k = 0; k < grp->K; k++) {
                ck_assert_int_eq(trainer_tables_unit_get(tb, g, k, j, NULL, NULL, NULL, gu), 0);
                for (size_t i = 0; i < n; i++) sq += (double)gu[i] * gu[i];
            }
        free(gu);
    }
    return sq;
}

static void check_table_norm(int memformer, int fast) {
    layer_rng rng;
    tu_seed(&rng, "table-norm");
    trainer_model_spec spec = tiny_spec(memformer, 1);
    spec.tables.fast = fast;
    trainer_model *m = trainer_model_create(&spec, g_comm);
    int T = memformer ? 3 : 2, B = 2;
    trainer_rollout *r = trainer_rollout_create(m, T, B, TRAINER_ROLLOUT_MRBP);
    size_t ms = trainer_model_memory_size(m) * B;
    float *M = tu_zeros(ms + 1);
    trainer_tables *tb = trainer_model_tables(m);
    for (int step = 1; step <= 2; step++) {
        for (int pass = 0; pass < 2; pass++) {
            fill_random(r, spec.vocab, &rng);
            memset(M, 0, (ms + 1) * sizeof(float));
            tu_train_rollout(r, m, M, 1.0f);
            double want = table_grad_sumsq_direct(tb), got = trainer_tables_grad_sumsq(tb);
            ck_assert_msg(want > 0.0, "no table gradient");
            ck_assert_msg(fabs(got - want) <= 1e-9 * want,
                          "memformer=%d fast=%d step %d pass %d: table norm^2 %.17g, the "
                          "gradients' squares sum to %.17g", memformer, fast, step, pass, got, want);
        }
        trainer_tables_step(tb, 1e-3f, 0.9f, 0.999f, 1e-8f, step, 1.0f);
        memset(trainer_model_params(m)->grad, 0, trainer_model_params(m)->total * sizeof(float));
    }
    free(M);
    trainer_rollout_free(r);
    trainer_model_free(m);
}

START_TEST(test_table_norm) {
    for (int memformer = 0; memformer <= 1; memformer++)
        for (int fast = 0; fast <= 1; fast++) check_table_norm(memformer, fast);
}
END_TEST

/* The memory really carries information: gradients reach the first segment's memory, and
 * changing the carried memory changes a later segment's loss. */
START_TEST(test_memory_carries) {
    layer_rng rng;
    tu_seed(&rng, "carry");
    trainer_model_spec spec = tiny_spec(1, 0);
    trainer_model *m = trainer_model_create(&spec, g_comm);
    trainer_rollout *r = trainer_rollout_create(m, 3, 2, TRAINER_ROLLOUT_MRBP);
    fill_random(r, spec.vocab, &rng);
    memset(r->reset, 0, 6);
    size_t ms = trainer_model_memory_size(m) * 2;
    float *M = tu_randn(&rng, ms, 0.3f), *M2 = layer_xmalloc(ms * sizeof(float));
    memcpy(M2, M, ms * sizeof(float));
    double l1 = trainer_rollout_loss(r, m, M);
    for (size_t i = 0; i < ms; i++) M2[i] = -M2[i];
    double l2 = trainer_rollout_loss(r, m, M2);
    ck_assert(fabs(l1 - l2) > 1e-6 * fabs(l1));
    free(M);
    free(M2);
    trainer_rollout_free(r);
    trainer_model_free(m);
}
END_TEST

/* A decoder's prefix forward (what sampling runs) gives the logits the whole segment gives at
 * those positions, whatever the later tokens; learned positions and rotary ones. */
static void check_prefix(int hash, int rope_dims) {
    layer_rng rng;
    tu_seed(&rng, "prefix");
    trainer_model_spec spec = tiny_spec(0, hash);
    spec.rope_dims = rope_dims;
    trainer_model *m = trainer_model_create(&spec, g_comm);
    int B = 2, L = spec.L, V = spec.vocab;
    trainer_segments *sg = trainer_segments_create(m, B);
    int32_t *tok = layer_xmalloc((size_t)B * L * sizeof(int32_t));
    for (int i = 0; i < B * L; i++) tok[i] = tu_randint(&rng, 0, V);
    for (int i = 0; i < B * L; i++) sg->tgt[i] = -1;
    memcpy(sg->dec, tok, (size_t)B * L * sizeof(int32_t));
    trainer_step_act *act;
    int cnt;
    trainer_segments_forward(m, sg, &cnt, &act);
    float *full = layer_xmalloc((size_t)B * L * V * sizeof(float));
    memcpy(full, trainer_step_logits(act), (size_t)B * L * V * sizeof(float));
    for (int n = 1; n < L; n++) {
        for (int b = 0; b < B; b++)
            for (int j = 0; j < n; j++) sg->dec[b * n + j] = tok[b * L + j];
        trainer_segments_forward_prefix(m, sg, n, &cnt, &act);
        const float *lg = trainer_step_logits(act);
        for (int b = 0; b < B; b++)
            for (int j = 0; j < n; j++)
                for (int v = 0; v < V; v++)
                    ck_assert_float_eq_tol(lg[((size_t)b * n + j) * V + v],
                                           full[((size_t)b * L + j) * V + v], 1e-5f);
    }
    /* the comparison is not vacuous: the logits follow the tokens (the last one changed) */
    for (int i = 0; i < B * L; i++) sg->dec[i] = i == L - 1 ? (tok[i] + 1) % V : tok[i];
    trainer_segments_forward(m, sg, &cnt, &act);
    double diff = 0;
    for (int v = 0; v < V; v++)
        diff += fabs(trainer_step_logits(act)[(size_t)(L - 1) * V + v] - full[(size_t)(L - 1) * V + v]);
    ck_assert(diff > 1e-6);
    free(full);
    free(tok);
    trainer_segments_free(sg);
    trainer_model_free(m);
}

START_TEST(test_prefix_forward) {
    check_prefix(0, 0);
    check_prefix(1, 0);
    check_prefix(1, 2);
}
END_TEST

static Suite *model_suite(void) {
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("gradients");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_gradcheck_decoder_dense);
    tcase_add_test(tc, test_gradcheck_decoder_hash);
    tcase_add_test(tc, test_gradcheck_memformer_dense);
    tcase_add_test(tc, test_gradcheck_memformer_hash);
    tcase_add_test(tc, test_mrbp_equals_full_dense);
    tcase_add_test(tc, test_mrbp_equals_full_hash);
    tcase_add_test(tc, test_table_norm);
    tcase_add_test(tc, test_memory_carries);
    tcase_add_test(tc, test_prefix_forward);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    g_comm = comm_init(&argc, &argv);
    int rc = tu_run(model_suite());
    comm_finalize(g_comm);
    return rc;
}
