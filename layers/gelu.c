/* GELU activation in the tanh approximation (as in GPT-2). */
#include "layers/layers.h"

#include <math.h>

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_CUBE 0.044715f

void layer_gelu_forward(float *out, const float *in, int N) {
    /* out, in (N) */
    for (int i = 0; i < N; i++) {
        float x = in[i];
        float u = GELU_SCALE * (x + GELU_CUBE * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanhf(u));
    }
}

void layer_gelu_backward(float *dinp, const float *in, const float *dout, int N) {
    /* dinp, in, dout (N) */
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
