/* Table-parallel hash-table store: ownership plan, per-step row cache filled by all-to-all fetches, owner-side lazy Adam. */
#include "trainer/tables.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/exchange.h"
#include "layers/common.h"
#include "trainer/optim.h"
#include "trainer/params.h"

/* Rows of one (group, chunk) this rank owns. */
typedef struct unit_store {
    float *data[3], *m[3], *v[3], *grad[3]; /* (2^tau, OC) each */
    double *grad64[3];                      /* (2^tau, OC) sums received from the ranks */
    uint8_t *touched;                       /* (2^tau) */
    int32_t *uniq;                          /* (2^tau) scratch */
} unit_store;

typedef struct group_state {
    trainer_table_group g;
    int *owner;          /* (K) */
    unit_store **units;  /* (K), NULL where another rank owns the chunk */
    /* row cache of this step: local key = k * 2^tau + bucket */
    int32_t *slot_of;    /* (K << tau), -1 when not cached */
    int32_t *slot_key;   /* (K << tau) */
    int nslots;
    float *rows[3], *drows[3]; /* row stores (layer_hash_store_*) of cache_rows() rows */
    double *acc[3];            /* (K << tau, OC): folded gradients of finished streams */
    int32_t *dirty;            /* slots written since the last fold */
    uint8_t *is_dirty;         /* (K << tau) */
    int ndirty;
    int in_memory_pass;        /* looked up by this step's MRBP memory pass */
} group_state;

struct trainer_tables {
    comm_ctx *comm;
    comm_exchange *x;
    int n, cap, allocated;
    group_state *gs;
    int64_t lookups, misses;
    uint64_t digest;
    /* scratch for exchanges */
    int64_t *keys;
    int *owners;
    int32_t *slots; /* the cache slot of each exchanged key */
    int me;
    trainer_tables_phase phase;
    float *buf;
    size_t scratch_keys, scratch_floats;
};

/* Rows of the group's row stores: one per key, so ids and the stores' layout never move. */
static int cache_rows(const group_state *s) { return s->g.K << s->g.tau; }

static float *falloc0(size_t n) {
    /* calloc: pages of a row cache that are never written never become resident */
    float *p = calloc(n ? n : 1, sizeof(float));
    LAYER_ASSERT(p != NULL);
    return p;
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
        for (int k = 0; s->units && k < s->g.K; k++) {
            unit_store *u = s->units[k];
            if (!u) continue;
            for (int j = 0; j < s->g.nout; j++) {
                free(u->data[j]);
                free(u->m[j]);
                free(u->v[j]);
                free(u->grad[j]);
                free(u->grad64[j]);
            }
            free(u->touched);
            free(u->uniq);
            free(u);
        }
        for (int j = 0; j < s->g.nout; j++) {
            layer_hash_store_free(s->rows[j]);
            layer_hash_store_free(s->drows[j]);
            free(s->acc[j]);
        }
        free(s->dirty);
        free(s->is_dirty);
        free(s->units);
        free(s->owner);
        free(s->slot_of);
        free(s->slot_key);
    }
    comm_exchange_free(t->x);
    free(t->gs);
    free(t->keys);
    free(t->owners);
    free(t->slots);
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

