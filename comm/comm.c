/* MPI wrappers: context, reductions, broadcast, collective error handling. */
#include "comm/comm.h"
#include "comm/comm_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "layers/common.h"

struct comm_ctx {
    MPI_Comm comm;
    int rank, size;
    int started_mpi;
};

/* Set when finalizing would crash a library (see comm_mark_unclean). */
static volatile int unclean = 0;

void comm_mark_unclean(void) { unclean = 1; }

static volatile int quiet_finalize = 0;

void comm_quiet_finalize(void) { quiet_finalize = 1; }

/* Whether any rank of c is unclean. Collective. */
static int any_unclean(comm_ctx *c) {
    int mine = unclean, any = 0;
    MPI_CHECK(c->comm, MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, c->comm));
    return any;
}

static void print_line(const char *prefix, const char *msg);

/* An allocation that fails on one rank ends the job: the others would wait for it in their
 * next collective for ever. */
static void abort_job(void) { MPI_Abort(MPI_COMM_WORLD, 2); }

comm_ctx *comm_init(int *argc, char ***argv) {
    comm_ctx *c = layer_xcalloc(1, sizeof(*c));
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        MPI_Init(argc, argv);
        c->started_mpi = 1;
    }
    layer_on_out_of_memory(abort_job);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_CHECK(MPI_COMM_WORLD, MPI_Comm_dup(MPI_COMM_WORLD, &c->comm));
    MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(c->comm, &c->rank);
    MPI_Comm_size(c->comm, &c->size);
    return c;
}

comm_ctx *comm_self(const comm_ctx *parent) {
    (void)parent;
    comm_ctx *c = layer_xcalloc(1, sizeof(*c));
    MPI_CHECK(MPI_COMM_WORLD, MPI_Comm_dup(MPI_COMM_SELF, &c->comm));
    MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN);
    c->rank = 0;
    c->size = 1;
    return c;
}

void comm_finalize(comm_ctx *c) {
    if (!c) return;
    layer_on_out_of_memory(NULL); /* MPI_Abort is no way out once MPI is finalized */
    if (c->started_mpi && any_unclean(c)) {
        if (c->rank == 0)
            print_line("", "a library could not release a file (see above): ending without MPI "
                           "finalisation");
        comm_barrier(c);
        if (c->rank == 0) MPI_Abort(c->comm, 3);
        for (;;) MPI_Barrier(c->comm);
    }
    MPI_Comm_free(&c->comm);
    if (quiet_finalize) {
        fflush(stderr);
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
    }
    if (c->started_mpi) MPI_Finalize();
    free(c);
}

int comm_rank(const comm_ctx *c) { return c->rank; }
int comm_size(const comm_ctx *c) { return c->size; }
double comm_time(void) { return MPI_Wtime(); }

enum { CHUNK = 1 << 28 };

void comm_sum_floats(comm_ctx *c, float *buf, size_t n) {
    for (size_t off = 0; off < n; off += CHUNK) {
        int len = (int)(n - off < CHUNK ? n - off : CHUNK);
        MPI_CHECK(c->comm, MPI_Allreduce(MPI_IN_PLACE, buf + off, len, MPI_FLOAT, MPI_SUM, c->comm));
    }
}

void comm_sum_doubles(comm_ctx *c, double *buf, size_t n) {
    for (size_t off = 0; off < n; off += CHUNK) {
        int len = (int)(n - off < CHUNK ? n - off : CHUNK);
        MPI_CHECK(c->comm, MPI_Allreduce(MPI_IN_PLACE, buf + off, len, MPI_DOUBLE, MPI_SUM, c->comm));
    }
}

void comm_sum_i64(comm_ctx *c, int64_t *buf, int n) {
    MPI_CHECK(c->comm, MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_INT64_T, MPI_SUM, c->comm));
}

void comm_max_doubles(comm_ctx *c, double *buf, int n) {
    MPI_CHECK(c->comm, MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_MAX, c->comm));
}

