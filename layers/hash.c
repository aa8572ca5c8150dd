/* MemoryFormer hashing: bucket index, scores and their backward, row ids, unique rows, reference kernels. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers/hash.h"
#include "layers/simd.h"

#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* The score needs exp(-2|z|/t) for every element; a per-element libm call costs more than the
 * whole forward lookup at tau = 8, so it is evaluated 16 lanes at a time (layers/simd.h). */

/*   ope (n) = 1 + exp(-2|x|/t),  sig (n) = exp(-2|x|/t) / (1 + exp(-2|x|/t)) (sig may be NULL). */
static void hash_exp_terms(float *ope, float *sig, const float *x, int n, float temp) {
    const float c = -2.0f / temp;
    int i = 0;
#ifdef __AVX512F__
    const __m512 vc = _mm512_set1_ps(c), one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
        __m512 e = layer_exp_ps(_mm512_mul_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i)), vc));
        __m512 o = _mm512_add_ps(one, e);
        _mm512_storeu_ps(ope + i, o);
        if (sig) _mm512_storeu_ps(sig + i, _mm512_div_ps(e, o));
    }
#endif
    for (; i < n; i++) {
        float e = layer_expf(c * fabsf(x[i]));
        ope[i] = 1.0f + e;
        if (sig) sig[i] = e / (1.0f + e);
    }
}

#ifdef __AVX512F__
/* With TAU dividing 16, a vector holds 16/TAU whole chunks; one shuffle per step of a
 * butterfly leaves every lane with the product (or sum) over its chunk, so no element has to
 * leave its lane. (The factors are multiplied pairwise rather than left to right: a few ulp.) */
static inline __m512 hash_chunk_mul(__m512 v, int TAU) {
    if (TAU > 1) v = _mm512_mul_ps(v, _mm512_permute_ps(v, 0xB1));           /* lanes ^ 1 */
    if (TAU > 2) v = _mm512_mul_ps(v, _mm512_permute_ps(v, 0x4E));           /* lanes ^ 2 */
    if (TAU > 4) v = _mm512_mul_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));     /* lanes ^ 4 */
    if (TAU > 8) v = _mm512_mul_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));     /* lanes ^ 8 */
    return v;
}
static inline __m512 hash_chunk_add(__m512 v, int TAU) {
    if (TAU > 1) v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));
    if (TAU > 2) v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E));
    if (TAU > 4) v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
    if (TAU > 8) v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
    return v;
}
static inline int hash_tau_in_lanes(int TAU) { return TAU == 2 || TAU == 4 || TAU == 8 || TAU == 16; }
#endif

static void hash_check_sizes(int N, int K, int TAU, layer_score_mode mode, float temp) {
    LAYER_ASSERT(N >= 0 && K > 0);
    LAYER_ASSERT(TAU >= 1 && TAU <= 30);
    LAYER_ASSERT(mode == LAYER_SCORE_PROB || mode == LAYER_SCORE_L1PROB);
    LAYER_ASSERT(mode != LAYER_SCORE_PROB || temp > 0.0f);
}

/* idx (N,K), s (N,K); x (N,K*TAU). */
void layer_hash_index(int32_t *idx, float *s, const float *x, int N, int K, int TAU,
                      layer_score_mode mode, float temp) {
    hash_check_sizes(N, K, TAU, mode, temp);
    const int D = K * TAU;
    /* l1prob was trained without a temperature: its sigmoid is always at t = 1. */
    const float t = mode == LAYER_SCORE_PROB ? temp : 1.0f;
    const int prob = mode == LAYER_SCORE_PROB;
    float *ope = layer_xmalloc((size_t)D * sizeof(float)); /* (K*TAU) one row's 1 + exp(-2a/t) */
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * D; /* (K*TAU) */
        int k = 0;
#ifdef __AVX512F__
        if (hash_tau_in_lanes(TAU)) {
            const __m512 vc = _mm512_set1_ps(-2.0f / t), one = _mm512_set1_ps(1.0f);
            const int cpv = 16 / TAU;                              /* chunks per vector */
            const __mmask16 first = (__mmask16)(0xFFFFu / ((1u << TAU) - 1) & 0xFFFF);
            for (; k + cpv <= K; k += cpv) {
                __m512 z = _mm512_loadu_ps(xn + k * TAU), a = _mm512_abs_ps(z);
                __m512 prod = hash_chunk_mul(_mm512_add_ps(one, layer_exp_ps(_mm512_mul_ps(a, vc))), TAU);
                __m512 sv = _mm512_div_ps(prob ? one : hash_chunk_add(a, TAU), prod);
                /* lane j*TAU holds chunk j's score; pack them to the front */
                _mm512_mask_storeu_ps(s + (size_t)n * K + k, (__mmask16)((1u << cpv) - 1),
                                      _mm512_maskz_compress_ps(first, sv));
                /* -0.0 >= 0 holds, so both zeros give bit 1. Bit i of the mask is element i;
                 * reversed, element 0 becomes the most significant bit of its chunk. */
                unsigned m = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_GE_OQ);
                m = (m & 0x5555u) << 1 | (m >> 1 & 0x5555u);
                m = (m & 0x3333u) << 2 | (m >> 2 & 0x3333u);
                m = (m & 0x0F0Fu) << 4 | (m >> 4 & 0x0F0Fu);
                m = (m & 0x00FFu) << 8 | (m >> 8 & 0x00FFu);
                for (int j = 0; j < cpv; j++)
                    idx[(size_t)n * K + k + j] = (int32_t)(m >> (16 - (j + 1) * TAU) & ((1u << TAU) - 1));
            }
        }
