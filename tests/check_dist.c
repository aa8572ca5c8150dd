/* Distributed training against the one-rank result: losses, parameters, table ownership, determinism. */
// mpirun-np: 2 3 4
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "tests/testutil.h"
#include "trainer/config.h"
#include "trainer/step.h"
#include "trainer/train.h"

enum { STEPS = 20, STREAMS = 6 };

static comm_ctx *world;

static void small_config(trainer_config *cfg) {
    char err[256];
    trainer_config_defaults(cfg);
    cfg->arch = TRAINER_ARCH_MEMFORMER;
    cfg->proj = TRAINER_PROJ_HASH;
    cfg->d_model = 32;
    cfg->n_heads = 2;
    cfg->enc_layers = 1;
    cfg->dec_layers = 1;
    cfg->seg_len = 8;
    cfg->mem_slots = 4;
    cfg->tau = 4;
    cfg->expand_bits = 1;
    cfg->horizon = 3;
    cfg->streams = STREAMS;
    cfg->lr = 3e-3f;
    cfg->warmup = 2;
    cfg->steps = STEPS;
    LAYER_ASSERT(trainer_config_validate(cfg, err, sizeof(err)) == 0);
}

/* Deterministic data of a global stream: a repeating pattern, so there is something to learn,
 * and documents of 5 segments so memories restart. */
static void fill(trainer_rollout *r, int first_stream, int step) {
    for (int b = 0; b < r->B; b++)
        for (int t = 0; t < r->T; t++) {
            int s = first_stream + b, seg = step * r->T + t;
            size_t off = ((size_t)b * r->T + t) * r->L;
            r->reset[b * r->T + t] = (uint8_t)(seg % 5 == 0);
            for (int i = 0; i < r->L; i++) {
                int pos = seg * r->L + i;
                r->tgt[off + i] = (s * 7 + pos * 3 + (pos / 5) * (pos / 5)) % 37;
                r->dec[off + i] = i ? r->tgt[off + i - 1] : 256;
                r->enc[off + i] = (s + pos) % 41;
            }
        }
}

typedef struct run_result {
    double loss[STEPS];
    trainer_model *model;
} run_result;

/* Trains STEPS steps on comm with its share of the streams; keeps the model. */
static void train(comm_ctx *comm, run_result *res) {
    trainer_config cfg;
    small_config(&cfg);
    trainer_model_spec spec;
    trainer_spec_from_config(&spec, &cfg);
    res->model = trainer_model_create(&spec, comm);
    int P = comm_size(comm), me = comm_rank(comm);
    int first = STREAMS * me / P, B = STREAMS * (me + 1) / P - first;
    trainer_rollout *r = trainer_rollout_create(res->model, cfg.horizon, B, TRAINER_ROLLOUT_MRBP);
    r->first = first;
    r->nstreams = STREAMS;
    float *M = calloc((size_t)B * trainer_model_memory_size(res->model) + 1, sizeof(float));
    char err[256];
    for (int s = 0; s < STEPS; s++) {
        fill(r, first, s);
        trainer_step_info si;
        LAYER_ASSERT(trainer_step(res->model, r, M, comm, &cfg, s, &si, err, sizeof(err)) == 0);
        res->loss[s] = si.loss_sum / si.tokens;
    }
    free(M);
    trainer_rollout_free(r);
}

/* Every rank must agree before asserting, so a failure cannot leave a rank waiting. */
static int64_t all_ranks(int64_t local_failures) {
    comm_sum_i64(world, &local_failures, 1);
    return local_failures;
}

