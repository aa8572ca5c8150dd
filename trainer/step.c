/* The optimizer step shared by training runs and benchmarks. */
#include "trainer/step.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/common.h"
#include "trainer/optim.h"

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

typedef struct fold_ctx {
    trainer_model *m;
    double *loss; /* (nstreams) by global stream */
    int first;
} fold_ctx;

/* After each stream: its gradients join the step's double sums, its loss its slot. */
static void fold_stream(void *ctx, int b, double loss) {
    fold_ctx *f = ctx;
    f->loss[f->first + b] = loss;
    trainer_params_fold(trainer_model_params(f->m));
    trainer_tables_fold(trainer_model_tables(f->m));
}

static int not_finite(char *err, size_t n, const char *what, double v, int64_t step,
                      const trainer_config *cfg) {
    snprintf(err, n, "%s is %s at step %lld; lower lr (now %g) or set grad_clip", what,
             isnan(v) ? "NaN" : "infinite", (long long)step + 1, cfg->lr);
    return -1;
}

int trainer_step(trainer_model *m, trainer_rollout *ro, float *M, comm_ctx *comm,
                 const trainer_config *cfg, int64_t step, trainer_step_info *info, char *err,
                 size_t n) {
    trainer_params *params = trainer_model_params(m);
    trainer_tables *tables = trainer_model_tables(m);
    trainer_tables_stats st0, st1;
    trainer_tables_get_stats(tables, &st0);
    memset(info, 0, sizeof(*info));
    double t0 = comm_time(), t;

    int64_t count = trainer_rollout_count(ro);
    double passes = ro->B;
    t = comm_time();
    comm_sum_i64(comm, &count, 1);
    comm_max_doubles(comm, &passes, 1);
    info->sec_allreduce += comm_time() - t;
    fold_ctx f = {m, layer_xcalloc((size_t)ro->nstreams, sizeof(double)), ro->first};
    trainer_rollout_train(ro, m, M, count > 0 ? (float)(1.0 / (double)count) : 0.0f, (int)passes,
                          fold_stream, &f);

    t = comm_time();
    /* each stream's loss in its slot, added in stream order: the same sum for any rank count */
    comm_sum_doubles(comm, f.loss, (size_t)ro->nstreams);
    double loss = 0.0;
    for (int s = 0; s < ro->nstreams; s++) loss += f.loss[s];
    free(f.loss);
    comm_sum_doubles(comm, params->grad64, params->total);
    info->sec_allreduce += comm_time() - t;
    trainer_params_unfold(params);
    trainer_tables_reduce_grads(tables);
    /* dense gradients are the same on every rank after the sum; a table row lives on one */
    double sq = trainer_tables_grad_sumsq(tables);
    t = comm_time();
    comm_sum_doubles(comm, &sq, 1);
    info->sec_allreduce += comm_time() - t;
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
    trainer_tables_get_stats(tables, &st1);
    info->sec_total = comm_time() - t0;
    info->sec_alltoall = st1.exchange_seconds - st0.exchange_seconds;
    info->bytes_sent = st1.bytes_sent - st0.bytes_sent;
    info->lookups = st1.lookups - st0.lookups;
    info->misses = st1.misses - st0.misses;
    return rc;
}
