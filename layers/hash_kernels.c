/* Cache-blocked forward and backward of the hashed projection, and the shared-hash Q/K/V variant. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "layers/hash.h"

#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* Why the blocking: a local table set at tau = 8, OC = 512 is K * 512 KiB (32 MiB at K = 64),
 * far beyond L2, and a token touches one row of every table. Visiting tokens in their own
 * order would fetch a row from memory for every (token, chunk).
 *
 * Forward: the chunks are cut into groups whose rows lie in a span of row ids that, in one
 * tile of the store, fits a share of L2 (a region: 256 KiB, 8 tables at tau = 8). Per tile and
 * group, every token sums its group's rows from the region in registers and touches its
 * partial output once; meanwhile the next region, contiguous in the store, is prefetched a
 * few lines per token, so each table byte comes from memory once per call, in sequence and
 * under the arithmetic.
 *
 * Backward: the (token, chunk) entries are counting-sorted by row id. The token gradients are
 * copied once into a layout by pass (HK_BWD_TILES tiles), so one pass's slice is contiguous
 * and stays in L2. Per pass, the hit rows are visited in increasing order: each row's slice
 * sits in registers while one pass over its hits sums s * g and forms every hit's partial
 * <g, row> for gs, and the sum is added to the row's gradient slice once. Rows and gradient
 * rows are thus read (and written) once, in sequence, each tile a stream of its own. */

/* Blocking parameters, tuned on Zen 4 (1 MiB L2) at N = 2048, OC = 512; -D overrides them. */
#define HK_T LAYER_HASH_TILE      /* columns per tile: 2 vectors */
#ifndef HK_FWD_REGION
#define HK_FWD_REGION (256 * 1024) /* bytes of one tile of a chunk group's rows */
#endif
#ifndef HK_FWD_GMAX
#define HK_FWD_GMAX 16            /* most chunks in a group */
#endif
#ifndef HK_BWD_TILES
#define HK_BWD_TILES 2            /* tiles per backward pass */
#endif
#ifndef HK_BWD_AHEAD
#define HK_BWD_AHEAD 16           /* hit rows ahead whose slices the backward prefetches */
#endif
#ifndef HK_BWD_GAHEAD
#define HK_BWD_GAHEAD 8           /* hits ahead whose token gradients it prefetches */
#endif
#define HK_BW (HK_BWD_TILES * HK_T) /* columns per backward pass */
#define HK_BNV (HK_BW / 16)
_Static_assert(HK_T == 32, "the kernels are written for tiles of two vectors");
_Static_assert(HK_BWD_TILES >= 1 && HK_BWD_TILES <= 4, "backward pass of 1 to 4 tiles");

static void hk_check(const int32_t *rowid, int N, int K, int R, int OC) {
    LAYER_ASSERT(N >= 0 && K > 0 && R > 0 && OC > 0);
    /* One pass over the ids here so the inner loops can trust them. */
    size_t n = (size_t)N * K;
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad |= (rowid[i] < 0) | (rowid[i] >= R);
    LAYER_ASSERT(!bad);
}

/* Scratch buffers, one per purpose, kept between calls and grown when too small: the kernels
 * need MiB of scratch at training shapes, and fresh pages for them on every call cost as
 * much as a third of the forward. Per thread, so concurrent callers do not share them;
 * layer_hash_workspace_free() returns them. */
enum {
    HK_WS_LO, HK_WS_HI, HK_WS_GK0, HK_WS_YP, HK_WS_START, HK_WS_FILL, HK_WS_TOK, HK_WS_ENT,
    HK_WS_HSV, HK_WS_HIT, HK_WS_GSH, HK_WS_GBLK, HK_WS_DB, HK_WS_FENT,
    HK_WS_COUNT
};
static _Thread_local struct { void *base; size_t cap; } hk_ws_buf[HK_WS_COUNT];

/* A 64-byte aligned buffer of at least `bytes` for purpose id; valid until the next call
 * with the same id. */
static void *hk_ws(int id, size_t bytes) {
    if (hk_ws_buf[id].cap < bytes || !hk_ws_buf[id].base) {
        free(hk_ws_buf[id].base);
        /* grow by half again, so slowly rising sizes do not reallocate every call */
        size_t cap = bytes + bytes / 2 + 64;
        hk_ws_buf[id].base = layer_xmalloc(cap + 64);
        hk_ws_buf[id].cap = cap;
    }
    char *p = hk_ws_buf[id].base;
    return p + (64 - (uintptr_t)p % 64) % 64;
}

void layer_hash_workspace_free(void) {
    for (int i = 0; i < HK_WS_COUNT; i++) {
        free(hk_ws_buf[i].base);
        hk_ws_buf[i].base = NULL;
        hk_ws_buf[i].cap = 0;
    }
}

/* Forward schedule: chunks [gk0[g], gk0[g+1]) form group g, its rows in [lo[g], hi[g]]. */
typedef struct hk_ent { int32_t row; float s; } hk_ent; /* one (token, chunk) of a group */
typedef struct hk_groups {
    int n;
    int *gk0;        /* (n+1) */
    int32_t *lo, *hi; /* (n) */
} hk_groups;

