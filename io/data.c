/* Dataset specs (which reader loads what), size hints and document streams. */
#include "io/data.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <zlib.h>
#include <unistd.h>

#include "io/data_internal.h"
#include "io/files.h"
#include "layers/common.h"


/* Splits "PATH[:V]": a trailing ":digits" is the vocab. Returns 0, or -1 with err set. */
static int parse_path_vocab(const char *spec, const char *rest, int maxvocab, char *path,
                            size_t pathlen, int *vocab, char *err, size_t errlen) {
    size_t n = strlen(rest);
    const char *colon = strrchr(rest, ':');
    *vocab = 0;
    if (colon && colon[1] != '\0' && strspn(colon + 1, "0123456789") == strlen(colon + 1)) {
        long v = strtol(colon + 1, NULL, 10);
        if (strlen(colon + 1) > 6 || v < 1 || v > maxvocab)
            return io_data_fail(err, errlen, "%s: vocab %s out of range 1..%d", spec, colon + 1,
                                maxvocab);
        *vocab = (int)v;
        n = (size_t)(colon - rest);
    }
    if (n == 0) return io_data_fail(err, errlen, "%s: no file path in dataset spec", spec);
    if (n >= pathlen) return io_data_fail(err, errlen, "%s: file path too long", spec);
    memcpy(path, rest, n);
    path[n] = '\0';
    return 0;
}

int io_dataset_image_side(const char *spec) {
    return spec && strcmp(spec, "fashion-mnist") == 0 ? 28 : 0;
}

int io_dataset_load(io_dataset **out, const char *spec, io_split split, const char *data_dir,
                    char *err, size_t errlen) {
    *out = NULL;
    if (err && errlen) err[0] = '\0';
    if (!spec || !*spec) return io_data_fail(err, errlen, "empty dataset spec");
    if (!data_dir) data_dir = "data";
    char path[4096];
    int vocab = 0, rc;
    io_dataset *d = NULL;
    if (strcmp(spec, "fashion-mnist") == 0) {
        rc = io_data_load_fashion_mnist(&d, split, err, errlen);
    } else if (strcmp(spec, "brown") == 0) {
        rc = io_data_load_brown(&d, split, data_dir, err, errlen);
    } else if (strncmp(spec, "text:", 5) == 0) {
        if (!spec[5]) return io_data_fail(err, errlen, "%s: no file path in dataset spec", spec);
        rc = io_data_load_text(&d, spec + 5, split, err, errlen);
    } else if (strncmp(spec, "u8:", 3) == 0) {
        rc = parse_path_vocab(spec, spec + 3, 256, path, sizeof path, &vocab, err, errlen);
        if (rc == 0) rc = io_data_load_tokens(&d, path, 1, vocab, split, err, errlen);
    } else if (strncmp(spec, "u16:", 4) == 0) {
        rc = parse_path_vocab(spec, spec + 4, 65536, path, sizeof path, &vocab, err, errlen);
        if (rc == 0) rc = io_data_load_tokens(&d, path, 2, vocab, split, err, errlen);
    } else {
        size_t plen = strcspn(spec, ":");
        if (spec[plen] == ':')
            return io_data_fail(err, errlen,
                                "unknown dataset spec prefix '%.*s' in '%s' (known: text:, u8:, "
                                "u16:)",
                                (int)plen, spec, spec);
        return io_data_fail(err, errlen,
                            "unknown dataset '%s' (known: fashion-mnist, brown, text:PATH, "
                            "u8:PATH[:V], u16:PATH[:V])",
                            spec);
    }
    if (rc != 0) {
        io_dataset_free(d);
        return -1;
    }
    const char *sname = split == IO_SPLIT_VAL ? "/val" : split == IO_SPLIT_ALL ? "" : "/train";
    size_t slen = strlen(spec), room = sizeof d->name - strlen(sname) - 1;
    char *nm = d->name;
    /* a long path keeps its end, which is the part that tells files apart */
    if (slen > room) {
        memcpy(nm, "...", 3);
        memcpy(nm + 3, spec + slen - (room - 3), room - 3);
        nm += room;
    } else {
        memcpy(nm, spec, slen);
        nm += slen;
    }
    memcpy(nm, sname, strlen(sname) + 1);
    uLong crc = crc32_z(0L, (const Bytef *)d->doc_off, (size_t)(d->ndocs + 1) * sizeof(int64_t));
    d->crc = (uint32_t)crc32_z(crc, (const Bytef *)d->tok,
                               (size_t)d->doc_off[d->ndocs] * sizeof(uint16_t));
    *out = d;
    return 0;
}

