/* Table-parallel exchanges: fetched rows, callback order, byte counters, count limits; words read in place or through MPI. */
// mpirun-np: 1 2 3 4
#define _DEFAULT_SOURCE /* usleep */
#include <check.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm/comm.h"
#include "tests/testutil.h"
#include "comm/exchange.h"
#include "layers/common.h"

/* Every rank can rebuild every other rank's key list from the seed, so each owner knows in
 * closed form which keys it must be asked for, by whom and in which order. Values are small dyadic numbers: exact in float, so comparisons are
 * exact and any misplaced row or missing term shows. Checks inside the exchange only count
 * mismatches; the counts are summed over ranks before asserting, so every rank fails or passes
 * together and none is left waiting in a collective. */

static comm_ctx *g_comm;

enum { POOL = 200, MAX_W = 64 };

static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Keys look like the trainer's (unit << 40 | bucket-ish), so bits above 32 must survive. */
static int64_t make_key(int idx) { return ((int64_t)(idx % 5 + 1) << 40) | idx; }
static int key_idx(int64_t key) { return (int)(key & ((INT64_C(1) << 40) - 1)); }

typedef int (*owner_fn)(int64_t key, int P);
static int owner_hash(int64_t key, int P) { return (int)(mix64((uint64_t)key) % (uint64_t)P); }
/* Rank 0 owns nothing (when there is another rank to own things). */
static int owner_not0(int64_t key, int P) {
    return P == 1 ? 0 : 1 + (int)(mix64((uint64_t)key) % (uint64_t)(P - 1));
}

/* Table data of a key, known to all ranks. */
static float row_value(int64_t key, int j) {
    return (float)(mix64((uint64_t)key ^ 0xabcdefull) % 65536) + (float)j / 64.0f;
}

/* Everyone's key lists, and this rank's view as an owner. */
typedef struct world {
    int P, rank, W;
    owner_fn owner;
    int *n;                  /* (P) keys of each rank */
    int64_t **keys;          /* (P) each (n[r]) keys of rank r, in its request order */
    int **own;               /* (P) each (n[r]) owner of keys[r][i] */
    int64_t *expect;         /* (nexpect) keys this rank must serve, in source order */
    int *expect_n, *expect_off; /* (P) how many of them come from each source, and where */
    int nexpect;
    float *table;            /* (POOL, W) this rank's rows; rows it does not own are NaN */
    /* callback bookkeeping */
    int64_t bad, serve_calls;
} world;

/* empty_last: the highest rank asks for nothing (with P = 1 that is every rank). */
static world *world_create(uint64_t seed, int W, owner_fn owner, int empty_last) {
    LAYER_ASSERT(W >= 1 && W <= MAX_W);
    world *w = layer_xcalloc(1, sizeof(*w));
    w->P = comm_size(g_comm);
    w->rank = comm_rank(g_comm);
    w->W = W;
    w->owner = owner;
    int P = w->P;
    w->n = layer_xcalloc((size_t)P, sizeof(int));
    w->keys = layer_xcalloc((size_t)P, sizeof(int64_t *));
    w->own = layer_xcalloc((size_t)P, sizeof(int *));
    for (int r = 0; r < P; r++) {
        int n = (empty_last && r == P - 1) ? 0 : 40 + (29 * r) % 150;
        if (n > POOL) n = POOL;
        layer_rng rng;
        layer_rng_seed(&rng, seed * 1000 + (uint64_t)r);
        int perm[POOL];
        for (int i = 0; i < POOL; i++) perm[i] = i;
        for (int i = POOL - 1; i > 0; i--) {
            int j = (int)(layer_rng_next(&rng) % (uint64_t)(i + 1));
            int t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        w->n[r] = n;
        w->keys[r] = layer_xmalloc((size_t)(n ? n : 1) * sizeof(int64_t));
        w->own[r] = layer_xmalloc((size_t)(n ? n : 1) * sizeof(int));
        for (int i = 0; i < n; i++) {
            w->keys[r][i] = make_key(perm[i]);
            w->own[r][i] = owner(w->keys[r][i], P);
        }
    }
    w->expect_n = layer_xcalloc((size_t)P, sizeof(int));
    w->expect_off = layer_xcalloc((size_t)P, sizeof(int));
    w->expect = layer_xmalloc((size_t)P * POOL * sizeof(int64_t));
    for (int src = 0; src < P; src++) {
        w->expect_off[src] = w->nexpect;
        for (int i = 0; i < w->n[src]; i++)
            if (w->own[src][i] == w->rank) w->expect[w->nexpect++] = w->keys[src][i];
        w->expect_n[src] = w->nexpect - w->expect_off[src];
    }
    w->table = layer_xmalloc((size_t)POOL * W * sizeof(float));
    for (int idx = 0; idx < POOL; idx++)
        for (int j = 0; j < W; j++)
            w->table[idx * W + j] =
                owner(make_key(idx), P) == w->rank ? row_value(make_key(idx), j) : NAN;
    return w;
}

static void world_free(world *w) {
    for (int r = 0; r < w->P; r++) {
        free(w->keys[r]);
        free(w->own[r]);
    }
    free(w->n);
    free(w->keys);
    free(w->own);
    free(w->expect);
    free(w->expect_n);
    free(w->expect_off);
    free(w->table);
    free(w);
}

static void serve_rows(void *ctx, const int64_t *keys, int m, float *out) {
    world *w = ctx;
    w->serve_calls++;
    if (m != w->nexpect) {
        w->bad++;
        return;
    }
    for (int i = 0; i < m; i++) {
        if (keys[i] != w->expect[i]) w->bad++;
        int idx = key_idx(keys[i]);
        if (idx < 0 || idx >= POOL) {
            w->bad++;
            continue;
        }
        memcpy(out + (size_t)i * w->W, w->table + (size_t)idx * w->W, (size_t)w->W * sizeof(float));
    }
}


/* Sum over ranks, so every rank asserts on the same number. */
static int64_t all_sum(int64_t v) {
    comm_sum_i64(g_comm, &v, 1);
    return v;
}

/* Fetches this rank's keys and counts rows that differ from row_value; also checks the
 * serve callback ran exactly when this rank had requests. */
static int64_t fetch_and_check(comm_exchange *x, world *w) {
    int me = w->rank, n = w->n[me], W = w->W;
    float *rows = layer_xmalloc((size_t)(n ? n : 1) * W * sizeof(float));
    for (size_t i = 0; i < (size_t)n * W; i++) rows[i] = -12345.0f;
    w->serve_calls = 0;
    comm_exchange_fetch(x, w->keys[me], w->own[me], n, W, rows, serve_rows, w);
    int64_t bad = w->bad;
    if (w->serve_calls != (w->nexpect > 0)) bad++;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < W; j++)
            if (rows[(size_t)i * W + j] != row_value(w->keys[me][i], j)) bad++;
    free(rows);
    return bad;
}


