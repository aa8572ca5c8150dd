/* Hash-table store of a model: sharded ownership, each group served by its strategy (fetch, owner, replicate), gradient sums, fused lazy Adam. */
#ifndef MEMTRAIN_TRAINER_TABLES_H
#define MEMTRAIN_TRAINER_TABLES_H

#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "layers/hash.h"
#include "trainer/base/arena.h"
#include "trainer/tables/plan.h"

/* A group is one hashed projection site: nout (1..3) projections of the same input (Q/K/V share
 * the bucket index), each with K tables of 2^tau rows of width OC. Its chunks form shards of
 * LAYER_HASH_SHARD (layers/hash.h); the unit of ownership is (group, shard): the nout tables
 * of a shard's chunks live on one rank, which alone stores their master rows and Adam
 * moments, unless the group is replicated on every rank.
 *
 * How a group is served across ranks is its strategy (trainer/tables/plan.h: fetch, owner,
 * replicate), chosen by trainer_tables_plan. Every strategy computes the same numbers bit
 * for bit: a projection is b + the shards' partial sums added in shard order, whoever
 * computes a shard's partial; a row's gradient is the double sum of its contributions (each
 * block's float sum over its tokens) rounded once, whoever adds them; a double sum of a few
 * floats is exact unless their magnitudes differ by more than ~2^29, so its order does not
 * matter.
 *
 * Rows. Each group has row stores (layer_hash_store_*) of R = K << tau rows addressed by the
 * natural row id key = k << tau | bucket: held shards keep their master rows there; under
 * fetch the other shards' rows are fetched into the same places when a block first needs
 * them, and kept until the step ends when they fit the row budget, else fetched for each
 * call and released after it. Pages of rows never written are never resident.
 *
 * Gradients. Under fetch and replicate a block adds its row gradients into a gradient store
 * of the same layout; trainer_tables_block_end pushes those of other ranks' shards to their
 * owners and folds the held ones into the step's double sums, except that a rank's last block
 * may leave its own rows' gradients where they are (the common one-block case then moves
 * nothing). Under owner the owner forms the row gradients of every requester's tokens and
 * folds them at once. trainer_tables_reduce sums replicated groups over ranks, and
 * trainer_tables_step makes one pass over every held row looked up in the step: it reads the
 * summed gradient, applies lazy Adam and clears the gradient.
 *
 * Every rank must make the same sequence of forward, backward, block-end and reduce calls
 * (trainer/engine/schedule.c sees to it): each may exchange data with every other rank. */
typedef struct trainer_tables trainer_tables;

typedef struct trainer_table_group {
    char name[64];
    int nout, K, tau, OC;
} trainer_table_group;

typedef struct trainer_tables_stats {
    int64_t lookups, misses;  /* (token, chunk) lookups and the remote rows they fetched */
    int64_t bytes_sent;       /* by this rank in row exchanges */
    int64_t bytes_in_place;   /* of them, read by the node's other ranks in place */
    double exchange_seconds;  /* in the all-to-alls */
    int64_t exchanges;
    uint64_t key_digest;      /* hash of every (group, key) looked up, in order: two runs that
                                 hit the same buckets have the same digest */
} trainer_tables_stats;

/* comm must outlive the store. comm NULL: a store that only describes (groups are added and
 * accounted, never planned, allocated or looked up), as a define_only model builds it. */
trainer_tables *trainer_tables_create(comm_ctx *comm);
void trainer_tables_free(trainer_tables *t); /* NULL is fine */
/* Registers a group, returns its id; `rows` is its input rows per segment per stream (seg_len
 * for tokens, mem_slots for the memory, ...), for the planner. Only before alloc. */
int trainer_tables_add(trainer_tables *t, const char *name, int nout, int K, int tau, int OC,
                       int rows);
/* Chooses every group's strategy for run r (r->P must be the communicator's size); until
 * called, every group is fetched. Only before alloc (replication changes what is stored). */
void trainer_tables_plan(trainer_tables *t, const trainer_plan_run *r);
/* Decides owners (largest units first, each to the least loaded rank) and allocates what this
 * rank holds. Table (group, out, k) is initialised N(0, 0.02^2) from a stream seeded by
 * (seed, group name, out, k), so values do not depend on the rank count. */
void trainer_tables_alloc(trainer_tables *t, uint64_t seed);
/* 0, or -1 with a one-line message when a group cannot be served within the row budget
 * (fetch is the only strategy the model allows and one block's rows exceed it). */
