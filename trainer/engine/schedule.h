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
 * Blocks: the run's streams, in order, cut into blocks of `block` streams (the last may be
 * shorter); rank r owns the contiguous blocks [nblocks * r / P, nblocks * (r+1) / P). */
typedef struct trainer_schedule {
    int nstreams, block, nblocks; /* over the run */
    int P, rank;
    int first_block, nmine;       /* this rank's blocks */
    int first_stream, nstreams_mine;
    int passes;                   /* block passes per step on every rank */
} trainer_schedule;

/* Checks that P ranks can each own a block: returns 0, or -1 with a one-line message naming
 * streams and stream_block. */
int trainer_schedule_check(int streams, int block, int P, char *err, size_t n);
/* The schedule of rank `rank` of P (trainer_schedule_check must have passed). */
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

/* Evaluation and sampling run segment by segment over all of a rank's streams as one batch;
 * a rank whose streams are all done keeps making empty calls until every rank is done. This
 * is the agreement: 1 while any rank still has work. Collective. */
int trainer_schedule_any_active(comm_ctx *c, int active);

#endif