/* How many keys are listed by more than one rank (the shared-key case must be exercised). */
static int shared_keys(const world *w) {
    int shared = 0;
    for (int idx = 0; idx < POOL; idx++) {
        int holders = 0;
        for (int r = 0; r < w->P; r++)
            for (int i = 0; i < w->n[r]; i++) holders += w->keys[r][i] == make_key(idx);
        shared += holders > 1;
    }
    return shared;
}

START_TEST(test_fetch_rows) {
    comm_exchange *x = comm_exchange_create(g_comm);
    /* W repeats so a cached row datatype is reused; sizes shrink and grow between calls */
    const int Ws[] = {1, 3, 37, 3, 64};
    for (int empty_last = 0; empty_last < 2; empty_last++)
        for (size_t k = 0; k < sizeof(Ws) / sizeof(Ws[0]); k++) {
            world *w = world_create(11 + k, Ws[k], owner_hash, empty_last);
            if (w->P > 2) ck_assert_int_gt(shared_keys(w), 0);
            int64_t bad = all_sum(fetch_and_check(x, w));
            ck_assert_msg(bad == 0, "W=%d empty_last=%d: %lld wrong rows or requests", Ws[k],
                          empty_last, (long long)bad);
            world_free(w);
        }
    comm_exchange_free(x);
}
END_TEST


START_TEST(test_rank_owning_nothing) {
    comm_exchange *x = comm_exchange_create(g_comm);
    world *w = world_create(5, 7, owner_not0, 0);
    int64_t bad = all_sum(fetch_and_check(x, w));
    ck_assert_msg(bad == 0, "fetch: %lld wrong rows or requests", (long long)bad);
    int64_t served0 = all_sum(w->rank == 0 ? w->serve_calls : 0);
    int P = w->P;
    world_free(w);
    comm_exchange_free(x);
    /* rank 0 still asks for rows (it has keys) but is never asked */
    ck_assert_int_eq(served0, P == 1 ? 1 : 0);
}
END_TEST