static size_t unit_bytes(const trainer_table_group *g) {
    return (size_t)g->nout * ((size_t)1 << g->tau) * g->OC * sizeof(float);
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
    int P = comm_size(t->comm), me = comm_rank(t->comm);
    size_t nunits = 0;
    for (int i = 0; i < t->n; i++) nunits += t->gs[i].g.K;
    unit_ref *list = layer_xcalloc(nunits ? nunits : 1, sizeof(unit_ref));
    size_t u = 0;
    for (int i = 0; i < t->n; i++)
        for (int k = 0; k < t->gs[i].g.K; k++)
            list[u++] = (unit_ref){i, k, unit_bytes(&t->gs[i].g)};
    qsort(list, nunits, sizeof(unit_ref), unit_cmp);
    size_t *load = layer_xcalloc(P, sizeof(size_t));
    for (int i = 0; i < t->n; i++) {
        t->gs[i].owner = layer_xcalloc(t->gs[i].g.K, sizeof(int));
        t->gs[i].units = layer_xcalloc(t->gs[i].g.K, sizeof(unit_store *));
    }
    for (size_t i = 0; i < nunits; i++) {
        int best = 0;
        for (int r = 1; r < P; r++)
            if (load[r] < load[best]) best = r;
        load[best] += list[i].bytes;
        t->gs[list[i].g].owner[list[i].k] = best;
    }
    free(load);
    free(list);
    size_t maxkeys = 0, maxfloats = 0;
    for (int i = 0; i < t->n; i++) {
        group_state *s = &t->gs[i];
        size_t rows = (size_t)1 << s->g.tau, keys = (size_t)s->g.K << s->g.tau;
        for (int k = 0; k < s->g.K; k++) {
            if (s->owner[k] != me) continue;
            unit_store *us = layer_xcalloc(1, sizeof(unit_store));
            for (int j = 0; j < s->g.nout; j++) {
                us->data[j] = falloc0(rows * s->g.OC);
                us->m[j] = falloc0(rows * s->g.OC);
                us->v[j] = falloc0(rows * s->g.OC);
                us->grad[j] = falloc0(rows * s->g.OC);
                us->grad64[j] = calloc(rows * s->g.OC, sizeof(double));
                LAYER_ASSERT(us->grad64[j] != NULL);
                layer_rng r;
                layer_rng_seed(&r, trainer_seed_for(seed, s->g.name, (uint64_t)(j * 65536 + k)));
                layer_fill_normal(us->data[j], rows * s->g.OC, 0.02f, &r);
            }
            us->touched = layer_xcalloc(rows, 1);
            us->uniq = layer_xmalloc(rows * sizeof(int32_t));
            s->units[k] = us;
        }
        s->slot_of = layer_xmalloc(keys * sizeof(int32_t));
        for (size_t q = 0; q < keys; q++) s->slot_of[q] = -1;
        s->slot_key = layer_xmalloc(keys * sizeof(int32_t));
        for (int j = 0; j < s->g.nout; j++) {
            s->rows[j] = layer_hash_store_new(cache_rows(s), s->g.OC);
            s->drows[j] = layer_hash_store_new(cache_rows(s), s->g.OC);
            s->acc[j] = calloc(keys * s->g.OC, sizeof(double));
            LAYER_ASSERT(s->acc[j] != NULL);
        }
        s->dirty = layer_xmalloc(keys * sizeof(int32_t));
        s->is_dirty = layer_xcalloc(keys, 1);
        if (keys > maxkeys) maxkeys = keys;
        /* a pushed gradient travels as two floats per value (see reduce_grads) */
        if (2 * keys * s->g.nout * s->g.OC > maxfloats) maxfloats = 2 * keys * s->g.nout * s->g.OC;
    }
    t->keys = layer_xmalloc((maxkeys ? maxkeys : 1) * sizeof(int64_t));
    t->owners = layer_xmalloc((maxkeys ? maxkeys : 1) * sizeof(int));
    t->slots = layer_xmalloc((maxkeys ? maxkeys : 1) * sizeof(int32_t));
    t->buf = falloc0(maxfloats);
    t->scratch_keys = maxkeys;
    t->scratch_floats = maxfloats;
    t->allocated = 1;
}

int trainer_tables_ngroups(const trainer_tables *t) { return t->n; }

const trainer_table_group *trainer_tables_group(const trainer_tables *t, int g) {
    LAYER_ASSERT(g >= 0 && g < t->n);
    return &t->gs[g].g;
}

size_t trainer_tables_numel(const trainer_tables *t) {
    size_t n = 0;
    for (int i = 0; i < t->n; i++) n += unit_bytes(&t->gs[i].g) / sizeof(float) * t->gs[i].g.K;
    return n;
}

int trainer_tables_owner(const trainer_tables *t, int g, int k) { return t->gs[g].owner[k]; }

int trainer_tables_owned_units(const trainer_tables *t) {
    int n = 0;
    for (int i = 0; i < t->n; i++)
        for (int k = 0; k < t->gs[i].g.K; k++) n += t->gs[i].units[k] != NULL;
    return n;
}

