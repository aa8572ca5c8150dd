/* Writing checkpoints: collective parallel-HDF5 create, slice-distributed array writes with crc32s, atomic commit. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include "io/ckpt.h"
#include "io/ckpt_internal.h"

#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

/* The one place outside comm/ that sees the MPI communicator: HDF5's MPI-IO driver needs it. */
#include "comm/comm_internal.h"
#include "io/files.h"
#include "layers/common.h"

void io_ckpt_note_unclosed(void) { comm_mark_unclean(); }

int64_t io_h5_check_at(int64_t value, const char *file, int line, const char *what) {
    if (value < 0) {
        H5Eprint2(H5E_DEFAULT, stderr);
        layer_fail(file, line, what);
    }
    return value;
}

size_t io_dtype_size(io_dtype t) { return t == IO_I64 ? 8 : 4; }

hid_t io_dtype_file_type(io_dtype t) {
    LAYER_ASSERT(t == IO_F32 || t == IO_I64 || t == IO_I32);
    return t == IO_F32 ? H5T_IEEE_F32LE : t == IO_I64 ? H5T_STD_I64LE : H5T_STD_I32LE;
}

hid_t io_dtype_mem_type(io_dtype t) {
    LAYER_ASSERT(t == IO_F32 || t == IO_I64 || t == IO_I32);
    return t == IO_F32 ? H5T_NATIVE_FLOAT : t == IO_I64 ? H5T_NATIVE_INT64 : H5T_NATIVE_INT32;
}

const char *io_dtype_name(io_dtype t) {
    return t == IO_F32 ? "float32" : t == IO_I64 ? "int64" : t == IO_I32 ? "int32" : "?";
}

hid_t io_ckpt_fapl(comm_ctx *c) {
    hid_t fapl = H5_CHECK(H5Pcreate(H5P_FILE_ACCESS));
    /* A collective write stages each aggregator's share in a buffer of cb_buffer_size bytes,
     * 32 MiB by default in Open MPI's OMPIO: rank 0's peak rose by that much at every
     * checkpoint. 4 MiB writes the 3.5 GiB checkpoint of bench_ckpt's large model in the
     * same time within the spread (17-21 s on one rank). */
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "cb_buffer_size", "4194304");
    H5_CHECK(H5Pset_fapl_mpio(fapl, comm_mpi(c), info));
    MPI_Info_free(&info);
    /* The 1.8 format stores large attributes densely: the crc32 attribute of an array with
     * more than 16384 slices exceeds the 64 KiB the oldest format allows. */
    H5_CHECK(H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST));
    /* Metadata goes out in one collective write at flush/close, not rank by rank. */
    H5_CHECK(H5Pset_coll_metadata_write(fapl, 1));
    return fapl;
}

