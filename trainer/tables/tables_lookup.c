/* The strategies at work: hashed projections forward and backward by fetched rows, by the owners' partial sums, or on replicated tables; block ends and the replicated all-reduce. */
#define _DEFAULT_SOURCE /* MADV_DONTNEED */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "layers/common.h"
#include "trainer/tables/tables_internal.h"

/* ---- helpers ---- */

void tables_fold_marked(group_state *s, int lo, int hi) {
    int OC = s->g.OC, n = 0;
    int32_t *keys = s->fetched + s->nfetched; /* scratch past the fetched list */
    for (int r = lo; r < hi; r++)
        if (s->state[r] & ST_BLOCK) keys[n++] = r;
    for (int j = 0; j < s->g.nout; j++)
        for (int o = 0; o < OC; o += TILE) {
            float *dt = s->drows[j] + layer_hash_store_at(s->R, 0, o);
            double *at = s->acc[j] + layer_hash_store_at(s->R, 0, o);
            for (int q = 0; q < n; q++) {
                size_t off = (size_t)keys[q] * TILE;
                tables_acc_slice(at + off, dt + off, TILE, !(s->state[keys[q]] & ST_ACC));
                memset(dt + off, 0, TILE * sizeof(float));
            }
        }
    for (int q = 0; q < n; q++)
        s->state[keys[q]] = (uint8_t)((s->state[keys[q]] & ~ST_BLOCK) | ST_TOUCHED | ST_ACC);
}

/* The pages of chunk k's rows in every tile of a store of elem-byte values. */
static void release_chunk(group_state *s, void *store, size_t elem, int k) {
    long page = sysconf(_SC_PAGESIZE);
    size_t bytes = ((size_t)TILE << s->g.tau) * elem; /* one tile's rows of the chunk */
    if (page <= 0 || bytes % (size_t)page != 0) return; /* small tables: not worth a page */
    int ntiles = (s->g.OC + TILE - 1) / TILE;
    for (int c = 0; c < ntiles; c++)
        madvise((char *)store + layer_hash_store_at(s->R, k << s->g.tau, c * TILE) * elem, bytes,
                MADV_DONTNEED);
}

void tables_release(const trainer_tables *t, group_state *s, int what) {
    if (what & RELEASE_ROWS) {
        for (int q = 0; q < s->nfetched; q++) s->state[s->fetched[q]] &= (uint8_t)~ST_FETCHED;
        s->nfetched = 0;
    }
    for (int k = 0; k < s->g.K; k++) {
        if (tables_holds(t, s, k)) continue;
        int mapped = tables_in_place(t, s, k); /* another rank's rows, shared: not ours to drop */
        for (int j = 0; j < s->g.nout; j++) {
            if ((what & RELEASE_ROWS) && !mapped) release_chunk(s, s->rows[j], sizeof(float), k);
            if (what & RELEASE_GRADS) release_chunk(s, s->drows[j], sizeof(float), k);
        }
    }
}

/* A fetched group over the budget holds its rows only while a call computes with them. */
static int transient(const trainer_tables *t, const group_state *s) {
    return s->strategy == TRAINER_STRATEGY_FETCH && !s->keep && t->P > 1;
}

/* Keys of the tokens' chunks: rowid (N,K) = k << tau | idx. Counts the lookups and, for the
 * measure of distinct keys, marks the remote ones seen this step. */
static void make_keys(trainer_tables *t, int g, const int32_t *idx, int N, int32_t *rowid) {
    group_state *s = &t->gs[g];
    int K = s->g.K, tau = s->g.tau;
    uint64_t h = t->digest ^ ((uint64_t)g * 0x9e3779b97f4a7c15ull);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            int32_t key = (k << tau) | idx[(size_t)n * K + k];
            h = (h ^ (uint64_t)key) * 1099511628211ull;
            rowid[(size_t)n * K + k] = key;
            if (!(s->state[key] & ST_SEEN) && !tables_holds(t, s, k)) {
                s->state[key] |= ST_SEEN;
                s->seen++;
            }
        }
    t->lookups += (int64_t)N * K;
    t->digest = h;
}

/* ---- fetch and replicate: the rows where the kernels can read them ---- */

/* Floats a fetched row takes on the wire: W, or W/2 rounded up with bf16 values in pairs. */
static int wire_floats(const trainer_tables *t, int W) { return t->bf16 ? (W + 1) / 2 : W; }