/* Greedy, at most HK_FWD_GMAX chunks a group and never across a shard boundary: a chunk
 * joins while the group's span of row ids stays within cap rows (so its region fits L2), or
 * whatever its span once the span is past cap (rows scattered, as in a store filled in order
 * of first use: nothing to stream). */
static void hk_groups_build(hk_groups *gr, const int32_t *rowid, int N, int K, int R, int cap) {
    int32_t *lo = hk_ws(HK_WS_LO, (size_t)K * sizeof(int32_t));
    int32_t *hi = hk_ws(HK_WS_HI, (size_t)K * sizeof(int32_t));
    gr->gk0 = hk_ws(HK_WS_GK0, (size_t)(K + 1) * sizeof(int));
    for (int k = 0; k < K; k++) lo[k] = R, hi[k] = -1;
    for (int n = 0; n < N; n++) { /* in token order, so rowid is read in sequence */
        const int32_t *rn = rowid + (size_t)n * K;
        for (int k = 0; k < K; k++) {
            lo[k] = rn[k] < lo[k] ? rn[k] : lo[k];
            hi[k] = rn[k] > hi[k] ? rn[k] : hi[k];
        }
    }
    /* the groups' spans overwrite the chunks' in place: group g <= its first chunk */
    int g = 0, k = 0;
    while (k < K) {
        int k0 = k;
        int32_t l = lo[k], h = hi[k];
        for (k++; k < K && k - k0 < HK_FWD_GMAX && k % LAYER_HASH_SHARD != 0; k++) {
            int32_t l2 = lo[k] < l ? lo[k] : l, h2 = hi[k] > h ? hi[k] : h;
            if (h - l + 1 <= cap && h2 - l2 + 1 > cap) break;
            l = l2, h = h2;
        }
        gr->gk0[g] = k0;
        lo[g] = l, hi[g] = h;
        g++;
    }
    gr->gk0[g] = K;
    gr->n = g;
    gr->lo = lo;
    gr->hi = hi;
}

/* Entries (token, chunk) grouped by row id: the hits of row r are [start[r], start[r+1]). */
typedef struct hk_sorted {
    int32_t *start; /* (R+1) */
    int32_t *tok;   /* (N*K) token of each hit */
    int32_t *ent;   /* (N*K) flat entry n*K + k of each hit */
    float *sv;      /* (N*K) score of each hit */
    int32_t *hit;   /* (nhit) the rows with at least one hit, increasing */
    int nhit;
    size_t nh;      /* hits: N*K */
} hk_sorted;

static void hk_sort(hk_sorted *st, const int32_t *rowid, const float *s, int N, int K, int R) {
    size_t n = (size_t)N * K;
    st->start = hk_ws(HK_WS_START, ((size_t)R + 1) * sizeof(int32_t));
    memset(st->start, 0, ((size_t)R + 1) * sizeof(int32_t));
    st->tok = hk_ws(HK_WS_TOK, (n + HK_BWD_GAHEAD) * sizeof(int32_t));
    memset(st->tok + n, 0, HK_BWD_GAHEAD * sizeof(int32_t)); /* read ahead, never used */
    st->ent = hk_ws(HK_WS_ENT, n * sizeof(int32_t));
    st->sv = hk_ws(HK_WS_HSV, n * sizeof(float));
    for (size_t e = 0; e < n; e++) st->start[rowid[e] + 1]++;
    int nhit = 0;
    for (int r = 0; r < R; r++) {
        nhit += st->start[r + 1] != 0;
        st->start[r + 1] += st->start[r];
    }
    st->hit = hk_ws(HK_WS_HIT, (size_t)nhit * sizeof(int32_t));
    st->nhit = nhit;
    st->nh = n;
    for (int r = 0, m = 0; r < R; r++)
        if (st->start[r + 1] != st->start[r]) st->hit[m++] = r;
    int32_t *fill = hk_ws(HK_WS_FILL, (size_t)R * sizeof(int32_t)); /* (R) next free slot per row */
    memcpy(fill, st->start, (size_t)R * sizeof(int32_t));
    /* Entries in increasing (n, k) order within a row, so sums over a row's tokens run in a
     * fixed order whatever the blocking. */
    for (int t = 0; t < N; t++)
        for (int k = 0; k < K; k++) {
            size_t e = (size_t)t * K + k;
            int32_t p = fill[rowid[e]]++;
            st->tok[p] = t;
            st->ent[p] = (int32_t)e;
            st->sv[p] = s[e];
        }
}

/* A call's output gradients (N, OC) in parts: tokens [0, n[0]) at p[0], the next n[1] at
 * p[1], ... A row's gradient takes each part's sum as a separate addition, so that the
 * call is bitwise the calls over each part one after another: at (and past) a part's first
 * token among a row's hits, the sum so far is added and the next part's begins. */
typedef struct hk_dy {
    const float *const *p;
    const int *n;
    int parts;
} hk_dy;

/* The first token of the part after token t's (INT32_MAX in the last part). */
static inline int32_t hk_next_bound(const hk_dy *d, int32_t t) {
    int32_t end = 0;
    for (int i = 0; i < d->parts - 1; i++)
        if ((end += d->n[i]) > t) return end;
    return INT32_MAX;
}

