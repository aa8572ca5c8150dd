/* Optimizers and learning-rate schedule: AdamW, lazy sparse Adam for table rows, gradient clipping. */
#include "trainer/base/optim.h"

#include <math.h>
#include <string.h>

#include "layers/common.h"

/* M_PI is not part of C11 or plain POSIX. */
static const double trainer_pi = 3.14159265358979323846;

float trainer_lr_at(int64_t step, const trainer_config *c) {
    double lr = c->lr, min_lr = c->min_lr;
    if (step < 0) step = 0;
    if (step < c->warmup) return (float)(lr * (double)(step + 1) / (double)c->warmup);
    int64_t decay = c->steps - c->warmup;
    if (decay <= 0 || step >= c->steps) return (float)min_lr;
    double progress = (double)(step - c->warmup) / (double)decay;
    return (float)(min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(trainer_pi * progress)));
}

/* Bias corrections 1 - beta^t, in double so large t does not lose the small remainder. */
static void bias_corrections(float beta1, float beta2, int64_t t, float *bc1, float *bc2) {
    LAYER_ASSERT(t >= 1);
    *bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    *bc2 = (float)(1.0 - pow((double)beta2, (double)t));
}

/* One parameter's Adam update; shared by the dense and sparse paths so a touched table row
 * gets bitwise what dense Adam would give it. */
static inline void adam_update(float *p, float *m, float *v, float g, float lr, float beta1,
                               float beta2, float bc1, float bc2, float eps, float wd) {
    float mi = beta1 * *m + (1.0f - beta1) * g;
    float vi = beta2 * *v + (1.0f - beta2) * g * g;
    *m = mi;
    *v = vi;
    float m_hat = mi / bc1;
    float v_hat = vi / bc2;
    *p -= lr * (m_hat / (sqrtf(v_hat) + eps) + wd * *p);
}

/* The update over n contiguous entries. restrict (the arrays never overlap) lets the compiler
 * vectorise it; without contraction (-std=c11) the vector code rounds exactly as the scalar. */
static void adam_range(float *restrict p, float *restrict m, float *restrict v,
                       const float *restrict g, size_t n, float lr, float beta1, float beta2,
                       float bc1, float bc2, float eps, float wd, float grad_scale) {
    for (size_t i = 0; i < n; i++)
        adam_update(&p[i], &m[i], &v[i], g[i] * grad_scale, lr, beta1, beta2, bc1, bc2, eps, wd);
}

void trainer_adamw_step(float *p, const float *g, float *m, float *v, size_t n, float lr,
                        float beta1, float beta2, float eps, float wd, int64_t t,
                        float grad_scale) {
    float bc1, bc2;
    bias_corrections(beta1, beta2, t, &bc1, &bc2);
    adam_range(p, m, v, g, n, lr, beta1, beta2, bc1, bc2, eps, wd, grad_scale);
}

trainer_adam trainer_adam_at(float lr, float beta1, float beta2, float eps, float wd, int64_t t,
                             float grad_scale) {
    trainer_adam k = {lr, beta1, beta2, 0, 0, eps, wd, grad_scale};
    bias_corrections(beta1, beta2, t, &k.bc1, &k.bc2);
    return k;
}

void trainer_adam_apply(float *restrict p, float *restrict m, float *restrict v,
                        float *restrict g, size_t n, const trainer_adam *k) {
    adam_range(p, m, v, g, n, k->lr, k->beta1, k->beta2, k->bc1, k->bc2, k->eps, k->wd,
               k->grad_scale);
    memset(g, 0, n * sizeof(float));
}

double trainer_sumsq(const float *g, size_t n) {
    /* Four running sums break the add dependency chain; the grouping depends only on n. */
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += (double)g[i] * g[i];
        s1 += (double)g[i + 1] * g[i + 1];
        s2 += (double)g[i + 2] * g[i + 2];
        s3 += (double)g[i + 3] * g[i + 3];
    }
    for (; i < n; i++) s0 += (double)g[i] * g[i];
    return (s0 + s1) + (s2 + s3);
}

float trainer_clip_scale(double total_norm, float max_norm) {
    if (max_norm <= 0.0f) return 1.0f;
    if (!isfinite(total_norm)) return 0.0f;
    double s = (double)max_norm / (total_norm + 1e-6);
    return s < 1.0 ? (float)s : 1.0f;
}
