/* LayerNorm over the channels of each row (the memory block's normalisation between ML1 and ML2); vectorised, with the plain loops as reference. */
#include <math.h>

#include "layers/layers.h"
#include "layers/simd.h"

#define LAYERNORM_EPS 1e-5f

/* Row sums in 16 float lanes added up in a fixed order (the result depends on C only). */
#ifdef __AVX512F__
static inline float ln_sum(const float *x, int C) {
    __m512 a = _mm512_setzero_ps();
    for (int c = 0; c < C; c += 16) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(layer_lanes(C - c), x + c));
    return _mm512_reduce_add_ps(a);
}
/* sum_c (x_c - m)^2 */
static inline float ln_var(const float *x, float m, int C) {
    __m512 a = _mm512_setzero_ps(), vm = _mm512_set1_ps(m);
    for (int c = 0; c < C; c += 16) {
        __mmask16 k = layer_lanes(C - c);
        __m512 d = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + c), vm);
        a = _mm512_fmadd_ps(d, d, a);
    }
    return _mm512_reduce_add_ps(a);
}
/* sums of dn = w g and of dn * xhat, xhat = (x - m) r */
static inline void ln_dots(float *sdn, float *sdnx, const float *w, const float *g, const float *x,
                           float m, float r, int C) {
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps(), vm = _mm512_set1_ps(m),
           vr = _mm512_set1_ps(r);
    for (int c = 0; c < C; c += 16) {
        __mmask16 k = layer_lanes(C - c);
        __m512 dn = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, w + c), _mm512_maskz_loadu_ps(k, g + c));
        __m512 xh = _mm512_mul_ps(_mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + c), vm), vr);
        a = _mm512_add_ps(a, dn);
        b = _mm512_fmadd_ps(dn, xh, b);
    }
    *sdn = _mm512_reduce_add_ps(a);
    *sdnx = _mm512_reduce_add_ps(b);
}
#else
static inline float ln_sum(const float *x, int C) {
    float a[4] = {0, 0, 0, 0};
    for (int c = 0; c < C; c++) a[c & 3] += x[c];
    return (a[0] + a[1]) + (a[2] + a[3]);
}
static inline float ln_var(const float *x, float m, int C) {
    float a[4] = {0, 0, 0, 0};
    for (int c = 0; c < C; c++) a[c & 3] += (x[c] - m) * (x[c] - m);
    return (a[0] + a[1]) + (a[2] + a[3]);
}
static inline void ln_dots(float *sdn, float *sdnx, const float *w, const float *g, const float *x,
                           float m, float r, int C) {
    float a[4] = {0, 0, 0, 0}, b[4] = {0, 0, 0, 0};
    for (int c = 0; c < C; c++) {
        float dn = w[c] * g[c];
        a[c & 3] += dn;
        b[c & 3] += dn * ((x[c] - m) * r);
    }
    *sdn = (a[0] + a[1]) + (a[2] + a[3]);
    *sdnx = (b[0] + b[1]) + (b[2] + b[3]);
}
#endif

void layer_layernorm_apply(float *out, const float *in, const float *w, const float *b,
                           const float *mean, const float *rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *x = in + (size_t)n * C; /* (C) */
        float *o = out + (size_t)n * C;      /* (C) */
        float m = mean[n], r = rstd[n];
        for (int i = 0; i < C; i++) o[i] = (x[i] - m) * r * w[i] + b[i];
    }
}

/* out (N,C), mean (N), rstd (N); in (N,C); w, b (C). */
void layer_layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                             const float *b, int N, int C) {
    LAYER_ASSERT(N >= 0 && C > 0);
    for (int n = 0; n < N; n++) {
        const float *x = in + (size_t)n * C; /* (C) */
        /* two passes: the variance of a centred row does not cancel catastrophically */
        float m = ln_sum(x, C) / (float)C;
        mean[n] = m;
        rstd[n] = 1.0f / sqrtf(ln_var(x, m, C) / (float)C + LAYERNORM_EPS);
    }
    layer_layernorm_apply(out, in, w, b, mean, rstd, N, C);
}

/* dinp (N,C), dw, db (C) += gradients (each may be NULL); dout, in (N,C); w (C); mean, rstd (N). */
void layer_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                              const float *in, const float *w, const float *mean,
                              const float *rstd, int N, int C) {
    LAYER_ASSERT(N >= 0 && C > 0);
    for (int n = 0; n < N; n++) {
        const float *x = in + (size_t)n * C;   /* (C) */
        const float *g = dout + (size_t)n * C; /* (C) */
        float m = mean[n], r = rstd[n];
        if (dw)
            for (int i = 0; i < C; i++) dw[i] += (x[i] - m) * r * g[i];
        if (db)
            for (int i = 0; i < C; i++) db[i] += g[i];
        if (!dinp) continue;
        /* dx = r * (dn - mean(dn) - xhat * mean(dn * xhat)), dn = w * g */
        float mdn, mdnx;
        ln_dots(&mdn, &mdnx, w, g, x, m, r, C);
        mdn /= (float)C;
        mdnx /= (float)C;
        float *dx = dinp + (size_t)n * C; /* (C) */
        for (int i = 0; i < C; i++) {
            float xhat = (x[i] - m) * r;
            dx[i] += r * (w[i] * g[i] - mdn - xhat * mdnx);
        }
    }
}

void layer_layernorm_forward_ref(float *out, float *mean, float *rstd, const float *in,
                                 const float *w, const float *b, int N, int C) {
    LAYER_ASSERT(N >= 0 && C > 0);
    for (int n = 0; n < N; n++) {
        const float *x = in + (size_t)n * C;
        float *o = out + (size_t)n * C;
        double s = 0.0;
        for (int i = 0; i < C; i++) s += x[i];
        double m = s / C, v = 0.0;
        for (int i = 0; i < C; i++) v += ((double)x[i] - m) * ((double)x[i] - m);
        float r = (float)(1.0 / sqrt(v / C + LAYERNORM_EPS));
        for (int i = 0; i < C; i++) o[i] = (x[i] - (float)m) * r * w[i] + b[i];
        mean[n] = (float)m;
        rstd[n] = r;
    }
}

void layer_layernorm_backward_ref(float *dinp, float *dw, float *db, const float *dout,
                                  const float *in, const float *w, const float *mean,
                                  const float *rstd, int N, int C) {
    LAYER_ASSERT(N >= 0 && C > 0);
    for (int n = 0; n < N; n++) {
        const float *x = in + (size_t)n * C;
        const float *g = dout + (size_t)n * C;
        double m = mean[n], r = rstd[n];
        for (int i = 0; i < C; i++) {
            if (dw) dw[i] += (float)(((double)x[i] - m) * r * g[i]);
            if (db) db[i] += g[i];
        }
        if (!dinp) continue;
        double mdn = 0.0, mdnx = 0.0;
        for (int i = 0; i < C; i++) {
            double dn = (double)w[i] * g[i];
            mdn += dn;
            mdnx += dn * ((double)x[i] - m) * r;
        }
        mdn /= C;
        mdnx /= C;
        for (int i = 0; i < C; i++) {
            double xhat = ((double)x[i] - m) * r;
            dinp[(size_t)n * C + i] += (float)(r * ((double)w[i] * g[i] - mdn - xhat * mdnx));
        }
    }
}