void comm_barrier(comm_ctx *c) { MPI_CHECK(c->comm, MPI_Barrier(c->comm)); }

void comm_broadcast(comm_ctx *c, void *buf, size_t n, int root) {
    for (size_t off = 0; off < n; off += CHUNK) {
        int len = (int)(n - off < CHUNK ? n - off : CHUNK);
        MPI_CHECK(c->comm, MPI_Bcast((char *)buf + off, len, MPI_BYTE, root, c->comm));
    }
}

int comm_any_failed(comm_ctx *c, int failed, char *msg, size_t n) {
    /* lowest failing rank, or size when none failed */
    int mine = failed ? c->rank : c->size, first = c->size;
    MPI_CHECK(c->comm, MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, c->comm));
    if (first == c->size) return 0;
    char line[512];
    memset(line, 0, sizeof(line));
    if (c->rank == first) snprintf(line, sizeof(line), "%s", msg);
    MPI_CHECK(c->comm, MPI_Bcast(line, sizeof(line), MPI_CHAR, first, c->comm));
    snprintf(msg, n, "%s", line);
    return 1;
}

/* Length of the valid UTF-8 sequence of 2..4 bytes at s, or 0. */
static int utf8_len(const unsigned char *s) {
    unsigned char c = s[0];
    int len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range excludes overlong forms,
                                           surrogates and code points above U+10FFFF */
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
    for (int i = 1; i < len; i++) {
        unsigned char b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf)) return 0;
    }
    return len;
}

char *comm_escape(char *dst, size_t n, const char *src) {
    size_t o = 0;
    const unsigned char *s = (const unsigned char *)src;
    while (*s) {
        char esc[8];
        int len = 1, w;
        if (*s == '\\') w = snprintf(esc, sizeof esc, "\\\\");
        else if (*s == '\n') w = snprintf(esc, sizeof esc, "\\n");
        else if (*s == '\r') w = snprintf(esc, sizeof esc, "\\r");
        else if (*s == '\t') w = snprintf(esc, sizeof esc, "\\t");
        else if (*s < 0x20 || *s == 0x7f) w = snprintf(esc, sizeof esc, "\\x%02x", *s);
        else if (*s < 0x80) w = snprintf(esc, sizeof esc, "%c", *s);
        else if ((len = utf8_len(s)) > 0) w = snprintf(esc, sizeof esc, "%.*s", len, (const char *)s);
        else {
            len = 1;
            w = snprintf(esc, sizeof esc, "\\x%02x", *s);
        }
        if (o + (size_t)w + 1 > n) break; /* never half an escape or half a character */
        memcpy(dst + o, esc, (size_t)w);
        o += (size_t)w;
        s += len;
    }
    if (n > 0) dst[o < n ? o : n - 1] = '\0';
    return dst;
}

/* Rank 0's transcript (a run's train.log): once set, what comm_print0 and the error lines
 * print is also written there, starting with what was printed before it was set (held, up to
 * TRANSCRIPT_HOLD bytes: the memory estimate and the plan come before the run directory is
 * opened). One per process, like the flags above. */
enum { TRANSCRIPT_HOLD = 1 << 16 };
static FILE *transcript;
static char *held;
static size_t held_len;
static int held_full; /* past the hold: nothing more is held, so the log has no gaps */

static void transcribe(const char *text, size_t len) {
    if (transcript) {
        fwrite(text, 1, len, transcript);
        fflush(transcript);
        return;
    }
    if (held_full) return;
    if (held_len + len > TRANSCRIPT_HOLD || (!held && !(held = malloc(TRANSCRIPT_HOLD)))) {
        held_full = 1; /* a command that never opens one */
        return;
    }
    memcpy(held + held_len, text, len);
    held_len += len;
}

void comm_transcript(const comm_ctx *c, FILE *log) {
    if (c->rank != 0) return;
    transcript = log;
    if (log && held_len) transcribe(held, held_len);
    free(held);
    held = NULL;
    held_len = 0;
}

