/* Sample grids: upscaled images, numbers and a caption drawn with a built-in 3x5 pixel font. */
#include "trainer/run/sample_grid.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "layers/common.h"

/* 3x5 glyphs, one row a byte (bits 2..0 left to right). */
static const struct {
    char c;
    uint8_t rows[5];
} font[] = {
    {'0', {7, 5, 5, 5, 7}}, {'1', {2, 6, 2, 2, 7}}, {'2', {7, 1, 7, 4, 7}}, {'3', {7, 1, 7, 1, 7}},
    {'4', {5, 5, 7, 1, 1}}, {'5', {7, 4, 7, 1, 7}}, {'6', {7, 4, 7, 5, 7}}, {'7', {7, 1, 1, 1, 1}},
    {'8', {7, 5, 7, 5, 7}}, {'9', {7, 5, 7, 1, 7}}, {'A', {2, 5, 7, 5, 5}}, {'B', {6, 5, 6, 5, 6}},
    {'C', {7, 4, 4, 4, 7}}, {'D', {6, 5, 5, 5, 6}}, {'E', {7, 4, 6, 4, 7}}, {'F', {7, 4, 6, 4, 4}},
    {'G', {7, 4, 5, 5, 7}}, {'H', {5, 5, 7, 5, 5}}, {'I', {7, 2, 2, 2, 7}}, {'J', {1, 1, 1, 5, 7}},
    {'K', {5, 5, 6, 5, 5}}, {'L', {4, 4, 4, 4, 7}}, {'M', {5, 7, 7, 5, 5}}, {'N', {6, 5, 5, 5, 5}},
    {'O', {7, 5, 5, 5, 7}}, {'P', {7, 5, 7, 4, 4}}, {'Q', {7, 5, 5, 7, 1}}, {'R', {7, 5, 6, 5, 5}},
    {'S', {7, 4, 7, 1, 7}}, {'T', {7, 2, 2, 2, 2}}, {'U', {5, 5, 5, 5, 7}}, {'V', {5, 5, 5, 5, 2}},
    {'W', {5, 5, 7, 7, 5}}, {'X', {5, 5, 2, 5, 5}}, {'Y', {5, 5, 2, 2, 2}}, {'Z', {7, 1, 2, 4, 7}},
    {'.', {0, 0, 0, 0, 2}}, {'=', {0, 7, 0, 7, 0}}, {'-', {0, 0, 7, 0, 0}}, {':', {0, 2, 0, 2, 0}},
};

/* Draws string s at (x, y) in pixels of size px, value ink. */
static void text(uint8_t *pix, int W, int H, int x, int y, int px, const char *s, uint8_t ink) {
    for (; *s; s++, x += 4 * px) {
        const uint8_t *rows = NULL;
        for (size_t i = 0; i < sizeof(font) / sizeof(font[0]); i++)
            if (font[i].c == *s) rows = font[i].rows;
        if (!rows) continue;
        for (int r = 0; r < 5; r++)
            for (int c = 0; c < 3; c++) {
                if (!(rows[r] >> (2 - c) & 1)) continue;
                for (int dy = 0; dy < px; dy++)
                    for (int dx = 0; dx < px; dx++) {
                        int gx = x + c * px + dx, gy = y + r * px + dy;
                        if (gx >= 0 && gx < W && gy >= 0 && gy < H) pix[(size_t)gy * W + gx] = ink;
                    }
            }
    }
}

uint8_t *trainer_grid_render(const int32_t *tok, int B, int side, int scale, const char *caption,
                             int *w, int *h) {
    LAYER_ASSERT(B >= 1 && side >= 1 && scale >= 1);
    int cols = (int)ceil(sqrt((double)B)), rows = (B + cols - 1) / cols;
    int px = scale >= 3 ? scale / 3 : 1;            /* font pixel */
    int label = 5 * px + 2 * px, pad = 2 * scale;   /* number strip above each image */
    int cell = side * scale, W = cols * (cell + pad) + pad;
    /* The caption: its parts (split at double spaces) on as few lines as fit the width, at
     * twice the font pixel, or at the font pixel when a part would not fit even alone. */
    char lines[8][160];
    int nl = 0, cpx = 2 * px;
    for (int pass = 0; pass < 2; pass++, cpx = px) {
        int fit = (W - 2 * pad) / (4 * cpx), widest = 0;
        nl = 0;
        lines[0][0] = '\0';
        for (const char *p = caption; *p && nl < 8;) {
            size_t len = strcspn(p, " ");
            while (p[len] == ' ' && p[len + 1] && p[len + 1] != ' ') /* a single space: one part */
                len += 1 + strcspn(p + len + 1, " ");
            size_t used = strlen(lines[nl]);
            if (used && (int)(used + 2 + len) > fit && nl + 1 < 8) lines[++nl][0] = '\0', used = 0;
            snprintf(lines[nl] + used, sizeof lines[0] - used, "%s%.*s", used ? "  " : "",
                     (int)len, p);
            widest = (int)len > widest ? (int)len : widest;
            p += len;
            while (*p == ' ') p++;
        }
        nl++;
        if (widest <= fit || cpx == px) break;
    }
    int lh = 5 * cpx + 2 * px, head = 2 * px + nl * lh; /* one line: as it always was */
    int H = head + rows * (label + cell + pad) + pad;
    uint8_t *pix = layer_xmalloc((size_t)W * H);
    memset(pix, 96, (size_t)W * H);
    for (int i = 0; i < nl; i++) text(pix, W, H, pad, 2 * px + i * lh, cpx, lines[i], 255);
    for (int b = 0; b < B; b++) {
        int x0 = pad + (b % cols) * (cell + pad);
        int y0 = head + (b / cols) * (label + cell + pad) + label;
        char num[16];
        snprintf(num, sizeof(num), "%d", b + 1);
        text(pix, W, H, x0, y0 - label + px, px, num, 230);
        for (int y = 0; y < cell; y++)
            for (int x = 0; x < cell; x++) {
                int32_t v = tok[(size_t)b * side * side + (y / scale) * side + x / scale];
                pix[(size_t)(y0 + y) * W + x0 + x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
    }
    *w = W;
    *h = H;
    return pix;
}
