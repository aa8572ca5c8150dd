/* What the table store's files share: tables.c (the store, ownership, plan, chunks), tables_optim.c (norm and Adam passes), tables_lookup.c (lookups and gradient flows of fetch and replicate, pushes), tables_owner.c (the owner strategy), tables_share.c (rows shared on a node). */
#ifndef MEMTRAIN_TRAINER_TABLES_INTERNAL_H
#define MEMTRAIN_TRAINER_TABLES_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "comm/exchange.h"
#include "trainer/tables/plan.h"
#include "trainer/tables/tables.h"

/* Bits of a key's state (one byte per row id). */
enum {
    ST_FETCHED = 1, /* a row of another rank's shard, present until released */
    ST_BLOCK = 2,   /* looked up by the current block (and listed in blk) */
    ST_TOUCHED = 4, /* a held row with a gradient this step: in acc, in drows, or both */
    ST_ACC = 8,     /* a held row whose acc holds a sum this step */
    ST_SEEN = 16,   /* a row of another rank's shard looked up this step (for the measure) */
};

#define TILE LAYER_HASH_TILE

typedef struct group_state {
    trainer_table_group g;
    int in_rows;             /* input rows per segment per stream (for the planner) */
    int replayed;            /* run by the MRBP memory pass (for the planner) */
    int R, S;                /* K << tau rows in every store (row id = k << tau | bucket);
                                S shards of LAYER_HASH_SHARD chunks */
    int *owner;              /* (S) rank that owns each shard (writes it to checkpoints) */
    int shared;              /* rows[j] holds the shards of the node's other ranks in place,
                                read-only (tables_share_rows): theirs are never fetched */
    trainer_strategy strategy;
    trainer_plan_cost cost;  /* the planner's figures */
    double first_bytes;      /* bytes per rank and step the first plan predicted */
    int keep;                /* fetch: fetched rows stay until the step ends; else they are
                                fetched for each call and released after it (the budget) */
    uint8_t *state;          /* (R) ST_* */
    /* stores of R rows of OC (layer_hash_store_at addressing; acc in doubles), resident
       only where written: held shards (master rows, moments, sums), fetched rows */
    float *rows[3];          /* the rows the kernels read: held shards' (rounded to bf16 under
                                row_format = bf16), fetched rows of the others */
    float *master[3];        /* row_format = bf16: the held shards' f32 master rows (else NULL:
                                rows are the master) */
    float *drows[3];         /* the current block's row gradients */
    float *m[3], *v[3];
    double *acc[3];          /* held rows: the double sum of the step's contributions */
    int32_t *blk;            /* (R) keys of the current block */
    int nblk;
    int32_t *fetched;        /* (2R) remote keys fetched and not released; scratch after */
    int nfetched;
    int in_memory_pass;      /* looked up by this step's MRBP memory pass */
    int populated;           /* held gradient and moment pages made resident (training) */
    comm_words *push;        /* a gradient push started by the backward (fetch, one backward
                                per block), finished at the block end */
    int push_active;
    uint32_t *push_buf;      /* its payload: per key 2 words of key, then nout*OC floats */
    size_t push_cap;
    double sq;               /* under tables_norm_kept: the sum of squares of the step's
                                gradients in drows, summed by the kernels as they write them */
    int64_t seen;            /* distinct remote keys looked up this step */
    double seen_avg;         /* their running mean over steps (the planner's measure) */
    int seen_steps;
} group_state;

struct trainer_tables {
    comm_ctx *comm;
    comm_exchange *x;
    comm_words *words;       /* owner-side lookups */
    comm_words *pushes;      /* gradient pushes at block ends, one group after another */
    trainer_arena *scratch;  /* an owner-side call's buffers, reset when it returns */
    int n, cap, allocated, me, P;
    int blocks;              /* blocks of streams a step sums over (memory accounting) */
    int bf16;                /* rows read and fetched rounded to bf16 (row_format) */
    int sharing;             /* some group's rows are shared on the node (tables_share_rows) */
    int one_node;            /* ... and every rank is on this node */
    unsigned char *same_node; /* (P) ranks on this node, when sharing */
    int fast;                /* float gradient sums in drows, no acc (trainer_tables_set_fast) */
    trainer_plan_run run;    /* what the planner was told */
    int planned;
    group_state *gs;
    int64_t lookups, misses;
    uint64_t digest;
    trainer_tables_phase phase;
    /* exchange scratch: keys (group in the high half), owners, rows */
    int64_t *keys;
    int *owners;
    float *buf;
    size_t buf_cap;
};

/* f32 -> bf16 (round to nearest even; NaN stays NaN), and back. */
static inline uint16_t tables_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
/* The f32 master rows of output j: the rows themselves unless they are read rounded. */
static inline float *tables_master(const group_state *s, int j) {
    return s->master[j] ? s->master[j] : s->rows[j];
}

static inline float tables_from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* sum[l] += g[c + l]^2 for every eighth entry of a slice (TILE): eight independent double
 * sums, added in an order fixed by the layout. A gradient slice's padding columns hold zero,
 * so a whole slice adds what its columns do. */
static inline void tables_sumsq_slice(double *restrict sum, const float *restrict g) {
    for (int c = 0; c < TILE; c += 8)
        for (int l = 0; l < 8; l++) sum[l] += (double)g[c + l] * g[c + l];
}

