/* Reading checkpoints: validated collective open, resharding slice reads verified against their crc32s, attributes. */
#include "io/ckpt.h"
#include "io/ckpt_internal.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "io/files.h"
#include "layers/common.h"

/* Longest string attribute read (the config text is a few KiB): a larger size is damage. */
#define ATTR_STR_MAX (16u << 20)

/* What a damaged header of the root group makes unreadable: HDF5 keeps the root attributes in
 * that one header, under one checksum, so a byte flipped in any of them hides them all. */
#define ROOT_ATTRS "magic, format_version, step, seed, schedule_step, ranks, config, run_id"

/* Opens attribute `name` of loc when it exists and holds one value; the caller reads it from
 * *attr / *type and closes both. Everything about it comes from the file, so nothing here may
 * abort. Returns 0, or with a message naming `path` -1 (damaged, or not one value), -3 (the
 * header holding the attributes is unreadable: which attribute is damaged cannot be told) or
 * -4 (missing). */
static int attr_open(hid_t loc, const char *path, const char *name, hid_t *attr, hid_t *type,
                     char *err, size_t n) {
    htri_t has;
    hssize_t npoints = -1;
    hid_t space = -1;
    *attr = *type = -1;
    H5E_BEGIN_TRY {
        has = H5Aexists(loc, name);
        if (has > 0) *attr = H5Aopen(loc, name, H5P_DEFAULT);
        if (*attr >= 0) *type = H5Aget_type(*attr);
        if (*attr >= 0) space = H5Aget_space(*attr);
        if (space >= 0) npoints = H5Sget_simple_extent_npoints(space);
        if (space >= 0) H5Sclose(space);
    }
    H5E_END_TRY;
    if (*type >= 0 && npoints == 1) return 0;
    int rc = -1;
    if (has < 0) {
        snprintf(err, n, "%s: root attributes damaged: the header holding " ROOT_ATTRS " fails "
                 "its checksum (damaged file)", path);
        rc = -3;
    } else if (has == 0) {
        snprintf(err, n, "%s: attribute %s missing", path, name);
        rc = -4;
    } else if (*type < 0 || npoints < 0)
        snprintf(err, n, "%s: attribute %s damaged or missing", path, name);
    else
        snprintf(err, n, "%s: attribute %s holds %lld values, expected one", path, name,
                 (long long)npoints);
    H5E_BEGIN_TRY {
        if (*type >= 0) H5Tclose(*type);
        if (*attr >= 0) H5Aclose(*attr);
    }
    H5E_END_TRY;
    return rc;
}

/* A checkpoint that failed to read may leave HDF5 unable to close cleanly at exit. */
static int damaged(void) {
    comm_quiet_finalize();
    return -1;
}

static void attr_close(hid_t attr, hid_t type) {
    H5E_BEGIN_TRY {
        H5Tclose(type);
        H5Aclose(attr);
    }
    H5E_END_TRY;
}

/* Reads string attribute `name` of loc into a fresh *out: any string HDF5 stores (variable or
 * fixed length, NUL-terminated, NUL- or space-padded, ASCII or UTF-8), as memtrain, h5py or
 * h5dump's tools write them. Returns 0, or with a message naming `path` -1 (damaged), -2 (not
 * a string), -3 (the root header is damaged) or -4 (missing), as attr_open. */
