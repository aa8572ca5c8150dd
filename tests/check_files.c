/* File-system helpers and message escaping: non-regular files refused without blocking, run locks between processes, one-line messages. */
#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "comm/comm.h"
#include "io/files.h"
#include "tests/testutil.h"

static char dir[64];

static void setup(void) {
    snprintf(dir, sizeof dir, "/tmp/memtrain-check-files.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_escape) {
    char out[64];
    /* a newline, a control byte, an invalid byte, valid UTF-8 (e acute), a backslash */
    comm_escape(out, sizeof out, "a\nb\x01\xff\xc3\xa9\\z\t");
    ck_assert_str_eq(out, "a\\nb\\x01\\xff\xc3\xa9\\\\z\\t");
    /* a truncated UTF-8 sequence and an overlong form are not UTF-8 */
    comm_escape(out, sizeof out, "x\xc3");
    ck_assert_str_eq(out, "x\\xc3");
    comm_escape(out, sizeof out, "\xc0\xaf");
    ck_assert_str_eq(out, "\\xc0\\xaf");
    /* truncation keeps whole escapes only */
    comm_escape(out, 6, "ab\n\n\n");
    ck_assert_str_eq(out, "ab\\n");
    comm_escape(out, 1, "abc");
    ck_assert_str_eq(out, "");
}
END_TEST

/* Seconds since some fixed point. */
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

START_TEST(test_not_regular) {
    char fifo[128], file[128], err[512];
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    snprintf(file, sizeof file, "%s/file", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    /* neither for reading nor for writing does a FIFO without another end block */
    double t0 = now();
    ck_assert_int_eq(io_open_regular(fifo, O_RDONLY, 0, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "/fifo: not a regular file (a FIFO)") != NULL, "%s", err);
    ck_assert_int_eq(io_open_regular(fifo, O_WRONLY | O_CREAT | O_TRUNC, 0666, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "not a regular file (a FIFO)") != NULL, "%s", err);
    ck_assert_ptr_null(io_fopen_regular(fifo, "a", err, sizeof err));
    ck_assert_int_eq(io_check_regular(fifo, err, sizeof err), -1);
    ck_assert(now() - t0 < 2.0);
    ck_assert_int_eq(io_open_regular(dir, O_RDONLY, 0, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "not a regular file (a directory)") != NULL, "%s", err);
    ck_assert_int_eq(io_open_regular("/dev/null", O_RDONLY, 0, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "/dev/null: not a regular file (a character device)") != NULL, "%s", err);
    ck_assert_int_eq(io_open_regular(file, O_RDONLY, 0, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "/file: cannot open (No such file or directory)") != NULL, "%s", err);
    /* a regular file opens, and blocks as usual afterwards (O_NONBLOCK is cleared) */
    int fd = io_open_regular(file, O_WRONLY | O_CREAT | O_TRUNC, 0666, err, sizeof err);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
    close(fd);
}
END_TEST

START_TEST(test_small_files) {
    char buf[64], err[512], path[128];
    ck_assert_int_eq(io_write_atomic(dir, "RUN_ID", "0123abcd\n", err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/RUN_ID", dir);
    ck_assert_int_eq(io_read_small(path, buf, sizeof buf, err, sizeof err), 9);
    ck_assert_str_eq(buf, "0123abcd\n");
    /* at most cap - 1 bytes */
    ck_assert_int_eq(io_read_small(path, buf, 4, err, sizeof err), 3);
    ck_assert_str_eq(buf, "012");
    snprintf(path, sizeof path, "%s/RUN_ID.tmp", dir);
    ck_assert_int_eq(access(path, F_OK), -1);
    /* a stale .tmp that is a FIFO is replaced, not opened */
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    ck_assert_int_eq(io_write_atomic(dir, "RUN_ID", "x\n", err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/sub/deeper", dir);
    ck_assert_int_eq(io_mkdirs(path, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/RUN_ID/below", dir);
    ck_assert_int_eq(io_mkdirs(path, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "cannot create (Not a directory)") != NULL, "%s", err);
    snprintf(path, sizeof path, "%s/RUN_ID", dir);
    /* 1 where the file system reserves (ext4, tmpfs), 0 where it cannot */
    ck_assert_int_ge(io_file_reserve(path, 1 << 20, err, sizeof err), 0);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_size, 1 << 20);
}
END_TEST

/* A child process holds the lock; the parent is refused with the holder's line until the child
 * is gone, whether the child's lock is exclusive or shared. */
START_TEST(test_lock_between_processes) {
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    int go[2], ready[2];
    ck_assert_int_eq(pipe(go), 0);
    ck_assert_int_eq(pipe(ready), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        char e[256], c;
        int fd = io_lock_exclusive(path, "memtrain pid child on host test", e, sizeof e);
        if (write(ready[1], "x", 1) != 1 || fd < 0) _exit(1);
        if (read(go[0], &c, 1) != 1) _exit(1); /* then share it */
        if (io_lock_share(fd, path, e, sizeof e) != fd) _exit(1);
        if (write(ready[1], "y", 1) != 1) _exit(1);
        if (read(go[0], &c, 1) != 1) _exit(1); /* then end */
        _exit(0);
    }
    char c;
    ck_assert_int_eq(read(ready[0], &c, 1), 1);
    ck_assert_int_eq(io_lock_exclusive(path, "parent", err, sizeof err), -1);
    ck_assert_msg(strstr(err, "/LOCK: held by memtrain pid child on host test") != NULL, "%s", err);
    ck_assert_int_eq(write(go[1], "s", 1), 1);
    ck_assert_int_eq(read(ready[0], &c, 1), 1);
    ck_assert_int_eq(io_lock_exclusive(path, "parent", err, sizeof err), -1);
    /* shared locks mix: another rank of the same run takes its share */
    int shared = io_lock_share(-1, path, err, sizeof err);
    ck_assert_int_ge(shared, 0);
    close(shared);
    ck_assert_int_eq(write(go[1], "e", 1), 1);
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* the child's line is a holder's: written over by the next holder */
    int fd = io_lock_exclusive(path, "memtrain pid parent on host test", err, sizeof err);
    ck_assert_msg(fd >= 0, "%s", err);
    close(fd);
}
END_TEST

/* A file under the lock's name that no holder wrote is someone's: refused, and left as it was. */
START_TEST(test_lock_foreign_file) {
    char path[128], err[512], back[64] = "";
    snprintf(path, sizeof path, "%s/LOCK", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("my notes\nsecond line\n", f);
    fclose(f);
    ck_assert_int_eq(io_lock_exclusive(path, "memtrain pid 1 on host test", err, sizeof err), -1);
    ck_assert_msg(strstr(err, "/LOCK: not a lock file of this program (it holds 'my notes'): "
                             "move it away") != NULL, "%s", err);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t got = fread(back, 1, sizeof back - 1, f);
    fclose(f);
    back[got] = '\0';
    ck_assert_str_eq(back, "my notes\nsecond line\n");
    /* an empty file (a lock made and never written) is taken */
    f = fopen(path, "w");
    fclose(f);
    int fd = io_lock_exclusive(path, "memtrain pid 1 on host test", err, sizeof err);
    ck_assert_msg(fd >= 0, "%s", err);
    close(fd);
}
END_TEST

static Suite *files_suite(void) {
    Suite *s = suite_create("files");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_escape);
    tcase_add_test(tc, test_not_regular);
    tcase_add_test(tc, test_small_files);
    tcase_add_test(tc, test_lock_between_processes);
    tcase_add_test(tc, test_lock_foreign_file);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(files_suite()); }
