/* File-system helpers of io/ and trainer/: regular files opened without ever blocking, small text files, advisory locks. */
#ifndef MEMTRAIN_IO_FILES_H
#define MEMTRAIN_IO_FILES_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

/* Why: a FIFO, a directory or a device given where a file is expected must be refused with
 * one line, never opened in a way that blocks (open(2) of a FIFO waits for the other end,
 * forever when there is none). Every file a user names goes through io_open_regular.
 *
 * Opens path with `flags` (O_RDONLY, or O_WRONLY/O_RDWR with O_CREAT, O_TRUNC, O_APPEND as
 * wanted; `mode` for a created file) after a stat: an existing non-regular file is refused
 * without being opened (opening some devices has effects). The open adds O_NONBLOCK and
 * O_CLOEXEC, so it cannot block even if the name is swapped for a FIFO after the stat; fstat
 * of the opened descriptor then decides (no window between check and use), and O_NONBLOCK is
 * cleared again. Returns the descriptor, or -1 with one line in err (n > 0):
 *   "<path>: not a regular file (a FIFO)"       also: a directory, a character device, ...
 *   "<path>: cannot open (No such file or directory)"   the reason, also left in errno */
int io_open_regular(const char *path, int flags, mode_t mode, char *err, size_t n);

/* The same as a stdio stream; fmode is "r", "rb", "w", "wb", "a", "a+", or "x": a new file, written
 * in binary, that must not exist yet (O_EXCL: a file that appears meanwhile is never
 * truncated). Returns NULL with err set, and errno EEXIST when an "x" file exists. */
FILE *io_fopen_regular(const char *path, const char *fmode, char *err, size_t n);

/* For files a library opens by name itself (HDF5): checks, as io_open_regular does, that path
 * is a regular file that opens for reading, and closes it again. Returns 0, or -1 with err.
 * The library's own open comes later; a name swapped for a FIFO in between is the caller's
 * remaining risk, a window of microseconds. */
int io_check_regular(const char *path, char *err, size_t n);

/* 1 when another process holds an exclusive lock on the file at path (HDF5 takes one, with
 * flock, on a file it opens for writing: h5py's mode 'a', HDFView), else 0. */
int io_file_write_locked(const char *path);

/* Whether this process may create a file in directory dir (a name of its own there, made and
 * removed at once: access() says yes where a file system refuses, as /sys does to root).
 * 0, or -1 with err "cannot create a file there (reason)". */
int io_probe_create(const char *dir, char *err, size_t n);

/* Makes dir and its missing parents. Returns 0, or -1 with "<dir>: cannot create (reason)"
 * (a prefix that is a plain file: "... (Not a directory)"). */
int io_mkdirs(const char *dir, char *err, size_t n);

/* Reads a small text file (LATEST, RUN_ID) into buf (cap bytes, NUL-terminated, at most
 * cap - 1 bytes kept). Returns the bytes kept, or -1 with err set (missing, not regular,
 * unreadable). */
long io_read_small(const char *path, char *buf, size_t cap, char *err, size_t n);

/* Writes text to dir/name durably and atomically: dir/name.tmp written, fsynced, renamed over
 * dir/name, directory fsynced. Returns 0, or -1 with err set (the .tmp is then removed). */
int io_write_atomic(const char *dir, const char *name, const char *text, char *err, size_t n);

/* Reserves the blocks of bytes 0..bytes-1 of the regular file path (fallocate: writes there
 * then cannot fail for lack of space; the file grows to `bytes` if shorter). Returns 1 when
 * reserved, 0 when the file system cannot reserve (nothing is promised then; also for
 * bytes <= 0), or -1 with err set when the space is not there ("<path>: no room for 12.3 MiB
 * (No space left on device)"). */
int io_file_reserve(const char *path, long long bytes, char *err, size_t n);

/* Bytes an unprivileged writer may still put on the file system of path, or -1 if unknown. */
long long io_free_bytes(const char *path);

/* Advisory whole-file locks (fcntl, so they also work on NFS with a lock daemon) on path,
 * created if missing. A process holds at most one lock per file; the lock ends when the
 * descriptor is closed or the process ends, whatever the way it ends.
 *
 * io_lock_exclusive: takes an exclusive lock without waiting and writes `holder` (one line
 * naming this process) into the file. Returns the descriptor, or -1 with err set: when another
 * process holds a lock, "<path>: held by <what the holder wrote>"; when the file system has
 * no locks (ENOLCK, EOPNOTSUPP), -2 with the reason, so a caller may go on without one. A
 * file there already whose first two words are not the holder's ("memtrain pid") is no lock
 * file of this program: refused, "<path>: not a lock file of this program (it holds '...')",
 * and left as it is.
 * io_lock_share: turns the exclusive lock of fd into a shared one (atomically) or, with
 * fd < 0, opens path and takes a shared lock. Returns the descriptor or -1 (-2 as above). */
int io_lock_exclusive(const char *path, const char *holder, char *err, size_t n);
int io_lock_share(int fd, const char *path, char *err, size_t n);

#endif
