/* Table-parallel exchanges: rows of hashed keys fetched from their owner ranks, and personalised all-to-alls of words (lookups, partial sums, gradient pushes), read in place on a node. */
#ifndef MEMTRAIN_COMM_EXCHANGE_H
#define MEMTRAIN_COMM_EXCHANGE_H

#include <stdint.h>

#include "comm/comm.h"

/* A table row lives on its shard's owner rank (README, "Distribution"). A key is an int64 the
 * caller encodes (for example (table unit << 32) | bucket); its data is W floats, which may be
 * several table rows that share the key (the Q, K and V tables of one chunk).
 *
 *   comm_exchange *x = comm_exchange_create(c);
 *   comm_exchange_fetch(x, keys, owner, n, W, rows, serve_rows, store);    // forward
 *   comm_exchange_free(x);                                                 // before comm_finalize
 *
 * A fetch is collective over the context's communicator: every rank calls it in the same
 * order with the same W, also a rank with n = 0. It is an MPI_Alltoall of a small header per
 * peer (key count, W, which exchange) and two MPI_Alltoallv (keys, then rows). A rank that
 * finds a mismatched W or exchange kind in a header aborts the job, since the ranks have lost
 * step with each other. Gradients go back to the owners as words (comm_words, below). */
typedef struct comm_exchange comm_exchange;

/* Bytes of the header every call sends to each other rank (three ints). */
enum { COMM_EXCHANGE_HEADER_BYTES = 12 };

/* Buffers and counters for exchanges over c, which must outlive the result. Never returns NULL.
 * Release with comm_exchange_free. */
comm_exchange *comm_exchange_create(comm_ctx *c);
/* Releases buffers and cached MPI datatypes; call before comm_finalize. NULL is fine. */
void comm_exchange_free(comm_exchange *x);
/* Gives back the buffers the exchanges grew to, when they hold more than `keep` bytes
 * together (a caller bounding its memory calls it after a large exchange). */
void comm_exchange_trim(comm_exchange *x, size_t keep);

/* Owner-side callback of a fetch: fill out (m, W) with the data of keys (m), all owned by this
 * rank. The keys are the requests of every source rank (this one included) concatenated in
 * increasing source rank, each source's keys in the order that source listed them. */
typedef void (*comm_exchange_serve_fn)(void *ctx, const int64_t *keys, int m, float *out);

/* Forward lookup. keys (n) are this rank's keys, each once (duplicates are fetched twice);
 * owner (n) their owner ranks in [0, P). On return rows (n, W) holds the data of key i in
 * row i. serve is called at most once per call, and not at all when no rank asks this rank
 * for anything. keys, owner and rows may be NULL when n = 0. W >= 1. Aborts (LAYER_ASSERT)
 * on an owner out of range or when the keys this rank must serve exceed MPI's int counts. */
void comm_exchange_fetch(comm_exchange *x, const int64_t *keys, const int *owner, int n, int W,
                         float *rows, comm_exchange_serve_fn serve, void *ctx);

/* ---- personalised all-to-all of 4-byte words, blocking or overlapped ----
 *
 *   comm_words *w = comm_words_create(x);
 *   uint32_t *buf = comm_words_buffer(w, nwords);   // NULL: pack where the caller likes
 *   ... pack rank 0's words, then rank 1's, ... into buf ...
 *   comm_words_start(w, buf, scount);               // scount (P): words for each rank, in order
 *   ... compute ...                                  // the payload moves meanwhile
 *   const int *rc;
 *   comm_words_wait(w, &rc);
 *   const uint32_t *in = comm_words_from(w, p);     // rank p's rc[p] words
 *   comm_words_free(w);
 *
 * Collective over the exchange's communicator: every rank starts and waits the same
 * exchanges in the same order. The counts are agreed with a blocking MPI_Alltoall. The words
 * move with MPI_Ialltoallv, or, where the exchange reads in place (comm_exchange_share_node,
 * every rank on one node), not at all: each rank's send buffer is a shared-memory object its
 * peers map read-only, and comm_words_from points into the sender's. The send buffer must
 * stay unchanged until the wait; the received words are valid until this rank's next
 * comm_words_buffer or start on the handle, or its free. Bytes sent to other ranks (counts header included), seconds
 * spent in the calls and calls count into the exchange's counters. A handle holds one
 * exchange at a time. */
typedef struct comm_words comm_words;

comm_words *comm_words_create(comm_exchange *x);
void comm_words_free(comm_words *w); /* NULL is fine; waits for an exchange in flight */
/* Where to pack the next start's n words so that they are read in place: the handle's
 * shared object, once every peer is done with the words this rank sent last (the call
 * waits for that, and tells the peers this rank is done with theirs, so the words it
 * received are no longer valid). NULL when the handle does not read in place or n does not
 * fit; start then copies or sends the words from wherever they are. Valid until the start
 * after it; to write there again after that start, ask again. */
uint32_t *comm_words_buffer(comm_words *w, size_t n);
void comm_words_start(comm_words *w, const void *send, const int64_t *scount);
/* Bounds the bytes of one exchange this rank packs in the handle's shared object (at most
 * and by default its size, 512 MiB); a larger exchange goes through MPI. */
void comm_words_limit(comm_words *w, size_t bytes);
/* Lets MPI move the payload along; returns 1 when it has arrived (comm_words_wait then
 * returns at once). */
int comm_words_test(comm_words *w);
/* Waits for the words; *rcount (P), if not NULL, gets how many came from each rank. */
void comm_words_wait(comm_words *w, const int **rcount);
/* Rank p's words of the last exchange (after its wait), valid until the next
 * comm_words_buffer, start or free on the handle. */
const uint32_t *comm_words_from(const comm_words *w, int p);

/* Lets the comm_words handles of x read in place what the other ranks of the node send:
 * on, when every rank of x is on one node and each can map the others' shared-memory
 * objects (/dev/shm); else, or off, every exchange goes through MPI. Handles set themselves
 * up at their first start; a rank that cannot (no /dev/shm, no space) makes all fall back to
 * MPI for that handle, and an exchange too large for the object goes through MPI alone.
 * Collective. Returns whether handles will try. */
int comm_exchange_share_node(comm_exchange *x, int on);

/* Counters since create or the last reset: bytes this rank sent to other ranks (headers, keys
 * at 8 bytes, rows at 4W bytes; data a rank keeps for itself is not counted), wall seconds
 * spent inside the all-to-all calls, and the number of fetch and push calls. Any output
 * pointer may be NULL. */
void comm_exchange_stats(const comm_exchange *x, int64_t *bytes_sent, double *seconds,
                         int64_t *calls);
void comm_exchange_reset_stats(comm_exchange *x);
/* Of the bytes sent since create or the last reset: the words this rank's peers read in
 * place from its shared memory (comm_words on one node), not copied. */
int64_t comm_exchange_inplace_bytes(const comm_exchange *x);
/* Adds an exchange made outside this module (an all-reduce of table gradients) to the
 * counters: bytes sent to other ranks, seconds, one call. */
void comm_exchange_count(comm_exchange *x, int64_t bytes, double seconds);

/* 1 if a count of n items (rows or keys) can be an MPI int count, else 0. */
int comm_exchange_check_count(int64_t n);
/* Start offsets of P consecutive blocks of counts (P) items, into displs (P), as
 * MPI_Alltoallv wants them. Returns the total, or -1 when an offset or the total does not
 * fit an int (MPI's displacements are int as well as its counts); displs is then partly
 * written. Exposed so its limits can be tested without allocating 2^31 rows. */
int64_t comm_exchange_offsets(const int *counts, int P, int *displs);

#endif
