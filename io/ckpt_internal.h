/* What the io/ckpt*.c sources share: the handle, HDF5 helpers, and the file-system half of commit and list. */
#ifndef MEMTRAIN_IO_CKPT_INTERNAL_H
#define MEMTRAIN_IO_CKPT_INTERNAL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "io/ckpt.h"

struct io_ckpt {
    comm_ctx *c;                   /* not owned */
    hid_t file;                    /* -1 once closed */
    int writing;                   /* from io_ckpt_create (else io_ckpt_open) */
    int64_t step;                  /* writing only */
    int64_t raw_bytes;             /* writing only: array bytes written so far, */
    int64_t narrays, nslices;      /* in so many arrays of so many dim-0 slices */
    int64_t reserved;              /* writing, rank 0: bytes of the file reserved (fallocate)
                                      so far, -1 when the file system cannot reserve */
    char dir[IO_CKPT_PATH_MAX];    /* writing only */
    char path[IO_CKPT_PATH_MAX];   /* the .tmp name while writing */
};

/* HDF5 failures on arguments this module built itself are programming errors: HDF5's error
 * stack and the call site are printed and the process aborts (which ends the MPI job).
 * Evaluates to the call's value otherwise. */
#define H5_CHECK(call) io_h5_check_at((int64_t)(call), __FILE__, __LINE__, #call)
int64_t io_h5_check_at(int64_t value, const char *file, int line, const char *what);

/* Records that an HDF5 file could not be closed: HDF5's own cleanup at MPI finalisation would
 * then crash, so the process must end through MPI_Abort (comm_mark_unclean). */
void io_ckpt_note_unclosed(void);

/* Element size, HDF5 file / memory types and the name ("float32") of a dtype. */
size_t io_dtype_size(io_dtype t);
hid_t io_dtype_file_type(io_dtype t);
hid_t io_dtype_mem_type(io_dtype t);
const char *io_dtype_name(io_dtype t);

/* File access through the MPI-IO driver on c's communicator; the caller H5Pclose()s it. */
hid_t io_ckpt_fapl(comm_ctx *c);
/* Transfer property for collective raw-data I/O; the caller H5Pclose()s it. */
hid_t io_ckpt_dxpl(void);

/* A slice list sorted by slice (ties by list position), with the distinct slices. */
typedef struct io_slice_plan {
    int64_t *slice;  /* (n) the list's slices in ascending order */
    int *pos;        /* (n) list position of each */
    int64_t *uniq;   /* (nuniq) distinct slices, ascending */
    int n, nuniq;
    int in_order;    /* the list itself is strictly ascending (pos[i] == i, no repeats) */
} io_slice_plan;

/* Builds the plan of slices[0..n-1]; free with io_slice_plan_free. */
io_slice_plan *io_slice_plan_create(const int64_t *slices, int n);
void io_slice_plan_free(io_slice_plan *p);

/* Selects the plan's distinct slices of a (ndims, dims) file dataspace (none when nuniq is 0),
 * in time about linear in the number of runs of consecutive slices, and returns a matching
 * memory dataspace of (nuniq, dims[1], ...) elements, which the caller H5Sclose()s. */
hid_t io_slice_select(hid_t file_space, const io_slice_plan *p, int ndims, const int64_t *dims);

/* "64x256x128" into buf. */
void io_dims_text(char *buf, size_t n, int ndims, const int64_t *dims);

/* Makes dir and its missing parents. Returns 0, or -1 with "<dir>: cannot create (reason)". */
int io_ckpt_mkdirs(const char *dir, char *err, size_t n);

/* "<dir>/ckpt-<step, 8 digits>.h5" plus `suffix` into out (IO_CKPT_PATH_MAX). Returns 0, or -1
 * with a message when the path does not fit. */
int io_ckpt_file_name(char *out, const char *dir, int64_t step, const char *suffix, char *err,
                      size_t n);

/* Makes the closed file tmp durable under the name final in dir and points dir/LATEST at it:
 * fsync tmp, rename, fsync dir, write LATEST.tmp, fsync, rename, fsync dir. Returns 0, or -1
 * with a one-line message (tmp may then still exist; final does not unless the failure came
 * after the rename, in which case the checkpoint is complete but LATEST is stale). */
int io_ckpt_publish(const char *dir, const char *tmp, const char *final, char *err, size_t n);

/* Deletes the complete checkpoints in dir of the run that wrote the one of step `current`
 * (the same run_id, or none like it) but its newest `keep` by step (keep 0 keeps all), never
 * the one of step `current`; and every ckpt-*.h5.tmp of a step below `current`. A file of
 * another run, or one that does not open (damaged, not HDF5), is left alone and not counted:
 * the name alone never decides. Failures are ignored: a leftover file costs disk space, not
 * correctness. Serial (rank 0). */
void io_ckpt_prune(const char *dir, int keep, int64_t current);

/* The run_id attribute of the checkpoint file at path, read through HDF5's serial driver,
 * into out (cap bytes). Returns 0; 1 when the file opens but holds none (out is ""); -1 when
 * it does not open as HDF5. */
int io_ckpt_file_run_id(const char *path, char *out, size_t cap);

#endif
