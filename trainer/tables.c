/* Table-parallel hash-table store: ownership plan, rows resolved into natural-id row stores, block-end gradient sums, fused lazy Adam. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include "trainer/tables.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "comm/exchange.h"
#include "layers/common.h"
#include "trainer/optim.h"
#include "trainer/params.h"

/* Bits of a key's state (one byte per row id). */
enum {
    ST_FETCHED = 1, /* a row of another rank's chunk, present until the step ends */
    ST_BLOCK = 2,   /* looked up by the current block (and listed in blk) */
    ST_TOUCHED = 4, /* an owned row with a gradient this step: in acc, in drows, or both */
    ST_ACC = 8,     /* an owned row whose acc holds a sum this step */
};

#define TILE LAYER_HASH_TILE

typedef struct group_state {
    trainer_table_group g;
    int R;          /* K << tau: rows of every store; row id = key = k << tau | bucket */
    int *owner;     /* (K) */
    uint8_t *state; /* (R) ST_* */
    /* stores of R rows of OC (layer_hash_store_at addressing; acc in doubles) */
    float *rows[3];  /* master rows of owned chunks, fetched rows of the others */
    float *drows[3]; /* the current block's row gradients */
    float *m[3], *v[3];
    double *acc[3];  /* owned rows: the double sum of the step's contributions handed on */
    int32_t *blk;     /* (R) keys of the current block */
    int nblk;
    int32_t *fetched; /* (2R) remote keys fetched since the last step; scratch after them */
    int nfetched;
    int in_memory_pass; /* looked up by this step's MRBP memory pass */
} group_state;

struct trainer_tables {
    comm_ctx *comm;
    comm_exchange *x;
    int n, cap, allocated, me;
    int blocks; /* blocks of streams a step sums over (for the memory accounting) */
    group_state *gs;
    int64_t lookups, misses;
    uint64_t digest;
    trainer_tables_phase phase;
    /* exchange scratch: keys (with their group in the high half), owners, rows */
    int64_t *keys;
    int *owners;
    float *buf;
};

/* Stores are anonymous mappings: zero, page-aligned, and resident only where written, so the
 * chunks another rank owns cost address space, not memory, until their rows are fetched. */
static void *store_map(size_t bytes) {
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED) {
        char what[96];
        snprintf(what, sizeof(what), "mapping %zu bytes for a table store", bytes);
        layer_fail(__FILE__, __LINE__, what);
    }
    return p;
}

static size_t store_bytes(const group_state *s, size_t elem) {
    return layer_hash_store_floats(s->R, s->g.OC) * elem;
}

static void store_unmap(void *p, size_t bytes) {
    if (p) munmap(p, bytes ? bytes : 1);
}

trainer_tables *trainer_tables_create(comm_ctx *comm) {
    trainer_tables *t = layer_xcalloc(1, sizeof(*t));
    t->comm = comm;
    t->me = comm_rank(comm);
    t->x = comm_exchange_create(comm);
    return t;
}

void trainer_tables_free(trainer_tables *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++) {
        group_state *s = &t->gs[i];
        if (t->allocated)
            for (int j = 0; j < s->g.nout; j++) {
                store_unmap(s->rows[j], store_bytes(s, sizeof(float)));
                store_unmap(s->drows[j], store_bytes(s, sizeof(float)));
                store_unmap(s->m[j], store_bytes(s, sizeof(float)));
                store_unmap(s->v[j], store_bytes(s, sizeof(float)));
                store_unmap(s->acc[j], store_bytes(s, sizeof(double)));
            }
        free(s->owner);
        free(s->state);
        free(s->blk);
        free(s->fetched);
    }
    comm_exchange_free(t->x);
    free(t->gs);
    free(t->keys);
    free(t->owners);
    free(t->buf);
    free(t);
}

int trainer_tables_add(trainer_tables *t, const char *name, int nout, int K, int tau, int OC) {
    LAYER_ASSERT(!t->allocated && nout >= 1 && nout <= 3 && tau >= 1 && tau <= 16 && K >= 1);
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 16;
        t->gs = realloc(t->gs, (size_t)t->cap * sizeof(*t->gs));
        LAYER_ASSERT(t->gs != NULL);
    }
    group_state *s = &t->gs[t->n];
    memset(s, 0, sizeof(*s));
    snprintf(s->g.name, sizeof(s->g.name), "%s", name);
    s->g.nout = nout;
    s->g.K = K;
    s->g.tau = tau;
    s->g.OC = OC;
    return t->n++;
}