/* Lane mask of the 16 columns from o of OC columns. */
static inline uint32_t hk_lanes(int o, int OC) {
    int l = OC - o;
    return l >= 16 ? 0xFFFFu : l <= 0 ? 0u : 0xFFFFu >> (16 - l);
}

#ifdef __AVX512F__

#define HK_INLINE static inline __attribute__((always_inline))

/* One (tile, chunk group) of the forward: tile (R, HK_T) is the store's tile of columns
 * [c0, c0+HK_T), ent (N, G) the group's entries, token n's outputs at y + n*ldy. A shard's partial sum starts from zero in
 * its first group (`open`) and is carried between its groups in yp (N, HK_T); its last group
 * (`close`) adds it to the running sum, which is b + the first shard's partial (the partial
 * alone without b) at the first shard (`first`) and is carried between shards in yr
 * (N, HK_T); the last shard (`final`) writes y. Spread over the tokens, lines [0, pfl) from pf are prefetched: the next region. */
HK_INLINE void hk_fwd_sweep(float *y, float *yp, float *yr, const float *tile, const hk_ent *ent,
                            int G, const float *b, int N, int OC, int ldy, int c0, int open,
                            int close, int first, int final, const char *pf, size_t pfl) {
    const __mmask16 m0 = (__mmask16)hk_lanes(c0, OC), m1 = (__mmask16)hk_lanes(c0 + 16, OC);
    const __m512 seed0 = b ? _mm512_maskz_loadu_ps(m0, b + c0) : _mm512_setzero_ps();
    const __m512 seed1 = b ? _mm512_maskz_loadu_ps(m1, b + c0 + 16) : _mm512_setzero_ps();
    const size_t per = N ? (pfl + (size_t)N - 1) / (size_t)N : 0;
    size_t done = 0;
    for (int n = 0; n < N; n++) {
        float *ypn = yp + (size_t)n * HK_T, *yrn = yr + (size_t)n * HK_T;
        __m512 a0 = open ? _mm512_setzero_ps() : _mm512_load_ps(ypn);
        __m512 a1 = open ? _mm512_setzero_ps() : _mm512_load_ps(ypn + 16);
        for (size_t q = 0; q < per && done < pfl; q++, done++) _mm_prefetch(pf + done * 64, _MM_HINT_T0);
        const hk_ent *en = ent + (size_t)n * G;
        for (int k = 0; k < G; k++) {
            __m512 s1 = _mm512_set1_ps(en[k].s);
            const float *pr = tile + (size_t)en[k].row * HK_T;
            a0 = _mm512_fmadd_ps(s1, _mm512_loadu_ps(pr), a0);
            a1 = _mm512_fmadd_ps(s1, _mm512_loadu_ps(pr + 16), a1);
        }
        if (!close) {
            _mm512_store_ps(ypn, a0);
            _mm512_store_ps(ypn + 16, a1);
            continue;
        }
        if (!first) {
            a0 = _mm512_add_ps(_mm512_load_ps(yrn), a0);
            a1 = _mm512_add_ps(_mm512_load_ps(yrn + 16), a1);
        } else if (b) { /* without a bias the first shard's partial is the running sum */
            a0 = _mm512_add_ps(seed0, a0);
            a1 = _mm512_add_ps(seed1, a1);
        }
        if (final) {
            float *yn = y + (size_t)n * ldy + c0;
            _mm512_mask_storeu_ps(yn, m0, a0);
            _mm512_mask_storeu_ps(yn + 16, m1, a1);
        } else {
            _mm512_store_ps(yrn, a0);
            _mm512_store_ps(yrn + 16, a1);
        }
    }
}

static void hk_fwd(float *y, int ldy, const int32_t *rowid, const float *s, const float *rows,
                   const float *b, int N, int K, int R, int OC, int prefetch) {
    const int ncb = (OC + HK_T - 1) / HK_T, cap = HK_FWD_REGION / (HK_T * (int)sizeof(float));
    hk_groups gr;
    hk_groups_build(&gr, rowid, N, K, R, cap);
    float *yp = hk_ws(HK_WS_YP, 2 * (size_t)N * HK_T * sizeof(float)); /* (2, N, HK_T) */
    float *yr = yp + (size_t)N * HK_T;
    /* ent: group g's entries (n, j) at N*gk0[g] + n*G + j, so that every sweep reads its
     * entries as one sequence rather than G of every K ids and scores */
    hk_ent *ent = hk_ws(HK_WS_FENT, (size_t)N * K * sizeof(hk_ent));
    for (int g = 0; g < gr.n; g++) {
        int k0 = gr.gk0[g], G = gr.gk0[g + 1] - k0;
        hk_ent *eg = ent + (size_t)N * k0;
        for (int n = 0; n < N; n++)
            for (int j = 0; j < G; j++) {
                size_t e = (size_t)n * K + k0 + j;
                eg[(size_t)n * G + j] = (hk_ent){rowid[e], s[e]};
            }
    }
    for (int c = 0; c < ncb; c++) {
        const float *tile = rows + (size_t)c * R * HK_T;
        for (int g = 0; g < gr.n; g++) {
            /* the next region, when the rows are in one (else there is nothing to stream) */
            int nc = g + 1 < gr.n ? c : c + 1, ng = g + 1 < gr.n ? g + 1 : 0;
            const char *pf = NULL;
            size_t pfl = 0;
            if (prefetch && nc < ncb && gr.hi[ng] - gr.lo[ng] + 1 <= cap) {
                pf = (const char *)(rows + ((size_t)nc * R + (size_t)gr.lo[ng]) * HK_T);
                pfl = (size_t)(gr.hi[ng] - gr.lo[ng] + 1) * HK_T * sizeof(float) / 64;
            }
            int k0 = gr.gk0[g], k1 = gr.gk0[g + 1];
            int open = k0 % LAYER_HASH_SHARD == 0, close = k1 == K || k1 % LAYER_HASH_SHARD == 0;
            hk_fwd_sweep(y, yp, yr, tile, ent + (size_t)N * k0, k1 - k0, b, N, OC, ldy, c * HK_T,
                         open, close, k0 < LAYER_HASH_SHARD, k1 == K, pf, pfl);
        }
    }
}