static void serve_rows(void *ctx, const int64_t *keys, int m, float *out) {
    trainer_tables *t = ctx;
    float row[3 * 4096];
    for (int i = 0; i < m; i++) {
        group_state *s = &t->gs[keys[i] >> 32];
        int key = (int)(keys[i] & 0xffffffff), nout = s->g.nout, OC = s->g.OC, W = nout * OC;
        LAYER_ASSERT(tables_holds(t, s, key >> s->g.tau));
        float *dst = out + (size_t)i * wire_floats(t, W);
        float *r = t->bf16 ? (W <= (int)(sizeof(row) / sizeof(row[0])) ? row : NULL) : dst;
        LAYER_ASSERT(r != NULL && "row too wide for the bf16 wire");
        for (int j = 0; j < nout; j++)
            layer_hash_store_get(r + (size_t)j * OC, s->rows[j], s->R, OC, key);
        if (t->bf16) { /* rows are rounded already: the bf16 bits carry them exactly */
            uint16_t *h = (uint16_t *)dst;
            for (int c = 0; c < W; c++) h[c] = tables_to_bf16(r[c]);
            if (W % 2) h[W] = 0;
        }
    }
}

/* Lists the block's keys and fetches the rows this rank lacks. */
static void resolve(trainer_tables *t, int g, const int32_t *rowid, int N) {
    group_state *s = &t->gs[g];
    int K = s->g.K, tau = s->g.tau, nout = s->g.nout, OC = s->g.OC, nremote = 0;
    for (size_t e = 0; e < (size_t)N * K; e++) {
        int32_t key = rowid[e];
        uint8_t st = s->state[key];
        if (!(st & ST_BLOCK)) {
            st |= ST_BLOCK;
            s->blk[s->nblk++] = key;
        }
        int k = key >> tau;
        if (!(st & ST_FETCHED) && !tables_in_place(t, s, k)) {
            st |= ST_FETCHED;
            t->keys[nremote] = ((int64_t)g << 32) | key;
            t->owners[nremote++] = s->owner[k / LAYER_HASH_SHARD];
            s->fetched[s->nfetched++] = key;
        }
        s->state[key] = st;
    }
    t->misses += nremote;
    /* the memory pass's last segment runs the whole model: only the groups the pass runs
       keep their rows for the recompute by this rule */
    if (t->phase == TRAINER_TABLES_MEMORY_PASS && s->replayed) s->in_memory_pass = 1;
    if (s->shared && t->one_node) {
        /* every rank of the job reads the others' rows in place: nothing to fetch, and every
           rank knows it (no exchange to agree on) */
        LAYER_ASSERT(nremote == 0);
        return;
    }
    if (t->phase == TRAINER_TABLES_RECOMPUTE && s->in_memory_pass && !transient(t, s)) {
        /* every rank knows these rows are present (a kept group's rows stay until the step
           ends): no exchange to agree on */
        LAYER_ASSERT(nremote == 0);
        return;
    }
    int W = nout * OC, ww = wire_floats(t, W);
    float *buf = tables_scratch(t, (size_t)nremote * ww + (size_t)W + 1);
    float *row = buf + (size_t)nremote * ww; /* one decoded row */
    comm_exchange_fetch(t->x, t->keys, t->owners, nremote, ww, buf, serve_rows, t);
    for (int i = 0; i < nremote; i++) {
        const float *src = buf + (size_t)i * ww;
        if (t->bf16) {
            const uint16_t *h = (const uint16_t *)src;
            for (int c = 0; c < W; c++) row[c] = tables_from_bf16(h[c]);
            src = row;
        }
        for (int j = 0; j < nout; j++)
            layer_hash_store_put(s->rows[j], s->R, OC, (int)(t->keys[i] & 0xffffffff),
                                 src + (size_t)j * OC);
    }
}

static void local_forward(const group_state *s, const int32_t *rowid, const float *sc, int N,
                          float *const *out, const float *const *b) {
    int K = s->g.K, R = s->R, OC = s->g.OC;
    const float *bb[3] = {b ? b[0] : NULL, b && s->g.nout > 1 ? b[1] : NULL,
                          b && s->g.nout > 2 ? b[2] : NULL};
    if (s->g.nout == 3) {
        layer_hashqkv_forward(out[0], out[1], out[2], rowid, sc, s->rows[0], s->rows[1],
                              s->rows[2], bb[0], bb[1], bb[2], N, K, R, OC);
    } else {
        for (int j = 0; j < s->g.nout; j++)
            layer_hash_forward(out[j], rowid, sc, s->rows[j], bb[j], N, K, R, OC);
    }
}

