/* Dense math layers: forward and backward kernels, float32, no MPI (see common.h for the shape legend). */
#ifndef MEMTRAIN_LAYERS_H
#define MEMTRAIN_LAYERS_H

#include <stdint.h>

#include "layers/common.h"

/* Conventions (llm.c style): outputs first, then inputs, then sizes. A *_forward writes its
 * outputs. A *_backward ADDS into every gradient it is given (callers zero them once per
 * step); a NULL gradient pointer means "not needed" and is skipped. */

/* ---- token embedding (embedding.c) ---- */
/* out (N,C) = wte[tok[n]]; tok (N) in [0,V); wte (V,C). */
void layer_embedding_forward(float *out, const int32_t *tok, const float *wte, int N, int C);
/* dwte (V,C) += dout rows at tok. */
void layer_embedding_backward(float *dwte, const float *dout, const int32_t *tok, int N, int C);

/* ---- positions (position.c) ---- */
/* Learned: out (B,T,C) = in + wpe[t]; wpe (Tmax,C), t < Tmax. out may alias in. */
void layer_posemb_forward(float *out, const float *in, const float *wpe, int B, int T, int C);
/* dinp (B,T,C) += dout; dwpe (T,C) += sum over b of dout. */
void layer_posemb_backward(float *dinp, float *dwpe, const float *dout, int B, int T, int C);
/* Rotary: rotates pairs (2i, 2i+1), i < rot/2, of every head's first `rot` dims (rot even,
 * rot <= C/NH) by angle (pos0 + t) * base^(-2i/rot). out (B,T,C) may alias x (B,T,C). */
void layer_rope_forward(float *out, const float *x, int B, int T, int C, int NH, int rot,
                        float base, int pos0);
/* dx (B,T,C) += inverse rotation of dout. */
void layer_rope_backward(float *dx, const float *dout, int B, int T, int C, int NH, int rot,
                         float base, int pos0);

/* ---- normalisation (rmsnorm.c, layernorm.c); eps = 1e-5 ---- */
/* out (N,C) = in * rstd * w; rstd (N) kept for backward; w (C). */
void layer_rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, int N, int C);
/* out (N,C) = in * rstd * w with the rstd the forward kept: bitwise the forward's out (a
 * backward recomputes it rather than keeping it). */
void layer_rmsnorm_apply(float *out, const float *in, const float *w, const float *rstd, int N,
                         int C);
void layer_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *in,
                            const float *w, const float *rstd, int N, int C);
/* Plain loops with double sums: the references of the two above. */
void layer_rmsnorm_forward_ref(float *out, float *rstd, const float *in, const float *w, int N,
                               int C);
void layer_rmsnorm_backward_ref(float *dinp, float *dw, const float *dout, const float *in,
                                const float *w, const float *rstd, int N, int C);
/* out (N,C) = (in - mean) * rstd * w + b; mean, rstd (N) kept for backward; w, b (C). */
void layer_layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                             const float *b, int N, int C);
/* out (N,C) = (in - mean) * rstd * w + b with the statistics the forward kept: bitwise the
 * forward's out (a backward recomputes it rather than keeping it). */
void layer_layernorm_apply(float *out, const float *in, const float *w, const float *b,
                           const float *mean, const float *rstd, int N, int C);
void layer_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                              const float *in, const float *w, const float *mean,
                              const float *rstd, int N, int C);
void layer_layernorm_forward_ref(float *out, float *mean, float *rstd, const float *in,
                                 const float *w, const float *b, int N, int C);
void layer_layernorm_backward_ref(float *dinp, float *dw, float *db, const float *dout,
                                  const float *in, const float *w, const float *mean,
                                  const float *rstd, int N, int C);
/* The fast norms sum a row in 16 float lanes added in a fixed order; the references sum in
 * double. Either way a row's result depends on its own values and C only. */

/* ---- dense linear (linear.c): OpenBLAS sgemm, with the plain loops kept as reference ---- */
/* One OpenBLAS thread in this process. A threaded sgemm splits its sums by the core count,
 * so results would depend on where a process runs; ranks are the parallelism here. */