/* The sums of 16 vectors v[0..16) as one vector (lane i = sum of v[i]): a transposing tree of
 * 15 shuffle-and-add steps, against 4 per vector for one horizontal sum at a time. */
HK_INLINE __m512 hk_sum16(const float *v) {
    __m512 x[8], y[4], z[2];
    for (int i = 0; i < 8; i++) {
        __m512 a = _mm512_load_ps(v + 32 * i), b = _mm512_load_ps(v + 32 * i + 16);
        /* per 128-bit lane: a0+a2, b0+b2, a1+a3, b1+b3 */
        x[i] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    }
    for (int i = 0; i < 4; i++) /* per lane: the lane's partial of v[4i], v[4i+1], v[4i+2], v[4i+3] */
        y[i] = _mm512_add_ps(_mm512_shuffle_ps(x[2 * i], x[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(x[2 * i], x[2 * i + 1], 0xEE));
    for (int i = 0; i < 2; i++) /* lanes 0,1 from y[2i] and 2,3 from y[2i+1], pairs of lanes added */
        z[i] = _mm512_add_ps(_mm512_shuffle_f32x4(y[2 * i], y[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(y[2 * i], y[2 * i + 1], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_f32x4(z[0], z[1], 0x88),
                         _mm512_shuffle_f32x4(z[0], z[1], 0xDD));
}

/* new^2 - old^2 of the 16 entries of a gradient vector, in double, added to *q (squares of
 * floats are exact in double; each FMA rounds once). */
HK_INLINE __m512d hk_sq_delta(__m512d q, __m512 old, __m512 upd) {
    __m512d nl = _mm512_cvtps_pd(_mm512_castps512_ps256(upd));
    __m512d nh =
        _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(upd), 1)));
    __m512d ol = _mm512_cvtps_pd(_mm512_castps512_ps256(old));
    __m512d oh =
        _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(old), 1)));
    q = _mm512_fmadd_pd(nl, nl, q);
    q = _mm512_fnmadd_pd(ol, ol, q);
    q = _mm512_fmadd_pd(nh, nh, q);
    return _mm512_fnmadd_pd(oh, oh, q);
}

/* One pass of the backward: vector j of a row's slice is at tile[j/2] + r*HK_T + 16*(j%2) in
 * rows (dtile in drows), gb (N, HK_BW) holds the token gradients' same columns (zero past OC).
 * Per hit row, one pass over its hits sums s * g in registers and forms each hit's partial
 * <g, row> in gsh (set when `first`, else added); the sum is added to the row's gradient, and
 * with sq, new^2 - old^2 of every entry so written to *sq. */
