/* Multi-head scaled dot-product attention core (full, causal, memory-slot masks) via sgemm. */
#include "layers/layers.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "layers/simd.h"

/* Whether query i may see key j under the mask (Tq is the query count). */
static inline int attn_visible(layer_attn_mask mask, int i, int j, int Tq) {
    return mask == LAYER_ATTN_FULL || (mask == LAYER_ATTN_CAUSAL ? j <= i : (j == i || j >= Tq));
}

/* Keys a query row need look at are [0, attn_row_end): causal rows stop at the diagonal, so
 * the softmax loops skip the masked tail instead of testing it. */
static inline int attn_row_end(layer_attn_mask mask, int i, int Tk) {
    return mask == LAYER_ATTN_CAUSAL ? i + 1 : Tk;
}

static void attn_check(int Tq, int Tk, int C, int NH, layer_attn_mask mask) {
    LAYER_ASSERT(NH > 0 && C % NH == 0);
    LAYER_ASSERT(Tq > 0 && Tk > 0);
    LAYER_ASSERT(mask == LAYER_ATTN_FULL || mask == LAYER_ATTN_CAUSAL || mask == LAYER_ATTN_SLOT);
    LAYER_ASSERT(mask != LAYER_ATTN_CAUSAL || Tq == Tk);
    LAYER_ASSERT(mask != LAYER_ATTN_SLOT || Tk >= Tq);
}

/* In place over one head's rows: a (Tq,Tk) holds scaled scores on entry, probabilities on exit.
 * Every row has at least one visible key (FULL: all; CAUSAL: the diagonal; SLOT: key i), so the
 * normaliser is >= 1 after the max shift. Masked entries become exactly 0. The visible keys
 * of a FULL or CAUSAL row are [0, end): max, exp and sum run 16 lanes at a time, the lanes
 * added in a fixed order. A SLOT row (the memory writer's few slots) takes the plain loop. */
static void attn_softmax_rows(float *a, int Tq, int Tk, layer_attn_mask mask) {
    for (int i = 0; i < Tq; i++) {
        float *row = a + (size_t)i * Tk;
        int end = attn_row_end(mask, i, Tk);
        float sum = 0.0f;
#ifdef __AVX512F__
        if (mask != LAYER_ATTN_SLOT) {
            __m512 vmx = _mm512_set1_ps(-INFINITY);
            for (int j = 0; j < end; j += 16) {
                __mmask16 m = layer_lanes(end - j);
                vmx = _mm512_mask_max_ps(vmx, m, vmx, _mm512_maskz_loadu_ps(m, row + j));
            }
            vmx = _mm512_set1_ps(_mm512_reduce_max_ps(vmx));
            __m512 vs = _mm512_setzero_ps();
            for (int j = 0; j < end; j += 16) {
                __mmask16 m = layer_lanes(end - j);
                __m512 e = _mm512_maskz_mov_ps(
                    m, layer_exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + j), vmx)));
                vs = _mm512_add_ps(vs, e);
                _mm512_mask_storeu_ps(row + j, m, e);
            }
            sum = _mm512_reduce_add_ps(vs);
        } else
#endif
        {
            float mx = -INFINITY;
            for (int j = 0; j < end; j++)
                if (attn_visible(mask, i, j, Tq) && row[j] > mx) mx = row[j];
            for (int j = 0; j < end; j++) {
                float e = attn_visible(mask, i, j, Tq) ? layer_expf(row[j] - mx) : 0.0f;
                row[j] = e;
                sum += e;
            }
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < end; j++) row[j] *= inv;
        for (int j = end; j < Tk; j++) row[j] = 0.0f;
    }
}

/* In place: d (Tq,Tk) holds dL/datt on entry and dL/dscore (including the scale) on exit.
 * Masked entries have att = 0 and so get 0. */
static void attn_softmax_backward_rows(float *d, const float *a, int Tq, int Tk, float scale) {
    for (int i = 0; i < Tq; i++) {
        float *dr = d + (size_t)i * Tk;
        const float *ar = a + (size_t)i * Tk;
        float dot;
#ifdef __AVX512F__
        __m512 vd = _mm512_setzero_ps();
        for (int j = 0; j < Tk; j += 16) {
            __mmask16 m = layer_lanes(Tk - j);
            vd = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, ar + j), _mm512_maskz_loadu_ps(m, dr + j), vd);
        }
        dot = _mm512_reduce_add_ps(vd);
#else
        float p[4] = {0, 0, 0, 0};
        for (int j = 0; j < Tk; j++) p[j & 3] += ar[j] * dr[j];
        dot = (p[0] + p[1]) + (p[2] + p[3]);
#endif
        for (int j = 0; j < Tk; j++) dr[j] = scale * ar[j] * (dr[j] - dot);
    }
}

