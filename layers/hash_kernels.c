/* Cache-blocked forward and backward of the hashed projection, and the shared-hash Q/K/V variant. */
#include <stdlib.h>
#include <string.h>

#include "layers/hash.h"

#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* Why the blocking: a local table set at tau = 8, OC = 512 is K * 512 KiB (32 MiB at K = 64),
 * far beyond L2, and a token touches one row of every table. Visiting tokens in their own
 * order would fetch a row from memory for every (token, chunk).
 *
 * Forward: the chunks are cut into groups whose distinct rows, taken one column block of
 * HK_FWD_NV vectors at a time, fit in L2. A group's rows are copied whole, in increasing order,
 * into a panel laid out by column block; then, per column block, every token accumulates its
 * group's rows from the panel in registers and touches its partial output once. Each table
 * byte thus comes from memory once per call, in sequence.
 *
 * Backward: the (token, chunk) entries are counting-sorted by row id, and the hit rows, in
 * increasing order, are cut into runs. The token gradients are copied once into a layout by
 * column block, so one block's slice is contiguous. Per run: its rows are packed whole into a
 * panel (as the forward does); per column block, each row's slice sits in registers while one
 * pass over its hits sums s * g and forms every hit's partial <g, row> for gs; the sum
 * replaces the row's slice in the panel, and the panel is added to the row gradients, whole
 * rows in sequence, at the end of the run. Each gradient row is thus read and written once.
 * (Walking whole rows with the token gradients in their own layout read 2 KiB of g from L3
 * per hit, and that bounded the kernel.)
 *
 * The forward panel matters as much as the order: rows are OC floats apart, a power of two
 * at the usual widths, so column slices read in place would crowd into a few cache sets and
 * come from memory at a quarter of the sequential rate. */

/* Blocking parameters, tuned on Zen 4 (1 MiB L2) at N = 2048, OC = 512; -D overrides them. */
#ifndef HK_FWD_PANEL
#define HK_FWD_PANEL (256 * 1024) /* bytes of L2 for one column block of a group's rows */
#endif
#ifndef HK_FWD_NV
#define HK_FWD_NV 4               /* forward column block, in 16-float vectors */
#endif
#ifndef HK_BWD_NV
#define HK_BWD_NV 8               /* backward column block, in 16-float vectors */
#endif
#ifndef HK_BWD_PANEL
#define HK_BWD_PANEL (256 * 1024) /* bytes of L2 for one column block of a run of hit rows */
#endif
#define HK_NVMAX 16 /* largest column block the kernels are instantiated for */
_Static_assert(HK_FWD_NV <= HK_NVMAX && HK_BWD_NV <= HK_NVMAX, "column block too wide");
#ifndef HK_PREFETCH
#define HK_PREFETCH 4             /* rows ahead that are prefetched */
#endif

static void hk_check(const int32_t *rowid, int N, int K, int R, int OC) {
    LAYER_ASSERT(N >= 0 && K > 0 && R > 0 && OC > 0);
    /* One pass over the ids here so the inner loops can trust them. */
    size_t n = (size_t)N * K;
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad |= (rowid[i] < 0) | (rowid[i] >= R);
    LAYER_ASSERT(!bad);
}

/* Scratch buffers, one per purpose, kept between calls and grown when too small: the kernels
 * need tens of MiB of panels at training shapes, and fresh pages for them on every call cost
 * as much as a third of the forward. Per thread, so concurrent callers do not share them;
 * layer_hash_workspace_free() returns them. */