hid_t io_ckpt_dxpl(void) {
    hid_t dxpl = H5_CHECK(H5Pcreate(H5P_DATASET_XFER));
    H5_CHECK(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
    return dxpl;
}

uint32_t io_crc32(const void *p, size_t len) {
    uLong crc = crc32(0L, Z_NULL, 0);
    const Bytef *b = p;
    /* zlib takes uInt lengths */
    while (len > 0) {
        uInt step = len > (1u << 30) ? (1u << 30) : (uInt)len;
        crc = crc32(crc, b, step);
        b += step;
        len -= step;
    }
    return (uint32_t)crc;
}

typedef struct slot {
    int64_t s;
    int i;
} slot;

static int slot_cmp(const void *a, const void *b) {
    const slot *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

io_slice_plan *io_slice_plan_create(const int64_t *slices, int n) {
    LAYER_ASSERT(n >= 0 && (n == 0 || slices));
    io_slice_plan *p = layer_xcalloc(1, sizeof(*p));
    size_t cap = (size_t)(n ? n : 1);
    p->slice = layer_xmalloc(cap * sizeof(int64_t));
    p->pos = layer_xmalloc(cap * sizeof(int));
    p->uniq = layer_xmalloc(cap * sizeof(int64_t));
    p->n = n;
    p->in_order = 1;
    for (int i = 1; i < n; i++)
        if (slices[i] <= slices[i - 1]) p->in_order = 0;
    slot *sl = layer_xmalloc(cap * sizeof(slot));
    for (int i = 0; i < n; i++) sl[i] = (slot){slices[i], i};
    if (!p->in_order) qsort(sl, (size_t)n, sizeof(slot), slot_cmp);
    for (int i = 0; i < n; i++) {
        p->slice[i] = sl[i].s;
        p->pos[i] = sl[i].i;
        if (i == 0 || sl[i].s != sl[i - 1].s) p->uniq[p->nuniq++] = sl[i].s;
    }
    free(sl);
    return p;
}

void io_slice_plan_free(io_slice_plan *p) {
    if (!p) return;
    free(p->slice);
    free(p->pos);
    free(p->uniq);
    free(p);
}

/* A regular set of dim-0 slices: count blocks of `block` slices, `stride` apart. */
typedef struct pattern {
    hsize_t start, stride, count, block;
} pattern;

/* The union of patterns[lo..hi) selected in a copy of `space`. Halves are merged pairwise
 * because adding hyperslabs one by one with H5S_SELECT_OR costs time quadratic in their
 * number (seconds for ten thousand), while merging two selections is linear. */
static hid_t select_union(hid_t space, const pattern *pt, int lo, int hi, int ndims,
                          const int64_t *dims) {
    if (hi - lo == 1) {
        hsize_t start[4] = {0}, stride[4], count[4], block[4];
        for (int d = 0; d < ndims; d++) {
            stride[d] = count[d] = 1;
            block[d] = (hsize_t)dims[d];
        }
        start[0] = pt[lo].start;
        stride[0] = pt[lo].stride;
        count[0] = pt[lo].count;
        block[0] = pt[lo].block;
        hid_t s = H5_CHECK(H5Scopy(space));
        H5_CHECK(H5Sselect_hyperslab(s, H5S_SELECT_SET, start, stride, count, block));
        return s;
    }
    int mid = lo + (hi - lo) / 2;
    hid_t a = select_union(space, pt, lo, mid, ndims, dims);
    hid_t b = select_union(space, pt, mid, hi, ndims, dims);
    H5_CHECK(H5Smodify_select(a, H5S_SELECT_OR, b));
    H5_CHECK(H5Sclose(b));
    return a;
}

hid_t io_slice_select(hid_t file_space, const io_slice_plan *p, int ndims, const int64_t *dims) {
    hsize_t mdims[4];
    for (int d = 0; d < ndims; d++) mdims[d] = (hsize_t)dims[d];
    if (p->nuniq == 0) {
        H5_CHECK(H5Sselect_none(file_space));
        mdims[0] = 1;
        hid_t m = H5_CHECK(H5Screate_simple(ndims, mdims, NULL));
        H5_CHECK(H5Sselect_none(m));
        return m;
    }
    /* Runs of consecutive slices, then runs of equal length and spacing as one pattern: a
     * round-robin or blocked deal becomes a single regular hyperslab. */
    pattern *pt = layer_xmalloc((size_t)p->nuniq * sizeof(pattern));
    int np = 0;
    for (int a = 0; a < p->nuniq;) {
        int b = a + 1;
        while (b < p->nuniq && p->uniq[b] == p->uniq[b - 1] + 1) b++;
        hsize_t start = (hsize_t)p->uniq[a], len = (hsize_t)(b - a);
        pattern *last = np ? &pt[np - 1] : NULL;
        if (last && last->block == len &&
            (last->count == 1 || start == last->start + last->count * last->stride)) {
            if (last->count == 1) last->stride = start - last->start;
            last->count++;
        } else {
            pt[np++] = (pattern){start, len, 1, len};
        }
        a = b;
    }
    hid_t sel = select_union(file_space, pt, 0, np, ndims, dims);
    H5_CHECK(H5Sselect_copy(file_space, sel));
    H5_CHECK(H5Sclose(sel));
    free(pt);
    mdims[0] = (hsize_t)p->nuniq;
    return H5_CHECK(H5Screate_simple(ndims, mdims, NULL));
}

void io_dims_text(char *buf, size_t n, int ndims, const int64_t *dims) {
    size_t off = 0;
    buf[0] = '\0';
    for (int d = 0; d < ndims && off < n; d++) {
        int w = snprintf(buf + off, n - off, d ? "x%lld" : "%lld", (long long)dims[d]);
        if (w < 0) break;
        off += (size_t)w;
    }
}

/* HDF5 writes metadata whenever its cache holds enough dirty entries, in a collective step
 * that deadlocks when the write fails on some ranks only (disk full). Holding it all until
 * io_ckpt_commit, where its room is reserved first, keeps every metadata write in one place
 * (a checkpoint's metadata is a few hundred KiB, far below the 32 MiB allowed here). */
static void keep_metadata_until_commit(hid_t fapl) {
    H5AC_cache_config_t mdc;
    memset(&mdc, 0, sizeof mdc);
    mdc.version = H5AC__CURR_CACHE_CONFIG_VERSION;
    H5_CHECK(H5Pget_mdc_config(fapl, &mdc));
    mdc.evictions_enabled = 0;
    mdc.incr_mode = H5C_incr__off;
    mdc.flash_incr_mode = H5C_flash_incr__off;
    mdc.decr_mode = H5C_decr__off;
    mdc.set_initial_size = 1;
    mdc.max_size = 128u << 20;
    mdc.initial_size = 32u << 20;
    mdc.dirty_bytes_threshold = 32u << 20;
    H5_CHECK(H5Pset_mdc_config(fapl, &mdc));
}

/* Bytes of the file HDF5 will have written at close, bounded from above: HDF5 hands out
 * space in sequence to raw data and metadata alike, and a checkpoint's metadata (an object
 * header and a crc32 attribute per array, groups, root attributes) takes well under 4 KiB per
 * array plus its crc32s. (H5Fget_eoa and H5Fget_filesize do not work with the MPI-IO driver.) */
static int64_t allocated(int64_t raw_bytes, int64_t narrays, int64_t nslices) {
    return raw_bytes + 4096 * (narrays + 16) + 4 * nslices + (256 << 10);
}
static int64_t allocated_bytes(const io_ckpt *ck) {
    return allocated(ck->raw_bytes, ck->narrays, ck->nslices);
}

/* Collective. Makes sure the file's first `bytes` are reserved (rank 0, fallocate), the
 * answer agreed. Every write HDF5 makes then lands in reserved blocks and cannot fail for lack
 * of space on some ranks only (which would leave them in different collectives): a full disk
 * shows here, outside HDF5, on every rank together. Returns 0 (also where the file system
 * cannot reserve), or -1 with "<path>: no room for 15.2 MiB (No space left on device)". */
static int reserve(io_ckpt *ck, int64_t bytes, char *err, size_t n) {
    int failed = 0;
    if (comm_rank(ck->c) == 0 && ck->reserved >= 0 && bytes > ck->reserved) {
        int rc = io_file_reserve(ck->path, bytes, err, n);
        if (rc > 0) ck->reserved = bytes;
        if (rc == 0) ck->reserved = -1;
        failed = rc < 0;
    }
    return comm_any_failed(ck->c, failed, err, n) ? -1 : 0;
}

static void discard(io_ckpt *ck);

void io_ckpt_size_add(io_ckpt_size *s, io_dtype t, int ndims, const int64_t *dims) {
    int64_t per = 1;
    for (int d = 1; d < ndims; d++) per *= dims[d];
    s->raw_bytes += dims[0] * per * (int64_t)io_dtype_size(t);
    s->narrays++;
    s->nslices += dims[0];
}

io_ckpt *io_ckpt_create(comm_ctx *c, const char *dir, int64_t step, char *err, size_t n) {
    return io_ckpt_create_sized(c, dir, step, NULL, err, n);
}

io_ckpt *io_ckpt_create_sized(comm_ctx *c, const char *dir, int64_t step, const io_ckpt_size *s,
                              char *err, size_t n) {
    LAYER_ASSERT(c && dir && step >= 0);
    io_ckpt *ck = layer_xcalloc(1, sizeof(*ck));
    ck->c = c;
    ck->file = -1;
    ck->writing = 1;
    ck->step = step;
    int failed = 0;
    if (snprintf(ck->dir, sizeof ck->dir, "%s", dir) >= (int)sizeof ck->dir) {
        snprintf(err, n, "%s: checkpoint directory name too long", dir);
        failed = 1;
    }
    if (!failed) failed = io_ckpt_file_name(ck->path, dir, step, ".tmp", err, n) != 0;
    if (!failed && comm_rank(c) == 0) failed = io_ckpt_mkdirs(dir, err, n) != 0;
    /* a stale .tmp may be anything a crash or a hand left, a FIFO included: remove it rather
       than open it */
    if (!failed && comm_rank(c) == 0) unlink(ck->path);
    if (comm_any_failed(c, failed, err, n)) {
        free(ck);
        return NULL;
    }
    hid_t fapl = io_ckpt_fapl(c);
    keep_metadata_until_commit(fapl);
    H5E_BEGIN_TRY { ck->file = H5Fcreate(ck->path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl); }
    H5E_END_TRY;
    H5_CHECK(H5Pclose(fapl));
    failed = ck->file < 0;
    if (failed)
        snprintf(err, n, "%s: cannot create (permissions, space or MPI-IO problem)", ck->path);
    /* MPI_File_open is collective, so ranks succeed or fail together; the agreement only
     * makes the message the same everywhere. */
    if (comm_any_failed(c, failed, err, n)) {
        if (ck->file >= 0) H5Fclose(ck->file);
        free(ck);
        return NULL;
    }
    /* the room of the superblock and the root group, or of the whole file when the caller
       knows it, before anything is written */
    int64_t room = allocated_bytes(ck);
    if (s && allocated(s->raw_bytes, s->narrays, s->nslices) > room)
        room = allocated(s->raw_bytes, s->narrays, s->nslices);
    if (reserve(ck, room, err, n) != 0) {
        discard(ck);
        return NULL;
    }
    return ck;
}

/* Sums over ranks in pieces MPI's int counts can take. */
static void sum_i64(comm_ctx *c, int64_t *buf, int64_t n) {
    for (int64_t off = 0; off < n; off += 1 << 28) {
        int64_t len = n - off < (1 << 28) ? n - off : (1 << 28);
        comm_sum_i64(c, buf + off, (int)len);
    }
}

/* A write's staging buffer, mapped for the one array and unmapped after it: from the heap, a
 * few MiB freed between arrays of other sizes stay in the process as holes the heap does not
 * give back. */
static char *stage_map(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) layer_fail(__FILE__, __LINE__, "mapping a checkpoint's staging buffer");
    return p;
}

/* io_ckpt_write's fill: slice i is data's i-th. */
typedef struct copy_fill {
    const char *data;
    size_t sbytes;
} copy_fill;

static void fill_copy(void *ctx, int i, void *dst) {
    const copy_fill *f = ctx;
    memcpy(dst, f->data + (size_t)i * f->sbytes, f->sbytes);
}

int io_ckpt_write(io_ckpt *ck, const char *name, io_dtype t, int ndims, const int64_t *dims,
                  int nslices, const int64_t *slices, const void *data, char *err, size_t n) {
    LAYER_ASSERT(nslices == 0 || data);
    int64_t per = 1;
    for (int d = 1; d < ndims; d++) per *= dims[d];
    copy_fill f = {data, (size_t)per * io_dtype_size(t)};
    return io_ckpt_write_fill(ck, name, t, ndims, dims, nslices, slices, fill_copy, &f, err, n);
}

int io_ckpt_write_fill(io_ckpt *ck, const char *name, io_dtype t, int ndims, const int64_t *dims,
                       int nslices, const int64_t *slices, io_ckpt_fill_fn fill, void *ctx,
                       char *err, size_t n) {
    LAYER_ASSERT(ck && ck->writing && ck->file >= 0 && name && name[0]);
    LAYER_ASSERT(ndims >= 1 && ndims <= 4 && dims && nslices >= 0);
    LAYER_ASSERT(nslices == 0 || (slices && fill));
    int64_t d0 = dims[0], per = 1;
    for (int d = 0; d < ndims; d++) LAYER_ASSERT(dims[d] >= 0);
    for (int d = 1; d < ndims; d++) per *= dims[d];
    size_t sbytes = (size_t)per * io_dtype_size(t);

    /* Slice counts, summed over ranks: each slice has exactly one writer, and a count other
     * than 1 shows a slice missing or written twice. */
    int64_t *sum = layer_xcalloc((size_t)(2 * d0 + 1), sizeof(int64_t));
    for (int i = 0; i < nslices; i++) {
        int64_t s = slices[i];
        LAYER_ASSERT(s >= 0 && s < d0);
        sum[s]++;
    }
    sum_i64(ck->c, sum, d0);
    for (int64_t s = 0; s < d0; s++) {
        if (sum[s] == 1) continue;
        if (comm_rank(ck->c) == 0)
            fprintf(stderr, "memtrain: checkpoint array %s: slice %lld provided by %lld ranks\n",
                    name, (long long)s, (long long)sum[s]);
        LAYER_ASSERT(sum[s] == 1);
    }

    /* this array's room, and that of its metadata, before HDF5 allocates it */
    ck->raw_bytes += d0 * (int64_t)sbytes;
    ck->narrays++;
    ck->nslices += d0;
    if (reserve(ck, allocated_bytes(ck), err, n) != 0) {
        /* not created: the file holds what it held */
        ck->raw_bytes -= d0 * (int64_t)sbytes;
        ck->narrays--;
        ck->nslices -= d0;
        free(sum);
        return -1;
    }

    hsize_t hd[4];
    for (int d = 0; d < ndims; d++) hd[d] = (hsize_t)dims[d];
    hid_t fspace = H5_CHECK(H5Screate_simple(ndims, hd, NULL));
    hid_t lcpl = H5_CHECK(H5Pcreate(H5P_LINK_CREATE));
    H5_CHECK(H5Pset_create_intermediate_group(lcpl, 1));
    hid_t dcpl = H5_CHECK(H5Pcreate(H5P_DATASET_CREATE));
    /* Every element is written below; HDF5's zero fill would write the array twice. */
    H5_CHECK(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER));
    hid_t ds = H5_CHECK(
        H5Dcreate2(ck->file, name, io_dtype_file_type(t), fspace, lcpl, dcpl, H5P_DEFAULT));
    H5_CHECK(H5Pclose(dcpl));
    H5_CHECK(H5Pclose(lcpl));

    int failed = 0;
    /* Dims are the same on every rank, so an empty array skips the collective on all. */
    if (d0 > 0 && per > 0) {
        /* In rounds of at most IO_CKPT_STAGE_BYTES per rank (one slice when a slice is
           larger), as many on every rank: a rank stages a bounded piece of its share, however
           large the share. HDF5 walks a selection in file order: each round hands it the next
           slices in that order. */
        io_slice_plan *p = io_slice_plan_create(slices, nslices);
        int64_t step = sbytes >= IO_CKPT_STAGE_BYTES ? 1 : (int64_t)(IO_CKPT_STAGE_BYTES / sbytes);
        double rounds = (double)((nslices + step - 1) / step);
        comm_max_doubles(ck->c, &rounds, 1);
        size_t stage_bytes = (size_t)(nslices < step ? (nslices ? nslices : 1) : step) * sbytes;
        char *stage = stage_map(stage_bytes);
        hid_t dxpl = io_ckpt_dxpl();
        for (int64_t r = 0; r < (int64_t)rounds; r++) {
            int lo = (int)(r * step < nslices ? r * step : nslices);
            int hi = (int)(lo + step < nslices ? lo + step : nslices);
            for (int j = lo; j < hi; j++) {
                char *dst = stage + (size_t)(j - lo) * sbytes;
                fill(ctx, p->pos[j], dst);
                sum[d0 + p->slice[j]] = io_crc32(dst, sbytes);
            }
            io_slice_plan *q = io_slice_plan_create(p->slice + lo, hi - lo);
            hid_t mspace = io_slice_select(fspace, q, ndims, dims);
            herr_t rc;
            H5E_BEGIN_TRY { rc = H5Dwrite(ds, io_dtype_mem_type(t), mspace, fspace, dxpl, stage); }
            H5E_END_TRY;
            failed |= rc < 0;
            H5_CHECK(H5Sclose(mspace));
            io_slice_plan_free(q);
        }
        H5_CHECK(H5Pclose(dxpl));
        munmap(stage, stage_bytes);
        io_slice_plan_free(p);
    }

    /* the crcs, summed over ranks like the counts: each slice's is its one writer's */
    sum_i64(ck->c, sum + d0, d0);
    uint32_t *crc = layer_xmalloc((size_t)(d0 ? d0 : 1) * sizeof(uint32_t));
    for (int64_t s = 0; s < d0; s++) crc[s] = (uint32_t)sum[d0 + s];
    hsize_t ad = (hsize_t)d0;
    hid_t aspace = H5_CHECK(H5Screate_simple(1, &ad, NULL));
    hid_t attr = H5_CHECK(H5Acreate2(ds, "crc32", H5T_STD_U32LE, aspace, H5P_DEFAULT, H5P_DEFAULT));
    H5_CHECK(H5Awrite(attr, H5T_NATIVE_UINT32, crc));
    H5_CHECK(H5Aclose(attr));
    H5_CHECK(H5Sclose(aspace));
    H5_CHECK(H5Dclose(ds));
    H5_CHECK(H5Sclose(fspace));
    free(crc);
    free(sum);
    if (failed)
        snprintf(err, n, "%s: writing dataset %s failed (I/O error or disk full)", ck->path, name);
    return comm_any_failed(ck->c, failed, err, n) ? -1 : 0;
}

