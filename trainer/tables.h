/* Hash-table store of a model: table-parallel ownership, row lookup through a per-step row cache, sparse optimizer. */
#ifndef MEMTRAIN_TRAINER_TABLES_H
#define MEMTRAIN_TRAINER_TABLES_H

#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "layers/hash.h"

/* A group is one hashed projection site: nout (1..3) projections of the same input (Q/K/V share
 * the bucket index), each with K tables of 2^tau rows of width OC. The unit of ownership is
 * (group, chunk k): the nout tables of chunk k live on exactly one rank, which alone stores
 * their rows and Adam moments.
 *
 * The model sees rows only through trainer_tables_resolve, which returns row ids into a row
 * cache of this step: rows that are not cached yet are fetched from their owners (one
 * collective exchange per call, so every rank must resolve the same groups in the same order).
 * Cached rows stay valid, with the same ids, until trainer_tables_step, so the recompute pass
 * of MRBP fetches nothing it already has. Gradients accumulate in the cache (one row per
 * distinct key: the sender-side sum) and go to the owners in trainer_tables_reduce_grads. */
typedef struct trainer_tables trainer_tables;

typedef struct trainer_table_group {
    char name[64];
    int nout, K, tau, OC;
} trainer_table_group;

typedef struct trainer_tables_stats {
    int64_t lookups, misses;  /* (token, chunk) lookups and the ones that had to be fetched */
    int64_t bytes_sent;       /* by this rank in row exchanges */
    double exchange_seconds;  /* in the all-to-alls */
    int64_t exchanges;
    uint64_t key_digest;      /* hash of every (group, key) looked up, in order: two runs that
                                 hit the same buckets have the same digest */
} trainer_tables_stats;

/* comm must outlive the store. */
trainer_tables *trainer_tables_create(comm_ctx *comm);
void trainer_tables_free(trainer_tables *t); /* NULL is fine */
/* Registers a group, returns its id. Only before trainer_tables_alloc. */
int trainer_tables_add(trainer_tables *t, const char *name, int nout, int K, int tau, int OC);
/* Decides owners (largest units first, each to the least loaded rank) and allocates this
 * rank's units. Table (group, out, k) is initialised N(0, 0.02^2) from a stream seeded by
 * (seed, group name, out, k), so values do not depend on the rank count. */
void trainer_tables_alloc(trainer_tables *t, uint64_t seed);

int trainer_tables_ngroups(const trainer_tables *t);
const trainer_table_group *trainer_tables_group(const trainer_tables *t, int g);
/* Parameter count of all tables (all ranks). */
size_t trainer_tables_numel(const trainer_tables *t);
/* Owner rank of unit (g, k). */
int trainer_tables_owner(const trainer_tables *t, int g, int k);
/* Units and bytes (rows + Adam moments) this rank stores. */
int trainer_tables_owned_units(const trainer_tables *t);
size_t trainer_tables_owned_bytes(const trainer_tables *t);
/* Rank 0 prints the ownership plan: units and bytes per rank, and the imbalance. Collective. */
void trainer_tables_print_plan(trainer_tables *t);

/* Maps buckets idx (N,K) of group g to row ids (N,K) and fills rows[0..nout) with the row and
 * gradient stores those ids index. Collective (see above). */
void trainer_tables_resolve(trainer_tables *t, int g, const int32_t *idx, int N, int32_t *rowid,
                            layer_hash_rows *rows);
/* What the lookups that follow belong to. Every rank sets the same phases in the same order.
 * The MRBP recompute repeats the memory pass's lookups of the groups that pass used, with the
 * same buckets, so those find every row cached on every rank and skip the exchange. */
typedef enum trainer_tables_phase {
    TRAINER_TABLES_PLAIN = 0,
    TRAINER_TABLES_MEMORY_PASS,
    TRAINER_TABLES_RECOMPUTE,
} trainer_tables_phase;
void trainer_tables_set_phase(trainer_tables *t, trainer_tables_phase phase);

/* Adds the gradients written since the last fold (one stream's) into double accumulators
 * and clears them, so the step's sum does not depend on how streams are split over ranks. */
void trainer_tables_fold(trainer_tables *t);
/* Folds, then sends the accumulated gradients to the owners, which add them in double in a
 * fixed order (source rank, then key) and round once to float. Collective. */
void trainer_tables_reduce_grads(trainer_tables *t);
/* Sum of squares of the reduced gradients of the rows this rank owns (double, fixed order). */
double trainer_tables_grad_sumsq(const trainer_tables *t);
/* Lazy Adam on the owned rows that were looked up this step (gradient times grad_scale),
 * clears their gradients and empties the row cache. Local: call after reduce_grads. */
void trainer_tables_step(trainer_tables *t, float lr, float beta1, float beta2, float eps,
                         int64_t step, float grad_scale);
/* Empties the row cache without an update (after evaluation). */
void trainer_tables_clear_cache(trainer_tables *t);
/* Drops every gradient and touched mark without an update, and empties the cache. */
void trainer_tables_discard_grads(trainer_tables *t);

/* The (2^tau, OC) table of output `out` of unit (g, k) with its Adam moments and reduced
 * gradient, or NULL when this rank does not own the unit. */
float *trainer_tables_unit(trainer_tables *t, int g, int k, int out, float **m, float **v,
                           float **grad);

void trainer_tables_get_stats(const trainer_tables *t, trainer_tables_stats *s);
void trainer_tables_reset_stats(trainer_tables *t);

#endif
