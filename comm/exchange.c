/* Table-parallel exchanges: row fetches over MPI_Alltoallv (keys grouped by owner, rows in reply), and words read in place from a node's shared memory or sent by MPI. */
#define _DEFAULT_SOURCE /* ftruncate, posix_fallocate */
#include "comm/exchange.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include "comm/comm_internal.h"
#include "layers/common.h"


/* Which exchange a header belongs to: a rank in a fetch while a peer is in another exchange
 * (a words header has the same size) must be caught, not mix keys with other data. */
enum { OP_FETCH = 0x4645 };
enum { HDR_INTS = 3 };
_Static_assert(COMM_EXCHANGE_HEADER_BYTES == HDR_INTS * sizeof(int), "header size");

typedef struct row_type {
    int W;
    MPI_Datatype t;
} row_type;

struct comm_exchange {
    comm_ctx *ctx;
    MPI_Comm comm;
    int rank, P;
    /* comm_exchange_share_node: words handles read in place; the node's token names their
       objects, handles counts the handles made (the same on every rank) */
    int shm;
    uint64_t token;
    int handles;
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
    int64_t inplace; /* of bytes: words the peers read in place (comm_words) */
    double seconds;
};

comm_exchange *comm_exchange_create(comm_ctx *c) {
    comm_exchange *x = layer_xcalloc(1, sizeof(*x));
    x->ctx = c;
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

int64_t comm_exchange_inplace_bytes(const comm_exchange *x) { return x->inplace; }

void comm_exchange_reset_stats(comm_exchange *x) {
    x->bytes = 0;
    x->inplace = 0;
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

/* The first half of a fetch: groups the caller's keys by owner (stable, so each
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
                     "exchange: ranks called a fetch and another exchange out of step");
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

/* ---- words ---- */

/* A handle that reads in place owns one shared object: a control page, then WORDS_MAX bytes
 * of words, sparse: pages are set aside (posix_fallocate) as the exchanges grow, so a full
 * /dev/shm shows as a fall back to MPI, not as a fault. Before a rank writes its words for
 * an exchange it says, in its control page, that it is done with every exchange started so
 * far, and waits until every peer has said the same: nobody still reads the words it is
 * about to overwrite. The all-to-all of counts that follows the packing tells the peers the
 * words are there. (A second buffer would spare the wait but double the memory: an owner's
 * replies and the gradients it is sent each take one.) */
#define WORDS_MAX ((size_t)512 << 20)
#define WORDS_CTL ((size_t)4096)
enum { WORDS_NEW = 0, WORDS_SHM = 1, WORDS_MPI = 2 }; /* a handle's state, a sender's mode */
enum { WHDR = HDR_INTS }; /* header per peer: count, mode, offset in the sender's words */

struct comm_words {
    comm_exchange *x;
    MPI_Request req;
    int active, id, state;
    uint64_t seq;                           /* exchanges started on the handle */
    uint64_t released;                      /* seq when this rank last waited for its peers */
    int *scount, *sdispl, *rcount, *rdispl; /* (P) in words; rdispl into rbuf (MPI) */
    int *mscount, *mrcount;                 /* (P) the words that go through MPI */
    int *shdr, *rhdr;                       /* (P, WHDR) */
    const uint32_t **from;                  /* (P) each rank's words of the last exchange */
    uint32_t *rbuf;
    size_t rbuf_cap;
    int fd;              /* own object, kept open to set space aside */
    char *base;          /* own object, read-write */
    const char **peer;   /* (P) every rank's object, read-only (own: base) */
    size_t have;         /* bytes of words set aside */
    size_t *seen;        /* (2P) the span of each peer's object the last exchange read */
    size_t limit;        /* most bytes of one exchange in the object (comm_words_limit) */
};

/* The control page's word: the exchanges (by count) its rank is done reading. */
static uint64_t *words_done(const char *obj) { return (uint64_t *)(uintptr_t)obj; }

static void words_name(char *name, size_t n, uint64_t token, int rank, int id) {
    snprintf(name, n, "/memtrain.%016llx.%d.x%d", (unsigned long long)token, rank, id);
}

int comm_exchange_share_node(comm_exchange *x, int on) {
    unsigned char *same = layer_xcalloc((size_t)x->P, 1);
    int one = x->P > 1 && comm_node_ranks(x->ctx, same, &x->token);
    free(same);
    x->shm = on && one;
    return x->shm;
}

static void words_unmap(comm_words *w) {
    int P = w->x->P;
    size_t span = WORDS_CTL + WORDS_MAX;
    for (int p = 0; w->peer && p < P; p++)
        if (w->peer[p] && w->peer[p] != w->base) munmap((void *)w->peer[p], span);
    if (w->base) munmap(w->base, span);
    if (w->fd >= 0) close(w->fd);
    free(w->peer);
    free(w->seen);
    w->seen = NULL;
    w->peer = NULL;
    w->base = NULL;
    w->fd = -1;
}

/* Collective, at a handle's first start: every rank makes its object, maps the others' and
 * lets its name go once all have mapped it. Any failure anywhere: the handle uses MPI. */
static void words_setup(comm_words *w) {
    comm_exchange *x = w->x;
    int P = x->P;
    size_t span = WORDS_CTL + WORDS_MAX;
    char name[96];
    words_name(name, sizeof name, x->token, x->rank, w->id);
    w->fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    int bad = w->fd < 0, gone = 0;
    if (!bad && ftruncate(w->fd, (off_t)span) != 0) bad = 1;
    if (!bad && posix_fallocate(w->fd, 0, (off_t)WORDS_CTL) != 0) bad = 1;
    if (!bad) {
        void *a = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_SHARED, w->fd, 0);
        if (a == MAP_FAILED) bad = 1;
        else w->base = a;
    }
    MPI_CHECK(x->comm, MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, x->comm));
    w->peer = layer_xcalloc((size_t)P, sizeof(*w->peer));
    w->seen = layer_xcalloc(2 * (size_t)P, sizeof(size_t));
    w->peer[x->rank] = w->base;
    for (int p = 0; p < P && !bad && !gone; p++) {
        if (p == x->rank) continue;
        char pn[96];
        words_name(pn, sizeof pn, x->token, p, w->id);
        int fd = shm_open(pn, O_RDONLY, 0);
        void *a = fd < 0 ? MAP_FAILED : mmap(NULL, span, PROT_READ, MAP_SHARED, fd, 0);
        if (fd >= 0) close(fd);
        if (a == MAP_FAILED) gone = 1;
        else w->peer[p] = a;
    }
    MPI_CHECK(x->comm, MPI_Allreduce(MPI_IN_PLACE, &gone, 1, MPI_INT, MPI_MAX, x->comm));
    if (w->fd >= 0) (void)shm_unlink(name);
    w->state = bad || gone ? WORDS_MPI : WORDS_SHM;
    if (w->state == WORDS_MPI) words_unmap(w);
}

