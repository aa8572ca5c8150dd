/* Reads raw text files and pre-tokenised uint8/uint16 token files as documents. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "io/data_internal.h"
#include "layers/common.h"

static int is_blank(unsigned char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* Cuts a token sequence into documents of IO_DOC_TOKENS, the last one possibly shorter. */
static void cut_fixed(io_data_builder *b, const unsigned char *p, size_t n) {
    for (size_t s = 0; s < n; s += IO_DOC_TOKENS) {
        size_t len = n - s < IO_DOC_TOKENS ? n - s : IO_DOC_TOKENS;
        io_data_builder_push_bytes(b, p + s, len);
        io_data_builder_end_doc(b);
    }
}

/* Splits text at form feeds and at runs of 2+ blank lines. Blank lines are held back until a
 * non-blank line shows whether they were inside a document or a separator. Returns whether
 * any separator was seen. */
static int split_text(io_data_builder *b, const unsigned char *p, size_t n) {
    int seps = 0, run = 0;
    size_t run_start = 0, i = 0;
    while (i < n) {
        size_t e = i;
        while (e < n && p[e] != '\n' && p[e] != '\f') e++;
        int ff = e < n && p[e] == '\f';
        size_t end = e < n && p[e] == '\n' ? e + 1 : e;
        int blank = 1;
        for (size_t k = i; k < e && blank; k++) blank = is_blank(p[k]);
        if (blank) {
            if (run == 0) run_start = i;
            run++;
        } else {
            if (run >= 2) {
                io_data_builder_end_doc(b);
                seps++;
            } else if (run == 1) {
                io_data_builder_push_bytes(b, p + run_start, i - run_start);
            }
            run = 0;
            io_data_builder_push_bytes(b, p + i, end - i);
        }
        if (ff) {
            run = 0;
            io_data_builder_end_doc(b);
            seps++;
            end = e + 1;
        }
        i = end;
    }
    io_data_builder_end_doc(b);
    return seps > 0;
}

int io_data_load_text(io_dataset **out, const char *path, io_split split, char *err,
                      size_t errlen) {
    *out = NULL;
    unsigned char *p;
    size_t n;
    if (io_data_read_file(path, &p, &n, err, errlen) != 0) return -1;
    if (n == 0) {
        free(p);
        return io_data_fail(err, errlen, "%s: empty file", path);
    }
    size_t ink = 0; /* a byte that is not white space */
    while (ink < n && (is_blank(p[ink]) || p[ink] == '\n' || p[ink] == '\f' || p[ink] == '\v')) ink++;
    if (ink == n) {
        free(p);
        return io_data_fail(err, errlen, "%s: empty: only whitespace and separators", path);
    }
    io_data_builder b;
    io_data_builder_init(&b);
    if (!split_text(&b, p, n)) {
        /* one long document would leave nothing to validate on */
        io_data_builder_free(&b);
        io_data_builder_init(&b);
        cut_fixed(&b, p, n);
    }
    free(p);
    if (b.ndocs == 0) {
        io_data_builder_free(&b);
        return io_data_fail(err, errlen, "%s: empty: only whitespace and separators", path);
    }
    io_dataset *d = io_data_builder_finish(&b, path, 256);
    if (io_data_keep_split(d, split, path, err, errlen) != 0) {
        io_dataset_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

int io_data_load_tokens(io_dataset **out, const char *path, int width, int vocab,
                        io_split split, char *err, size_t errlen) {
    *out = NULL;
    LAYER_ASSERT(width == 1 || width == 2);
    unsigned char *p;
    size_t n;
    if (io_data_read_file(path, &p, &n, err, errlen) != 0) return -1;
    int rc = 0;
    if (n == 0)
        rc = io_data_fail(err, errlen, "%s: empty file", path);
    else if (n % (size_t)width != 0)
        rc = io_data_fail(err, errlen,
                          "%s: size %zu bytes is not a multiple of 2 (little-endian uint16 "
                          "tokens); truncated?",
                          path, n);
    if (rc != 0) {
        free(p);
        return -1;
    }
    size_t ntok = n / (size_t)width;
    io_data_builder b;
    io_data_builder_init(&b);
    if (width == 1) {
        cut_fixed(&b, p, n);
    } else {
        for (size_t s = 0; s < ntok; s++) {
            io_data_builder_push(&b, (uint16_t)(p[2 * s] | p[2 * s + 1] << 8));
            if ((s + 1) % IO_DOC_TOKENS == 0) io_data_builder_end_doc(&b);
        }
        io_data_builder_end_doc(&b);
    }
    free(p);
    int maxtok = 0;
    for (int64_t s = 0; s < b.ntok; s++)
        if (b.tok[s] > maxtok) maxtok = b.tok[s];
    if (vocab == 0) vocab = width == 1 ? 256 : maxtok + 1;
    if (maxtok >= vocab) {
        /* name the first offending token: that is the one to look at in a hex dump */
        int64_t at = 0;
        while (b.tok[at] < vocab) at++;
        io_data_fail(err, errlen, "%s: token value %d at token index %" PRId64
                                  " out of range (vocab %d)", path, b.tok[at], at, vocab);
        io_data_builder_free(&b);
        return -1;
    }
    io_dataset *d = io_data_builder_finish(&b, path, vocab);
    if (io_data_keep_split(d, split, path, err, errlen) != 0) {
        io_dataset_free(d);
        return -1;
    }
    *out = d;
    return 0;
}
