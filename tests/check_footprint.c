/* The memory estimate against what the engine allocates: parameters and tables exactly, activation arenas within bounds. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "comm/comm.h"
#include "layers/common.h"
#include "tests/testutil.h"
#include "trainer/base/arena.h"
#include "trainer/config/config.h"
#include "trainer/engine/footprint.h"
#include "trainer/model/model.h"
#include "trainer/engine/rollout.h"
#include "trainer/run/train.h"
#include "trainer/tables/tables_internal.h"

static comm_ctx *g_comm;

/* Small configurations of every kind the engine builds. */
static void config_of(trainer_config *c, int kind) {
    trainer_config_defaults(c);
    c->d_model = 32;
    c->n_heads = 4;
    c->seg_len = 12;
    c->mem_slots = 3;
    c->tau = 4;
    c->expand_bits = 2;
    c->horizon = 3;
    c->streams = 2;
    c->vocab = 40;
    c->arch = kind & 1 ? TRAINER_ARCH_MEMFORMER : TRAINER_ARCH_DECODER;
    c->proj = kind & 2 ? TRAINER_PROJ_HASH : TRAINER_PROJ_DENSE;
    if (kind & 4) c->memory = false;
    if (kind & 8) {
        c->pos = TRAINER_POS_ROPE;
        c->rope_frac = 0.5f;
    }
    if (kind & 16) c->bptt = TRAINER_BPTT_FULL;
    char err[256];
    LAYER_ASSERT(trainer_config_validate(c, err, sizeof err) == 0);
}

static const int KINDS[] = {0, 1, 2, 3, 5, 7, 8 | 3, 16 | 3, 16 | 2};
enum { NKINDS = sizeof(KINDS) / sizeof(KINDS[0]) };

START_TEST(test_parameters_exact) {
    for (int i = 0; i < NKINDS; i++) {
        trainer_config c;
        config_of(&c, KINDS[i]);
        trainer_footprint f;
        trainer_footprint_estimate(&c, 1, TRAINER_USE_TRAIN, 0, 0, 0, &f);
        trainer_model_spec spec;
        trainer_spec_from_config(&spec, &c);
        trainer_model *m = trainer_model_create(&spec, g_comm);
        double dense = 24.0 * (double)trainer_model_params(m)->total;
        double tables = (double)trainer_tables_owned_bytes(trainer_model_tables(m));
        ck_assert_msg(f.dense == dense, "kind %d: dense %.0f estimated, %.0f allocated", KINDS[i],
                      f.dense, dense);
        ck_assert_msg(f.tables == tables, "kind %d: tables %.0f estimated, %.0f allocated",
                      KINDS[i], f.tables, tables);
        trainer_model_free(m);
    }
}
END_TEST

/* The arenas of an evaluation pass and of one training segment (each with the model's
 * scratch: the forward's FFN temporaries, the backward's), measured after real passes: the
 * estimate may be above, by a bounded margin, never below. The evaluation runs first, so the
 * scratch's peak is its own. */
