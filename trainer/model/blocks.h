/* Building blocks of the models (projections, attention, FFN / memory block, memory writer): forward keeps activations, backward uses them. */
#ifndef MEMTRAIN_TRAINER_BLOCKS_H
#define MEMTRAIN_TRAINER_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

#include "layers/hash.h"
#include "layers/layers.h"
#include "trainer/base/arena.h"
#include "trainer/base/params.h"
#include "trainer/tables/tables.h"

/* How a block sees its parameters: each one a named field of the block's struct, pointing
 * into the model's one parameter block (w) and its gradient block (g), resolved once when
 * the block is allocated (mt_builder_bind). Nothing is looked up at run time.
 *
 *   mt_builder bld = {.params = &params, .tables = tables};
 *   mt_attn_define(&bld, &attn, "dec0.self", C, 1, LAYER_ATTN_CAUSAL, hash, tau);
 *   trainer_params_alloc(&params, seed);
 *   mt_builder_bind(&bld);                    // attn.norm.w, attn.qkv.b[0].w, ... are valid
 *   mt_attn_forward(&env, arena, &attn, &act, x0, NULL, B, T, T);
 */
typedef struct mt_param {
    float *w, *g; /* the tensor and its gradient, after mt_builder_bind */
    size_t off;   /* offset in the parameter block, set at definition */
} mt_param;

/* Collects the parameters blocks define, to point them in after allocation. */
typedef struct mt_builder {
    trainer_params *params;
    trainer_tables *tables;
    mt_param **refs; /* every defined field, in definition order */
    int n, cap;
} mt_builder;

/* Registers a dense tensor (see trainer_params_add) and remembers field p for binding. */
void mt_builder_param(mt_builder *b, mt_param *p, const char *name, size_t size, trainer_init init,
                      float std, int decay);
/* After trainer_params_alloc: every registered field's w and g point into the blocks. Frees
 * the list (the builder is done). */
void mt_builder_bind(mt_builder *b);

/* What the blocks read at run time besides their own parameters. */
typedef struct mt_env {
    trainer_tables *tables; /* resolves hashed rows */
    int NH;
    layer_score_mode score;
    float hash_temp;
    int rope_dims; /* 0: learned positions, no rotation */
    trainer_arena *scratch; /* a sublayer's temporaries, reset when it returns (the forward's
                               FFN hidden output, the backward's) */
} mt_env;

/* nout projections of one input (nout <= 3), dense (w[j] (OC,C)) or hashed (one shared index
 * into the table group `group`, biases b[j] (OC)). */
typedef struct mt_proj {
    int nout, C, OC, hash;
    mt_param w[3], b[3];
    int group; /* table group when hashed */
    int K, tau;
} mt_proj;

typedef struct mt_proj_act {
    int32_t *idx;            /* (N,K) buckets */
    float *s;                /* (N,K) scores */
    trainer_tables_act tact; /* what the table store keeps for the backward */
} mt_proj_act;

/* `rows`: input rows per segment per stream (for the table planner; hashed only). */
void mt_proj_define(mt_builder *b, mt_proj *p, const char *name, int nout, int C, int OC, int hash,
                    int tau, int rows);
/* out[j] (N,OC) from in (N,C); activations from the arena. */
void mt_proj_forward(const mt_env *e, trainer_arena *ar, const mt_proj *p, mt_proj_act *a,
                     float **out, const float *in, int N);
/* din (N,C) += ..., may be NULL; dout[j] (N,OC). */
void mt_proj_backward(const mt_env *e, trainer_arena *ar, const mt_proj *p, const mt_proj_act *a,
                      float *din, float *const *dout, const float *in, int N);

/* Pre-norm attention sublayer: x1 = x0 + O(Attn(Q(h), K(src), V(src))), h = RMSNorm(x0).
 * Self-attention when src is NULL (src = h, rotary positions if configured), cross-attention
 * otherwise (no positions). O is a dense projection for proj = dense and absent for hash. */
typedef struct mt_attn {
    int self, C;
    layer_attn_mask mask;
    mt_param norm;      /* (C) */
    mt_proj q, kv, qkv; /* self uses qkv; cross uses q and kv */
    int has_o;
    mt_proj o;
} mt_attn;

