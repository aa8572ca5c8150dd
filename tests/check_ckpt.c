/* Checkpoint files: resharded round trips, attributes, corruption, truncation, foreign files, commit/abort/prune/list. */
// mpirun-np: 1 2 3
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "comm/comm.h"
#include "tests/testutil.h"
#include "io/ckpt.h"
#include "layers/common.h"

/* Array values are closed-form in (array, slice, element), so every rank knows what any slice
 * must hold whoever wrote it, and a misplaced slice, a swapped element or a truncated integer
 * shows. Checks count mismatches and sum them over ranks before asserting, so all ranks fail
 * or pass together and none is left waiting in a collective. Set MEMTRAIN_CKPT_KEEP=path to
 * keep the small checkpoint of test_h5py_sample there (tests/test_ckpt_h5py.sh reads it). */

static comm_ctx *g_comm;

typedef struct arr {
    const char *name;
    io_dtype t;
    int ndims;
    int64_t dims[4];
    int id;
} arr;

static const arr ARRS[] = {
    {"dense/wte/data", IO_F32, 2, {1, 300}, 1},
    {"tables/dec0.self.qkv/out1/data", IO_F32, 3, {7, 16, 8}, 2},
    {"streams/memory", IO_F32, 2, {5, 12}, 3},
    {"streams/cursor", IO_I64, 2, {5, 2}, 4},
    {"misc/counts", IO_I32, 1, {9}, 5},
    {"opt/m4", IO_F32, 4, {6, 3, 2, 2}, 6},
    {"opt/step", IO_I64, 1, {2}, 7},
    {"tables/idx", IO_I32, 3, {4, 3, 5}, 8},
    /* 20000 crc32s: an 80 KB attribute, beyond the 64 KB of HDF5's oldest format */
    {"long/rows", IO_I32, 2, {20000, 2}, 9},
    {"empty/cols", IO_F32, 2, {3, 0}, 10},
    /* beyond a write's staging (IO_CKPT_STAGE_BYTES): 1.2 MB slices, three to a round, so
       several rounds per rank; 4.8 MB slices, one to a round, so ranks with fewer slices sit
       out the last rounds */
    {"big/rows", IO_F32, 2, {23, 300000}, 11},
    {"big/slabs", IO_F32, 2, {5, 1200000}, 12},
};
enum { NARRS = sizeof(ARRS) / sizeof(ARRS[0]) };

static int64_t per_slice(const arr *a) {
    int64_t p = 1;
    for (int d = 1; d < a->ndims; d++) p *= a->dims[d];
    return p;
}

static size_t esize(io_dtype t) { return t == IO_I64 ? 8 : 4; }

static float fval(const arr *a, int64_t s, int64_t j) {
    return (float)((a->id * 131 + s * 17 + j) % 65536) * 0.125f - 100.0f;
}
static int64_t lval(const arr *a, int64_t s, int64_t j) {
    return ((int64_t)a->id << 36) + s * 100003 + j * 7 - 5;
}
static int32_t ival(const arr *a, int64_t s, int64_t j) {
    return (int32_t)(a->id * 1000000 + s * 97 + j) * (s % 2 ? -1 : 1);
}

/* Fresh buffer with the listed slices of a, in list order. */
static void *fill(const arr *a, const int64_t *sl, int n) {
    int64_t per = per_slice(a);
    char *buf = layer_xmalloc((size_t)(n * per + 1) * esize(a->t));
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < per; j++) {
            int64_t k = i * per + j;
            if (a->t == IO_F32) ((float *)buf)[k] = fval(a, sl[i], j);
            if (a->t == IO_I64) ((int64_t *)buf)[k] = lval(a, sl[i], j);
            if (a->t == IO_I32) ((int32_t *)buf)[k] = ival(a, sl[i], j);
        }
    return buf;
}

/* Entries of buf (the listed slices of a) that differ from the closed form. */
static int64_t mismatches(const arr *a, const int64_t *sl, int n, const void *buf) {
    int64_t per = per_slice(a), bad = 0;
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < per; j++) {
            int64_t k = i * per + j;
            if (a->t == IO_F32) bad += ((const float *)buf)[k] != fval(a, sl[i], j);
            if (a->t == IO_I64) bad += ((const int64_t *)buf)[k] != lval(a, sl[i], j);
            if (a->t == IO_I32) bad += ((const int32_t *)buf)[k] != ival(a, sl[i], j);
        }
    return bad;
}

static int64_t sum_all(int64_t v) {
    comm_sum_i64(g_comm, &v, 1);
    return v;
}

/* Slices for writing: round-robin, listed descending on odd ranks (an unsorted list). */
static int deal_write(int64_t d0, int64_t *sl) {
    int P = comm_size(g_comm), r = comm_rank(g_comm), n = 0;
    for (int64_t s = 0; s < d0; s++)
        if (s % P == r) sl[n++] = s;
    if (r % 2)
        for (int i = 0; i < n / 2; i++) {
            int64_t t = sl[i];
            sl[i] = sl[n - 1 - i];
            sl[n - 1 - i] = t;
        }
    return n;
}

/* Slices for reading, unlike the writing ones: contiguous blocks dealt to ranks in reverse,
 * each listed descending. */
