/* The file-system side of checkpoints: directory creation, durable rename, the LATEST marker, pruning, listing. */
#include "io/ckpt.h"
#include "io/ckpt_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/files.h"
#include "layers/common.h"

int io_ckpt_mkdirs(const char *dir, char *err, size_t n) { return io_mkdirs(dir, err, n); }

int io_ckpt_file_name(char *out, const char *dir, int64_t step, const char *suffix, char *err,
                      size_t n) {
    int len = snprintf(out, IO_CKPT_PATH_MAX, "%s/ckpt-%08lld.h5%s", dir, (long long)step, suffix);
    if (len < 0 || len >= IO_CKPT_PATH_MAX) {
        snprintf(err, n, "%s: checkpoint directory name too long", dir);
        return -1;
    }
    return 0;
}

/* fsync of a file or directory by name; directories need it so a rename survives a crash. */
static int fsync_path(const char *path, int is_dir) {
    int fd = open(path, is_dir ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

int io_ckpt_publish(const char *dir, const char *tmp, const char *final, char *err, size_t n) {
    if (fsync_path(tmp, 0) != 0) {
        snprintf(err, n, "%s: cannot fsync (%s)", tmp, strerror(errno));
        return -1;
    }
    if (rename(tmp, final) != 0) {
        snprintf(err, n, "%s: cannot rename to %s (%s)", tmp, final, strerror(errno));
        return -1;
    }
    if (fsync_path(dir, 1) != 0) {
        snprintf(err, n, "%s: cannot fsync directory (%s)", dir, strerror(errno));
        return -1;
    }
    char latest[IO_CKPT_PATH_MAX], latest_tmp[IO_CKPT_PATH_MAX + 8];
    snprintf(latest, sizeof latest, "%s/LATEST", dir);
    snprintf(latest_tmp, sizeof latest_tmp, "%s/LATEST.tmp", dir);
    char line[IO_CKPT_PATH_MAX];
    int len = snprintf(line, sizeof line, "%s\n", base_name(final));
    /* a stale one is this writer's own leftover; anything else there (a FIFO would block
       the open) is replaced, or refused when it cannot be */
    unlink(latest_tmp);
    int fd = open(latest_tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
    if (fd < 0) {
        snprintf(err, n, "%s: cannot create (%s)", latest_tmp, strerror(errno));
        return -1;
    }
    int ok = write(fd, line, (size_t)len) == len && fsync(fd) == 0;
    int saved = errno;
    close(fd);
    if (!ok || rename(latest_tmp, latest) != 0) {
        snprintf(err, n, "%s: cannot write (%s)", latest, strerror(ok ? errno : saved));
        unlink(latest_tmp);
        return -1;
    }
    if (fsync_path(dir, 1) != 0) {
        snprintf(err, n, "%s: cannot fsync directory (%s)", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* "ckpt-<digits>.h5" (tmp = 0) or "ckpt-<digits>.h5.tmp" (tmp = 1) → 0 and the step; else -1. */
static int parse_name(const char *name, int64_t *step, int *tmp) {
    if (strncmp(name, "ckpt-", 5) != 0) return -1;
    const char *s = name + 5, *d = s;
    while (*d >= '0' && *d <= '9') d++;
    if (d == s || d - s > 18) return -1;
    if (strcmp(d, ".h5") == 0)
        *tmp = 0;
    else if (strcmp(d, ".h5.tmp") == 0)
        *tmp = 1;
    else
        return -1;
    *step = strtoll(s, NULL, 10);
    return 0;
}

int io_ckpt_name_step(const char *path, int64_t *step) {
    int tmp;
    return parse_name(base_name(path), step, &tmp) == 0 && !tmp ? 0 : -1;
}

typedef struct entry {
    int64_t step;
    char name[256];
} entry;

static int by_step_desc(const void *a, const void *b) {
    int64_t x = ((const entry *)a)->step, y = ((const entry *)b)->step;
    if (x != y) return x > y ? -1 : 1;
    /* same step, different zero padding: any fixed order keeps the listing deterministic */
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

/* The complete (tmp = 0) or unfinished (tmp = 1) checkpoints of dir, newest first; *count
 * of them in a fresh array the caller frees (NULL when none or dir unreadable). */
static entry *scan(const char *dir, int want_tmp, int *count) {
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    entry *e = NULL;
    int cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int64_t step;
        int tmp;
        if (parse_name(de->d_name, &step, &tmp) != 0 || tmp != want_tmp) continue;
        if (strlen(de->d_name) >= sizeof e[0].name) continue;
        if (*count == cap) {
            cap = cap ? 2 * cap : 16;
            entry *grown = layer_xmalloc((size_t)cap * sizeof(entry));
            if (e) memcpy(grown, e, (size_t)*count * sizeof(entry));
            free(e);
            e = grown;
        }
        e[*count].step = step;
        snprintf(e[*count].name, sizeof e[0].name, "%s", de->d_name);
        (*count)++;
    }
    closedir(d);
    if (*count > 1) qsort(e, (size_t)*count, sizeof(entry), by_step_desc);
    return e;
}

void io_ckpt_prune(const char *dir, int keep, int64_t current) {
    char path[IO_CKPT_PATH_MAX + 256];
    int count;
    char mine[128], theirs[128];
    entry *e = scan(dir, 0, &count);
    int ours = 0, known = 0;
    for (int i = 0; keep > 0 && i < count; i++) /* the run of step `current` */
        if (e[i].step == current) {
            snprintf(path, sizeof path, "%s/%s", dir, e[i].name);
            known = io_ckpt_file_run_id(path, mine, sizeof mine) >= 0;
        }
    for (int i = 0; known && i < count; i++) { /* newest first */
        snprintf(path, sizeof path, "%s/%s", dir, e[i].name);
        if (e[i].step != current &&
            (io_ckpt_file_run_id(path, theirs, sizeof theirs) < 0 || strcmp(theirs, mine) != 0))
            continue;
        if (++ours > keep && e[i].step != current) unlink(path);
    }
    free(e);
    e = scan(dir, 1, &count);
    for (int i = 0; i < count; i++) {
        if (e[i].step >= current) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e[i].name);
        unlink(path);
    }
    free(e);
}

int io_ckpt_find_dir(const char *dir, char *out, size_t n) {
    out[0] = '\0';
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *de;
    int found = 0;
    while (!found && (de = readdir(d)) != NULL) {
        int64_t step;
        int tmp;
        if (parse_name(de->d_name, &step, &tmp) != 0 && strcmp(de->d_name, "LATEST") != 0 &&
            strcmp(de->d_name, "LATEST.tmp") != 0)
            continue;
        char path[IO_CKPT_PATH_MAX + 256];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            snprintf(out, n, "%s", path);
            found = 1;
        }
    }
    closedir(d);
    return found;
}

int io_ckpt_latest(const char *dir, char *out, size_t n) {
    out[0] = '\0';
    char path[IO_CKPT_PATH_MAX + 8], line[300], why[IO_CKPT_PATH_MAX + 100];
    snprintf(path, sizeof path, "%s/LATEST", dir);
    /* a LATEST that is not a regular file (a FIFO) is ignored like a missing one */
    if (io_read_small(path, line, sizeof line, why, sizeof why) <= 0) return -1;
    line[strcspn(line, "\r\n")] = '\0';
    int64_t step;
    int tmp;
    if (parse_name(line, &step, &tmp) != 0 || tmp) return -1;
    snprintf(out, n, "%s", line);
    return 0;
}

int io_ckpt_list(const char *dir, char (*paths)[IO_CKPT_PATH_MAX], int max) {
    int count;
    /* by step alone: LATEST may be stale (restored from a backup, written by hand), and a run
       must never go back behind a newer checkpoint that loads */
    entry *e = scan(dir, 0, &count);
    int stored = 0;
    for (int i = 0; i < count && stored < max; i++) {
        int len = snprintf(paths[stored], IO_CKPT_PATH_MAX, "%s/%s", dir, e[i].name);
        if (len >= 0 && len < IO_CKPT_PATH_MAX) stored++;
    }
    free(e);
    return stored;
}