static int attr_str(hid_t loc, const char *path, const char *name, char **out, char *err,
                    size_t n) {
    *out = NULL;
    hid_t attr, type;
    int opened = attr_open(loc, path, name, &attr, &type, err, n);
    if (opened != 0) return opened;
    herr_t rc = -1;
    H5T_class_t cls;
    htri_t vl = -1;
    H5T_cset_t cset = H5T_CSET_ERROR;
    H5T_str_t pad = H5T_STR_ERROR;
    size_t size = 0;
    H5E_BEGIN_TRY {
        cls = H5Tget_class(type);
        if (cls == H5T_STRING) {
            vl = H5Tis_variable_str(type);
            cset = H5Tget_cset(type);
            pad = H5Tget_strpad(type);
            size = H5Tget_size(type);
        }
    }
    H5E_END_TRY;
    if (cls != H5T_STRING || vl < 0 || cset == H5T_CSET_ERROR || pad == H5T_STR_ERROR) {
        snprintf(err, n, "%s: attribute %s is not a string", path, name);
        attr_close(attr, type);
        return -2;
    }
    if (vl > 0) {
        /* as h5py writes str values: the memory type must carry the file's character set,
           or HDF5 refuses the conversion */
        char *v = NULL;
        H5E_BEGIN_TRY {
            hid_t mtype = H5Tcopy(H5T_C_S1);
            if (mtype >= 0 && H5Tset_size(mtype, H5T_VARIABLE) >= 0 &&
                H5Tset_cset(mtype, cset) >= 0)
                rc = H5Aread(attr, mtype, &v);
            if (mtype >= 0) H5Tclose(mtype);
        }
        H5E_END_TRY;
        if (rc >= 0) {
            size_t len = v ? strnlen(v, ATTR_STR_MAX) : 0;
            *out = layer_xmalloc(len + 1);
            if (len) memcpy(*out, v, len);
            (*out)[len] = '\0';
        }
        if (v) H5free_memory(v);
    } else if (size > 0 && size <= ATTR_STR_MAX) {
        /* fixed length: read the bytes as stored, then drop the padding */
        *out = layer_xcalloc(size + 1, 1);
        H5E_BEGIN_TRY { rc = H5Aread(attr, type, *out); }
        H5E_END_TRY;
        if (rc >= 0 && pad == H5T_STR_SPACEPAD) {
            size_t len = strlen(*out);
            while (len > 0 && (*out)[len - 1] == ' ') (*out)[--len] = '\0';
        }
    }
    attr_close(attr, type);
    if (rc < 0) {
        free(*out);
        *out = NULL;
        snprintf(err, n, "%s: attribute %s damaged or unreadable", path, name);
        return -1;
    }
    return 0;
}

/* Reads integer attribute `name` of loc. Returns 0, or -1 with a message naming `path`. */
static int attr_i64(hid_t loc, const char *path, const char *name, int64_t *out, char *err,
                    size_t n) {
    hid_t attr, type;
    if (attr_open(loc, path, name, &attr, &type, err, n) != 0) return -1;
    herr_t rc = -1;
    H5T_class_t cls;
    H5E_BEGIN_TRY {
        cls = H5Tget_class(type);
        if (cls == H5T_INTEGER) rc = H5Aread(attr, H5T_NATIVE_INT64, out);
    }
    H5E_END_TRY;
    attr_close(attr, type);
    if (cls != H5T_INTEGER) {
        snprintf(err, n, "%s: attribute %s is not an integer", path, name);
        return -1;
    }
    if (rc < 0) {
        snprintf(err, n, "%s: attribute %s damaged or unreadable", path, name);
        return -1;
    }
    return 0;
}

/* Checks a file opened by rank 0 alone is a memtrain checkpoint this build reads. */
static int check_identity(hid_t f, const char *path, char *err, size_t n) {
    char *magic = NULL, why[IO_CKPT_PATH_MAX + 128];
    int got = attr_str(f, path, "magic", &magic, why, sizeof why);
    if (got == -3) {
        /* the file may well be a memtrain checkpoint: say what is damaged */
        snprintf(err, n, "%s", why);
        return -1;
    }
    if (got != 0) {
        snprintf(err, n, "%s: not a memtrain checkpoint (attribute magic %s)", path,
                 got == -2 ? "is not a string" : got == -4 ? "missing" : "damaged");
        return -1;
    }
    int ok = strcmp(magic, IO_CKPT_MAGIC) == 0;
    if (!ok)
        snprintf(err, n, "%s: not a memtrain checkpoint (magic '%.64s')", path, magic);
    free(magic);
    if (!ok) return -1;
    int64_t version = 0;
    if (attr_i64(f, path, "format_version", &version, why, sizeof why) != 0) {
        snprintf(err, n, "%s: not a memtrain checkpoint (attribute format_version damaged or "
                 "missing)", path);
        return -1;
    }
    if (version > IO_CKPT_FORMAT_VERSION) {
        snprintf(err, n, "%s: format version %lld is newer than this memtrain (%d)", path,
                 (long long)version, IO_CKPT_FORMAT_VERSION);
        return -1;
    }
    if (version < 1) {
        snprintf(err, n, "%s: format version %lld is invalid", path, (long long)version);
        return -1;
    }
    return 0;
}

