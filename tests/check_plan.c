/* The table planner: its byte counts against hand counts, and its choice in hand-made cases. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/testutil.h"
#include "trainer/tables/plan.h"

static trainer_plan_run run_of(int P, int streams, int block, int horizon, int batched) {
    trainer_plan_run r = {.P = P, .streams = streams, .block = block, .horizon = horizon,
                          .batched = batched, .budget = 256.0 * 1048576, .latency = 20e-6,
                          .bandwidth = 100e9 / 8, .wire_bytes = 4, .force = -1};
    return r;
}

START_TEST(test_distinct) {
    /* one lookup hits one row; lookups beyond the rows saturate; 2^tau (1 - (1-2^-tau)^m) */
    ck_assert_double_eq_tol(trainer_plan_distinct(8, 1), 1.0, 1e-12);
    ck_assert_double_eq(trainer_plan_distinct(8, 0), 0.0);
    ck_assert_double_eq_tol(trainer_plan_distinct(2, 3), 4 * (1 - pow(0.75, 3)), 1e-12);
    ck_assert(trainer_plan_distinct(8, 1e6) > 255.99 && trainer_plan_distinct(8, 1e6) <= 256);
}
END_TEST

/* Bytes of each strategy, counted by hand for one group: K = 4 chunks of 2^2 rows, nout 3,
 * OC 8 (W = 24), 2 ranks, 4 streams in blocks of 2, horizon 1, 100 rows per segment. */
START_TEST(test_bytes_by_hand) {
    trainer_plan_run r = run_of(2, 4, 2, 1, 1);
    trainer_plan_group g = {3, 4, 2, 8, 100, -1, 0};
    trainer_plan_cost c;
    trainer_plan_choose(&r, &g, &c);
    double u = trainer_plan_distinct(2, 200); /* a rank's 2 streams x 100 rows: ~4 */
    double ub = trainer_plan_distinct(2, 200); /* one block = the rank's streams here */
    /* fetch: half the keys remote; each 8 B key + 96 B row in, the same pushed per block;
       12 B of counts for the fetch and for the push */
    double fetch = 0.5 * 4 * u * (8 + 96) + 1 * 0.5 * 4 * ub * (8 + 96) + 12 + 12;
    ck_assert_double_eq_tol(c.bytes[TRAINER_STRATEGY_FETCH], fetch, 1e-9 * fetch);
    /* owner: a block of 200 tokens, one shard (K = 4 < 16), owned by one rank:
       fwd 200*4*0.5*8 + 200*96*1*0.5; bwd 200*4*0.5*8 + 200*96*(1*0.5) + 200*4*0.5*4 */
    double n = 200, owner = 4 * 12 + n * 4 * 0.5 * 8 + n * 96 * 0.5 + n * 4 * 0.5 * 8 + n * 96 * 0.5 +
                            n * 4 * 0.5 * 4;
    ck_assert_double_eq_tol(c.bytes[TRAINER_STRATEGY_OWNER], owner, 1e-9 * owner);
    /* replicate: a ring all-reduce of 16 rows x 24 doubles and 16 double marks, 2 (P-1)/P
       of it; under deterministic = fast floats */
    double rep = 2 * 0.5 * (16 * 24 * 8 + 16 * 8);
    ck_assert_double_eq_tol(c.bytes[TRAINER_STRATEGY_REPLICATE], rep, 1e-9 * rep);
    /* and its local traffic: Adam over the half of the 16 x 24 entries another rank would own
       (28 bytes each), the all-reduce's sum of every entry (read two, write one double) */
    double local = 16 * 24 * (0.5 * 28 + 3 * 8);
    ck_assert_double_eq_tol(c.local[TRAINER_STRATEGY_REPLICATE], local, 1e-9 * local);
    ck_assert_double_eq(c.local[TRAINER_STRATEGY_FETCH] + c.local[TRAINER_STRATEGY_OWNER], 0.0);
    trainer_plan_run rf = r;
    rf.fast = 1;
    trainer_plan_cost cf;
    trainer_plan_choose(&rf, &g, &cf);
    ck_assert_double_eq_tol(cf.bytes[TRAINER_STRATEGY_REPLICATE], rep / 2, 1e-9 * rep);
    /* a Memformer (horizon 3, 64 blocks of one stream per rank, 4 memory rows per segment,
       tables of 2^16 rows) whose rows the budget keeps: one fetch per segment (the recompute
       finds the memory pass's rows), one push per block. Over the budget: a call fetches for
       its forward and again for its backward, and a group the MRBP memory pass runs once
       more per segment but the last (whose forward serves both): 2T + 1 and 3T exchanges
       per block */
    trainer_plan_run rm = run_of(2, 128, 1, 3, 0);
    rm.replay = 1;
    trainer_plan_group gw = {1, 4, 16, 8, 4, -1, 1};
    trainer_plan_choose(&rm, &gw, &cf);
    ck_assert_double_eq(cf.messages[TRAINER_STRATEGY_FETCH], 64.0 * (3 + 1));
    rm.budget = cf.memory[TRAINER_STRATEGY_FETCH] / 2; /* the step's rows do not fit */
    trainer_plan_choose(&rm, &gw, &cf);
    ck_assert(cf.allowed[TRAINER_STRATEGY_FETCH]);
    ck_assert_double_eq(cf.messages[TRAINER_STRATEGY_FETCH], 64.0 * (3 * 3));
    gw.replayed = 0;
    trainer_plan_choose(&rm, &gw, &cf);
    ck_assert_double_eq(cf.messages[TRAINER_STRATEGY_FETCH], 64.0 * (2 * 3 + 1));
    ck_assert_double_eq(c.messages[TRAINER_STRATEGY_FETCH], 2.0); /* 1 block: fetch, push */
    ck_assert_double_eq(c.messages[TRAINER_STRATEGY_OWNER], 4.0);
    ck_assert_double_eq_tol(c.seconds[TRAINER_STRATEGY_OWNER], 4 * 20e-6 + owner / (100e9 / 8),
                            1e-15);
}
END_TEST

