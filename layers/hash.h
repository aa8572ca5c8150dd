/* MemoryFormer memory layer: hash-addressed lookup tables replacing a dense projection (README,
 * "What is computed"). */
#ifndef MEMTRAIN_LAYERS_HASH_H
#define MEMTRAIN_LAYERS_HASH_H

#include <stdint.h>

#include "layers/common.h"

/* A hashed projection maps x (N, K*TAU) to y (N,OC). Chunk k of a row is z = x[k*TAU:(k+1)*TAU];
 * its bucket idx = sum_i [z_i >= 0] 2^(TAU-1-i) (first element most significant) selects row
 * idx of table k; y = sum_k s_k * T_k[idx_k] + b with the score s_k of the chosen mode.
 *
 * Rows are addressed through a row store of R rows and a row id per (token, chunk), so the
 * same kernels serve the local layout (tables of 2^TAU rows one after another, rowid =
 * k*2^TAU + idx, see layer_hash_rowid_local) and a store of rows fetched from other ranks.
 *
 * A store keeps its rows cut into tiles of LAYER_HASH_TILE columns: tile c holds columns
 * [c*TILE, (c+1)*TILE) of every row, rows one after another, so element (r, o) lives at
 * layer_hash_store_at(R, r, o) and a store takes layer_hash_store_floats(R, OC) floats. Columns
 * past OC in the last tile are padding: the kernels neither read them into results nor change
 * them beyond adding zero. Why tiles: a token touches one row of every table, and the kernels
 * serve all tokens from one tile of a few tables at a time; in this layout that is one
 * contiguous block, which streams from memory in sequence and spreads over every cache set. */

#define LAYER_HASH_TILE 32

/* Chunks are summed in shards of LAYER_HASH_SHARD (the last shard of a projection may be
 * shorter): y = b + S_0 + S_1 + ..., added left to right, where S_i sums shard i's chunks
 * s_k * T_k[idx_k] in order of k, starting from zero. Every path computes exactly this
 * expression (the fused kernels, a rank that sums another rank's partials), so the result
 * does not depend on which rank computed which shard. Without b, y = S_0 + S_1 + ...; one
 * shard's partial alone is layer_hash_forward over that shard's chunks without b. */
#define LAYER_HASH_SHARD 16

/* Floats in a store of R rows of OC columns. */
static inline size_t layer_hash_store_floats(int R, int OC) {
    return (size_t)((OC + LAYER_HASH_TILE - 1) / LAYER_HASH_TILE) * (size_t)R * LAYER_HASH_TILE;
}
/* Offset of element (r, o) in a store of R rows. */
static inline size_t layer_hash_store_at(int R, int r, int o) {
    return ((size_t)(o / LAYER_HASH_TILE) * (size_t)R + (size_t)r) * LAYER_HASH_TILE +
           (size_t)(o % LAYER_HASH_TILE);
}
/* A zeroed store, 64-byte aligned as the kernels want it (the row slices of a tile then sit
 * on whole cache lines); pages never written are never made resident. Release it with
 * layer_hash_store_free (NULL is fine). */
float *layer_hash_store_new(int R, int OC);
void layer_hash_store_free(float *store);
/* Row r of a store from / to a plain row (OC). */
void layer_hash_store_put(float *store, int R, int OC, int r, const float *row);
void layer_hash_store_get(float *row, const float *store, int R, int OC, int r);

typedef enum layer_score_mode {
    LAYER_SCORE_PROB = 0, /* p = prod_i sigmoid(2|z_i|/t)                    */
    LAYER_SCORE_L1PROB,   /* s = (sum_i |z_i|) * prod_i sigmoid(2|z_i|)      */
} layer_score_mode;

/* idx (N,K) bucket per chunk, s (N,K) score per chunk; x (N,K*TAU). temp only used by PROB. */
void layer_hash_index(int32_t *idx, float *s, const float *x, int N, int K, int TAU,
                      layer_score_mode mode, float temp);
/* dx (N,K*TAU) += gs[n,k] * ds_k/dx (no gradient through idx; sign'(0) = 0); gs (N,K). */
void layer_hash_score_backward(float *dx, const float *gs, const float *x, int N, int K, int TAU,
                               layer_score_mode mode, float temp);

/* rowid (N,K) = k * 2^TAU + idx[n,k]. */
void layer_hash_rowid_local(int32_t *rowid, const int32_t *idx, int N, int K, int TAU);

/* y (N,OC) = sum_k s[n,k] * rows[rowid[n,k]] + b; rows a store of R rows; b (OC) or NULL. */
void layer_hash_forward(float *y, const int32_t *rowid, const float *s, const float *rows,
                        const float *b, int N, int K, int R, int OC);
