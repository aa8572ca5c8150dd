/* RMSNorm: scale each row by the inverse root mean square, then by a learned gain. */
#include "layers/layers.h"

#include <math.h>

#define RMSNORM_EPS 1e-5f

void layer_rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, int N, int C) {
    /* out, in (N,C); rstd (N); w (C) */
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
            double dot = 0.0;
            for (int c = 0; c < C; c++) dot += (double)g[c] * w[c] * x[c];
            float k = (float)(dot * r * r * r / C);
            for (int c = 0; c < C; c++) dx[c] += r * g[c] * w[c] - k * x[c];
        }
    }
}