#endif
        /* the chunks left over (all of them without AVX-512) */
        hash_exp_terms(ope + k * TAU, NULL, xn + k * TAU, (K - k) * TAU, t);
        for (; k < K; k++) {
            const float *z = xn + k * TAU, *o = ope + k * TAU;
            int32_t b = 0;
            float prod = 1.0f, sum = 0.0f;
            for (int i = 0; i < TAU; i++) {
                /* -0.0 >= 0 holds, so both zeros give bit 1. */
                b = (b << 1) | (z[i] >= 0.0f);
                prod *= o[i];
                sum += fabsf(z[i]);
            }
            /* prod_i 1/(1+e_i) as one division: each factor is in [1,2], so no overflow. */
            idx[(size_t)n * K + k] = b;
            s[(size_t)n * K + k] = prob ? 1.0f / prod : sum / prod;
        }
    }
    free(ope);
}

#ifdef __AVX512F__
/* dx += gs * ds/dz for chunks [0, returned) of nch, TAU dividing 16 (whole chunks per vector):
 * the layout of layer_hash_score_backward with rows run together. */
static size_t hash_score_backward_lanes(float *dx, const float *gs, const float *x, size_t nch,
                                        int TAU, int prob, float t) {
    const __m512 vc = _mm512_set1_ps(-2.0f / t), one = _mm512_set1_ps(1.0f);
    const __m512 two = _mm512_set1_ps(2.0f), gain = _mm512_set1_ps(2.0f / t);
    const __m512 zero = _mm512_setzero_ps();
    const size_t cpv = (size_t)(16 / TAU);                     /* chunks per vector */
    const __mmask16 gm = (__mmask16)((1u << cpv) - 1);
    /* lane i takes gs of chunk i / TAU */
    const __m512i bcast = _mm512_srlv_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(__builtin_ctz((unsigned)TAU)));
    size_t e = 0;
    for (; e + cpv <= nch; e += cpv) {
        const float *xe = x + e * TAU;
        float *dxe = dx + e * TAU;
        __m512 z = _mm512_loadu_ps(xe), a = _mm512_abs_ps(z);
        __m512 ex = layer_exp_ps(_mm512_mul_ps(a, vc)), o = _mm512_add_ps(one, ex);
        /* o * prod(1+e) <= 2^(TAU+1): one division serves both 1/(1+e_j) and 1/prod */
        __m512 den = _mm512_mul_ps(o, hash_chunk_mul(o, TAU));
        __m512 g = _mm512_permutexvar_ps(bcast, _mm512_maskz_loadu_ps(gm, gs + e));
        /* the scalar path's ds/da_j over one denominator:
         * prob:   (2/t) e_j / (o_j prod);  l1prob: (1 + 2 S e_j/o_j) / prod = (o_j + 2 S e_j) / (o_j prod) */
        __m512 num = prob ? _mm512_mul_ps(gain, ex)
                          : _mm512_fmadd_ps(_mm512_mul_ps(two, hash_chunk_add(a, TAU)), ex, o);
        __m512 d = _mm512_div_ps(_mm512_mul_ps(g, num), den);
        /* sign(z) * d with sign(0) = 0 */
        __mmask16 pos = _mm512_cmp_ps_mask(z, zero, _CMP_GT_OQ);
        __mmask16 neg = _mm512_cmp_ps_mask(z, zero, _CMP_LT_OQ);
        __m512 sd = _mm512_mask_sub_ps(_mm512_maskz_mov_ps(pos, d), neg, zero, d);
        _mm512_storeu_ps(dxe, _mm512_add_ps(_mm512_loadu_ps(dxe), sd));
    }
    return e;
}
#endif