int trainer_tables_check_plan(const trainer_tables *t, char *err, size_t n);
/* Re-plans between steps with the distinct keys measured so far (summed over ranks), moving
 * groups between fetch and owner when the measure says so (never into or out of replicate);
 * rank 0 prints the groups that moved. Returns how many moved. Collective. */
int trainer_tables_replan(trainer_tables *t);

int trainer_tables_ngroups(const trainer_tables *t);
const trainer_table_group *trainer_tables_group(const trainer_tables *t, int g);
/* The group's shape as the planner sees it (distinct < 0: uniform buckets). */
trainer_plan_group trainer_tables_plan_group(const trainer_tables *t, int g);
/* Parameter count of all tables (all ranks). */
size_t trainer_tables_numel(const trainer_tables *t);
/* Owner rank of chunk k of group g (of its shard), which writes it to checkpoints. */
int trainer_tables_owner(const trainer_tables *t, int g, int k);
/* 1 if this rank stores chunk k of group g: its owner, or any rank if g is replicated. */
int trainer_tables_holds(const trainer_tables *t, int g, int k);
/* Units and bytes (rows, Adam moments, gradient and its double sum) this rank stores. */
int trainer_tables_owned_units(const trainer_tables *t);
size_t trainer_tables_owned_bytes(const trainer_tables *t);

/* Bytes a rank stores per held entry: rows, Adam m and v and the gradient in float, and under
 * bitwise sums, when a step has several blocks (nblocks) or ranks, the double sum of the
 * gradient's contributions. */
size_t trainer_tables_entry_bytes(int fast, int64_t nblocks, int P);

/* What the groups cost a rank in run r, on r->P ranks whatever the store's communicator, from
 * the same planner choices and the same rule for which fetched groups keep their rows that
 * trainer_tables_plan applies: the one account of table memory and traffic that the store's
 * plan, the memory estimate (trainer/engine/footprint.h) and `memtrain plan` read. */
typedef struct trainer_tables_account {
    double entry;       /* trainer_tables_entry_bytes of the run */
    double owned;       /* an even share of the sharded groups' entries */
    double owned_max;   /* the sharded groups' entries of the rank that owns the most, as the
                           shards are dealt (trainer_tables_alloc) */
    double held;        /* replicated groups, whole on every rank */
    double fetch_keep;  /* fetched groups' rows kept for the step, within the row budget */
    double fetch_block; /* the largest of the other fetched groups' rows of one call */
    double scratch;     /* the largest exchange's rows or partials, sent and received */
    double partials;    /* the largest owner-side call's partials and replies */
    double bytes, exchanges, seconds;           /* sent per rank and step */
    int groups[TRAINER_STRATEGY_COUNT];         /* groups per strategy */
} trainer_tables_account;
void trainer_tables_account_of(const trainer_tables *t, const trainer_plan_run *r,
                               trainer_tables_account *a);
/* Rank 0 prints the plan: units and bytes per rank and the imbalance, then per group its
 * strategy, why, and the predicted bytes and exchanges per rank and step. Collective. */
void trainer_tables_print_plan(trainer_tables *t);

/* How many blocks of streams contribute gradients to a step, over all ranks (1: no double
 * sums are ever kept; this only changes what trainer_tables_owned_bytes counts). */
void trainer_tables_set_blocks(trainer_tables *t, int blocks);

/* Group g is run by the MRBP memory pass too (encoder, writer): the planner counts its
 * extra fetches. Only before trainer_tables_plan. */
void trainer_tables_set_replayed(trainer_tables *t, int g);

/* deterministic = fast (fast != 0): a held row's gradient is one float sum in the gradient
 * store, which its own blocks add into and the owner adds other ranks' pushed rows into in
 * rank order, at the block end where they arrive; no double sums are kept (16 bytes per entry
 * with the rows and moments, not 24). The same rank count gives the same bits run to run; a
 * different one rounds the sums in another order. Replicated groups meet in a float
 * all-reduce. Only before alloc. Default 0 (bitwise, as described above). */
void trainer_tables_set_fast(trainer_tables *t, int fast);
int trainer_tables_fast(const trainer_tables *t);

/* One call of a hashed projection: what its backward needs. Filled by the forward from the
 * arena the caller passes. */
