/* Early checks of a run: run directory, lock, run id, metrics file; memory estimate against the node's memory; the validation split's length. */
#include "trainer/run/preflight.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/ckpt.h"
#include "io/files.h"
#include "layers/common.h"
#include "trainer/run/checkpoint.h"
#include "trainer/run/train.h"

struct trainer_rundir {
    int lock_fd; /* -1 when the file system has no locks */
    char lock_path[1200];
    FILE *csv;   /* rank 0 */
    char csv_path[1200];
    char id[TRAINER_RUN_ID_LEN + 1];
    int resume_in_place; /* a resume whose run_dir is the directory it resumes */
};

enum { MSG = 1024 };

/* Ends the job on every rank when any rank failed. */
static void agree_or_exit(comm_ctx *c, int failed, char *err) {
    if (comm_any_failed(c, failed, err, MSG)) comm_exit_error(c, err);
}

/* One line naming this process for the lock file: "memtrain pid 123 on host n1 since ...". */
static void holder_line(char *buf, size_t n) {
    char host[256] = "?", when[64] = "?";
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = '\0';
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(buf, n, "memtrain pid %ld on host %s since %s", (long)getpid(), host, when);
}

/* Rank 0: whether dir (a checkpoint directory) holds complete checkpoints; the newest's name. */
static int holds_checkpoints(const char *dir, char *newest, size_t n) {
    char (*paths)[IO_CKPT_PATH_MAX] = layer_xmalloc(IO_CKPT_PATH_MAX);
    int count = io_ckpt_list(dir, paths, 1);
    if (count > 0) snprintf(newest, n, "%s", paths[0]);
    free(paths);
    return count > 0;
}

/* A last row without its newline is what a write that failed (a full disk) leaves: cut
 * back to the end of the last whole line, so the next row starts a line of its own. Returns
 * the bytes removed, or -1 with errno. */
static long drop_cut_row(int fd) {
    off_t size = lseek(fd, 0, SEEK_END), end = size;
    if (size < 0) return -1;
    char buf[4096];
    while (end > 0) { /* the last newline, read backwards a block at a time */
        off_t from = end > (off_t)sizeof buf ? end - (off_t)sizeof buf : 0;
        ssize_t got = pread(fd, buf, (size_t)(end - from), from);
        if (got != (ssize_t)(end - from)) {
            if (got >= 0) errno = EIO; /* a short read: the file changed under us */
            return -1;
        }
        off_t i = end - from;
        while (i > 0 && buf[i - 1] != '\n') i--;
        if (i > 0) {
            end = from + i;
            break;
        }
        end = from;
    }
    if (end == size) return 0;
    if (ftruncate(fd, end) != 0) return -1;
    return (long)(size - end);
}

/* Rank 0: whether the metrics file at path holds a logged row (a line past the header that
 * starts with its step number). */
static int holds_figures(const char *path) {
    char why[300];
    FILE *f = io_fopen_regular(path, "r", why, sizeof why);
    if (!f) return 0;
    int line = 0, start = 1, found = 0, ch;
    while (!found && (ch = getc(f)) != EOF) {
        found = start && line > 0 && ch >= '0' && ch <= '9';
        start = ch == '\n';
        line += start;
    }
    fclose(f);
    return found;
}

/* Rank 0: whether path holds a file whose first line does not start with `ours` (a file of
 * the user's, or another program's, where memtrain keeps its own): its first line, escaped,
 * in first. A missing or empty file is memtrain's to write. */
static int foreign(const char *path, const char *ours, char *first, size_t n) {
    char why[300], line[128] = "";
    FILE *f = io_fopen_regular(path, "r", why, sizeof why);
    if (!f) return 0; /* missing; anything else is refused where the file is opened */
    int got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!got || strncmp(line, ours, strlen(ours)) == 0) return 0;
    /* memtrain's own header cut short by a full disk: the cut-off row it is removes it */
    if (!strchr(line, '\n') && strncmp(ours, line, strlen(line)) == 0) return 0;
    line[strcspn(line, "\r\n")] = '\0';
    comm_escape(first, n, line);
    return 1;
}

int trainer_rundir_gone(const trainer_rundir *rd) {
    struct stat held, named;
    if (!rd || rd->lock_fd < 0 || fstat(rd->lock_fd, &held) != 0) return 0;
    if (stat(rd->lock_path, &named) != 0) /* not there; other failures (EACCES, EIO) tell nothing */
        return errno == ENOENT || errno == ENOTDIR;
    return named.st_dev != held.st_dev || named.st_ino != held.st_ino;
}

