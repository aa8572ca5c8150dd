/* RMSNorm: scale each row by the inverse root mean square, then by a learned gain; vectorised, with the plain loops as reference. */
#include "layers/layers.h"

#include <math.h>

#include "layers/simd.h"

#define RMSNORM_EPS 1e-5f

/* Sums of a row in 16 float lanes, added up in a fixed order: the result depends on C only,
 * never on the batch the row came in. */
#ifdef __AVX512F__
static inline float rms_sumsq(const float *x, int C) {
    __m512 a = _mm512_setzero_ps();
    for (int c = 0; c < C; c += 16) {
        __m512 v = _mm512_maskz_loadu_ps(layer_lanes(C - c), x + c);
        a = _mm512_fmadd_ps(v, v, a);
    }
    return _mm512_reduce_add_ps(a);
}
/* sum_c g w x */
static inline float rms_dot3(const float *g, const float *w, const float *x, int C) {
    __m512 a = _mm512_setzero_ps();
    for (int c = 0; c < C; c += 16) {
        __mmask16 m = layer_lanes(C - c);
        __m512 gw = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, g + c), _mm512_maskz_loadu_ps(m, w + c));
        a = _mm512_fmadd_ps(gw, _mm512_maskz_loadu_ps(m, x + c), a);
    }
    return _mm512_reduce_add_ps(a);
}
#else
static inline float rms_sumsq(const float *x, int C) {
    float a[4] = {0, 0, 0, 0};
    for (int c = 0; c < C; c++) a[c & 3] += x[c] * x[c];
    return (a[0] + a[1]) + (a[2] + a[3]);
}
static inline float rms_dot3(const float *g, const float *w, const float *x, int C) {
    float a[4] = {0, 0, 0, 0};
    for (int c = 0; c < C; c++) a[c & 3] += g[c] * w[c] * x[c];
    return (a[0] + a[1]) + (a[2] + a[3]);
}
#endif

void layer_rmsnorm_apply(float *out, const float *in, const float *w, const float *rstd, int N,
                         int C) {
    for (int n = 0; n < N; n++) {
        const float *x = in + (size_t)n * C;
        float *o = out + (size_t)n * C;
        float r = rstd[n];
        for (int c = 0; c < C; c++) o[c] = x[c] * r * w[c];
    }
}

void layer_rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, int N, int C) {
    /* out, in (N,C); rstd (N); w (C) */
    for (int n = 0; n < N; n++)
        rstd[n] = 1.0f / sqrtf(rms_sumsq(in + (size_t)n * C, C) / (float)C + RMSNORM_EPS);
    layer_rmsnorm_apply(out, in, w, rstd, N, C);
}

void layer_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *in,
                            const float *w, const float *rstd, int N, int C) {
    /* dinp, dout, in (N,C); dw, w (C); rstd (N).
     * With y = x r w and r = (mean x^2 + eps)^-1/2:
     *   dx_j = r (g_j w_j) - r^3 / C * x_j * sum_i g_i w_i x_i. */
    for (int n = 0; n < N; n++) {
        const float *x = in + (size_t)n * C;
        const float *g = dout + (size_t)n * C;
        float r = rstd[n];
        if (dw)
            for (int c = 0; c < C; c++) dw[c] += g[c] * x[c] * r;
        if (dinp) {
            float *dx = dinp + (size_t)n * C;
            float k = rms_dot3(g, w, x, C) * r * r * r / (float)C;
            for (int c = 0; c < C; c++) dx[c] += r * g[c] * w[c] - k * x[c];
        }
    }
}

void layer_rmsnorm_forward_ref(float *out, float *rstd, const float *in, const float *w, int N,
                               int C) {
    for (int n = 0; n < N; n++) {
        const float *x = in + (size_t)n * C;
        float *o = out + (size_t)n * C;
        double ss = 0.0; /* double: C can be thousands of squares */
        for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
        float r = (float)(1.0 / sqrt(ss / C + RMSNORM_EPS));
        for (int c = 0; c < C; c++) o[c] = x[c] * r * w[c];
        rstd[n] = r;
    }
}

void layer_rmsnorm_backward_ref(float *dinp, float *dw, const float *dout, const float *in,
                                const float *w, const float *rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *x = in + (size_t)n * C;
        const float *g = dout + (size_t)n * C;
        float r = rstd[n];
        if (dw)
            for (int c = 0; c < C; c++) dw[c] += g[c] * x[c] * r;
        if (dinp) {
            float *dx = dinp + (size_t)n * C;
            double dot = 0.0;
            for (int c = 0; c < C; c++) dot += (double)g[c] * w[c] * x[c];
            float k = (float)(dot * r * r * r / C);
            for (int c = 0; c < C; c++) dx[c] += r * g[c] * w[c] - k * x[c];
        }
    }
}