typedef struct trainer_tables_act {
    int N;
    int32_t *rowid;  /* (N,K) keys k << tau | bucket */
    const float *s;  /* (N,K) the caller's scores */
    layer_hash_rows rows[3];
} trainer_tables_act;

/* out[j] (N,OC) = b[j] + the hashed projection j of the buckets idx and scores s (N,K) of
 * group g (b[j] may be NULL), served by the group's strategy. Collective. */
void trainer_tables_forward(trainer_tables *t, int g, const int32_t *idx, const float *s, int N,
                            float *const *out, const float *const *b, trainer_tables_act *a,
                            trainer_arena *ar);
/* Backward of that call with dout[j] (N,OC): gs (N,K) += score gradients (gs may be NULL),
 * db[j] += bias gradients (NULL skips), and the row gradients join the step's sums.
 * Collective. */
void trainer_tables_backward(trainer_tables *t, int g, const trainer_tables_act *a,
                             const float *const *dout, float *gs, float *const *db);
/* What the lookups that follow belong to. Every rank sets the same phases in the same order.
 * The MRBP recompute repeats the memory pass's lookups of the groups that pass used (those
 * set replayed), with the same buckets, so the groups whose rows are kept find every row
 * present on every rank and skip the exchange; groups over the row budget fetch again. The
 * memory pass may end with a whole model's forward (the rollout's last segment, which is not
 * recomputed): the other groups' lookups in it fetch as in TRAINER_TABLES_PLAIN. */
typedef enum trainer_tables_phase {
    TRAINER_TABLES_PLAIN = 0,
    TRAINER_TABLES_MEMORY_PASS,
    TRAINER_TABLES_RECOMPUTE,
} trainer_tables_phase;
void trainer_tables_set_phase(trainer_tables *t, trainer_tables_phase phase);

/* The end of a block of streams: its row gradients join the step's sums on their owners
 * (see above) and the gradient store is emptied, except, when keep_owned, for the rows this
 * rank holds (pass it for the rank's last block of the step). Collective. */
void trainer_tables_block_end(trainer_tables *t, int keep_owned);
/* After the step's last block end: replicated groups' gradients summed over ranks.
 * Collective. */
void trainer_tables_reduce(trainer_tables *t);
/* Sum of squares of the step's table gradients over every rank: each owner sums its shards
 * (double, fixed order; replicated groups count on their shards' owners only), the shards'
 * sums meet in one all-reduce where each has one contributor, and are added in shard order,
 * so the result does not depend on the rank count. Collective. */
double trainer_tables_grad_sumsq(trainer_tables *t);
/* Lazy Adam on the held rows that were looked up this step (gradient times grad_scale),
 * clearing their gradients, then forgets the fetched rows. Local: call after
 * trainer_tables_reduce. */
void trainer_tables_step(trainer_tables *t, float lr, float beta1, float beta2, float eps,
                         int64_t step, float grad_scale);
/* Forgets the fetched rows and the lookups of the current block, without an update (after
 * evaluation; a block's gradients must have been handed on or discarded). */
void trainer_tables_clear_cache(trainer_tables *t);
/* Drops every gradient and touched mark without an update, and forgets the fetched rows. */
void trainer_tables_discard_grads(trainer_tables *t);

/* Chunk k of group g, output `out`: copies its table (2^tau, OC), row-major, and its Adam
 * moments and the step's summed gradient into the arrays given (any may be NULL). Returns 0,
 * or -1 when this rank does not hold the chunk. */
int trainer_tables_unit_get(const trainer_tables *t, int g, int k, int out, float *data, float *m,
                            float *v, float *grad);
/* Sets the table and Adam moments of a held chunk from row-major arrays (any may be NULL).
 * Returns 0, or -1 when this rank does not hold the chunk. */
int trainer_tables_unit_set(trainer_tables *t, int g, int k, int out, const float *data,
                            const float *m, const float *v);
/* After every rank set its rows (trainer_tables_unit_set): where a node's ranks read each
 * other's rows in place, none reads on before all are written (a barrier). Collective. */
void trainer_tables_rows_set(trainer_tables *t);
/* The master entry (bucket, col) of table (g, k, out) where it is held, for tests that
 * perturb one parameter; NULL when this rank does not hold the chunk. */
float *trainer_tables_entry(trainer_tables *t, int g, int k, int out, int bucket, int col);

void trainer_tables_get_stats(const trainer_tables *t, trainer_tables_stats *s);
void trainer_tables_reset_stats(trainer_tables *t);

#endif
