/* Table store optimizer: the gradient norm's pass and lazy Adam over the touched rows a rank holds, streamed chunk by chunk and tile by tile, and the step's marks cleared after. */
#include <stdlib.h>
#include <string.h>

#include "layers/common.h"
#include "trainer/base/optim.h"
#include "trainer/tables/tables_internal.h"

/* What to do with one tile slice of a touched row of group s: `off` into every store of s,
 * has_acc when acc holds part of the row's sum. */
typedef void (*slice_fn)(void *ctx, const group_state *s, size_t off, int has_acc);

/* The stores a pass over touched slices reads and writes, fetched a number of rows ahead: a
 * tile's rows of one chunk are 8 pages of each store (tau = 8), and the hardware prefetcher
 * starts again from nothing at every page, so a pass that relied on it alone read its
 * stores at a third of the bus's speed. */
enum { PASS_GRAD = 1, PASS_ADAM = 2 };
#define PASS_GRAD_AHEAD 64 /* rows: one store read, 8 KiB ahead */
#define PASS_ADAM_AHEAD 16 /* rows: four or five stores read and written, 2 KiB ahead in each */

/* Both cache lines of a slice (TILE floats), for reading or for writing. Always inline: GCC
 * (12, -O2) removes calls to a function whose only effects are prefetches. */
__attribute__((always_inline)) static inline void prefetch_read(const float *p) {
    __builtin_prefetch(p, 0, 0);
    __builtin_prefetch(p + 16, 0, 0);
}
__attribute__((always_inline)) static inline void prefetch_write(const float *p) {
    __builtin_prefetch(p, 1, 0);
    __builtin_prefetch(p + 16, 1, 0);
}

__attribute__((always_inline)) static inline void prefetch_slice(const group_state *s, size_t off,
                                                                  int pass) {
    for (int j = 0; j < s->g.nout; j++) {
        if (pass == PASS_GRAD) {
            prefetch_read(s->drows[j] + off);
        } else {
            prefetch_write(s->drows[j] + off);
            prefetch_write(s->m[j] + off);
            prefetch_write(s->v[j] + off);
            prefetch_write(s->rows[j] + off);
            if (s->master[j]) prefetch_write(s->master[j] + off);
        }
    }
}

/* Calls fn for the touched rows' tile slices of chunks k0..k1-1 of group s: chunk after
 * chunk, tile after tile, rows in increasing order inside a tile, so the stores stream in
 * sequence; the stores `pass` names are fetched for the touched rows `ahead` rows on in that
 * sequence. The look-ahead runs on into the next tile and the next chunk: a tile's rows of a
 * chunk are only 2^tau, and a pass that began each of them unfetched waited on memory for
 * the first `ahead` rows of every one (a quarter of the norm's pass at tau = 8). Inline with
 * constant arguments, the compiler makes it the plain loops. */
static inline void each_touched_slice(const group_state *s, int k0, int k1, slice_fn fn,
                                      void *ctx, int pass, int ahead) {
    const int L = 1 << s->g.tau, OC = s->g.OC;
    int pk = k0, po = 0, pi = 0; /* the look-ahead: row pi of tile po of chunk pk */
    if (pass)
        for (int a = 0; a < ahead && pk < k1; a++)
            if (++pi == L && (pi = 0, po += TILE) >= OC) po = 0, pk++;
    for (int k = k0; k < k1; k++)
        for (int o = 0; o < OC; o += TILE) {
            int r0 = k << s->g.tau, r1 = (k + 1) << s->g.tau;
            for (int r = r0; r < r1; r++) {
                if (pass && pk < k1) {
                    int pr = (pk << s->g.tau) + pi;
                    if (s->state[pr] & ST_TOUCHED)
                        prefetch_slice(s, layer_hash_store_at(s->R, pr, po), pass);
                    if (++pi == L && (pi = 0, po += TILE) >= OC) po = 0, pk++;
                }
                if (s->state[r] & ST_TOUCHED)
                    fn(ctx, s, layer_hash_store_at(s->R, r, o), (s->state[r] & ST_ACC) != 0);
            }
        }
}