static size_t unit_floats(const trainer_table_group *g) {
    return (size_t)g->nout * ((size_t)1 << g->tau) * g->OC;
}

typedef struct unit_ref {
    int g, k;
    size_t bytes;
} unit_ref;

static int unit_cmp(const void *a, const void *b) {
    const unit_ref *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes > y->bytes ? -1 : 1;
    if (x->g != y->g) return x->g - y->g;
    return x->k - y->k;
}

void trainer_tables_alloc(trainer_tables *t, uint64_t seed) {
    int P = comm_size(t->comm);
    size_t nunits = 0;
    for (int i = 0; i < t->n; i++) nunits += t->gs[i].g.K;
    unit_ref *list = layer_xcalloc(nunits ? nunits : 1, sizeof(unit_ref));
    size_t u = 0;
    for (int i = 0; i < t->n; i++)
        for (int k = 0; k < t->gs[i].g.K; k++)
            list[u++] = (unit_ref){i, k, unit_floats(&t->gs[i].g) * sizeof(float)};
    qsort(list, nunits, sizeof(unit_ref), unit_cmp);
    size_t *load = layer_xcalloc(P, sizeof(size_t));
    for (int i = 0; i < t->n; i++) t->gs[i].owner = layer_xcalloc(t->gs[i].g.K, sizeof(int));
    for (size_t i = 0; i < nunits; i++) {
        int best = 0;
        for (int r = 1; r < P; r++)
            if (load[r] < load[best]) best = r;
        load[best] += list[i].bytes;
        t->gs[list[i].g].owner[list[i].k] = best;
    }
    free(load);
    free(list);
    size_t maxkeys = 1, maxfloats = 1;
    for (int i = 0; i < t->n; i++) {
        group_state *s = &t->gs[i];
        int rows = 1 << s->g.tau, OC = s->g.OC;
        s->R = s->g.K << s->g.tau;
        s->state = layer_xcalloc((size_t)s->R, 1);
        s->blk = layer_xmalloc((size_t)s->R * sizeof(int32_t));
        s->fetched = layer_xmalloc(2 * (size_t)s->R * sizeof(int32_t));
        float *init = layer_xmalloc((size_t)rows * OC * sizeof(float)); /* (2^tau, OC) */
        for (int j = 0; j < s->g.nout; j++) {
            s->rows[j] = store_map(store_bytes(s, sizeof(float)));
            s->drows[j] = store_map(store_bytes(s, sizeof(float)));
            s->m[j] = store_map(store_bytes(s, sizeof(float)));
            s->v[j] = store_map(store_bytes(s, sizeof(float)));
            s->acc[j] = store_map(store_bytes(s, sizeof(double)));
            for (int k = 0; k < s->g.K; k++) {
                if (s->owner[k] != t->me) continue;
                layer_rng r;
                layer_rng_seed(&r, trainer_seed_for(seed, s->g.name, (uint64_t)(j * 65536 + k)));
                layer_fill_normal(init, (size_t)rows * OC, 0.02f, &r);
                for (int b = 0; b < rows; b++)
                    layer_hash_store_put(s->rows[j], s->R, OC, (k << s->g.tau) | b,
                                         init + (size_t)b * OC);
            }
        }
        free(init);
        if ((size_t)s->R > maxkeys) maxkeys = (size_t)s->R;
        if ((size_t)s->R * s->g.nout * OC > maxfloats) maxfloats = (size_t)s->R * s->g.nout * OC;
    }
    t->keys = layer_xmalloc(maxkeys * sizeof(int64_t));
    t->owners = layer_xmalloc(maxkeys * sizeof(int));
    t->buf = layer_xmalloc(maxfloats * sizeof(float));
    t->allocated = 1;
    t->blocks = 2;
}

int trainer_tables_ngroups(const trainer_tables *t) { return t->n; }

const trainer_table_group *trainer_tables_group(const trainer_tables *t, int g) {
    LAYER_ASSERT(g >= 0 && g < t->n);
    return &t->gs[g].g;
}

size_t trainer_tables_numel(const trainer_tables *t) {
    size_t n = 0;
    for (int i = 0; i < t->n; i++) n += unit_floats(&t->gs[i].g) * t->gs[i].g.K;
    return n;
}

int trainer_tables_owner(const trainer_tables *t, int g, int k) { return t->gs[g].owner[k]; }