/* db[j] += the sum of output j's gradients dout[j] (N,OC), as layer_hash_backward sums it. */
void tables_bias_backward(const group_state *s, const int32_t *rowid, const float *sc, int N,
                          int K, const float *const *dout, float *const *db) {
    for (int j = 0; db && j < s->g.nout; j++)
        if (db[j])
            layer_hash_backward(NULL, NULL, db[j], dout[j], rowid, sc, s->rows[j], N, K, s->R,
                                s->g.OC);
}

/* Backward over chunk subset rowid/sc (N,K) into drows, gs, db; with sq, new^2 - old^2 of
 * every drows entry written added to *sq (layer_hash_backward_parts). The bias gradients
 * first, each as layer_hash_backward sums them, then one call over the nout projections:
 * bitwise the layer_hash_backward or layer_hashqkv_backward call. */
void tables_local_backward(const group_state *s, const int32_t *rowid, const float *sc, int N,
                           int K, const float *const *dout, float *gs, float *const *db,
                           double *sq) {
    tables_bias_backward(s, rowid, sc, N, K, dout, db);
    layer_hash_backward_parts(s->g.nout, s->drows, gs, sq, dout, &N, 1, rowid, sc,
                              (const float *const *)s->rows, N, K, s->R, s->g.OC);
}

/* ---- gradient pushes overlapped with the rest of the backward ---- */

/* A gradient push's payload to one owner, for m keys of group g: the m keys (2 words each,
 * group << 32 | key, in increasing key order), then per output j and tile o the m keys'
 * slices of that tile (w = min(TILE, OC - o) floats each), one after another: m * (2 + W)
 * words. Tile by tile, the sender reads its gradient store and the owner adds into its own
 * in the order the stores lie, and each writes the payload in sequence. */
static float *push_slices(uint32_t *seg, int m, int j, int o, int OC) {
    return (float *)seg + 2 * (size_t)m + (size_t)m * ((size_t)j * OC + o);
}

/* first[p] = the keys before owner p's segment, from the keys per owner cnt (P + 1 entries:
 * first[P] is them all). */
static void push_segments(const int64_t *cnt, int P, int *first) {
    first[0] = 0;
    for (int p = 0; p < P; p++) first[p + 1] = first[p] + (int)cnt[p];
}

/* Packs the remote keys of s->blk (slot[q] >= 0: the key's index in the payload, its owner's
 * segment's first + its place there) into buf, zeroing their gradients; with acc, the others
 * (slot FOLD or FOLD_FIRST) are folded into the double sums and zeroed too. With sq (the
 * group keeps its squares' sum, tables_norm_kept), the squares of the slices that leave are
 * taken from *sq: the owner's add counts them. */
enum { SLOT_KEEP = -1, SLOT_FOLD_FIRST = -2, SLOT_FOLD = -3 };
/* keys: the gradient slices fetched ahead by the packing and the owner's add (a tile's rows
   of a chunk span 2^tau x 128 bytes, eight pages at tau = 8, and the hardware prefetcher
   starts again at every page) */
#define PACK_AHEAD 32

