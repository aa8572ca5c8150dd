/* Dense affine layer through OpenBLAS sgemm, with the plain triple loops kept as reference. */
#include "layers/layers.h"

#include <cblas.h>

void layer_blas_single_thread(void) { openblas_set_num_threads(1); }

static void linear_bias_grad(float *db, const float *dout, int N, int OC) {
    /* db (OC), dout (N,OC) */
    for (int n = 0; n < N; n++) {
        const float *d = dout + (size_t)n * OC;
        for (int o = 0; o < OC; o++) db[o] += d[o];
    }
}

void layer_linear_forward(float *out, const float *in, const float *w, const float *b, int N,
                          int C, int OC) {
    /* out (N,OC), in (N,C), w (OC,C), b (OC) */
    if (N <= 0 || OC <= 0) return;
    if (C <= 0) { /* sgemm rejects k = 0 on some BLAS builds; the product is empty */
        for (size_t i = 0; i < (size_t)N * OC; i++) out[i] = 0.0f;
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, in, C, w, C, 0.0f,
                    out, OC);
    }
    if (b)
        for (int n = 0; n < N; n++) {
            float *o = out + (size_t)n * OC;
            for (int j = 0; j < OC; j++) o[j] += b[j];
        }
}

void layer_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *in,
                           const float *w, int N, int C, int OC) {
    /* dinp (N,C), dw (OC,C), db (OC), dout (N,OC), in (N,C), w (OC,C) */
    if (N <= 0 || C <= 0 || OC <= 0) return;
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, w, C,
                    1.0f, dinp, C);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, in, C,
                    1.0f, dw, C);
    if (db) linear_bias_grad(db, dout, N, OC);
}

void layer_linear_forward_ref(float *out, const float *in, const float *w, const float *b, int N,
                              int C, int OC) {
    for (int n = 0; n < N; n++) {
        const float *x = in + (size_t)n * C;
        for (int o = 0; o < OC; o++) {
            const float *wr = w + (size_t)o * C;
            float s = b ? b[o] : 0.0f;
            for (int c = 0; c < C; c++) s += x[c] * wr[c];
            out[(size_t)n * OC + o] = s;
        }
    }
}

void layer_linear_backward_ref(float *dinp, float *dw, float *db, const float *dout,
                               const float *in, const float *w, int N, int C, int OC) {
    for (int n = 0; n < N; n++) {
        const float *d = dout + (size_t)n * OC;
        const float *x = in + (size_t)n * C;
        for (int o = 0; o < OC; o++) {
            const float *wr = w + (size_t)o * C;
            for (int c = 0; c < C; c++) {
                if (dinp) dinp[(size_t)n * C + c] += d[o] * wr[c];
                if (dw) dw[(size_t)o * C + c] += d[o] * x[c];
            }
        }
    }
    if (db) linear_bias_grad(db, dout, N, OC);
}