/* Size in bytes of a regular file, or -1. */
static double file_bytes(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode) ? (double)sb.st_size : -1.0;
}

/* The uncompressed size a gzip file records in its last 4 bytes (modulo 4 GiB), or -1; also
 * -1 when it is beyond what deflate can compress into the file (a damaged file's trailer). */
static double gz_isize(const char *path) {
    char why[64];
    int fd = io_open_regular(path, O_RDONLY, 0, why, sizeof why);
    if (fd < 0) return -1.0;
    struct stat sb;
    unsigned char t[4];
    double v = -1.0;
    if (fstat(fd, &sb) == 0 && sb.st_size >= 18 && pread(fd, t, 4, sb.st_size - 4) == 4)
        v = (double)((uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 |
                     (uint32_t)t[3] << 24);
    if (v > 1032.0 * (double)sb.st_size) v = -1.0;
    close(fd);
    return v;
}

void io_dataset_size_hint(const char *spec, const char *data_dir, io_size_hint *h) {
    memset(h, 0, sizeof *h);
    if (!spec) return;
    double tokens = 0.0, docs = 0.0, file = 0.0, tshare = 0.9, tdocs = -1;
    if (strcmp(spec, "fashion-mnist") == 0) {
        const char *dir = getenv("MEMTRAIN_FASHION_MNIST_DIR");
        if (!dir || !*dir) dir = "/usr/share/datasets/fashion-mnist";
        static const char *const names[2] = {"train-images-idx3-ubyte.gz",
                                             "t10k-images-idx3-ubyte.gz"};
        for (int i = 0; i < 2; i++) {
            char path[4200];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            double raw = gz_isize(path);
            /* an idx header and whole images, or the file is not what it should be */
            if (raw < 16 || fmod(raw - 16, 784) != 0) return;
            tokens += raw - 16;
            file = raw > file ? raw : file; /* the pixels are read whole, then widened */
            if (i == 0) tdocs = (raw - 16) / 784;
        }
        docs = tokens / 784;
        tshare = tdocs / docs;
    } else if (strcmp(spec, "brown") == 0) {
        /* 500 small files: about 6 MB of text */
        tokens = 6.2e6;
        docs = 500;
        file = 1e5;
    } else {
        const char *rest = strncmp(spec, "text:", 5) == 0 ? spec + 5
                           : strncmp(spec, "u8:", 3) == 0 ? spec + 3
                           : strncmp(spec, "u16:", 4) == 0 ? spec + 4 : NULL;
        if (!rest) return;
        char path[4096];
        int vocab;
        char why[64];
        if (rest == spec + 5) snprintf(path, sizeof path, "%s", rest);
        else if (parse_path_vocab(spec, rest, 65536, path, sizeof path, &vocab, why, sizeof why) != 0)
            return;
        file = file_bytes(path);
        if (file < 0) return;
        tokens = rest == spec + 4 ? file / 2 : file;
        docs = tokens / IO_DOC_TOKENS + 1;
    }
    (void)data_dir;
    h->resident = 2.0 * tokens + 8.0 * docs;
    /* brown, text and token files: document d is validation when d % 10 == 9 */
    if (tdocs < 0) tdocs = docs - floor((docs + 1) / 10);
    h->train = tshare * h->resident;
    h->train_docs = tdocs;
    h->val_docs = docs - tdocs;
    /* one split loads at a time: the file, the builder's array grown by doubling (up to twice
       the tokens), and the other split already loaded; Fashion-MNIST's token arrays are
       allocated at their size (io/mnist.c), next to the pixels read whole */
    h->loading = file + (strcmp(spec, "fashion-mnist") == 0 ? 1.0 : 2.0) * 2.0 * tokens + 8.0 * docs;
}

int64_t io_stream_classes(int64_t nstreams, int64_t ndocs) {
    int64_t a = nstreams, b = ndocs; /* gcd */
    while (b) {
        int64_t r = a % b;
        a = b;
        b = r;
    }
    return a;
}

/* Frees the tokens of the documents keep() refuses; they become empty, numbering stays. */
static void keep_docs(io_dataset *d, int (*keep)(int64_t doc, const int64_t *arg),
                      const int64_t *arg) {
    int64_t ntok = 0, next = 0;
    /* compacting in place: a kept document only ever moves towards the front */
    for (int64_t doc = 0; doc < d->ndocs; doc++) {
        int64_t a = d->doc_off[doc], len = d->doc_off[doc + 1] - a;
        d->doc_off[doc] = next;
        if (keep(doc, arg)) {
            memmove(d->tok + ntok, d->tok + a, (size_t)len * sizeof(uint16_t));
            ntok += len;
        }
        next = ntok;
    }
    d->doc_off[d->ndocs] = ntok;
    uint16_t *t = realloc(d->tok, (size_t)(ntok ? ntok : 1) * sizeof(uint16_t));
    if (t) d->tok = t;
}

/* arg: first, count, g */
static int in_classes(int64_t doc, const int64_t *arg) {
    return ((doc - arg[0]) % arg[2] + arg[2]) % arg[2] < arg[1];
}

static int before(int64_t doc, const int64_t *arg) { return doc < arg[0]; }

void io_dataset_keep_streams(io_dataset *d, int64_t first, int64_t count, int64_t nstreams) {
    LAYER_ASSERT(d && nstreams >= 1 && first >= 0 && count >= 0 && first + count <= nstreams);
    int64_t g = io_stream_classes(nstreams, d->ndocs);
    if (count >= g) return; /* the streams read every document */
    const int64_t arg[3] = {first, count, g};
    keep_docs(d, in_classes, arg);
}

void io_dataset_keep_first(io_dataset *d, int64_t n) {
    LAYER_ASSERT(d && n >= 0);
    if (n >= d->ndocs) return;
    keep_docs(d, before, &n);
}

void io_dataset_describe(const io_dataset *d, char *buf, size_t n) {
    if (!buf || n == 0) return;
    if (!d) {
        snprintf(buf, n, "(no dataset)");
        return;
    }
    snprintf(buf, n, "%s: %" PRId64 " document%s, %" PRId64 " tokens, vocab %d", d->name,
             d->ndocs, d->ndocs == 1 ? "" : "s", d->doc_off[d->ndocs], d->vocab);
}

void io_stream_init(io_stream *st, int64_t stream, int64_t nstreams) {
    LAYER_ASSERT(nstreams >= 1 && stream >= 0 && stream < nstreams);
    st->stream = stream;
    st->nstreams = nstreams;
    st->doc_count = 0;
    st->pos = 0;
    st->shuffle = 0;
    st->by_class = 0;
    st->seed = 0;
}

void io_stream_set_shuffle(io_stream *st, uint64_t seed, int by_class) {
    st->shuffle = 1;
    st->by_class = by_class != 0;
    st->seed = seed;
}

double io_stream_passes(int64_t started, const io_dataset *d) {
    return d && d->ndocs > 0 ? (double)started / (double)d->ndocs : 0.0;
}

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

int64_t io_shuffle_doc(uint64_t seed, int64_t pass, int64_t k, int64_t n) {
    LAYER_ASSERT(n >= 1 && k >= 0 && k < n);
    if (n == 1) return 0;
    /* a balanced Feistel network on 2h bits, 4^h >= n: a bijection of 0..4^h-1, so walking
       from k until the value falls below n is a bijection of 0..n-1 (at most 4x the work) */
    int h = 1;
    while (((uint64_t)1 << (2 * h)) < (uint64_t)n) h++;
    uint64_t mask = ((uint64_t)1 << h) - 1;
    uint64_t key = splitmix64(seed ^ splitmix64((uint64_t)pass + 0x5851f42d4c957f2dull));
    uint64_t x = (uint64_t)k;
    do {
        uint64_t l = x >> h, r = x & mask;
        for (int round = 0; round < 4; round++) {
            uint64_t f = splitmix64(key + (uint64_t)round * 0x2545f4914f6cdd1dull + r) & mask;
            uint64_t t = r;
            r = l ^ f;
            l = t;
        }
        x = l << h | r;
    } while (x >= (uint64_t)n);
    return (int64_t)x;
}

/* The document a stream reads next (start) or is in the middle of. */
static int64_t stream_doc(const io_stream *st, const io_dataset *d, int start) {
    int64_t i = start ? st->doc_count : st->doc_count - 1;
    int64_t n = d->ndocs;
    if (st->shuffle) {
        /* by class: the T = nstreams/c streams of class j mod c (c = gcd(nstreams, n)) take
           turns over its m = n/c documents j mod c, j mod c + c, ...; else one class */
        int64_t c = st->by_class ? io_stream_classes(st->nstreams, n) : 1, cls = st->stream % c;
        int64_t T = st->nstreams / c, t = st->stream / c, m = n / c;
        /* place g = t + i * T of the class, split into pass and position without forming g */
        int64_t q1 = i / m, r1 = i % m;  /* i = q1 m + r1 */
        int64_t q2 = T / m, r2 = T % m;
        /* g = t + (q1 m + r1)(q2 m + r2) = m (q1 q2 m + q1 r2 + r1 q2) + r1 r2 + t */
        int64_t lo = r1 * r2 + t; /* < m^2 + nstreams: fits for any real dataset */
        int64_t pass = q1 * q2 * m + q1 * r2 + r1 * q2 + lo / m;
        uint64_t key = st->seed ^ (uint64_t)cls * 0x9e3779b97f4a7c15ull; /* class 0: seed */
        return cls + c * io_shuffle_doc(key, pass, lo % m, m);
    }
    /* reduced before multiplying so a long run cannot overflow */
    return (st->stream % n + (i % n) * (st->nstreams % n) % n) % n;
}

int io_stream_valid(const io_stream *st, const io_dataset *d) {
    if (!d || d->ndocs < 1 || st->nstreams < 1 || st->stream < 0 || st->stream >= st->nstreams)
        return 0;
    if (st->doc_count < 0 || st->pos < 0) return 0;
    /* past any run, and past what the order's arithmetic (documents x streams) holds */
    if (st->doc_count > INT64_MAX / st->nstreams) return 0;
    if (st->pos == 0) return 1;
    if (st->doc_count < 1) return 0;
    int64_t doc = stream_doc(st, d, 0);
    return st->pos < d->doc_off[doc + 1] - d->doc_off[doc];
}

int io_stream_next(io_stream *st, const io_dataset *d, int32_t *tok, int L) {
    LAYER_ASSERT(L >= 1 && d != NULL && d->ndocs >= 1);
    int start = st->pos == 0;
    int64_t doc = stream_doc(st, d, start);
    int64_t a = d->doc_off[doc], len = d->doc_off[doc + 1] - a;
    /* fails only for a position restored against a different dataset */
    LAYER_ASSERT(st->pos < len);
    int64_t left = len - st->pos;
    int take = left < L ? (int)left : L;
    const uint16_t *src = d->tok + a + st->pos;
    for (int k = 0; k < take; k++) tok[k] = src[k];
    for (int k = take; k < L; k++) tok[k] = -1;
    st->pos += take;
    if (st->pos == len) st->pos = 0;
    if (start) st->doc_count++;
    return start ? IO_SEG_DOC_START : 0;
}