/* The same over every chunk this rank holds, group after group, a run of held chunks at a
 * time (so the look-ahead crosses from chunk to chunk). */
static inline void each_held_touched_slice(trainer_tables *t, slice_fn fn, void *ctx, int pass,
                                           int ahead) {
    for (int g = 0; g < t->n; g++)
        for (int k = 0, K = t->gs[g].g.K; k < K;) {
            if (!tables_holds(t, &t->gs[g], k)) {
                k++;
                continue;
            }
            int k1 = k + 1;
            while (k1 < K && tables_holds(t, &t->gs[g], k1)) k1++;
            each_touched_slice(&t->gs[g], k, k1, fn, ctx, pass, ahead);
            k = k1;
        }
}

/* The step's gradient slice (TILE) of a touched row: (float)(acc + drows) under ST_ACC. */
static inline void grad_slice(float *restrict out, const double *restrict a,
                              const float *restrict d) {
    for (int c = 0; c < TILE; c++) out[c] = (float)(a[c] + (double)d[c]);
}

/* Sum of squares of one owned shard's touched gradient slices, in the layout's order: ctx
 * is the eight sums of tables_sumsq_slice. */
static inline void sumsq_one(void *ctx, const group_state *s, size_t off, int has_acc) {
    double *restrict sum = ctx;
    _Alignas(64) float gbuf[TILE];
    for (int j = 0; j < s->g.nout; j++) {
        /* padding columns hold zero: the whole tile adds the same as its OC columns */
        const float *gp = s->drows[j] + off;
        if (has_acc) {
            grad_slice(gbuf, s->acc[j] + off, gp);
            gp = gbuf;
        }
        tables_sumsq_slice(sum, gp);
    }
}

static double shard_sumsq(const group_state *s, int sh) {
    _Alignas(64) double sum[8] = {0};
    int k0 = sh * LAYER_HASH_SHARD, k1 = k0 + LAYER_HASH_SHARD;
    if (k1 > s->g.K) k1 = s->g.K;
    each_touched_slice(s, k0, k1, sumsq_one, sum, PASS_GRAD, PASS_GRAD_AHEAD);
    return tables_lanes_sum(sum);
}

double trainer_tables_grad_sumsq(trainer_tables *t) {
    /* per shard this rank owns of a group that is not kept, its pass; then, after the shards,
       one slot per rank: the kept groups' sums, in group order (at P = 1 the whole norm) */
    size_t nsh = 0;
    for (int g = 0; g < t->n; g++) nsh += (size_t)t->gs[g].S;
    double *part = layer_xcalloc(nsh + (size_t)t->P, sizeof(double));
    size_t i = 0;
    for (int g = 0; g < t->n; g++) {
        group_state *s = &t->gs[g];
        if (tables_norm_kept(t, s)) {
            part[nsh + (size_t)t->me] += s->sq;
            i += (size_t)s->S;
            continue;
        }
        for (int sh = 0; sh < s->S; sh++, i++)
            if (s->owner[sh] == t->me) part[i] = shard_sumsq(s, sh);
    }
    if (t->P > 1) comm_sum_doubles(t->comm, part, nsh + (size_t)t->P); /* x + 0 is exact */
    double sq = 0.0;
    for (i = 0; i < nsh + (size_t)t->P; i++) sq += part[i];
    free(part);
    return sq > 0.0 ? sq : 0.0; /* kept sums cancel remote rows up to rounding */
}

static void forget_fetched(trainer_tables *t) {
    for (int g = 0; g < t->n; g++) {
        group_state *s = &t->gs[g];
        for (int q = 0; q < s->nfetched; q++) s->state[s->fetched[q]] &= (uint8_t)~ST_FETCHED;
        s->nfetched = 0;
        s->in_memory_pass = 0;
    }
}