enum {
    HK_WS_OWNER, HK_WS_POS, HK_WS_CNT, HK_WS_GK0, HK_WS_GOFF, HK_WS_LIST, HK_WS_SLOT, HK_WS_SV,
    HK_WS_PANEL, HK_WS_YP, HK_WS_START, HK_WS_TOK, HK_WS_ENT, HK_WS_HSV, HK_WS_HIT, HK_WS_GSH,
    HK_WS_GBLK,
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

/* Forward schedule: chunks [gk0[g], gk0[g+1]) form group g; its distinct rows, increasing, are
 * list[goff[g] .. goff[g+1]). Entry (n, k) of group g is at N*gk0[g] + n*G + (k - gk0[g])
 * (G the group's chunk count) in slot (its row's position in the group's list) and sv. */
typedef struct hk_plan {
    int ngroups, maxrows;
    int *gk0, *goff;  /* (ngroups+1) */
    int32_t *list;    /* (<= N*K) */
    int32_t *slot;    /* (N*K) */
    float *sv;        /* (N*K) */
} hk_plan;

static void hk_plan_build(hk_plan *pl, const int32_t *rowid, const float *s, int N, int K, int R,
                          int cap) {
    size_t nk = (size_t)N * K;
    int32_t *owner = hk_ws(HK_WS_OWNER, (size_t)R * sizeof(int32_t)); /* (R) last chunk/group seen */
    int32_t *pos = hk_ws(HK_WS_POS, (size_t)R * sizeof(int32_t)); /* (R) slot within the group */
    int *cnt = hk_ws(HK_WS_CNT, (size_t)K * sizeof(int)); /* (K) rows per chunk, an upper bound */
    for (int r = 0; r < R; r++) owner[r] = -1;
    for (int k = 0; k < K; k++) cnt[k] = 0;
    /* In token order, so rowid is read in sequence. A row shared by chunks could be counted
     * more than once; the counts only bound the group sizes, so that is safe. */
    for (int n = 0; n < N; n++) {
        const int32_t *rn = rowid + (size_t)n * K;
        for (int k = 0; k < K; k++) {
            int32_t r = rn[k];
            if (owner[r] != k) owner[r] = k, cnt[k]++;
        }
    }
    pl->gk0 = hk_ws(HK_WS_GK0, (size_t)(K + 1) * sizeof(int));
    pl->goff = hk_ws(HK_WS_GOFF, (size_t)(K + 1) * sizeof(int));
    pl->list = hk_ws(HK_WS_LIST, nk * sizeof(int32_t));
    pl->slot = hk_ws(HK_WS_SLOT, nk * sizeof(int32_t));
    pl->sv = hk_ws(HK_WS_SV, nk * sizeof(float));
    pl->ngroups = 0;
    pl->maxrows = 0;
    pl->goff[0] = 0;
    int k = 0;
    while (k < K) {
        /* Greedy: add chunks while the summed counts (a bound on the group's rows) fit. */
        int g = pl->ngroups, k0 = k, sum = 0;
        while (k < K && (k == k0 || sum + cnt[k] <= cap)) sum += cnt[k++];
        int G = k - k0, tag = K + g; /* tags above K cannot clash with the chunk pass */
        int32_t lo = R, hi = -1;
        for (int n = 0; n < N; n++) {
            const int32_t *rn = rowid + (size_t)n * K + k0;
            for (int j = 0; j < G; j++) {
                int32_t r = rn[j];
                owner[r] = tag;
                lo = r < lo ? r : lo;
                hi = r > hi ? r : hi;
            }
        }
        /* the group's rows in increasing order, so the pack reads memory in sequence */
        int m = 0, off = pl->goff[g];
        for (int32_t r = lo; r <= hi; r++)
            if (owner[r] == tag) pos[r] = m, pl->list[off + m++] = r;
        int32_t *sl = pl->slot + (size_t)N * k0;
        float *sp = pl->sv + (size_t)N * k0;
        for (int n = 0; n < N; n++)
            for (int j = 0; j < G; j++) {
                size_t e = (size_t)n * K + k0 + j;
                sl[(size_t)n * G + j] = pos[rowid[e]];
                sp[(size_t)n * G + j] = s[e];
            }
        pl->gk0[g] = k0;
        pl->goff[g + 1] = off + m;
        if (m > pl->maxrows) pl->maxrows = m;
        pl->ngroups++;
    }
    pl->gk0[pl->ngroups] = K;
}

/* Entries (token, chunk) grouped by row id: the hits of row r are [start[r], start[r+1]). */
typedef struct hk_sorted {
    int32_t *start; /* (R+1) */
    int32_t *tok;   /* (N*K) token of each hit */
    int32_t *ent;   /* (N*K) flat entry n*K + k of each hit */
    float *sv;      /* (N*K) score of each hit */
    int32_t *hit;   /* (nhit) the rows with at least one hit, increasing */
    int nhit;
} hk_sorted;

static void hk_sort(hk_sorted *st, const int32_t *rowid, const float *s, int N, int K, int R) {
    size_t n = (size_t)N * K;
    st->start = hk_ws(HK_WS_START, ((size_t)R + 1) * sizeof(int32_t));
    memset(st->start, 0, ((size_t)R + 1) * sizeof(int32_t));
    /* tok (n + HK_PREFETCH): the slack lets the backward read tokens ahead without a test */
    st->tok = hk_ws(HK_WS_TOK, (n + HK_PREFETCH) * sizeof(int32_t));
    memset(st->tok + n, 0, HK_PREFETCH * sizeof(int32_t));
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
    for (int r = 0, m = 0; r < R; r++)
        if (st->start[r + 1] != st->start[r]) st->hit[m++] = r;
    int32_t *fill = hk_ws(HK_WS_POS, (size_t)R * sizeof(int32_t)); /* (R) next free slot per row */
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

#ifdef __AVX512F__

#define HK_INLINE static inline __attribute__((always_inline))

/* Lane mask of vector j of a block of nv vectors whose last vector has `last` lanes set. */
HK_INLINE __mmask16 hk_mask(int j, int nv, __mmask16 last) {
    return j == nv - 1 ? last : (__mmask16)0xFFFF;
}

/* Copies rows list[0..m) (each OC floats), whole and in the list's order, into panel
 * (ceil(OC/cb), m, cb), cb = 16nv, zero past OC: whole rows stream from memory at full speed,
 * where column slices of rows OC floats apart would come at a quarter of it. */
HK_INLINE void hk_pack(float *panel, const float *rows, const int32_t *list, int m, int OC,
                       const int nv) {
    const int cb = 16 * nv, ncb = (OC + cb - 1) / cb;
    for (int u = 0; u < m; u++) {
        const float *src = rows + (size_t)list[u] * OC;
        if (u + HK_PREFETCH < m) {
            const char *ahead = (const char *)(rows + (size_t)list[u + HK_PREFETCH] * OC);
            for (int o = 0; o < OC * (int)sizeof(float); o += 64) _mm_prefetch(ahead + o, _MM_HINT_T0);
        }
        for (int c = 0; c < ncb; c++) {
            float *q = panel + ((size_t)c * m + u) * cb;
            int rem = OC - c * cb < cb ? OC - c * cb : cb;
            for (int j = 0; j < nv; j++) {
                int lanes = rem - 16 * j;
                __mmask16 mk = lanes >= 16 ? 0xFFFF : lanes <= 0 ? 0 : (__mmask16)(0xFFFFu >> (16 - lanes));
                _mm512_store_ps(q + 16 * j, _mm512_maskz_loadu_ps(mk, src + c * cb + 16 * j));
            }
        }
    }
}

/* One (column block, chunk group) of the forward over a panel (rows, stride) holding the
 * group's rows' columns [c0, c0+16nv), zero past OC. yp (N, stride) carries partial sums
 * between groups; the first group starts from b (or 0), the last writes y. */
HK_INLINE void hk_fwd_sweep(float *y, float *yp, const float *panel, const int32_t *slot,
                            const float *sv, int G, const float *b, int N, int OC, int c0,
                            const int nv, const int stride, __mmask16 last, int first,
                            int final) {
    __m512 seed[HK_NVMAX];
#pragma GCC unroll 16
    for (int j = 0; j < nv; j++)
        seed[j] = b ? _mm512_maskz_loadu_ps(hk_mask(j, nv, last), b + c0 + 16 * j)
                    : _mm512_setzero_ps();
    for (int n = 0; n < N; n++) {
        float *ypn = yp + (size_t)n * stride;
        const int32_t *sl = slot + (size_t)n * G;
        const float *sp = sv + (size_t)n * G;
        __m512 acc[HK_NVMAX];
#pragma GCC unroll 16
        for (int j = 0; j < nv; j++) acc[j] = first ? seed[j] : _mm512_load_ps(ypn + 16 * j);
        for (int k = 0; k < G; k++) {
            __m512 s1 = _mm512_set1_ps(sp[k]);
            const float *pr = panel + (size_t)sl[k] * stride;
#pragma GCC unroll 16
            for (int j = 0; j < nv; j++)
                acc[j] = _mm512_fmadd_ps(s1, _mm512_load_ps(pr + 16 * j), acc[j]);
        }
        if (final) {
            float *yn = y + (size_t)n * OC + c0;
#pragma GCC unroll 16
            for (int j = 0; j < nv; j++) _mm512_mask_storeu_ps(yn + 16 * j, hk_mask(j, nv, last), acc[j]);
        } else {
#pragma GCC unroll 16
            for (int j = 0; j < nv; j++) _mm512_store_ps(ypn + 16 * j, acc[j]);
        }
    }
}

static void hk_fwd_avx512(float *y, const int32_t *rowid, const float *s, const float *rows,
                          const float *b, int N, int K, int R, int OC) {
    const int cb = 16 * HK_FWD_NV, ncb = (OC + cb - 1) / cb;
    hk_plan pl;
    hk_plan_build(&pl, rowid, s, N, K, R, HK_FWD_PANEL / (cb * (int)sizeof(float)));
    /* panel (ncb, maxrows, cb): the group's rows cut into column blocks */
    float *panel = hk_ws(HK_WS_PANEL, (size_t)pl.maxrows * ncb * cb * sizeof(float));
    /* yp (ncb, N, cb): partial outputs between groups */
    float *yp = pl.ngroups > 1 ? hk_ws(HK_WS_YP, (size_t)N * ncb * cb * sizeof(float)) : NULL;
    for (int g = 0; g < pl.ngroups; g++) {
        int k0 = pl.gk0[g], G = pl.gk0[g + 1] - k0;
        const int32_t *list = pl.list + pl.goff[g];
        int m = pl.goff[g + 1] - pl.goff[g];
        hk_pack(panel, rows, list, m, OC, HK_FWD_NV);
        const int32_t *slot = pl.slot + (size_t)N * k0;
        const float *sv = pl.sv + (size_t)N * k0;
        int first = g == 0, final = g == pl.ngroups - 1;
        for (int c = 0; c < ncb; c++) {
            int c0 = c * cb, rem = OC - c0 < cb ? OC - c0 : cb;
            int nv = (rem + 15) / 16;
            __mmask16 last = (__mmask16)(0xFFFFu >> (16 * nv - rem));
            const float *pc = panel + (size_t)c * m * cb;
            float *ypc = yp ? yp + (size_t)c * N * cb : NULL;
#define HK_FWD_CASE(V)                                                                          \
    case V:                                                                                     \
        hk_fwd_sweep(y, ypc, pc, slot, sv, G, b, N, OC, c0, V, cb, last, first, final);         \
        break;
            switch (nv) {
                HK_FWD_CASE(1) HK_FWD_CASE(2) HK_FWD_CASE(3) HK_FWD_CASE(4)
                HK_FWD_CASE(5) HK_FWD_CASE(6) HK_FWD_CASE(7) HK_FWD_CASE(8)
                default: LAYER_ASSERT(0);
            }
#undef HK_FWD_CASE
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

/* One column block of the backward for the hit rows hit[0..m): pc (m, 16nv) holds their
 * columns (zero past OC), gb (N, 16nv) the token gradients' same columns. Per row, one pass
 * over its hits sums s * g in registers and forms each hit's partial <g, row> in gsh (set
 * when `first`, else added); the sum replaces the row's columns in pc (when `dr`). */
HK_INLINE void hk_bwd_sweep(float *pc, float *gsh, const float *gb, const hk_sorted *st,
                            const int32_t *hit, int m, const int nv, int first, int dr) {
    const int cb = 16 * nv;
    /* dv (16, 16): the partial-dot vectors of the last 16 hits, summed together */
    _Alignas(64) float dv[16 * 16];
    const int32_t hb = m ? st->start[hit[0]] : 0;
    for (int u = 0; u < m; u++) {
        int32_t r = hit[u], h0 = st->start[r], h1 = st->start[r + 1];
        float *pu = pc + (size_t)u * cb;
        __m512 rv[HK_NVMAX], acc[HK_NVMAX];
#pragma GCC unroll 16
        for (int j = 0; j < nv; j++) {
            rv[j] = gsh ? _mm512_load_ps(pu + 16 * j) : _mm512_setzero_ps();
            acc[j] = _mm512_setzero_ps();
        }
        for (int32_t h = h0; h < h1; h++) {
            /* The slice is in L2 after its first use, but that first use is a random read
             * from L3: fetch a few hits ahead (the token list is known). */
            const float *ga = gb + (size_t)st->tok[h + HK_PREFETCH] * cb;
#pragma GCC unroll 16
            for (int j = 0; j < nv; j += 4) _mm_prefetch((const char *)(ga + 16 * j), _MM_HINT_T0);
            const float *g = gb + (size_t)st->tok[h] * cb;
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
                int32_t i = (h - hb) & 15;
                _mm512_store_ps(dv + 16 * i, _mm512_add_ps(d0, d1));
                if (i == 15) {
                    __m512 d = hk_sum16(dv);
                    float *gp = gsh + h - 15;
                    _mm512_storeu_ps(gp, first ? d : _mm512_add_ps(_mm512_loadu_ps(gp), d));
                }
            }
        }
        if (dr) {
#pragma GCC unroll 16
            for (int j = 0; j < nv; j++) _mm512_store_ps(pu + 16 * j, acc[j]);
        }
    }
    if (gsh && m) { /* the last, incomplete batch */
        int32_t he = st->start[hit[m - 1] + 1];
        for (int32_t h = he - (he - hb) % 16; h < he; h++) {
            float d = _mm512_reduce_add_ps(_mm512_load_ps(dv + 16 * ((h - hb) & 15)));
            gsh[h] = first ? d : gsh[h] + d;
        }
    }
}

static void hk_bwd(float *drows, float *gs, const float *dy, const hk_sorted *st,
                          const float *rows, int N, int OC) {
    const int nv = HK_BWD_NV, cb = 16 * nv, ncb = (OC + cb - 1) / cb;
    const int cap = HK_BWD_PANEL / (cb * (int)sizeof(float)); /* rows per run */
    size_t nh = st->nhit ? (size_t)st->start[st->hit[st->nhit - 1] + 1] : 0;
    /* gsh (nh + HK_PREFETCH) <g, row> per hit in row order: written in sequence, scattered
     * once at the end; tok is read HK_PREFETCH hits ahead, hence the slack in hk_sort. */
    float *gsh = gs ? hk_ws(HK_WS_GSH, nh * sizeof(float)) : NULL;
    /* gblk (ncb, N, cb): the token gradients by column block, zero past OC, so that a block's
     * slice is contiguous and stays in L2 while every hit row of a run visits it. */
    float *gblk = hk_ws(HK_WS_GBLK, (size_t)ncb * N * cb * sizeof(float));
    for (int n = 0; n < N; n++)
        for (int c = 0; c < ncb; c++) {
            float *q = gblk + ((size_t)c * N + n) * cb;
            const float *src = dy + (size_t)n * OC + c * cb;
            int rem = OC - c * cb < cb ? OC - c * cb : cb;
            for (int j = 0; j < nv; j++) {
                int lanes = rem - 16 * j;
                __mmask16 mk = lanes >= 16 ? 0xFFFF : lanes <= 0 ? 0 : (__mmask16)(0xFFFFu >> (16 - lanes));
                _mm512_store_ps(q + 16 * j, _mm512_maskz_loadu_ps(mk, src + 16 * j));
            }
        }
    /* panel (ncb, cap, cb): a run's rows, then their gradients */
    float *panel = hk_ws(HK_WS_PANEL, (size_t)cap * ncb * cb * sizeof(float));
    /* Runs of consecutive hit rows: each row belongs to one run, so its gradient is formed
     * once, and the run's column block (cap rows) plus a g slice fit L2 together. */
    for (int i0 = 0; i0 < st->nhit; i0 += cap) {
        int m = st->nhit - i0 < cap ? st->nhit - i0 : cap;
        const int32_t *hit = st->hit + i0;
        if (gs) hk_pack(panel, rows, hit, m, OC, nv);
        for (int c = 0; c < ncb; c++) {
            float *pc = panel + (size_t)c * m * cb;
            const float *gb = gblk + (size_t)c * N * cb;
            hk_bwd_sweep(pc, gsh, gb, st, hit, m, nv, c == 0, drows != NULL);
        }
        if (!drows) continue;
        for (int u = 0; u < m; u++) {
            float *dst = drows + (size_t)hit[u] * OC;
            if (u + HK_PREFETCH < m) { /* the row gradient ahead will be written: fetch for writing */
                const char *ahead = (const char *)(drows + (size_t)hit[u + HK_PREFETCH] * OC);
                for (int o = 0; o < OC * (int)sizeof(float); o += 64) _mm_prefetch(ahead + o, _MM_HINT_ET0);
            }
            int o = 0;
            for (; o + 16 <= OC; o += 16) {
                const float *q = panel + ((size_t)(o / cb) * m + u) * cb + o % cb;
                _mm512_storeu_ps(dst + o, _mm512_add_ps(_mm512_loadu_ps(dst + o), _mm512_load_ps(q)));
            }
            if (o < OC) {
                __mmask16 mk = (__mmask16)(0xFFFFu >> (16 - (OC - o)));
                const float *q = panel + ((size_t)(o / cb) * m + u) * cb + o % cb;
                _mm512_mask_storeu_ps(dst + o, mk, _mm512_add_ps(_mm512_maskz_loadu_ps(mk, dst + o),
                                                                 _mm512_load_ps(q)));
            }
        }
    }
    if (gs)
        for (size_t h = 0; h < nh; h++) gs[st->ent[h]] += gsh[h];
}

static void hk_db(float *db, const float *dy, int N, int OC) {
    int o = 0;
    for (; o + 64 <= OC; o += 64) {
        __m512 a0 = _mm512_loadu_ps(db + o), a1 = _mm512_loadu_ps(db + o + 16);
        __m512 a2 = _mm512_loadu_ps(db + o + 32), a3 = _mm512_loadu_ps(db + o + 48);
        for (int n = 0; n < N; n++) {
            const float *g = dy + (size_t)n * OC + o;
            a0 = _mm512_add_ps(a0, _mm512_loadu_ps(g));
            a1 = _mm512_add_ps(a1, _mm512_loadu_ps(g + 16));
            a2 = _mm512_add_ps(a2, _mm512_loadu_ps(g + 32));
            a3 = _mm512_add_ps(a3, _mm512_loadu_ps(g + 48));
        }
        _mm512_storeu_ps(db + o, a0);
        _mm512_storeu_ps(db + o + 16, a1);
        _mm512_storeu_ps(db + o + 32, a2);
        _mm512_storeu_ps(db + o + 48, a3);
    }
    for (; o < OC; o += 16) {
        __mmask16 m = (__mmask16)(OC - o >= 16 ? 0xFFFFu : 0xFFFFu >> (16 - (OC - o)));
        __m512 a = _mm512_maskz_loadu_ps(m, db + o);
        for (int n = 0; n < N; n++) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(m, dy + (size_t)n * OC + o));
        _mm512_mask_storeu_ps(db + o, m, a);
    }
}

#else /* portable fallback: plain loops, the forward on the same schedule */

static void hk_fwd_portable(float *y, const int32_t *rowid, const float *s, const float *rows,
                            const float *b, int N, int K, int R, int OC) {
    const int cb = 16 * HK_FWD_NV;
    hk_plan pl;
    hk_plan_build(&pl, rowid, s, N, K, R, HK_FWD_PANEL / (cb * (int)sizeof(float)));
    float *panel = hk_ws(HK_WS_PANEL, (size_t)pl.maxrows * cb * sizeof(float));
    for (int c0 = 0; c0 < OC; c0 += cb) {
        int w = OC - c0 < cb ? OC - c0 : cb;
        for (int g = 0; g < pl.ngroups; g++) {
            int k0 = pl.gk0[g], G = pl.gk0[g + 1] - k0;
            const int32_t *list = pl.list + pl.goff[g];
            int m = pl.goff[g + 1] - pl.goff[g];
            for (int u = 0; u < m; u++)
                memcpy(panel + (size_t)u * cb, rows + (size_t)list[u] * OC + c0, w * sizeof(float));
            for (int n = 0; n < N; n++) {
                float acc[16 * HK_FWD_NV];
                float *yn = y + (size_t)n * OC + c0;
                for (int c = 0; c < w; c++) acc[c] = g ? yn[c] : b ? b[c0 + c] : 0.0f;
                for (int j = 0; j < G; j++) {
                    size_t e = (size_t)N * k0 + (size_t)n * G + j;
                    float sv = pl.sv[e];
                    const float *r = panel + (size_t)pl.slot[e] * cb;
                    for (int c = 0; c < w; c++) acc[c] += sv * r[c];
                }
                for (int c = 0; c < w; c++) yn[c] = acc[c];
            }
        }
    }
}

static void hk_bwd(float *drows, float *gs, const float *dy, const hk_sorted *st,
                            const float *rows, int N, int OC) {
    (void)N;
    const int cb = 16 * HK_NVMAX;
    for (int i = 0; i < st->nhit; i++) {
        int32_t r = st->hit[i];
        for (int c0 = 0; c0 < OC; c0 += cb) {
            int w = OC - c0 < cb ? OC - c0 : cb;
            const float *rp = rows + (size_t)r * OC + c0;
            float acc[16 * HK_NVMAX];
            for (int c = 0; c < w; c++) acc[c] = 0.0f;
            for (int32_t h = st->start[r]; h < st->start[r + 1]; h++) {
                const float *g = dy + (size_t)st->tok[h] * OC + c0;
                float sv = st->sv[h], d = 0.0f;
                for (int c = 0; c < w; c++) {
                    acc[c] += sv * g[c];
                    d += g[c] * rp[c];
                }
                if (gs) gs[st->ent[h]] += d;
            }
            if (drows) {
                float *dp = drows + (size_t)r * OC + c0;
                for (int c = 0; c < w; c++) dp[c] += acc[c];
            }
        }
    }
}

static void hk_db(float *db, const float *dy, int N, int OC) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) db[o] += dy[(size_t)n * OC + o];
}

#endif

/* y (N,OC); rowid, s (N,K); rows (R,OC); b (OC) or NULL. */
void layer_hash_forward(float *y, const int32_t *rowid, const float *s, const float *rows,
                        const float *b, int N, int K, int R, int OC) {
    hk_check(rowid, N, K, R, OC);
#ifdef __AVX512F__
    hk_fwd_avx512(y, rowid, s, rows, b, N, K, R, OC);
#else
    hk_fwd_portable(y, rowid, s, rows, b, N, K, R, OC);
#endif
}

/* drows (R,OC), gs (N,K), db (OC) += gradients (each may be NULL); dy (N,OC). */
void layer_hash_backward(float *drows, float *gs, float *db, const float *dy,
                         const int32_t *rowid, const float *s, const float *rows, int N, int K,
                         int R, int OC) {
    hk_check(rowid, N, K, R, OC);
    if (db) hk_db(db, dy, N, OC);
    if (!drows && !gs) return;
    hk_sorted st;
    hk_sort(&st, rowid, s, N, K, R);
    hk_bwd(drows, gs, dy, &st, rows, N, OC);
}

/* q, k, v (N,OC); rowid, s (N,K); rows_* (R,OC); b* (OC) or NULL. */
void layer_hashqkv_forward(float *q, float *k, float *v, const int32_t *rowid, const float *s,
                           const float *rows_q, const float *rows_k, const float *rows_v,
                           const float *bq, const float *bk, const float *bv, int N, int K, int R,
                           int OC) {
    layer_hash_forward(q, rowid, s, rows_q, bq, N, K, R, OC);
    layer_hash_forward(k, rowid, s, rows_k, bk, N, K, R, OC);
    layer_hash_forward(v, rowid, s, rows_v, bv, N, K, R, OC);
}

/* drows_* (R,OC), gs (N,K), db* (OC) += gradients; dq, dk, dv (N,OC). The row sort is shared. */
void layer_hashqkv_backward(float *drows_q, float *drows_k, float *drows_v, float *gs, float *dbq,
                            float *dbk, float *dbv, const float *dq, const float *dk,
                            const float *dv, const int32_t *rowid, const float *s,
                            const float *rows_q, const float *rows_k, const float *rows_v, int N,
                            int K, int R, int OC) {
    hk_check(rowid, N, K, R, OC);
    if (dbq) hk_db(dbq, dq, N, OC);
    if (dbk) hk_db(dbk, dk, N, OC);
    if (dbv) hk_db(dbv, dv, N, OC);
    if (!gs && !drows_q && !drows_k && !drows_v) return;
    hk_sorted st;
    hk_sort(&st, rowid, s, N, K, R);  /* one sort serves the three tables */
    if (gs || drows_q) hk_bwd(drows_q, gs, dq, &st, rows_q, N, OC);
    if (gs || drows_k) hk_bwd(drows_k, gs, dk, &st, rows_k, N, OC);
    if (gs || drows_v) hk_bwd(drows_v, gs, dv, &st, rows_v, N, OC);
}