/* This rank is done with the words of every exchange started so far; returns once every
 * peer is too (once per exchange). The wait lets MPI progress exchanges in flight on other
 * handles, whose peers may need this rank's part before they get here. */
static void words_release(comm_words *w, int timed) {
    if (w->state != WORDS_SHM || w->released == w->seq) return;
    w->released = w->seq;
    /* With one peer, a rank reads the same span of its object every time. With several, its
     * span in each moves with the others' counts, and the pages it has mapped (which its RSS
     * counts, though they are the senders') would add up to their whole objects: it lets go
     * of the last exchange's spans (the next read maps them again, a fault per 64 KiB). */
    for (int p = 0; w->x->P > 2 && p < w->x->P; p++) {
        size_t pg = 4096, at = w->seen[2 * p] / pg * pg, end = w->seen[2 * p + 1];
        if (p != w->x->rank && end > at)
            (void)madvise((void *)(uintptr_t)(w->peer[p] + at), end - at, MADV_DONTNEED);
        w->seen[2 * p] = w->seen[2 * p + 1] = 0;
    }
    __atomic_store_n(words_done(w->base), w->seq, __ATOMIC_RELEASE);
    comm_exchange *x = w->x;
    double t0 = MPI_Wtime(); /* part of the exchange: in its seconds, unless the caller times */
    for (int p = 0; p < x->P; p++) {
        while (__atomic_load_n(words_done(w->peer[p]), __ATOMIC_ACQUIRE) < w->seq) {
            int flag;
            MPI_CHECK(x->comm, MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, x->comm, &flag,
                                          MPI_STATUS_IGNORE));
            sched_yield();
        }
    }
    if (!timed) x->seconds += MPI_Wtime() - t0;
}

