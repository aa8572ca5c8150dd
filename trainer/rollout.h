/* One rollout of `horizon` segments per stream: MRBP (replay buffer of memories, recompute backward) or full BPTT. */
#ifndef MEMTRAIN_TRAINER_ROLLOUT_H
#define MEMTRAIN_TRAINER_ROLLOUT_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/arena.h"
#include "trainer/model.h"

typedef enum trainer_rollout_mode {
    TRAINER_ROLLOUT_MRBP = 0,
    TRAINER_ROLLOUT_FULL,
} trainer_rollout_mode;

/* Inputs of T segments of B streams, filled by the caller before trainer_rollout_train:
 * enc/dec/tgt (B,T,L), reset (B,T). Streams are computed one at a time (a batch of one), so
 * what a stream contributes does not depend on which other streams share its process; the
 * activation arenas are shared by the streams. */
typedef struct trainer_rollout {
    int T, B, L;
    int first, nstreams; /* these are streams first..first+B-1 of nstreams (default 0 of B) */
    size_t msize; /* S*C, 0 when no memory is carried */
    trainer_rollout_mode mode;
    int32_t *enc, *dec, *tgt;
    uint8_t *reset;
    float *replay;          /* (B, T+1, S*C): M_0..M_T of every stream */
    trainer_arena **arenas; /* MRBP: 1, full: T */
    trainer_step_act **acts;
    float *dM, *dM_prev;    /* (S*C) */
    double loss;            /* full BPTT: summed loss of the stream being processed */
} trainer_rollout;

trainer_rollout *trainer_rollout_create(const trainer_model *m, int T, int B, trainer_rollout_mode mode);
void trainer_rollout_free(trainer_rollout *r); /* NULL is fine */
/* Called after the backward of stream b, whose summed loss was `loss`, e.g. to fold its
 * gradients away. */
typedef void (*trainer_rollout_stream_fn)(void *ctx, int b, double loss);
/* Trains on every stream in turn, from its carried memory M + b*msize, which is replaced by
 * the stream's M_T. MRBP: a memory pass keeps only M_1..M_T (the replay buffer), then segment
 * T down to 1 is recomputed from its replayed memory and back-propagated, one segment's
 * activations alive at a time. Full BPTT: all T segments run forward keeping their
 * activations, then back-propagate. Both add grad_scale * d(summed loss) into the model's
 * gradients (M_T detached) and call done(ctx, b) after stream b when done is not NULL.
 * Every lookup of a hashed projection is a collective exchange, so all ranks must make the
 * same number of stream passes: `passes` (>= B, the largest B of any rank); a rank with fewer
 * streams makes empty passes. Returns the summed loss. */
double trainer_rollout_train(trainer_rollout *r, trainer_model *m, float *M, float grad_scale,
                             int passes, trainer_rollout_stream_fn done, void *ctx);
/* Summed loss of the rollout from memories M (B,S*C), no gradients, nothing kept. */
double trainer_rollout_loss(trainer_rollout *r, trainer_model *m, const float *M);
/* Scored target tokens of the filled inputs. */
int64_t trainer_rollout_count(const trainer_rollout *r);
/* Largest number of bytes the activation arenas held at once. */
size_t trainer_rollout_peak_bytes(const trainer_rollout *r);

#endif
