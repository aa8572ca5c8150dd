/* Who computes which block of streams, and the one order of exchanges every rank follows in a step. */
#ifndef MEMTRAIN_TRAINER_SCHEDULE_H
#define MEMTRAIN_TRAINER_SCHEDULE_H

#include <stddef.h>

#include "comm/comm.h"
#include "trainer/model/model.h"
#include "trainer/engine/rollout.h"

/* The rule this module owns: every rank makes the same exchanges in the same order. Each
 * lookup of a hashed projection and each block-end gradient push is a collective call over
 * all ranks (trainer/tables/tables.h), so every rank must run the same sequence of model calls:
 *
 *   for pass = 0 .. passes-1 (the most blocks any rank owns):
 *       a block of this rank's streams, or an empty block (zero streams, the same calls)
 *       when this rank has no block left;
 *       the block end: its gradients leave it (tables: to the step's sums on the owners,
 *       dense: into the step's double sum when the run has several blocks).
 *
 * Inside a block, trainer/engine/rollout.c makes the model calls in an order fixed by the model
 * and the horizon alone. Code that needs a new lookup adds it to the model, never to one
 * rank's path.
 *
 * Every collective of a step is started here, in rollout.c or in step.c, or by the table store
 * when one of them calls it: the lookups of each hashed projection call (rollout.c through the
 * model; the MRBP recompute's lookups of kept rows make no exchange, on every rank alike,
 * because rollout.c tells the store which pass it runs), the block ends (here), then in
 * trainer_step the token count, the block losses, the dense gradients, the replicated groups,
 * the gradient norm and, once per schedule, the re-plan. The run (trainer/run/) adds only
 * collectives between steps, each an agreement of all ranks: validation (its lanes' sums and
 * the all-done test below), signals and failures, checkpoints.
 *
 * Blocks: the run's streams, in order, cut into blocks of `block` streams (the last may be
 * shorter); rank r owns the contiguous blocks [nblocks * r / P, nblocks * (r+1) / P). */
typedef struct trainer_schedule {
    int nstreams, block, nblocks; /* over the run */
    int P, rank;
    int first_block, nmine;       /* this rank's blocks */
    int first_stream, nstreams_mine;
    int passes;                   /* block passes per step on every rank */
    int steps;                    /* steps taken with this schedule (trainer_step counts) */
} trainer_schedule;

/* Steps of a schedule after which trainer_step revises the table plan with measured distinct
 * keys. */
enum { TRAINER_REPLAN_AFTER = 5 };

/* Checks that P ranks can each own a block: returns 0, or -1 with a one-line message naming
 * streams and stream_block. */
int trainer_schedule_check(int streams, int block, int P, char *err, size_t n);
/* The schedule of rank `rank` of P. With fewer blocks than ranks some ranks own none and make
 * the one pass empty (evaluation); training checks trainer_schedule_check first. */
trainer_schedule trainer_schedule_make(int streams, int block, int P, int rank);
/* Tells the model's table store how many blocks a step sums over. */
void trainer_schedule_attach(const trainer_schedule *s, trainer_model *m);

/* One step's forward and backward over this rank's blocks (the rollout holds their inputs,
 * stream-major, first_stream first), every rank the same passes; M (nstreams_mine, msize)
 * carried memories, replaced by the rollout's last ones. Gradients of the summed loss times
 * grad_scale go to the model; block_loss[first_block + i] receives block i's summed loss
 * (block_loss has nblocks entries; the others are left alone). Collective. */
void trainer_schedule_train(const trainer_schedule *s, trainer_rollout *r, trainer_model *m,
                            float *M, float grad_scale, double *block_loss);


#endif