/* The choices the cost model should make, whatever its details. */
START_TEST(test_choices) {
    trainer_plan_cost c;
    /* a tiny table: replicating it costs least */
    trainer_plan_run r = run_of(8, 64, 8, 4, 1);
    trainer_plan_group tiny = {1, 2, 4, 8, 64, -1, 0};
    trainer_plan_choose(&r, &tiny, &c);
    ck_assert_int_eq(c.choice, TRAINER_STRATEGY_REPLICATE);
    /* a large table (d_model 256, tau 8, Q/K/V), many tokens per rank, 2 ranks: every row is
       hit many times, so fetching rows beats shipping every token's outputs */
    r = run_of(2, 128, 64, 4, 1);
    trainer_plan_group qkv = {3, 32, 8, 256, 64, -1, 0};
    trainer_plan_choose(&r, &qkv, &c);
    ck_assert_int_eq(c.choice, TRAINER_STRATEGY_FETCH);
    /* few tokens per rank (one stream of 16 tokens), 8 ranks: sending the lookups wins,
       in 4 rounds of the group's 2 owners' partials (2 ranks each), each way */
    r = run_of(8, 8, 1, 1, 1);
    qkv.rows = 16;
    trainer_plan_choose(&r, &qkv, &c);
    ck_assert_int_eq(c.choice, TRAINER_STRATEGY_OWNER);
    ck_assert_double_eq(c.messages[TRAINER_STRATEGY_OWNER], 2 + 2 * 4);
    /* on 64 ranks those are 32 rounds: fetching the rows, in 2 exchanges, costs less */
    trainer_plan_cost c64;
    trainer_plan_run r64 = run_of(64, 64, 1, 1, 1);
    trainer_plan_choose(&r64, &qkv, &c64);
    ck_assert_double_eq(c64.messages[TRAINER_STRATEGY_OWNER], 2 + 2 * 32);
    ck_assert_int_eq(c64.choice, TRAINER_STRATEGY_FETCH);
    /* the same with a memory carried between segments: owner-side lookups are not allowed */
    r.batched = 0;
    trainer_plan_choose(&r, &qkv, &c);
    ck_assert(!c.allowed[TRAINER_STRATEGY_OWNER]);
    ck_assert_int_eq(c.choice, TRAINER_STRATEGY_FETCH);
    /* a budget too small for one block's rows, and nothing else allowed */
    r.budget = 1024;
    trainer_plan_choose(&r, &qkv, &c);
    ck_assert(!c.allowed[TRAINER_STRATEGY_FETCH]);
    ck_assert_str_eq(c.why, "over budget");
    /* a forced strategy is taken when allowed, refused when not */
    r = run_of(64, 64, 1, 1, 1);
    r.force = TRAINER_STRATEGY_FETCH;
    trainer_plan_choose(&r, &qkv, &c);
    ck_assert_int_eq(c.choice, TRAINER_STRATEGY_FETCH);
    ck_assert_str_eq(c.why, "forced");
    r.batched = 0;
    r.force = TRAINER_STRATEGY_OWNER;
    trainer_plan_choose(&r, &qkv, &c);
    ck_assert_int_eq(c.choice, TRAINER_STRATEGY_FETCH);
    /* one rank: nothing moves */
    r = run_of(1, 8, 8, 4, 1);
    trainer_plan_choose(&r, &qkv, &c);
    ck_assert_int_eq(c.choice, TRAINER_STRATEGY_FETCH);
    ck_assert_double_eq(c.bytes[TRAINER_STRATEGY_FETCH], 0.0);
    /* measured skew (few distinct keys) makes fetching cheaper than the uniform guess */
    r = run_of(2, 16, 8, 4, 1);
    qkv.rows = 64;
    trainer_plan_choose(&r, &qkv, &c);
    double uniform = c.bytes[TRAINER_STRATEGY_FETCH];
    qkv.distinct = 20;
    trainer_plan_choose(&r, &qkv, &c);
    ck_assert(c.bytes[TRAINER_STRATEGY_FETCH] < 0.2 * uniform);
    /* replicate wins only by a tenth: the Memformer's cross-attention key/value group at
       P = 2 (K 32, tau 8, two outputs of 256, 8 streams of 64 rows per rank, 4 segments),
       where it costs a hair less than fetch, is fetched; the tiny table above, on 2 ranks,
       stays replicated */
    r = run_of(2, 16, 8, 4, 0);
    trainer_plan_group kv = {2, 32, 8, 256, 64, -1, 1};
    r.fast = 1;
    trainer_plan_choose(&r, &kv, &c);
    ck_assert(c.allowed[TRAINER_STRATEGY_REPLICATE]);
    ck_assert(c.seconds[TRAINER_STRATEGY_REPLICATE] < c.seconds[TRAINER_STRATEGY_FETCH]);
    ck_assert(c.seconds[TRAINER_STRATEGY_REPLICATE] > 0.9 * c.seconds[TRAINER_STRATEGY_FETCH]);
    ck_assert_int_eq(c.choice, TRAINER_STRATEGY_FETCH);
    r = run_of(2, 64, 8, 4, 1);
    trainer_plan_choose(&r, &tiny, &c);
    ck_assert(c.seconds[TRAINER_STRATEGY_REPLICATE] < 0.9 * c.seconds[TRAINER_STRATEGY_FETCH]);
    ck_assert_int_eq(c.choice, TRAINER_STRATEGY_REPLICATE);
    /* the Memformer's cross-attention query group at P = 2 (one output of 256, the decoder's
       64 rows per segment): by the seconds alone replicate wins by more than a tenth (one
       all-reduce against five row exchanges of as many bytes), but every rank's Adam over the
       whole group and the all-reduce's sum, 59 MB of memory traffic per rank, make it the
       slower, as measured (fetching the three such groups ran the step 1.08-1.15x faster) */
    r = run_of(2, 16, 8, 4, 0);
    r.fast = 1;
    r.replay = 1;
    trainer_plan_group q = {1, 32, 8, 256, 64, -1, 0};
    trainer_plan_choose(&r, &q, &c);
    ck_assert(c.seconds[TRAINER_STRATEGY_REPLICATE] < 0.9 * c.seconds[TRAINER_STRATEGY_FETCH]);
    ck_assert(c.seconds[TRAINER_STRATEGY_REPLICATE] +
                  c.local[TRAINER_STRATEGY_REPLICATE] / TRAINER_PLAN_LOCAL_RATE >
              2 * c.seconds[TRAINER_STRATEGY_FETCH]);
    ck_assert_int_eq(c.choice, TRAINER_STRATEGY_FETCH);
}
END_TEST

