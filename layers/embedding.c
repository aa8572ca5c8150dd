/* Token embedding lookup and its scatter-add gradient. */
#include "layers/layers.h"

#include <string.h>

void layer_embedding_forward(float *out, const int32_t *tok, const float *wte, int N, int C) {
    /* out (N,C), tok (N), wte (V,C) */
    for (int n = 0; n < N; n++) {
        LAYER_ASSERT(tok[n] >= 0);
        memcpy(out + (size_t)n * C, wte + (size_t)tok[n] * C, (size_t)C * sizeof(float));
    }
}

void layer_embedding_backward(float *dwte, const float *dout, const int32_t *tok, int N, int C) {
    /* dwte (V,C), dout (N,C), tok (N) */
    if (!dwte) return;
    for (int n = 0; n < N; n++) {
        LAYER_ASSERT(tok[n] >= 0);
        float *dw = dwte + (size_t)tok[n] * C;
        const float *d = dout + (size_t)n * C;
        for (int c = 0; c < C; c++) dw[c] += d[c];
    }
}
