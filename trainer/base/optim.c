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

/* The update's two constants at step t: lr / (1 - beta1^t) and 1 / sqrt(1 - beta2^t), in
 * double so large t does not lose the small remainder, rounded once. */
static void bias_corrections(float lr, float beta1, float beta2, int64_t t, float *step,
                             float *isb2) {
    LAYER_ASSERT(t >= 1);
    *step = (float)((double)lr / (1.0 - pow((double)beta1, (double)t)));
    *isb2 = (float)(1.0 / sqrt(1.0 - pow((double)beta2, (double)t)));
}

/* One parameter's Adam update; shared by the dense and sparse paths so a touched table row
 * gets bitwise what dense Adam would give it. lr m_hat / (sqrt(v_hat) + eps) is formed as
 * step m / (sqrt(v) isb2 + eps): one division and one square root per entry instead of three
 * divisions and a root, which made the update bound by the divider rather than by memory. */
static inline void adam_update(float *p, float *m, float *v, float g, float lr, float beta1,
                               float beta2, float step, float isb2, float eps, float wd) {
    float mi = beta1 * *m + (1.0f - beta1) * g;
    float vi = beta2 * *v + (1.0f - beta2) * g * g;
    *m = mi;
    *v = vi;
    *p -= step * mi / (sqrtf(vi) * isb2 + eps) + lr * wd * *p;
}

/* The update over n contiguous entries. restrict (the arrays never overlap) lets the compiler
 * vectorise it; without contraction (-std=c11) the vector code rounds exactly as the scalar. */
static void adam_range(float *restrict p, float *restrict m, float *restrict v,
                       const float *restrict g, size_t n, float lr, float beta1, float beta2,
                       float step, float isb2, float eps, float wd, float grad_scale) {
    for (size_t i = 0; i < n; i++)
        adam_update(&p[i], &m[i], &v[i], g[i] * grad_scale, lr, beta1, beta2, step, isb2, eps,
                    wd);
}

void trainer_adamw_step(float *p, const float *g, float *m, float *v, size_t n, float lr,
                        float beta1, float beta2, float eps, float wd, int64_t t,
                        float grad_scale) {
    float step, isb2;
    bias_corrections(lr, beta1, beta2, t, &step, &isb2);
    adam_range(p, m, v, g, n, lr, beta1, beta2, step, isb2, eps, wd, grad_scale);
}

trainer_adam trainer_adam_at(float lr, float beta1, float beta2, float eps, float wd, int64_t t,
                             float grad_scale) {
    trainer_adam k = {lr, beta1, beta2, 0, 0, eps, wd, grad_scale};
    bias_corrections(lr, beta1, beta2, t, &k.step, &k.isb2);
    return k;
}

void trainer_adam_apply(float *restrict p, float *restrict m, float *restrict v,
                        float *restrict g, size_t n, const trainer_adam *k) {
    adam_range(p, m, v, g, n, k->lr, k->beta1, k->beta2, k->step, k->isb2, k->eps, k->wd,
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
