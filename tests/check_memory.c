/* Memory per rank under a row budget: peak RSS against the bound, and a bounded run against an unbounded one. */
// mpirun-np: 4
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "comm/comm.h"
#include "layers/layers.h"
#include "tests/testutil.h"
#include "trainer/config/config.h"
#include "trainer/engine/schedule.h"
#include "trainer/engine/step.h"
#include "trainer/tables/tables.h"
#include "trainer/run/train.h"

/* A hashed decoder whose table rows (35 MiB; 206 MiB with Adam state and gradient sums) are
 * several times the row budget, trained with fetched rows: a block's rows fit the budget (a
 * few MiB), a group's full table set (up to 8 MiB of rows) and the step's do not, so rows
 * are fetched again for each block and released after it. */
enum { STEPS = 4 };
static const float BUDGET_MB = 5.0f;

static comm_ctx *world;

static void config(trainer_config *c, float budget_mb) {
    char err[256];
    trainer_config_defaults(c);
    c->arch = TRAINER_ARCH_DECODER;
    c->proj = TRAINER_PROJ_HASH;
    c->d_model = 128;
    c->n_heads = 4;
    c->n_layers = 2;
    c->seg_len = 32;
    c->horizon = 2;
    c->streams = 16;
    c->stream_block = 2; /* 8 blocks: 2 per rank */
    c->table_strategy = TRAINER_STRATEGY_KEY_FETCH;
    c->row_cache_mb = budget_mb;
    c->steps = STEPS;
    c->warmup = 1;
    LAYER_ASSERT(trainer_config_validate(c, err, sizeof(err)) == 0);
}

static double peak_rss_bytes(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_maxrss * 1024.0; /* kilobytes on Linux */
}

typedef struct result {
    double loss[STEPS];
    double activations, state1; /* arena peak; P = 1 table state of the run (bytes) */
    trainer_model *model;
} result;

static void train(const trainer_config *c, result *res) {
    trainer_model_spec spec;
    trainer_spec_from_config(&spec, c);
    res->model = trainer_model_create(&spec, world);
    int P = comm_size(world), me = comm_rank(world);
    trainer_schedule sched = trainer_schedule_make(c->streams, c->stream_block, P, me);
    trainer_rollout *r = trainer_rollout_create(res->model, c->horizon, sched.nstreams_mine,
                                                TRAINER_ROLLOUT_MRBP);
    trainer_rollout_set_block(r, c->stream_block);
    trainer_schedule_attach(&sched, res->model);
    layer_rng rng;
    tu_seed(&rng, "memory");
    for (int i = 0; i < me; i++) tu_random_rollout(r, 256, &rng); /* each rank its own data */
    char err[256];
    for (int s = 0; s < STEPS; s++) {
        tu_random_rollout(r, 256, &rng);
        trainer_step_info si;
        LAYER_ASSERT(trainer_step(res->model, r, &sched, NULL, world, c, s, &si, err, sizeof(err)) == 0);
        res->loss[s] = si.loss_sum / si.tokens;
    }
    res->activations = (double)trainer_rollout_peak_bytes(r);
    /* rows, Adam m and v, the gradient and its double sum: what one rank would hold alone */
    res->state1 = (double)trainer_tables_numel(trainer_model_tables(res->model)) * 24;
    trainer_rollout_free(r);
}

static int64_t all_ranks(int64_t bad) {
    comm_sum_i64(world, &bad, 1);
    return bad;
}

START_TEST(test_budget_bound_and_result) {
    int P = comm_size(world);
    trainer_config bounded, unbounded;
    config(&bounded, BUDGET_MB);
    config(&unbounded, 1e6f);
    /* MPI, the libraries and the test: OpenBLAS fills its work buffer in its first products
       of the model's size, so one such product comes first */
    float *x = tu_zeros(256 * 512), *w = tu_zeros(512 * 512), *y = tu_zeros(256 * 512);
    layer_linear_forward(y, x, w, NULL, 256, 512, 512);
    free(x), free(w), free(y);
    double base = peak_rss_bytes();
    result a, b;
    train(&bounded, &a);
    double peak = peak_rss_bytes();
    /* the bound: the owned share of the one-rank table state (with up to 25% of imbalance),
       the activations, the row budget, over what the process held before the model */
    double bound = base + 1.25 * a.state1 / P + a.activations + BUDGET_MB * 1048576.0;
    double rows = (double)trainer_tables_numel(trainer_model_tables(a.model)) * 4;
    int64_t bad = peak > bound;
    bad += rows < 4 * BUDGET_MB * 1048576.0; /* the tables really are several budgets */
    double mx = peak;
    comm_max_doubles(world, &mx, 1);
    if (comm_rank(world) == 0)
        fprintf(stderr, "P=%d: peak RSS %.1f MiB (max over ranks %.1f) against the bound %.1f "
                "MiB = %.1f before + 1.25 x %.1f / %d + activations %.1f + budget %.1f; rows "
                "%.1f MiB\n", P, peak / 1048576, mx / 1048576, bound / 1048576, base / 1048576,
                a.state1 / 1048576, P, a.activations / 1048576, (double)BUDGET_MB, rows / 1048576);
    train(&unbounded, &b);
    bad += memcmp(a.loss, b.loss, sizeof(a.loss)) != 0;
    trainer_tables *ta = trainer_model_tables(a.model), *tb = trainer_model_tables(b.model);
    for (int g = 0; g < trainer_tables_ngroups(ta); g++) {
        const trainer_table_group *grp = trainer_tables_group(ta, g);
        size_t n = ((size_t)1 << grp->tau) * grp->OC;
        float *x = layer_xmalloc(2 * n * sizeof(float));
        for (int k = 0; k < grp->K; k++)
            for (int j = 0; j < grp->nout; j++)
                if (trainer_tables_unit_get(ta, g, k, j, x, NULL, NULL, NULL) == 0) {
                    trainer_tables_unit_get(tb, g, k, j, x + n, NULL, NULL, NULL);
                    bad += memcmp(x, x + n, n * sizeof(float)) != 0;
                }
        free(x);
    }
    /* and the bounded run really fetched per block: its plan kept fewer rows */
    trainer_model_free(a.model);
    trainer_model_free(b.model);
    ck_assert_int_eq(all_ranks(bad), 0);
}
END_TEST

static Suite *memory_suite(void) {
    Suite *s = suite_create("memory");
    TCase *tc = tcase_create("budget");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_budget_bound_and_result);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    world = comm_init(&argc, &argv);
    int rc = tu_run_mpi(memory_suite(), world);
    comm_finalize(world);
    return rc;
}
