/* Optimizers and learning-rate schedule: AdamW for dense parameters, lazy sparse Adam for hash-table rows, clipping. */
#ifndef MEMTRAIN_TRAINER_OPTIM_H
#define MEMTRAIN_TRAINER_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/config/config.h"

/* One optimizer step, as the trainer runs it:
 *
 *   // dense gradients are already summed over ranks, so every rank has the same sum;
 *   // the tables' part is summed per shard by its owner and added in shard order
 *   double ss = trainer_sumsq(dense_grad, n_dense) + trainer_tables_grad_sumsq(tables);
 *   float scale = trainer_clip_scale(sqrt(ss), c->grad_clip);
 *   float lr = trainer_lr_at(step, c);            // step counts from 0
 *   trainer_adamw_step(p, g, m, v, n, lr, c->beta1, c->beta2, c->adam_eps, wd, step + 1, scale);
 *   trainer_adam k = trainer_adam_at(lr * c->table_lr_scale, ..., step + 1, scale);
 *   trainer_adam_apply(row, m_row, v_row, grad_row, W, &k);   // each touched table row
 *
 * Moments m and v start at zero and belong to the caller, one float per parameter. */

/* Learning rate of optimizer step `step` (0-based) of c->steps: linear warmup
 * lr * (step+1) / warmup for step < warmup, then cosine decay
 * min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2 with
 * progress = (step - warmup) / (steps - warmup), so the first step after warmup gets lr and
 * step == steps would get min_lr. Steps before 0 are read as 0; steps past the end get
 * min_lr. Never fails. */
float trainer_lr_at(int64_t step, const trainer_config *c);

/* AdamW on n dense parameters p (n) with gradient g (n) and moments m, v (n), updated in
 * place. The gradient used is g * grad_scale (grad_scale = 1 for none; the clipping factor
 * otherwise). t is the 1-based step number of this update, for bias correction. Weight decay
 * is decoupled: p -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * p); pass wd = 0 for parameters
 * that should not decay (norm gains, biases, embeddings if so wished). Asserts t >= 1. */
void trainer_adamw_step(float *p, const float *g, float *m, float *v, size_t n, float lr,
                        float beta1, float beta2, float eps, float wd, int64_t t,
                        float grad_scale);

/* The constants of one Adam update at 1-based step t: learning rate, betas, the step size
 * lr / (1 - beta1^t) and 1 / sqrt(1 - beta2^t) of the bias corrections, eps, weight decay and
 * the factor the gradient is multiplied by. */
typedef struct trainer_adam {
    float lr, beta1, beta2, step, isb2, eps, wd, grad_scale;
} trainer_adam;

trainer_adam trainer_adam_at(float lr, float beta1, float beta2, float eps, float wd, int64_t t,
                             float grad_scale);
/* Lazy Adam's pass over one touched table row (or a slice of it): Adam on n entries p, m, v
 * with gradient g, which is cleared (the next step's sum starts from zero). Entries not
 * passed, and their moments, stay exactly as they are: untouched rows' moments do not decay.
 * Each entry gets bitwise what trainer_adamw_step gives it (with the same wd). */
void trainer_adam_apply(float *p, float *m, float *v, float *g, size_t n, const trainer_adam *k);

/* sum_i g[i]^2 accumulated in double, in an order fixed by n alone, so equal inputs give
 * bitwise-equal sums on every rank and run. */
double trainer_sumsq(const float *g, size_t n);

/* Factor to multiply gradients by so their global norm is at most max_norm:
 * min(1, max_norm / (total_norm + 1e-6)); 1 when max_norm <= 0 (clipping off). A non-finite
 * total_norm gives 0 when clipping is on: the caller should treat such a step as failed. */
float trainer_clip_scale(double total_norm, float max_norm);

#endif
