/* One optimizer step: the rank's blocks forward and backward, gradient sums, clipping, AdamW and lazy Adam. */
#ifndef MEMTRAIN_TRAINER_STEP_H
#define MEMTRAIN_TRAINER_STEP_H

#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "trainer/config/config.h"
#include "trainer/model/model.h"
#include "trainer/engine/rollout.h"
#include "trainer/engine/schedule.h"
#include "trainer/base/timers.h"

typedef struct trainer_step_info {
    double loss_sum;      /* summed loss over all ranks */
    double tokens;        /* scored tokens over all ranks */
    double grad_norm;     /* global, before clipping */
    float lr;
    trainer_timers time;  /* compute, alltoall, allreduce, optimizer of this step */
    int64_t bytes_sent;   /* this rank, row exchanges */
    int64_t bytes_in_place; /* of them, read in place by the node's other ranks */
    int64_t lookups, misses;
} trainer_step_info;

/* Trains on the rollout the caller filled (this rank's streams of the schedule), at the
 * learning rate of `step` (0-based). The phases, each timed by its trainer_timer:
 *   - COMPUTE: the scored tokens are counted over ranks, then every block pass of the
 *     schedule runs forward and backward from the carried memories M (replaced by the
 *     rollout's last ones); row exchanges inside it count as ALLTOALL;
 *   - ALLREDUCE: the blocks' losses, summed in block order, the dense gradients (their
 *     double sums when the run has several blocks) and replicated table groups' gradients
 *     over all ranks;
 *   - OPTIMIZER: the global gradient norm (dense and owned table rows), clipping, AdamW on
 *     the dense parameters and one lazy-Adam pass over every touched table row.
 * The result does not depend on how the blocks are dealt to ranks (trainer/engine/schedule.h).
 * After the schedule's TRAINER_REPLAN_AFTER-th step the table plan is revised with the
 * distinct keys measured so far (trainer_tables_replan). Collective. Returns 0, or -1 with a one-line message in err when the loss or the gradient
 * norm is not finite; then no parameter was changed and every rank returns -1. */
int trainer_step(trainer_model *m, trainer_rollout *ro, trainer_schedule *sched, float *M,
                 comm_ctx *comm, const trainer_config *cfg, int64_t step, trainer_step_info *info,
                 char *err, size_t n);

#endif
