/* Table-parallel row exchange over MPI_Alltoallv: keys grouped by owner, rows or gradients in reply. */
#include "comm/exchange.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm_internal.h"
#include "layers/common.h"


/* Which exchange a header belongs to: a rank in fetch while a peer is in push must be caught,
 * since the message sizes could match and silently mix keys with gradients. */
enum { OP_FETCH = 0x4645, OP_PUSH = 0x5055 };
enum { HDR_INTS = 3 };
_Static_assert(COMM_EXCHANGE_HEADER_BYTES == HDR_INTS * sizeof(int), "header size");

typedef struct row_type {
    int W;
    MPI_Datatype t;
} row_type;

struct comm_exchange {
    MPI_Comm comm;
    int rank, P;
    /* per peer (P): key counts and offsets of the grouped send and receive buffers */
    int *scount, *sdispl, *rcount, *rdispl, *pos;
    int *shdr, *rhdr; /* (P, HDR_INTS) */
    /* grown on demand, kept between calls */
    int *slot;   /* (n) place of caller's key i in the owner-grouped order */
    int grouped; /* slot[i] == i for every i: the caller's keys came grouped by owner */
    int64_t *skeys, *rkeys;
    float *sbuf, *rbuf;
    size_t slot_cap, skeys_cap, rkeys_cap, sbuf_cap, rbuf_cap;
    /* committed row datatypes, one per W seen, so Alltoallv counts are in rows, not floats */
    row_type *types;
    int ntypes, types_cap;
    int64_t bytes, calls;
    double seconds;
};

comm_exchange *comm_exchange_create(comm_ctx *c) {
    comm_exchange *x = layer_xcalloc(1, sizeof(*x));
    x->comm = comm_mpi(c);
    x->rank = comm_rank(c);
    x->P = comm_size(c);
    size_t P = (size_t)x->P;
    x->scount = layer_xcalloc(P, sizeof(int));
    x->sdispl = layer_xcalloc(P, sizeof(int));
    x->rcount = layer_xcalloc(P, sizeof(int));
    x->rdispl = layer_xcalloc(P, sizeof(int));
    x->pos = layer_xcalloc(P, sizeof(int));
    x->shdr = layer_xcalloc(P * HDR_INTS, sizeof(int));
    x->rhdr = layer_xcalloc(P * HDR_INTS, sizeof(int));
    return x;
}

/* A buffer of grow's, cap elements of size sz (NULL is fine). */
static void release(void *buf, size_t cap, size_t sz) { layer_unmap(buf, cap * sz); }

static void release_buffers(comm_exchange *x) {
    release(x->slot, x->slot_cap, sizeof(int));
    release(x->skeys, x->skeys_cap, sizeof(int64_t));
    release(x->rkeys, x->rkeys_cap, sizeof(int64_t));
    release(x->sbuf, x->sbuf_cap, sizeof(float));
    release(x->rbuf, x->rbuf_cap, sizeof(float));
}

void comm_exchange_free(comm_exchange *x) {
    if (!x) return;
    for (int i = 0; i < x->ntypes; i++) MPI_CHECK(x->comm, MPI_Type_free(&x->types[i].t));
    free(x->types);
    free(x->scount);
    free(x->sdispl);
    free(x->rcount);
    free(x->rdispl);
    free(x->pos);
    free(x->shdr);
    free(x->rhdr);
    release_buffers(x);
    free(x);
}

void comm_exchange_trim(comm_exchange *x, size_t keep) {
    size_t held = x->slot_cap * sizeof(int) + (x->skeys_cap + x->rkeys_cap) * sizeof(int64_t) +
                  (x->sbuf_cap + x->rbuf_cap) * sizeof(float);
    if (held <= keep) return;
    release_buffers(x);
    x->slot = NULL;
    x->skeys = x->rkeys = NULL;
    x->sbuf = x->rbuf = NULL;
    x->slot_cap = x->skeys_cap = x->rkeys_cap = x->sbuf_cap = x->rbuf_cap = 0;
}

void comm_exchange_stats(const comm_exchange *x, int64_t *bytes_sent, double *seconds,
                         int64_t *calls) {
    if (bytes_sent) *bytes_sent = x->bytes;
    if (seconds) *seconds = x->seconds;
    if (calls) *calls = x->calls;
}

