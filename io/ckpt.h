/* Checkpoint files: collective parallel-HDF5 storage of named global arrays, atomic and checksummed. */
#ifndef MEMTRAIN_IO_CKPT_H
#define MEMTRAIN_IO_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"

/* Example (every rank runs all of it; each rank passes the dim-0 slices it holds):
 *
 *     char err[512];
 *     io_ckpt *ck = io_ckpt_create(c, "run/ckpt", step, err, sizeof err);
 *     if (!ck) comm_exit_error(c, err);
 *     int64_t dims[3] = {K, 256, 128}, mine[] = {1, 4};           // the chunks k this rank owns
 *     if (io_ckpt_write(ck, "tables/dec0.self.qkv/out1/data", IO_F32, 3, dims, 2, mine, rows,
 *                       err, sizeof err) != 0) { io_ckpt_abort(ck); comm_exit_error(c, err); }
 *     io_ckpt_set_attr_str(ck, "config", config_text);
 *     if (io_ckpt_commit(ck, 3, err, sizeof err) != 0) comm_exit_error(c, err);
 *
 *     char paths[8][1024];
 *     int n = io_ckpt_list("run/ckpt", paths, 8);                 // newest first
 *     io_ckpt *r = n > 0 ? io_ckpt_open(c, paths[0], err, sizeof err) : NULL;
 *     ... io_ckpt_read(r, "tables/dec0.self.qkv/out1/data", IO_F32, 3, dims, nk, ks, rows, ...)
 *     io_ckpt_close(r);
 *
 * Files in a checkpoint directory:
 *   ckpt-SSSSSSSS.h5      a complete checkpoint of step S (8 digits or more, zero-padded)
 *   ckpt-SSSSSSSS.h5.tmp  one being written (or left by a crash): never read, removed later
 *   LATEST                the name of the last committed checkpoint and a newline
 * A checkpoint is written under the .tmp name, closed, fsynced, renamed and the directory
 * fsynced before LATEST moves to it (itself written to LATEST.tmp, fsynced and renamed) and
 * before older checkpoints are deleted, so a crash at any moment leaves the previous complete
 * checkpoint in place and findable.
 *
 * Layout of one checkpoint file (HDF5, file format of HDF5 1.8 or later; h5dump, h5ls and
 * Python's h5py read it directly):
 *   /                          root group, attributes:
 *     magic           string   "memtrain-checkpoint" (IO_CKPT_MAGIC)
 *     format_version  int64    2 (IO_CKPT_FORMAT_VERSION); newer versions are refused on read,
 *                              version 1 files (the same layout without memtrain's run_id) are
 *                              read
 *     step            int64    the training step the file holds
 *     ...                      any attribute the caller sets (memtrain adds "config", the full
 *                              run config text, "config_crc32", its io_crc32, and "run_id",
 *                              the run it belongs to)
 *   <name>                     one dataset per array, named by the caller; a '/' in the name
 *                              makes groups ("tables/dec0.self.qkv/out1/data").
 *                              Contiguous, little-endian float32 / int64 / int32, dims
 *                              (d0, d1, ...) in C order, as the caller declared them.
 *     crc32           uint32 (d0)  zlib's crc32 of each dim-0 slice's raw bytes, so in
 *                              h5py: zlib.crc32(f[name][i].tobytes()) == f[name].attrs["crc32"][i]
 * Group and dataset names are the caller's; the layer defines only the attributes above. */

#define IO_CKPT_MAGIC "memtrain-checkpoint"
#define IO_CKPT_FORMAT_VERSION 2
/* Longest path the module handles (io_ckpt_list's entries are this long). */
#define IO_CKPT_PATH_MAX 1024

typedef enum io_dtype { IO_F32, IO_I64, IO_I32 } io_dtype;

typedef struct io_ckpt io_ckpt;

/* ---- writing ---- */

/* Collective. Creates `dir` if missing (rank 0, with its parents) and opens
 * "<dir>/ckpt-<step, 8 digits>.h5.tmp" for writing on every rank with the MPI-IO driver,
 * replacing a stale file of that name. Returns a handle to pass to io_ckpt_write and then to
 * io_ckpt_commit or io_ckpt_abort (which free it). On failure returns NULL on every rank with
 * the same one-line message in err; nothing is left on disk. */
io_ckpt *io_ckpt_create(comm_ctx *c, const char *dir, int64_t step, char *err, size_t n);