START_TEST(test_matches_one_rank) {
    run_result dist, ref;
    train(world, &dist);
    comm_ctx *self = comm_self(world);
    train(self, &ref);
    int64_t bad = 0;
    double worst = 0;
    for (int s = 0; s < STEPS; s++) {
        /* the design gives equality; the bound is 1e-5 */
        double rel = fabs(dist.loss[s] - ref.loss[s]) / fabs(ref.loss[s]);
        if (rel > worst) worst = rel;
        bad += rel > 1e-5;
    }
    /* training really happened */
    bad += !(dist.loss[STEPS - 1] < 0.9 * dist.loss[0]);
    /* dense parameters: replicated, equal to the one-rank run */
    trainer_params *pd = trainer_model_params(dist.model), *pr = trainer_model_params(ref.model);
    double pworst = tu_max_relerr(pd->data, pr->data, pd->total, 1e-6);
    bad += pworst > 1e-5;
    /* every table unit this rank owns equals the one-rank run's */
    trainer_tables *td = trainer_model_tables(dist.model), *tr = trainer_model_tables(ref.model);
    double tworst = 0;
    int units = 0;
    for (int g = 0; g < trainer_tables_ngroups(td); g++) {
        const trainer_table_group *grp = trainer_tables_group(td, g);
        size_t n = ((size_t)1 << grp->tau) * grp->OC;
        for (int k = 0; k < grp->K; k++)
            for (int j = 0; j < grp->nout; j++) {
                float *a = trainer_tables_unit(td, g, k, j, NULL, NULL, NULL);
                float *b = trainer_tables_unit(tr, g, k, j, NULL, NULL, NULL);
                if (!a) continue;
                double e = tu_max_relerr(a, b, n, 1e-6);
                if (e > tworst) tworst = e;
                units++;
            }
    }
    bad += tworst > 1e-5;
    if (comm_rank(world) == 0)
        fprintf(stderr, "P=%d: loss %.6f -> %.6f, max rel diff to P=1: loss %.3g, dense %.3g, tables %.3g\n",
                comm_size(world), dist.loss[0], dist.loss[STEPS - 1], worst, pworst, tworst);
    int64_t total_units = units;
    comm_sum_i64(world, &total_units, 1);
    trainer_model_free(dist.model);
    trainer_model_free(ref.model);
    comm_finalize(self);
    ck_assert_int_eq(all_ranks(bad), 0);
    ck_assert_int_gt(total_units, 0);
}
END_TEST

START_TEST(test_bitwise_repeatable) {
    run_result a, b;
    train(world, &a);
    train(world, &b);
    int64_t bad = memcmp(a.loss, b.loss, sizeof(a.loss)) != 0;
    trainer_params *pa = trainer_model_params(a.model), *pb = trainer_model_params(b.model);
    bad += memcmp(pa->data, pb->data, pa->total * sizeof(float)) != 0;
    trainer_model_free(a.model);
    trainer_model_free(b.model);
    ck_assert_int_eq(all_ranks(bad), 0);
}
END_TEST

START_TEST(test_each_rank_holds_its_tables_only) {
    trainer_config cfg;
    small_config(&cfg);
    trainer_model_spec spec;
    trainer_spec_from_config(&spec, &cfg);
    trainer_model *m = trainer_model_create(&spec, world);
    trainer_tables *t = trainer_model_tables(m);
    int me = comm_rank(world), P = comm_size(world);
    int64_t owned = 0, expected = 0, bad = 0;
    size_t bytes = 0;
    for (int g = 0; g < trainer_tables_ngroups(t); g++) {
        const trainer_table_group *grp = trainer_tables_group(t, g);
        size_t unit = (size_t)grp->nout * ((size_t)1 << grp->tau) * grp->OC * sizeof(float);
        for (int k = 0; k < grp->K; k++) {
            int mine = trainer_tables_owner(t, g, k) == me;
            int stored = trainer_tables_unit(t, g, k, 0, NULL, NULL, NULL) != NULL;
            bad += mine != stored;
            expected += mine;
            if (mine) bytes += unit;
        }
    }
    owned = trainer_tables_owned_units(t);
    bad += owned != expected;
    /* rows, Adam m and v, float and double gradients: 6 floats' worth per table entry */
    bad += trainer_tables_owned_bytes(t) != 6 * bytes;
    /* every unit has exactly one owner, and the split is even */
    double per_rank[2] = {(double)owned, (double)bytes}, mx = (double)bytes;
    comm_sum_doubles(world, per_rank, 2);
    comm_max_doubles(world, &mx, 1);
    int64_t units = 0;
    for (int g = 0; g < trainer_tables_ngroups(t); g++) units += trainer_tables_group(t, g)->K;
    bad += (int64_t)per_rank[0] != units;
    bad += owned == 0; /* with more units than ranks, every rank owns some */
    double total_bytes = (double)trainer_tables_numel(t) * sizeof(float);
    bad += fabs(per_rank[1] - total_bytes) > 0.5;
    bad += mx > 1.25 * total_bytes / P;
    trainer_model_free(m);
    ck_assert_int_eq(all_ranks(bad), 0);
}
END_TEST

static Suite *dist_suite(void) {
    Suite *s = suite_create("dist");
    TCase *tc = tcase_create("dist");
    tcase_add_test(tc, test_matches_one_rank);
    tcase_add_test(tc, test_bitwise_repeatable);
    tcase_add_test(tc, test_each_rank_holds_its_tables_only);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    world = comm_init(&argc, &argv);
    int rc = tu_run_mpi(dist_suite(), world);
    comm_finalize(world);
    return rc;
}
