/* Position information: learned absolute embeddings and rotary (RoPE) rotation of head dims. */
#include "layers/layers.h"

#include <math.h>
#include <stdlib.h>

void layer_posemb_forward(float *out, const float *in, const float *wpe, int B, int T, int C) {
    /* out, in (B,T,C); wpe (Tmax,C) with T <= Tmax */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t o = ((size_t)b * T + t) * C;
            const float *p = wpe + (size_t)t * C;
            for (int c = 0; c < C; c++) out[o + c] = in[o + c] + p[c];
        }
}

void layer_posemb_backward(float *dinp, float *dwpe, const float *dout, int B, int T, int C) {
    /* dinp, dout (B,T,C); dwpe (T,C) */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t o = ((size_t)b * T + t) * C;
            if (dinp)
                for (int c = 0; c < C; c++) dinp[o + c] += dout[o + c];
            if (dwpe) {
                float *dp = dwpe + (size_t)t * C;
                for (int c = 0; c < C; c++) dp[c] += dout[o + c];
            }
        }
}

/* cs (rot/2, 2) = cos, sin of position pos's angles. The angle is formed in double so that
 * large positions keep their phase; float would lose it after a few thousand tokens. */
static void rope_angles(float *cs, int rot, float base, long pos) {
    for (int i = 0; i < rot / 2; i++) {
        double theta = (double)pos * pow((double)base, -2.0 * i / rot);
        cs[2 * i] = (float)cos(theta);
        cs[2 * i + 1] = (float)sin(theta);
    }
}

static void rope_check(int C, int NH, int rot) {
    LAYER_ASSERT(NH > 0 && C % NH == 0);
    LAYER_ASSERT(rot >= 0 && rot % 2 == 0 && rot <= C / NH);
}

void layer_rope_forward(float *out, const float *x, int B, int T, int C, int NH, int rot,
                        float base, int pos0) {
    /* out, x (B,T,C) */
    rope_check(C, NH, rot);
    int HS = C / NH;
    float *cs = layer_xmalloc((size_t)(rot > 0 ? rot : 1) * sizeof(float)); /* (rot/2, 2) */
    for (int t = 0; t < T; t++) {
        rope_angles(cs, rot, base, (long)pos0 + t);
        for (int b = 0; b < B; b++) {
            size_t o = ((size_t)b * T + t) * C;
            for (int h = 0; h < NH; h++) {
                const float *xh = x + o + (size_t)h * HS;
                float *oh = out + o + (size_t)h * HS;
                for (int i = 0; i < rot / 2; i++) {
                    float c = cs[2 * i], s = cs[2 * i + 1];
                    float x0 = xh[2 * i], x1 = xh[2 * i + 1];
                    oh[2 * i] = x0 * c - x1 * s;
                    oh[2 * i + 1] = x0 * s + x1 * c;
                }
                if (out != x)
                    for (int d = rot; d < HS; d++) oh[d] = xh[d];
            }
        }
    }
    free(cs);
}

void layer_rope_backward(float *dx, const float *dout, int B, int T, int C, int NH, int rot,
                         float base, int pos0) {
    /* dx, dout (B,T,C); a rotation's adjoint is its inverse, the rotation by -theta */
    if (!dx) return;
    rope_check(C, NH, rot);
    int HS = C / NH;
    float *cs = layer_xmalloc((size_t)(rot > 0 ? rot : 1) * sizeof(float)); /* (rot/2, 2) */
    for (int t = 0; t < T; t++) {
        rope_angles(cs, rot, base, (long)pos0 + t);
        for (int b = 0; b < B; b++) {
            size_t o = ((size_t)b * T + t) * C;
            for (int h = 0; h < NH; h++) {
                const float *dh = dout + o + (size_t)h * HS;
                float *xh = dx + o + (size_t)h * HS;
                for (int i = 0; i < rot / 2; i++) {
                    float c = cs[2 * i], s = cs[2 * i + 1];
                    float d0 = dh[2 * i], d1 = dh[2 * i + 1];
                    xh[2 * i] += d0 * c + d1 * s;
                    xh[2 * i + 1] += d1 * c - d0 * s;
                }
                for (int d = rot; d < HS; d++) xh[d] += dh[d];
            }
        }
    }
    free(cs);
}