START_TEST(test_activations_bounded) {
    layer_rng rng;
    tu_seed(&rng, "footprint");
    for (int i = 0; i < NKINDS; i++) {
        trainer_config c;
        config_of(&c, KINDS[i]);
        trainer_model_spec spec;
        trainer_spec_from_config(&spec, &c);
        trainer_model *m = trainer_model_create(&spec, g_comm);
        trainer_footprint f;

        int B = 3;
        trainer_config ce = c;
        ce.streams = B;
        trainer_footprint_estimate(&ce, 1, TRAINER_USE_EVAL, 0, 0, 0, &f);
        trainer_segments *sg = trainer_segments_create(m, B);
        for (int k = 0; k < B * c.seg_len; k++) {
            sg->enc[k] = tu_randint(&rng, 0, c.vocab);
            sg->dec[k] = tu_randint(&rng, 0, c.vocab);
            sg->tgt[k] = tu_randint(&rng, 0, c.vocab - 1);
        }
        for (int b = 0; b < B; b++) sg->reset[b] = 1;
        int cnt;
        trainer_segments_forward(m, sg, &cnt, NULL);
        double got = (double)(trainer_arena_peak(sg->arena) + trainer_model_scratch_peak(m));
        if (getenv("FOOTPRINT_SHOW")) printf("kind %2d eval %.3f\n", KINDS[i], f.segment / got);
        ck_assert_msg(f.segment >= got && f.segment <= 1.3 * got,
                      "kind %d: evaluation of %d streams: %.0f estimated, %.0f measured", KINDS[i], B,
                      f.segment, got);
        trainer_tables_clear_cache(trainer_model_tables(m));
        trainer_segments_free(sg);

        trainer_footprint_estimate(&c, 1, TRAINER_USE_TRAIN, 0, 0, 0, &f);
        trainer_rollout_mode mode = c.bptt == TRAINER_BPTT_FULL ? TRAINER_ROLLOUT_FULL : TRAINER_ROLLOUT_MRBP;
        trainer_rollout *r = trainer_rollout_create(m, c.horizon, c.streams, mode);
        trainer_rollout_set_block(r, trainer_config_stream_block(&c, 1));
        float *M = calloc((size_t)c.streams * trainer_model_memory_size(m) + 1, sizeof(float));
        tu_random_rollout(r, spec.vocab, &rng);
        tu_train_rollout(r, m, M, 1.0f);
        got = (double)(trainer_rollout_peak_bytes(r) + trainer_model_scratch_peak(m));
        /* full BPTT keeps every segment's arena when a memory makes them sequential */
        int kept = mode == TRAINER_ROLLOUT_FULL && trainer_model_memory_size(m) ? c.horizon : 1;
        double want = f.segment * kept;
        if (getenv("FOOTPRINT_SHOW")) printf("kind %2d train %.3f\n", KINDS[i], want / got);
        ck_assert_msg(want >= got && want <= 1.3 * got,
                      "kind %d: one block's rollout arenas: %.0f estimated, %.0f measured", KINDS[i],
                      want, got);
        trainer_rollout_free(r);
        free(M);
        trainer_tables_discard_grads(trainer_model_tables(m));
        trainer_model_free(m);
    }
}
END_TEST

/* An arena whose requests grow from one use to the next (sampling grows its prefix a token
 * at a time) holds a few times its peak, not the sum of every size it was asked for. */
START_TEST(test_arena_growing_requests) {
    trainer_arena *a = trainer_arena_create(4096);
    for (size_t n = 1; n <= 400; n++) {
        trainer_arena_reset(a);
        trainer_arena_floats(a, 100 * n);
        trainer_arena_ints(a, 7);
        trainer_arena_floats(a, 300 * n);
        trainer_arena_floats(a, 50 * n);
    }
    size_t peak = trainer_arena_peak(a), held = trainer_arena_reserved(a);
    ck_assert_msg(held <= 3 * peak, "arena holds %zu bytes for a peak of %zu", held, peak);
    trainer_arena_free(a);
}
END_TEST

/* Large reused buffers are mappings on a huge-page boundary advised as huge pages, zeroed and
 * writable to their end; small ones are plain mappings; an arena's large block spans whole
 * huge pages and hands them all out. */
START_TEST(test_huge_mappings) {
    size_t n = 3 * (size_t)LAYER_HUGE_PAGE + 5;
    unsigned char *p = layer_xmap(n);
    ck_assert_msg((uintptr_t)p % LAYER_HUGE_PAGE == 0, "%p is not on a huge-page boundary", p);
    ck_assert(p[0] == 0 && p[n / 2] == 0 && p[n - 1] == 0);
    memset(p, 7, n);
    char flags[512] = "";
    ck_assert_int_eq(tu_vm_flags(p, flags, sizeof flags), 0);
    ck_assert_msg(strstr(flags, " hg") != NULL, "not advised as huge pages: %s", flags);
    layer_unmap(p, n);
    ck_assert_int_eq(tu_vm_flags(p, flags, sizeof flags), -1); /* all of it went back */

    unsigned char *q = layer_xmap(100);
    ck_assert(q[99] == 0);
    q[99] = 1;
    ck_assert_int_eq(tu_vm_flags(q, flags, sizeof flags), 0);
    ck_assert_msg(strstr(flags, " hg") == NULL, "a small mapping advised as huge pages: %s", flags);
    layer_unmap(q, 100);

    trainer_arena *a = trainer_arena_create(4096);
    float *x = trainer_arena_floats(a, (size_t)LAYER_HUGE_PAGE / sizeof(float) + 1);
    ck_assert((uintptr_t)x % LAYER_HUGE_PAGE == 0);
    ck_assert_uint_eq(trainer_arena_reserved(a), 2 * (size_t)LAYER_HUGE_PAGE);
    /* the rest of the second huge page serves the next request, no new block */
    float *y = trainer_arena_floats(a, (size_t)LAYER_HUGE_PAGE / sizeof(float) / 2);
    ck_assert_uint_eq(trainer_arena_reserved(a), 2 * (size_t)LAYER_HUGE_PAGE);
    y[(size_t)LAYER_HUGE_PAGE / sizeof(float) / 2 - 1] = 1;
    trainer_arena_free(a);
}
END_TEST

