/* Memory replay back-propagation and full back-propagation through time over one rollout, a block of streams at a time. */
#include "trainer/engine/rollout.h"

#include <stdlib.h>
#include <string.h>

#include "layers/common.h"
#include "trainer/tables/tables.h"

static int narenas(const trainer_rollout *r) { return r->mode == TRAINER_ROLLOUT_FULL ? r->T : 1; }

static void free_block_buffers(trainer_rollout *r) {
    free(r->benc);
    free(r->bdec);
    free(r->btgt);
    free(r->breset);
    free(r->replay);
    free(r->dM);
    free(r->dM_prev);
}

void trainer_rollout_set_block(trainer_rollout *r, int block) {
    LAYER_ASSERT(block >= 1);
    free_block_buffers(r);
    r->block = block;
    size_t n = (size_t)r->T * block * r->L + 1, ms = r->msize ? r->msize : 1;
    r->benc = layer_xmalloc(n * sizeof(int32_t));
    r->bdec = layer_xmalloc(n * sizeof(int32_t));
    r->btgt = layer_xmalloc(n * sizeof(int32_t));
    r->breset = layer_xcalloc((size_t)r->T * block + 1, 1);
    r->replay = layer_xcalloc((size_t)(r->T + 1) * block * ms, sizeof(float));
    r->dM = layer_xcalloc((size_t)block * ms, sizeof(float));
    r->dM_prev = layer_xcalloc((size_t)block * ms, sizeof(float));
}

trainer_rollout *trainer_rollout_create(const trainer_model *m, int T, int B,
                                        trainer_rollout_mode mode) {
    const trainer_model_spec *s = trainer_model_get_spec(m);
    trainer_rollout *r = layer_xcalloc(1, sizeof(*r));
    r->T = T;
    r->B = B;
    r->L = s->L;
    r->mode = mode;
    r->msize = trainer_model_memory_size(m);
    size_t n = (size_t)T * B * r->L + 1;
    r->enc = layer_xmalloc(n * sizeof(int32_t));
    r->dec = layer_xmalloc(n * sizeof(int32_t));
    r->tgt = layer_xmalloc(n * sizeof(int32_t));
    r->reset = layer_xcalloc((size_t)T * B + 1, 1);
    r->arenas = layer_xcalloc(narenas(r), sizeof(trainer_arena *));
    for (int i = 0; i < narenas(r); i++) r->arenas[i] = trainer_arena_create((size_t)4 << 20);
    r->acts = layer_xcalloc(T, sizeof(trainer_step_act *));
    trainer_rollout_set_block(r, B > 0 ? B : 1);
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
    free_block_buffers(r);
    free(r);
}

int64_t trainer_rollout_count(const trainer_rollout *r) {
    int64_t n = 0;
    for (size_t i = 0; i < (size_t)r->T * r->B * r->L; i++) n += r->tgt[i] >= 0;
    return n;
}

/* Without carried memory: the block's nb x T segments as one batch (stream-major, as they
 * lie in the inputs). */
static trainer_batch whole_block(const trainer_rollout *r, int b0, int nb) {
    size_t off = trainer_rollout_at(r, b0, 0);
    trainer_batch bt = {.B = nb * r->T, .L = r->L, .enc_tok = r->enc + off, .dec_tok = r->dec + off,
                        .tgt = r->tgt + off, .reset = r->reset + (size_t)b0 * r->T};
    return bt;
}

/* Segment t of the block's nb streams side by side, from the gathered buffers. */
static trainer_batch segment_of_block(const trainer_rollout *r, int nb, int t) {
    size_t off = (size_t)t * nb * r->L;
    trainer_batch bt = {.B = nb, .L = r->L, .enc_tok = r->benc + off, .dec_tok = r->bdec + off,
                        .tgt = r->btgt + off, .reset = r->breset + (size_t)t * nb};
    return bt;
}

static void gather_block(trainer_rollout *r, int b0, int nb) {
    size_t L = (size_t)r->L;
    for (int t = 0; t < r->T; t++)
        for (int i = 0; i < nb; i++) {
            size_t src = trainer_rollout_at(r, b0 + i, t), dst = ((size_t)t * nb + i) * L;
            memcpy(r->benc + dst, r->enc + src, L * sizeof(int32_t));
            memcpy(r->bdec + dst, r->dec + src, L * sizeof(int32_t));
            memcpy(r->btgt + dst, r->tgt + src, L * sizeof(int32_t));
            r->breset[(size_t)t * nb + i] = r->reset[(size_t)(b0 + i) * r->T + t];
        }
}

/* M_t of the block's streams (t = 0..T): (nb, msize). */
static float *replay_at(const trainer_rollout *r, int nb, int t) {
    return r->replay + (size_t)t * nb * r->msize;
}

