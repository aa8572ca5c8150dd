/* What the dataset readers build with: error messages, whole-file reads, the token builder and
 * the train/validation split rule. Below the readers: nothing here names one. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "io/data_internal.h"
#include "io/files.h"
#include "layers/common.h"

int io_data_fail(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

int io_data_read_file(const char *path, unsigned char **buf, size_t *len, char *err,
                      size_t errlen) {
    *buf = NULL;
    *len = 0;
    FILE *f = io_fopen_regular(path, "rb", err, errlen);
    if (!f) return -1;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        fclose(f);
        return io_data_fail(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
    }
    /* read to the end: files of /proc and the like report a size of 0 */
    size_t n = (size_t)sb.st_size, cap = n + 1 > 4096 ? n + 1 : 4096, got = 0;
    unsigned char *p = layer_xmalloc(cap);
    for (;;) {
        got += fread(p + got, 1, cap - got, f);
        if (got < cap || ferror(f)) break;
        cap *= 2;
        p = layer_xrealloc(p, cap);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(p);
        return io_data_fail(err, errlen, "%s: read error after %zu bytes", path, got);
    }
    if (n > 0 && got != n) {
        free(p);
        return io_data_fail(err, errlen, "%s: changed size while being read (%zu bytes, then "
                            "%zu): read it once it is written", path, n, got);
    }
    n = got;
    *buf = p;
    *len = n;
    return 0;
}

void io_data_builder_init(io_data_builder *b) {
    b->tokcap = 1 << 16;
    b->tok = layer_xmalloc((size_t)b->tokcap * sizeof(uint16_t));
    b->ntok = 0;
    b->offcap = 64;
    b->off = layer_xmalloc((size_t)b->offcap * sizeof(int64_t));
    b->off[0] = 0;
    b->ndocs = 0;
}

void io_data_builder_free(io_data_builder *b) {
    free(b->tok);
    free(b->off);
    b->tok = NULL;
    b->off = NULL;
}

static void builder_reserve(io_data_builder *b, int64_t more) {
    if (b->ntok + more <= b->tokcap) return;
    int64_t cap = b->tokcap;
    while (cap < b->ntok + more) cap *= 2;
    b->tok = layer_xrealloc(b->tok, (size_t)cap * sizeof(uint16_t));
    b->tokcap = cap;
}

void io_data_builder_push(io_data_builder *b, uint16_t t) {
    builder_reserve(b, 1);
    b->tok[b->ntok++] = t;
}

void io_data_builder_push_bytes(io_data_builder *b, const unsigned char *p, size_t n) {
    builder_reserve(b, (int64_t)n);
    for (size_t i = 0; i < n; i++) b->tok[b->ntok + (int64_t)i] = p[i];
    b->ntok += (int64_t)n;
}

void io_data_builder_end_doc(io_data_builder *b) {
    if (b->ntok == b->off[b->ndocs]) return;
    if (b->ndocs + 2 > b->offcap) {
        b->off = layer_xrealloc(b->off, (size_t)b->offcap * 2 * sizeof(int64_t));
        b->offcap *= 2;
    }
    b->off[++b->ndocs] = b->ntok;
}

io_dataset *io_data_builder_finish(io_data_builder *b, const char *name, int vocab) {
    io_dataset *d = layer_xcalloc(1, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->vocab = vocab;
    d->ndocs = b->ndocs;
    d->doc_off = b->off;
    d->tok = b->tok;
    b->off = NULL;
    b->tok = NULL;
    return d;
}

void io_dataset_free(io_dataset *d) {
    if (!d) return;
    free(d->doc_off);
    free(d->tok);
    free(d);
}

/* Every 10th document validates; small sets still get one, so a short file can be used. */
static int is_val_doc(int64_t doc, int64_t ndocs) {
    if (ndocs >= 10) return doc % 10 == 9;
    return ndocs >= 2 && doc == ndocs - 1;
}

int io_data_keep_split(io_dataset *d, io_split split, const char *what, char *err,
                       size_t errlen) {
    uLong crc = crc32_z(0L, (const Bytef *)d->doc_off, (size_t)(d->ndocs + 1) * sizeof(int64_t));
    d->source_crc = (uint32_t)crc32_z(crc, (const Bytef *)d->tok,
                                      (size_t)d->doc_off[d->ndocs] * sizeof(uint16_t));
    if (split == IO_SPLIT_ALL) return 0;
    int want_val = split == IO_SPLIT_VAL;
    int64_t kept = 0, ntok = 0;
    /* compacting in place: a kept document only ever moves towards the front */
    for (int64_t doc = 0; doc < d->ndocs; doc++) {
        if (is_val_doc(doc, d->ndocs) != want_val) continue;
        int64_t a = d->doc_off[doc], len = d->doc_off[doc + 1] - a;
        memmove(d->tok + ntok, d->tok + a, (size_t)len * sizeof(uint16_t));
        d->doc_off[kept] = ntok;
        ntok += len;
        kept++;
    }
    if (kept == 0)
        return io_data_fail(err, errlen,
                            "%s: %s split is empty (%" PRId64 " document%s; validation takes "
                            "every 10th, or the last of 2..9)",
                            what, want_val ? "validation" : "training", d->ndocs,
                            d->ndocs == 1 ? "" : "s");
    d->doc_off[kept] = ntok;
    d->ndocs = kept;
    return 0;
}