/* Collective: every rank calls it for every array, in the same order, with the same name,
 * dtype and dims. Stores the global array `name` of dtype t and dims (dims[0..ndims-1]),
 * 1 <= ndims <= 4, of which this rank provides the nslices (>= 0) dim-0 slices listed in
 * `slices` (any order); `data` holds them in list order, contiguously, each slice being
 * dims[1] * ... * dims[ndims-1] elements. Every slice 0..dims[0]-1 must be provided by exactly
 * one rank; wrong arguments (a slice out of range, missing, provided twice; a name written
 * twice) are programming errors and abort. The per-slice crc32 attribute costs two int64 per
 * slice in a sum over ranks, so slices should be coarse (rows of a table, not scalars).
 * Where the file system can reserve space (fallocate), rank 0 first reserves the array's room
 * and its metadata's, so that no write inside HDF5 can fail for lack of space on some ranks
 * only; a full disk then fails here with "<path>: no room for 15.2 MiB (No space left on
 * device)" before anything is written. Returns 0, or -1 on every rank with the same message
 * when the write failed (I/O error, disk full); the caller should then io_ckpt_abort. Nothing
 * is retained from `data`. */
int io_ckpt_write(io_ckpt *ck, const char *name, io_dtype t, int ndims, const int64_t *dims,
                  int nslices, const int64_t *slices, const void *data, char *err, size_t n);

/* The room of the arrays a caller is about to write (the same list on every rank), counted
 * with io_ckpt_size_add before the file exists, so that io_ckpt_create_sized reserves it at
 * once: a disk without room for the whole file says so first, with the whole file's size
 * ("<path>: no room for 8.2 MiB ..."), rather than the room reached when it ran out. */
typedef struct io_ckpt_size {
    int64_t raw_bytes, narrays, nslices;
} io_ckpt_size;
void io_ckpt_size_add(io_ckpt_size *s, io_dtype t, int ndims, const int64_t *dims);

/* io_ckpt_create that reserves the room of the arrays counted in s (io_ckpt_size_add) as it
 * creates the file (a file system that cannot reserve is no error): a disk without room for
 * the file is named with the file's size, even when it has no room for its first blocks. */
io_ckpt *io_ckpt_create_sized(comm_ctx *c, const char *dir, int64_t step, const io_ckpt_size *s,
                              char *err, size_t n);

/* Bytes a rank stages per collective write: an array is written in rounds of at most this
 * much of each rank's slices (one slice, where a slice is larger). */
#define IO_CKPT_STAGE_BYTES ((size_t)4 << 20)

/* Fills dst with the bytes of slice slices[i] (i is the position in the caller's list). */
typedef void (*io_ckpt_fill_fn)(void *ctx, int i, void *dst);

/* As io_ckpt_write, but slice i's bytes come from fill(ctx, i, dst) as the rounds reach it, so
 * the caller needs no copy of its share: a rank holds at most IO_CKPT_STAGE_BYTES of it at a
 * time (a table shard's rows, read out of a row store, say). */
int io_ckpt_write_fill(io_ckpt *ck, const char *name, io_dtype t, int ndims, const int64_t *dims,
                       int nslices, const int64_t *slices, io_ckpt_fill_fn fill, void *ctx,
                       char *err, size_t n);

/* Collective, same name and value on every rank: sets (or replaces) an attribute of the root
 * group. Names are the caller's; "magic", "format_version" and "step" are written by
 * io_ckpt_commit and override what was set here. Attributes stay in HDF5's metadata cache
 * until commit, so I/O problems surface there; an HDF5 failure here is a programming error
 * and aborts. The value is copied. */
void io_ckpt_set_attr_i64(io_ckpt *ck, const char *name, int64_t value);
void io_ckpt_set_attr_str(io_ckpt *ck, const char *name, const char *value);

/* Collective. Writes the magic, format_version and step attributes; reserves the file's room
 * (fallocate, where the file system can) so that the metadata HDF5 still holds can be written
 * on every rank or on none ("<path>.tmp: no room for 15.2 MiB (No space left on device)");
 * flushes and closes the file, and (rank 0) fsyncs it, renames it to "<dir>/ckpt-<step>.h5",
 * fsyncs the directory, points LATEST at it, then deletes the complete checkpoints of the same
 * run_id as the file just committed (or none, like it) but the newest `keep` by step (keep 0
 * keeps all; the file just committed is never deleted; another run's or an unreadable file is
 * left alone) and the .tmp files of older steps. Frees ck in every case. Returns 0, or -1 on every rank with one
 * message when the checkpoint could not be made durable (the .tmp is then removed and the
 * previous checkpoints are untouched; a failure while pruning old files is not an error). A
 * file HDF5 could not close leaves the process unable to finalize MPI (comm_mark_unclean):
 * the caller's comm_exit_error then ends the job with MPI_Abort after its message. */
int io_ckpt_commit(io_ckpt *ck, int keep, char *err, size_t n);