HK_INLINE void hk_bwd_sweep(const float *const *tile, float *const *dtile, float *gsh, double *sq,
                            const float *gb, const hk_sorted *st, const hk_dy *dy, int OC, int c0,
                            const int nv, int first) {
    __m512d q = _mm512_setzero_pd();
    /* dv (16, 16): the partial-dot vectors of the last 16 hits, summed together */
    _Alignas(64) float dv[16 * 16];
    __mmask16 mk[HK_BNV];
#pragma GCC unroll 16
    for (int j = 0; j < nv; j++) mk[j] = (__mmask16)hk_lanes(c0 + 16 * j, OC);
    for (int u = 0; u < st->nhit; u++) {
        int32_t r = st->hit[u], h0 = st->start[r], h1 = st->start[r + 1];
        if (u + HK_BWD_AHEAD < st->nhit) { /* the slices a few rows on: two lines per tile */
            int32_t ra = st->hit[u + HK_BWD_AHEAD];
#pragma GCC unroll 4
            for (int t = 0; t < nv / 2; t++) {
                const char *tp = (const char *)(tile[t] + (size_t)ra * HK_T);
                if (gsh) _mm_prefetch(tp, _MM_HINT_T0), _mm_prefetch(tp + 64, _MM_HINT_T0);
                if (dtile[0]) {
                    const char *dp = (const char *)(dtile[t] + (size_t)ra * HK_T);
                    _mm_prefetch(dp, _MM_HINT_T0), _mm_prefetch(dp + 64, _MM_HINT_T0);
                }
            }
        }
        __m512 rv[HK_BNV], acc[HK_BNV];
#pragma GCC unroll 16
        for (int j = 0; j < nv; j++) {
            rv[j] = gsh ? _mm512_maskz_loadu_ps(mk[j], tile[j / 2] + (size_t)r * HK_T + 16 * (j % 2))
                        : _mm512_setzero_ps();
            acc[j] = _mm512_setzero_ps();
        }
        int32_t next = hk_next_bound(dy, st->tok[h0]);
        for (int32_t h = h0; h < h1; h++) {
            if (st->tok[h] >= next) { /* a new part: the last part's sum goes in alone */
                if (dtile[0]) {
#pragma GCC unroll 16
                    for (int j = 0; j < nv; j++) {
                        float *dp = dtile[j / 2] + (size_t)r * HK_T + 16 * (j % 2);
                        __m512 old = _mm512_loadu_ps(dp), upd = _mm512_add_ps(old, acc[j]);
                        _mm512_storeu_ps(dp, upd);
                        if (sq) q = hk_sq_delta(q, old, upd);
                    }
                }
#pragma GCC unroll 16
                for (int j = 0; j < nv; j++) acc[j] = _mm512_setzero_ps();
                next = hk_next_bound(dy, st->tok[h]);
            }
            /* The token gradients are in L2, but each row's hit loop ends in a branch the
             * predictor misses, and the loads after it would start from nothing: fetch them
             * into L1 some hits ahead, across rows (tok has slack past its end). */
            const char *ga = (const char *)(gb + (size_t)st->tok[h + HK_BWD_GAHEAD] * HK_BW);
#pragma GCC unroll 16
            for (int j = 0; j < nv; j++) _mm_prefetch(ga + 64 * j, _MM_HINT_T0);
            const float *g = gb + (size_t)st->tok[h] * HK_BW;
            __m512 s1 = _mm512_set1_ps(st->sv[h]);
            __m512 d0 = _mm512_setzero_ps(), d1 = _mm512_setzero_ps();
#pragma GCC unroll 16
            for (int j = 0; j < nv; j++) {
                __m512 gv = _mm512_load_ps(g + 16 * j);
                acc[j] = _mm512_fmadd_ps(s1, gv, acc[j]);
                if (j & 1)
                    d1 = _mm512_fmadd_ps(gv, rv[j], d1);
                else
                    d0 = _mm512_fmadd_ps(gv, rv[j], d0);
            }
            if (gsh) {
                int32_t i = h & 15;
                _mm512_store_ps(dv + 16 * i, _mm512_add_ps(d0, d1));
                if (i == 15) {
                    __m512 d = hk_sum16(dv);
                    float *gp = gsh + h - 15;
                    _mm512_store_ps(gp, first ? d : _mm512_add_ps(_mm512_load_ps(gp), d));
                }
            }
        }
        if (dtile[0]) {
#pragma GCC unroll 16
            for (int j = 0; j < nv; j++) {
                float *dp = dtile[j / 2] + (size_t)r * HK_T + 16 * (j % 2);
                __m512 old = _mm512_loadu_ps(dp), upd = _mm512_add_ps(old, acc[j]);
                _mm512_storeu_ps(dp, upd);
                if (sq) q = hk_sq_delta(q, old, upd);
            }
        }
    }
    if (sq) *sq += _mm512_reduce_add_pd(q);
    if (gsh && st->nh % 16) { /* the last, incomplete batch: the same tree as the full ones,
                                  so a hit's sum does not depend on its place in the order */
        size_t h0 = st->nh - st->nh % 16;
        for (size_t i = st->nh % 16; i < 16; i++) _mm512_store_ps(dv + 16 * i, _mm512_setzero_ps());
        _Alignas(64) float d[16];
        _mm512_store_ps(d, hk_sum16(dv));
        for (size_t h = h0; h < st->nh; h++) gsh[h] = first ? d[h - h0] : gsh[h] + d[h - h0];
    }
}

/* dy (N,OC) into gblk (npass, N, HK_BW), zero past OC; db (OC) += sum_n dy[n] on the way, in
 * the order of n (as hk_db). */
static void hk_gblk(float *gblk, float *db, const hk_dy *dy, int N, int OC, int npass) {
    float *dbv = NULL;
    if (db) {
        dbv = hk_ws(HK_WS_DB, (size_t)npass * HK_BW * sizeof(float));
        memset(dbv, 0, (size_t)npass * HK_BW * sizeof(float));
        memcpy(dbv, db, (size_t)OC * sizeof(float));
    }
    for (int i = 0, n = 0; i < dy->parts; i++)
        for (int m = 0; m < dy->n[i]; m++, n++)
            for (int p = 0; p < npass; p++) {
                float *q = gblk + ((size_t)p * N + n) * HK_BW;
                const float *src = dy->p[i] + (size_t)m * OC + p * HK_BW;
#pragma GCC unroll 16
                for (int j = 0; j < HK_BNV; j++) {
                    __m512 v = _mm512_maskz_loadu_ps((__mmask16)hk_lanes(p * HK_BW + 16 * j, OC), src + 16 * j);
                    _mm512_store_ps(q + 16 * j, v);
                    if (dbv) {
                        float *a = dbv + p * HK_BW + 16 * j;
                        _mm512_store_ps(a, _mm512_add_ps(_mm512_load_ps(a), v));
                    }
                }
            }
    if (db) memcpy(db, dbv, (size_t)OC * sizeof(float));
}