trainer_rundir *trainer_rundir_open(comm_ctx *c, const trainer_config *cfg,
                                    const char *resume_dir, const char *csv_header) {
    trainer_rundir *rd = layer_xcalloc(1, sizeof *rd);
    rd->lock_fd = -1;
    char err[MSG] = "", why[MSG] = "", ckdir[1100], path[1200];
    int me0 = comm_rank(c) == 0, failed = 0;
    const char *dir = cfg->run_dir;
    snprintf(ckdir, sizeof ckdir, "%s/ckpt", dir);

    /* the directories: whatever stands in the way shows now, from every rank together */
    if (me0 && (io_mkdirs(dir, why, sizeof why) != 0 || io_mkdirs(ckdir, why, sizeof why) != 0)) {
        snprintf(err, sizeof err, "run_dir %s cannot be used: %s", dir, why);
        failed = 1;
    }
    agree_or_exit(c, failed, err);

    /* the lock: rank 0 takes it alone, then every rank holds it shared for the run's life */
    snprintf(path, sizeof path, "%s/LOCK", dir);
    snprintf(rd->lock_path, sizeof rd->lock_path, "%s", path);
    int nolock = 0;
    if (me0) {
        char holder[400];
        holder_line(holder, sizeof holder);
        int fd = io_lock_exclusive(path, holder, why, sizeof why);
        if (fd >= 0) fd = io_lock_share(fd, path, why, sizeof why);
        if (fd >= 0) {
            rd->lock_fd = fd;
        } else if (fd == -2) {
            nolock = 1;
        } else if (strstr(why, ": held by ")) {
            snprintf(err, sizeof err, "run_dir %s is in use by another memtrain run (%s): wait for "
                     "it to end, or choose another run_dir", dir, strstr(why, ": held by ") + 10);
            failed = 1;
        } else {
            snprintf(err, sizeof err, "run_dir %s cannot be used: %s", dir, why);
            failed = 1;
        }
    }
    agree_or_exit(c, failed, err);
    int64_t flag = nolock;
    comm_broadcast(c, &flag, sizeof flag, 0);
    if (flag) {
        snprintf(err, sizeof err, "%.400s: the file system has no locks (%.200s); nothing keeps a "
                 "second run off this run_dir", path, why);
        comm_warn0(c, err);
    } else if (!me0) {
        /* a rank that cannot take its share (a file system that locks on some nodes only)
           still runs: rank 0's lock stands for the run */
        rd->lock_fd = io_lock_share(-1, path, why, sizeof why);
    }
    comm_barrier(c);

    /* a directory under a checkpoint's name: no checkpoint could be renamed onto it, so the
       run would fail at that step; refused now, before any training */
    if (me0 && io_ckpt_find_dir(ckdir, path, sizeof path)) {
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        snprintf(err, sizeof err, "run_dir %.300s cannot be used: %.600s is a directory, where %s "
                 "belongs: move it out of the way", dir, path,
                 strncmp(base, "LATEST", 6) == 0 ? "the newest checkpoint's name" : "a checkpoint file");
        failed = 1;
    }
    agree_or_exit(c, failed, err);

    /* the run id */
    char newest[IO_CKPT_PATH_MAX] = "";
    /* one directory by its identity, not its spelling ("runs/a" and "runs/a/") */
    int64_t elsewhere = 0;
    if (me0 && resume_dir) {
        struct stat sa, sb;
        elsewhere = !(stat(resume_dir, &sa) == 0 && stat(dir, &sb) == 0 &&
                      sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino);
    }
    comm_broadcast(c, &elsewhere, sizeof elsewhere, 0);
    rd->resume_in_place = resume_dir && !elsewhere;
    if (me0 && (!resume_dir || elsewhere) && holds_checkpoints(ckdir, newest, sizeof newest)) {
        snprintf(err, sizeof err, "run_dir %s holds checkpoints already (%s): "
                 "continue that run with --resume %s, or choose another run_dir", dir, newest, dir);
        failed = 1;
    }
    agree_or_exit(c, failed, err);
    /* an earlier run that logged steps but left no checkpoint (killed before its first): a
       new run would append its figures to that run's and write its config over the other's */
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    if (me0 && (!resume_dir || elsewhere) && holds_figures(path)) {
        snprintf(err, sizeof err, "run_dir %.300s holds an earlier run's figures (%.400s) but no "
                 "checkpoint to resume: choose another run_dir, or move that run's files away",
                 dir, path);
        failed = 1;
    }
    agree_or_exit(c, failed, err);
    /* files memtrain keeps in a run directory, but holding another's: the figures would go
       under a foreign header (and a cut-off last line be removed), the config be replaced */
    static const struct {
        const char *name, *ours, *what;
    } kept[] = {
        {"metrics.csv", "step,train_loss,", "its figures"},
        {"config.conf", TRAINER_RUN_CONFIG_HEAD, "the configuration of its latest sitting"}};
    for (size_t i = 0; i < sizeof kept / sizeof kept[0] && me0 && !failed; i++) {
        char first[160];
        snprintf(path, sizeof path, "%s/%s", dir, kept[i].name);
        if (foreign(path, kept[i].ours, first, sizeof first)) {
            snprintf(err, sizeof err, "run_dir %.300s cannot be used: %.400s was not written by "
                     "memtrain (it starts '%s'), and a run keeps %s there: move it away, or "
                     "choose another run_dir", dir, path, first, kept[i].what);
            failed = 1;
        }
    }
    agree_or_exit(c, failed, err);
    if (!resume_dir) {
        failed = trainer_run_id_create(c, dir, rd->id, err, sizeof err) != 0;
    } else {
        failed = trainer_run_id_for_resume(c, resume_dir, rd->id, err, sizeof err) != 0;
        /* written again (or into the new run_dir): the checkpoint directory takes writes */
        if (!failed) failed = trainer_run_id_write(c, dir, rd->id, err, sizeof err) != 0;
    }
    if (failed && strncmp(err, "no checkpoint", 13) != 0) {
        snprintf(why, sizeof why, "%s", err);
        snprintf(err, sizeof err, "run_dir %s cannot be used: %s", dir, why);
    }
    agree_or_exit(c, failed, err);

    /* the metrics file: a run whose figures cannot be kept does not start */
    if (me0) {
        snprintf(path, sizeof path, "%s/metrics.csv", dir);
        snprintf(rd->csv_path, sizeof rd->csv_path, "%s", path);
        rd->csv = io_fopen_regular(path, "a+", why, sizeof why);
        long cut = rd->csv ? drop_cut_row(fileno(rd->csv)) : 0;
        if (cut < 0) {
            snprintf(why, sizeof why, "%.900s: cannot remove a cut-off last row (%s)", path,
                     strerror(errno));
            fclose(rd->csv);
            rd->csv = NULL;
        } else if (cut > 0) {
            comm_print0(c, "run_dir: removed the cut-off last row of %s (%ld bytes, from a write "
                        "that failed)\n", path, cut);
        }
        /* the header once: glibc reports position 0 for an append stream until it is moved */
        errno = 0;
        if (rd->csv && fseek(rd->csv, 0, SEEK_END) == 0 && ftell(rd->csv) == 0 &&
            (fprintf(rd->csv, "%s\n", csv_header) < 0 || fflush(rd->csv) != 0))
            snprintf(why, sizeof why, "%.900s: cannot write (%s)", path,
                     strerror(errno ? errno : EIO));
        else if (rd->csv && !ferror(rd->csv))
            why[0] = '\0';
        if (why[0]) {
            snprintf(err, sizeof err, "run_dir %s cannot be used: %s", dir, why);
            failed = 1;
        }
    }
    agree_or_exit(c, failed, err);
    return rd;
}