/* Rank 0's look at the file through HDF5's serial driver, before every rank opens it: a
 * foreign or damaged file is then refused with one message and no collective open that could
 * fail on some ranks only. */
/* This process's own look at a file through HDF5's serial driver: a regular file that opens
 * read-only, or -1 with err set. */
static herr_t find_in_stack(unsigned k, const H5E_error2_t *e, void *data) {
    (void)k;
    const char **want = data;
    if (*want && e->desc && strstr(e->desc, *want)) *want = NULL;
    return 0;
}

/* Whether HDF5's error stack, left by a failed call, holds a message containing text. */
static int stack_says(const char *text) {
    const char *want = text;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, find_in_stack, &want);
    return want == NULL;
}

static hid_t serial_open(const char *path, char *err, size_t n) {
    if (io_check_regular(path, err, n) != 0) return -1;
    hid_t f;
    H5E_BEGIN_TRY { f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT); }
    H5E_END_TRY;
    if (f >= 0) return f;
    /* a file another program writes, or one a writer left marked open, is no damage */
    if (io_file_write_locked(path))
        snprintf(err, n, "%s: open for writing in another program (which holds HDF5's lock on "
                 "it): close it there first", path);
    else if (stack_says("already open for write"))
        snprintf(err, n, "%s: marked open for writing by a program that did not close it: once "
                 "no program has it open, clear the mark with h5clear -s", path);
    else
        snprintf(err, n, "%s: not an HDF5 file or truncated", path);
    return f;
}

static void serial_close(hid_t f) {
    herr_t closed;
    H5E_BEGIN_TRY { closed = H5Fclose(f); }
    H5E_END_TRY;
    if (closed < 0) io_ckpt_note_unclosed();
}

static int precheck(const char *path, char *err, size_t n) {
    hid_t f = serial_open(path, err, n);
    if (f < 0) return -1;
    int rc = check_identity(f, path, err, n);
    serial_close(f);
    return rc;
}

int io_ckpt_file_run_id(const char *path, char *out, size_t cap) {
    out[0] = '\0';
    char why[256];
    hid_t f = serial_open(path, why, sizeof why);
    if (f < 0) {
        comm_quiet_finalize(); /* a damaged file may leave HDF5 noisy at exit */
        return -1;
    }
    char *id = NULL;
    int rc = attr_str(f, path, "run_id", &id, why, sizeof why) == 0 && id[0] ? 0 : 1;
    if (rc == 0) snprintf(out, cap, "%s", id);
    else comm_quiet_finalize();
    free(id);
    serial_close(f);
    return rc;
}

io_ckpt *io_ckpt_open(comm_ctx *c, const char *path, char *err, size_t n) {
    LAYER_ASSERT(c && path);
    io_ckpt *ck = layer_xcalloc(1, sizeof(*ck));
    ck->c = c;
    ck->file = -1;
    int failed = 0;
    if (snprintf(ck->path, sizeof ck->path, "%s", path) >= (int)sizeof ck->path) {
        snprintf(err, n, "%.200s...: path too long", path);
        failed = 1;
    }
    if (!failed && comm_rank(c) == 0) failed = precheck(path, err, n) != 0;
    if (!failed && comm_rank(c) != 0 && io_check_regular(path, err, n) != 0) {
        /* the open below is collective: a rank that cannot see the file (another working
           directory, a node-local copy elsewhere) would leave the others waiting in it */
        size_t len = strlen(err);
        snprintf(err + len, n - len, " on rank %d, which rank 0 opens: every rank must see the "
                 "file", comm_rank(c));
        failed = 1;
    }
    if (comm_any_failed(c, failed, err, n)) {
        damaged();
        free(ck);
        return NULL;
    }
    hid_t fapl = io_ckpt_fapl(c);
    H5E_BEGIN_TRY { ck->file = H5Fopen(path, H5F_ACC_RDONLY, fapl); }
    H5E_END_TRY;
    H5_CHECK(H5Pclose(fapl));
    failed = ck->file < 0;
    if (failed) snprintf(err, n, "%s: cannot open with MPI-IO", path);
    if (comm_any_failed(c, failed, err, n)) {
        if (ck->file >= 0) H5Fclose(ck->file);
        free(ck);
        return NULL;
    }
    return ck;
}