void comm_exchange_reset_stats(comm_exchange *x) {
    x->bytes = 0;
    x->seconds = 0.0;
    x->calls = 0;
}

void comm_exchange_count(comm_exchange *x, int64_t bytes, double seconds) {
    x->bytes += bytes;
    x->seconds += seconds;
    x->calls++;
}

int comm_exchange_check_count(int64_t n) { return n >= 0 && n <= INT_MAX; }

int64_t comm_exchange_offsets(const int *counts, int P, int *displs) {
    int64_t total = 0;
    for (int p = 0; p < P; p++) {
        if (!comm_exchange_check_count(total) || !comm_exchange_check_count(counts[p]))
            return -1;
        displs[p] = (int)total;
        total += counts[p];
    }
    return comm_exchange_check_count(total) ? total : -1;
}

/* Makes *buf hold at least need elements of size sz. The old contents are not kept: every
 * caller overwrites the buffer completely. Never shrinks, so steady-state steps allocate
 * nothing. Mappings of their own (layer_xmap): the large ones in huge pages, which the
 * shared-memory transport pins and copies a huge page at a time. */
static void grow(void **buf, size_t *cap, size_t need, size_t sz) {
    if (need <= *cap && *buf) return;
    size_t n = need > 2 * *cap ? need : 2 * *cap;
    if (n == 0) n = 1; /* MPI gets a valid pointer even for empty exchanges */
    release(*buf, *cap, sz);
    *buf = layer_xmap(n * sz);
    *cap = n;
}

static MPI_Datatype row_type_of(comm_exchange *x, int W) {
    for (int i = 0; i < x->ntypes; i++)
        if (x->types[i].W == W) return x->types[i].t;
    if (x->ntypes == x->types_cap) {
        int cap = x->types_cap ? 2 * x->types_cap : 4;
        row_type *t = layer_xmalloc((size_t)cap * sizeof(*t));
        if (x->ntypes) memcpy(t, x->types, (size_t)x->ntypes * sizeof(*t));
        free(x->types);
        x->types = t;
        x->types_cap = cap;
    }
    row_type *r = &x->types[x->ntypes++];
    r->W = W;
    MPI_CHECK(x->comm, MPI_Type_contiguous(W, MPI_FLOAT, &r->t));
    MPI_CHECK(x->comm, MPI_Type_commit(&r->t));
    return r->t;
}

/* Shared first half of fetch and push: groups the caller's keys by owner (stable, so each
 * owner sees them in the caller's order), agrees on counts with every peer and sends the keys.
 * Afterwards skeys/slot hold the grouped keys, rkeys the keys of every source in source order,
 * and the counts and offsets describe both sides. Returns the number of keys received. */
