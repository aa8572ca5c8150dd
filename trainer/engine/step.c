/* The optimizer step shared by training runs and benchmarks. */
#include "trainer/engine/step.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/common.h"
#include "trainer/base/optim.h"
#include "trainer/tables/tables.h"

/* AdamW over every dense tensor: weight decay only where the tensor asks for it. */
static void dense_step(trainer_params *p, const trainer_config *cfg, float lr, int64_t t,
                       float scale) {
    for (int i = 0; i < p->n; i++) {
        const trainer_tensor *x = &p->t[i];
        trainer_adamw_step(p->data + x->off, p->grad + x->off, p->m + x->off, p->v + x->off,
                           x->size, lr, cfg->beta1, cfg->beta2, cfg->adam_eps,
                           x->decay ? cfg->weight_decay : 0.0f, t, scale);
    }
    memset(p->grad, 0, p->total * sizeof(float));
}

static int not_finite(char *err, size_t n, const char *what, double v, int64_t step,
                      const trainer_config *cfg) {
    if (cfg->grad_clip > 0)
        snprintf(err, n, "%s is %s at step %lld; lower lr (set to %g) or grad_clip (set to %g)", what,
                 isnan(v) ? "NaN" : "infinite", (long long)step + 1, cfg->lr, cfg->grad_clip);
    else
        snprintf(err, n, "%s is %s at step %lld; lower lr (set to %g) or set grad_clip", what,
                 isnan(v) ? "NaN" : "infinite", (long long)step + 1, cfg->lr);
    return -1;
}

int trainer_step(trainer_model *m, trainer_rollout *ro, trainer_schedule *sched, float *M,
                 comm_ctx *comm, const trainer_config *cfg, int64_t step, trainer_step_info *info,
                 char *err, size_t n) {
    trainer_params *params = trainer_model_params(m);
    trainer_tables *tables = trainer_model_tables(m);
    trainer_tables_stats st0, st1;
    trainer_tables_get_stats(tables, &st0);
    memset(info, 0, sizeof(*info));
    trainer_timers *tm = &info->time;

    trainer_timer_start(tm, TRAINER_TIMER_COMPUTE);
    int64_t count = trainer_rollout_count(ro);
    comm_sum_i64(comm, &count, 1);
    double *block_loss = layer_xcalloc((size_t)sched->nblocks, sizeof(double));
    trainer_schedule_train(sched, ro, m, M, count > 0 ? (float)(1.0 / (double)count) : 0.0f,
                           block_loss);
    trainer_timer_stop(tm, TRAINER_TIMER_COMPUTE);
    trainer_tables_get_stats(tables, &st1);
    tm->sec[TRAINER_TIMER_ALLTOALL] = st1.exchange_seconds - st0.exchange_seconds;
    tm->sec[TRAINER_TIMER_COMPUTE] -= tm->sec[TRAINER_TIMER_ALLTOALL];

    trainer_timer_start(tm, TRAINER_TIMER_ALLREDUCE);
    /* each block's loss in its slot, added in block order: the same sum for any rank count */
    comm_sum_doubles(comm, block_loss, (size_t)sched->nblocks);
    double loss = 0.0;
    for (int b = 0; b < sched->nblocks; b++) loss += block_loss[b];
    free(block_loss);
    if (trainer_tables_fast(tables)) { /* float sums in the all-reduce's order (fixed for P) */
        if (sched->P > 1) comm_sum_floats(comm, params->grad, params->total);
    } else if (sched->nblocks > 1) {
        comm_sum_doubles(comm, params->grad64, params->total);
        trainer_params_unfold(params);
    }
    trainer_tables_reduce(tables); /* replicated groups */
    trainer_timer_stop(tm, TRAINER_TIMER_ALLREDUCE);

    trainer_timer_start(tm, TRAINER_TIMER_OPTIMIZER);
    /* dense gradients are the same on every rank after the sum; a table row lives on one */
    double sq = trainer_tables_grad_sumsq(tables);
    sq += trainer_sumsq(params->grad, params->total);
    info->loss_sum = loss;
    info->tokens = (double)count;
    info->grad_norm = sqrt(sq);
    info->lr = trainer_lr_at(step, cfg);
    int rc = 0;
    double mean = count > 0 ? loss / (double)count : 0.0;
    if (!isfinite(mean)) {
        rc = not_finite(err, n, "training loss", mean, step, cfg);
    } else if (!isfinite(info->grad_norm)) {
        rc = not_finite(err, n, "gradient norm", info->grad_norm, step, cfg);
    } else {
        float clip = trainer_clip_scale(info->grad_norm, cfg->grad_clip);
        dense_step(params, cfg, info->lr, step + 1, clip);
        trainer_tables_step(tables, info->lr * cfg->table_lr_scale, cfg->beta1, cfg->beta2,
                            cfg->adam_eps, step + 1, clip);
    }
    if (rc != 0) { /* leave the parameters as they were */
        memset(params->grad, 0, params->total * sizeof(float));
        trainer_tables_discard_grads(tables);
    }
    trainer_timer_stop(tm, TRAINER_TIMER_OPTIMIZER);
    /* the planner's first figures assume uniform buckets; after a few steps it knows */
    if (rc == 0 && ++sched->steps == TRAINER_REPLAN_AFTER) trainer_tables_replan(tables);
    trainer_tables_get_stats(tables, &st1);
    info->bytes_sent = st1.bytes_sent - st0.bytes_sent;
    info->bytes_in_place = st1.bytes_in_place - st0.bytes_in_place;
    info->lookups = st1.lookups - st0.lookups;
    info->misses = st1.misses - st0.misses;
    return rc;
}