/* Opens dataset `name`, or returns -1 when it (or a group on its path) does not exist or is
 * not a dataset. H5Lexists is asked about each prefix because it fails, rather than answering
 * 0, when an intermediate group is missing. */
static hid_t open_dataset(hid_t f, const char *name) {
    char part[IO_CKPT_PATH_MAX];
    size_t len = strlen(name);
    if (len == 0 || len >= sizeof part) return -1;
    for (size_t i = 1; i <= len; i++) {
        if (name[i] != '/' && name[i] != '\0') continue;
        memcpy(part, name, i);
        part[i] = '\0';
        htri_t e;
        H5E_BEGIN_TRY { e = H5Lexists(f, part, H5P_DEFAULT); }
        H5E_END_TRY;
        if (e <= 0) return -1;
    }
    hid_t ds;
    H5E_BEGIN_TRY { ds = H5Dopen2(f, name, H5P_DEFAULT); }
    H5E_END_TRY;
    return ds;
}

/* "float32", "uint8", ... for messages. */
static void type_text(hid_t type, char *buf, size_t n) {
    H5T_class_t cl;
    size_t size;
    H5T_sign_t sign;
    H5E_BEGIN_TRY {
        cl = H5Tget_class(type);
        size = H5Tget_size(type);
        sign = H5Tget_sign(type);
    }
    H5E_END_TRY;
    int bits = (int)size * 8;
    if (cl == H5T_FLOAT)
        snprintf(buf, n, "float%d", bits);
    else if (cl == H5T_INTEGER)
        snprintf(buf, n, "%sint%d", sign == H5T_SGN_NONE ? "u" : "", bits);
    else
        snprintf(buf, n, "a non-numeric type");
}

static int type_matches(hid_t type, io_dtype t) {
    H5T_class_t cl;
    size_t size;
    H5T_sign_t sign;
    H5E_BEGIN_TRY {
        cl = H5Tget_class(type);
        size = H5Tget_size(type);
        sign = H5Tget_sign(type);
    }
    H5E_END_TRY;
    if (t == IO_F32) return cl == H5T_FLOAT && size == 4;
    return cl == H5T_INTEGER && size == io_dtype_size(t) && sign == H5T_SGN_2;
}

/* Checks an open dataset against the caller's declaration and reads its crc32 attribute into
 * a fresh *crc (dims[0] entries). What it looks at comes from the file, so a failing HDF5
 * call is a damaged file, never an abort. Returns 0, or -1 with a message. */
static int check_dataset(io_ckpt *ck, hid_t ds, const char *name, io_dtype t, int ndims,
                         const int64_t *dims, uint32_t **crc, char *err, size_t n) {
    *crc = NULL;
    hid_t type, space = -1;
    int fnd = -1;
    hsize_t fd[H5S_MAX_RANK];
    H5E_BEGIN_TRY {
        type = H5Dget_type(ds);
        space = H5Dget_space(ds);
        if (space >= 0) fnd = H5Sget_simple_extent_ndims(space);
        if (fnd < 0 || fnd > H5S_MAX_RANK || H5Sget_simple_extent_dims(space, fd, NULL) < 0)
            fnd = -1;
        if (space >= 0) H5Sclose(space);
    }
    H5E_END_TRY;
    if (type < 0 || fnd < 0) {
        snprintf(err, n, "%s: dataset %s damaged (its type or shape is unreadable)", ck->path,
                 name);
        H5E_BEGIN_TRY { H5Tclose(type); }
        H5E_END_TRY;
        return -1;
    }
    int ok = type_matches(type, t);
    if (!ok) {
        char have[32];
        type_text(type, have, sizeof have);
        snprintf(err, n, "%s: dataset %s has type %s, expected %s", ck->path, name, have,
                 io_dtype_name(t));
    }
    H5E_BEGIN_TRY { H5Tclose(type); }
    H5E_END_TRY;
    if (!ok) return -1;
    int64_t fdims[H5S_MAX_RANK];
    ok = fnd == ndims;
    for (int d = 0; d < fnd; d++) {
        fdims[d] = (int64_t)fd[d];
        if (ok && fdims[d] != dims[d]) ok = 0;
    }
    if (!ok) {
        char have[128], want[128];
        io_dims_text(have, sizeof have, fnd, fdims);
        io_dims_text(want, sizeof want, ndims, dims);
        snprintf(err, n, "%s: dataset %s has dims %s, expected %s", ck->path, name, have, want);
        return -1;
    }
    hid_t attr = -1, atype = -1, aspace = -1;
    H5T_class_t acls = H5T_NO_CLASS;
    hssize_t npoints = -1;
    herr_t rc = -1;
    H5E_BEGIN_TRY {
        if (H5Aexists(ds, "crc32") > 0) attr = H5Aopen(ds, "crc32", H5P_DEFAULT);
        if (attr >= 0) atype = H5Aget_type(attr);
        if (attr >= 0) aspace = H5Aget_space(attr);
        if (atype >= 0) acls = H5Tget_class(atype);
        if (aspace >= 0) npoints = H5Sget_simple_extent_npoints(aspace);
    }
    H5E_END_TRY;
    ok = acls == H5T_INTEGER && npoints == dims[0];
    if (ok) {
        *crc = layer_xmalloc((size_t)(dims[0] ? dims[0] : 1) * sizeof(uint32_t));
        H5E_BEGIN_TRY { rc = H5Aread(attr, H5T_NATIVE_UINT32, *crc); }
        H5E_END_TRY;
        ok = rc >= 0;
    }
    if (attr < 0)
        snprintf(err, n, "%s: dataset %s: attribute crc32 damaged or missing", ck->path, name);
    else if (!ok)
        snprintf(err, n, "%s: dataset %s has a crc32 attribute of the wrong shape or type, or "
                 "damaged", ck->path, name);
    H5E_BEGIN_TRY {
        H5Sclose(aspace);
        H5Tclose(atype);
        H5Aclose(attr);
    }
    H5E_END_TRY;
    if (!ok) {
        free(*crc);
        *crc = NULL;
    }
    return ok ? 0 : -1;
}