START_TEST(test_byte_counters) {
    comm_exchange *x = comm_exchange_create(g_comm);
    int W = 5;
    /* an empty sender with several ranks; with one rank, keys kept at home must count 0 */
    world *w = world_create(31, W, owner_hash, comm_size(g_comm) > 1);
    int me = w->rank, P = w->P;
    int64_t remote_keys = 0, remote_served = w->nexpect - w->expect_n[me];
    for (int i = 0; i < w->n[me]; i++) remote_keys += w->own[me][i] != me;
    int64_t hdr = (int64_t)COMM_EXCHANGE_HEADER_BYTES * (P - 1);
    int64_t want_fetch = hdr + 8 * remote_keys + 4 * W * remote_served;

    int64_t bytes = -1, calls = -1;
    double secs = -1.0;
    comm_exchange_stats(x, &bytes, &secs, &calls);
    ck_assert(bytes == 0 && calls == 0 && secs == 0.0);

    int64_t bad = fetch_and_check(x, w);
    int64_t b_fetch;
    comm_exchange_stats(x, &b_fetch, NULL, &calls);
    bad += fetch_and_check(x, w); /* a second call adds as much */
    comm_exchange_stats(x, &bytes, &secs, NULL);
    int64_t c_total;
    comm_exchange_stats(x, NULL, NULL, &c_total);
    comm_exchange_reset_stats(x);
    int64_t b_reset, c_reset;
    double s_reset;
    comm_exchange_stats(x, &b_reset, &s_reset, &c_reset);
    int64_t wrong = all_sum(bad) + all_sum(b_fetch != want_fetch) +
                    all_sum(bytes != 2 * want_fetch);
    /* with more than one rank some rank must really send rows and keys */
    int64_t total_sent = all_sum(bytes);
    world_free(w);
    comm_exchange_free(x);

    ck_assert_msg(wrong == 0, "rank %d: fetch bytes %lld (want %lld), total %lld (want %lld)", me,
                  (long long)b_fetch, (long long)want_fetch, (long long)bytes,
                  (long long)(2 * want_fetch));
    if (P > 1) ck_assert_int_gt(total_sent, 2 * hdr * P);
    ck_assert_int_eq(calls, 1);
    ck_assert_int_eq(c_total, 2);
    ck_assert(secs >= 0.0);
    ck_assert(b_reset == 0 && c_reset == 0 && s_reset == 0.0);
}
END_TEST

START_TEST(test_count_limits) {
    ck_assert_int_eq(comm_exchange_check_count(0), 1);
    ck_assert_int_eq(comm_exchange_check_count(INT_MAX), 1);
    ck_assert_int_eq(comm_exchange_check_count((int64_t)INT_MAX + 1), 0);
    ck_assert_int_eq(comm_exchange_check_count(-1), 0);
    /* 2^22 rows of 1024 floats: 2^32 floats would overflow an int count, rows do not */
    ck_assert_int_eq(comm_exchange_check_count(INT64_C(1) << 22), 1);

    int d[3] = {-1, -1, -1};
    int c1[3] = {5, 0, 7};
    ck_assert_int_eq(comm_exchange_offsets(c1, 3, d), 12);
    ck_assert(d[0] == 0 && d[1] == 5 && d[2] == 5);
    int c2[2] = {INT_MAX, 0};
    ck_assert_int_eq(comm_exchange_offsets(c2, 2, d), INT_MAX);
    ck_assert_int_eq(d[1], INT_MAX);
    int c3[2] = {INT_MAX, 1};
    ck_assert_int_eq(comm_exchange_offsets(c3, 2, d), -1);
    /* each count fits, the sum (and so the next offset) does not */
    int c4[3] = {1 << 30, 1 << 30, 0};
    ck_assert_int_eq(comm_exchange_offsets(c4, 3, d), -1);
    int c5[3] = {1 << 30, (1 << 30) - 1, 0};
    ck_assert_int_eq(comm_exchange_offsets(c5, 3, d), INT_MAX);
    ck_assert_int_eq(d[2], INT_MAX);
    int c6[1] = {-3};
    ck_assert_int_eq(comm_exchange_offsets(c6, 1, d), -1);
}
END_TEST

/* ---- words ---- */

static uint32_t word_value(int src, int dst, int e, int i) {
    return (uint32_t)mix64(((uint64_t)src << 48) ^ ((uint64_t)dst << 32) ^ ((uint64_t)e << 24) ^
                           (uint64_t)i);
}

static int64_t word_count(int src, int dst, int e) {
    return (int64_t)((src * 7 + dst * 3 + e) % 5) * 3000 + (e % 3 == 0 ? 0 : 1);
}

/* Whether p lies in a mapping of one of memtrain's shared objects. */
static int in_shared_object(const void *p) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return 0;
    char line[512];
    int found = 0;
    uintptr_t a = (uintptr_t)p;
    while (!found && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && a >= lo && a < hi)
            found = strstr(line, "/memtrain.") != NULL;
    }
    fclose(f);
    return found;
}