typedef struct mt_attn_act {
    int B, Tq, Tk;
    const float *x0, *src;
    float *rstd, *q, *k, *v, *att, *y, *x1; /* y: x1 itself without an output projection;
                                                RMSNorm(x0) is recomputed by the backward */
    mt_proj_act pa_q, pa_kv, pa_o;
} mt_attn_act;

/* q_rows, kv_rows: query and key/value rows per segment per stream (for the planner). */
void mt_attn_define(mt_builder *b, mt_attn *m, const char *name, int C, int self,
                    layer_attn_mask mask, int hash, int tau, int q_rows, int kv_rows);
/* x0 (B,Tq,C); src (B,Tk,C) or NULL; returns x1 (B,Tq,C) from the arena. */
float *mt_attn_forward(const mt_env *e, trainer_arena *ar, const mt_attn *m, mt_attn_act *a,
                       const float *x0, const float *src, int B, int Tq, int Tk);
/* dx0 (B,Tq,C) += from dx1 (residual included); dsrc (B,Tk,C) += when cross. */
void mt_attn_backward(const mt_env *e, trainer_arena *ar, const mt_attn *m, const mt_attn_act *a,
                      float *dx0, float *dsrc, const float *dx1);

/* Pre-norm feed-forward sublayer: x1 = x0 + F(RMSNorm(x0)), F = GELU MLP (dense) or the
 * memory block ML1 -> LayerNorm -> ML2 (hash). */
typedef struct mt_ffn {
    int C, hash, H;
    mt_param norm;           /* (C) */
    mt_proj fc1, fc2;        /* dense: C -> H = 4C -> C; hash: ML1 C -> H = K(tau+E) with tau
                                bits, ML2 H -> C with tau+E bits */
    mt_param ln_w, ln_b;     /* hash: LayerNorm between them, (H) each */
} mt_ffn;

typedef struct mt_ffn_act {
    int N;
    const float *x0;
    float *rstd;             /* (N): RMSNorm(x0) is recomputed by the backward */
    float *u;                /* (N,H): fc1 / ML1 output; its GELU / LayerNorm is recomputed
                                by the backward */
    float *lmean, *lrstd;    /* (N) LayerNorm statistics (hash) */
    float *x1;               /* (N,C) */
    mt_proj_act pa1, pa2;
} mt_ffn_act;

void mt_ffn_define(mt_builder *b, mt_ffn *m, const char *name, int C, int hash, int tau, int E,
                   int rows);
float *mt_ffn_forward(const mt_env *e, trainer_arena *ar, const mt_ffn *m, mt_ffn_act *a,
                      const float *x0, int N);
void mt_ffn_backward(const mt_env *e, trainer_arena *ar, const mt_ffn *m, const mt_ffn_act *a,
                     float *dx0, const float *dx1);

/* Memory writer (Memformer): slot i attends over [m_i ; E] with logits / write_temp, values
 * [m_i ; E W_V]; then biased memory normalisation m = (m' + v_i) / |m' + v_i| (forgetting
 * on) or m = m' / |m'| (forgetting off). */
typedef struct mt_writer {
    int C, S, forgetting;
    float temp;
    mt_proj q, kv;
    mt_param vbias; /* (S,C), also gives M_0 = v / |v| */
} mt_writer;

typedef struct mt_writer_act {
    int B, L;
    const float *M, *E;
    float *cat, *q, *k, *v, *att, *mp, *u, *norm, *Mout;
    mt_proj_act pa_q, pa_kv;
} mt_writer_act;

void mt_writer_define(mt_builder *b, mt_writer *w, int C, int S, int L, float temp,
                      int forgetting, int hash, int tau);
/* M (B,S,C), E (B,L,C) -> Mout (B,S,C) (from the arena). */
float *mt_writer_forward(const mt_env *e, trainer_arena *ar, const mt_writer *w, mt_writer_act *a,
                         const float *M, const float *E, int B, int L);
/* dM (B,S,C) +=, dE (B,L,C) += from dMout. */
void mt_writer_backward(const mt_env *e, trainer_arena *ar, const mt_writer *w,
                        const mt_writer_act *a, float *dM, float *dE, const float *dMout);
/* M0 (S,C) = v / |v| per slot; backward adds into the gradient of v. */
void mt_writer_initial(trainer_arena *ar, const mt_writer *w, float *M0);
void mt_writer_initial_backward(trainer_arena *ar, const mt_writer *w, const float *dM0);

#endif