/* A revision moves a group only to an allowed strategy that saves a tenth of its time. */
START_TEST(test_revise) {
    trainer_plan_cost c;
    memset(&c, 0, sizeof c);
    for (int s = 0; s < TRAINER_STRATEGY_COUNT; s++) c.allowed[s] = 1;
    const trainer_strategy F = TRAINER_STRATEGY_FETCH, O = TRAINER_STRATEGY_OWNER;
    /* 27% faster: moves (dec0.ffn.ml1 at P = 4: fetch 0.58 ms, owner 0.79) */
    c.seconds[F] = 0.58e-3, c.seconds[O] = 0.79e-3, c.choice = F;
    ck_assert_int_eq(trainer_plan_revise(&c, O), F);
    /* 1% faster: stays (dec2.ffn.ml1: 0.78 against 0.79) */
    c.seconds[F] = 0.78e-3;
    ck_assert_int_eq(trainer_plan_revise(&c, O), O);
    /* just past the tenth: moves; just short of it: stays */
    c.seconds[F] = 0.89e-3, c.seconds[O] = 1.0e-3;
    ck_assert_int_eq(trainer_plan_revise(&c, O), F);
    c.seconds[F] = 0.91e-3;
    ck_assert_int_eq(trainer_plan_revise(&c, O), O);
    /* the other way round, and never into a strategy that is not allowed */
    c.seconds[F] = 1.0e-3, c.seconds[O] = 0.5e-3, c.choice = O;
    ck_assert_int_eq(trainer_plan_revise(&c, F), O);
    c.allowed[O] = 0;
    ck_assert_int_eq(trainer_plan_revise(&c, F), F);
    /* replicate chosen: the faster allowed of fetch and owner */
    c.allowed[O] = 1, c.choice = TRAINER_STRATEGY_REPLICATE;
    ck_assert_int_eq(trainer_plan_revise(&c, F), O);
    c.seconds[F] = 0.2e-3;
    ck_assert_int_eq(trainer_plan_revise(&c, O), F);
    /* never into more memory: fetch's kept rows against the owner's partials (dec0.ffn.ml1
       at P = 4: 7.5 MiB against 3.75), however much faster; equal memory moves */
    c.choice = F, c.seconds[F] = 0.58e-3, c.seconds[O] = 0.79e-3;
    c.memory[F] = 7.5 * 1048576, c.memory[O] = 3.75 * 1048576;
    ck_assert_int_eq(trainer_plan_revise(&c, O), O);
    c.seconds[F] = 0.01e-3;
    ck_assert_int_eq(trainer_plan_revise(&c, O), O);
    c.memory[F] = c.memory[O];
    ck_assert_int_eq(trainer_plan_revise(&c, O), F);
    /* and a move that frees memory is taken */
    c.memory[F] = 0.5 * c.memory[O];
    ck_assert_int_eq(trainer_plan_revise(&c, O), F);
}
END_TEST

static Suite *plan_suite(void) {
    Suite *s = suite_create("plan");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_distinct);
    tcase_add_test(tc, test_bytes_by_hand);
    tcase_add_test(tc, test_choices);
    tcase_add_test(tc, test_revise);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(plan_suite()); }
