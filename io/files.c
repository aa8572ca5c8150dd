/* Regular files opened without blocking, small text files written atomically, space reservation, fcntl locks. */
/* fallocate(2) is Linux's: posix_fallocate would emulate it by writing where it is missing */
#define _GNU_SOURCE
#include "io/files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static const char *kind_of(mode_t m) {
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "not a plain file";
}

static int not_regular(const char *path, mode_t m, char *err, size_t n) {
    if (err && n) snprintf(err, n, "%s: not a regular file (%s)", path, kind_of(m));
    errno = EEXIST; /* something is there: an O_EXCL caller moves on as for a file */
    return -1;
}

int io_open_regular(const char *path, int flags, mode_t mode, char *err, size_t n) {
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) return not_regular(path, st.st_mode, err, n);
    int fd = open(path, flags | O_NONBLOCK | O_CLOEXEC, mode);
    if (fd < 0) {
        int e = errno;
        /* a FIFO without a reader (ENXIO) or a directory opened for writing (EISDIR) */
        if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
            return not_regular(path, st.st_mode, err, n);
        if (err && n) snprintf(err, n, "%s: cannot open (%s)", path, strerror(e));
        errno = e; /* the caller may tell EEXIST (O_EXCL) from other reasons */
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        mode_t m = st.st_mode;
        close(fd);
        return not_regular(path, m, err, n);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

FILE *io_fopen_regular(const char *path, const char *fmode, char *err, size_t n) {
    int flags = O_RDONLY;
    if (fmode[0] == 'w') flags = O_WRONLY | O_CREAT | O_TRUNC;
    if (fmode[0] == 'a') flags = (fmode[1] == '+' ? O_RDWR : O_WRONLY) | O_CREAT | O_APPEND;
    if (fmode[0] == 'x') flags = O_WRONLY | O_CREAT | O_EXCL;
    int fd = io_open_regular(path, flags, 0666, err, n);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, fmode[0] == 'x' ? "wb" : fmode);
    if (!f) {
        if (err && n) snprintf(err, n, "%s: cannot open (%s)", path, strerror(errno));
        close(fd);
    }
    return f;
}

int io_check_regular(const char *path, char *err, size_t n) {
    int fd = io_open_regular(path, O_RDONLY, 0, err, n);
    if (fd < 0) return -1;
    close(fd);
    return 0;
}

int io_file_write_locked(const char *path) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return 0;
    int locked = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd); /* lets go of the shared lock, if it was taken */
    return locked;
}

int io_probe_create(const char *dir, char *err, size_t n) {
    char path[4200];
    /* a name of its own: ranks on other nodes may share the directory and the pid */
    snprintf(path, sizeof path, "%s/.memtrain-probe-XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) {
        if (err && n) snprintf(err, n, "cannot create a file there (%s)", strerror(errno));
        return -1;
    }
    close(fd);
    unlink(path);
    return 0;
}

long io_read_small(const char *path, char *buf, size_t cap, char *err, size_t n) {
    buf[0] = '\0';
    int fd = io_open_regular(path, O_RDONLY, 0, err, n);
    if (fd < 0) return -1;
    size_t got = 0;
    while (got + 1 < cap) {
        ssize_t r = read(fd, buf + got, cap - 1 - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            if (err && n) snprintf(err, n, "%s: cannot read (%s)", path, strerror(errno));
            close(fd);
            buf[0] = '\0';
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    close(fd);
    return (long)got;
}

int io_mkdirs(const char *dir, char *err, size_t n) {
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p || p[0] == '\0') {
        snprintf(err, n, "%s: directory name empty or too long", dir);
        return -1;
    }
    /* Each prefix ending before a '/' is a parent; EEXIST is fine for all of them, and the
     * final stat catches a prefix that exists as a plain file. */
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char saved = *s;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            snprintf(err, n, "%s: cannot create (%s)", p, strerror(errno));
            return -1;
        }
        *s = saved;
        if (saved == '\0') break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, n, "%s: cannot create (not a directory)", dir);
        return -1;
    }
    return 0;
}

/* fsync of a directory, so a rename in it survives a crash. */
static int fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd), e = errno;
    close(fd);
    errno = e;
    return rc;
}

