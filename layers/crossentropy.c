/* Softmax cross-entropy over logits with ignorable targets; loss summed in double. */
#include "layers/layers.h"

#include <math.h>
#include <string.h>

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