static void push_pack(group_state *s, int g, uint32_t *buf, const int32_t *slot, int n,
                      const int *first, double *sq) {
    _Alignas(64) double l[8] = {0}; /* with sq: the squares of the slices that leave */
    int nout = s->g.nout, OC = s->g.OC, W = nout * OC, tau = s->g.tau;
    for (int q = 0; q < n; q++) {
        if (slot[q] < 0) continue;
        int p = s->owner[(s->blk[q] >> tau) / LAYER_HASH_SHARD];
        int64_t gk = ((int64_t)g << 32) | s->blk[q];
        memcpy(buf + (size_t)first[p] * (2 + W) + 2 * (size_t)(slot[q] - first[p]), &gk, 8);
    }
    for (int j = 0; j < nout; j++)
        for (int o = 0; o < OC; o += TILE) {
            int w = OC - o < TILE ? OC - o : TILE;
            float *dt = s->drows[j] + layer_hash_store_at(s->R, 0, o);
            double *at = s->acc[j]; /* the fold's double sums (bitwise only) */
            for (int q = 0; q < n; q++) {
                if (slot[q] == SLOT_KEEP) continue;
                if (q + PACK_AHEAD < n) {
                    const float *ahead = dt + (size_t)s->blk[q + PACK_AHEAD] * TILE;
                    __builtin_prefetch(ahead, 1, 0);
                    __builtin_prefetch(ahead + 16, 1, 0);
                }
                size_t off = (size_t)s->blk[q] * TILE;
                if (slot[q] >= 0) {
                    int p = s->owner[(s->blk[q] >> tau) / LAYER_HASH_SHARD];
                    int m = first[p + 1] - first[p];
                    float *to = push_slices(buf + (size_t)first[p] * (2 + W), m, j, o, OC);
                    memcpy(to + (size_t)(slot[q] - first[p]) * w, dt + off, (size_t)w * sizeof(float));
                    if (sq) tables_sumsq_slice(l, dt + off);
                } else {
                    tables_acc_slice(at + layer_hash_store_at(s->R, 0, o) + off, dt + off, TILE,
                                     slot[q] == SLOT_FOLD_FIRST);
                }
                memset(dt + off, 0, TILE * sizeof(float));
            }
        }
    if (sq) *sq -= tables_lanes_sum(l);
}

/* When a block runs each projection's backward once, a fetched group's row gradients are
 * complete as soon as its backward returns: they leave for their owners at once (the counts
 * in a blocking all-to-all, the payload in a non-blocking one) while the layers below
 * compute; the block end waits for them. */
static void push_start(trainer_tables *t, int g) {
    group_state *s = &t->gs[g];
    int W = s->g.nout * s->g.OC, tau = s->g.tau, P = t->P;
    if (!s->push) s->push = comm_words_create(t->x);
    int64_t *cnt = layer_xcalloc((size_t)P, sizeof(int64_t));
    int *first = layer_xcalloc((size_t)P + 1, sizeof(int));
    /* keys in increasing order; the remote ones numbered per owner for the payload, the own
       ones kept in the block list */
    int n = 0, nremote = 0;
    for (int r = 0; r < s->R; r++)
        if (s->state[r] & ST_BLOCK) s->blk[n++] = r;
    int32_t *slot = s->fetched + s->nfetched; /* scratch past the fetched list: (n) */
    for (int q = 0; q < n; q++) {
        int k = s->blk[q] >> tau;
        if (!tables_holds(t, s, k)) cnt[s->owner[k / LAYER_HASH_SHARD]]++, nremote++;
    }
    push_segments(cnt, P, first);
    int *pos = layer_xmalloc((size_t)P * sizeof(int));
    memcpy(pos, first, (size_t)P * sizeof(int));
    for (int q = 0; q < n; q++) {
        int k = s->blk[q] >> tau;
        slot[q] = tables_holds(t, s, k) ? SLOT_KEEP : pos[s->owner[k / LAYER_HASH_SHARD]]++;
    }
    free(pos);
    size_t need = (size_t)nremote * (2 + W) + 1;
    uint32_t *buf = comm_words_buffer(s->push, need); /* where the owners read it in place */
    if (!buf && need > s->push_cap) { /* MPI reads it from the other ranks: huge pages */
        layer_unmap(s->push_buf, s->push_cap * sizeof(uint32_t));
        s->push_cap = need + need / 2;
        s->push_buf = layer_xmap(s->push_cap * sizeof(uint32_t));
    }
    if (!buf) buf = s->push_buf;
    push_pack(s, g, buf, slot, n, first, tables_kept_sq(t, s));
    int kept = 0;
    for (int q = 0; q < n; q++) {
        if (slot[q] == SLOT_KEEP) s->blk[kept++] = s->blk[q];
        else s->state[s->blk[q]] &= (uint8_t)~ST_BLOCK;
    }
    s->nblk = kept;
    for (int p = 0; p < P; p++) cnt[p] *= 2 + W;
    comm_words_start(s->push, buf, cnt);
    free(first);
    free(cnt);
}

/* Adds one source's payload segment of m keys (push_slices) into the owner's gradients:
 * bitwise into the double sums (whose order does not matter); fast into drows, so in the
 * order the sources are taken (rank order). */
