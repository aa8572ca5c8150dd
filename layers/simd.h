/* Vector exp and lane-order helpers shared by the element-wise kernels (internal to layers/). */
#ifndef MEMTRAIN_LAYERS_SIMD_H
#define MEMTRAIN_LAYERS_SIMD_H

#include <stdint.h>
#include <string.h>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* These are function definitions in a header, against the codebase's habit, because they
 * must inline into every element-wise loop: a call per vector costs as much as the work.
 *
 * exp(x) as Cephes evaluates it: x = m ln2 + r, |r| <= ln2/2, exp(r) by a degree-7
 * polynomial, then scaled by 2^m; about 1 ulp over the float range. Inputs are clamped to
 * [-104, 89]: below, the result is 0 (as expf gives, denormals aside); above, +inf. The
 * AVX-512 and the scalar form compute the same operations in the same order, so a vector
 * lane and the scalar tail give the same bits wherever the result is a normal float.
 * NaN in gives NaN out. */

#define LAYER_EXP_LO (-104.0f)
#define LAYER_EXP_HI 89.0f

#ifdef __AVX512F__
static inline __m512 layer_exp_ps(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(LAYER_EXP_LO)), _mm512_set1_ps(LAYER_EXP_HI));
    __m512 m = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(m, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(m, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.9875691500e-4f), r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, m);
}

/* Lane mask of the first n (0..16) lanes. */
static inline __mmask16 layer_lanes(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)(0xFFFFu >> (16 - n));
}
#endif

/* The scalar form. fmaf would be a libm call where the target has no FMA, so the portable
 * build spells the products out; with FMA available the compiler contracts nothing under
 * -std=c11, and fmaf maps to the instruction, matching the vector lanes bit for bit. */
#if defined(__FMA__)
#define LAYER_FMA(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#define LAYER_FMA(a, b, c) ((a) * (b) + (c))
#endif

static inline float layer_expf(float x) {
    if (x != x) return x;
    x = x < LAYER_EXP_LO ? LAYER_EXP_LO : x > LAYER_EXP_HI ? LAYER_EXP_HI : x;
    float m = __builtin_rintf(x * 1.44269504088896341f);
    float r = LAYER_FMA(-m, 0.693359375f, x);
    r = LAYER_FMA(-m, -2.12194440e-4f, r);
    float p = LAYER_FMA(1.9875691500e-4f, r, 1.3981999507e-3f);
    p = LAYER_FMA(p, r, 8.3334519073e-3f);
    p = LAYER_FMA(p, r, 4.1665795894e-2f);
    p = LAYER_FMA(p, r, 1.6666665459e-1f);
    p = LAYER_FMA(p, r, 5.0000001201e-1f);
    p = LAYER_FMA(p, r * r, r + 1.0f);
    /* p * 2^m in two steps, so m down to -150 and up to 128 stay exact or saturate as scalef */
    int e = (int)m, e1 = e / 2, e2 = e - e1;
    uint32_t b1 = (uint32_t)(e1 + 127) << 23, b2 = (uint32_t)(e2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, sizeof(s1));
    memcpy(&s2, &b2, sizeof(s2));
    return p * s1 * s2;
}

#endif
