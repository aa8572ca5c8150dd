/* GELU activation in the tanh approximation (as in GPT-2): a vectorised form and the libm reference. */
#include "layers/layers.h"

#include <math.h>

#include "layers/simd.h"

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_CUBE 0.044715f

/* With u = sqrt(2/pi) (x + 0.044715 x^3) and s = sigmoid(2u) = 1 / (1 + exp(-2u)):
 *   gelu(x)  = 0.5 x (1 + tanh u) = x s
 *   gelu'(x) = s + 2 x s (1 - s) du/dx,   du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
 * One exp per element instead of tanhf, and no cancellation: s is in (0, 1). */
static inline float gelu_sig(float x) {
    float u = GELU_SCALE * (x + GELU_CUBE * x * x * x);
    return 1.0f / (1.0f + layer_expf(-2.0f * u));
}

#ifdef __AVX512F__
static inline __m512 gelu_sig_ps(__m512 x) {
    __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
    __m512 u = _mm512_mul_ps(_mm512_set1_ps(GELU_SCALE),
                             _mm512_add_ps(x, _mm512_mul_ps(_mm512_set1_ps(GELU_CUBE), x3)));
    __m512 e = layer_exp_ps(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u));
    return _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}
#endif

void layer_gelu_forward(float *out, const float *in, int N) {
    /* out, in (N) */
    int i = 0;
#ifdef __AVX512F__
    for (; i < N; i += 16) {
        __mmask16 m = layer_lanes(N - i);
        __m512 x = _mm512_maskz_loadu_ps(m, in + i);
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(x, gelu_sig_ps(x)));
    }
#endif
    for (; i < N; i++) out[i] = in[i] * gelu_sig(in[i]);
}

void layer_gelu_backward(float *dinp, const float *in, const float *dout, int N) {
    /* dinp, in, dout (N) */
    if (!dinp) return;
    int i = 0;
#ifdef __AVX512F__
    const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
    for (; i < N; i += 16) {
        __mmask16 m = layer_lanes(N - i);
        __m512 x = _mm512_maskz_loadu_ps(m, in + i), s = gelu_sig_ps(x);
        __m512 du = _mm512_mul_ps(_mm512_set1_ps(GELU_SCALE),
                                  _mm512_add_ps(one, _mm512_mul_ps(_mm512_set1_ps(3.0f * GELU_CUBE),
                                                                   _mm512_mul_ps(x, x))));
        __m512 t = _mm512_mul_ps(_mm512_mul_ps(two, x), _mm512_mul_ps(s, _mm512_sub_ps(one, s)));
        __m512 grad = _mm512_add_ps(s, _mm512_mul_ps(t, du));
        __m512 d = _mm512_maskz_loadu_ps(m, dinp + i);
        _mm512_mask_storeu_ps(dinp + i, m,
                              _mm512_add_ps(d, _mm512_mul_ps(grad, _mm512_maskz_loadu_ps(m, dout + i))));
    }
#endif
    for (; i < N; i++) {
        float x = in[i], s = gelu_sig(x);
        float du = GELU_SCALE * (1.0f + 3.0f * GELU_CUBE * x * x);
        float grad = s + 2.0f * x * (s * (1.0f - s)) * du;
        dinp[i] += grad * dout[i];
    }
}

void layer_gelu_forward_ref(float *out, const float *in, int N) {
    for (int i = 0; i < N; i++) {
        float x = in[i];
        float u = GELU_SCALE * (x + GELU_CUBE * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanhf(u));
    }
}

void layer_gelu_backward_ref(float *dinp, const float *in, const float *dout, int N) {
    if (!dinp) return;
    for (int i = 0; i < N; i++) {
        float x = in[i];
        float u = GELU_SCALE * (x + GELU_CUBE * x * x * x);
        float th = tanhf(u);
        float du = GELU_SCALE * (1.0f + 3.0f * GELU_CUBE * x * x);
        float grad = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
        dinp[i] += grad * dout[i];
    }
}