size_t trainer_tables_owned_bytes(const trainer_tables *t) {
    size_t b = 0;
    for (int i = 0; i < t->n; i++)
        for (int k = 0; k < t->gs[i].g.K; k++)
            if (t->gs[i].units[k]) b += 6 * unit_bytes(&t->gs[i].g); /* rows, m, v, grad, grad64 */
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

/* ---- fetch ---- */

static void serve_rows(void *ctx, const int64_t *keys, int m, float *out) {
    trainer_tables *t = ctx;
    for (int i = 0; i < m; i++) {
        int g = (int)(keys[i] >> 32);
        group_state *s = &t->gs[g];
        int local = (int)(keys[i] & 0xffffffff), k = local >> s->g.tau;
        int b = local & ((1 << s->g.tau) - 1);
        unit_store *u = s->units[k];
        LAYER_ASSERT(u != NULL);
        for (int j = 0; j < s->g.nout; j++)
            memcpy(out + ((size_t)i * s->g.nout + j) * s->g.OC, u->data[j] + (size_t)b * s->g.OC,
                   s->g.OC * sizeof(float));
    }
}

void trainer_tables_resolve(trainer_tables *t, int g, const int32_t *idx, int N, int32_t *rowid,
                            layer_hash_rows *rows) {
    group_state *s = &t->gs[g];
    int K = s->g.K, tau = s->g.tau, nout = s->g.nout, OC = s->g.OC;
    int nmiss = 0, nremote = 0;
    uint64_t h = t->digest ^ ((uint64_t)g * 0x9e3779b97f4a7c15ull);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            int32_t b = idx[(size_t)n * K + k], key = (k << tau) | b;
            h = (h ^ (uint64_t)key) * 1099511628211ull;
            int32_t slot = s->slot_of[key];
            if (slot < 0) {
                slot = s->slot_of[key] = s->nslots++;
                s->slot_key[slot] = key;
                nmiss++;
                if (s->owner[k] == t->me) { /* this rank's own rows: no exchange needed */
                    for (int j = 0; j < nout; j++)
                        layer_hash_store_put(s->rows[j], cache_rows(s), OC, slot,
                                             s->units[k]->data[j] + (size_t)b * OC);
                } else {
                    t->keys[nremote] = ((int64_t)g << 32) | key;
                    t->owners[nremote] = s->owner[k];
                    t->slots[nremote++] = slot;
                }
            }
            rowid[(size_t)n * K + k] = slot;
            if (!s->is_dirty[slot]) {
                s->is_dirty[slot] = 1;
                s->dirty[s->ndirty++] = slot;
            }
        }
    t->lookups += (int64_t)N * K;
    t->misses += nmiss;
    t->digest = h;
    if (t->phase == TRAINER_TABLES_MEMORY_PASS) s->in_memory_pass = 1;
    if (t->phase == TRAINER_TABLES_RECOMPUTE && s->in_memory_pass) {
        /* every rank knows these rows are cached: no exchange to agree on */
        LAYER_ASSERT(nremote == 0);
    } else {
        comm_exchange_fetch(t->x, t->keys, t->owners, nremote, nout * OC, t->buf, serve_rows, t);
    }
    for (int i = 0; i < nremote; i++)
        for (int j = 0; j < nout; j++)
            layer_hash_store_put(s->rows[j], cache_rows(s), OC, t->slots[i],
                                 t->buf + ((size_t)i * nout + j) * OC);
    for (int j = 0; j < nout; j++) {
        rows[j].rows = s->rows[j];
        rows[j].drows = s->drows[j];
        rows[j].R = cache_rows(s); /* the stores' capacity: their layout depends on it */
    }
}

/* ---- gradients ---- */

/* Adds one key's gradient, sent as float hi + lo per value (see reduce_grads), in double. */
static void add_key_grad(trainer_tables *t, int64_t gkey, const float *hi, const float *lo) {
    int g = (int)(gkey >> 32);
    group_state *s = &t->gs[g];
    int local = (int)(gkey & 0xffffffff), k = local >> s->g.tau;
    int b = local & ((1 << s->g.tau) - 1), OC = s->g.OC;
    unit_store *u = s->units[k];
    LAYER_ASSERT(u != NULL);
    for (int j = 0; j < s->g.nout; j++) {
        double *dst = u->grad64[j] + (size_t)b * OC;
        for (int c = 0; c < OC; c++) dst[c] += (double)hi[j * OC + c] + (double)lo[j * OC + c];
    }
    u->touched[b] = 1;
}

