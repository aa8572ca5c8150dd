/* Memory replay back-propagation and full back-propagation through time over one rollout, stream by stream. */
#include "trainer/rollout.h"

#include <stdlib.h>
#include <string.h>

#include "layers/common.h"

static int narenas(const trainer_rollout *r) { return r->mode == TRAINER_ROLLOUT_FULL ? r->T : 1; }

trainer_rollout *trainer_rollout_create(const trainer_model *m, int T, int B, trainer_rollout_mode mode) {
    const trainer_model_spec *s = trainer_model_get_spec(m);
    trainer_rollout *r = layer_xcalloc(1, sizeof(*r));
    r->T = T;
    r->B = B;
    r->first = 0;
    r->nstreams = B;
    r->L = s->L;
    r->mode = mode;
    r->msize = trainer_model_memory_size(m);
    size_t n = (size_t)T * B * r->L, ms = r->msize ? r->msize : 1;
    r->enc = layer_xmalloc(n * sizeof(int32_t));
    r->dec = layer_xmalloc(n * sizeof(int32_t));
    r->tgt = layer_xmalloc(n * sizeof(int32_t));
    r->reset = layer_xcalloc((size_t)T * B, 1);
    r->replay = layer_xcalloc((size_t)B * (T + 1) * ms, sizeof(float));
    r->dM = layer_xcalloc(ms, sizeof(float));
    r->dM_prev = layer_xcalloc(ms, sizeof(float));
    r->arenas = layer_xcalloc(narenas(r), sizeof(trainer_arena *));
    for (int i = 0; i < narenas(r); i++) r->arenas[i] = trainer_arena_create((size_t)4 << 20);
    r->acts = layer_xcalloc(T, sizeof(trainer_step_act *));
    return r;
}

