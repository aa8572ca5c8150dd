/* Memory replay back-propagation and full back-propagation through time over one rollout. */
#include "trainer/rollout.h"

#include <stdlib.h>
#include <string.h>

#include "layers/common.h"

trainer_rollout *trainer_rollout_create(const trainer_model *m, int T, int B, trainer_rollout_mode mode) {
    const trainer_model_spec *s = trainer_model_get_spec(m);
    trainer_rollout *r = layer_xcalloc(1, sizeof(*r));
    r->T = T;
    r->B = B;
    r->L = s->L;
    r->mode = mode;
    r->msize = trainer_model_memory_size(m);
    size_t n = (size_t)T * B * r->L;
    r->enc = layer_xmalloc(n * sizeof(int32_t));
    r->dec = layer_xmalloc(n * sizeof(int32_t));
    r->tgt = layer_xmalloc(n * sizeof(int32_t));
    r->reset = layer_xcalloc((size_t)T * B, 1);
    r->replay = layer_xcalloc((size_t)(T + 1) * B * (r->msize ? r->msize : 1), sizeof(float));
    r->dM = layer_xcalloc((size_t)B * (r->msize ? r->msize : 1), sizeof(float));
    r->dM_prev = layer_xcalloc((size_t)B * (r->msize ? r->msize : 1), sizeof(float));
    int na = mode == TRAINER_ROLLOUT_FULL ? T : 1;
    r->arenas = layer_xcalloc(na, sizeof(trainer_arena *));
    for (int i = 0; i < na; i++) r->arenas[i] = trainer_arena_create((size_t)16 << 20);
    r->acts = layer_xcalloc(T, sizeof(trainer_step_act *));
    return r;
}

void trainer_rollout_free(trainer_rollout *r) {
    if (!r) return;
    int na = r->mode == TRAINER_ROLLOUT_FULL ? r->T : 1;
    for (int i = 0; i < na; i++) trainer_arena_free(r->arenas[i]);
    free(r->arenas);
    free(r->acts);
    free(r->enc);
    free(r->dec);
    free(r->tgt);
    free(r->reset);
    free(r->replay);
    free(r->dM);
    free(r->dM_prev);
    free(r);
}

static trainer_batch batch_at(const trainer_rollout *r, int t) {
    size_t off = (size_t)t * r->B * r->L;
    trainer_batch b = {.B = r->B, .L = r->L, .enc_tok = r->enc + off, .dec_tok = r->dec + off,
                       .tgt = r->tgt + off, .reset = r->reset + (size_t)t * r->B};
    return b;
}

static float *replay_at(const trainer_rollout *r, int t) {
    return r->msize ? r->replay + (size_t)t * r->B * r->msize : NULL;
}

int64_t trainer_rollout_count(const trainer_rollout *r) {
    int64_t n = 0;
    for (size_t i = 0; i < (size_t)r->T * r->B * r->L; i++) n += r->tgt[i] >= 0;
    return n;
}

int64_t trainer_rollout_forward(trainer_rollout *r, trainer_model *m, float *M) {
    size_t mbytes = (size_t)r->B * r->msize * sizeof(float);
    if (r->msize) memcpy(replay_at(r, 0), M, mbytes);
    r->loss = 0.0;
    for (int t = 0; t < r->T; t++) {
        trainer_batch b = batch_at(r, t);
        if (r->mode == TRAINER_ROLLOUT_FULL) {
            trainer_arena_reset(r->arenas[t]);
            int cnt;
            r->loss += trainer_model_forward(m, r->arenas[t], &b, replay_at(r, t),
                                             replay_at(r, t + 1), &cnt, &r->acts[t]);
        } else if (r->msize) {
            /* MRBP keeps nothing of the segment but the memory it writes */
            trainer_arena_reset(r->arenas[0]);
            trainer_model_write_memory(m, r->arenas[0], &b, replay_at(r, t), replay_at(r, t + 1));
        }
    }
    if (r->msize) memcpy(M, replay_at(r, r->T), mbytes);
    return trainer_rollout_count(r);
}

double trainer_rollout_backward(trainer_rollout *r, trainer_model *m, float grad_scale) {
    size_t mfloats = (size_t)r->B * r->msize;
    if (r->msize) memset(r->dM, 0, mfloats * sizeof(float));
    double loss = 0.0;
    for (int t = r->T - 1; t >= 0; t--) {
        trainer_step_act *act;
        if (r->mode == TRAINER_ROLLOUT_FULL) {
            act = r->acts[t];
        } else {
            trainer_batch b = batch_at(r, t);
            trainer_arena_reset(r->arenas[0]);
            int cnt;
            /* recompute from the replayed input memory, this time keeping activations */
            loss += trainer_model_forward(m, r->arenas[0], &b, replay_at(r, t), NULL, &cnt, &act);
        }
        /* the last memory of the rollout is carried on detached */
        const float *dnext = (r->msize && t < r->T - 1) ? r->dM : NULL;
        trainer_model_backward(m, act, grad_scale, dnext, r->msize ? r->dM_prev : NULL);
        if (r->msize) memcpy(r->dM, r->dM_prev, mfloats * sizeof(float));
    }
    return r->mode == TRAINER_ROLLOUT_FULL ? r->loss : loss;
}

double trainer_rollout_loss(trainer_rollout *r, trainer_model *m, const float *M) {
    double loss = 0.0;
    if (r->msize) memcpy(replay_at(r, 0), M, (size_t)r->B * r->msize * sizeof(float));
    for (int t = 0; t < r->T; t++) {
        trainer_batch b = batch_at(r, t);
        trainer_arena *a = r->arenas[0];
        trainer_arena_reset(a);
        int cnt;
        loss += trainer_model_forward(m, a, &b, replay_at(r, t), replay_at(r, t + 1), &cnt, NULL);
    }
    return loss;
}

size_t trainer_rollout_peak_bytes(const trainer_rollout *r) {
    int na = r->mode == TRAINER_ROLLOUT_FULL ? r->T : 1;
    size_t s = 0;
    for (int i = 0; i < na; i++) s += trainer_arena_peak(r->arenas[i]);
    return s;
}
