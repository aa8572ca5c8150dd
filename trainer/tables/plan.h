/* How each hashed table group is served across ranks: the three strategies, their cost model, and the planner's choice. */
#ifndef MEMTRAIN_TRAINER_PLAN_H
#define MEMTRAIN_TRAINER_PLAN_H

#include <stddef.h>
#include <stdio.h>

/* The strategies (what TorchRec calls sharding types, for one table group each):
 *   FETCH      the requester fetches the rows its tokens hit from their owners, computes,
 *              and pushes each row's gradient back at the end of the block;
 *   OWNER      the requester sends each token's buckets and scores to the owners of the
 *              group's shards, which return the shards' partial sums (d_out wide); in the
 *              backward it sends the output gradient and gets the score gradients back,
 *              and the owner forms the row gradients itself. Only for models whose blocks
 *              call each projection once per backward (no carried memory);
 *   REPLICATE  every rank holds the whole group and updates it alike; the gradients of all
 *              ranks are summed with one all-reduce per step.
 * All three compute the same numbers, bit for bit (trainer/tables/tables.h), so the choice moves
 * only bytes, messages and memory. */
typedef enum trainer_strategy {
    TRAINER_STRATEGY_FETCH = 0,
    TRAINER_STRATEGY_OWNER,
    TRAINER_STRATEGY_REPLICATE,
    TRAINER_STRATEGY_COUNT
} trainer_strategy;

const char *trainer_strategy_name(trainer_strategy s); /* "fetch", "owner", "replicate" */

/* What the cost model knows about a run. */
typedef struct trainer_plan_run {
    int P;                 /* ranks */
    int streams, block;    /* streams of the run, computed in blocks of `block` */
    int horizon;           /* segments per step */
    int batched;           /* 1: a block's segments are one batch (no carried memory), so
                              each projection runs one backward call per block */
    double budget;         /* bytes of fetched rows a rank may hold (row_cache_mb) */
    double latency;        /* seconds per exchange (net_latency_us) */
    double bandwidth;      /* bytes per second a rank sends (net_gbps) */
    int wire_bytes;        /* bytes per row value on the wire: 4 (float) or 2 (bf16 rows) */
    int force;             /* -1: the cheapest; else a trainer_strategy for every group */
    int fast;              /* deterministic = fast: gradient sums in float (no double sums) */
    int replay;            /* bptt = mrbp: a memory pass runs the groups that write the memory
                              (encoder, writer) once more per segment, before the recompute */
    int share_rows;        /* share_rows: a node's ranks read fetched groups' rows in place */
    int share_exchange;    /* share_exchange: ... and the words of their owner exchanges and
                              batched pushes (comm_exchange_share_node) */
    int node_ranks;        /* ranks per node (0: all P on one node) */
} trainer_plan_run;

/* What it knows about a group. */
typedef struct trainer_plan_group {
    int nout, K, tau, OC;
    int rows;           /* input rows per segment per stream (seg_len, mem_slots, ...) */
    double distinct;    /* measured distinct keys per table per step per rank; < 0: assume
                           uniform buckets */
    int replayed;       /* 1: a group the MRBP memory pass runs (with r->replay) */
} trainer_plan_group;

/* The cost of each strategy for one group, per rank and step, and the choice. */
typedef struct trainer_plan_cost {
    double bytes[TRAINER_STRATEGY_COUNT];    /* sent to other ranks (averaged over ranks) */
    double messages[TRAINER_STRATEGY_COUNT]; /* exchanges (all-to-alls or all-reduces) */
    double seconds[TRAINER_STRATEGY_COUNT];  /* messages * latency + bytes / bandwidth */
    double memory[TRAINER_STRATEGY_COUNT];   /* bytes of rows held beyond the owned share */
    double local[TRAINER_STRATEGY_COUNT];    /* bytes of memory traffic on the rank beyond the
                                                sharded strategies' (replicate: Adam over the
                                                rows others would own, the all-reduce's sum) */
    int allowed[TRAINER_STRATEGY_COUNT];
    trainer_strategy choice;
    const char *why; /* one phrase: why the choice */
} trainer_plan_cost;

/* Whether the rows of a fetched group of 2^tau-row tables can be shared on a node
 * (share_rows): a shard's piece of every tile, 2^tau rows of LAYER_HASH_TILE floats per
 * table, is whole pages (from tau = 5 on with 4 KiB pages). */
int trainer_plan_shareable_tau(int tau);
/* Expected distinct buckets among m uniform lookups into 2^tau rows. */
double trainer_plan_distinct(int tau, double m);
/* Costs of every strategy for group g in run r, and the choice: the forced strategy when
 * allowed, else the fewest seconds among the allowed (FETCH wins ties; REPLICATE, with its
 * local traffic counted too, only by a tenth: see plan.c). FETCH is not
 * allowed when one block's rows of the group exceed the budget; OWNER needs r->batched;
 * REPLICATE needs the whole group (rows, Adam moments, gradient sums) within a quarter of
 * the budget. A forced strategy that is not allowed falls back to the cheapest allowed.
 * Under r->share_rows, FETCH's figures then count only the rows of other nodes (and on one
 * node no forward exchanges): the choice itself is made as without it. */
void trainer_plan_choose(const trainer_plan_run *r, const trainer_plan_group *g,
                         trainer_plan_cost *c);

/* Bytes per second a rank's streaming passes over its memory are counted at (c->local):
 * conservative, as a rank shares its node's memory bus with the others (lazy Adam ran at
 * about 30 GB/s on one rank of the 2-core development host). */
#define TRAINER_PLAN_LOCAL_RATE 10e9
/* The share of a group's predicted time a revision must save to move the group. */
#define TRAINER_PLAN_MOVE_GAIN 0.10
/* The strategy a group served by `cur` (fetch or owner) should move to after a revision
 * whose costs are c (trainer_plan_choose with measured distinct keys), or cur to stay.
 * Storage is fixed at allocation, so a choice of replicate means the faster allowed of
 * fetch and owner. A move must be allowed, save TRAINER_PLAN_MOVE_GAIN of cur's time (a
 * near tie is within the measure's noise) and hold no more memory than cur (c->memory): the
 * run's memory estimate, printed at start, stays its bound. A move to fetch makes the
 * fetched rows resident for the rest of the run; for an FFN group of the d_model 256 decoder
 * at P = 4 that is 30 MiB per rank, against 4 MiB of transient partials as an owner, for
 * 0.2 ms of a step of 200 ms. */
trainer_strategy trainer_plan_revise(const trainer_plan_cost *c, trainer_strategy cur);

#endif