/* The sum of eight double lanes, in a fixed tree. */
static inline double tables_lanes_sum(const double *l) {
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/* Under fast, whether group s keeps its gradients' sum of squares (group_state.sq) as the
 * backward kernels write them (new^2 - old^2 of every entry, in double), so the norm needs
 * no pass over them. At one rank the kernels are the rows' only writers; at P > 1 a
 * fetching rank's push packing subtracts the squares of the slices it sends (push_pack) and
 * the owner's add keeps new^2 - old^2 of what it adds (push_add), so the ranks' sums add up
 * to the squares' sum of the owners' finished rows. A replicated group's all-reduce
 * replaces its gradients: it keeps the pass. */
static inline int tables_norm_kept(const trainer_tables *t, const group_state *s) {
    return t->fast && !(t->P > 1 && s->strategy == TRAINER_STRATEGY_REPLICATE);
}

/* Where a writer of group s's gradients adds the squares it changes: &s->sq where the group
 * keeps them (tables_norm_kept), else NULL. */
static inline double *tables_kept_sq(const trainer_tables *t, group_state *s) {
    return tables_norm_kept(t, s) ? &s->sq : NULL;
}

/* Whether this rank stores chunk k's rows and moments (its owner, or every rank when the
 * group is replicated). */
static inline int tables_holds(const trainer_tables *t, const group_state *s, int k) {
    return s->strategy == TRAINER_STRATEGY_REPLICATE || s->owner[k / LAYER_HASH_SHARD] == t->me;
}

/* Whether chunk k's rows are in this rank's rows stores without a fetch: held, or owned by
 * a rank of the node that shares them. */
static inline int tables_in_place(const trainer_tables *t, const group_state *s, int k) {
    return tables_holds(t, s, k) || (s->shared && t->same_node[s->owner[k / LAYER_HASH_SHARD]]);
}
/* Maps the rows stores of the fetched groups over shared memory on each node, where every
 * shard is whole pages, so that a rank reads the rows of the node's other ranks in place
 * (group_state.shared); the ranks agree, and fall back to fetching with a note from rank 0
 * when shared memory fails. Collective; after the stores are mapped, before rows are
 * written. share_rows = off, or one rank per node: nothing. */
void tables_share_rows(trainer_tables *t);
/* After rows change (the optimizer, a checkpoint's restore): no rank reads another's rows
 * before every rank has written its own. A barrier where rows are shared. Collective. */
void tables_share_sync(trainer_tables *t);

/* acc slice += g slice (w values), or = for the row's first contribution this step (acc is
 * never cleared: it holds something only under ST_ACC). */
static inline void tables_acc_slice(double *restrict a, const float *restrict g, int w, int first) {
    if (first)
        for (int c = 0; c < w; c++) a[c] = (double)g[c];
    else
        for (int c = 0; c < w; c++) a[c] += (double)g[c];
}

/* Folds the gradient rows of the keys marked ST_BLOCK in [lo, hi) of drows into acc (a
 * contribution), zeroes them and clears the mark; they become ST_TOUCHED | ST_ACC. */
void tables_fold_marked(group_state *s, int lo, int hi);
/* Makes the gradient and moment pages of the chunks this rank holds resident, once, at a
 * group's first backward: they are read before they are first written (+= and Adam), so
 * each page would fault twice in the first steps (the shared zero page, then its copy); the
 * memory estimate of a training run counts them resident all the same. A model that never
 * trains (eval, sample) keeps them unmapped. */
void tables_populate_held(const trainer_tables *t, group_state *s);
/* Scratch floats of the store, at least n. */
float *tables_scratch(trainer_tables *t, size_t n);
/* Gives back scratch and exchange buffers beyond TABLES_TRIM_BYTES (after the calls of a
 * group whose rows the budget does not keep: their transit copies count against it). */
enum { TABLES_TRIM_BYTES = 1 << 20 };
void tables_trim(trainer_tables *t);
/* What tables_release gives back: the fetched rows (which may be fetched again), the
 * gradient rows of other ranks' shards (only once they have been pushed). */
enum { RELEASE_ROWS = 1, RELEASE_GRADS = 2 };
/* Releases the pages of group s's rows of other ranks' shards (what: RELEASE_*). */
void tables_release(const trainer_tables *t, group_state *s, int what);

/* db[j] += the sum of output j's gradients dout[j] (N,OC), as layer_hash_backward sums it. */
void tables_bias_backward(const group_state *s, const int32_t *rowid, const float *sc, int N,
                          int K, const float *const *dout, float *const *db);
/* Backward over chunk subset rowid/sc (N,K) into drows, gs, db (tables_lookup.c). */
void tables_local_backward(const group_state *s, const int32_t *rowid, const float *sc, int N,
                           int K, const float *const *dout, float *gs, float *const *db,
                           double *sq);
/* The owner strategy at P > 1 (tables_owner.c): a forward call's outputs out[j] (N,OC) = b +
 * the shards' partial sums, whichever rank computed them; the backward's row gradients
 * formed by the owners, the score gradients gs and the bias gradients db back here. */
void tables_owner_forward(trainer_tables *t, int g, const int32_t *rowid, const float *sc, int N,
                          float *const *out, const float *const *b);
void tables_owner_backward(trainer_tables *t, int g, const trainer_tables_act *a,
                           const float *const *dout, float *gs, float *const *db);

#endif