static int deal_read_blocks(int64_t d0, int64_t *sl) {
    int P = comm_size(g_comm), r = comm_rank(g_comm), n = 0;
    int b = P - 1 - r;
    int64_t lo = d0 * b / P, hi = d0 * (b + 1) / P;
    for (int64_t s = hi - 1; s >= lo; s--) sl[n++] = s;
    return n;
}

/* Every slice on every rank, rotated by the rank, and slice 0 once more at the end. */
static int deal_read_all(int64_t d0, int64_t *sl) {
    int r = comm_rank(g_comm), n = 0;
    for (int64_t s = 0; s < d0; s++) sl[n++] = (s + r + 1) % d0;
    if (d0 > 0) sl[n++] = 0;
    return n;
}

/* An irregular split: runs of varying length and spacing per rank, listed in a scrambled
 * order (by s * 7919 mod d0, a permutation when d0 is not a multiple of 7919). */
static int deal_read_scattered(int64_t d0, int64_t *sl) {
    int P = comm_size(g_comm), r = comm_rank(g_comm), n = 0;
    for (int64_t k = 0; k < d0; k++) {
        int64_t s = k * 7919 % d0;
        if ((s * s / 3 + s / 5) % P == r) sl[n++] = s;
    }
    return n;
}

/* A fresh empty directory, the same name on every rank. */
static void make_dir(char *out, size_t n) {
    char name[256] = "/tmp/memtrain-ckpt-XXXXXX";
    if (comm_rank(g_comm) == 0) LAYER_ASSERT(mkdtemp(name) != NULL);
    comm_broadcast(g_comm, name, sizeof name, 0);
    snprintf(out, n, "%s", name);
}