/* Eight exchanges on one handle, odd ones packed in comm_words_buffer, even ones from a
 * buffer of the caller's (copied, or sent by MPI). Rank 0 reads each exchange's words only
 * after a pause, while the others go on to pack the next exchange where rank 0 reads: unless
 * they wait for it, their packing overwrites what it is about to read. `limit` (bytes, 0:
 * none) makes rank 1's exchanges above it go through MPI while the others' are read in
 * place. Returns this rank's mismatches; *inplace counts words from other ranks read in
 * shared objects. */
static int64_t words_round(int share, size_t limit, int64_t *inplace, int64_t *bytes) {
    int me = comm_rank(g_comm), P = comm_size(g_comm);
    comm_exchange *x = comm_exchange_create(g_comm);
    int on = comm_exchange_share_node(x, share);
    comm_words *w = comm_words_create(x);
    if (limit && me == 1) comm_words_limit(w, limit);
    int64_t bad = 0, *cnt = layer_xcalloc((size_t)P, sizeof(int64_t)), want_bytes = 0;
    *inplace = 0;
    for (int e = 0; e < 8; e++) {
        size_t total = 0;
        for (int p = 0; p < P; p++) total += (size_t)(cnt[p] = word_count(me, p, e));
        uint32_t *buf = e % 2 ? comm_words_buffer(w, total) : NULL, *mine = NULL;
        if (e % 2 && on && e > 1 && (!limit || me != 1 || total * 4 <= limit))
            bad += buf == NULL; /* a handle that reads in place hands out its object */
        if (!buf) buf = mine = layer_xmalloc(total * sizeof(uint32_t) + 4);
        for (int p = 0, o = 0; p < P; p++)
            for (int i = 0; i < cnt[p]; i++) buf[o++] = word_value(me, p, e, i);
        comm_words_start(w, buf, cnt);
        const int *rc;
        comm_words_wait(w, &rc);
        free(mine); /* the wait has returned: the words are out or in the shared object */
        if (me == 0) usleep(20000);
        for (int p = 0; p < P; p++) {
            bad += rc[p] != word_count(p, me, e);
            const uint32_t *in = comm_words_from(w, p);
            for (int i = 0; i < rc[p]; i++) bad += in[i] != word_value(p, me, e, i);
            if (p != me && rc[p] && in_shared_object(in)) *inplace += rc[p];
        }
        want_bytes += (int64_t)COMM_EXCHANGE_HEADER_BYTES * (P - 1) + 4 * ((int64_t)total - cnt[me]);
    }
    comm_exchange_stats(x, bytes, NULL, NULL);
    bad += *bytes != want_bytes;
    /* the counter of bytes read in place: none through MPI, all the words read in place */
    int64_t payload = want_bytes - 8 * (int64_t)COMM_EXCHANGE_HEADER_BYTES * (P - 1);
    int64_t ib = comm_exchange_inplace_bytes(x);
    if (!on) bad += ib != 0;
    else if (!limit) bad += ib != payload;
    else bad += ib < 0 || ib > payload;
    comm_words_free(w);
    comm_exchange_free(x);
    free(cnt);
    return bad;
}

START_TEST(test_words_in_place) {
    int P = comm_size(g_comm);
    int64_t inplace, bytes;
    /* through MPI */
    int64_t bad = all_sum(words_round(0, 0, &inplace, &bytes));
    ck_assert_msg(bad == 0, "words through MPI: %lld mismatches", (long long)bad);
    ck_assert_int_eq(all_sum(inplace), 0);
    /* read in place: every rank of these tests is on one node */
    bad = all_sum(words_round(1, 0, &inplace, &bytes));
    ck_assert_msg(bad == 0, "words read in place: %lld mismatches", (long long)bad);
    int64_t got = all_sum(inplace), from_others = 0;
    for (int e = 0; e < 8; e++)
        for (int s = 0; s < P; s++)
            for (int d = 0; d < P; d++) from_others += s != d ? word_count(s, d, e) : 0;
    ck_assert_int_eq(got, from_others); /* every word from another rank, in place */
    if (P < 2) return;
    /* mixed: rank 1's larger exchanges go through MPI, the rest are read in place */
    bad = all_sum(words_round(1, 4 * 4000, &inplace, &bytes));
    ck_assert_msg(bad == 0, "words, mixed: %lld mismatches", (long long)bad);
    got = all_sum(inplace);
    ck_assert(got > 0 && got < from_others);
}
END_TEST

static Suite *exchange_suite(void) {
    Suite *s = suite_create("exchange");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_fetch_rows);
    tcase_add_test(tc, test_rank_owning_nothing);
    tcase_add_test(tc, test_byte_counters);
    tcase_add_test(tc, test_count_limits);
    tcase_add_test(tc, test_words_in_place);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    g_comm = comm_init(&argc, &argv);
    int rc = tu_run_mpi(exchange_suite(), g_comm);
    comm_finalize(g_comm);
    return rc;
}