void layer_attention_forward(float *out, float *att, const float *q, const float *k,
                             const float *v, int B, int Tq, int Tk, int C, int NH, float scale,
                             layer_attn_mask mask) {
    /* out, q (B,Tq,C); k, v (B,Tk,C); att (B,NH,Tq,Tk).
     * Head h of a (B,T,C) tensor is the column block [h*HS, (h+1)*HS) with row stride C, which
     * sgemm reads directly through its leading dimension; no head-major copies are made. */
    attn_check(Tq, Tk, C, NH, mask);
    int HS = C / NH;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *qh = q + (size_t)b * Tq * C + (size_t)h * HS; /* (Tq,HS) ld C */
            const float *kh = k + (size_t)b * Tk * C + (size_t)h * HS; /* (Tk,HS) ld C */
            const float *vh = v + (size_t)b * Tk * C + (size_t)h * HS; /* (Tk,HS) ld C */
            float *oh = out + (size_t)b * Tq * C + (size_t)h * HS;     /* (Tq,HS) ld C */
            float *a = att + ((size_t)b * NH + h) * Tq * Tk;           /* (Tq,Tk) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, HS, scale, qh, C, kh, C,
                        0.0f, a, Tk);
            attn_softmax_rows(a, Tq, Tk, mask);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, HS, Tk, 1.0f, a, Tk, vh, C,
                        0.0f, oh, C);
        }
}

void layer_attention_backward(float *dq, float *dk, float *dv, float *datt_scratch,
                              const float *dout, const float *q, const float *k, const float *v,
                              const float *att, int B, int Tq, int Tk, int C, int NH, float scale,
                              layer_attn_mask mask) {
    /* dq, dout, q (B,Tq,C); dk, dv, k, v (B,Tk,C); att (B,NH,Tq,Tk); datt_scratch (Tq,Tk) */
    attn_check(Tq, Tk, C, NH, mask);
    int HS = C / NH;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            size_t qo = (size_t)b * Tq * C + (size_t)h * HS; /* head h of row 0, batch b */
            size_t ko = (size_t)b * Tk * C + (size_t)h * HS;
            const float *a = att + ((size_t)b * NH + h) * Tq * Tk; /* (Tq,Tk) */
            const float *go = dout + qo;                          /* (Tq,HS) ld C */
            if (dv) /* dv_h (Tk,HS) += att^T @ dout_h */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Tk, HS, Tq, 1.0f, a, Tk, go,
                            C, 1.0f, dv + ko, C);
            if (!dq && !dk) continue;
            float *d = datt_scratch; /* (Tq,Tk) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, HS, 1.0f, go, C, v + ko,
                        C, 0.0f, d, Tk);
            attn_softmax_backward_rows(d, a, Tq, Tk, scale);
            if (dq) /* dq_h (Tq,HS) += dscore @ k_h */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, HS, Tk, 1.0f, d, Tk,
                            k + ko, C, 1.0f, dq + qo, C);
            if (dk) /* dk_h (Tk,HS) += dscore^T @ q_h */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Tk, HS, Tq, 1.0f, d, Tk,
                            q + qo, C, 1.0f, dk + ko, C);
        }
}

void layer_attention_forward_ref(float *out, float *att, const float *q, const float *k,
                                 const float *v, int B, int Tq, int Tk, int C, int NH,
                                 float scale, layer_attn_mask mask) {
    attn_check(Tq, Tk, C, NH, mask);
    int HS = C / NH;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < Tq; i++) {
                const float *qi = q + ((size_t)b * Tq + i) * C + (size_t)h * HS;
                float *a = att + (((size_t)b * NH + h) * Tq + i) * Tk;
                float mx = -INFINITY;
                for (int j = 0; j < Tk; j++) {
                    if (!attn_visible(mask, i, j, Tq)) continue;
                    const float *kj = k + ((size_t)b * Tk + j) * C + (size_t)h * HS;
                    float s = 0.0f;
                    for (int d = 0; d < HS; d++) s += qi[d] * kj[d];
                    a[j] = s * scale;
                    if (a[j] > mx) mx = a[j];
                }
                float sum = 0.0f;
                for (int j = 0; j < Tk; j++) {
                    a[j] = attn_visible(mask, i, j, Tq) ? expf(a[j] - mx) : 0.0f;
                    sum += a[j];
                }
                for (int j = 0; j < Tk; j++) a[j] /= sum;
                float *oi = out + ((size_t)b * Tq + i) * C + (size_t)h * HS;
                for (int d = 0; d < HS; d++) oi[d] = 0.0f;
                for (int j = 0; j < Tk; j++) {
                    const float *vj = v + ((size_t)b * Tk + j) * C + (size_t)h * HS;
                    for (int d = 0; d < HS; d++) oi[d] += a[j] * vj[d];
                }
            }
}

void layer_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout,
                                  const float *q, const float *k, const float *v, const float *att,
                                  int B, int Tq, int Tk, int C, int NH, float scale,
                                  layer_attn_mask mask) {
    attn_check(Tq, Tk, C, NH, mask);
    int HS = C / NH;
    float *datt = layer_xmalloc((size_t)Tk * sizeof(float)); /* (Tk) one query's dL/datt */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < Tq; i++) {
                const float *a = att + (((size_t)b * NH + h) * Tq + i) * Tk;
                const float *gi = dout + ((size_t)b * Tq + i) * C + (size_t)h * HS;
                const float *qi = q + ((size_t)b * Tq + i) * C + (size_t)h * HS;
                float dot = 0.0f;
                for (int j = 0; j < Tk; j++) {
                    const float *vj = v + ((size_t)b * Tk + j) * C + (size_t)h * HS;
                    float s = 0.0f;
                    for (int d = 0; d < HS; d++) s += gi[d] * vj[d];
                    datt[j] = s;
                    dot += a[j] * s;
                    if (dv) {
                        float *dvj = dv + ((size_t)b * Tk + j) * C + (size_t)h * HS;
                        for (int d = 0; d < HS; d++) dvj[d] += a[j] * gi[d];
                    }
                }
                for (int j = 0; j < Tk; j++) {
                    float ds = scale * a[j] * (datt[j] - dot);
                    const float *kj = k + ((size_t)b * Tk + j) * C + (size_t)h * HS;
                    if (dq) {
                        float *dqi = dq + ((size_t)b * Tq + i) * C + (size_t)h * HS;
                        for (int d = 0; d < HS; d++) dqi[d] += ds * kj[d];
                    }
                    if (dk) {
                        float *dkj = dk + ((size_t)b * Tk + j) * C + (size_t)h * HS;
                        for (int d = 0; d < HS; d++) dkj[d] += ds * qi[d];
                    }
                }
            }
    free(datt);
}
