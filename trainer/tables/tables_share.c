/* Node-shared rows: the ranks of one node map each other's shards of a fetched group, so a
 * row another rank of the node owns is read in place instead of fetched (README,
 * "Distribution"). */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, ftruncate */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "layers/common.h"
#include "trainer/tables/tables_internal.h"

/* The pieces a rank's shards take in a store of R rows: in tile c, shard sh's chunks are
 * rows [sh * 16 << tau, ...) of the tile, one run per (tile, shard). */
typedef struct piece { size_t at, bytes; } piece;

static piece piece_of(const group_state *s, int sh, int c) {
    int k0 = sh * LAYER_HASH_SHARD;
    int k1 = k0 + LAYER_HASH_SHARD < s->g.K ? k0 + LAYER_HASH_SHARD : s->g.K;
    size_t at = layer_hash_store_at(s->R, k0 << s->g.tau, c * TILE) * sizeof(float);
    return (piece){at, ((size_t)(k1 - k0) << s->g.tau) * TILE * sizeof(float)};
}

/* Whether a group's rows are shared: fetched, and its stores cut into whole pages at its
 * shards (the planner's rule). */
static int shareable(const trainer_tables *t, const group_state *s) {
    return s->strategy == TRAINER_STRATEGY_FETCH && t->P > 1 && trainer_plan_shareable_tau(s->g.tau);
}

static void shm_name(char *name, size_t n, uint64_t token, int rank, int g, int j) {
    snprintf(name, n, "/memtrain.%016llx.%d.%d.%d", (unsigned long long)token, rank, g, j);
}

/* Maps rank p's shards of store j of group g over the same places of s->rows[j], read-write
 * for this rank's own shards, read-only for another's. 0, or -1 with errno. */
static int overlay(const trainer_tables *t, group_state *s, int g, int j, int p, uint64_t token) {
    char name[96];
    shm_name(name, sizeof name, token, p, g, j);
    int mine = p == t->me, fd = shm_open(name, mine ? O_RDWR : O_RDONLY, 0600);
    if (fd < 0) return -1;
    int prot = mine ? PROT_READ | PROT_WRITE : PROT_READ;
    for (int sh = 0; sh < s->S; sh++) {
        if (s->owner[sh] != p) continue;
        for (int c = 0; c < (s->g.OC + TILE - 1) / TILE; c++) {
            piece pc = piece_of(s, sh, c);
            void *a = (char *)s->rows[j] + pc.at;
            if (mmap(a, pc.bytes, prot, MAP_SHARED | MAP_FIXED, fd, (off_t)pc.at) == MAP_FAILED) {
                int e = errno;
                close(fd);
                errno = e;
                return -1;
            }
        }
    }
    close(fd);
    return 0;
}

void tables_share_rows(trainer_tables *t) {
    if (!t->run.share_rows || t->P == 1 || !t->comm) return;
    unsigned char *same = layer_xcalloc((size_t)t->P, 1);
    uint64_t token = 0;
    int one_node = comm_node_ranks(t->comm, same, &token), peers = 0;
    for (int p = 0; p < t->P; p++) peers += same[p] && p != t->me;
    int any = 0;
    for (int g = 0; g < t->n; g++) any |= shareable(t, &t->gs[g]);
    int64_t want = any && peers > 0; /* some rank shares with another of its node */
    comm_sum_i64(t->comm, &want, 1);
    if (!want) {
        free(same);
        return;
    }
    /* 1. every rank puts its shards of each shared store in a file of its own, the size of
          the store, with space for the shards it owns set aside (so a full /dev/shm shows
          here and not as a fault in the middle of a step) */
    char msg[256] = "";
    int failed = 0;
    for (int g = 0; g < t->n && !failed; g++) {
        group_state *s = &t->gs[g];
        if (!shareable(t, s)) continue;
        for (int j = 0; j < s->g.nout && !failed; j++) {
            char name[96];
            shm_name(name, sizeof name, token, t->me, g, j);
            int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
            int e = fd < 0 ? errno : 0;
            size_t bytes = layer_hash_store_floats(s->R, s->g.OC) * sizeof(float);
            if (!e && ftruncate(fd, (off_t)bytes) != 0) e = errno;
            for (int sh = 0; !e && sh < s->S; sh++) {
                if (s->owner[sh] != t->me) continue;
                for (int c = 0; !e && c < (s->g.OC + TILE - 1) / TILE; c++) {
                    piece pc = piece_of(s, sh, c);
                    e = posix_fallocate(fd, (off_t)pc.at, (off_t)pc.bytes);
                }
            }
            if (fd >= 0) close(fd);
            if (e) {
                snprintf(msg, sizeof msg, "shared memory for table rows (%s): %s", name,
                         strerror(e));
                failed = 1;
            }
        }
    }
    int off = comm_any_failed(t->comm, failed, msg, sizeof msg);
    /* 2. each rank maps its own shards over its stores, then (once all exist) the shards of
          the other ranks of its node, read-only, over the same places of its own: a kernel
          reading row r of a shard another rank of the node owns reads that rank's row */
    for (int g = 0; g < t->n && !off; g++) {
        group_state *s = &t->gs[g];
        if (!shareable(t, s)) continue;
        for (int j = 0; j < s->g.nout; j++)
            if (overlay(t, s, g, j, t->me, token) != 0 && !failed) {
                snprintf(msg, sizeof msg, "mapping shared table rows: %s", strerror(errno));
                failed = 1;
            }
    }
    if (!off) off = comm_any_failed(t->comm, failed, msg, sizeof msg);
    for (int g = 0; g < t->n && !off; g++) {
        group_state *s = &t->gs[g];
        if (!shareable(t, s)) continue;
        for (int j = 0; j < s->g.nout; j++)
            for (int p = 0; p < t->P; p++)
                if (p != t->me && same[p] && overlay(t, s, g, j, p, token) != 0 && !failed) {
                    snprintf(msg, sizeof msg, "mapping another rank's table rows: %s",
                             strerror(errno));
                    failed = 1;
                }
    }
    if (!off) off = comm_any_failed(t->comm, failed, msg, sizeof msg);
    /* 3. the names go once every rank has mapped what it reads (the mappings stay) */
    comm_barrier(t->comm);
    for (int g = 0; g < t->n; g++) {
        group_state *s = &t->gs[g];
        if (!shareable(t, s)) continue;
        for (int j = 0; j < s->g.nout; j++) {
            char name[96];
            shm_name(name, sizeof name, token, t->me, g, j);
            (void)shm_unlink(name);
        }
    }
    if (off) {
        /* stores mapped over in part go back to private zero pages: fetched as before */
        for (int g = 0; g < t->n; g++) {
            group_state *s = &t->gs[g];
            if (!shareable(t, s)) continue;
            for (int j = 0; j < s->g.nout; j++) {
                size_t bytes = layer_hash_store_floats(s->R, s->g.OC) * sizeof(float);
                void *a = mmap(s->rows[j], bytes, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
                LAYER_ASSERT(a == s->rows[j]);
            }
        }
        char note[320];
        snprintf(note, sizeof note, "tables: rows are fetched, not shared on the node: %s", msg);
        comm_warn0(t->comm, note);
        free(same);
        return;
    }
    for (int g = 0; g < t->n; g++) t->gs[g].shared = shareable(t, &t->gs[g]);
    t->same_node = same;
    t->one_node = one_node;
    t->sharing = 1;
}

void tables_share_sync(trainer_tables *t) {
    if (t->sharing) comm_barrier(t->comm);
}
