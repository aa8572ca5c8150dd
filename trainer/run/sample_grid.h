/* Sampled images as a picture a person can look at: each image upscaled, numbered, the grid headed by a caption. */
#ifndef MEMTRAIN_TRAINER_SAMPLE_GRID_H
#define MEMTRAIN_TRAINER_SAMPLE_GRID_H

#include <stdint.h>

/* Renders B images of side x side pixel values (tok (B, side*side), values 0..255) as one
 * grayscale picture: each pixel a scale x scale square, the images in a near-square grid on
 * a gray ground, each numbered 1..B above it, and the caption (upper-case letters, digits,
 * . = - : and spaces; others drawn as spaces) across the top. Returns a fresh (*h, *w)
 * buffer the caller frees. */
uint8_t *trainer_grid_render(const int32_t *tok, int B, int side, int scale, const char *caption,
                             int *w, int *h);

#endif