static void accumulate_grads(void *ctx, int src, const int64_t *keys, const float *gr, int m) {
    (void)src; /* the exchange calls in increasing source rank: the order is already fixed */
    trainer_tables *t = ctx;
    for (int i = 0; i < m; i++) {
        const group_state *s = &t->gs[keys[i] >> 32];
        int W = s->g.nout * s->g.OC;
        const float *hi = gr + (size_t)i * 2 * W;
        add_key_grad(t, keys[i], hi, hi + W);
    }
}

void trainer_tables_fold(trainer_tables *t) {
    for (int g = 0; g < t->n; g++) {
        group_state *s = &t->gs[g];
        int OC = s->g.OC, R = cache_rows(s);
        for (int q = 0; q < s->ndirty; q++) {
            int slot = s->dirty[q];
            for (int j = 0; j < s->g.nout; j++) {
                double *a = s->acc[j] + (size_t)slot * OC;
                for (int o = 0; o < OC; o += LAYER_HASH_TILE) { /* the row, a tile at a time */
                    float *d = s->drows[j] + layer_hash_store_at(R, slot, o);
                    int w = OC - o < LAYER_HASH_TILE ? OC - o : LAYER_HASH_TILE;
                    for (int c = 0; c < w; c++) {
                        a[o + c] += d[c];
                        d[c] = 0.0f;
                    }
                }
            }
            s->is_dirty[slot] = 0;
        }
        s->ndirty = 0;
    }
}

void trainer_tables_reduce_grads(trainer_tables *t) {
    trainer_tables_fold(t);
    for (int g = 0; g < t->n; g++) {
        group_state *s = &t->gs[g];
        int nout = s->g.nout, OC = s->g.OC, W = nout * OC, nremote = 0;
        for (int i = 0; i < s->nslots; i++) {
            int32_t key = s->slot_key[i];
            int owner = s->owner[key >> s->g.tau];
            /* a double travels as float hi + float lo: 48 bits of it, enough that the owner's
               sum rounds to the same float whatever the split of streams over ranks; this
               rank's own keys take the same arithmetic without the exchange */
            float *hi = t->buf + (size_t)nremote * 2 * W, *lo = hi + W;
            for (int j = 0; j < nout; j++) {
                const double *a = s->acc[j] + (size_t)i * OC;
                for (int c = 0; c < OC; c++) {
                    float h = (float)a[c];
                    hi[j * OC + c] = h;
                    lo[j * OC + c] = (float)(a[c] - (double)h);
                }
            }
            int64_t gkey = ((int64_t)g << 32) | key;
            if (owner == t->me) {
                add_key_grad(t, gkey, hi, lo);
            } else {
                t->keys[nremote] = gkey;
                t->owners[nremote++] = owner;
            }
        }
        comm_exchange_push(t->x, t->keys, t->owners, t->buf, nremote, 2 * W, accumulate_grads, t);
        for (int j = 0; j < nout; j++) memset(s->acc[j], 0, (size_t)s->nslots * OC * sizeof(double));
    }
    /* owners: the float gradient the optimizer and the norm use */
    for (int g = 0; g < t->n; g++) {
        group_state *s = &t->gs[g];
        int rows = 1 << s->g.tau, OC = s->g.OC;
        for (int k = 0; k < s->g.K; k++) {
            unit_store *u = s->units[k];
            if (!u) continue;
            for (int b = 0; b < rows; b++) {
                if (!u->touched[b]) continue;
                for (int j = 0; j < s->g.nout; j++)
                    for (int c = 0; c < OC; c++) {
                        size_t i = (size_t)b * OC + c;
                        u->grad[j][i] = (float)u->grad64[j][i];
                        u->grad64[j][i] = 0.0;
                    }
            }
        }
    }
}