int trainer_tables_owned_units(const trainer_tables *t) {
    int n = 0;
    for (int i = 0; i < t->n; i++)
        for (int k = 0; k < t->gs[i].g.K; k++) n += t->gs[i].owner[k] == t->me;
    return n;
}

size_t trainer_tables_owned_bytes(const trainer_tables *t) {
    /* rows, m, v and the last block's gradient in float; with several blocks the sum of the
       others in double */
    size_t per = 4 * sizeof(float) + (t->blocks > 1 ? sizeof(double) : 0), b = 0;
    for (int i = 0; i < t->n; i++)
        for (int k = 0; k < t->gs[i].g.K; k++)
            if (t->gs[i].owner[k] == t->me) b += unit_floats(&t->gs[i].g) * per;
    return b;
}

void trainer_tables_print_plan(trainer_tables *t) {
    int P = comm_size(t->comm), me = comm_rank(t->comm);
    double *mine = layer_xcalloc(2 * (size_t)P, sizeof(double));
    mine[me] = trainer_tables_owned_units(t);
    mine[P + me] = (double)trainer_tables_owned_bytes(t);
    comm_sum_doubles(t->comm, mine, 2 * P);
    if (me == 0) {
        double total = 0, mx = 0;
        for (int r = 0; r < P; r++) {
            total += mine[P + r];
            if (mine[P + r] > mx) mx = mine[P + r];
        }
        printf("tables: %d groups, %.1f MiB with Adam state over %d rank%s (imbalance %.3f):", t->n,
               total / 1048576.0, P, P > 1 ? "s" : "", total > 0 ? mx / (total / P) : 1.0);
        for (int r = 0; r < P; r++)
            printf(" r%d %d units %.1f MiB%s", r, (int)mine[r], mine[P + r] / 1048576.0,
                   r + 1 < P ? "," : "\n");
        fflush(stdout);
    }
    free(mine);
}

void trainer_tables_set_blocks(trainer_tables *t, int blocks) {
    LAYER_ASSERT(blocks >= 1);
    t->blocks = blocks;
}

/* ---- lookups ---- */

static void serve_rows(void *ctx, const int64_t *keys, int m, float *out) {
    trainer_tables *t = ctx;
    for (int i = 0; i < m; i++) {
        group_state *s = &t->gs[keys[i] >> 32];
        int key = (int)(keys[i] & 0xffffffff), nout = s->g.nout, OC = s->g.OC;
        LAYER_ASSERT(s->owner[key >> s->g.tau] == t->me);
        for (int j = 0; j < nout; j++)
            layer_hash_store_get(out + ((size_t)i * nout + j) * OC, s->rows[j], s->R, OC, key);
    }
}

void trainer_tables_resolve(trainer_tables *t, int g, const int32_t *idx, int N, int32_t *rowid,
                            layer_hash_rows *rows) {
    group_state *s = &t->gs[g];
    int K = s->g.K, tau = s->g.tau, nout = s->g.nout, OC = s->g.OC, nremote = 0;
    uint64_t h = t->digest ^ ((uint64_t)g * 0x9e3779b97f4a7c15ull);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            int32_t key = (k << tau) | idx[(size_t)n * K + k];
            h = (h ^ (uint64_t)key) * 1099511628211ull;
            rowid[(size_t)n * K + k] = key;
            uint8_t st = s->state[key];
            if (st & ST_BLOCK) continue;
            st |= ST_BLOCK;
            s->blk[s->nblk++] = key;
            if (s->owner[k] != t->me && !(st & ST_FETCHED)) {
                st |= ST_FETCHED;
                t->keys[nremote] = ((int64_t)g << 32) | key;
                t->owners[nremote++] = s->owner[k];
                s->fetched[s->nfetched++] = key;
            }
            s->state[key] = st;
        }
    t->lookups += (int64_t)N * K;
    t->misses += nremote;
    t->digest = h;
    if (t->phase == TRAINER_TABLES_MEMORY_PASS) s->in_memory_pass = 1;
    if (t->phase == TRAINER_TABLES_RECOMPUTE && s->in_memory_pass) {
        /* every rank knows these rows are present: no exchange to agree on */
        LAYER_ASSERT(nremote == 0);
    } else {
        comm_exchange_fetch(t->x, t->keys, t->owners, nremote, nout * OC, t->buf, serve_rows, t);
        for (int i = 0; i < nremote; i++)
            for (int j = 0; j < nout; j++)
                layer_hash_store_put(s->rows[j], s->R, OC, (int)(t->keys[i] & 0xffffffff),
                                     t->buf + ((size_t)i * nout + j) * OC);
    }
    for (int j = 0; j < nout; j++) {
        rows[j].rows = s->rows[j];
        rows[j].drows = s->drows[j];
        rows[j].R = s->R;
    }
}