/* On one rank every table store is held whole: on a huge-page boundary and advised as huge
 * pages (only the shards another rank owns stay in small pages: test_store_pages in
 * check_dist). */
START_TEST(test_store_huge_pages) {
    trainer_config c;
    char err[256];
    trainer_config_defaults(&c);
    c.proj = TRAINER_PROJ_HASH;
    c.d_model = 256; /* tau 8: 32 tables of 256 rows, 8 MiB per store of 256 columns */
    c.n_heads = 4;
    c.n_layers = 1;
    c.streams = c.stream_block = 1;
    ck_assert_int_eq(trainer_config_validate(&c, err, sizeof err), 0);
    trainer_model_spec spec;
    trainer_spec_from_config(&spec, &c);
    trainer_model *m = trainer_model_create(&spec, g_comm);
    trainer_tables *t = trainer_model_tables(m);
    int checked = 0;
    for (int g = 0; g < t->n; g++) {
        const group_state *s = &t->gs[g];
        if (layer_hash_store_floats(s->R, s->g.OC) * sizeof(float) < LAYER_HUGE_PAGE) continue;
        const float *stores[4] = {s->rows[0], s->drows[0], s->m[0], s->v[0]};
        for (int i = 0; i < 4; i++) {
            char flags[512] = "";
            ck_assert((uintptr_t)stores[i] % LAYER_HUGE_PAGE == 0);
            ck_assert_int_eq(tu_vm_flags(stores[i], flags, sizeof flags), 0);
            ck_assert_msg(strstr(flags, " hg") != NULL, "%s store %d not advised: %s", s->g.name,
                          i, flags);
            checked++;
        }
    }
    ck_assert_int_ge(checked, 8);
    trainer_model_free(m);
}
END_TEST

/* Absurd sizes give finite estimates, and the driving keys are named. */
START_TEST(test_absurd_sizes) {
    trainer_config c;
    config_of(&c, 3);
    c.d_model = 65536;
    c.tau = 8;
    trainer_footprint f;
    trainer_footprint_estimate(&c, 2, TRAINER_USE_TRAIN, 0, 0, 0, &f);
    ck_assert(isfinite(f.total) && f.total > 1e12);
    char buf[600];
    trainer_footprint_drivers(&c, &f, buf, sizeof buf);
    /* the tables grow with d_model: they, or the rows fetched of them, are the largest part */
    ck_assert_msg(strstr(buf, "d_model = 65536") && (strstr(buf, "tables") || strstr(buf, "fetched")),
                  "%s", buf);
    ck_assert_int_eq(trainer_footprint_check_ranges(&c, 2, 0, buf, sizeof buf), 0);

    config_of(&c, 3);
    c.seg_len = 1 << 20;
    c.streams = 1 << 12;
    ck_assert_int_eq(trainer_footprint_check_ranges(&c, 1, 0, buf, sizeof buf), -1);
    ck_assert_msg(strstr(buf, "streams = 4096 over 1 rank x seg_len = 1048576") != NULL, "%s", buf);

    config_of(&c, 3);
    c.seg_len = 30000;
    c.n_heads = 4;
    trainer_footprint_estimate(&c, 1, TRAINER_USE_TRAIN, 0, 0, 0, &f);
    trainer_footprint_drivers(&c, &f, buf, sizeof buf);
    ck_assert_msg(strstr(buf, "activations") && strstr(buf, "seg_len = 30000"), "%s", buf);

    config_of(&c, 3);
    c.d_model = 1 << 20;
    c.tau = 16;
    c.expand_bits = 0;
    ck_assert_int_eq(trainer_footprint_check_ranges(&c, 1, 0, buf, sizeof buf), -1);
    ck_assert_msg(strstr(buf, "d_model = 1048576 / tau = 16") && strstr(buf, "rows of a table group"),
                  "%s", buf);
}
END_TEST

static Suite *footprint_suite(void) {
    Suite *s = suite_create("footprint");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_parameters_exact);
    tcase_add_test(tc, test_activations_bounded);
    tcase_add_test(tc, test_absurd_sizes);
    tcase_add_test(tc, test_arena_growing_requests);
    tcase_add_test(tc, test_huge_mappings);
    tcase_add_test(tc, test_store_huge_pages);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    g_comm = comm_init(&argc, &argv);
    int rc = tu_run(footprint_suite());
    comm_finalize(g_comm);
    return rc;
}