static int route_keys(comm_exchange *x, const int64_t *keys, const int *owner, int n, int W,
                      int op) {
    int P = x->P;
    LAYER_ASSERT(n >= 0 && W >= 1);
    LAYER_ASSERT(n == 0 || (keys && owner));
    x->calls++;

    memset(x->scount, 0, (size_t)P * sizeof(int));
    for (int i = 0; i < n; i++) {
        LAYER_ASSERT(owner[i] >= 0 && owner[i] < P && "exchange: key owner is not a rank");
        x->scount[owner[i]]++;
    }
    /* n is an int, so the send side always fits */
    LAYER_ASSERT(comm_exchange_offsets(x->scount, P, x->sdispl) == n);
    grow((void **)&x->slot, &x->slot_cap, (size_t)n, sizeof(int));
    grow((void **)&x->skeys, &x->skeys_cap, (size_t)n, sizeof(int64_t));
    memcpy(x->pos, x->sdispl, (size_t)P * sizeof(int));
    x->grouped = 1;
    for (int i = 0; i < n; i++) {
        int s = x->pos[owner[i]]++;
        x->slot[i] = s;
        x->skeys[s] = keys[i];
        x->grouped &= s == i;
    }

    for (int p = 0; p < P; p++) {
        x->shdr[HDR_INTS * p + 0] = x->scount[p];
        x->shdr[HDR_INTS * p + 1] = W;
        x->shdr[HDR_INTS * p + 2] = op;
    }
    double t0 = MPI_Wtime();
    MPI_CHECK(x->comm,
              MPI_Alltoall(x->shdr, HDR_INTS, MPI_INT, x->rhdr, HDR_INTS, MPI_INT, x->comm));
    x->seconds += MPI_Wtime() - t0;
    for (int p = 0; p < P; p++) {
        x->rcount[p] = x->rhdr[HDR_INTS * p + 0];
        LAYER_ASSERT(x->rhdr[HDR_INTS * p + 2] == op &&
                     "exchange: ranks called fetch and push out of step");
        LAYER_ASSERT(x->rhdr[HDR_INTS * p + 1] == W && "exchange: ranks passed different W");
    }
    int64_t m = comm_exchange_offsets(x->rcount, P, x->rdispl);
    LAYER_ASSERT(m >= 0 && "exchange: keys requested from this rank exceed MPI's int counts; "
                           "use more ranks or fewer tokens per step");

    grow((void **)&x->rkeys, &x->rkeys_cap, (size_t)m, sizeof(int64_t));
    t0 = MPI_Wtime();
    MPI_CHECK(x->comm, MPI_Alltoallv(x->skeys, x->scount, x->sdispl, MPI_INT64_T, x->rkeys,
                                     x->rcount, x->rdispl, MPI_INT64_T, x->comm));
    x->seconds += MPI_Wtime() - t0;
    x->bytes += (int64_t)COMM_EXCHANGE_HEADER_BYTES * (P - 1) +
                (int64_t)sizeof(int64_t) * (n - x->scount[x->rank]);
    return (int)m;
}

void comm_exchange_fetch(comm_exchange *x, const int64_t *keys, const int *owner, int n, int W,
                         float *rows, comm_exchange_serve_fn serve, void *ctx) {
    int m = route_keys(x, keys, owner, n, W, OP_FETCH);
    size_t w = (size_t)W;
    grow((void **)&x->sbuf, &x->sbuf_cap, (size_t)m * w, sizeof(float));
    if (m > 0) serve(ctx, x->rkeys, m, x->sbuf);

    /* the replies retrace the requests: what came in from p goes back to p; keys that came
       grouped by owner (every key of a two-rank run) get their rows in place */
    if (!x->grouped) grow((void **)&x->rbuf, &x->rbuf_cap, (size_t)n * w, sizeof(float));
    float *in = x->grouped ? rows : x->rbuf;
    if (!in) in = x->sbuf; /* n = 0: MPI gets a valid pointer */
    MPI_Datatype row = row_type_of(x, W);
    double t0 = MPI_Wtime();
    MPI_CHECK(x->comm, MPI_Alltoallv(x->sbuf, x->rcount, x->rdispl, row, in, x->scount,
                                     x->sdispl, row, x->comm));
    x->seconds += MPI_Wtime() - t0;
    x->bytes += (int64_t)sizeof(float) * W * (m - x->rcount[x->rank]);

    if (!x->grouped)
        for (int i = 0; i < n; i++)
            memcpy(rows + (size_t)i * w, x->rbuf + (size_t)x->slot[i] * w, w * sizeof(float));
}

void comm_exchange_push(comm_exchange *x, const int64_t *keys, const int *owner,
                        const float *grads, int n, int W, comm_exchange_accumulate_fn accumulate,
                        void *ctx) {
    LAYER_ASSERT(n == 0 || grads);
    int m = route_keys(x, keys, owner, n, W, OP_PUSH);
    size_t w = (size_t)W;
    const float *out = grads; /* grouped by owner already: sent from where they are */
    if (!x->grouped || !grads) {
        grow((void **)&x->sbuf, &x->sbuf_cap, (size_t)n * w, sizeof(float));
        for (int i = 0; i < n; i++)
            memcpy(x->sbuf + (size_t)x->slot[i] * w, grads + (size_t)i * w, w * sizeof(float));
        out = x->sbuf;
    }

    grow((void **)&x->rbuf, &x->rbuf_cap, (size_t)m * w, sizeof(float));
    MPI_Datatype row = row_type_of(x, W);
    double t0 = MPI_Wtime();
    MPI_CHECK(x->comm, MPI_Alltoallv(out, x->scount, x->sdispl, row, x->rbuf, x->rcount,
                                     x->rdispl, row, x->comm));
    x->seconds += MPI_Wtime() - t0;
    x->bytes += (int64_t)sizeof(float) * W * (n - x->scount[x->rank]);

    for (int src = 0; src < x->P; src++)
        if (x->rcount[src] > 0)
            accumulate(ctx, src, x->rkeys + x->rdispl[src], x->rbuf + (size_t)x->rdispl[src] * w,
                       x->rcount[src]);
}

