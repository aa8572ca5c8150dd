/* The four model configurations (decoder | memformer) x (dense | hash): one segment step forward and backward. */
#ifndef MEMTRAIN_TRAINER_MODEL_H
#define MEMTRAIN_TRAINER_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "layers/hash.h"
#include "trainer/base/arena.h"
#include "trainer/base/params.h"
#include "trainer/config/config.h"
#include "trainer/tables/plan.h"
#include "trainer/tables/tables.h"

/* What the model computes; filled from the run config (trainer_spec_from_config). */
typedef struct trainer_model_spec {
    int memformer;   /* 0: GPT-style decoder over windows; 1: Memformer encoder-decoder */
    int hash;        /* projections: 0 dense GEMMs, 1 MemoryFormer memory layers */
    int C, NH;       /* d_model, heads */
    int n_layers;    /* decoder arch */
    int enc_layers, dec_layers;
    int L;           /* seg_len */
    int S;           /* mem_slots */
    int memory;      /* memformer: external memory on */
    int forgetting;  /* memformer: biased memory normalisation on */
    float write_temp;
    int rope_dims;   /* rotary dims per head; 0 = learned positions */
    int tau, expand_bits;
    layer_score_mode score;
    float hash_temp;
    int vocab;       /* output classes; input ids also take BOS = vocab */
    uint64_t seed;
    /* how table groups are served (trainer/tables/plan.h); streams = 0: every group fetched, no
     * plan (tests). P is taken from the communicator. */
    trainer_plan_run tables;
    int define_only; /* 1: the parameters and tables are described, not allocated (for
                        reports such as memtrain plan; such a model cannot compute) */
} trainer_model_spec;

/* One segment of B streams. Ids are in [0, vocab]; vocab is BOS (also used for padding). */
typedef struct trainer_batch {
    int B, L;
    const int32_t *enc_tok; /* (B,L) previous segment (memformer encoder input) */
    const int32_t *dec_tok; /* (B,L) inputs: targets shifted right by one */
    const int32_t *tgt;     /* (B,L) targets in [0,vocab), -1 = not scored */
    const uint8_t *reset;   /* (B) 1: a document starts here, memory restarts at M_0 */
} trainer_batch;

typedef struct trainer_model trainer_model;
typedef struct trainer_step_act trainer_step_act;

/* Builds the model: registers and initialises dense parameters (replicated on every rank) and
 * hash tables (each unit on its owner rank of comm). The model owns its params and tables;
 * comm must outlive it. Collective. */
trainer_model *trainer_model_create(const trainer_model_spec *spec, comm_ctx *comm);
void trainer_model_free(trainer_model *m); /* NULL is fine */
const trainer_model_spec *trainer_model_get_spec(const trainer_model *m);
trainer_params *trainer_model_params(trainer_model *m);
trainer_tables *trainer_model_tables(trainer_model *m);
/* Width of the carried memory per stream in floats (S*C), 0 when the model carries none. */
size_t trainer_model_memory_size(const trainer_model *m);

/* The most bytes the backward's scratch arena (one sublayer's temporaries) has held. */
size_t trainer_model_scratch_peak(const trainer_model *m);
/* Multiply-adds per token of one forward pass (projections, attention, head), for FLOP figures. */
double trainer_model_flops_per_token(const trainer_model *m);

/* Forward of one segment. M_prev (B,S,C) is the carried memory (read only for streams that do
 * not reset; may be NULL when nothing is carried); M_next (B,S,C) receives the written memory.
 * All activations come from `arena` and stay there for trainer_model_backward until the arena
 * is reset. Returns the summed loss over scored targets, *count their number; *act receives
 * the activation record (NULL allowed when no backward follows). */
double trainer_model_forward(trainer_model *m, trainer_arena *arena, const trainer_batch *b,
                             const float *M_prev, float *M_next, int *count,
                             trainer_step_act **act);
/* Only what produces M_next (encoder and memory writer; nothing for models without memory):
 * the no-gradient pass of MRBP. Same M_next as trainer_model_forward, bit for bit. */
void trainer_model_write_memory(trainer_model *m, trainer_arena *arena, const trainer_batch *b,
                                const float *M_prev, float *M_next);
/* Logits (B*L, vocab) the forward recorded in act computed. */
const float *trainer_step_logits(const trainer_step_act *act);
/* Backward of the segment recorded in act: the loss gradient is grad_scale * d(sum loss),
 * plus <dM_next, M_next> when dM_next (B,S,C) is not NULL. Adds into the parameter and table
 * gradients; writes dM_prev (B,S,C) (zero for streams that reset) when not NULL. Uses the
 * arena the forward used. */
void trainer_model_backward(trainer_model *m, trainer_step_act *act, float grad_scale,
                            const float *dM_next, float *dM_prev);

/* Buffers for running B streams segment by segment outside a rollout (evaluation, sampling):
 * one segment's inputs, the carried memory before (M) and after (Mn) it, and an arena. */
typedef struct trainer_segments {
    int B, L;
    size_t msize;
    int32_t *enc, *dec, *tgt; /* (B,L) */
    uint8_t *reset;           /* (B) */
    float *M, *Mn;            /* (B, msize) */
    trainer_arena *arena;
} trainer_segments;

trainer_segments *trainer_segments_create(const trainer_model *m, int B);
void trainer_segments_free(trainer_segments *s); /* NULL is fine */
/* Forward of the current inputs from M (writing Mn), activations in the reset arena; returns
 * the summed loss, *count the scored targets, *act the record (may be NULL). */
double trainer_segments_forward(trainer_model *m, trainer_segments *s, int *count,
                                trainer_step_act **act);
/* The same over the first n positions only, dec and tgt laid out (B, n): what a decoder
 * without an encoder computes there does not depend on later positions (sampling grows the
 * prefix a token at a time). Not for a Memformer, whose encoder reads the whole segment. */
double trainer_segments_forward_prefix(trainer_model *m, trainer_segments *s, int n, int *count,
                                       trainer_step_act **act);
/* Mn = the memory written after the current inputs (when no forward wrote it), unless
 * `written`; then M and Mn trade places: the next segment starts from it. */
void trainer_segments_advance(trainer_model *m, trainer_segments *s, int written);

/* Fills a model spec from a validated config. */
void trainer_spec_from_config(trainer_model_spec *spec, const trainer_config *cfg);

#endif