const char *trainer_rundir_id(const trainer_rundir *rd) { return rd->id; }

int trainer_rundir_resume_in_place(const trainer_rundir *rd) { return rd->resume_in_place; }

FILE *trainer_rundir_metrics(trainer_rundir *rd) { return rd->csv; }

/* The one-line message of a failed write to the metrics file (e: the errno, 0 unknown). */
static int metrics_failed(trainer_rundir *rd, int e, char *err, size_t n) {
    snprintf(err, n, "%.900s: cannot write (%s)", rd->csv_path, e ? strerror(e) : "write error");
    return -1;
}

int trainer_rundir_metrics_flush(trainer_rundir *rd, char *err, size_t n) {
    if (!rd->csv) return 0;
    errno = 0;
    int e = ferror(rd->csv) ? errno : 0, bad = ferror(rd->csv);
    if (fflush(rd->csv) != 0) {
        bad = 1;
        e = errno;
    }
    return bad ? metrics_failed(rd, e, err, n) : 0;
}

int trainer_rundir_metrics_close(trainer_rundir *rd, char *err, size_t n) {
    if (!rd->csv) return 0;
    int rc = trainer_rundir_metrics_flush(rd, err, n);
    errno = 0;
    /* a network file system may report a lost write only now */
    if (fclose(rd->csv) != 0 && rc == 0) rc = metrics_failed(rd, errno, err, n);
    rd->csv = NULL;
    return rc;
}

void trainer_rundir_close(trainer_rundir *rd) {
    if (!rd) return;
    if (rd->csv) fclose(rd->csv);
    if (rd->lock_fd >= 0) close(rd->lock_fd);
    free(rd);
}

/* ---- memory ---- */

/* The number after `key` in /proc/meminfo, in bytes, or -1. */
static double meminfo_of(const char *file, const char *key) {
    char buf[8192], why[64];
    if (io_read_small(file, buf, sizeof buf, why, sizeof why) <= 0) return -1;
    const char *p = strstr(buf, key);
    if (!p) return -1;
    double kb = strtod(p + strlen(key), NULL);
    return kb > 0 ? kb * 1024.0 : -1;
}