/* Clears the step's marks; the remote keys seen this step join the running measure. */
static void end_step_marks(trainer_tables *t) {
    for (int g = 0; g < t->n; g++) {
        group_state *s = &t->gs[g];
        for (int r = 0; r < s->R; r++) s->state[r] &= (uint8_t)~(ST_TOUCHED | ST_ACC | ST_SEEN);
        s->sq = 0.0; /* the gradients are cleared with the marks */
        /* every rank counts every step, so the re-plan's sum is over the same steps */
        s->seen_avg = (s->seen_avg * s->seen_steps + (double)s->seen) / (s->seen_steps + 1);
        s->seen_steps++;
        s->seen = 0;
    }
}

typedef struct adam_ctx {
    trainer_adam k;
    _Alignas(64) float gbuf[TILE];
} adam_ctx;

/* A whole tile per slice: padding has p = m = v = g = 0, which Adam leaves at 0. */
static inline void adam_one(void *ctx, const group_state *s, size_t off, int has_acc) {
    adam_ctx *c = ctx;
    for (int j = 0; j < s->g.nout; j++) {
        float *d = s->drows[j] + off;
        float *p = tables_master(s, j) + off;
        if (has_acc) {
            grad_slice(c->gbuf, s->acc[j] + off, d);
            memset(d, 0, TILE * sizeof(float));
            trainer_adam_apply(p, s->m[j] + off, s->v[j] + off, c->gbuf, TILE, &c->k);
        } else {
            trainer_adam_apply(p, s->m[j] + off, s->v[j] + off, d, TILE, &c->k);
        }
        if (s->master[j]) /* the rows the kernels read: the new master, rounded */
            for (int x = 0; x < TILE; x++)
                s->rows[j][off + x] = tables_from_bf16(tables_to_bf16(p[x]));
    }
}

void trainer_tables_step(trainer_tables *t, float lr, float beta1, float beta2, float eps,
                         int64_t step, float grad_scale) {
    /* no weight decay: table rows are looked up, not multiplied, so shrinking them has no
     * regularising meaning */
    adam_ctx c = {.k = trainer_adam_at(lr, beta1, beta2, eps, 0.0f, step, grad_scale)};
    each_held_touched_slice(t, adam_one, &c, PASS_ADAM, PASS_ADAM_AHEAD);
    end_step_marks(t);
    forget_fetched(t);
    tables_share_sync(t); /* the next reads see every rank's new rows */
}

void trainer_tables_clear_cache(trainer_tables *t) {
    for (int g = 0; g < t->n; g++) {
        group_state *s = &t->gs[g];
        for (int q = 0; q < s->nblk; q++) s->state[s->blk[q]] &= (uint8_t)~ST_BLOCK;
        s->nblk = 0;
        for (int r = 0; r < s->R; r++) s->state[r] &= (uint8_t)~ST_SEEN;
        s->seen = 0;
    }
    forget_fetched(t);
}

static inline void zero_one(void *ctx, const group_state *s, size_t off, int has_acc) {
    (void)ctx;
    (void)has_acc;
    for (int j = 0; j < s->g.nout; j++) memset(s->drows[j] + off, 0, TILE * sizeof(float));
}

void trainer_tables_discard_grads(trainer_tables *t) {
    for (int g = 0; g < t->n; g++) { /* the current block's gradients */
        group_state *s = &t->gs[g];
        for (int q = 0; q < s->nblk; q++)
            for (int j = 0; j < s->g.nout; j++)
                for (int o = 0; o < s->g.OC; o += TILE)
                    memset(s->drows[j] + layer_hash_store_at(s->R, s->blk[q], o), 0,
                           TILE * sizeof(float));
    }
    /* the held rows' kept contributions (acc needs no clearing: see tables_acc_slice) */
    each_held_touched_slice(t, zero_one, NULL, 0, 0);
    end_step_marks(t);
    trainer_tables_clear_cache(t);
}