double trainer_tables_grad_sumsq(const trainer_tables *t) {
    double sum = 0.0;
    for (int i = 0; i < t->n; i++) {
        const group_state *s = &t->gs[i];
        int rows = 1 << s->g.tau, OC = s->g.OC;
        for (int k = 0; k < s->g.K; k++) {
            const unit_store *u = s->units[k];
            if (!u) continue;
            for (int b = 0; b < rows; b++) {
                if (!u->touched[b]) continue;
                for (int j = 0; j < s->g.nout; j++)
                    sum += trainer_sumsq(u->grad[j] + (size_t)b * OC, OC);
            }
        }
    }
    return sum;
}

void trainer_tables_clear_cache(trainer_tables *t) {
    for (int i = 0; i < t->n; i++) {
        group_state *s = &t->gs[i];
        for (int q = 0; q < s->nslots; q++) s->slot_of[s->slot_key[q]] = -1;
        int R = cache_rows(s);
        for (int j = 0; j < s->g.nout; j++) {
            for (int o = 0; o < s->g.OC; o += LAYER_HASH_TILE) /* slots [0, nslots) of each tile */
                memset(s->drows[j] + layer_hash_store_at(R, 0, o), 0,
                       (size_t)s->nslots * LAYER_HASH_TILE * sizeof(float));
            memset(s->acc[j], 0, (size_t)s->nslots * s->g.OC * sizeof(double));
        }
        for (int q = 0; q < s->ndirty; q++) s->is_dirty[s->dirty[q]] = 0;
        s->ndirty = 0;
        s->nslots = 0;
        s->in_memory_pass = 0;
    }
}

void trainer_tables_step(trainer_tables *t, float lr, float beta1, float beta2, float eps,
                         int64_t step, float grad_scale) {
    for (int i = 0; i < t->n; i++) {
        group_state *s = &t->gs[i];
        int rows = 1 << s->g.tau, OC = s->g.OC;
        for (int k = 0; k < s->g.K; k++) {
            unit_store *u = s->units[k];
            if (!u) continue;
            int nu = 0;
            for (int b = 0; b < rows; b++)
                if (u->touched[b]) u->uniq[nu++] = b;
            if (nu == 0) continue;
            for (int j = 0; j < s->g.nout; j++) {
                /* compact the touched rows' gradients in place, in ascending row order */
                for (int q = 0; q < nu; q++)
                    if (q != u->uniq[q])
                        memcpy(u->grad[j] + (size_t)q * OC, u->grad[j] + (size_t)u->uniq[q] * OC,
                               OC * sizeof(float));
                trainer_sparse_adam_step(u->data[j], u->m[j], u->v[j], u->grad[j], u->uniq, nu,
                                         OC, lr, beta1, beta2, eps, step, grad_scale);
                /* only rows 0..nu (the compacted copy) and the touched rows hold anything */
                memset(u->grad[j], 0, (size_t)nu * OC * sizeof(float));
                for (int q = 0; q < nu; q++)
                    memset(u->grad[j] + (size_t)u->uniq[q] * OC, 0, OC * sizeof(float));
            }
            for (int q = 0; q < nu; q++) u->touched[u->uniq[q]] = 0;
        }
    }
    trainer_tables_clear_cache(t);
}

void trainer_tables_set_phase(trainer_tables *t, trainer_tables_phase phase) { t->phase = phase; }

void trainer_tables_discard_grads(trainer_tables *t) {
    for (int i = 0; i < t->n; i++) {
        group_state *s = &t->gs[i];
        size_t rows = (size_t)1 << s->g.tau;
        for (int k = 0; k < s->g.K; k++) {
            unit_store *u = s->units[k];
            if (!u) continue;
            for (int j = 0; j < s->g.nout; j++) {
                memset(u->grad[j], 0, rows * s->g.OC * sizeof(float));
                memset(u->grad64[j], 0, rows * s->g.OC * sizeof(double));
            }
            memset(u->touched, 0, rows);
        }
    }
    trainer_tables_clear_cache(t);
}

float *trainer_tables_unit(trainer_tables *t, int g, int k, int out, float **m, float **v,
                           float **grad) {
    group_state *s = &t->gs[g];
    LAYER_ASSERT(k >= 0 && k < s->g.K && out >= 0 && out < s->g.nout);
    unit_store *u = s->units[k];
    if (!u) return NULL;
    if (m) *m = u->m[out];
    if (v) *v = u->v[out];
    if (grad) *grad = u->grad[out];
    return u->data[out];
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