/* Removes a flat directory and everything in it (rank 0, after everyone is done with it). */
static void remove_dir(const char *dir) {
    comm_barrier(g_comm);
    if (comm_rank(g_comm) != 0) return;
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[1400];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* Names in dir, sorted and joined by spaces (rank 0's view, broadcast). */
static void dir_listing(const char *dir, char *out, size_t n) {
    char buf[2048] = "";
    if (comm_rank(g_comm) == 0) {
        struct dirent **names;
        int k = scandir(dir, &names, NULL, alphasort);
        for (int i = 0; i < k; i++) {
            if (names[i]->d_name[0] != '.') {
                size_t len = strlen(buf);
                snprintf(buf + len, sizeof buf - len, "%s%s", len ? " " : "", names[i]->d_name);
            }
            free(names[i]);
        }
        if (k >= 0) free(names);
    }
    comm_broadcast(g_comm, buf, sizeof buf, 0);
    snprintf(out, n, "%s", buf);
}

/* Rank 0 (re)writes a file once every rank is done with what came before. */
static void write_file(const char *path, const char *text) {
    comm_barrier(g_comm);
    if (comm_rank(g_comm) == 0) {
        FILE *f = fopen(path, "w");
        LAYER_ASSERT(f);
        fputs(text, f);
        fclose(f);
    }
    comm_barrier(g_comm);
}

/* Writes arrays ARRS[0..na-1] dealt round-robin and commits step; asserts success. */
static void write_ckpt(const char *dir, int64_t step, int na, int keep) {
    char err[512];
    io_ckpt *ck = io_ckpt_create(g_comm, dir, step, err, sizeof err);
    ck_assert_msg(ck != NULL, "%s", err);
    for (int i = 0; i < na; i++) {
        const arr *a = &ARRS[i];
        int64_t *sl = layer_xmalloc((size_t)(a->dims[0] + 1) * sizeof(int64_t));
        int n = deal_write(a->dims[0], sl);
        void *buf = fill(a, sl, n);
        int rc = io_ckpt_write(ck, a->name, a->t, a->ndims, a->dims, n, sl, buf, err, sizeof err);
        ck_assert_msg(rc == 0, "%s", err);
        free(buf);
        free(sl);
    }
    ck_assert_int_eq(io_ckpt_commit(ck, keep, err, sizeof err), 0);
}

/* Reads every array with the given dealing; returns the mismatches over all ranks. */
static int64_t read_all_arrays(io_ckpt *ck, int (*deal)(int64_t, int64_t *)) {
    char err[512];
    int64_t bad = 0;
    for (int i = 0; i < NARRS; i++) {
        const arr *a = &ARRS[i];
        int64_t *sl = layer_xmalloc((size_t)(a->dims[0] + 2) * sizeof(int64_t));
        int n = deal(a->dims[0], sl);
        size_t bytes = (size_t)(n * per_slice(a) + 1) * esize(a->t);
        void *out = layer_xmalloc(bytes);
        memset(out, 0xA5, bytes); /* stale bytes must not pass for data */
        int rc = io_ckpt_read(ck, a->name, a->t, a->ndims, a->dims, n, sl, out, err, sizeof err);
        if (rc != 0) {
            if (comm_rank(g_comm) == 0) fprintf(stderr, "read %s: %s\n", a->name, err);
            bad += 1000000;
        } else {
            bad += mismatches(a, sl, n, out);
        }
        free(out);
        free(sl);
    }
    return sum_all(bad);
}

/* Every rank got exactly `want` as its message. */
static void assert_msg_everywhere(const char *err, const char *want) {
    int64_t bad = sum_all(strcmp(err, want) != 0);
    ck_assert_msg(bad == 0, "message \"%s\", expected \"%s\" (%lld ranks differ)", err, want,
                  (long long)bad);
}

static void ckpt_path(char *out, size_t n, const char *dir, int64_t step) {
    snprintf(out, n, "%s/ckpt-%08lld.h5", dir, (long long)step);
}

START_TEST(test_roundtrip_resharded) {
    char dir[256], path[512], err[512];
    make_dir(dir, sizeof dir);
    /* a nested directory that does not exist yet */
    char sub[300];
    snprintf(sub, sizeof sub, "%s/run/ckpt", dir);
    const int64_t step = INT64_C(1234567890123);
    char *config = layer_xmalloc(6000);
    size_t len = 0;
    for (int i = 0; len < 5000; i++) len += (size_t)sprintf(config + len, "key%d = %d\n", i, i * i);

    io_ckpt *ck = io_ckpt_create(g_comm, sub, step, err, sizeof err);
    ck_assert_msg(ck != NULL, "%s", err);
    io_ckpt_set_attr_str(ck, "config", "placeholder, replaced below");
    for (int i = 0; i < NARRS; i++) {
        const arr *a = &ARRS[i];
        int64_t *sl = layer_xmalloc((size_t)(a->dims[0] + 1) * sizeof(int64_t));
        int n = deal_write(a->dims[0], sl);
        void *buf = fill(a, sl, n);
        int rc = io_ckpt_write(ck, a->name, a->t, a->ndims, a->dims, n, sl, buf, err, sizeof err);
        ck_assert_msg(rc == 0, "%s", err);
        free(buf);
        free(sl);
    }
    io_ckpt_set_attr_str(ck, "config", config);
    io_ckpt_set_attr_i64(ck, "seed", -42);
    ck_assert_int_eq(io_ckpt_commit(ck, 0, err, sizeof err), 0);

    char listing[2048];
    dir_listing(sub, listing, sizeof listing);
    ck_assert_str_eq(listing, "LATEST ckpt-1234567890123.h5");
    snprintf(path, sizeof path, "%s/ckpt-1234567890123.h5", sub);

    io_ckpt *r = io_ckpt_open(g_comm, path, err, sizeof err);
    ck_assert_msg(r != NULL, "%s", err);
    ck_assert_str_eq(io_ckpt_path(r), path);
    ck_assert_int_eq(read_all_arrays(r, deal_read_blocks), 0);
    ck_assert_int_eq(read_all_arrays(r, deal_read_all), 0);
    ck_assert_int_eq(read_all_arrays(r, deal_read_scattered), 0);

    int64_t v = 0;
    ck_assert_int_eq(io_ckpt_get_attr_i64(r, "step", &v, err, sizeof err), 0);
    ck_assert(v == step);
    ck_assert_int_eq(io_ckpt_get_attr_i64(r, "format_version", &v, err, sizeof err), 0);
    ck_assert_int_eq(v, 2);
    ck_assert_int_eq(io_ckpt_get_attr_i64(r, "seed", &v, err, sizeof err), 0);
    ck_assert_int_eq(v, -42);
    char *s = NULL;
    ck_assert_int_eq(io_ckpt_get_attr_str(r, "config", &s, err, sizeof err), 0);
    ck_assert_uint_eq(strlen(s), len);
    ck_assert_int_eq(sum_all(strcmp(s, config) != 0), 0);
    free(s);
    ck_assert_int_eq(io_ckpt_get_attr_str(r, "magic", &s, err, sizeof err), 0);
    ck_assert_str_eq(s, "memtrain-checkpoint");
    free(s);

    /* wrong requests fail on every rank with one message, and leave the handle usable */
    char want[900];
    ck_assert_int_eq(io_ckpt_get_attr_str(r, "nope", &s, err, sizeof err), -1);
    ck_assert_ptr_null(s);
    snprintf(want, sizeof want, "%s: attribute nope missing", path);
    assert_msg_everywhere(err, want);
    ck_assert_int_eq(io_ckpt_get_attr_i64(r, "config", &v, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: attribute config is not an integer", path);
    assert_msg_everywhere(err, want);

    float buf[16 * 8 * 8];
    int64_t one = 0, dims8[3] = {8, 16, 8}, dims2[2] = {5, 2};
    int mine = comm_rank(g_comm) == 0;
    ck_assert_int_eq(io_ckpt_read(r, "tables/x/out0/data", IO_F32, 3, dims8, mine, &one, buf,
                                  err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: dataset tables/x/out0/data damaged or missing", path);
    assert_msg_everywhere(err, want);
    ck_assert_int_eq(io_ckpt_read(r, "tables/dec0.self.qkv/out1/data", IO_F32, 3, dims8, mine,
                                  &one, buf, err, sizeof err), -1);
    snprintf(want, sizeof want,
             "%s: dataset tables/dec0.self.qkv/out1/data has dims 7x16x8, expected 8x16x8", path);
    assert_msg_everywhere(err, want);
    ck_assert_int_eq(io_ckpt_read(r, "streams/memory", IO_I64, 2, dims2, mine, &one, buf, err,
                                  sizeof err), -1);
    snprintf(want, sizeof want, "%s: dataset streams/memory has type float32, expected int64",
             path);
    assert_msg_everywhere(err, want);
    ck_assert_int_eq(io_ckpt_read(r, "streams", IO_F32, 2, dims2, mine, &one, buf, err,
                                  sizeof err), -1);

    ck_assert_int_eq(io_ckpt_has(r, "streams/cursor"), 1);
    ck_assert_int_eq(io_ckpt_has(r, "streams"), 0);
    ck_assert_int_eq(io_ckpt_has(r, "nope/deeper/x"), 0);
    ck_assert_int_eq(read_all_arrays(r, deal_write), 0);
    io_ckpt_close(r);
    free(config);
    snprintf(path, sizeof path, "%s/run", dir);
    remove_dir(sub);
    remove_dir(path);
    remove_dir(dir);
}
END_TEST

/* The file offset of a dataset's raw data, via HDF5's serial driver (rank 0 only). */
static int64_t data_offset(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    LAYER_ASSERT(f >= 0);
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    LAYER_ASSERT(ds >= 0);
    haddr_t off = H5Dget_offset(ds);
    LAYER_ASSERT(off != HADDR_UNDEF);
    H5Dclose(ds);
    H5Fclose(f);
    return (int64_t)off;
}

START_TEST(test_corrupt_byte) {
    char dir[256], path[512], err[512], want[900];
    make_dir(dir, sizeof dir);
    write_ckpt(dir, 7, 3, 0);
    ckpt_path(path, sizeof path, dir, 7);
    const arr *a = &ARRS[1]; /* (7, 16, 8) float32 */
    const int64_t bad_slice = 5;
    if (comm_rank(g_comm) == 0) {
        int64_t off = data_offset(path, a->name) + bad_slice * per_slice(a) * 4 + 13;
        int fd = open(path, O_RDWR);
        LAYER_ASSERT(fd >= 0);
        unsigned char b;
        LAYER_ASSERT(pread(fd, &b, 1, off) == 1);
        b ^= 0x10;
        LAYER_ASSERT(pwrite(fd, &b, 1, off) == 1);
        close(fd);
    }
    comm_barrier(g_comm);
    io_ckpt *r = io_ckpt_open(g_comm, path, err, sizeof err);
    ck_assert_msg(r != NULL, "%s", err);

    /* round-robin: one rank reads the bad slice, all must fail with its message */
    int64_t sl[8];
    float out[8 * 16 * 8];
    int n = deal_write(a->dims[0], sl);
    ck_assert_int_eq(io_ckpt_read(r, a->name, a->t, a->ndims, a->dims, n, sl, out, err,
                                  sizeof err), -1);
    snprintf(want, sizeof want,
             "%s: dataset tables/dec0.self.qkv/out1/data slice 5 fails its checksum (corrupt file)",
             path);
    assert_msg_everywhere(err, want);

    /* slices other than the damaged one still read, as does another dataset */
    n = 0;
    for (int64_t s = comm_rank(g_comm); s < a->dims[0]; s += comm_size(g_comm))
        if (s != bad_slice) sl[n++] = s;
    ck_assert_int_eq(io_ckpt_read(r, a->name, a->t, a->ndims, a->dims, n, sl, out, err,
                                  sizeof err), 0);
    ck_assert_int_eq(sum_all(mismatches(a, sl, n, out)), 0);
    const arr *b = &ARRS[2];
    n = deal_read_all(b->dims[0], sl);
    ck_assert_int_eq(io_ckpt_read(r, b->name, b->t, b->ndims, b->dims, n, sl, out, err,
                                  sizeof err), 0);
    ck_assert_int_eq(sum_all(mismatches(b, sl, n, out)), 0);
    io_ckpt_close(r);
    remove_dir(dir);
}
END_TEST

START_TEST(test_truncated_file) {
    char dir[256], path[512], err[512], want[900];
    make_dir(dir, sizeof dir);
    write_ckpt(dir, 3, 4, 0);
    ckpt_path(path, sizeof path, dir, 3);
    if (comm_rank(g_comm) == 0) {
        struct stat st;
        LAYER_ASSERT(stat(path, &st) == 0 && st.st_size > 2000);
        LAYER_ASSERT(truncate(path, st.st_size / 2) == 0);
    }
    comm_barrier(g_comm);
    io_ckpt *r = io_ckpt_open(g_comm, path, err, sizeof err);
    ck_assert_ptr_null(r);
    snprintf(want, sizeof want, "%s: not an HDF5 file or truncated", path);
    assert_msg_everywhere(err, want);
    remove_dir(dir);
}
END_TEST

/* Rank 0 writes a plain HDF5 file with a small dataset and, when magic is given, the two
 * identity attributes. */
static void write_foreign(const char *path, const char *magic, int64_t version) {
    comm_barrier(g_comm);
    if (comm_rank(g_comm) == 0) {
        hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        LAYER_ASSERT(f >= 0);
        hsize_t d = 4;
        hid_t sp = H5Screate_simple(1, &d, NULL);
        hid_t ds = H5Dcreate2(f, "x", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        int v[4] = {1, 2, 3, 4};
        LAYER_ASSERT(H5Dwrite(ds, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
        H5Dclose(ds);
        H5Sclose(sp);
        if (magic) {
            hid_t sc = H5Screate(H5S_SCALAR);
            hid_t t = H5Tcopy(H5T_C_S1);
            H5Tset_size(t, strlen(magic) + 1);
            hid_t a = H5Acreate2(f, "magic", t, sc, H5P_DEFAULT, H5P_DEFAULT);
            H5Awrite(a, t, magic);
            H5Aclose(a);
            a = H5Acreate2(f, "format_version", H5T_STD_I64LE, sc, H5P_DEFAULT, H5P_DEFAULT);
            H5Awrite(a, H5T_NATIVE_INT64, &version);
            H5Aclose(a);
            H5Tclose(t);
            H5Sclose(sc);
        }
        H5Fclose(f);
    }
    comm_barrier(g_comm);
}

START_TEST(test_foreign_files) {
    char dir[256], path[512], err[512], want[900];
    make_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/plain.h5", dir);
    write_foreign(path, NULL, 0);
    ck_assert_ptr_null(io_ckpt_open(g_comm, path, err, sizeof err));
    snprintf(want, sizeof want, "%s: not a memtrain checkpoint (attribute magic missing)",
             path);
    assert_msg_everywhere(err, want);

    write_foreign(path, "something-else", 1);
    ck_assert_ptr_null(io_ckpt_open(g_comm, path, err, sizeof err));
    snprintf(want, sizeof want, "%s: not a memtrain checkpoint (magic 'something-else')", path);
    assert_msg_everywhere(err, want);

    write_foreign(path, IO_CKPT_MAGIC, 7);
    ck_assert_ptr_null(io_ckpt_open(g_comm, path, err, sizeof err));
    snprintf(want, sizeof want, "%s: format version 7 is newer than this memtrain (%d)", path,
             IO_CKPT_FORMAT_VERSION);
    assert_msg_everywhere(err, want);

    write_foreign(path, IO_CKPT_MAGIC, 0);
    ck_assert_ptr_null(io_ckpt_open(g_comm, path, err, sizeof err));
    snprintf(want, sizeof want, "%s: format version 0 is invalid", path);
    assert_msg_everywhere(err, want);

    /* version 1 (before run ids) is still read */
    write_foreign(path, IO_CKPT_MAGIC, 1);
    io_ckpt *r = io_ckpt_open(g_comm, path, err, sizeof err);
    ck_assert_msg(r != NULL, "%s", err);
    io_ckpt_close(r);

    /* the same file with the current version opens: the refusals above were about the
     * attributes, not the file */
    write_foreign(path, IO_CKPT_MAGIC, IO_CKPT_FORMAT_VERSION);
    r = io_ckpt_open(g_comm, path, err, sizeof err);
    ck_assert_msg(r != NULL, "%s", err);
    int32_t x[4];
    int64_t d = 4, all[4] = {0, 1, 2, 3};
    /* no crc32 attribute: refused rather than trusted */
    ck_assert_int_eq(io_ckpt_read(r, "x", IO_I32, 1, &d, 4, all, x, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: dataset x: attribute crc32 damaged or missing", path);
    assert_msg_everywhere(err, want);
    io_ckpt_close(r);

    snprintf(path, sizeof path, "%s/text.h5", dir);
    write_file(path, "just some text, not HDF5\n");
    ck_assert_ptr_null(io_ckpt_open(g_comm, path, err, sizeof err));
    snprintf(want, sizeof want, "%s: not an HDF5 file or truncated", path);
    assert_msg_everywhere(err, want);

    snprintf(path, sizeof path, "%s/absent.h5", dir);
    ck_assert_ptr_null(io_ckpt_open(g_comm, path, err, sizeof err));
    snprintf(want, sizeof want, "%s: cannot open (No such file or directory)", path);
    assert_msg_everywhere(err, want);

    /* never opened: a FIFO would block every rank in open() */
    snprintf(path, sizeof path, "%s/fifo.h5", dir);
    if (comm_rank(g_comm) == 0) LAYER_ASSERT(mkfifo(path, 0600) == 0);
    comm_barrier(g_comm);
    ck_assert_ptr_null(io_ckpt_open(g_comm, path, err, sizeof err));
    snprintf(want, sizeof want, "%s: not a regular file (a FIFO)", path);
    assert_msg_everywhere(err, want);
    ck_assert_ptr_null(io_ckpt_open(g_comm, dir, err, sizeof err));
    snprintf(want, sizeof want, "%s: not a regular file (a directory)", dir);
    assert_msg_everywhere(err, want);
    remove_dir(dir);
}
END_TEST

/* The ways other tools store a string attribute (rank 0, serial HDF5): h5py's default is a
 * variable-length UTF-8 string, numpy's bytes a NUL-padded fixed one, Fortran and some
 * tools pad with spaces, and any of them may store a one-element array. */
typedef enum str_kind { VL_UTF8, VL_ASCII, FIXED_NULLTERM, FIXED_NULLPAD, FIXED_SPACEPAD,
                        FIXED_UTF8_ARRAY1, NKINDS } str_kind;

static void put_string(hid_t loc, const char *name, const char *value, str_kind kind) {
    if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
    hsize_t one = 1;
    hid_t sp = kind == FIXED_UTF8_ARRAY1 ? H5Screate_simple(1, &one, NULL) : H5Screate(H5S_SCALAR);
    hid_t t = H5Tcopy(H5T_C_S1);
    size_t len = strlen(value);
    char *buf = layer_xcalloc(len + 8, 1);
    memcpy(buf, value, len);
    if (kind == VL_UTF8 || kind == VL_ASCII) {
        H5Tset_size(t, H5T_VARIABLE);
        H5Tset_cset(t, kind == VL_UTF8 ? H5T_CSET_UTF8 : H5T_CSET_ASCII);
    } else {
        H5Tset_size(t, kind == FIXED_NULLTERM ? len + 1 : len + 5);
        H5Tset_strpad(t, kind == FIXED_NULLPAD ? H5T_STR_NULLPAD
                         : kind == FIXED_SPACEPAD ? H5T_STR_SPACEPAD : H5T_STR_NULLTERM);
        if (kind == FIXED_UTF8_ARRAY1) H5Tset_cset(t, H5T_CSET_UTF8);
        if (kind == FIXED_SPACEPAD) memset(buf + len, ' ', 5);
    }
    hid_t a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    LAYER_ASSERT(a >= 0);
    const char *vl = buf;
    LAYER_ASSERT(H5Awrite(a, t, kind == VL_UTF8 || kind == VL_ASCII ? (const void *)&vl : buf) >= 0);
    H5Aclose(a);
    H5Tclose(t);
    H5Sclose(sp);
    free(buf);
}

/* A memtrain checkpoint whose string attributes another tool rewrote, in each of the ways
 * above, still opens and reads back the same text; an unrelated file with a `magic` of any
 * string kind or of another type is refused with one line, never an abort. */
START_TEST(test_rewritten_string_attributes) {
    char dir[256], path[512], err[512], want[900];
    make_dir(dir, sizeof dir);
    write_ckpt(dir, 3, 4, 0);
    ckpt_path(path, sizeof path, dir, 3);
    const char *config = "arch = memformer\nd_model = 32\n# caf\xc3\xa9\n";
    for (int kind = 0; kind < NKINDS; kind++) {
        comm_barrier(g_comm);
        if (comm_rank(g_comm) == 0) {
            hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
            LAYER_ASSERT(f >= 0);
            put_string(f, "magic", IO_CKPT_MAGIC, (str_kind)kind);
            put_string(f, "config", config, (str_kind)kind);
            H5Fclose(f);
        }
        comm_barrier(g_comm);
        io_ckpt *r = io_ckpt_open(g_comm, path, err, sizeof err);
        ck_assert_msg(r != NULL, "kind %d: %s", kind, err);
        char *s = NULL;
        ck_assert_msg(io_ckpt_get_attr_str(r, "config", &s, err, sizeof err) == 0, "kind %d: %s",
                      kind, err);
        ck_assert_msg(strcmp(s, config) == 0, "kind %d: read back '%s'", kind, s);
        free(s);
        io_ckpt_close(r);
    }
    snprintf(path, sizeof path, "%s/other.h5", dir);
    for (int kind = 0; kind < NKINDS; kind++) {
        write_foreign(path, NULL, 0);
        if (comm_rank(g_comm) == 0) {
            hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
            put_string(f, "magic", "netcdf\nline two", (str_kind)kind);
            H5Fclose(f);
        }
        comm_barrier(g_comm);
        ck_assert_ptr_null(io_ckpt_open(g_comm, path, err, sizeof err));
        snprintf(want, sizeof want, "%s: not a memtrain checkpoint (magic 'netcdf\nline two')", path);
        assert_msg_everywhere(err, want);
    }
    /* a magic that is not a string at all */
    write_foreign(path, NULL, 0);
    if (comm_rank(g_comm) == 0) {
        hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
        hid_t sp = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(f, "magic", H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        double v = 3.5;
        H5Awrite(a, H5T_NATIVE_DOUBLE, &v);
        H5Aclose(a);
        H5Sclose(sp);
        H5Fclose(f);
    }
    comm_barrier(g_comm);
    ck_assert_ptr_null(io_ckpt_open(g_comm, path, err, sizeof err));
    snprintf(want, sizeof want, "%s: not a memtrain checkpoint (attribute magic is not a string)",
             path);
    assert_msg_everywhere(err, want);
    remove_dir(dir);
}
END_TEST

START_TEST(test_abort_leaves_nothing) {
    char dir[256], err[512], listing[2048], paths[4][IO_CKPT_PATH_MAX];
    make_dir(dir, sizeof dir);
    io_ckpt *ck = io_ckpt_create(g_comm, dir, 5, err, sizeof err);
    ck_assert_msg(ck != NULL, "%s", err);
    const arr *a = &ARRS[2];
    int64_t sl[8];
    int n = deal_write(a->dims[0], sl);
    void *buf = fill(a, sl, n);
    ck_assert_int_eq(io_ckpt_write(ck, a->name, a->t, a->ndims, a->dims, n, sl, buf, err,
                                   sizeof err), 0);
    free(buf);
    dir_listing(dir, listing, sizeof listing);
    ck_assert_str_eq(listing, "ckpt-00000005.h5.tmp");
    io_ckpt_abort(ck);
    io_ckpt_abort(NULL);
    dir_listing(dir, listing, sizeof listing);
    ck_assert_str_eq(listing, "");
    ck_assert_int_eq(io_ckpt_list(dir, paths, 4), 0);
    remove_dir(dir);
}
END_TEST

/* Step of each listed path (parsed back from the name), joined by spaces. */
static void list_steps(const char *dir, int max, char *out, size_t n) {
    char paths[16][IO_CKPT_PATH_MAX];
    int k = io_ckpt_list(dir, paths, max);
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < k; i++) {
        const char *b = strrchr(paths[i], '/');
        LAYER_ASSERT(b && strncmp(paths[i], dir, strlen(dir)) == 0);
        len += (size_t)snprintf(out + len, n - len, "%s%lld", i ? " " : "",
                                strtoll(b + 6, NULL, 10));
    }
}

static void read_text(const char *path, char *out, size_t n) {
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t k = fread(out, 1, n - 1, f);
    out[k] = '\0';
    fclose(f);
}

START_TEST(test_keep_list_and_stale_tmp) {
    char dir[256], err[512], listing[2048], steps[256], latest[256], p[600], q[600];
    make_dir(dir, sizeof dir);
    ck_assert_int_eq(io_ckpt_list(dir, NULL, 0), 0);
    snprintf(p, sizeof p, "%s/missing", dir);
    list_steps(p, 16, steps, sizeof steps);
    ck_assert_str_eq(steps, "");

    for (int64_t s = 10; s <= 40; s += 10) write_ckpt(dir, s, 3, 2);
    dir_listing(dir, listing, sizeof listing);
    ck_assert_str_eq(listing, "LATEST ckpt-00000030.h5 ckpt-00000040.h5");
    snprintf(p, sizeof p, "%s/LATEST", dir);
    read_text(p, latest, sizeof latest);
    ck_assert_str_eq(latest, "ckpt-00000040.h5\n");
    list_steps(dir, 16, steps, sizeof steps);
    ck_assert_str_eq(steps, "40 30");
    list_steps(dir, 1, steps, sizeof steps);
    ck_assert_str_eq(steps, "40");

    /* A crash mid-write, simulated: a copy of a half-written .tmp under a newer step, and a
     * garbage one. Neither is listed, and the partial one does not open as a checkpoint. */
    io_ckpt *ck = io_ckpt_create(g_comm, dir, 50, err, sizeof err);
    ck_assert_msg(ck != NULL, "%s", err);
    const arr *a = &ARRS[1];
    int64_t sl[8];
    int n = deal_write(a->dims[0], sl);
    void *buf = fill(a, sl, n);
    ck_assert_int_eq(io_ckpt_write(ck, a->name, a->t, a->ndims, a->dims, n, sl, buf, err,
                                   sizeof err), 0);
    free(buf);
    comm_barrier(g_comm);
    snprintf(q, sizeof q, "%s/ckpt-00000060.h5.tmp", dir);
    if (comm_rank(g_comm) == 0) {
        FILE *in = fopen(io_ckpt_path(ck), "rb"), *out = fopen(q, "wb");
        LAYER_ASSERT(in && out);
        char chunk[4096];
        size_t k;
        while ((k = fread(chunk, 1, sizeof chunk, in)) > 0) fwrite(chunk, 1, k, out);
        fclose(in);
        fclose(out);
    }
    io_ckpt_abort(ck);
    snprintf(p, sizeof p, "%s/ckpt-00000070.h5.tmp", dir);
    write_file(p, "garbage");
    snprintf(p, sizeof p, "%s/ckpt-00000099.h5.bak", dir);
    write_file(p, "not a checkpoint name");
    list_steps(dir, 16, steps, sizeof steps);
    ck_assert_str_eq(steps, "40 30");
    ck_assert_ptr_null(io_ckpt_open(g_comm, q, err, sizeof err));

    /* stale .tmp files of older steps go at the next commit, newer ones stay */
    write_ckpt(dir, 65, 2, 2);
    dir_listing(dir, listing, sizeof listing);
    ck_assert_str_eq(listing,
                     "LATEST ckpt-00000040.h5 ckpt-00000065.h5 ckpt-00000070.h5.tmp "
                     "ckpt-00000099.h5.bak");
    write_ckpt(dir, 80, 2, 2);
    dir_listing(dir, listing, sizeof listing);
    ck_assert_str_eq(listing, "LATEST ckpt-00000065.h5 ckpt-00000080.h5 ckpt-00000099.h5.bak");

    /* LATEST is a hint: the listing goes by step whatever it names (a stale LATEST must not
     * roll a run back), and io_ckpt_latest reads it */
    snprintf(p, sizeof p, "%s/LATEST", dir);
    write_file(p, "ckpt-00000065.h5\n");
    list_steps(dir, 16, steps, sizeof steps);
    ck_assert_str_eq(steps, "80 65");
    ck_assert_int_eq(io_ckpt_latest(dir, latest, sizeof latest), 0);
    ck_assert_str_eq(latest, "ckpt-00000065.h5");
    write_file(p, "garbage\n");
    ck_assert_int_eq(io_ckpt_latest(dir, latest, sizeof latest), -1);
    ck_assert_str_eq(latest, "");
    write_file(p, "ckpt-00000030.h5\n");
    list_steps(dir, 16, steps, sizeof steps);
    ck_assert_str_eq(steps, "80 65");

    /* committing an older step (a run restarted from an older checkpoint) never deletes the
     * file just written, and points LATEST at it */
    write_ckpt(dir, 5, 2, 1);
    dir_listing(dir, listing, sizeof listing);
    ck_assert_str_eq(listing, "LATEST ckpt-00000005.h5 ckpt-00000080.h5 ckpt-00000099.h5.bak");
    list_steps(dir, 16, steps, sizeof steps);
    ck_assert_str_eq(steps, "80 5");

    /* keep 0 keeps everything */
    write_ckpt(dir, 90, 1, 0);
    write_ckpt(dir, 100, 1, 0);
    list_steps(dir, 16, steps, sizeof steps);
    ck_assert_str_eq(steps, "100 90 80 5");
    remove_dir(dir);
}
END_TEST

/* A small checkpoint with values Python can recompute (tests/test_ckpt_h5py.sh):
 * "dense/wte/data" float32 (3, 5) = 0.5 * i - 1 and "streams/cursor" int64 (4, 2) =
 * i * 1000000007, i the flat index; step 42 and config "arch = memformer\nproj = hash\n". */
START_TEST(test_h5py_sample) {
    char dir[256], err[512], path[600];
    make_dir(dir, sizeof dir);
    io_ckpt *ck = io_ckpt_create(g_comm, dir, 42, err, sizeof err);
    ck_assert_msg(ck != NULL, "%s", err);
    int P = comm_size(g_comm), me = comm_rank(g_comm);
    float w[15];
    int64_t cur[8], sl[4];
    int64_t wd[2] = {3, 5}, cd[2] = {4, 2};
    int n = 0;
    /* contiguous blocks, highest rank first: ranks own different slices than on read */
    for (int64_t s = 0; s < 3; s++)
        if ((int)(s * P / 3) == P - 1 - me) {
            for (int j = 0; j < 5; j++) w[n * 5 + j] = 0.5f * (float)(s * 5 + j) - 1.0f;
            sl[n++] = s;
        }
    ck_assert_int_eq(
        io_ckpt_write(ck, "dense/wte/data", IO_F32, 2, wd, n, sl, w, err, sizeof err), 0);
    n = 0;
    for (int64_t s = 0; s < 4; s++)
        if (s % P == me) {
            for (int j = 0; j < 2; j++) cur[n * 2 + j] = (s * 2 + j) * INT64_C(1000000007);
            sl[n++] = s;
        }
    ck_assert_int_eq(
        io_ckpt_write(ck, "streams/cursor", IO_I64, 2, cd, n, sl, cur, err, sizeof err), 0);
    io_ckpt_set_attr_str(ck, "config", "arch = memformer\nproj = hash\n");
    ck_assert_int_eq(io_ckpt_commit(ck, 0, err, sizeof err), 0);
    ckpt_path(path, sizeof path, dir, 42);

    io_ckpt *r = io_ckpt_open(g_comm, path, err, sizeof err);
    ck_assert_msg(r != NULL, "%s", err);
    float got[15];
    int64_t all[3] = {0, 1, 2};
    ck_assert_int_eq(
        io_ckpt_read(r, "dense/wte/data", IO_F32, 2, wd, 3, all, got, err, sizeof err), 0);
    int64_t bad = 0;
    for (int i = 0; i < 15; i++) bad += got[i] != 0.5f * (float)i - 1.0f;
    ck_assert_int_eq(sum_all(bad), 0);
    io_ckpt_close(r);

    const char *keep = getenv("MEMTRAIN_CKPT_KEEP");
    if (keep && keep[0] && me == 0) {
        FILE *in = fopen(path, "rb"), *out = fopen(keep, "wb");
        LAYER_ASSERT(in && out);
        char chunk[4096];
        size_t k;
        while ((k = fread(chunk, 1, sizeof chunk, in)) > 0)
            LAYER_ASSERT(fwrite(chunk, 1, k, out) == k);
        fclose(in);
        LAYER_ASSERT(fclose(out) == 0);
    }
    remove_dir(dir);
}
END_TEST

static Suite *ckpt_suite(void) {
    Suite *s = suite_create("ckpt");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_roundtrip_resharded);
    tcase_add_test(tc, test_corrupt_byte);
    tcase_add_test(tc, test_truncated_file);
    tcase_add_test(tc, test_foreign_files);
    tcase_add_test(tc, test_rewritten_string_attributes);
    tcase_add_test(tc, test_abort_leaves_nothing);
    tcase_add_test(tc, test_keep_list_and_stale_tmp);
    suite_add_tcase(s, tc);
    /* its own case, so the h5py script can run just it (CK_RUN_CASE=h5py) */
    TCase *th = tcase_create("h5py");
    tcase_add_test(th, test_h5py_sample);
    suite_add_tcase(s, th);
    return s;
}

int main(int argc, char **argv) {
    g_comm = comm_init(&argc, &argv);
    int rc = tu_run_mpi(ckpt_suite(), g_comm);
    comm_finalize(g_comm);
    return rc;
}