/* The same with token n's OC outputs at y + n*ldy (ldy >= OC; what lies between is left
 * alone): so one call can write partials straight into a buffer of several per token, as an
 * owner's reply holds them (bitwise what layer_hash_forward gives per token). */
void layer_hash_forward_ld(float *y, int ldy, const int32_t *rowid, const float *s,
                           const float *rows, const float *b, int N, int K, int R, int OC);
/* With g = dy (N,OC), rows and drows stores of R rows:
 *   drows[rowid[n,k]] += s[n,k] * g[n]  (only hit rows are written; drows may be NULL),
 *   gs[n,k]           += <g[n], rows[rowid[n,k]]>  (gs may be NULL),
 *   db                += sum_n g[n]                (db may be NULL). */
void layer_hash_backward(float *drows, float *gs, float *db, const float *dy,
                         const int32_t *rowid, const float *s, const float *rows, int N, int K,
                         int R, int OC);
/* layer_hash_backward without bias gradients for nout (1 to 3) projections that share rowid
 * and s (Q/K/V; one sort of the hits serves them, and each adds into gs), with the tokens'
 * output gradients in nparts parts: output j's first ndy[0] tokens at dy[j*nparts], the next
 * ndy[1] at dy[j*nparts + 1], ... (the ndy add up to N). A row's gradient takes each part's
 * sum as an addition of its own, in part order: the call is bitwise the calls over each
 * part's tokens one after another (layer_hash_backward, layer_hashqkv_backward), in one
 * pass over the rows. sq (or NULL) += the sum, over every drows entry the call writes, of
 * new^2 - old^2 in double, in an order fixed by the call's inputs: calls that start from
 * zeroed drows leave in it the sum of squares of what drows holds, with no pass over drows
 * (to rounding: each addition rounds once). */
void layer_hash_backward_parts(int nout, float *const *drows, float *gs, double *sq,
                               const float *const *dy, const int *ndy, int nparts,
                               const int32_t *rowid, const float *s, const float *const *rows,
                               int N, int K, int R, int OC);
/* Plain-loop references of layer_hash_forward, layer_hash_forward_ld and
 * layer_hash_backward, same contracts. */
void layer_hash_forward_ref(float *y, const int32_t *rowid, const float *s, const float *rows,
                            const float *b, int N, int K, int R, int OC);
void layer_hash_forward_ld_ref(float *y, int ldy, const int32_t *rowid, const float *s,
                               const float *rows, const float *b, int N, int K, int R, int OC);
void layer_hash_backward_ref(float *drows, float *gs, float *db, const float *dy,
                             const int32_t *rowid, const float *s, const float *rows, int N,
                             int K, int R, int OC);

/* Whether the forward prefetches the rows of its next region as it sweeps the current one,
 * for the whole process: AUTO (the default) times the first calls of each shape both ways,
 * per thread, and drops the prefetches for that shape where the calls without them took at
 * least a tenth less time (hash_kernels.c, hk_fwd_tuned); OFF and ON fix it. The results
 * are the same bits either way. */
enum { LAYER_HASH_PREFETCH_OFF = 0, LAYER_HASH_PREFETCH_ON = 1, LAYER_HASH_PREFETCH_AUTO = -1 };
void layer_hash_set_prefetch(int mode);

/* The fast kernels keep their scratch buffers (MiB at training shapes) per thread
 * between calls; this releases the calling thread's. Safe to call at any time. */
void layer_hash_workspace_free(void);

/* Writes the distinct values of rowid[0..n) in increasing order to uniq and returns their
 * number (the rows touched by a batch: what the sparse optimizer and the exchange need).
 * Values must lie in [0,R). */
int layer_hash_unique_rows(int32_t *uniq, const int32_t *rowid, int n, int R);

/* Shared hash for Q/K/V: one index and score, three row stores, three biases.
 * q, k, v (N,OC). Backward adds the three <g, row> terms into the one gs (N,K). */
void layer_hashqkv_forward(float *q, float *k, float *v, const int32_t *rowid, const float *s,
                           const float *rows_q, const float *rows_k, const float *rows_v,
                           const float *bq, const float *bk, const float *bv, int N, int K, int R,
                           int OC);
void layer_hashqkv_backward(float *drows_q, float *drows_k, float *drows_v, float *gs, float *dbq,
                            float *dbk, float *dbv, const float *dq, const float *dk,
                            const float *dv, const int32_t *rowid, const float *s,
                            const float *rows_q, const float *rows_k, const float *rows_v, int N,
                            int K, int R, int OC);

/* Where a projection's rows live for one batch (the trainer's table store fills it). */
typedef struct layer_hash_rows {
    const float *rows; /* store of R rows of OC */
    float *drows;      /* gradient store with the same row ids, NULL when not training */
    int R;
} layer_hash_rows;

#endif
