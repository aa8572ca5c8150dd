/* A minimal PNG writer (8-bit grayscale, zlib-compressed), for sample image grids. */
#ifndef MEMTRAIN_IO_PNG_H
#define MEMTRAIN_IO_PNG_H

#include <stddef.h>
#include <stdint.h>

/* Writes the w x h grayscale image pix (h rows of w bytes) to path, a new file: an existing
 * one is never overwritten, even one that appears while the image is prepared. Returns 0; 1
 * when path exists (nothing written, err says so); or -1 with a one-line message in err (the
 * file it made is then removed). */
int io_png_write_gray(const char *path, const uint8_t *pix, int w, int h, char *err, size_t n);

#endif