static void close_dataset(hid_t ds) {
    H5E_BEGIN_TRY { H5Dclose(ds); }
    H5E_END_TRY;
}

int io_ckpt_read(io_ckpt *ck, const char *name, io_dtype t, int ndims, const int64_t *dims,
                 int nslices, const int64_t *slices, void *out, char *err, size_t n) {
    LAYER_ASSERT(ck && !ck->writing && ck->file >= 0 && name);
    LAYER_ASSERT(ndims >= 1 && ndims <= 4 && dims && nslices >= 0);
    LAYER_ASSERT(nslices == 0 || (slices && out));
    int64_t d0 = dims[0], per = 1;
    for (int d = 0; d < ndims; d++) LAYER_ASSERT(dims[d] >= 0);
    for (int d = 1; d < ndims; d++) per *= dims[d];
    for (int i = 0; i < nslices; i++) LAYER_ASSERT(slices[i] >= 0 && slices[i] < d0);
    size_t sbytes = (size_t)per * io_dtype_size(t);

    /* Metadata first, agreed over ranks, because the data read below is collective: either
     * every rank takes part or none does. */
    uint32_t *crc = NULL;
    hid_t ds = open_dataset(ck->file, name);
    int failed = 0;
    if (ds < 0) {
        snprintf(err, n, "%s: dataset %s damaged or missing", ck->path, name);
        failed = 1;
    } else {
        failed = check_dataset(ck, ds, name, t, ndims, dims, &crc, err, n) != 0;
    }
    if (comm_any_failed(ck->c, failed, err, n)) {
        if (ds >= 0) close_dataset(ds);
        free(crc);
        return damaged();
    }

    if (d0 > 0 && per > 0) {
        io_slice_plan *p = io_slice_plan_create(slices, nslices);
        /* HDF5 fills a selection in file order, once per distinct slice: read straight into
         * out when that is the list's order, else into a buffer and copy out. */
        char *buf = p->in_order ? out : layer_xmalloc((size_t)p->nuniq * sbytes);
        /* the dataspace was read in check_dataset on every rank, so this cannot fail on
           some ranks only, and the read below is entered by all */
        hid_t fspace;
        H5E_BEGIN_TRY { fspace = H5Dget_space(ds); }
        H5E_END_TRY;
        LAYER_ASSERT(fspace >= 0);
        hid_t mspace = io_slice_select(fspace, p, ndims, dims);
        hid_t dxpl = io_ckpt_dxpl();
        herr_t rc;
        H5E_BEGIN_TRY { rc = H5Dread(ds, io_dtype_mem_type(t), mspace, fspace, dxpl, buf); }
        H5E_END_TRY;
        H5_CHECK(H5Pclose(dxpl));
        H5_CHECK(H5Sclose(mspace));
        H5_CHECK(H5Sclose(fspace));
        if (rc < 0) {
            snprintf(err, n, "%s: reading dataset %s failed (I/O error)", ck->path, name);
            failed = 1;
        }
        for (int u = 0; !failed && u < p->nuniq; u++) {
            if (io_crc32(buf + (size_t)u * sbytes, sbytes) == crc[p->uniq[u]]) continue;
            snprintf(err, n, "%s: dataset %s slice %lld fails its checksum (corrupt file)",
                     ck->path, name, (long long)p->uniq[u]);
            failed = 1;
        }
        /* a NaN or an infinity under a good checksum was written so (by hand, or a diverged
           run): refused here rather than blamed on lr steps later */
        for (int u = 0; !failed && t == IO_F32 && u < p->nuniq; u++) {
            const uint32_t *w = (const uint32_t *)(buf + (size_t)u * sbytes);
            uint32_t bad = 0;
            for (int64_t e = 0; e < per; e++) bad |= (w[e] & 0x7f800000u) == 0x7f800000u;
            if (!bad) continue;
            snprintf(err, n, "%s: dataset %s slice %lld holds a NaN or infinite value (written "
                     "by a run that diverged, or edited)", ck->path, name, (long long)p->uniq[u]);
            failed = 1;
        }
        if (!p->in_order && !failed) {
            char *o = out;
            for (int j = 0, u = -1; j < p->n; j++) {
                if (j == 0 || p->slice[j] != p->slice[j - 1]) u++;
                memcpy(o + (size_t)p->pos[j] * sbytes, buf + (size_t)u * sbytes, sbytes);
            }
        }
        if (!p->in_order) free(buf);
        io_slice_plan_free(p);
    }
    close_dataset(ds);
    free(crc);
    return comm_any_failed(ck->c, failed, err, n) ? damaged() : 0;
}