static void hk_bwd(float *drows, float *gs, float *db, double *sq, const hk_dy *dy,
                   const hk_sorted *st, const float *rows, int N, int R, int OC) {
    const int ncb = (OC + HK_T - 1) / HK_T, npass = (ncb + HK_BWD_TILES - 1) / HK_BWD_TILES;
    /* gblk (npass, N, HK_BW): a pass's slice is contiguous and stays in L2 while every hit row
     * visits it. */
    float *gblk = hk_ws(HK_WS_GBLK, (size_t)npass * N * HK_BW * sizeof(float));
    hk_gblk(gblk, db, dy, N, OC, npass);
    size_t nh = st->nh;
    /* gsh (nh) <g, row> per hit in row order: written in sequence, scattered once at the end */
    float *gsh = gs ? hk_ws(HK_WS_GSH, (nh + 16) * sizeof(float)) : NULL;
    for (int p = 0; p < npass; p++) {
        const float *tile[HK_BWD_TILES];
        float *dtile[HK_BWD_TILES];
        int nt = ncb - p * HK_BWD_TILES < HK_BWD_TILES ? ncb - p * HK_BWD_TILES : HK_BWD_TILES;
        for (int i = 0; i < HK_BWD_TILES; i++) {
            int c = p * HK_BWD_TILES + (i < nt ? i : nt - 1);
            tile[i] = rows + (size_t)c * R * HK_T;
            dtile[i] = drows ? drows + (size_t)c * R * HK_T : NULL;
        }
        const float *gb = gblk + (size_t)p * N * HK_BW;
        int c0 = p * HK_BW;
#define HK_BWD_CASE(V)                                                                          \
    case V:                                                                                     \
        hk_bwd_sweep(tile, dtile, gsh, drows ? sq : NULL, gb, st, dy, OC, c0, V, p == 0);       \
        break;
        switch (2 * nt) { /* instantiated for each tile count up to HK_BWD_TILES */
            HK_BWD_CASE(2)
#if HK_BWD_TILES >= 2
            HK_BWD_CASE(4)
#endif
#if HK_BWD_TILES >= 3
            HK_BWD_CASE(6)
#endif
#if HK_BWD_TILES >= 4
            HK_BWD_CASE(8)
#endif
            default: LAYER_ASSERT(0);
        }
#undef HK_BWD_CASE
    }
    if (gs)
        for (size_t h = 0; h < nh; h++) gs[st->ent[h]] += gsh[h];
}

/* db (OC) += sum_n dy[n], each column's additions in the order of n. Token after token, so
 * dy streams in sequence (a column block at a time read it one line per 4 KiB page at
 * OC = 1024), into sums that stay in L1. */
static void hk_db(float *db, const float *dy, int N, int OC) {
    const int nv = (OC + 15) / 16;
    float *a = hk_ws(HK_WS_DB, (size_t)nv * 16 * sizeof(float));
    memset(a, 0, (size_t)nv * 16 * sizeof(float));
    memcpy(a, db, (size_t)OC * sizeof(float));
    for (int n = 0; n < N; n++) {
        const float *dn = dy + (size_t)n * OC;
        for (int j = 0; j < nv; j++) {
            __m512 v = _mm512_maskz_loadu_ps((__mmask16)hk_lanes(16 * j, OC), dn + 16 * j);
            _mm512_store_ps(a + 16 * j, _mm512_add_ps(_mm512_load_ps(a + 16 * j), v));
        }
    }
    memcpy(db, a, (size_t)OC * sizeof(float));
}

#else /* portable fallback: plain loops on the same schedule */

static void hk_fwd(float *y, int ldy, const int32_t *rowid, const float *s, const float *rows,
                   const float *b, int N, int K, int R, int OC, int prefetch) {
    (void)prefetch; /* nothing is prefetched here */
    for (int c0 = 0; c0 < OC; c0 += HK_T) {
        int w = OC - c0 < HK_T ? OC - c0 : HK_T;
        const float *tile = rows + (size_t)(c0 / HK_T) * R * HK_T;
        for (int n = 0; n < N; n++) {
            float *yn = y + (size_t)n * ldy + c0;
            for (int c = 0; c < w; c++) {
                float run = 0.0f;
                for (int k0 = 0; k0 < K; k0 += LAYER_HASH_SHARD) { /* a shard's partial from 0 */
                    int k1 = k0 + LAYER_HASH_SHARD < K ? k0 + LAYER_HASH_SHARD : K;
                    float a = 0.0f;
                    for (int k = k0; k < k1; k++) {
                        size_t e = (size_t)n * K + k;
                        a += s[e] * tile[(size_t)rowid[e] * HK_T + c];
                    }
                    run = k0 ? run + a : b ? b[c0 + c] + a : a;
                }
                yn[c] = run;
            }
        }
    }
}

/* *d += a, and with sq, new^2 - old^2 added to *sq in double. */
static void hk_add_sq(float *d, float a, double *sq) {
    float old = *d;
    *d = old + a;
    if (sq) *sq += (double)*d * *d - (double)old * old;
}