double trainer_rollout_block(trainer_rollout *r, trainer_model *m, int b0, int nb, float *M,
                             float grad_scale) {
    LAYER_ASSERT(nb >= 0 && nb <= r->block && b0 >= 0 && b0 + nb <= (r->B > b0 ? r->B : b0));
    trainer_tables *tb = trainer_model_tables(m);
    double loss = 0.0;
    int cnt;
    trainer_step_act *act;
    if (!r->msize) { /* nothing carried: every segment is an independent sequence */
        trainer_batch bt = whole_block(r, b0, nb);
        trainer_arena_reset(r->arenas[0]);
        loss = trainer_model_forward(m, r->arenas[0], &bt, NULL, NULL, &cnt, &act);
        trainer_model_backward(m, act, grad_scale, NULL, NULL);
        return loss;
    }
    size_t mb = (size_t)nb * r->msize * sizeof(float);
    gather_block(r, b0, nb);
    if (nb) memcpy(replay_at(r, nb, 0), M, mb);
    if (r->mode == TRAINER_ROLLOUT_FULL) { /* every segment's activations at once */
        for (int t = 0; t < r->T; t++) {
            trainer_batch bt = segment_of_block(r, nb, t);
            trainer_arena_reset(r->arenas[t]);
            loss += trainer_model_forward(m, r->arenas[t], &bt, replay_at(r, nb, t),
                                          replay_at(r, nb, t + 1), &cnt, &r->acts[t]);
        }
    } else { /* MRBP memory pass: only what writes the memory, only the memories kept. The
                last segment is the pass's last and the backward's first: its one forward
                below, keeping activations, writes M_T as well (the writer runs in every
                forward), so the pass stops a segment short. */
        trainer_tables_set_phase(tb, TRAINER_TABLES_MEMORY_PASS);
        for (int t = 0; t < r->T - 1; t++) {
            trainer_batch bt = segment_of_block(r, nb, t);
            trainer_arena_reset(r->arenas[0]);
            trainer_model_write_memory(m, r->arenas[0], &bt, replay_at(r, nb, t),
                                       replay_at(r, nb, t + 1));
        }
    }
    memset(r->dM, 0, mb);
    for (int t = r->T - 1; t >= 0; t--) {
        act = r->acts[t];
        if (r->mode == TRAINER_ROLLOUT_MRBP) {
            /* recompute from the replayed input memory, this time keeping activations (the
               last segment: computed the first time, still in the memory pass's phase) */
            int last = t == r->T - 1;
            trainer_batch bt = segment_of_block(r, nb, t);
            trainer_arena_reset(r->arenas[0]);
            loss += trainer_model_forward(m, r->arenas[0], &bt, replay_at(r, nb, t),
                                          last ? replay_at(r, nb, r->T) : NULL, &cnt, &act);
            if (last) trainer_tables_set_phase(tb, TRAINER_TABLES_RECOMPUTE);
        }
        /* the last memory of the rollout is carried on detached */
        trainer_model_backward(m, act, grad_scale, t < r->T - 1 ? r->dM : NULL, r->dM_prev);
        float *x = r->dM;
        r->dM = r->dM_prev;
        r->dM_prev = x;
    }
    trainer_tables_set_phase(tb, TRAINER_TABLES_PLAIN);
    if (nb) memcpy(M, replay_at(r, nb, r->T), mb);
    return loss;
}

double trainer_rollout_loss(trainer_rollout *r, trainer_model *m, const float *M) {
    double loss = 0.0;
    int cnt;
    for (int b0 = 0; b0 < r->B; b0 += r->block) {
        int nb = r->B - b0 < r->block ? r->B - b0 : r->block;
        if (!r->msize) {
            trainer_batch bt = whole_block(r, b0, nb);
            trainer_arena_reset(r->arenas[0]);
            loss += trainer_model_forward(m, r->arenas[0], &bt, NULL, NULL, &cnt, NULL);
            continue;
        }
        gather_block(r, b0, nb);
        memcpy(replay_at(r, nb, 0), M + (size_t)b0 * r->msize, (size_t)nb * r->msize * sizeof(float));
        for (int t = 0; t < r->T; t++) {
            trainer_batch bt = segment_of_block(r, nb, t);
            trainer_arena_reset(r->arenas[0]);
            loss += trainer_model_forward(m, r->arenas[0], &bt, replay_at(r, nb, t),
                                          replay_at(r, nb, t + 1), &cnt, NULL);
        }
    }
    return loss;
}

size_t trainer_rollout_peak_bytes(const trainer_rollout *r) {
    size_t s = 0;
    for (int i = 0; i < narenas(r); i++) s += trainer_arena_peak(r->arenas[i]);
    return s;
}