/* The handle's words with room for `bytes`, free to write, or NULL. */
static char *words_space(comm_words *w, size_t bytes, int timed) {
    if (w->state != WORDS_SHM || bytes > w->limit) return NULL;
    if (bytes > w->have) {
        size_t want = bytes + bytes / 2, mb = (size_t)2 << 20;
        want = (want + mb - 1) / mb * mb;
        if (want > WORDS_MAX) want = WORDS_MAX;
        if (posix_fallocate(w->fd, (off_t)WORDS_CTL, (off_t)want) != 0) return NULL;
        w->have = want;
    }
    words_release(w, timed);
    return w->base + WORDS_CTL;
}

comm_words *comm_words_create(comm_exchange *x) {
    comm_words *w = layer_xcalloc(1, sizeof(*w));
    size_t P = (size_t)x->P;
    w->x = x;
    w->req = MPI_REQUEST_NULL;
    w->id = x->handles++;
    w->limit = WORDS_MAX;
    w->fd = -1;
    w->state = WORDS_NEW; /* comm_exchange_share_node may come later: the first start decides */
    w->scount = layer_xcalloc(P, sizeof(int));
    w->sdispl = layer_xcalloc(P, sizeof(int));
    w->rcount = layer_xcalloc(P, sizeof(int));
    w->rdispl = layer_xcalloc(P, sizeof(int));
    w->mscount = layer_xcalloc(P, sizeof(int));
    w->mrcount = layer_xcalloc(P, sizeof(int));
    w->shdr = layer_xcalloc(P * WHDR, sizeof(int));
    w->rhdr = layer_xcalloc(P * WHDR, sizeof(int));
    w->from = layer_xcalloc(P, sizeof(*w->from));
    return w;
}

void comm_words_free(comm_words *w) {
    if (!w) return;
    if (w->active) comm_words_wait(w, NULL);
    words_unmap(w);
    free(w->scount);
    free(w->sdispl);
    free(w->rcount);
    free(w->rdispl);
    free(w->mscount);
    free(w->mrcount);
    free(w->shdr);
    free(w->rhdr);
    free(w->from);
    release(w->rbuf, w->rbuf_cap, sizeof(uint32_t));
    free(w);
}

void comm_words_limit(comm_words *w, size_t bytes) {
    w->limit = bytes < WORDS_MAX ? bytes : WORDS_MAX;
}

uint32_t *comm_words_buffer(comm_words *w, size_t n) {
    if (w->state == WORDS_NEW) return NULL; /* set up at the first start, which is collective */
    return (uint32_t *)words_space(w, n * sizeof(uint32_t), 0);
}