/* Collective. Closes and deletes the unfinished .tmp file and frees ck. NULL is fine (on every
 * rank). The close writes HDF5's metadata into the room reserved for it; on a file system that
 * cannot reserve, the file is emptied first, so the close finds room; where even that is
 * impossible it is left open and the process marked as in io_ckpt_commit. */
void io_ckpt_abort(io_ckpt *ck);

/* ---- reading ---- */

/* Collective. Opens a checkpoint for reading on every rank with the MPI-IO driver after rank 0
 * has checked it: it must be a regular file ("<path>: not a regular file (a FIFO)"), an HDF5
 * file that opens ("<path>: not an HDF5 file or truncated"), carry the magic ("<path>: not a
 * memtrain checkpoint (magic 'x')") and a format version this build reads ("<path>: format
 * version 7 is newer than this memtrain (2)"). Nothing a file holds makes this or any read
 * below abort. Returns a handle for io_ckpt_close, or NULL on every rank with the same
 * message. */
io_ckpt *io_ckpt_open(comm_ctx *c, const char *path, char *err, size_t n);

/* Collective: every rank calls it for every array in the same order. Reads the nslices (>= 0)
 * dim-0 slices listed in `slices` (any order, repeats allowed, any split over ranks: this is
 * how a checkpoint is resharded to another rank count) of array `name` into `out`, in list
 * order, contiguously. Checks that the dataset exists ("<path>: dataset X missing"), has dtype
 * t and dims (ndims, dims) ("<path>: dataset X has dims 64x256x128, expected 32x256x128") and
 * that every slice read matches its stored crc32 ("<path>: dataset X slice 5 fails its
 * checksum (corrupt file)"). Returns 0, or -1 on every rank with the same message (out's
 * contents are then undefined), so ranks can fall back together. A slice outside
 * 0..dims[0]-1 is a programming error and aborts. */
int io_ckpt_read(io_ckpt *ck, const char *name, io_dtype t, int ndims, const int64_t *dims,
                 int nslices, const int64_t *slices, void *out, char *err, size_t n);

/* Collective. Reads a root attribute: an integer one into *out, a string one into a fresh
 * NUL-terminated *out the caller free()s. Returns 0, or -1 with *out untouched (int) or NULL
 * (string) and one message ("<path>: attribute config missing", "... is not a string") on
 * every rank. */
int io_ckpt_get_attr_i64(io_ckpt *ck, const char *name, int64_t *out, char *err, size_t n);
int io_ckpt_get_attr_str(io_ckpt *ck, const char *name, char **out, char *err, size_t n);

/* zlib's crc32 of len bytes (any length): the slices' checksum, and the one a caller may keep
 * for an attribute of its own (memtrain's config_crc32). */
uint32_t io_crc32(const void *p, size_t len);

/* Collective. 1 if the checkpoint holds a dataset `name`, else 0; the same on every rank. */
int io_ckpt_has(io_ckpt *ck, const char *name);
/* Collective. 1 if the root group has an attribute `name` (of any type), else 0; the same on
 * every rank. */
int io_ckpt_has_attr(io_ckpt *ck, const char *name);

/* Collective. Closes a handle from io_ckpt_open; NULL is fine (on every rank). */
void io_ckpt_close(io_ckpt *ck);

/* The file a handle reads or writes (the .tmp name while writing); owned by ck. */
const char *io_ckpt_path(const io_ckpt *ck);

/* ---- discovery ---- */

/* The step a checkpoint's file name claims ("<dir>/ckpt-00000012.h5" -> 12). Returns 0, or -1
 * when the base name is not of that form. */
int io_ckpt_name_step(const char *path, int64_t *step);

/* Fills paths[0..] with "<dir>/ckpt-<step>.h5" for up to max complete checkpoints in dir, by
 * descending step: LATEST does not change the order (it is a hint for people and scripts; a
 * stale one must not roll a run back). .tmp files and other names are ignored. Returns how many were stored (0 when dir is missing or holds
 * none). Purely local file-system work: on a file system all ranks share each rank may call it
 * and gets the same answer; otherwise call it on rank 0 and broadcast. */
int io_ckpt_list(const char *dir, char (*paths)[IO_CKPT_PATH_MAX], int max);

/* 1 with its path in out when an entry of dir named like a checkpoint or its .tmp, or
 * LATEST or LATEST.tmp, is a directory (no file could be renamed onto it), else 0
 * (out = ""). Local. */
int io_ckpt_find_dir(const char *dir, char *out, size_t n);

/* The checkpoint file name ("ckpt-00000012.h5") dir/LATEST holds, into out. Local. Returns 0,
 * or -1 (out = "") when LATEST is missing, not a regular file or holds no such name. */
int io_ckpt_latest(const char *dir, char *out, size_t n);

#endif
