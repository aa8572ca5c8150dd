/* One optimizer step: rollout forward and backward, gradient reduction, clipping, AdamW and lazy Adam. */
#ifndef MEMTRAIN_TRAINER_STEP_H
#define MEMTRAIN_TRAINER_STEP_H

#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "trainer/config.h"
#include "trainer/model.h"
#include "trainer/rollout.h"

typedef struct trainer_step_info {
    double loss_sum;      /* summed loss over all ranks */
    double tokens;        /* scored tokens over all ranks */
    double grad_norm;     /* global, before clipping */
    float lr;
    double sec_total, sec_alltoall, sec_allreduce; /* wall time; row exchanges; all-reduces */
    int64_t bytes_sent;   /* this rank, row exchanges */
    int64_t lookups, misses;
} trainer_step_info;

/* Trains on the rollout the caller filled (B = this rank's streams): stream by stream, forward
 * from its carried memory M + b*msize (replaced by the stream's last memory) and backward, its
 * gradients folded into double sums; then one all-reduce of
 * the dense gradients, table gradients to their owners, global-norm clipping, AdamW on dense
 * and lazy Adam on table rows, at the learning rate of `step` (0-based). Every stream is
 * computed alone and the sums are kept in double, so the result does not depend on how the
 * streams are dealt to ranks. Collective. Returns 0, or -1 with a one-line message in err
 * when the loss or the gradient norm is not finite; then no parameter was changed and every
 * rank returns -1. */
int trainer_step(trainer_model *m, trainer_rollout *ro, float *M, comm_ctx *comm,
                 const trainer_config *cfg, int64_t step, trainer_step_info *info, char *err,
                 size_t n);

#endif