void trainer_rollout_free(trainer_rollout *r) {
    if (!r) return;
    for (int i = 0; i < narenas(r); i++) trainer_arena_free(r->arenas[i]);
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

/* Segment t of stream b as a batch of one. */
static trainer_batch batch_at(const trainer_rollout *r, int b, int t) {
    size_t off = ((size_t)b * r->T + t) * r->L;
    trainer_batch bt = {.B = 1, .L = r->L, .enc_tok = r->enc + off, .dec_tok = r->dec + off,
                        .tgt = r->tgt + off, .reset = r->reset + (size_t)b * r->T + t};
    return bt;
}

/* M_t of stream b (t = 0..T). */
static float *replay_at(const trainer_rollout *r, int b, int t) {
    return r->msize ? r->replay + ((size_t)b * (r->T + 1) + t) * r->msize : NULL;
}

int64_t trainer_rollout_count(const trainer_rollout *r) {
    int64_t n = 0;
    for (size_t i = 0; i < (size_t)r->T * r->B * r->L; i++) n += r->tgt[i] >= 0;
    return n;
}

/* Memory pass of MRBP for stream b: M_1..M_T into the replay buffer, nothing else kept. */
static void memory_pass(trainer_rollout *r, trainer_model *m, int b) {
    for (int t = 0; t < r->T; t++) {
        trainer_batch bt = batch_at(r, b, t);
        trainer_arena_reset(r->arenas[0]);
        trainer_model_write_memory(m, r->arenas[0], &bt, replay_at(r, b, t), replay_at(r, b, t + 1));
    }
}

/* A stream pass with no tokens: the same sequence of model calls, and so of collective row
 * exchanges, as a real stream, contributing nothing. Ranks with fewer streams run these so
 * that every rank makes the same exchanges in the same order. */
static void ghost_pass(trainer_rollout *r, trainer_model *m) {
    trainer_tables *tb = trainer_model_tables(m);
    trainer_batch bt = {.B = 0, .L = r->L};
    int cnt;
    int mrbp = r->mode == TRAINER_ROLLOUT_MRBP && r->msize;
    if (mrbp) {
        trainer_tables_set_phase(tb, TRAINER_TABLES_MEMORY_PASS);
        for (int t = 0; t < r->T; t++) {
            trainer_arena_reset(r->arenas[0]);
            trainer_model_write_memory(m, r->arenas[0], &bt, NULL, NULL);
        }
    }
    trainer_tables_set_phase(tb, mrbp ? TRAINER_TABLES_RECOMPUTE : TRAINER_TABLES_PLAIN);
    for (int t = r->T - 1; t >= 0; t--) {
        trainer_step_act *act;
        trainer_arena_reset(r->arenas[0]);
        trainer_model_forward(m, r->arenas[0], &bt, NULL, NULL, &cnt, &act);
        trainer_model_backward(m, act, 0.0f, NULL, NULL);
    }
    trainer_tables_set_phase(tb, TRAINER_TABLES_PLAIN);
}

double trainer_rollout_train(trainer_rollout *r, trainer_model *m, float *M, float grad_scale,
                             int passes, trainer_rollout_stream_fn done, void *ctx) {
    double total = 0.0;
    for (int b = r->B; b < passes; b++) ghost_pass(r, m);
    for (int b = 0; b < r->B; b++) {
        double loss = 0.0;
        if (r->msize) memcpy(replay_at(r, b, 0), M + b * r->msize, r->msize * sizeof(float));
        if (r->mode == TRAINER_ROLLOUT_FULL) { /* every segment's activations at once */
            for (int t = 0; t < r->T; t++) {
                trainer_batch bt = batch_at(r, b, t);
                trainer_arena_reset(r->arenas[t]);
                int cnt;
                loss += trainer_model_forward(m, r->arenas[t], &bt, replay_at(r, b, t),
                                              replay_at(r, b, t + 1), &cnt, &r->acts[t]);
            }
        } else if (r->msize) {
            trainer_tables_set_phase(trainer_model_tables(m), TRAINER_TABLES_MEMORY_PASS);
            memory_pass(r, m, b);
            trainer_tables_set_phase(trainer_model_tables(m), TRAINER_TABLES_RECOMPUTE);
        }
        if (r->msize) memset(r->dM, 0, r->msize * sizeof(float));
        for (int t = r->T - 1; t >= 0; t--) {
            trainer_step_act *act = r->acts[t];
            if (r->mode == TRAINER_ROLLOUT_MRBP) {
                /* recompute from the replayed input memory, this time keeping activations */
                trainer_batch bt = batch_at(r, b, t);
                trainer_arena_reset(r->arenas[0]);
                int cnt;
                loss += trainer_model_forward(m, r->arenas[0], &bt, replay_at(r, b, t), NULL,
                                              &cnt, &act);
            }
            /* the last memory of the rollout is carried on detached */
            const float *dnext = (r->msize && t < r->T - 1) ? r->dM : NULL;
            trainer_model_backward(m, act, grad_scale, dnext, r->msize ? r->dM_prev : NULL);
            if (r->msize) memcpy(r->dM, r->dM_prev, r->msize * sizeof(float));
        }
        trainer_tables_set_phase(trainer_model_tables(m), TRAINER_TABLES_PLAIN);
        if (r->msize) memcpy(M + b * r->msize, replay_at(r, b, r->T), r->msize * sizeof(float));
        if (done) done(ctx, b, loss);
        total += loss;
    }
    return total;
}

double trainer_rollout_loss(trainer_rollout *r, trainer_model *m, const float *M) {
    double loss = 0.0;
    for (int b = 0; b < r->B; b++) {
        if (r->msize) memcpy(replay_at(r, b, 0), M + b * r->msize, r->msize * sizeof(float));
        for (int t = 0; t < r->T; t++) {
            trainer_batch bt = batch_at(r, b, t);
            trainer_arena_reset(r->arenas[0]);
            int cnt;
            loss += trainer_model_forward(m, r->arenas[0], &bt, replay_at(r, b, t),
                                          replay_at(r, b, t + 1), &cnt, NULL);
        }
    }
    return loss;
}

size_t trainer_rollout_peak_bytes(const trainer_rollout *r) {
    size_t s = 0;
    for (int i = 0; i < narenas(r); i++) s += trainer_arena_peak(r->arenas[i]);
    return s;
}