static void push_add(trainer_tables *t, group_state *s, int g, const uint32_t *seg, int m) {
    int nout = s->g.nout, OC = s->g.OC;
    double *sq = tables_kept_sq(t, s);
    _Alignas(64) double l[8] = {0}; /* with sq: new^2 - old^2 of what is added */
    int32_t *keys = s->fetched + s->nfetched; /* scratch past the fetched list: (m) */
    for (int i = 0; i < m; i++) {
        int64_t gk;
        memcpy(&gk, seg + 2 * (size_t)i, 8);
        LAYER_ASSERT((int)(gk >> 32) == g && "gradient push: ranks out of step");
        keys[i] = (int32_t)(gk & 0xffffffff);
        LAYER_ASSERT(s->owner[(keys[i] >> s->g.tau) / LAYER_HASH_SHARD] == t->me);
    }
    for (int j = 0; j < nout; j++)
        for (int o = 0; o < OC; o += TILE) {
            int w = OC - o < TILE ? OC - o : TILE;
            const float *in = push_slices((uint32_t *)(uintptr_t)seg, m, j, o, OC);
            if (t->fast) {
                float *dt = s->drows[j] + layer_hash_store_at(s->R, 0, o);
                for (int i = 0; i < m; i++) {
                    if (i + PACK_AHEAD < m) {
                        const float *ahead = dt + (size_t)keys[i + PACK_AHEAD] * TILE;
                        __builtin_prefetch(ahead, 1, 0);
                        __builtin_prefetch(ahead + 16, 1, 0);
                    }
                    float *d = dt + (size_t)keys[i] * TILE;
                    const float *x = in + (size_t)i * w;
                    if (!sq)
                        for (int c = 0; c < w; c++) d[c] += x[c];
                    else if (w == TILE)
                        for (int c = 0; c < TILE; c += 8)
                            for (int v = 0; v < 8; v++) {
                                float a = d[c + v], b = a + x[c + v];
                                l[v] += (double)b * b - (double)a * a;
                                d[c + v] = b;
                            }
                    else
                        for (int c = 0; c < w; c++) {
                            float a = d[c], b = a + x[c];
                            l[c & 7] += (double)b * b - (double)a * a;
                            d[c] = b;
                        }
                }
            } else {
                double *at = s->acc[j] + layer_hash_store_at(s->R, 0, o);
                for (int i = 0; i < m; i++)
                    tables_acc_slice(at + (size_t)keys[i] * TILE, in + (size_t)i * w, w,
                                     !(s->state[keys[i]] & ST_ACC));
            }
        }
    uint8_t mark = t->fast ? ST_TOUCHED : ST_TOUCHED | ST_ACC;
    for (int i = 0; i < m; i++) s->state[keys[i]] |= mark;
    if (sq) *sq += tables_lanes_sum(l);
}

/* Waits for a push of group g's rows on w and adds them, source after source in rank order. */
static void take_pushes(trainer_tables *t, comm_words *w, int g) {
    group_state *s = &t->gs[g];
    int per = 2 + s->g.nout * s->g.OC;
    const int *rc;
    comm_words_wait(w, &rc);
    for (int p = 0; p < t->P; p++)
        if (rc[p]) push_add(t, s, g, comm_words_from(w, p), rc[p] / per);
}

static void push_finish(trainer_tables *t, int g) { take_pushes(t, t->gs[g].push, g); }

/* Gives every gradient push in flight a chance to move (MPI_Test): Open MPI progresses a
 * non-blocking all-to-all only inside MPI calls, so without this a push started by one
 * layer's backward would wait for the block end before its first byte left. Called at
 * every hashed projection call, that is between the layers of the backward. */
static void progress_pushes(trainer_tables *t) {
    for (int g = 0; g < t->n; g++)
        if (t->gs[g].push_active) comm_words_test(t->gs[g].push);
}

/* ---- the projection ---- */

void trainer_tables_forward(trainer_tables *t, int g, const int32_t *idx, const float *sc, int N,
                            float *const *out, const float *const *b, trainer_tables_act *a,
                            trainer_arena *ar) {
    group_state *s = &t->gs[g];
    progress_pushes(t);
    a->N = N;
    a->s = sc;
    a->rowid = trainer_arena_ints(ar, (size_t)N * s->g.K + 1);
    make_keys(t, g, idx, N, a->rowid);
    for (int j = 0; j < s->g.nout; j++)
        a->rows[j] = (layer_hash_rows){s->rows[j], s->drows[j], s->R};
    if (s->strategy == TRAINER_STRATEGY_OWNER && t->P > 1) {
        tables_owner_forward(t, g, a->rowid, sc, N, out, b);
        return;
    }
    resolve(t, g, a->rowid, N);
    local_forward(s, a->rowid, sc, N, out, b);
    if (transient(t, s)) {
        tables_release(t, s, RELEASE_ROWS);
        tables_trim(t);
    }
}

