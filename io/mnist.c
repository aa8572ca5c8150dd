/* Reads Fashion-MNIST images (gzipped idx3 files from Debian's dataset-fashion-mnist). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "io/data_internal.h"
#include "io/files.h"
#include "layers/common.h"

#define MNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#define MNIST_MAGIC 0x00000803u /* idx: unsigned bytes, 3 dimensions */
#define MNIST_SIDE 28u
#define MNIST_PIXELS (MNIST_SIDE * MNIST_SIDE)
/* The real files hold 60000 and 10000; a count far beyond that is a corrupt header. */
#define MNIST_MAX_IMAGES 10000000u

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads up to n bytes; returns how many, or -1 on a zlib data error. */
static int64_t gz_read_all(gzFile g, unsigned char *p, uint64_t n) {
    uint64_t got = 0;
    while (got < n) {
        uint64_t want = n - got;
        if (want > (1u << 30)) want = 1u << 30;
        int r = gzread(g, p + got, (unsigned)want);
        if (r < 0) return -1;
        if (r == 0) break;
        got += (uint64_t)r;
    }
    return (int64_t)got;
}

/* Appends zlib's own account of a short read, when it has one (e.g. "unexpected end of file"). */
static const char *gz_why(gzFile g) {
    int code;
    const char *msg = gzerror(g, &code);
    return code != Z_OK && msg && *msg ? msg : "end of data";
}

int io_data_load_fashion_mnist(io_dataset **out, io_split split, char *err, size_t errlen) {
    *out = NULL;
    const char *dir = getenv("MEMTRAIN_FASHION_MNIST_DIR");
    if (!dir || !*dir) dir = MNIST_DEFAULT_DIR;
    char path[4096];
    const char *file = split != IO_SPLIT_TRAIN ? "t10k-images-idx3-ubyte.gz"
                                             : "train-images-idx3-ubyte.gz";
    if (snprintf(path, sizeof path, "%s/%s", dir, file) >= (int)sizeof path)
        return io_data_fail(err, errlen, "%s: directory name too long", dir);

    struct stat sb;
    if (stat(path, &sb) != 0)
        return io_data_fail(err, errlen,
                            "%s: missing (%s; install dataset-fashion-mnist or set "
                            "MEMTRAIN_FASHION_MNIST_DIR)",
                            path, strerror(errno));
    int fd = io_open_regular(path, O_RDONLY, 0, err, errlen);
    if (fd < 0) return -1;
    gzFile g = gzdopen(fd, "rb");
    if (!g) {
        close(fd);
        return io_data_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    }

    unsigned char hdr[16];
    int64_t got = gz_read_all(g, hdr, sizeof hdr);
    if (got < 0) {
        io_data_fail(err, errlen, "%s: corrupt gzip data: %s", path, gz_why(g));
        gzclose(g);
        return -1;
    }
    if (got < (int64_t)sizeof hdr) {
        io_data_fail(err, errlen, "%s: truncated: expected a 16-byte idx header, found %lld bytes",
                     path, (long long)got);
        gzclose(g);
        return -1;
    }
    uint32_t magic = be32(hdr), n = be32(hdr + 4), rows = be32(hdr + 8), cols = be32(hdr + 12);
    const char *problem = NULL;
    char buf[160];
    if (magic != MNIST_MAGIC) {
        snprintf(buf, sizeof buf, "bad magic 0x%08x (expected 0x%08x: idx, unsigned bytes, 3 dims)",
                 magic, MNIST_MAGIC);
        problem = buf;
    } else if (rows != MNIST_SIDE || cols != MNIST_SIDE) {
        snprintf(buf, sizeof buf, "bad dimensions %ux%u (expected %ux%u images)", rows, cols,
                 MNIST_SIDE, MNIST_SIDE);
        problem = buf;
    } else if (n == 0) {
        problem = "empty: the header counts 0 images";
    } else if (n > MNIST_MAX_IMAGES) {
        snprintf(buf, sizeof buf, "bad dimensions: %u images (at most %u expected)", n,
                 MNIST_MAX_IMAGES);
        problem = buf;
    }
    if (problem) {
        io_data_fail(err, errlen, "%s: %s", path, problem);
        gzclose(g);
        return -1;
    }

    uint64_t npix = (uint64_t)n * MNIST_PIXELS;
    unsigned char *px = layer_xmalloc(npix);
    got = gz_read_all(g, px, npix);
    unsigned char extra;
    int64_t more = got == (int64_t)npix ? gz_read_all(g, &extra, 1) : 0;
    int rc = 0;
    if (got < 0 || more < 0)
        rc = io_data_fail(err, errlen, "%s: corrupt gzip data: %s", path, gz_why(g));
    else if (got < (int64_t)npix)
        rc = io_data_fail(err, errlen,
                          "%s: truncated: expected %llu bytes (%u images) found %llu (%s)", path,
                          (unsigned long long)(16 + npix), n, (unsigned long long)(16 + got),
                          gz_why(g));
    else if (more > 0)
        rc = io_data_fail(err, errlen,
                          "%s: trailing data: expected %llu bytes (%u images) found more", path,
                          (unsigned long long)(16 + npix), n);
    gzclose(g);
    if (rc != 0) {
        free(px);
        return -1;
    }

    io_dataset *d = layer_xcalloc(1, sizeof *d);
    d->vocab = 256;
    d->ndocs = n;
    d->doc_off = layer_xmalloc(((size_t)n + 1) * sizeof(int64_t));
    d->tok = layer_xmalloc(npix * sizeof(uint16_t));
    for (uint64_t i = 0; i < npix; i++) d->tok[i] = px[i];
    for (int64_t i = 0; i <= (int64_t)n; i++) d->doc_off[i] = i * MNIST_PIXELS;
    free(px);
    *out = d;
    return 0;
}