static void hk_bwd(float *drows, float *gs, float *db, double *sq, const hk_dy *dyp,
                   const hk_sorted *st, const float *rows, int N, int R, int OC) {
    const float *dy = dyp->p[0];
    if (dyp->parts > 1) { /* laid end to end */
        float *cat = hk_ws(HK_WS_GBLK, (size_t)N * OC * sizeof(float));
        for (int i = 0, n = 0; i < dyp->parts; n += dyp->n[i++])
            memcpy(cat + (size_t)n * OC, dyp->p[i], (size_t)dyp->n[i] * OC * sizeof(float));
        dy = cat;
    }
    for (int n = 0; db && n < N; n++)
        for (int o = 0; o < OC; o++) db[o] += dy[(size_t)n * OC + o];
    for (int i = 0; i < st->nhit; i++) {
        int32_t r = st->hit[i];
        for (int c0 = 0; c0 < OC; c0 += HK_T) {
            int w = OC - c0 < HK_T ? OC - c0 : HK_T;
            const float *rp = rows + ((size_t)(c0 / HK_T) * R + r) * HK_T;
            float acc[HK_T];
            for (int c = 0; c < w; c++) acc[c] = 0.0f;
            float *dp = drows ? drows + ((size_t)(c0 / HK_T) * R + r) * HK_T : NULL;
            int32_t next = hk_next_bound(dyp, st->tok[st->start[r]]);
            for (int32_t h = st->start[r]; h < st->start[r + 1]; h++) {
                if (st->tok[h] >= next) { /* a new part: the last part's sum goes in alone */
                    for (int c = 0; dp && c < w; c++) hk_add_sq(&dp[c], acc[c], sq);
                    for (int c = 0; c < w; c++) acc[c] = 0.0f;
                    next = hk_next_bound(dyp, st->tok[h]);
                }
                const float *g = dy + (size_t)st->tok[h] * OC + c0;
                float sv = st->sv[h], d = 0.0f;
                for (int c = 0; c < w; c++) {
                    acc[c] += sv * g[c];
                    d += g[c] * rp[c];
                }
                if (gs) gs[st->ent[h]] += d;
            }
            for (int c = 0; dp && c < w; c++) hk_add_sq(&dp[c], acc[c], sq);
        }
    }
}

static void hk_db(float *db, const float *dy, int N, int OC) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) db[o] += dy[(size_t)n * OC + o];
}

#endif

/* Whether the forward prefetches the next region. The stream is meant to arrive under the
 * current region's sweep, and where the sweep is long (2,048 tokens) it does. Where it is
 * short (a Memformer call of 512 tokens) the stream takes longer than the sweep, and what
 * then goes faster depends on the host. On the AMD EPYC the kernels were tuned on, the
 * prefetches paid. On an Intel Xeon whose memory answers in 140 ns they held the sweep at
 * each prefetch (their misses fill the core's few miss buffers); without them the hardware
 * prefetchers and the sweep's own misses took the stream, and the hashed Memformer's step
 * ran 16-20% faster. The choice changes no result, only time. So per shape (N, K, R, OC),
 * the first 2 x HK_TUNE_REPS calls run with and without the prefetches in the pattern ABBA
 * ABBA ...; the calls after run without them only if those calls took at least a tenth
 * less time in all (the decoder's calls at P = 2 differ by a few percent either way from run
 * to run). Calls of one shape come in patterns (a projection's rows just read by another
 * call, or not), and ABBA gives each way the same share of the calls at even and at odd
 * places. */
#define HK_TUNE_REPS 8
#define HK_TUNE_GAIN 0.9
#define HK_TUNE_SHAPES 64
typedef struct hk_tune {
    int N, K, R, OC, calls, prefetch;
    double took[2]; /* the calls' time without [0] and with [1] the prefetches */
} hk_tune;
static _Thread_local hk_tune hk_tunes[HK_TUNE_SHAPES];
static _Thread_local int hk_ntunes;
static int hk_prefetch_mode = LAYER_HASH_PREFETCH_AUTO;

void layer_hash_set_prefetch(int mode) {
    LAYER_ASSERT(mode == LAYER_HASH_PREFETCH_AUTO || mode == LAYER_HASH_PREFETCH_OFF ||
                 mode == LAYER_HASH_PREFETCH_ON);
    hk_prefetch_mode = mode;
}

static double hk_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void hk_fwd_tuned(float *y, int ldy, const int32_t *rowid, const float *s,
                         const float *rows, const float *b, int N, int K, int R, int OC) {
    if (hk_prefetch_mode != LAYER_HASH_PREFETCH_AUTO) {
        hk_fwd(y, ldy, rowid, s, rows, b, N, K, R, OC, hk_prefetch_mode);
        return;
    }
    hk_tune *u = NULL;
    for (int i = 0; i < hk_ntunes && !u; i++)
        if (hk_tunes[i].N == N && hk_tunes[i].K == K && hk_tunes[i].R == R && hk_tunes[i].OC == OC)
            u = &hk_tunes[i];
    if (!u && hk_ntunes < HK_TUNE_SHAPES) {
        u = &hk_tunes[hk_ntunes++];
        *u = (hk_tune){.N = N, .K = K, .R = R, .OC = OC, .prefetch = 1};
    }
    if (!u || u->calls >= 2 * HK_TUNE_REPS) { /* decided (past the table's room: prefetch) */
        hk_fwd(y, ldy, rowid, s, rows, b, N, K, R, OC, u ? u->prefetch : 1);
        return;
    }
    int with = (u->calls + 1) / 2 % 2 == 0; /* A B B A A B B A ... */
    double t0 = hk_now();
    hk_fwd(y, ldy, rowid, s, rows, b, N, K, R, OC, with);
    u->took[with] += hk_now() - t0;
    if (++u->calls == 2 * HK_TUNE_REPS) u->prefetch = !(u->took[0] < HK_TUNE_GAIN * u->took[1]);
}