int io_ckpt_get_attr_i64(io_ckpt *ck, const char *name, int64_t *out, char *err, size_t n) {
    LAYER_ASSERT(ck && ck->file >= 0 && name && out);
    int64_t v = 0;
    int failed = attr_i64(ck->file, ck->path, name, &v, err, n) != 0;
    if (comm_any_failed(ck->c, failed, err, n)) return damaged();
    *out = v;
    return 0;
}

int io_ckpt_get_attr_str(io_ckpt *ck, const char *name, char **out, char *err, size_t n) {
    LAYER_ASSERT(ck && ck->file >= 0 && name && out);
    int failed = attr_str(ck->file, ck->path, name, out, err, n) != 0;
    if (comm_any_failed(ck->c, failed, err, n)) {
        free(*out);
        *out = NULL;
        return damaged();
    }
    return 0;
}

int io_ckpt_has_attr(io_ckpt *ck, const char *name) {
    LAYER_ASSERT(ck && ck->file >= 0 && name);
    htri_t has;
    H5E_BEGIN_TRY { has = H5Aexists(ck->file, name); }
    H5E_END_TRY;
    int64_t found = has > 0;
    comm_sum_i64(ck->c, &found, 1);
    return found == comm_size(ck->c);
}

int io_ckpt_has(io_ckpt *ck, const char *name) {
    LAYER_ASSERT(ck && ck->file >= 0 && name);
    hid_t ds = open_dataset(ck->file, name);
    int64_t found = ds >= 0;
    if (ds >= 0) close_dataset(ds);
    comm_sum_i64(ck->c, &found, 1);
    return found == comm_size(ck->c);
}

void io_ckpt_close(io_ckpt *ck) {
    if (!ck) return;
    LAYER_ASSERT(!ck->writing);
    herr_t rc = 0;
    /* a file opened read-only has nothing to flush: closing it fails only when HDF5 is in
       trouble, and then finalising MPI must not ask HDF5 to close it again */
    if (ck->file >= 0) {
        H5E_BEGIN_TRY { rc = H5Fclose(ck->file); }
        H5E_END_TRY;
    }
    if (rc < 0) io_ckpt_note_unclosed();
    free(ck);
}