void layer_blas_single_thread(void);
/* out (N,OC) = in (N,C) @ w^T + b; w (OC,C); b (OC) or NULL. */
void layer_linear_forward(float *out, const float *in, const float *w, const float *b, int N,
                          int C, int OC);
/* dinp (N,C) += dout @ w; dw (OC,C) += dout^T @ in; db (OC) += column sums of dout. */
void layer_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *in,
                           const float *w, int N, int C, int OC);
void layer_linear_forward_ref(float *out, const float *in, const float *w, const float *b, int N,
                              int C, int OC);
void layer_linear_backward_ref(float *dinp, float *dw, float *db, const float *dout,
                               const float *in, const float *w, int N, int C, int OC);

/* ---- GELU, tanh form (gelu.c) ---- */
/* out (N) = gelu(in), as x * sigmoid(2u) with one vector exp per element. */
void layer_gelu_forward(float *out, const float *in, int N);
/* dinp (N) += gelu'(in) * dout. */
void layer_gelu_backward(float *dinp, const float *in, const float *dout, int N);
/* The references: 0.5 x (1 + tanhf(u)) through libm. */
void layer_gelu_forward_ref(float *out, const float *in, int N);
void layer_gelu_backward_ref(float *dinp, const float *in, const float *dout, int N);

/* ---- multi-head attention core (attention.c) ----
 * Projections are not part of it: q (B,Tq,C), k and v (B,Tk,C) are already projected and
 * split into NH heads of HS = C/NH channels each. Scores are (q . k) * scale.
 * Masks:
 *   LAYER_ATTN_FULL    every query sees every key (bidirectional self- or cross-attention);
 *   LAYER_ATTN_CAUSAL  Tq == Tk, query t sees keys 0..t;
 *   LAYER_ATTN_SLOT    Tk = Tq + E: query i sees key i and keys Tq..Tk-1 (memory writer:
 *                      slot i attends to itself and to the E encoder outputs only). */
typedef enum layer_attn_mask {
    LAYER_ATTN_FULL = 0,
    LAYER_ATTN_CAUSAL,
    LAYER_ATTN_SLOT,
} layer_attn_mask;

/* out (B,Tq,C); att (B,NH,Tq,Tk) keeps the softmax probabilities for backward (masked entries 0). */
void layer_attention_forward(float *out, float *att, const float *q, const float *k,
                             const float *v, int B, int Tq, int Tk, int C, int NH, float scale,
                             layer_attn_mask mask);
/* dq (B,Tq,C), dk, dv (B,Tk,C) += gradients; datt_scratch (Tq,Tk) is workspace. */
void layer_attention_backward(float *dq, float *dk, float *dv, float *datt_scratch,
                              const float *dout, const float *q, const float *k, const float *v,
                              const float *att, int B, int Tq, int Tk, int C, int NH, float scale,
                              layer_attn_mask mask);
/* Plain-loop reference versions of the two above (same contracts). */
void layer_attention_forward_ref(float *out, float *att, const float *q, const float *k,
                                 const float *v, int B, int Tq, int Tk, int C, int NH,
                                 float scale, layer_attn_mask mask);
void layer_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout,
                                  const float *q, const float *k, const float *v, const float *att,
                                  int B, int Tq, int Tk, int C, int NH, float scale,
                                  layer_attn_mask mask);

/* ---- softmax cross-entropy (crossentropy.c) ----
 * logits (N,V); targets (N), a target < 0 is ignored. Returns the summed loss over
 * counted rows (double) and sets *count to their number. If dlogits (N,V) is not NULL it is
 * WRITTEN (not accumulated) with grad_scale * (softmax - onehot) on counted rows, 0 elsewhere.
 * The mean loss is sum / count; pass grad_scale = 1/count for the gradient of the mean. */
double layer_crossentropy(float *dlogits, int *count, const float *logits,
                          const int32_t *targets, int N, int V, float grad_scale);
/* The reference: exp and the row sum in double through libm. The fast form above sums a
 * row's exponentials in float lanes (relative error ~1e-7 of the loss, far below what
 * training resolves); both sum the rows' losses in double in row order. */
double layer_crossentropy_ref(float *dlogits, int *count, const float *logits,
                              const int32_t *targets, int N, int V, float grad_scale);

#endif