/* ---- words ---- */

struct comm_words {
    comm_exchange *x;
    MPI_Request req;
    int active;
    int *scount, *sdispl, *rcount, *rdispl; /* (P) in words */
    uint32_t *rbuf;
    size_t rbuf_cap;
};

comm_words *comm_words_create(comm_exchange *x) {
    comm_words *w = layer_xcalloc(1, sizeof(*w));
    size_t P = (size_t)x->P;
    w->x = x;
    w->req = MPI_REQUEST_NULL;
    w->scount = layer_xcalloc(P, sizeof(int));
    w->sdispl = layer_xcalloc(P, sizeof(int));
    w->rcount = layer_xcalloc(P, sizeof(int));
    w->rdispl = layer_xcalloc(P, sizeof(int));
    return w;
}

void comm_words_free(comm_words *w) {
    if (!w) return;
    if (w->active) comm_words_wait(w, NULL, NULL);
    free(w->scount);
    free(w->sdispl);
    free(w->rcount);
    free(w->rdispl);
    release(w->rbuf, w->rbuf_cap, sizeof(uint32_t));
    free(w);
}

void comm_words_start(comm_words *w, const void *send, const int64_t *scount) {
    comm_exchange *x = w->x;
    int P = x->P;
    LAYER_ASSERT(!w->active && "comm_words: an exchange is already in flight");
    x->calls++;
    for (int p = 0; p < P; p++) {
        LAYER_ASSERT(comm_exchange_check_count(scount[p]) && "comm_words: count exceeds MPI's int");
        w->scount[p] = (int)scount[p];
    }
    LAYER_ASSERT(comm_exchange_offsets(w->scount, P, w->sdispl) >= 0);
    double t0 = MPI_Wtime();
    MPI_CHECK(x->comm, MPI_Alltoall(w->scount, 1, MPI_INT, w->rcount, 1, MPI_INT, x->comm));
    int64_t m = comm_exchange_offsets(w->rcount, P, w->rdispl);
    LAYER_ASSERT(m >= 0 && "comm_words: words received exceed MPI's int counts");
    grow((void **)&w->rbuf, &w->rbuf_cap, (size_t)m, sizeof(uint32_t));
    MPI_CHECK(x->comm, MPI_Ialltoallv(send, w->scount, w->sdispl, MPI_UINT32_T, w->rbuf,
                                      w->rcount, w->rdispl, MPI_UINT32_T, x->comm, &w->req));
    x->seconds += MPI_Wtime() - t0;
    x->bytes += (int64_t)sizeof(int) * (P - 1) +
                (int64_t)sizeof(uint32_t) * ((int64_t)w->sdispl[P - 1] + w->scount[P - 1] -
                                             w->scount[x->rank]);
    w->active = 1;
}

int comm_words_test(comm_words *w) {
    if (!w->active) return 1;
    int done = 0;
    double t0 = MPI_Wtime();
    MPI_CHECK(w->x->comm, MPI_Test(&w->req, &done, MPI_STATUS_IGNORE));
    w->x->seconds += MPI_Wtime() - t0;
    return done;
}

const uint32_t *comm_words_wait(comm_words *w, const int **rcount, const int **rdispl) {
    if (w->active) {
        double t0 = MPI_Wtime();
        MPI_CHECK(w->x->comm, MPI_Wait(&w->req, MPI_STATUS_IGNORE));
        w->x->seconds += MPI_Wtime() - t0;
        w->active = 0;
    }
    if (rcount) *rcount = w->rcount;
    if (rdispl) *rdispl = w->rdispl;
    return w->rbuf;
}