void trainer_tables_backward(trainer_tables *t, int g, const trainer_tables_act *a,
                             const float *const *dout, float *gs, float *const *db) {
    group_state *s = &t->gs[g];
    tables_populate_held(t, s);
    progress_pushes(t);
    if (s->strategy == TRAINER_STRATEGY_OWNER && t->P > 1) {
        tables_owner_backward(t, g, a, dout, gs, db);
        return;
    }
    if (transient(t, s)) resolve(t, g, a->rowid, a->N); /* the rows again, for this call */
    /* under fast it sums the squares of what it writes (tables_norm_kept; what leaves in a
       push is taken out again when it is packed) */
    tables_local_backward(s, a->rowid, a->s, a->N, s->g.K, dout, gs, db, tables_kept_sq(t, s));
    if (transient(t, s)) {
        tables_release(t, s, RELEASE_ROWS);
        tables_trim(t);
    }
    if (s->strategy == TRAINER_STRATEGY_FETCH && t->P > 1 && t->planned && t->run.batched) {
        LAYER_ASSERT(!s->push_active && "one backward per block expected");
        push_start(t, g);
        s->push_active = 1;
        /* packed and zeroed: a group over the budget lets the pages go; a kept group keeps
         * them for its next block, as at a block end (releasing and faulting them in again
         * for every block cost a fifth of a small decoder's step in TLB flushes) */
        if (transient(t, s)) tables_release(t, s, RELEASE_GRADS);
    }
}

/* ---- block ends ---- */

void trainer_tables_block_end(trainer_tables *t, int keep_owned) {
    for (int g = 0; g < t->n; g++) {
        group_state *s = &t->gs[g];
        if (s->strategy == TRAINER_STRATEGY_OWNER && t->P > 1) continue; /* folded already */
        int pushed = s->push_active; /* the same on every rank: the model decides */
        if (pushed) {
            push_finish(t, g);
            s->push_active = 0;
        }
        int W = s->g.nout * s->g.OC, tau = s->g.tau, nremote = 0;
        /* the block's keys in increasing order (so every tile streams in sequence); per key
           what happens to its gradient: the remote ones are numbered for the push */
        int n = 0;
        for (int r = 0; r < s->R; r++)
            if (s->state[r] & ST_BLOCK) s->blk[n++] = r;
        LAYER_ASSERT(n == s->nblk);
        int32_t *slot = s->fetched + s->nfetched; /* scratch past the fetched list: (n) */
        int moved = 0;
        int64_t *cnt = layer_xcalloc((size_t)t->P, sizeof(int64_t));
        for (int q = 0; q < n; q++) {
            int k = s->blk[q] >> tau;
            if (!tables_holds(t, s, k)) cnt[s->owner[k / LAYER_HASH_SHARD]]++, nremote++;
        }
        int *first = layer_xcalloc((size_t)t->P + 1, sizeof(int));
        push_segments(cnt, t->P, first);
        int *pos = layer_xmalloc((size_t)t->P * sizeof(int));
        memcpy(pos, first, (size_t)t->P * sizeof(int));
        for (int q = 0; q < n; q++) {
            int key = s->blk[q], k = key >> tau, held = tables_holds(t, s, k);
            if (!held)
                slot[q] = pos[s->owner[k / LAYER_HASH_SHARD]]++;
            else if (keep_owned || t->fast) /* fast: every block adds into drows */
                slot[q] = SLOT_KEEP;
            else
                slot[q] = (s->state[key] & ST_ACC) ? SLOT_FOLD : SLOT_FOLD_FIRST;
            moved += slot[q] != SLOT_KEEP;
            s->state[key] = (uint8_t)((s->state[key] & ~ST_BLOCK) | (held ? ST_TOUCHED : 0) |
                                      (slot[q] <= SLOT_FOLD_FIRST ? ST_ACC : 0));
        }
        free(pos);
        size_t per = 2 + (size_t)W;
        uint32_t *buf = comm_words_buffer(t->pushes, (size_t)nremote * per);
        if (!buf) buf = (uint32_t *)tables_scratch(t, (size_t)nremote * per + 1);
        if (moved) push_pack(s, g, buf, slot, n, first, tables_kept_sq(t, s));
        free(first);
        s->nblk = 0;
        if (!pushed) { /* the owners add each source's rows in source order, then key order */
            for (int p = 0; p < t->P; p++) cnt[p] *= (int64_t)per;
            comm_words_start(t->pushes, buf, cnt);
            take_pushes(t, t->pushes, g);
        } else {
            LAYER_ASSERT(nremote == 0);
        }
        free(cnt);
        /* rows over the budget go with the block that fetched them */
        if (transient(t, s)) {
            tables_release(t, s, RELEASE_ROWS | RELEASE_GRADS);
            tables_trim(t);
        }
    }
}