static void print_line(const char *prefix, const char *msg) {
    char line[2048], out[2200];
    int n = snprintf(out, sizeof out, "memtrain: %s%s\n", prefix,
                     comm_escape(line, sizeof line, msg));
    fputs(out, stderr);
    fflush(stderr);
    transcribe(out, n < (int)sizeof out ? (size_t)n : sizeof out - 1);
}

void comm_warn0(const comm_ctx *c, const char *msg) {
    if (c->rank == 0) print_line("", msg);
}

int comm_node_size(comm_ctx *c) {
    MPI_Comm node;
    MPI_CHECK(c->comm, MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    int size = 1;
    MPI_Comm_size(node, &size);
    MPI_Comm_free(&node);
    return size;
}

int comm_node_ranks(comm_ctx *c, unsigned char *same, uint64_t *token) {
    MPI_Comm node;
    MPI_CHECK(c->comm, MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    int size = 1;
    MPI_Comm_size(node, &size);
    int *ranks = calloc((size_t)size, sizeof(int));
    if (!ranks) MPI_Abort(c->comm, 2);
    MPI_CHECK(c->comm, MPI_Allgather(&c->rank, 1, MPI_INT, ranks, 1, MPI_INT, node));
    memset(same, 0, (size_t)c->size);
    for (int i = 0; i < size; i++) same[ranks[i]] = 1;
    free(ranks);
    /* the node's first rank: its pid and the time, mixed (a job's ranks on one node differ in
       pid; the time tells apart runs whose pids repeat) */
    uint64_t v = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ ((uint64_t)c->rank << 20);
    MPI_CHECK(c->comm, MPI_Bcast(&v, 1, MPI_UINT64_T, 0, node));
    *token = v;
    MPI_Comm_free(&node);
    int all = size == c->size, every = 0;
    MPI_CHECK(c->comm, MPI_Allreduce(&all, &every, 1, MPI_INT, MPI_MIN, c->comm));
    return every;
}

void comm_exit_error(comm_ctx *c, const char *msg) {
    if (c->rank == 0) print_line("", msg);
    if (any_unclean(c)) {
        /* the message is out; MPI_Finalize would crash in the library's cleanup */
        comm_barrier(c);
        if (c->rank == 0) MPI_Abort(c->comm, 2);
        for (;;) MPI_Barrier(c->comm); /* until MPI_Abort ends this rank too */
    }
    comm_finalize(c);
    exit(2);
}

/* The reason the first of rank 0's prints failed to reach its standard output, 0 if none. */
static int stdout_errno;

int comm_stdout_errno(void) {
    errno = 0;
    if (fflush(stdout) != 0 && !stdout_errno) stdout_errno = errno ? errno : EIO;
    if (ferror(stdout) && !stdout_errno) stdout_errno = EIO;
    return stdout_errno;
}

void comm_vprint0(const comm_ctx *c, const char *fmt, va_list ap) {
    if (c->rank != 0) return;
    char small[1024], *text = small;
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    if (n < 0) {
        va_end(again);
        return;
    }
    if ((size_t)n >= sizeof small) {
        text = malloc((size_t)n + 1);
        if (text) {
            vsnprintf(text, (size_t)n + 1, fmt, again);
        } else { /* cut short rather than lost */
            text = small;
            n = (int)sizeof small - 1;
        }
    }
    va_end(again);
    errno = 0;
    if ((fputs(text, stdout) < 0 || fflush(stdout) != 0) && !stdout_errno)
        stdout_errno = errno ? errno : EIO;
    transcribe(text, (size_t)n);
    if (text != small) free(text);
}

void comm_print0(const comm_ctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    comm_vprint0(c, fmt, ap);
    va_end(ap);
}
MPI_Comm comm_mpi(const comm_ctx *c) { return c->comm; }
