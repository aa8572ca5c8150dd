/* The only gateway to MPI: a communicator context and collectives named by what they mean. */
#ifndef MEMTRAIN_COMM_H
#define MEMTRAIN_COMM_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A process group. Every function takes it explicitly; nothing below uses MPI_COMM_WORLD
 * except comm_init, which duplicates it. */
typedef struct comm_ctx comm_ctx;

/* Starts MPI (if not started) and returns the world group. Never returns NULL. */
comm_ctx *comm_init(int *argc, char ***argv);
/* A group of this process alone (for one-rank reference runs next to a distributed one).
 * Release with comm_finalize, which leaves MPI running since this context did not start it. */
comm_ctx *comm_self(const comm_ctx *parent);
/* Releases the context and finalizes MPI if comm_init started it. NULL is fine. */
void comm_finalize(comm_ctx *c);
int comm_rank(const comm_ctx *c);
int comm_size(const comm_ctx *c);
double comm_time(void);

/* In-place sums over all ranks (every rank gets the result). Any length: large buffers are
 * reduced in chunks so MPI's int counts cannot overflow. */
void comm_sum_floats(comm_ctx *c, float *buf, size_t n);
void comm_sum_doubles(comm_ctx *c, double *buf, size_t n);
void comm_sum_i64(comm_ctx *c, int64_t *buf, int n);
void comm_max_doubles(comm_ctx *c, double *buf, int n);
void comm_barrier(comm_ctx *c);
/* Copies n bytes from root's buffer to every rank's. */
void comm_broadcast(comm_ctx *c, void *buf, size_t n, int root);

/* Collective error agreement: every rank says whether it failed (with a one-line message).
 * Returns 1 on every rank if any rank failed, and then `msg` holds the message of the lowest
 * failing rank on every rank. Returns 0 when all succeeded. */
int comm_any_failed(comm_ctx *c, int failed, char *msg, size_t n);
/* A user-facing error known to all ranks: rank 0 prints "memtrain: <msg>" (escaped with
 * comm_escape, so it stays one line), every rank finalizes MPI and exits with status 2. When
 * a library left this process unable to finalize (comm_mark_unclean on any rank), rank 0
 * ends the job with MPI_Abort and status 2 after the message instead. */
void comm_exit_error(comm_ctx *c, const char *msg);
/* A warning or note from rank 0 ("memtrain: <msg>", escaped, on stderr); others print
 * nothing. Not collective. */
void comm_warn0(const comm_ctx *c, const char *msg);
/* Records that a library holds a resource MPI_Finalize would make it release and that
 * releasing it would crash (HDF5 after a file close failed on a full disk): comm_exit_error
 * and comm_finalize then end the job with MPI_Abort rather than finalize. Process-wide. */
void comm_mark_unclean(void);
/* Records that a library may print its own trouble while MPI finalises or the process exits
 * (HDF5 after reading a damaged file: "HDF5: infinite loop closing library" and a line of
 * interface names, on every rank). The run has said what was wrong in its own line by then,
 * or recovered (a resume that fell back to an older checkpoint), so comm_finalize sends
 * stderr to /dev/null from there on. Process-wide. */
void comm_quiet_finalize(void);
/* Number of ranks of c on this node (that share its memory). Collective. */
int comm_node_size(comm_ctx *c);
/* The ranks of c on this node: same (size of c) gets 1 for each of them (this rank too), 0
 * for the others; *token a number the same on every rank of the node and different from other
 * nodes' and jobs' (for names of shared objects the node's ranks agree on). Returns whether
 * every rank of c is on this node, the same answer on every rank. Collective. */
int comm_node_ranks(comm_ctx *c, unsigned char *same, uint64_t *token);

/* Copies src into dst (n > 0 bytes, always NUL-terminated, truncated to fit) with what could
 * break a one-line message escaped: control bytes as \n, \r, \t or \xNN, DEL and bytes that
 * are not UTF-8 as \xNN, the backslash as \\. Valid UTF-8 text is kept. Returns dst. Used
 * wherever a message holding user values (paths, config values, attributes read from files)
 * is printed. */
char *comm_escape(char *dst, size_t n, const char *src);
/* Rank-0-only printf (other ranks print nothing), also written to the transcript. */
void comm_print0(const comm_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* 0 when everything this process printed to its standard output (by comm_print0 or stdio)
 * reached it, else the reason the first failed write failed (an errno value; EIO when stdio
 * kept none). Flushes the standard output first. */
int comm_stdout_errno(void);
void comm_vprint0(const comm_ctx *c, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* From now on rank 0's comm_print0 output and its one-line errors and warnings are also written
 * to log (a run's train.log), starting with what they printed since the process started; NULL
 * stops that (before log is closed). Other ranks: nothing. */
void comm_transcript(const comm_ctx *c, FILE *log);

#endif
