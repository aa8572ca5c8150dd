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

/* Inputs of T segments of B streams, filled by the caller before trainer_rollout_forward:
 * enc/dec/tgt (T,B,L), reset (T,B). replay (T+1, B, S*C) holds M_0..M_T once forward ran. */
typedef struct trainer_rollout {
    int T, B, L;
    size_t msize; /* S*C, 0 when no memory is carried */
    trainer_rollout_mode mode;
    int32_t *enc, *dec, *tgt;
    uint8_t *reset;
    float *replay;
    trainer_arena **arenas; /* MRBP: 1, full: T */
    trainer_step_act **acts;
    float *dM, *dM_prev;    /* (B, S*C) */
    double loss;            /* full BPTT: summed loss of the forward */
} trainer_rollout;

trainer_rollout *trainer_rollout_create(const trainer_model *m, int T, int B, trainer_rollout_mode mode);
void trainer_rollout_free(trainer_rollout *r); /* NULL is fine */
/* Runs the T segments forward from the carried memory M (B,S*C), which is replaced by M_T.
 * MRBP computes only the memories (encoder and writer) and keeps them in the replay buffer;
 * full BPTT runs the whole model and keeps every segment's activations. Returns the number
 * of scored target tokens (local to this process). */
int64_t trainer_rollout_forward(trainer_rollout *r, trainer_model *m, float *M);
/* Adds grad_scale * d(summed loss) into the model's gradients, segment T down to 1; MRBP
 * recomputes each segment from its replayed memory first. M_T is detached (no gradient).
 * Returns the summed loss of the rollout. Needs trainer_rollout_forward first. */
double trainer_rollout_backward(trainer_rollout *r, trainer_model *m, float grad_scale);
/* Summed loss of the rollout from memory M (B,S*C), no gradients, nothing kept. (Uses the
 * replay buffer as scratch.) */
double trainer_rollout_loss(trainer_rollout *r, trainer_model *m, const float *M);
/* Scored target tokens of the filled inputs. */
int64_t trainer_rollout_count(const trainer_rollout *r);
/* Largest number of bytes the rollout's activation arenas held at once. */
size_t trainer_rollout_peak_bytes(const trainer_rollout *r);

#endif