/* dx (N,K*TAU) += gs * ds/dx; gs (N,K); x (N,K*TAU). */
void layer_hash_score_backward(float *dx, const float *gs, const float *x, int N, int K, int TAU,
                               layer_score_mode mode, float temp) {
    hash_check_sizes(N, K, TAU, mode, temp);
    const float t = mode == LAYER_SCORE_PROB ? temp : 1.0f;
    const int prob = mode == LAYER_SCORE_PROB;
    /* Chunk e = n*K + k sits at x + e*TAU and its gradient weight at gs[e]: the rows are one
     * array of N*K chunks, so only the last few chunks of the whole call miss the vector path. */
    const size_t nch = (size_t)N * K;
    size_t e0 = 0;
#ifdef __AVX512F__
    if (hash_tau_in_lanes(TAU)) e0 = hash_score_backward_lanes(dx, gs, x, nch, TAU, prob, t);
#endif
    if (e0 == nch) return;
    /* the chunks left over (all of them for other TAU or without AVX-512), a row's worth at a time */
    const int D = K * TAU;
    float *ope = layer_xmalloc((size_t)D * sizeof(float)); /* (K*TAU) 1 + e */
    float *sig = layer_xmalloc((size_t)D * sizeof(float)); /* (K*TAU) sigmoid(-2a/t) = e/(1+e) */
    float *ca = layer_xmalloc((size_t)D * sizeof(float));  /* (K*TAU) per-element factors: */
    float *cb = layer_xmalloc((size_t)D * sizeof(float));  /* dz = sign(z) (ca + cb * sig) */
    while (e0 < nch) {
        const int nc = nch - e0 < (size_t)K ? (int)(nch - e0) : K, nd = nc * TAU;
        const float *xn = x + e0 * TAU; /* (nc*TAU) */
        float *dxn = dx + e0 * TAU;     /* (nc*TAU) */
        hash_exp_terms(ope, sig, xn, nd, t);
        for (int k = 0; k < nc; k++) {
            float g = gs[e0 + k];
            const float *z = xn + k * TAU, *o = ope + k * TAU;
            float prod = 1.0f, sum = 0.0f;
            for (int i = 0; i < TAU; i++) {
                prod *= o[i];
                sum += fabsf(z[i]);
            }
            /* prob:   d/da_j prod_i sigmoid(2a_i/t) = p (2/t) sigmoid(-2a_j/t), p = 1/prod;
             * l1prob: s = S/prod(1+e) gives ds/da_j = (1 + 2 S sigmoid(-2a_j)) / prod(1+e). */
            float a = prob ? 0.0f : g / prod, c = prob ? g * (2.0f / t) / prod : 2.0f * sum * g / prod;
            for (int i = 0; i < TAU; i++) {
                ca[k * TAU + i] = a;
                cb[k * TAU + i] = c;
            }
        }
        int i = 0;
#ifdef __AVX512F__
        const __m512 zero = _mm512_setzero_ps();
        for (; i + 16 <= nd; i += 16) {
            __m512 z = _mm512_loadu_ps(xn + i);
            __m512 d = _mm512_fmadd_ps(_mm512_loadu_ps(cb + i), _mm512_loadu_ps(sig + i),
                                       _mm512_loadu_ps(ca + i));
            /* sign(z) * d with sign(0) = 0 */
            __mmask16 pos = _mm512_cmp_ps_mask(z, zero, _CMP_GT_OQ);
            __mmask16 neg = _mm512_cmp_ps_mask(z, zero, _CMP_LT_OQ);
            __m512 sd = _mm512_mask_sub_ps(_mm512_maskz_mov_ps(pos, d), neg, zero, d);
            _mm512_storeu_ps(dxn + i, _mm512_add_ps(_mm512_loadu_ps(dxn + i), sd));
        }
#endif
        for (; i < nd; i++) {
            float d = ca[i] + cb[i] * sig[i];
            dxn[i] += xn[i] > 0.0f ? d : xn[i] < 0.0f ? -d : 0.0f;
        }
        e0 += (size_t)nc;
    }
    free(ope);
    free(sig);
    free(ca);
    free(cb);
}

/* rowid (N,K); idx (N,K). */
void layer_hash_rowid_local(int32_t *rowid, const int32_t *idx, int N, int K, int TAU) {
    LAYER_ASSERT(N >= 0 && K > 0 && TAU >= 1 && TAU <= 30);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            int32_t i = idx[(size_t)n * K + k];
            LAYER_ASSERT(i >= 0 && i < (1 << TAU));
            rowid[(size_t)n * K + k] = (int32_t)(k << TAU) + i;
        }
}

float *layer_hash_store_new(int R, int OC) {
    LAYER_ASSERT(R > 0 && OC > 0);
    /* calloc for its untouched zero pages, then aligned by hand: the pointer calloc gave is
     * kept just before the store (malloc aligns to 16, so there are at least 16 bytes) */
    char *base = layer_xcalloc(layer_hash_store_floats(R, OC) * sizeof(float) + 64, 1);
    char *p = base + 64 - (uintptr_t)base % 64;
    memcpy(p - sizeof(char *), &base, sizeof(char *));
    return (float *)p;
}

