/* PNG encoding with zlib: signature, IHDR, one IDAT, IEND, each chunk with its CRC. */
#include "io/png.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "io/files.h"
#include "layers/common.h"

static void be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* length, type, data, crc(type + data) */
static int chunk(FILE *f, const char *type, const uint8_t *data, uint32_t len) {
    uint8_t hdr[8], crcb[4];
    be32(hdr, len);
    memcpy(hdr + 4, type, 4);
    uLong crc = crc32(0L, (const Bytef *)type, 4);
    if (len) crc = crc32(crc, data, len);
    be32(crcb, (uint32_t)crc);
    return fwrite(hdr, 1, 8, f) == 8 && (len == 0 || fwrite(data, 1, len, f) == len) &&
                   fwrite(crcb, 1, 4, f) == 4
               ? 0
               : -1;
}

int io_png_write_gray(const char *path, const uint8_t *pix, int w, int h, char *err, size_t n) {
    /* each scanline starts with filter type 0 (none) */
    size_t raw_len = (size_t)h * (w + 1);
    uint8_t *raw = layer_xmalloc(raw_len);
    for (int y = 0; y < h; y++) {
        raw[(size_t)y * (w + 1)] = 0;
        memcpy(raw + (size_t)y * (w + 1) + 1, pix + (size_t)y * w, (size_t)w);
    }
    uLongf zlen = compressBound((uLong)raw_len);
    uint8_t *z = layer_xmalloc(zlen);
    int zrc = compress2(z, &zlen, raw, (uLong)raw_len, 9);
    free(raw);
    if (zrc != Z_OK) {
        free(z);
        snprintf(err, n, "%s: compression failed", path);
        return -1;
    }
    FILE *f = io_fopen_regular(path, "x", err, n);
    if (!f) {
        int exists = errno == EEXIST;
        free(z);
        if (exists) snprintf(err, n, "%s exists", path);
        return exists ? 1 : -1;
    }
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t ihdr[13];
    be32(ihdr, (uint32_t)w);
    be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8;  /* bit depth */
    ihdr[9] = 0;  /* grayscale */
    ihdr[10] = 0; /* deflate */
    ihdr[11] = 0; /* adaptive filtering, filter 0 per line */
    ihdr[12] = 0; /* no interlace */
    int rc = fwrite(sig, 1, 8, f) == 8 ? 0 : -1;
    if (!rc) rc = chunk(f, "IHDR", ihdr, 13);
    if (!rc) rc = chunk(f, "IDAT", z, (uint32_t)zlen);
    if (!rc) rc = chunk(f, "IEND", NULL, 0);
    free(z);
    if (fclose(f) != 0) rc = -1;
    if (rc) {
        remove(path);
        snprintf(err, n, "cannot write %s: %s", path, strerror(errno));
    }
    return rc;
}
