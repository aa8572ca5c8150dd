/* MPI wrappers: context, reductions, broadcast, collective error handling. */
#include "comm/comm.h"
#include "comm/comm_internal.h"

#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/common.h"

struct comm_ctx {
    MPI_Comm comm;
    int rank, size;
    int started_mpi;
};


comm_ctx *comm_init(int *argc, char ***argv) {
    comm_ctx *c = layer_xcalloc(1, sizeof(*c));
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        MPI_Init(argc, argv);
        c->started_mpi = 1;
    }
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
    MPI_Comm_free(&c->comm);
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

void comm_exit_error(comm_ctx *c, const char *msg) {
    if (c->rank == 0) {
        fprintf(stderr, "memtrain: %s\n", msg);
        fflush(stderr);
    }
    comm_finalize(c);
    exit(2);
}

void comm_abort(comm_ctx *c, const char *msg) {
    fprintf(stderr, "memtrain: rank %d: %s\n", c ? c->rank : -1, msg);
    fflush(stderr);
    MPI_Abort(c ? c->comm : MPI_COMM_WORLD, 3);
    exit(3);
}

void comm_print0(const comm_ctx *c, const char *fmt, ...) {
    if (c->rank != 0) return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}
MPI_Comm comm_mpi(const comm_ctx *c) { return c->comm; }