/* y (N,OC); rowid, s (N,K); rows a store of R rows; b (OC) or NULL. */
void layer_hash_forward(float *y, const int32_t *rowid, const float *s, const float *rows,
                        const float *b, int N, int K, int R, int OC) {
    hk_check(rowid, N, K, R, OC);
    hk_fwd_tuned(y, OC, rowid, s, rows, b, N, K, R, OC);
}

/* The same with token n's outputs at y + n*ldy. */
void layer_hash_forward_ld(float *y, int ldy, const int32_t *rowid, const float *s,
                           const float *rows, const float *b, int N, int K, int R, int OC) {
    hk_check(rowid, N, K, R, OC);
    LAYER_ASSERT(ldy >= OC);
    hk_fwd_tuned(y, ldy, rowid, s, rows, b, N, K, R, OC);
}

/* drows, gs (N,K), db (OC) += gradients (each may be NULL); dy (N,OC); stores of R rows. */
void layer_hash_backward(float *drows, float *gs, float *db, const float *dy,
                         const int32_t *rowid, const float *s, const float *rows, int N, int K,
                         int R, int OC) {
    hk_check(rowid, N, K, R, OC);
    if (!drows && !gs) {
        if (db) hk_db(db, dy, N, OC);
        return;
    }
    hk_sorted st;
    hk_sort(&st, rowid, s, N, K, R);
    hk_dy d = {&dy, &N, 1};
    hk_bwd(drows, gs, db, NULL, &d, &st, rows, N, R, OC);
}

/* q, k, v (N,OC); rowid, s (N,K); rows_* stores of R rows; b* (OC) or NULL. */
void layer_hashqkv_forward(float *q, float *k, float *v, const int32_t *rowid, const float *s,
                           const float *rows_q, const float *rows_k, const float *rows_v,
                           const float *bq, const float *bk, const float *bv, int N, int K, int R,
                           int OC) {
    layer_hash_forward(q, rowid, s, rows_q, bq, N, K, R, OC);
    layer_hash_forward(k, rowid, s, rows_k, bk, N, K, R, OC);
    layer_hash_forward(v, rowid, s, rows_v, bv, N, K, R, OC);
}

/* drows_*, gs (N,K), db* (OC) += gradients; dq, dk, dv (N,OC). The row sort is shared. */
void layer_hashqkv_backward(float *drows_q, float *drows_k, float *drows_v, float *gs, float *dbq,
                            float *dbk, float *dbv, const float *dq, const float *dk,
                            const float *dv, const int32_t *rowid, const float *s,
                            const float *rows_q, const float *rows_k, const float *rows_v, int N,
                            int K, int R, int OC) {
    hk_check(rowid, N, K, R, OC);
    float *dr[3] = {drows_q, drows_k, drows_v}, *db[3] = {dbq, dbk, dbv};
    const float *d[3] = {dq, dk, dv}, *rows[3] = {rows_q, rows_k, rows_v};
    hk_sorted st;
    if (gs || drows_q || drows_k || drows_v) hk_sort(&st, rowid, s, N, K, R); /* one sort serves the three tables */
    for (int p = 0; p < 3; p++) {
        hk_dy dd = {&d[p], &N, 1};
        if (gs || dr[p])
            hk_bwd(dr[p], gs, db[p], NULL, &dd, &st, rows[p], N, R, OC);
        else if (db[p])
            hk_db(db[p], d[p], N, OC);
    }
}

/* drows[j], gs (N,K) += gradients for nout projections of one rowid/s (one sort serves them),
 * output j's gradients in parts: dy[j*nparts + i] holds ndy[i] tokens; each part's row sums
 * added on their own, in part order. */
void layer_hash_backward_parts(int nout, float *const *drows, float *gs, double *sq,
                               const float *const *dy, const int *ndy, int nparts,
                               const int32_t *rowid, const float *s, const float *const *rows,
                               int N, int K, int R, int OC) {
    hk_check(rowid, N, K, R, OC);
    LAYER_ASSERT(nout >= 1 && nout <= 3 && nparts >= 1);
    int total = 0;
    for (int i = 0; i < nparts; i++) total += ndy[i];
    LAYER_ASSERT(total == N);
    hk_sorted st;
    hk_sort(&st, rowid, s, N, K, R);
    for (int j = 0; j < nout; j++) {
        hk_dy d = {dy + (size_t)j * nparts, ndy, nparts};
        hk_bwd(drows[j], gs, NULL, sq, &d, &st, rows[j], N, R, OC);
    }
}