static void replace_attr(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *v) {
    if (H5_CHECK(H5Aexists(loc, name)) > 0) H5_CHECK(H5Adelete(loc, name));
    hid_t space = H5_CHECK(H5Screate(H5S_SCALAR));
    hid_t attr = H5_CHECK(H5Acreate2(loc, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT));
    H5_CHECK(H5Awrite(attr, mtype, v));
    H5_CHECK(H5Aclose(attr));
    H5_CHECK(H5Sclose(space));
}

void io_ckpt_set_attr_i64(io_ckpt *ck, const char *name, int64_t value) {
    LAYER_ASSERT(ck && ck->writing && ck->file >= 0 && name && name[0]);
    replace_attr(ck->file, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

void io_ckpt_set_attr_str(io_ckpt *ck, const char *name, const char *value) {
    LAYER_ASSERT(ck && ck->writing && ck->file >= 0 && name && name[0] && value);
    /* Variable-length UTF-8: h5dump prints it as text and h5py returns str. */
    hid_t type = H5_CHECK(H5Tcopy(H5T_C_S1));
    H5_CHECK(H5Tset_size(type, H5T_VARIABLE));
    H5_CHECK(H5Tset_cset(type, H5T_CSET_UTF8));
    replace_attr(ck->file, name, type, type, &value);
    H5_CHECK(H5Tclose(type));
}

/* Closes and deletes the unfinished file of ck and frees ck. Collective.
 *
 * Why this order: a close writes the metadata HDF5 still holds, and a close that fails (disk
 * full) leaves HDF5 1.10 with a half-closed file that crashes MPI_Finalize, or deadlocks the
 * ranks in different collectives (one in MPI_File_close, one in the barrier after the
 * metadata writes). Where the file system reserves space (see reserve) every block the close
 * can write is reserved already and the close goes ahead: nothing another program writes
 * meanwhile can take those blocks. Elsewhere, since the file is to be deleted anyway, once
 * every rank is past its collective writes rank 0 gives its space back (truncates it to
 * nothing), and the close goes ahead only when the file system then has room for the
 * metadata. Otherwise the file is left open, the process marked unclean, and the job ends
 * through MPI_Abort after its message (comm_exit_error) instead of crashing or hanging. */
static void discard(io_ckpt *ck) {
    comm_ctx *c = ck->c;
    int64_t meta = allocated_bytes(ck) - ck->raw_bytes;
    comm_barrier(c);
    int64_t room = 1;
    /* every block HDF5 may write is reserved (the usual case: then the close writes into
       them, and a program filling the disk meanwhile cannot take them) */
    int covered = ck->reserved >= allocated_bytes(ck);
    if (comm_rank(c) == 0 && !covered) {
        /* a failed truncation (the file is gone already) frees nothing and harms nothing */
        if (truncate(ck->path, 0) != 0) errno = 0;
        long long free_bytes = io_free_bytes(ck->dir);
        room = free_bytes < 0 || free_bytes >= (meta > 0 ? meta : 0) + (1 << 20);
    }
    comm_broadcast(c, &room, sizeof room, 0);
    herr_t rc = 0;
    if (room) {
        H5E_BEGIN_TRY { rc = H5Fclose(ck->file); }
        H5E_END_TRY;
    }
    ck->file = -1;
    if (rc < 0 || !room) io_ckpt_note_unclosed();
    /* every rank's handle is closed before the file goes */
    comm_barrier(c);
    if (comm_rank(c) == 0) unlink(ck->path);
    free(ck);
}

int io_ckpt_commit(io_ckpt *ck, int keep, char *err, size_t n) {
    LAYER_ASSERT(ck && ck->writing && ck->file >= 0 && keep >= 0);
    comm_ctx *c = ck->c;
    io_ckpt_set_attr_str(ck, "magic", IO_CKPT_MAGIC);
    io_ckpt_set_attr_i64(ck, "format_version", IO_CKPT_FORMAT_VERSION);
    io_ckpt_set_attr_i64(ck, "step", ck->step);
    /* The metadata is written now, in one collective flush. A write failing on some ranks
     * only would leave them in different collectives inside HDF5, so its room is reserved
     * first (every byte HDF5 allocated, metadata holes included): a full disk shows here,
     * before HDF5 writes anything, and the file is discarded cleanly. */
    if (reserve(ck, allocated_bytes(ck), err, n) != 0) {
        discard(ck);
        return -1;
    }
    int failed = 0;
    herr_t rc;
    H5E_BEGIN_TRY { rc = H5Fflush(ck->file, H5F_SCOPE_GLOBAL); }
    H5E_END_TRY;
    failed = rc < 0;
    if (failed) snprintf(err, n, "%s: writing metadata failed (I/O error or disk full)", ck->path);
    if (comm_any_failed(c, failed, err, n)) {
        discard(ck);
        return -1;
    }
    H5E_BEGIN_TRY { rc = H5Fclose(ck->file); }
    H5E_END_TRY;
    ck->file = -1;
    failed = rc < 0;
    if (failed) {
        io_ckpt_note_unclosed();
        snprintf(err, n, "%s: closing failed (I/O error or disk full)", ck->path);
    }
    failed = comm_any_failed(c, failed, err, n);
    if (!failed) {
        int bad = 0;
        if (comm_rank(c) == 0) {
            char final[IO_CKPT_PATH_MAX];
            bad = io_ckpt_file_name(final, ck->dir, ck->step, "", err, n) != 0 ||
                  io_ckpt_publish(ck->dir, ck->path, final, err, n) != 0;
            if (!bad) io_ckpt_prune(ck->dir, keep, ck->step);
        }
        failed = comm_any_failed(c, bad, err, n);
    }
    if (failed && comm_rank(c) == 0) unlink(ck->path);
    free(ck);
    return failed ? -1 : 0;
}

void io_ckpt_abort(io_ckpt *ck) {
    if (!ck) return;
    LAYER_ASSERT(ck->writing);
    discard(ck);
}

const char *io_ckpt_path(const io_ckpt *ck) { return ck->path; }
