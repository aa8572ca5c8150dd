/* One rollout of `horizon` segments per stream, a block of streams at a time: MRBP (replay buffer of memories, recompute backward) or full BPTT. */
#ifndef MEMTRAIN_TRAINER_ROLLOUT_H
#define MEMTRAIN_TRAINER_ROLLOUT_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/base/arena.h"
#include "trainer/model/model.h"

typedef enum trainer_rollout_mode {
    TRAINER_ROLLOUT_MRBP = 0,
    TRAINER_ROLLOUT_FULL,
} trainer_rollout_mode;

/* Inputs of T segments of B streams, filled by the caller before training: enc/dec/tgt
 * (B,T,L), reset (B,T), stream-major (trainer_rollout_at gives stream b's segment t).
 * Streams are computed in blocks of up to `block` streams (trainer_rollout_block): a block
 * is one batch for every kernel, and what a block contributes depends only on its streams'
 * data, not on which rank or which other blocks share the process. */
typedef struct trainer_rollout {
    int T, B, L;
    int block;    /* most streams computed together (default B) */
    size_t msize; /* S*C, 0 when no memory is carried */
    trainer_rollout_mode mode;
    int32_t *enc, *dec, *tgt; /* (B,T,L) */
    uint8_t *reset;           /* (B,T) */
    /* per block, (T, block, ...): segment t of the block's streams side by side */
    int32_t *benc, *bdec, *btgt; /* (T, block, L) */
    uint8_t *breset;             /* (T, block) */
    float *replay;               /* (T+1, block, msize): M_0..M_T of the block's streams */
    trainer_arena **arenas;      /* MRBP: 1, full: T */
    trainer_step_act **acts;
    float *dM, *dM_prev;         /* (block, msize) */
} trainer_rollout;

trainer_rollout *trainer_rollout_create(const trainer_model *m, int T, int B,
                                        trainer_rollout_mode mode);
void trainer_rollout_free(trainer_rollout *r); /* NULL is fine */
/* Computes streams in blocks of `block` (1 <= block); reallocates the block buffers. */
void trainer_rollout_set_block(trainer_rollout *r, int block);
/* Offset of stream b's segment t in enc, dec and tgt (L entries from there). */
static inline size_t trainer_rollout_at(const trainer_rollout *r, int b, int t) {
    return ((size_t)b * r->T + t) * r->L;
}

/* Trains on streams [b0, b0+nb) (nb <= block; nb = 0 is an empty block that makes the same
 * model calls, and so the same exchanges, as a real one), from their carried memories M
 * (nb, msize), which are replaced by the streams' M_T. Without carried memory the block's
 * nb x T segments are one batch of independent sequences: one forward, one backward. With
 * memory, MRBP: a memory pass over segments 1..T-1 keeps only M_1..M_T-1 (the replay
 * buffer), then segment T (computed once, writing M_T too) down to 1 (recomputed from their
 * replayed memories) is back-propagated, one segment's activations alive at a time; full
 * BPTT keeps all T segments' activations instead. Adds grad_scale * d(summed loss) into the
 * model's gradients (M_T detached). Returns the block's summed loss (in the order stream,
 * segment, token). */
double trainer_rollout_block(trainer_rollout *r, trainer_model *m, int b0, int nb, float *M,
                             float grad_scale);
/* Summed loss of the rollout from memories M (B, msize), no gradients, nothing kept; the
 * same batches as training, so the same values. */
double trainer_rollout_loss(trainer_rollout *r, trainer_model *m, const float *M);
/* Scored target tokens of the filled inputs. */
int64_t trainer_rollout_count(const trainer_rollout *r);
/* Largest number of bytes the activation arenas held at once. */
size_t trainer_rollout_peak_bytes(const trainer_rollout *r);

#endif
