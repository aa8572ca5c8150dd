/* Hash-table store of a model: table-parallel ownership, rows resolved per block of streams, block-end gradient sums, fused owner-side lazy Adam. */
#ifndef MEMTRAIN_TRAINER_TABLES_H
#define MEMTRAIN_TRAINER_TABLES_H

#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "layers/hash.h"

/* A group is one hashed projection site: nout (1..3) projections of the same input (Q/K/V share
 * the bucket index), each with K tables of 2^tau rows of width OC. The unit of ownership is
 * (group, chunk k): the nout tables of chunk k live on exactly one rank, which alone stores
 * their master rows and Adam moments.
 *
 * Rows. Each group has row stores (layer_hash_store_*) of R = K << tau rows addressed by the
 * natural row id key = k << tau | bucket: the chunks this rank owns hold their master rows
 * there, the other chunks' rows are fetched into the same places when a lookup first needs
 * them and stay valid until the optimizer step (trainer_tables_step) or a cache clear. So a
 * row id is the key itself, and the kernels stream a group's rows in the order they lie in.
 *
 * Gradients. A gradient store of the same layout collects the row gradients of the block of
 * streams being computed. trainer_tables_block_end hands them on: rows owned elsewhere are
 * pushed to their owners; the owner adds every contribution to a row in double and rounds
 * the sum once, so the step's gradient does not depend on which rank computed which block.
 * An owner's own last block stays where it is, so one block per step (or per rank) moves no
 * gradient at all. trainer_tables_step then makes one pass over every owned row looked up
 * in the step: it reads the summed gradient, applies lazy Adam and clears the gradient.
 *
 * Every rank must make the same sequence of trainer_tables_resolve and
 * trainer_tables_block_end calls (trainer/schedule.c sees to it): each may exchange rows with
 * every other rank. */
typedef struct trainer_tables trainer_tables;

typedef struct trainer_table_group {
    char name[64];
    int nout, K, tau, OC;
} trainer_table_group;

typedef struct trainer_tables_stats {
    int64_t lookups, misses;  /* (token, chunk) lookups and the remote rows they fetched */
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
/* Units and bytes (rows, Adam moments, gradient and its double sum) this rank stores. */
int trainer_tables_owned_units(const trainer_tables *t);
size_t trainer_tables_owned_bytes(const trainer_tables *t);
/* Rank 0 prints the ownership plan: units and bytes per rank, and the imbalance. Collective. */
void trainer_tables_print_plan(trainer_tables *t);

/* How many blocks of streams contribute gradients to a step, over all ranks (1: no double
 * sums are ever kept; this only changes what trainer_tables_owned_bytes counts). */
void trainer_tables_set_blocks(trainer_tables *t, int blocks);

/* Maps buckets idx (N,K) of group g to row ids (N,K) (the keys k << tau | bucket) and fills
 * rows[0..nout) with the row and gradient stores they index, after fetching the rows this
 * rank lacks. Collective (see above). */
void trainer_tables_resolve(trainer_tables *t, int g, const int32_t *idx, int N, int32_t *rowid,
                            layer_hash_rows *rows);
/* What the lookups that follow belong to. Every rank sets the same phases in the same order.
 * The MRBP recompute repeats the memory pass's lookups of the groups that pass used, with the
 * same buckets, so those find every row present on every rank and skip the exchange. */
typedef enum trainer_tables_phase {
    TRAINER_TABLES_PLAIN = 0,
    TRAINER_TABLES_MEMORY_PASS,
    TRAINER_TABLES_RECOMPUTE,
} trainer_tables_phase;
void trainer_tables_set_phase(trainer_tables *t, trainer_tables_phase phase);

/* The end of a block of streams: its row gradients join the step's sums on their owners
 * (see above) and the gradient store is emptied, except, when keep_owned, for the rows this
 * rank owns (pass it for the rank's last block of the step). Collective. */
void trainer_tables_block_end(trainer_tables *t, int keep_owned);
/* Sum of squares of the step's gradients of the rows this rank owns (double, fixed order). */
double trainer_tables_grad_sumsq(const trainer_tables *t);
/* Lazy Adam on the owned rows that were looked up this step (gradient times grad_scale),
 * clearing their gradients, then forgets the fetched rows. Local: call after the last
 * trainer_tables_block_end of the step. */
void trainer_tables_step(trainer_tables *t, float lr, float beta1, float beta2, float eps,
                         int64_t step, float grad_scale);
/* Forgets the fetched rows and the lookups of the current block, without an update (after
 * evaluation; a block's gradients must have been handed on or discarded). */
void trainer_tables_clear_cache(trainer_tables *t);
/* Drops every gradient and touched mark without an update, and forgets the fetched rows. */
void trainer_tables_discard_grads(trainer_tables *t);

/* Unit (g, k), output `out`: copies its table (2^tau, OC), row-major, and its Adam moments
 * and the step's summed gradient into the arrays given (any may be NULL). Returns 0, or -1
 * when this rank does not own the unit. */
int trainer_tables_unit_get(const trainer_tables *t, int g, int k, int out, float *data, float *m,
                            float *v, float *grad);
/* Sets the table and Adam moments of an owned unit from row-major arrays (any may be NULL).
 * Returns 0, or -1 when this rank does not own the unit. */
int trainer_tables_unit_set(trainer_tables *t, int g, int k, int out, const float *data,
                            const float *m, const float *v);
/* The master entry (bucket, col) of table (g, k, out) on its owner, for tests that perturb
 * one parameter; NULL when this rank does not own the unit. */
float *trainer_tables_entry(trainer_tables *t, int g, int k, int out, int bucket, int col);

void trainer_tables_get_stats(const trainer_tables *t, trainer_tables_stats *s);
void trainer_tables_reset_stats(trainer_tables *t);

#endif