void trainer_tables_set_phase(trainer_tables *t, trainer_tables_phase phase) { t->phase = phase; }

/* ---- gradients ---- */

/* How a step's row gradient is summed, so that it does not depend on the rank count:
 * every contribution (a block's sum over its tokens, in float) is added in double, and
 * the sum rounded once; a double sum of a few floats is exact unless their magnitudes
 * differ by more than ~2^29, so its order does not matter. The owner keeps the sum of what
 * was handed on in acc (ST_ACC) and its own last block's contribution where the block left
 * it, in drows, so the common cases move nothing: one block per step (the float gradient
 * is the sum, acc is never used) and one block per rank (acc holds the other ranks').
 * The step's gradient of a touched row is (float)(acc + drows), or drows without ST_ACC. */

/* acc slice += g slice, or = for the row's first contribution this step (acc is never
 * cleared: it holds something only under ST_ACC). */
static inline void acc_slice(double *restrict a, const float *restrict g, int w, int first) {
    if (first)
        for (int c = 0; c < w; c++) a[c] = (double)g[c];
    else
        for (int c = 0; c < w; c++) a[c] += (double)g[c];
}

static void accumulate_grads(void *ctx, int src, const int64_t *keys, const float *gr, int m) {
    (void)src; /* sums in double of float terms: the order does not change them */
    trainer_tables *t = ctx;
    for (int i = 0; i < m; i++) {
        group_state *s = &t->gs[keys[i] >> 32];
        int key = (int)(keys[i] & 0xffffffff), OC = s->g.OC;
        LAYER_ASSERT(s->owner[key >> s->g.tau] == t->me);
        int first = !(s->state[key] & ST_ACC);
        const float *g = gr + (size_t)i * s->g.nout * OC;
        for (int j = 0; j < s->g.nout; j++)
            for (int o = 0; o < OC; o += TILE)
                acc_slice(s->acc[j] + layer_hash_store_at(s->R, key, o), g + (size_t)j * OC + o,
                          OC - o < TILE ? OC - o : TILE, first);
        s->state[key] |= ST_TOUCHED | ST_ACC;
    }
}

void trainer_tables_block_end(trainer_tables *t, int keep_owned) {
    for (int g = 0; g < t->n; g++) {
        group_state *s = &t->gs[g];
        int nout = s->g.nout, OC = s->g.OC, W = nout * OC, tau = s->g.tau, nremote = 0;
        /* the block's keys in increasing order (so every tile streams in sequence); per key
           what happens to its gradient: the remote ones are numbered for the push */
        int n = 0;
        for (int r = 0; r < s->R; r++)
            if (s->state[r] & ST_BLOCK) s->blk[n++] = r;
        LAYER_ASSERT(n == s->nblk);
        enum { KEEP = -1, FOLD_FIRST = -2, FOLD = -3 };
        int32_t *slot = s->fetched + s->nfetched; /* scratch past the fetched list: (n) */
        int moved = 0;
        for (int q = 0; q < n; q++) {
            int key = s->blk[q], owner = s->owner[key >> tau];
            if (owner != t->me) {
                slot[q] = nremote;
                t->keys[nremote] = ((int64_t)g << 32) | key;
                t->owners[nremote++] = owner;
            } else if (keep_owned) {
                slot[q] = KEEP;
            } else {
                slot[q] = (s->state[key] & ST_ACC) ? FOLD : FOLD_FIRST;
            }
            moved += slot[q] != KEEP;
            s->state[key] = (uint8_t)((s->state[key] & ~ST_BLOCK) |
                                      (owner == t->me ? ST_TOUCHED : 0) |
                                      (slot[q] == FOLD || slot[q] == FOLD_FIRST ? ST_ACC : 0));
        }
        for (int j = 0; moved && j < nout; j++)
            for (int o = 0; o < OC; o += TILE) {
                int w = OC - o < TILE ? OC - o : TILE;
                float *dt = s->drows[j] + layer_hash_store_at(s->R, 0, o);
                double *at = s->acc[j] + layer_hash_store_at(s->R, 0, o);
                for (int q = 0; q < n; q++) {
                    if (slot[q] == KEEP) continue;
                    size_t off = (size_t)s->blk[q] * TILE;
                    if (slot[q] >= 0)
                        memcpy(t->buf + (size_t)slot[q] * W + (size_t)j * OC + o, dt + off,
                               (size_t)w * sizeof(float));
                    else
                        acc_slice(at + off, dt + off, TILE, slot[q] == FOLD_FIRST);
                    memset(dt + off, 0, TILE * sizeof(float));
                }
            }
        s->nblk = 0;
        comm_exchange_push(t->x, t->keys, t->owners, t->buf, nremote, W, accumulate_grads, t);
    }
}