void layer_hash_store_free(float *store) {
    if (!store) return;
    char *base;
    memcpy(&base, (char *)store - sizeof(char *), sizeof(char *));
    free(base);
}

void layer_hash_store_put(float *store, int R, int OC, int r, const float *row) {
    LAYER_ASSERT(r >= 0 && r < R);
    for (int o = 0; o < OC; o += LAYER_HASH_TILE) {
        int w = OC - o < LAYER_HASH_TILE ? OC - o : LAYER_HASH_TILE;
        memcpy(store + layer_hash_store_at(R, r, o), row + o, (size_t)w * sizeof(float));
    }
}

void layer_hash_store_get(float *row, const float *store, int R, int OC, int r) {
    LAYER_ASSERT(r >= 0 && r < R);
    for (int o = 0; o < OC; o += LAYER_HASH_TILE) {
        int w = OC - o < LAYER_HASH_TILE ? OC - o : LAYER_HASH_TILE;
        memcpy(row + o, store + layer_hash_store_at(R, r, o), (size_t)w * sizeof(float));
    }
}

/* y (N,OC), token n's outputs at y + n*ldy, = b + the shards' partials, shard by shard;
 * rowid, s (N,K); rows a store of R rows; b (OC) or NULL. */
static void forward_ref(float *y, const int32_t *rowid, const float *s, const float *rows,
                        const float *b, int ldy, int N, int K, int R, int OC) {
    LAYER_ASSERT(N >= 0 && K > 0 && R > 0 && OC > 0);
    for (int n = 0; n < N; n++) {
        float *yn = y + (size_t)n * ldy; /* (OC) */
        for (int o = 0; o < OC; o++) {
            float run = 0.0f;
            for (int k0 = 0; k0 < K; k0 += LAYER_HASH_SHARD) { /* shard by shard */
                float a = 0.0f;
                for (int k = k0; k < K && k < k0 + LAYER_HASH_SHARD; k++) {
                    int32_t r = rowid[(size_t)n * K + k];
                    LAYER_ASSERT(r >= 0 && r < R);
                    a += s[(size_t)n * K + k] * rows[layer_hash_store_at(R, r, o)];
                }
                run = k0 ? run + a : b ? b[o] + a : a;
            }
            yn[o] = run;
        }
    }
}

void layer_hash_forward_ref(float *y, const int32_t *rowid, const float *s, const float *rows,
                            const float *b, int N, int K, int R, int OC) {
    forward_ref(y, rowid, s, rows, b, OC, N, K, R, OC);
}

void layer_hash_forward_ld_ref(float *y, int ldy, const int32_t *rowid, const float *s,
                               const float *rows, const float *b, int N, int K, int R, int OC) {
    LAYER_ASSERT(ldy >= OC);
    forward_ref(y, rowid, s, rows, b, ldy, N, K, R, OC);
}

/* drows, gs (N,K), db (OC) += gradients (each may be NULL); dy (N,OC); stores of R rows. */
void layer_hash_backward_ref(float *drows, float *gs, float *db, const float *dy,
                             const int32_t *rowid, const float *s, const float *rows, int N,
                             int K, int R, int OC) {
    LAYER_ASSERT(N >= 0 && K > 0 && R > 0 && OC > 0);
    for (int n = 0; n < N; n++) {
        const float *g = dy + (size_t)n * OC; /* (OC) */
        if (db)
            for (int o = 0; o < OC; o++) db[o] += g[o];
        for (int k = 0; k < K; k++) {
            int32_t r = rowid[(size_t)n * K + k];
            LAYER_ASSERT(r >= 0 && r < R);
            float sv = s[(size_t)n * K + k];
            if (drows)
                for (int o = 0; o < OC; o++) drows[layer_hash_store_at(R, r, o)] += sv * g[o];
            if (gs) {
                float d = 0.0f;
                for (int o = 0; o < OC; o++) d += g[o] * rows[layer_hash_store_at(R, r, o)];
                gs[(size_t)n * K + k] += d;
            }
        }
    }
}

/* uniq (<= n) distinct values of rowid (n), increasing. */
int layer_hash_unique_rows(int32_t *uniq, const int32_t *rowid, int n, int R) {
    LAYER_ASSERT(n >= 0 && R > 0);
    /* A flag per row rather than a sort: O(n + R), and R is the size of a store that exists. */
    unsigned char *seen = layer_xcalloc((size_t)R, 1); /* (R) */
    for (int i = 0; i < n; i++) {
        LAYER_ASSERT(rowid[i] >= 0 && rowid[i] < R);
        seen[rowid[i]] = 1;
    }
    int m = 0;
    for (int r = 0; r < R; r++)
        if (seen[r]) uniq[m++] = r;
    free(seen);
    return m;
}
