/* Tests of the data layer: every dataset reader, the train/validation split, streams, error messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <zlib.h>

#include "io/data.h"
#include "io/data_internal.h"
#include "tests/testutil.h"

#define MNIST_SYSTEM_DIR "/usr/share/datasets/fashion-mnist"
/* Tests run from the repo top (tests/run-tests.sh), after `make data`. */
#define DATA_DIR "data"

static char err[1024];

/* Removes a directory tree made by a test (links are removed, not followed). */
static void remove_tree(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return;
    if (S_ISDIR(sb.st_mode)) {
        DIR *dir = opendir(path);
        struct dirent *e;
        char sub[512];
        while (dir && (e = readdir(dir)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            remove_tree(sub);
        }
        if (dir) closedir(dir);
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* Creates a fresh temporary directory into dir (n >= 32); remove it with remove_tree. */
static void make_tmpdir(char *dir, size_t n) {
    snprintf(dir, n, "/tmp/memtrain-check-data.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(p, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

static void write_gz(const char *path, const void *p, size_t n) {
    gzFile g = gzopen(path, "wb");
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(gzwrite(g, p, (unsigned)n), (int)n);
    ck_assert_int_eq(gzclose(g), Z_OK);
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static int64_t doc_len(const io_dataset *d, int64_t i) { return d->doc_off[i + 1] - d->doc_off[i]; }

static int64_t doc_sum(const io_dataset *d, int64_t i) {
    int64_t s = 0;
    for (int64_t k = d->doc_off[i]; k < d->doc_off[i + 1]; k++) s += d->tok[k];
    return s;
}

/* Document i as a NUL-terminated string (byte tokens); free() it. */
static char *doc_str(const io_dataset *d, int64_t i) {
    int64_t n = doc_len(d, i);
    char *s = layer_xmalloc((size_t)n + 1);
    for (int64_t k = 0; k < n; k++) s[k] = (char)d->tok[d->doc_off[i] + k];
    s[n] = '\0';
    return s;
}

#define ASSERT_ERR_HAS(s) ck_assert_msg(strstr(err, (s)) != NULL, "error '%s' lacks '%s'", err, (s))

/* Loads and expects failure; the dataset pointer must come back NULL. */
static void expect_fail(const char *spec, io_split split, const char *data_dir) {
    io_dataset *d = (io_dataset *)1;
    err[0] = '\0';
    ck_assert_int_eq(io_dataset_load(&d, spec, split, data_dir, err, sizeof err), -1);
    ck_assert_ptr_null(d);
    ck_assert_msg(err[0] != '\0', "no error message for %s", spec);
    ck_assert_msg(strchr(err, '\n') == NULL, "error is not one line: %s", err);
}

static io_dataset *expect_load(const char *spec, io_split split, const char *data_dir) {
    io_dataset *d = NULL;
    int rc = io_dataset_load(&d, spec, split, data_dir, err, sizeof err);
    ck_assert_msg(rc == 0, "loading %s failed: %s", spec, err);
    ck_assert_ptr_nonnull(d);
    return d;
}

/* ---- Fashion-MNIST ---- */

/* Sums and pixels below were read once from the .gz files with Python's gzip module. */
START_TEST(test_fashion_train) {
    unsetenv("MEMTRAIN_FASHION_MNIST_DIR");
    io_dataset *d = expect_load("fashion-mnist", IO_SPLIT_TRAIN, NULL);
    ck_assert_int_eq(d->ndocs, 60000);
    ck_assert_int_eq(d->vocab, 256);
    ck_assert_int_eq(d->doc_off[d->ndocs], 60000LL * 784);
    for (int64_t i = 0; i < d->ndocs; i += 997) ck_assert_int_eq(doc_len(d, i), 784);
    ck_assert_int_eq(doc_sum(d, 0), 76247);
    ck_assert_int_eq(doc_sum(d, 59999), 16684);
    static const int px[10] = {222, 220, 218, 203, 198, 221, 215, 213, 222, 220};
    for (int k = 0; k < 10; k++) ck_assert_int_eq(d->tok[350 + k], px[k]);
    int lo = 255, hi = 0;
    for (int64_t k = 0; k < d->doc_off[d->ndocs]; k++) {
        if (d->tok[k] < lo) lo = d->tok[k];
        if (d->tok[k] > hi) hi = d->tok[k];
    }
    ck_assert_int_eq(lo, 0);
    ck_assert_int_eq(hi, 255);
    char buf[256];
    io_dataset_describe(d, buf, sizeof buf);
    ck_assert_str_eq(buf, "fashion-mnist/train: 60000 documents, 47040000 tokens, vocab 256");
    io_dataset_free(d);
}
END_TEST

START_TEST(test_fashion_val) {
    unsetenv("MEMTRAIN_FASHION_MNIST_DIR");
    io_dataset *d = expect_load("fashion-mnist", IO_SPLIT_VAL, NULL);
    ck_assert_int_eq(d->ndocs, 10000);
    ck_assert_int_eq(d->doc_off[d->ndocs], 10000LL * 784);
    ck_assert_int_eq(doc_sum(d, 0), 33456);
    ck_assert_int_eq(doc_sum(d, 9999), 24390);
    int64_t total = 0;
    for (int64_t i = 0; i < d->ndocs; i++) total += doc_sum(d, i);
    ck_assert_int_eq(total, 573469082LL);
    ck_assert_str_eq(d->name, "fashion-mnist/val");
    io_dataset_free(d);
}
END_TEST

/* A tiny idx file written here: checks byte order of the header and row-major pixel order. */
START_TEST(test_fashion_small_file) {
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    unsigned char buf[16 + 2 * 784];
    put_be32(buf, 0x803);
    put_be32(buf + 4, 2);
    put_be32(buf + 8, 28);
    put_be32(buf + 12, 28);
    for (int i = 0; i < 2 * 784; i++) buf[16 + i] = (unsigned char)((i * 31 + 7) % 256);
    char path[128];
    snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte.gz", dir);
    write_gz(path, buf, sizeof buf);
    setenv("MEMTRAIN_FASHION_MNIST_DIR", dir, 1);
    io_dataset *d = expect_load("fashion-mnist", IO_SPLIT_VAL, NULL);
    ck_assert_int_eq(d->ndocs, 2);
    ck_assert_int_eq(d->doc_off[1], 784);
    for (int i = 0; i < 2 * 784; i++) ck_assert_int_eq(d->tok[i], (i * 31 + 7) % 256);
    io_dataset_free(d);
    /* the train file is absent from this directory */
    expect_fail("fashion-mnist", IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS(dir);
    ASSERT_ERR_HAS("/train-images-idx3-ubyte.gz: missing");
    unsetenv("MEMTRAIN_FASHION_MNIST_DIR");
    remove_tree(dir);
}
END_TEST

START_TEST(test_fashion_errors) {
    char dir[64], path[128];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir);
    setenv("MEMTRAIN_FASHION_MNIST_DIR", dir, 1);

    /* truncated: the first 1 MiB of the real compressed file */
    FILE *f = fopen(MNIST_SYSTEM_DIR "/train-images-idx3-ubyte.gz", "rb");
    ck_assert_ptr_nonnull(f);
    size_t n = 1 << 20;
    unsigned char *raw = layer_xmalloc(n);
    ck_assert_uint_eq(fread(raw, 1, n, f), n);
    fclose(f);
    write_file(path, raw, n);
    free(raw);
    expect_fail("fashion-mnist", IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS(path);
    ASSERT_ERR_HAS("truncated: expected 47040016 bytes");

    unsigned char hdr[16 + 785];
    memset(hdr, 0, sizeof hdr);
    put_be32(hdr, 0x801);
    put_be32(hdr + 4, 1);
    put_be32(hdr + 8, 28);
    put_be32(hdr + 12, 28);
    write_gz(path, hdr, 16 + 784);
    expect_fail("fashion-mnist", IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS(path);
    ASSERT_ERR_HAS("bad magic 0x00000801");

    put_be32(hdr, 0x803);
    put_be32(hdr + 12, 27);
    write_gz(path, hdr, 16 + 784);
    expect_fail("fashion-mnist", IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS(path);
    ASSERT_ERR_HAS("bad dimensions 28x27");

    put_be32(hdr + 4, 0);
    put_be32(hdr + 12, 28);
    write_gz(path, hdr, 16);
    expect_fail("fashion-mnist", IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS("empty");

    /* one pixel more than the header announces */
    put_be32(hdr + 4, 1);
    write_gz(path, hdr, sizeof hdr);
    expect_fail("fashion-mnist", IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS(path);
    ASSERT_ERR_HAS("trailing data");

    write_gz(path, hdr, 10);
    expect_fail("fashion-mnist", IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS("truncated: expected a 16-byte idx header, found 10 bytes");

    setenv("MEMTRAIN_FASHION_MNIST_DIR", "/nonexistent/fmnist", 1);
    expect_fail("fashion-mnist", IO_SPLIT_VAL, NULL);
    ASSERT_ERR_HAS("/nonexistent/fmnist/t10k-images-idx3-ubyte.gz: missing");
    unsetenv("MEMTRAIN_FASHION_MNIST_DIR");
    remove_tree(dir);
}
END_TEST

/* ---- Brown ---- */

/* Counts and texts below come from an independent Python conversion of the same files. */
START_TEST(test_brown) {
    io_dataset *tr = expect_load("brown", IO_SPLIT_TRAIN, DATA_DIR);
    io_dataset *va = expect_load("brown", IO_SPLIT_VAL, DATA_DIR);
    ck_assert_int_eq(tr->ndocs + va->ndocs, 500);
    ck_assert_int_eq(va->ndocs, 50);
    ck_assert_int_eq(tr->doc_off[tr->ndocs], 5511587);
    ck_assert_int_eq(va->doc_off[va->ndocs], 615487);
    ck_assert_int_eq(tr->vocab, 256);

    char *first = doc_str(tr, 0);
    const char *want = "The Fulton County Grand Jury said Friday an investigation of Atlanta's "
                       "recent primary election produced `` no evidence '' that any "
                       "irregularities took place .\nThe jury further said";
    ck_assert_msg(strncmp(first, want, strlen(want)) == 0, "ca01 starts: %.160s", first);
    /* ca01 has no fractions, so any '/' would be a tag remnant */
    ck_assert_ptr_null(strchr(first, '/'));
    ck_assert_int_eq(doc_len(tr, 0), 12496);
    ck_assert_int_eq(doc_sum(tr, 0), 1137743);
    free(first);

    /* every 10th document validates: ca10 first, cr09 (the 500th) last */
    char *v0 = doc_str(va, 0);
    ck_assert_msg(strncmp(v0, "Vincent G. Ierulli has been appointed", 37) == 0, "%.80s", v0);
    free(v0);
    char *vl = doc_str(va, 49);
    const char *end = "boucle dress was stupefying .\n";
    ck_assert_int_eq(doc_len(va, 49), 11980);
    ck_assert_str_eq(vl + strlen(vl) - strlen(end), end);
    free(vl);

    /* tags like "/at" or "/nn" must be gone everywhere */
    char *all = layer_xmalloc((size_t)tr->doc_off[tr->ndocs] + 1);
    for (int64_t k = 0; k < tr->doc_off[tr->ndocs]; k++) all[k] = (char)tr->tok[k];
    all[tr->doc_off[tr->ndocs]] = '\0';
    ck_assert_ptr_null(strstr(all, "/at "));
    ck_assert_ptr_null(strstr(all, "/nn"));
    ck_assert_ptr_null(strstr(all, "/in "));
    ck_assert_ptr_nonnull(strstr(all, "1-1/2"));
    free(all);
    io_dataset_free(tr);
    io_dataset_free(va);
}
END_TEST

START_TEST(test_brown_errors) {
    expect_fail("brown", IO_SPLIT_TRAIN, "/nonexistent/data");
    ASSERT_ERR_HAS("/nonexistent/data/brown/cats.txt");
    ASSERT_ERR_HAS("make data");

    /* a copy of the corpus made of links, then one sample removed or spoiled */
    char dir[64], bdir[96], src[512], dst[160];
    make_tmpdir(dir, sizeof dir);
    snprintf(bdir, sizeof bdir, "%s/brown", dir);
    ck_assert_int_eq(mkdir(bdir, 0700), 0);
    char *cwd = getcwd(NULL, 0);
    snprintf(src, sizeof src, "%s/" DATA_DIR "/brown/cats.txt", cwd);
    snprintf(dst, sizeof dst, "%s/cats.txt", bdir);
    ck_assert_int_eq(symlink(src, dst), 0);
    FILE *cats = fopen(src, "r");
    ck_assert_ptr_nonnull(cats);
    char id[64], cat[64];
    while (fscanf(cats, "%63s %63s", id, cat) == 2) {
        if (strcmp(id, "ca05") == 0) continue;
        snprintf(src, sizeof src, "%s/" DATA_DIR "/brown/%s", cwd, id);
        snprintf(dst, sizeof dst, "%s/%s", bdir, id);
        ck_assert_int_eq(symlink(src, dst), 0);
    }
    fclose(cats);
    free(cwd);
    expect_fail("brown", IO_SPLIT_TRAIN, dir);
    ASSERT_ERR_HAS("/brown/ca05: cannot open");

    snprintf(dst, sizeof dst, "%s/ca05", bdir);
    const char *bad = "\tThe/at jury/nn\n\n\tsaid/vbd nothing .\n";
    write_file(dst, bad, strlen(bad));
    expect_fail("brown", IO_SPLIT_TRAIN, dir);
    ASSERT_ERR_HAS("/brown/ca05: line 3: malformed word 'nothing'");

    write_file(dst, "\n\n", 2);
    expect_fail("brown", IO_SPLIT_VAL, dir);
    ASSERT_ERR_HAS("/brown/ca05: empty");
    remove_tree(dir);
}
END_TEST

/* ---- text, u8, u16 ---- */

START_TEST(test_text_separators) {
    char dir[64], path[128], spec[160];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/a.txt", dir);
    /* one blank line stays inside a document; two split; form feeds split; whitespace-only
     * documents vanish; "\r\n" blank lines count as blank */
    const char *text = "A1\n\nA2\n\n\nB\n\f\n \n\fC\r\n\r\n\r\nD";
    write_file(path, text, strlen(text));
    snprintf(spec, sizeof spec, "text:%s", path);
    io_dataset *tr = expect_load(spec, IO_SPLIT_TRAIN, NULL);
    io_dataset *va = expect_load(spec, IO_SPLIT_VAL, NULL);
    ck_assert_int_eq(tr->ndocs, 3);
    ck_assert_int_eq(va->ndocs, 1);
    const char *want[3] = {"A1\n\nA2\n", "B\n", "C\r\n"};
    for (int i = 0; i < 3; i++) {
        char *s = doc_str(tr, i);
        ck_assert_str_eq(s, want[i]);
        free(s);
    }
    char *s = doc_str(va, 0);
    ck_assert_str_eq(s, "D");
    free(s);
    ck_assert_int_eq(tr->vocab, 256);
    io_dataset_free(tr);
    io_dataset_free(va);
    remove_tree(dir);
}
END_TEST

START_TEST(test_text_fixed_cut) {
    char dir[64], path[128], spec[160];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/b.txt", dir);
    size_t n = 2 * IO_DOC_TOKENS + 100;
    unsigned char *p = layer_xmalloc(n);
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)('a' + (i * 7 + i / 1000) % 26);
    write_file(path, p, n);
    snprintf(spec, sizeof spec, "text:%s", path);
    io_dataset *tr = expect_load(spec, IO_SPLIT_TRAIN, NULL);
    io_dataset *va = expect_load(spec, IO_SPLIT_VAL, NULL);
    ck_assert_int_eq(tr->ndocs, 2);
    ck_assert_int_eq(doc_len(tr, 1), IO_DOC_TOKENS);
    ck_assert_int_eq(va->ndocs, 1);
    ck_assert_int_eq(doc_len(va, 0), 100);
    for (int k = 0; k < 100; k++) ck_assert_int_eq(va->tok[k], p[2 * IO_DOC_TOKENS + k]);
    ck_assert_int_eq(tr->tok[IO_DOC_TOKENS + 5], p[IO_DOC_TOKENS + 5]);
    free(p);
    io_dataset_free(tr);
    io_dataset_free(va);
    remove_tree(dir);
}
END_TEST

/* Files whose size stat reports as 0 (/proc) are read to their end, across the buffer's
 * growth: /proc/self/maps of this process runs past 4 KiB with the libraries mapped. */
START_TEST(test_read_unsized_file) {
    unsigned char *p;
    size_t n;
    ck_assert_int_eq(io_data_read_file("/proc/self/maps", &p, &n, err, sizeof err), 0);
    ck_assert_msg(n > 4096, "read %zu bytes", n);
    ck_assert_msg(memchr(p, '\n', n) != NULL && p[n - 1] == '\n', "not the maps text");
    free(p);
    ck_assert_int_eq(io_data_read_file("/proc/self/status", &p, &n, err, sizeof err), 0);
    ck_assert_msg(n > 5 && memcmp(p, "Name:", 5) == 0, "not the status text");
    free(p);
}
END_TEST

START_TEST(test_u8) {
    char dir[64], path[128], spec[160];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/t.u8", dir);
    size_t n = 10 * (size_t)IO_DOC_TOKENS + 5; /* 11 documents: number 9 validates */
    unsigned char *p = layer_xmalloc(n);
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i / IO_DOC_TOKENS * 20 + i % IO_DOC_TOKENS % 7);
    write_file(path, p, n);
    snprintf(spec, sizeof spec, "u8:%s", path);
    io_dataset *tr = expect_load(spec, IO_SPLIT_TRAIN, NULL);
    io_dataset *va = expect_load(spec, IO_SPLIT_VAL, NULL);
    ck_assert_int_eq(tr->ndocs, 10);
    ck_assert_int_eq(va->ndocs, 1);
    ck_assert_int_eq(va->tok[0], 180);        /* document 9 */
    ck_assert_int_eq(tr->tok[tr->doc_off[8]], 160); /* document 8 */
    ck_assert_int_eq(tr->tok[tr->doc_off[9]], 200); /* document 10, the short tail */
    ck_assert_int_eq(doc_len(tr, 9), 5);
    ck_assert_int_eq(tr->vocab, 256);
    io_dataset_free(tr);
    io_dataset_free(va);

    /* the largest byte is 200 + 4 = 204 */
    snprintf(spec, sizeof spec, "u8:%s:205", path);
    io_dataset *d = expect_load(spec, IO_SPLIT_VAL, NULL);
    ck_assert_int_eq(d->vocab, 205);
    io_dataset_free(d);
    snprintf(spec, sizeof spec, "u8:%s:204", path);
    expect_fail(spec, IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS(path);
    ASSERT_ERR_HAS("token value 204 at token index 655364 out of range (vocab 204)");
    free(p);
    remove_tree(dir);
}
END_TEST

START_TEST(test_u16) {
    char dir[64], path[128], spec[160];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/t.u16", dir);
    int ntok = 3 * IO_DOC_TOKENS;
    unsigned char *p = layer_xmalloc(2 * (size_t)ntok);
    for (int i = 0; i < ntok; i++) {
        int t = i == 1 ? 0x1234 : (i * 13) % 4000;
        p[2 * i] = (unsigned char)(t & 0xff);
        p[2 * i + 1] = (unsigned char)(t >> 8);
    }
    write_file(path, p, 2 * (size_t)ntok);
    snprintf(spec, sizeof spec, "u16:%s", path);
    io_dataset *tr = expect_load(spec, IO_SPLIT_TRAIN, NULL);
    ck_assert_int_eq(tr->ndocs, 2);
    ck_assert_int_eq(tr->tok[1], 0x1234); /* little-endian */
    ck_assert_int_eq(tr->tok[IO_DOC_TOKENS + 1], ((IO_DOC_TOKENS + 1) * 13) % 4000);
    ck_assert_int_eq(tr->vocab, 0x1234 + 1); /* the vocab is max + 1 over the whole file */
    io_dataset_free(tr);

    snprintf(spec, sizeof spec, "u16:%s:65536", path);
    io_dataset *va = expect_load(spec, IO_SPLIT_VAL, NULL);
    ck_assert_int_eq(va->vocab, 65536);
    ck_assert_int_eq(va->ndocs, 1);
    ck_assert_int_eq(va->tok[3], ((2 * IO_DOC_TOKENS + 3) * 13) % 4000);
    io_dataset_free(va);

    snprintf(spec, sizeof spec, "u16:%s:4000", path);
    expect_fail(spec, IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS(path);
    ASSERT_ERR_HAS("token value 4660 at token index 1 out of range (vocab 4000)");

    snprintf(spec, sizeof spec, "u16:%s:70000", path);
    expect_fail(spec, IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS("vocab 70000 out of range 1..65536");

    write_file(path, p, 7);
    snprintf(spec, sizeof spec, "u16:%s", path);
    expect_fail(spec, IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS(path);
    ASSERT_ERR_HAS("size 7 bytes is not a multiple of 2");
    free(p);
    remove_tree(dir);
}
END_TEST

START_TEST(test_spec_errors) {
    char dir[64], path[128], spec[160];
    make_tmpdir(dir, sizeof dir);

    expect_fail("foo:bar", IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS("unknown dataset spec prefix 'foo'");
    expect_fail("mnist", IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS("unknown dataset 'mnist'");
    expect_fail("u16:", IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS("no file path");

    snprintf(spec, sizeof spec, "text:%s/missing.txt", dir);
    expect_fail(spec, IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS("/missing.txt: cannot open (No such file");

    /* what is not a regular file is refused by name, and never opened in a way that blocks
       (a FIFO without a writer would hold open() forever) */
    snprintf(path, sizeof path, "%s/fifo", dir);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    const char *prefixes[3] = {"text:", "u8:", "u16:"};
    for (int i = 0; i < 3; i++) {
        snprintf(spec, sizeof spec, "%s%s", prefixes[i], path);
        expect_fail(spec, IO_SPLIT_TRAIN, NULL);
        ASSERT_ERR_HAS("/fifo: not a regular file (a FIFO)");
        snprintf(spec, sizeof spec, "%s%s", prefixes[i], dir);
        expect_fail(spec, IO_SPLIT_TRAIN, NULL);
        ASSERT_ERR_HAS(": not a regular file (a directory)");
    }
    expect_fail("u8:/dev/zero", IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS("/dev/zero: not a regular file (a character device)");
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    setenv("MEMTRAIN_FASHION_MNIST_DIR", dir, 1);
    expect_fail("fashion-mnist", IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS("/train-images-idx3-ubyte.gz: not a regular file (a FIFO)");
    unsetenv("MEMTRAIN_FASHION_MNIST_DIR");

    snprintf(path, sizeof path, "%s/empty.txt", dir);
    write_file(path, "", 0);
    snprintf(spec, sizeof spec, "text:%s", path);
    expect_fail(spec, IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS("empty.txt: empty file");

    write_file(path, "\f \n\n\n\f", 6);
    expect_fail(spec, IO_SPLIT_TRAIN, NULL);
    ASSERT_ERR_HAS("empty.txt: empty: only whitespace");

    /* one document: training only */
    snprintf(path, sizeof path, "%s/one.u8", dir);
    write_file(path, "abc", 3);
    snprintf(spec, sizeof spec, "u8:%s", path);
    io_dataset *d = expect_load(spec, IO_SPLIT_TRAIN, NULL);
    ck_assert_int_eq(d->ndocs, 1);
    io_dataset_free(d);
    expect_fail(spec, IO_SPLIT_VAL, NULL);
    ASSERT_ERR_HAS("one.u8: validation split is empty (1 document");
    remove_tree(dir);
}
END_TEST

/* ---- streams ---- */

/* Three documents of lengths 5, 3, 8 holding 100+k, 200+k, 300+k. */
static io_dataset *small_dataset(void) {
    io_dataset *d = layer_xcalloc(1, sizeof *d);
    static const int len[3] = {5, 3, 8};
    d->vocab = 400;
    d->ndocs = 3;
    d->doc_off = layer_xmalloc(4 * sizeof(int64_t));
    d->tok = layer_xmalloc(16 * sizeof(uint16_t));
    d->doc_off[0] = 0;
    for (int i = 0; i < 3; i++) {
        d->doc_off[i + 1] = d->doc_off[i] + len[i];
        for (int k = 0; k < len[i]; k++) d->tok[d->doc_off[i] + k] = (uint16_t)(100 * (i + 1) + k);
    }
    return d;
}

/* Expects segment `want` (L = 4) and flag; -1 is padding. */
static void expect_seg(io_stream *st, const io_dataset *d, int flag, int a, int b, int c, int e) {
    int32_t seg[4] = {7, 7, 7, 7};
    int want[4] = {a, b, c, e};
    int got = io_stream_next(st, d, seg, 4);
    ck_assert_int_eq(got, flag);
    for (int k = 0; k < 4; k++) ck_assert_int_eq(seg[k], want[k]);
}

START_TEST(test_stream_segments) {
    io_dataset *d = small_dataset();
    io_stream st;
    io_stream_init(&st, 0, 2);
    /* stream 0 of 2 reads documents 0, 2, 1, 0, ... */
    expect_seg(&st, d, IO_SEG_DOC_START, 100, 101, 102, 103);
    ck_assert_int_eq(st.doc_count, 1);
    ck_assert_int_eq(st.pos, 4);
    expect_seg(&st, d, 0, 104, -1, -1, -1);
    ck_assert_int_eq(st.pos, 0);
    /* a document of exactly two segments gets no third, all-padding one */
    expect_seg(&st, d, IO_SEG_DOC_START, 300, 301, 302, 303);
    expect_seg(&st, d, 0, 304, 305, 306, 307);
    ck_assert_int_eq(st.doc_count, 2);
    ck_assert_int_eq(st.pos, 0);
    expect_seg(&st, d, IO_SEG_DOC_START, 200, 201, 202, -1);
    expect_seg(&st, d, IO_SEG_DOC_START, 100, 101, 102, 103);

    /* stream 1 of 2 reads documents 1, 0, 2: together the streams deal out every document */
    io_stream s1;
    io_stream_init(&s1, 1, 2);
    expect_seg(&s1, d, IO_SEG_DOC_START, 200, 201, 202, -1);
    expect_seg(&s1, d, IO_SEG_DOC_START, 100, 101, 102, 103);
    expect_seg(&s1, d, 0, 104, -1, -1, -1);
    expect_seg(&s1, d, IO_SEG_DOC_START, 300, 301, 302, 303);
    io_dataset_free(d);
}
END_TEST

/* The state (doc_count, pos) alone resumes a stream, and long segments still stop at doc ends. */
START_TEST(test_stream_resume) {
    io_dataset *d = small_dataset();
    io_stream a, b;
    io_stream_init(&a, 2, 5);
    int32_t sa[3], sb[3], big[10];
    for (int i = 0; i < 7; i++) io_stream_next(&a, d, sa, 3);
    io_stream_init(&b, 2, 5);
    b.doc_count = a.doc_count;
    b.pos = a.pos;
    for (int i = 0; i < 20; i++) {
        int fa = io_stream_next(&a, d, sa, 3), fb = io_stream_next(&b, d, sb, 3);
        ck_assert_int_eq(fa, fb);
        for (int k = 0; k < 3; k++) ck_assert_int_eq(sa[k], sb[k]);
    }
    /* stream 2 of 5 over 3 documents: i-th document is (2 + 5i) mod 3 = 2, 1, 0, 2 */
    io_stream c;
    io_stream_init(&c, 2, 5);
    static const int first[4] = {300, 200, 100, 300};
    static const int lens[4] = {8, 3, 5, 8};
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(io_stream_next(&c, d, big, 10), IO_SEG_DOC_START);
        ck_assert_int_eq(big[0], first[i]);
        ck_assert_int_eq(big[lens[i] - 1], first[i] + lens[i] - 1);
        ck_assert_int_eq(big[lens[i]], -1);
        ck_assert_int_eq(big[9], -1);
    }
    ck_assert_int_eq(c.doc_count, 4);
    io_dataset_free(d);
    io_dataset_free(NULL);
}
END_TEST

/* n documents of two tokens each, document k being (k, k): a stream's segment names its
 * document. */
static io_dataset *numbered_dataset(int64_t n) {
    io_dataset *d = calloc(1, sizeof *d);
    d->vocab = 65536;
    d->ndocs = n;
    d->doc_off = malloc((size_t)(n + 1) * sizeof(int64_t));
    d->tok = malloc((size_t)(2 * n) * sizeof(uint16_t));
    for (int64_t k = 0; k <= n; k++) d->doc_off[k] = 2 * k;
    for (int64_t k = 0; k < 2 * n; k++) d->tok[k] = (uint16_t)(k / 2);
    return d;
}

/* Each (seed, pass) orders every document once; passes and seeds give other orders. */
START_TEST(test_shuffle_permutation) {
    static const int64_t sizes[] = {1, 2, 3, 10, 37, 450, 1000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int64_t n = sizes[i];
        int64_t *seen = calloc((size_t)n, sizeof(int64_t));
        int64_t *p0 = malloc((size_t)n * sizeof(int64_t));
        int moved[3] = {0, 0, 0}; /* against pass 0: pass 1, seed 2, file order */
        for (int64_t k = 0; k < n; k++) {
            int64_t v = io_shuffle_doc(7, 0, k, n);
            ck_assert(v >= 0 && v < n);
            seen[v]++;
            p0[k] = v;
        }
        for (int64_t k = 0; k < n; k++) {
            ck_assert_int_eq(seen[k], 1);
            moved[0] += io_shuffle_doc(7, 1, k, n) != p0[k];
            moved[1] += io_shuffle_doc(8, 0, k, n) != p0[k];
            moved[2] += p0[k] != k;
            ck_assert_int_eq(io_shuffle_doc(7, 0, k, n), p0[k]); /* a function of its inputs */
        }
        if (n >= 10) /* most places move: a permutation, not a near-identity */
            for (int j = 0; j < 3; j++) ck_assert_int_gt(moved[j], n / 2);
        free(seen);
        free(p0);
    }
}
END_TEST

/* The first `per` documents stream j of S reads shuffled by class (seed 42) from a
 * numbered_dataset, each whole in one segment. */
static void shuffled_docs(const io_dataset *d, int64_t j, int64_t S, int64_t per, int64_t *out) {
    io_stream st;
    io_stream_init(&st, j, S);
    io_stream_set_shuffle(&st, 42, 1);
    int32_t seg[2];
    for (int64_t i = 0; i < per; i++) {
        ck_assert_int_eq(io_stream_next(&st, d, seg, 2), IO_SEG_DOC_START);
        ck_assert_int_eq(seg[0], seg[1]);
        out[i] = seg[0];
    }
}

/* Shuffled streams: together they read every document once per pass, each pass in a new
 * order; (doc_count, pos) resumes them; without shuffling the order is the file order. */
START_TEST(test_stream_shuffle) {
    const int64_t n = 23, S = 5, per = 14; /* 5 streams x 14 documents: 70 places, 3+ passes */
    io_dataset *d = numbered_dataset(n);
    int64_t order[5 * 14], docs[14];
    int32_t seg[2];
    for (int64_t j = 0; j < S; j++) {
        shuffled_docs(d, j, S, per, docs);
        for (int64_t i = 0; i < per; i++) order[j + i * S] = docs[i]; /* place g = j + i * S */
    }
    int in_file_order = 0;
    for (int64_t pass = 0; pass < 3; pass++) {
        int count[23] = {0};
        for (int64_t k = 0; k < n; k++) {
            count[order[pass * n + k]]++;
            ck_assert_int_eq(order[pass * n + k], io_shuffle_doc(42, pass, k, n));
            in_file_order += order[pass * n + k] == k;
        }
        for (int64_t k = 0; k < n; k++) ck_assert_int_eq(count[k], 1);
    }
    ck_assert_int_lt(in_file_order, 3 * n / 2);
    /* a copy of the cursor, made mid-document and mid-run, reads on identically */
    io_stream a, b;
    io_stream_init(&a, 3, S);
    io_stream_set_shuffle(&a, 42, 1);
    int32_t one[1], other[1];
    for (int i = 0; i < 9; i++) io_stream_next(&a, d, one, 1);
    ck_assert_int_eq(a.pos, 1);
    io_stream_init(&b, 3, S);
    io_stream_set_shuffle(&b, 42, 1);
    b.doc_count = a.doc_count;
    b.pos = a.pos;
    ck_assert(io_stream_valid(&b, d));
    for (int i = 0; i < 30; i++) {
        ck_assert_int_eq(io_stream_next(&a, d, one, 1), io_stream_next(&b, d, other, 1));
        ck_assert_int_eq(one[0], other[0]);
    }
    /* file order: stream j's i-th document is (j + i S) mod n */
    io_stream f;
    io_stream_init(&f, 4, S);
    for (int64_t i = 0; i < per; i++) {
        io_stream_next(&f, d, seg, 2);
        ck_assert_int_eq(seg[0], (4 + i * S) % n);
    }
    ck_assert_double_eq_tol(io_stream_passes(46, d), 2.0, 1e-12);
    io_dataset_free(d);
}
END_TEST

/* Shuffled by class: with c = gcd(8, 60) = 4, stream j reads only documents congruent to j
 * modulo 4; the two streams of a class take turns over its 15 documents, each pass of them a
 * permutation drawn anew; classes are not in step; a rank that keeps only its streams'
 * documents reads the same; with c = 1 the order is the one over all documents. */
START_TEST(test_stream_shuffle_by_class) {
    const int64_t n = 60, S = 8, c = 4, m = 15, T = 2, per = 15; /* 2 passes of each class */
    io_dataset *d = numbered_dataset(n);
    int64_t place[4][30], docs[15]; /* class, place t + i T */
    for (int64_t j = 0; j < S; j++) {
        shuffled_docs(d, j, S, per, docs);
        for (int64_t i = 0; i < per; i++) {
            ck_assert_int_eq(docs[i] % c, j % c);
            place[j % c][j / c + i * T] = docs[i];
        }
    }
    int moved = 0, apart = 0;
    for (int64_t cls = 0; cls < c; cls++)
        for (int pass = 0; pass < 2; pass++) {
            int count[60] = {0};
            for (int64_t k = 0; k < m; k++) count[place[cls][pass * m + k]]++;
            for (int64_t k = 0; k < m; k++) ck_assert_int_eq(count[cls + c * k], 1);
            for (int64_t k = 0; k < m; k++) {
                moved += pass == 1 && place[cls][m + k] != place[cls][k];
                apart += cls > 0 && (place[cls][pass * m + k] - cls) != place[0][pass * m + k];
            }
        }
    ck_assert_int_gt(moved, m);
    ck_assert_int_gt(apart, m);
    /* streams 2..3 from their classes' documents alone: half of them, 2 tokens each */
    io_dataset *kept = numbered_dataset(n);
    io_dataset_keep_streams(kept, 2, 2, S);
    ck_assert_int_eq(kept->doc_off[n], n);
    for (int64_t j = 2; j < 4; j++) {
        io_stream a, b;
        io_stream_init(&a, j, S);
        io_stream_init(&b, j, S);
        io_stream_set_shuffle(&a, 42, 1);
        io_stream_set_shuffle(&b, 42, 1);
        for (int i = 0; i < 40; i++) {
            int32_t sa[2], sb[2];
            ck_assert_int_eq(io_stream_next(&a, d, sa, 2), io_stream_next(&b, kept, sb, 2));
            ck_assert_int_eq(sa[0], sb[0]);
        }
    }
    /* gcd(5, 23) = 1: one class, the order over all documents */
    io_dataset *odd = numbered_dataset(23);
    io_stream x, y;
    io_stream_init(&x, 3, 5);
    io_stream_init(&y, 3, 5);
    io_stream_set_shuffle(&x, 9, 1);
    io_stream_set_shuffle(&y, 9, 0);
    for (int i = 0; i < 20; i++) {
        int32_t sx[2], sy[2];
        io_stream_next(&x, odd, sx, 2);
        io_stream_next(&y, odd, sy, 2);
        ck_assert_int_eq(sx[0], sy[0]);
    }
    io_dataset_free(odd);
    io_dataset_free(kept);
    io_dataset_free(d);
}
END_TEST

/* A rank keeps only the documents its streams read: 6 documents (lengths 1..6, tokens 100 d + k)
 * and 4 streams read documents congruent to the stream modulo gcd(4, 6) = 2; streams 1..1
 * keep the odd ones, and read exactly what they read from the whole dataset. */
START_TEST(test_keep_streams) {
    io_dataset *full = layer_xcalloc(1, sizeof *full), *d = layer_xcalloc(1, sizeof *d);
    full->vocab = d->vocab = 1000;
    full->ndocs = d->ndocs = 6;
    full->doc_off = layer_xmalloc(7 * sizeof(int64_t));
    d->doc_off = layer_xmalloc(7 * sizeof(int64_t));
    full->tok = layer_xmalloc(21 * sizeof(uint16_t));
    d->tok = layer_xmalloc(21 * sizeof(uint16_t));
    full->doc_off[0] = 0;
    for (int i = 0; i < 6; i++) {
        full->doc_off[i + 1] = full->doc_off[i] + i + 1;
        for (int k = 0; k <= i; k++) full->tok[full->doc_off[i] + k] = (uint16_t)(100 * i + k);
    }
    memcpy(d->doc_off, full->doc_off, 7 * sizeof(int64_t));
    memcpy(d->tok, full->tok, 21 * sizeof(uint16_t));
    io_dataset_keep_streams(d, 1, 1, 4);
    ck_assert_int_eq(d->ndocs, 6);
    ck_assert_int_eq(d->doc_off[6], 2 + 4 + 6);        /* documents 1, 3, 5 */
    ck_assert_int_eq(d->doc_off[1] - d->doc_off[0], 0); /* document 0 dropped */
    io_stream a, b;
    io_stream_init(&a, 1, 4);
    io_stream_init(&b, 1, 4);
    for (int i = 0; i < 30; i++) {
        int32_t sa[4], sb[4];
        ck_assert_int_eq(io_stream_next(&a, full, sa, 4), io_stream_next(&b, d, sb, 4));
        for (int k = 0; k < 4; k++) ck_assert_int_eq(sa[k], sb[k]);
    }
    /* streams 0..1 read every document: nothing dropped */
    io_dataset_keep_streams(full, 0, 2, 4);
    ck_assert_int_eq(full->doc_off[6], 21);
    /* the first 3 documents (validation's): their tokens as they were, the rest empty */
    io_dataset_keep_first(full, 3);
    ck_assert_int_eq(full->ndocs, 6);
    ck_assert_int_eq(full->doc_off[6], 1 + 2 + 3);
    for (int i = 0; i < 3; i++)
        for (int k = 0; k <= i; k++) ck_assert_int_eq(full->tok[full->doc_off[i] + k], 100 * i + k);
    ck_assert_int_eq(full->doc_off[5] - full->doc_off[4], 0);
    io_dataset_free(full);
    io_dataset_free(d);
}
END_TEST

static Suite *data_suite(void) {
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("data");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_fashion_train);
    tcase_add_test(tc, test_fashion_val);
    tcase_add_test(tc, test_fashion_small_file);
    tcase_add_test(tc, test_fashion_errors);
    tcase_add_test(tc, test_brown);
    tcase_add_test(tc, test_brown_errors);
    tcase_add_test(tc, test_text_separators);
    tcase_add_test(tc, test_text_fixed_cut);
    tcase_add_test(tc, test_read_unsized_file);
    tcase_add_test(tc, test_u8);
    tcase_add_test(tc, test_u16);
    tcase_add_test(tc, test_spec_errors);
    tcase_add_test(tc, test_stream_segments);
    tcase_add_test(tc, test_stream_resume);
    tcase_add_test(tc, test_shuffle_permutation);
    tcase_add_test(tc, test_stream_shuffle);
    tcase_add_test(tc, test_stream_shuffle_by_class);
    tcase_add_test(tc, test_keep_streams);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(data_suite()); }