/* Runs body for every tile slice (group s, output j, offset off into its stores) of every
 * touched row this rank owns: chunk after chunk, tile after tile, rows in increasing order
 * inside a tile, so the stores stream in sequence. `has_acc` tells whether acc holds part of
 * the row's sum. */
#define FOR_TOUCHED_SLICES(t, s, j, off, has_acc, body)                                       \
    for (int g_ = 0; g_ < (t)->n; g_++) {                                                    \
        group_state *s = &(t)->gs[g_];                                                       \
        int rows_ = 1 << s->g.tau;                                                           \
        for (int k_ = 0; k_ < s->g.K; k_++) {                                                \
            if (s->owner[k_] != (t)->me) continue;                                           \
            for (int o_ = 0; o_ < s->g.OC; o_ += TILE)                                       \
                for (int r_ = k_ * rows_; r_ < (k_ + 1) * rows_; r_++) {                     \
                    if (!(s->state[r_] & ST_TOUCHED)) continue;                              \
                    size_t off = layer_hash_store_at(s->R, r_, o_);                          \
                    int has_acc = (s->state[r_] & ST_ACC) != 0;                              \
                    for (int j = 0; j < s->g.nout; j++) { body }                             \
                }                                                                            \
        }                                                                                    \
    }

/* The step's gradient slice (TILE) of a touched row: (float)(acc + drows) under ST_ACC. */
static inline void grad_slice(float *restrict out, const double *restrict a,
                              const float *restrict d) {
    for (int c = 0; c < TILE; c++) out[c] = (float)(a[c] + (double)d[c]);
}

/* sum[l] += g[c + l]^2 for every eighth entry: eight independent double sums (one vector),
 * added in an order fixed by the layout. */
static inline void sumsq_slice(double *restrict sum, const float *restrict g) {
    for (int c = 0; c < TILE; c += 8)
        for (int l = 0; l < 8; l++) sum[l] += (double)g[c + l] * g[c + l];
}

double trainer_tables_grad_sumsq(const trainer_tables *t) {
    _Alignas(64) double sum[8] = {0};
    _Alignas(64) float gbuf[TILE];
    FOR_TOUCHED_SLICES(t, s, j, off, has_acc, {
        /* padding columns hold zero: the whole tile adds the same as its OC columns */
        const float *gp = s->drows[j] + off;
        if (has_acc) {
            grad_slice(gbuf, s->acc[j] + off, gp);
            gp = gbuf;
        }
        sumsq_slice(sum, gp);
    })
    return ((sum[0] + sum[1]) + (sum[2] + sum[3])) + ((sum[4] + sum[5]) + (sum[6] + sum[7]));
}

static void forget_fetched(trainer_tables *t) {
    for (int g = 0; g < t->n; g++) {
        group_state *s = &t->gs[g];
        for (int q = 0; q < s->nfetched; q++) s->state[s->fetched[q]] &= (uint8_t)~ST_FETCHED;
        s->nfetched = 0;
        s->in_memory_pass = 0;
    }
}

static void clear_touched(trainer_tables *t) {
    for (int g = 0; g < t->n; g++) {
        group_state *s = &t->gs[g];
        for (int r = 0; r < s->R; r++) s->state[r] &= (uint8_t)~(ST_TOUCHED | ST_ACC);
    }
}