/* ---- replicated groups: one sum over ranks ---- */

/* fast: the float gradients (nout, store) and touch marks (R) summed over ranks in one float
 * all-reduce, whose order is fixed for a given rank count; the sums replace drows. */
static void reduce_floats(trainer_tables *t, group_state *s, size_t per, size_t n) {
    int nout = s->g.nout, OC = s->g.OC;
    float *sum = layer_xcalloc(n, sizeof(float)), *mark = sum + (size_t)nout * per;
    for (int r = 0; r < s->R; r++) {
        if (!(s->state[r] & ST_TOUCHED)) continue;
        mark[r] = 1.0f;
        for (int j = 0; j < nout; j++)
            for (int o = 0; o < OC; o += TILE) {
                size_t off = layer_hash_store_at(s->R, r, o);
                memcpy(sum + (size_t)j * per + off, s->drows[j] + off, TILE * sizeof(float));
            }
    }
    double t0 = comm_time();
    comm_sum_floats(t->comm, sum, n);
    comm_exchange_count(t->x, (int64_t)(2.0 * (t->P - 1) / t->P * (double)n * sizeof(float)),
                        comm_time() - t0);
    for (int r = 0; r < s->R; r++) {
        if (mark[r] == 0.0f) continue;
        for (int j = 0; j < nout; j++)
            for (int o = 0; o < OC; o += TILE) {
                size_t off = layer_hash_store_at(s->R, r, o);
                memcpy(s->drows[j] + off, sum + (size_t)j * per + off, TILE * sizeof(float));
            }
        s->state[r] |= ST_TOUCHED;
    }
    free(sum);
}

void trainer_tables_reduce(trainer_tables *t) {
    for (int g = 0; g < t->n; g++) {
        group_state *s = &t->gs[g];
        if (s->strategy != TRAINER_STRATEGY_REPLICATE || t->P == 1) continue;
        int nout = s->g.nout, OC = s->g.OC;
        size_t per = layer_hash_store_floats(s->R, OC), n = (size_t)nout * per + (size_t)s->R;
        if (t->fast) {
            reduce_floats(t, s, per, n);
            continue;
        }
        /* (nout, store) sums in the stores' layout, then (R) touch marks */
        double *sum = layer_xcalloc(n, sizeof(double)), *mark = sum + (size_t)nout * per;
        for (int r = 0; r < s->R; r++) {
            if (!(s->state[r] & ST_TOUCHED)) continue;
            mark[r] = 1.0;
            for (int j = 0; j < nout; j++)
                for (int o = 0; o < OC; o += TILE) {
                    size_t off = layer_hash_store_at(s->R, r, o);
                    for (int c = 0; c < TILE; c++)
                        sum[(size_t)j * per + off + c] =
                            (s->state[r] & ST_ACC ? s->acc[j][off + c] : 0.0) + s->drows[j][off + c];
                }
        }
        double t0 = comm_time();
        comm_sum_doubles(t->comm, sum, n); /* exact sums of float terms: any order */
        comm_exchange_count(t->x, (int64_t)(2.0 * (t->P - 1) / t->P * (double)n * sizeof(double)),
                            comm_time() - t0);
        for (int r = 0; r < s->R; r++) {
            if (mark[r] == 0.0) continue;
            for (int j = 0; j < nout; j++)
                for (int o = 0; o < OC; o += TILE) {
                    size_t off = layer_hash_store_at(s->R, r, o);
                    memcpy(s->acc[j] + off, sum + (size_t)j * per + off, TILE * sizeof(double));
                    memset(s->drows[j] + off, 0, TILE * sizeof(float));
                }
            s->state[r] |= ST_TOUCHED | ST_ACC;
        }
        free(sum);
    }
}

void trainer_tables_set_phase(trainer_tables *t, trainer_tables_phase phase) { t->phase = phase; }
