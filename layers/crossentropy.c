/* Softmax cross-entropy over logits with ignorable targets: a vectorised form and the double-precision reference. */
#include "layers/layers.h"

#include <math.h>
#include <string.h>

#include "layers/simd.h"

/* Per counted row: max, e_v = exp(l_v - max) and their sum in 16 float lanes added in a fixed
 * order, loss = log(sum) - (l_y - max) in double (one libm call per row, not per logit). With
 * dlogits, e_v is stored there and scaled in a second pass over the row (in L1). */
double layer_crossentropy(float *dlogits, int *count, const float *logits,
                          const int32_t *targets, int N, int V, float grad_scale) {
    /* dlogits, logits (N,V); targets (N) */
    double loss = 0.0;
    int counted = 0;
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        float *d = dlogits ? dlogits + (size_t)n * V : NULL;
        int32_t y = targets[n];
        if (y < 0) {
            if (d) memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        LAYER_ASSERT(y < V);
        float mx, sum;
#ifdef __AVX512F__
        __m512 vmx = _mm512_set1_ps(-INFINITY);
        for (int v = 0; v < V; v += 16)
            {
            __mmask16 m = layer_lanes(V - v);
            vmx = _mm512_mask_max_ps(vmx, m, vmx, _mm512_maskz_loadu_ps(m, l + v));
        }
        mx = _mm512_reduce_max_ps(vmx);
        vmx = _mm512_set1_ps(mx);
        __m512 vs = _mm512_setzero_ps();
        for (int v = 0; v < V; v += 16) {
            __mmask16 m = layer_lanes(V - v);
            __m512 e = _mm512_maskz_mov_ps(m, layer_exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, l + v), vmx)));
            vs = _mm512_add_ps(vs, e);
            if (d) _mm512_mask_storeu_ps(d + v, m, e);
        }
        sum = _mm512_reduce_add_ps(vs);
#else
        mx = l[0];
        for (int v = 1; v < V; v++) mx = l[v] > mx ? l[v] : mx;
        float a[4] = {0, 0, 0, 0};
        for (int v = 0; v < V; v++) {
            float e = layer_expf(l[v] - mx);
            a[v & 3] += e;
            if (d) d[v] = e;
        }
        sum = (a[0] + a[1]) + (a[2] + a[3]);
#endif
        loss += log((double)sum) - ((double)l[y] - mx);
        counted++;
        if (d) {
            float k = grad_scale / sum;
            for (int v = 0; v < V; v++) d[v] *= k;
            d[y] -= grad_scale;
        }
    }
    if (count) *count = counted;
    return loss;
}

double layer_crossentropy_ref(float *dlogits, int *count, const float *logits,
                              const int32_t *targets, int N, int V, float grad_scale) {
    double loss = 0.0;
    int counted = 0;
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        float *d = dlogits ? dlogits + (size_t)n * V : NULL;
        int32_t y = targets[n];
        if (y < 0) {
            if (d) memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        LAYER_ASSERT(y < V);
        /* subtracting the max keeps every exp <= 1, so no overflow for any logit scale */
        float mx = l[0];
        for (int v = 1; v < V; v++)
            if (l[v] > mx) mx = l[v];
        double sum = 0.0;
        for (int v = 0; v < V; v++) sum += exp((double)l[v] - mx);
        loss += log(sum) - ((double)l[y] - mx);
        counted++;
        if (d) {
            double inv = 1.0 / sum;
            for (int v = 0; v < V; v++) d[v] = grad_scale * (float)(exp((double)l[v] - mx) * inv);
            d[y] -= grad_scale;
        }
    }
    if (count) *count = counted;
    return loss;
}
