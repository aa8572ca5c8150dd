/* LayerNorm over the channels of each row (the memory block's normalisation between ML1 and ML2). */
#include <math.h>

#include "layers/layers.h"

#define LAYERNORM_EPS 1e-5f

/* out (N,C), mean (N), rstd (N); in (N,C); w, b (C). */
void layer_layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                             const float *b, int N, int C) {
    LAYER_ASSERT(N >= 0 && C > 0);
    for (int n = 0; n < N; n++) {
        const float *x = in + (size_t)n * C; /* (C) */
        float *o = out + (size_t)n * C;      /* (C) */
        /* Two passes in float: the variance of a centred row does not cancel catastrophically. */
        float m = 0.0f;
        for (int i = 0; i < C; i++) m += x[i];
        m /= (float)C;
        float v = 0.0f;
        for (int i = 0; i < C; i++) {
            float d = x[i] - m;
            v += d * d;
        }
        v /= (float)C;
        float r = 1.0f / sqrtf(v + LAYERNORM_EPS);
        for (int i = 0; i < C; i++) o[i] = (x[i] - m) * r * w[i] + b[i];
        mean[n] = m;
        rstd[n] = r;
    }
}

/* dinp (N,C), dw, db (C) += gradients (each may be NULL); dout, in (N,C); w (C); mean, rstd (N). */
void layer_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                              const float *in, const float *w, const float *mean,
                              const float *rstd, int N, int C) {
    LAYER_ASSERT(N >= 0 && C > 0);
    for (int n = 0; n < N; n++) {
        const float *x = in + (size_t)n * C;    /* (C) */
        const float *g = dout + (size_t)n * C;  /* (C) */
        float m = mean[n], r = rstd[n];
        if (dw || db) {
            for (int i = 0; i < C; i++) {
                if (dw) dw[i] += (x[i] - m) * r * g[i];
                if (db) db[i] += g[i];
            }
        }
        if (!dinp) continue;
        /* dx = r * (dn - mean(dn) - xhat * mean(dn * xhat)), dn = w * g, xhat the normalised row. */
        float mdn = 0.0f, mdnx = 0.0f;
        for (int i = 0; i < C; i++) {
            float dn = w[i] * g[i];
            mdn += dn;
            mdnx += dn * (x[i] - m) * r;
        }
        mdn /= (float)C;
        mdnx /= (float)C;
        float *dx = dinp + (size_t)n * C; /* (C) */
        for (int i = 0; i < C; i++) {
            float xhat = (x[i] - m) * r;
            dx[i] += r * (w[i] * g[i] - mdn - xhat * mdnx);
        }
    }
}