int io_write_atomic(const char *dir, const char *name, const char *text, char *err, size_t n) {
    char path[4200], tmp[4210];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) {
        snprintf(err, n, "%s: directory name too long", dir);
        return -1;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(tmp); /* whatever a crash or a hand left there, a FIFO included */
    int fd = io_open_regular(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666, err, n);
    if (fd < 0) return -1;
    size_t len = strlen(text);
    int ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    int e = errno;
    if (close(fd) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, n, "%s: cannot write (%s)", path, strerror(ok ? errno : e));
        unlink(tmp);
        return -1;
    }
    if (fsync_dir(dir) != 0) {
        snprintf(err, n, "%s: cannot fsync directory (%s)", dir, strerror(errno));
        return -1;
    }
    return 0;
}

int io_file_reserve(const char *path, long long bytes, char *err, size_t n) {
    if (bytes <= 0) return 0;
    int fd = io_open_regular(path, O_WRONLY, 0, err, n);
    if (fd < 0) return -1;
    int rc = 1, got;
    /* tmpfs gives up a large reservation when a signal arrives (EINTR): ask again */
    for (int tries = 0; (got = fallocate(fd, 0, 0, (off_t)bytes)) != 0 && errno == EINTR &&
                        tries < 100;
         tries++) {
    }
    if (got != 0) {
        int e = errno;
        rc = 0;
        if (e != EOPNOTSUPP && e != ENOSYS && e != EINTR) {
            snprintf(err, n, "%s: no room for %.1f MiB (%s)", path, (double)bytes / 1048576.0,
                     strerror(e));
            rc = -1;
        }
    }
    close(fd);
    return rc;
}

long long io_free_bytes(const char *path) {
    struct statvfs sv;
    if (statvfs(path, &sv) != 0) return -1;
    return (long long)sv.f_bavail * (long long)sv.f_frsize;
}

static int set_lock(int fd, short type) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    return fcntl(fd, F_SETLK, &fl);
}

/* -2 for a file system without locks, else -1; err names path and the reason. */
static int lock_failed(const char *path, int e, char *err, size_t n) {
    snprintf(err, n, "%s: cannot lock (%s)", path, strerror(e));
    return e == ENOLCK || e == EOPNOTSUPP || e == ENOSYS ? -2 : -1;
}

int io_lock_exclusive(const char *path, const char *holder, char *err, size_t n) {
    int fd = io_open_regular(path, O_RDWR | O_CREAT, 0666, err, n);
    if (fd < 0) return -1;
    if (set_lock(fd, F_WRLCK) != 0) {
        int e = errno;
        if (e != EAGAIN && e != EACCES) {
            close(fd);
            return lock_failed(path, e, err, n);
        }
        char who[256];
        ssize_t r = pread(fd, who, sizeof who - 1, 0);
        who[r > 0 ? r : 0] = '\0';
        who[strcspn(who, "\n")] = '\0';
        snprintf(err, n, "%s: held by %s", path, who[0] ? who : "another process");
        close(fd);
        return -1;
    }
    /* a file of that name that no holder wrote (its first words differ) is someone's: left */
    char was[256];
    ssize_t got = pread(fd, was, sizeof was - 1, 0);
    was[got > 0 ? got : 0] = '\0';
    const char *sp = strchr(holder, ' ');
    size_t words = sp && strchr(sp + 1, ' ') ? (size_t)(strchr(sp + 1, ' ') - holder) + 1 : 0;
    if (got > 0 && words && strncmp(was, holder, words) != 0) {
        was[strcspn(was, "\n")] = '\0';
        snprintf(err, n, "%s: not a lock file of this program (it holds '%.60s'): move it away",
                 path, was);
        close(fd);
        return -1;
    }
    size_t len = strlen(holder);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, holder, len, 0) != (ssize_t)len ||
        pwrite(fd, "\n", 1, (off_t)len) != 1) {
        snprintf(err, n, "%s: cannot write (%s)", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int io_lock_share(int fd, const char *path, char *err, size_t n) {
    int own = fd < 0;
    if (own) fd = io_open_regular(path, O_RDONLY, 0, err, n);
    if (fd < 0) return -1;
    if (set_lock(fd, F_RDLCK) != 0) {
        int e = errno;
        if (own) close(fd);
        if (e == EAGAIN || e == EACCES) {
            snprintf(err, n, "%s: held by another process", path);
            return -1;
        }
        return lock_failed(path, e, err, n);
    }
    return fd;
}