static double meminfo(const char *key) { return meminfo_of("/proc/meminfo", key); }

/* A number read from a small file ("max" and unreadable: -1). */
static double number_in(const char *path) {
    char buf[64], why[64];
    if (io_read_small(path, buf, sizeof buf, why, sizeof why) <= 0) return -1;
    char *end;
    double v = strtod(buf, &end);
    return end == buf ? -1 : v;
}

/* What the memory cgroup of this process still allows (v2 or v1), or -1 when unlimited. */
static double cgroup_left(void) {
    char buf[4096], why[64], path[4400];
    if (io_read_small("/proc/self/cgroup", buf, sizeof buf, why, sizeof why) <= 0) return -1;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        const char *v2 = strncmp(line, "0::", 3) == 0 ? line + 3 : NULL;
        const char *v1 = strstr(line, ":memory:");
        double limit = -1, used = -1;
        if (v2) {
            snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.max", v2);
            limit = number_in(path);
            snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.current", v2);
            used = number_in(path);
        } else if (v1) {
            snprintf(path, sizeof path, "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", v1 + 8);
            limit = number_in(path);
            snprintf(path, sizeof path, "/sys/fs/cgroup/memory%s/memory.usage_in_bytes", v1 + 8);
            used = number_in(path);
        }
        /* "unlimited" is a huge number in v1 */
        if (limit > 0 && limit < 1e18) return limit - (used > 0 ? used : 0);
    }
    return -1;
}

/* Bytes this rank may use, and how that was found, into what. */
static double available_per_rank(comm_ctx *c, char *what, size_t n) {
    int node = comm_node_size(c);
    double avail = meminfo("MemAvailable:");
    const char *src = "MemAvailable";
    if (avail < 0) {
        long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        avail = pages > 0 && page > 0 ? (double)pages * (double)page : 1e30;
        src = "free memory";
    }
    double cg = cgroup_left();
    if (cg >= 0 && cg < avail) {
        avail = cg;
        src = "the memory cgroup's limit";
    }
    char total[32];
    trainer_footprint_bytes(avail, total, sizeof total);
    double per = avail / node;
    snprintf(what, n, "%s %s over %d rank%s on this node", src, total, node, node > 1 ? "s" : "");
    /* an address-space limit (ulimit -v) counts what is mapped already: the libraries, MPI's
       shared segments and OpenBLAS's buffer (made at the start), which the estimate does not */
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        double mapped = meminfo_of("/proc/self/status", "VmSize:");
        double left = (double)rl.rlim_cur - (mapped > 0 ? mapped : 0);
        if (left < per) {
            char lim[32], used[32];
            trainer_footprint_bytes((double)rl.rlim_cur, lim, sizeof lim);
            trainer_footprint_bytes(mapped > 0 ? mapped : 0, used, sizeof used);
            per = left > 0 ? left : 0;
            snprintf(what, n, "the address-space limit, ulimit -v, of %s, %s of it mapped before "
                     "the run's own memory", lim, used);
        }
    }
    return per;
}

void trainer_preflight_memory(comm_ctx *c, const trainer_config *cfg, trainer_footprint_use use,
                              int batch, int announce) {
    char err[MSG], what[200], drivers[600], need[32], have[32];
    int P = comm_size(c);
    int failed = trainer_footprint_check_ranges(cfg, P, batch, err, sizeof err) != 0;
    agree_or_exit(c, failed, err);
    double resident, loading;
    trainer_footprint_data(cfg, P, use, &resident, &loading);
    trainer_footprint f;
    trainer_footprint_estimate(cfg, P, use, batch, resident, loading, &f);
    double avail = available_per_rank(c, what, sizeof what);
    trainer_footprint_bytes(f.total, need, sizeof need);
    trainer_footprint_bytes(avail, have, sizeof have);
    if (announce && comm_rank(c) == 0) {
        char line[600];
        trainer_footprint_describe(&f, line, sizeof line);
        comm_print0(c, "memory: %s; %s available per rank (%s)\n", line, have, what);
    }
    if (f.total > avail) {
        trainer_footprint_drivers(cfg, &f, drivers, sizeof drivers);
        snprintf(err, sizeof err, "memory: this run needs about %s per rank but %s is available "
                 "to each (%s); the largest part is %s", need, have, what, drivers);
        failed = 1;
    }
    agree_or_exit(c, failed, err);
}

long long trainer_preflight_eval(comm_ctx *c, const trainer_config *cfg, const io_dataset *val) {
    if (cfg->eval_docs > val->ndocs)
        comm_print0(c, "eval: eval_docs = %d is more than the validation split's %lld documents: "
                    "each evaluation scores all of them\n", cfg->eval_docs, (long long)val->ndocs);
    return trainer_eval_docs(cfg, val);
}