void trainer_tables_step(trainer_tables *t, float lr, float beta1, float beta2, float eps,
                         int64_t step, float grad_scale) {
    /* no weight decay: table rows are looked up, not multiplied, so shrinking them has no
     * regularising meaning */
    trainer_adam k = trainer_adam_at(lr, beta1, beta2, eps, 0.0f, step, grad_scale);
    _Alignas(64) float gbuf[TILE];
    /* a whole tile per slice: padding has p = m = v = g = 0, which Adam leaves at 0 */
    FOR_TOUCHED_SLICES(t, s, j, off, has_acc, {
        float *d = s->drows[j] + off;
        if (has_acc) {
            grad_slice(gbuf, s->acc[j] + off, d);
            memset(d, 0, TILE * sizeof(float));
            trainer_adam_apply(s->rows[j] + off, s->m[j] + off, s->v[j] + off, gbuf, TILE, &k);
        } else {
            trainer_adam_apply(s->rows[j] + off, s->m[j] + off, s->v[j] + off, d, TILE, &k);
        }
    })
    clear_touched(t);
    forget_fetched(t);
}

void trainer_tables_clear_cache(trainer_tables *t) {
    for (int g = 0; g < t->n; g++) {
        group_state *s = &t->gs[g];
        for (int q = 0; q < s->nblk; q++) s->state[s->blk[q]] &= (uint8_t)~ST_BLOCK;
        s->nblk = 0;
    }
    forget_fetched(t);
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
    /* the owned rows' kept contributions (acc needs no clearing: see acc_slice) */
    FOR_TOUCHED_SLICES(t, s, j, off, has_acc, {
        (void)has_acc;
        memset(s->drows[j] + off, 0, TILE * sizeof(float));
    })
    clear_touched(t);
    trainer_tables_clear_cache(t);
}

/* ---- units, for checkpoints and tests ---- */

static int owns(const trainer_tables *t, int g, int k, int out) {
    LAYER_ASSERT(g >= 0 && g < t->n);
    const group_state *s = &t->gs[g];
    LAYER_ASSERT(k >= 0 && k < s->g.K && out >= 0 && out < s->g.nout);
    return s->owner[k] == t->me;
}

int trainer_tables_unit_get(const trainer_tables *t, int g, int k, int out, float *data, float *m,
                            float *v, float *grad) {
    if (!owns(t, g, k, out)) return -1;
    const group_state *s = &t->gs[g];
    int rows = 1 << s->g.tau, OC = s->g.OC;
    for (int b = 0; b < rows; b++) {
        int key = (k << s->g.tau) | b;
        size_t o = (size_t)b * OC;
        if (data) layer_hash_store_get(data + o, s->rows[out], s->R, OC, key);
        if (m) layer_hash_store_get(m + o, s->m[out], s->R, OC, key);
        if (v) layer_hash_store_get(v + o, s->v[out], s->R, OC, key);
        if (grad) { /* the step's gradient as trainer_tables_step will read it */
            layer_hash_store_get(grad + o, s->drows[out], s->R, OC, key);
            if (s->state[key] & ST_ACC)
                for (int c = 0; c < OC; c++)
                    grad[o + c] = (float)(s->acc[out][layer_hash_store_at(s->R, key, c)] +
                                          (double)grad[o + c]);
        }
    }
    return 0;
}

int trainer_tables_unit_set(trainer_tables *t, int g, int k, int out, const float *data,
                            const float *m, const float *v) {
    if (!owns(t, g, k, out)) return -1;
    group_state *s = &t->gs[g];
    int rows = 1 << s->g.tau, OC = s->g.OC;
    for (int b = 0; b < rows; b++) {
        int key = (k << s->g.tau) | b;
        size_t o = (size_t)b * OC;
        if (data) layer_hash_store_put(s->rows[out], s->R, OC, key, data + o);
        if (m) layer_hash_store_put(s->m[out], s->R, OC, key, m + o);
        if (v) layer_hash_store_put(s->v[out], s->R, OC, key, v + o);
    }
    return 0;
}

float *trainer_tables_entry(trainer_tables *t, int g, int k, int out, int bucket, int col) {
    if (!owns(t, g, k, out)) return NULL;
    group_state *s = &t->gs[g];
    LAYER_ASSERT(bucket >= 0 && bucket < (1 << s->g.tau) && col >= 0 && col < s->g.OC);
    return s->rows[out] + layer_hash_store_at(s->R, (k << s->g.tau) | bucket, col);
}

void trainer_tables_get_stats(const trainer_tables *t, trainer_tables_stats *st) {
    st->lookups = t->lookups;
    st->misses = t->misses;
    st->key_digest = t->digest;
    comm_exchange_stats(t->x, &st->bytes_sent, &st->exchange_seconds, &st->exchanges);
}

void trainer_tables_reset_stats(trainer_tables *t) {
    t->lookups = t->misses = 0;
    t->digest = 0;
    comm_exchange_reset_stats(t->x);
}