void comm_words_start(comm_words *w, const void *send, const int64_t *scount) {
    comm_exchange *x = w->x;
    int P = x->P, me = x->rank;
    LAYER_ASSERT(!w->active && "comm_words: an exchange is already in flight");
    x->calls++;
    for (int p = 0; p < P; p++) {
        LAYER_ASSERT(comm_exchange_check_count(scount[p]) && "comm_words: count exceeds MPI's int");
        w->scount[p] = (int)scount[p];
    }
    int64_t total = comm_exchange_offsets(w->scount, P, w->sdispl);
    LAYER_ASSERT(total >= 0);
    double t0 = MPI_Wtime();
    if (w->state == WORDS_NEW) {
        if (x->shm) words_setup(w);
        else w->state = WORDS_MPI;
    }
    /* in place: the words are in the handle's object (packed there, anywhere within what
       comm_words_buffer handed out) or copied to its start */
    int mode = WORDS_MPI;
    size_t bytes = (size_t)total * sizeof(uint32_t), at = 0;
    const char *own = w->state == WORDS_SHM ? w->base + WORDS_CTL : NULL, *src = send;
    if (own && src >= own && src + bytes <= own + w->have) {
        at = (size_t)(src - own);
        words_release(w, 1);
        mode = WORDS_SHM;
    } else if (words_space(w, bytes, 1)) {
        if (bytes) memcpy(w->base + WORDS_CTL, send, bytes);
        mode = WORDS_SHM;
    } else {
        words_release(w, 1); /* the peers' words of the last exchange are let go all the same */
    }
    w->seq++;
    for (int p = 0; p < P; p++) {
        w->shdr[WHDR * p + 0] = w->scount[p];
        w->shdr[WHDR * p + 1] = mode;
        w->shdr[WHDR * p + 2] = (int)(at / sizeof(uint32_t)) + w->sdispl[p];
    }
    MPI_CHECK(x->comm, MPI_Alltoall(w->shdr, WHDR, MPI_INT, w->rhdr, WHDR, MPI_INT, x->comm));
    /* every rank hears every sender's mode, so all agree whether MPI moves anything */
    int mpi = 0;
    for (int q = 0; q < P; q++) {
        w->rcount[q] = w->rhdr[WHDR * q + 0];
        mpi |= w->rhdr[WHDR * q + 1] == WORDS_MPI;
        w->mrcount[q] = w->rhdr[WHDR * q + 1] == WORDS_MPI ? w->rcount[q] : 0;
        w->mscount[q] = mode == WORDS_MPI ? w->scount[q] : 0;
    }
    if (mpi) {
        int64_t m = comm_exchange_offsets(w->mrcount, P, w->rdispl);
        LAYER_ASSERT(m >= 0 && "comm_words: words received exceed MPI's int counts");
        grow((void **)&w->rbuf, &w->rbuf_cap, (size_t)m, sizeof(uint32_t));
        MPI_CHECK(x->comm, MPI_Ialltoallv(send, w->mscount, w->sdispl, MPI_UINT32_T, w->rbuf,
                                          w->mrcount, w->rdispl, MPI_UINT32_T, x->comm,
                                          &w->req));
        w->active = 1;
    }
    /* the counts' all-to-all is the peers' word that their words are written */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    for (int q = 0; q < P; q++) {
        int shm = w->rhdr[WHDR * q + 1] == WORDS_SHM;
        w->from[q] = shm ? (const uint32_t *)(w->peer[q] + WORDS_CTL) + w->rhdr[WHDR * q + 2]
                         : w->rbuf + w->rdispl[q];
        if (shm && w->rcount[q]) {
            w->seen[2 * q] = (size_t)((const char *)w->from[q] - w->peer[q]);
            w->seen[2 * q + 1] = w->seen[2 * q] + (size_t)w->rcount[q] * sizeof(uint32_t);
        }
    }
    x->seconds += MPI_Wtime() - t0;
    x->bytes += (int64_t)COMM_EXCHANGE_HEADER_BYTES * (P - 1) +
                (int64_t)sizeof(uint32_t) * (total - w->scount[me]);
    if (mode == WORDS_SHM) x->inplace += (int64_t)sizeof(uint32_t) * (total - w->scount[me]);
}

int comm_words_test(comm_words *w) {
    if (!w->active) return 1;
    int done = 0;
    double t0 = MPI_Wtime();
    MPI_CHECK(w->x->comm, MPI_Test(&w->req, &done, MPI_STATUS_IGNORE));
    w->x->seconds += MPI_Wtime() - t0;
    if (done) w->active = 0;
    return done;
}

void comm_words_wait(comm_words *w, const int **rcount) {
    if (w->active) {
        double t0 = MPI_Wtime();
        MPI_CHECK(w->x->comm, MPI_Wait(&w->req, MPI_STATUS_IGNORE));
        w->x->seconds += MPI_Wtime() - t0;
        w->active = 0;
    }
    if (rcount) *rcount = w->rcount;
}

const uint32_t *comm_words_from(const comm_words *w, int p) { return w->from[p]; }
