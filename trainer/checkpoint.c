/* Mapping of a run's state onto checkpoint arrays (names documented in the README), save, load, resume with fallback. */
#include "trainer/checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/ckpt.h"
#include "layers/common.h"

enum { MAX_CKPTS = 64 };

static void ckpt_dir(char *buf, size_t n, const char *run_dir) { snprintf(buf, n, "%s/ckpt", run_dir); }

/* One array's transfer: the same call shape for writing and reading. */
typedef struct xfer {
    io_ckpt *ck;
    int writing;
    char *err;
    size_t n;
} xfer;

static int move(xfer *x, const char *name, io_dtype t, int ndims, const int64_t *dims,
                int nslices, const int64_t *slices, void *data) {
    if (x->writing)
        return io_ckpt_write(x->ck, name, t, ndims, dims, nslices, slices, data, x->err, x->n);
    return io_ckpt_read(x->ck, name, t, ndims, dims, nslices, slices, data, x->err, x->n);
}

/* Everything but the attributes, in one fixed order for both directions. */
static int transfer(xfer *x, comm_ctx *c, trainer_model *m, trainer_stream_state *st) {
    char name[256];
    int me0 = comm_rank(c) == 0;
    const int64_t zero = 0;
    trainer_params *p = trainer_model_params(m);
    /* dense parameters are replicated: rank 0 writes them, every rank reads them */
    int ns = x->writing ? me0 : 1;
    for (int i = 0; i < p->n; i++) {
        const trainer_tensor *t = &p->t[i];
        int64_t dims[2] = {1, (int64_t)t->size};
        float *arrays[3] = {p->data + t->off, p->m + t->off, p->v + t->off};
        const char *what[3] = {"data", "m", "v"};
        for (int a = 0; a < 3; a++) {
            snprintf(name, sizeof(name), "dense/%s/%s", t->name, what[a]);
            if (move(x, name, IO_F32, 2, dims, ns, &zero, arrays[a]) != 0) return -1;
        }
    }
    /* tables: chunk k of a group is dim-0 slice k; each rank moves the chunks it owns */
    trainer_tables *tb = trainer_model_tables(m);
    for (int g = 0; g < trainer_tables_ngroups(tb); g++) {
        const trainer_table_group *grp = trainer_tables_group(tb, g);
        int64_t rows = (int64_t)1 << grp->tau, dims[3] = {grp->K, rows, grp->OC};
        size_t unit = (size_t)rows * grp->OC;
        int64_t *mine = layer_xmalloc(((size_t)grp->K + 1) * sizeof(int64_t));
        int nk = 0;
        /* each chunk is written by its owner; read by every rank that holds it (every rank,
           for a replicated group) */
        for (int k = 0; k < grp->K; k++)
            if (x->writing ? trainer_tables_owner(tb, g, k) == comm_rank(c)
                           : trainer_tables_holds(tb, g, k))
                mine[nk++] = k;
        float *buf = layer_xmalloc(((size_t)nk * unit + 1) * sizeof(float));
        for (int j = 0; j < grp->nout; j++) {
            const char *what[3] = {"data", "m", "v"};
            for (int a = 0; a < 3; a++) {
                if (x->writing)
                    for (int q = 0; q < nk; q++) {
                        float *dst[3] = {NULL, NULL, NULL};
                        dst[a] = buf + q * unit;
                        trainer_tables_unit_get(tb, g, (int)mine[q], j, dst[0], dst[1], dst[2], NULL);
                    }
                snprintf(name, sizeof(name), "tables/%s/out%d/%s", grp->name, j, what[a]);
                if (move(x, name, IO_F32, 3, dims, nk, mine, buf) != 0) {
                    free(buf);
                    free(mine);
                    return -1;
                }
                if (!x->writing)
                    for (int q = 0; q < nk; q++) {
                        const float *src[3] = {NULL, NULL, NULL};
                        src[a] = buf + q * unit;
                        trainer_tables_unit_set(tb, g, (int)mine[q], j, src[0], src[1], src[2]);
                    }
            }
        }
        free(buf);
        free(mine);
    }
    if (!st) return 0; /* a model alone (eval, sample) */
    /* streams: global stream s is dim-0 slice s; each rank moves its own */
    int64_t *ids = layer_xmalloc(((size_t)st->B + 1) * sizeof(int64_t));
    for (int b = 0; b < st->B; b++) ids[b] = st->first + b;
    int64_t d_cur[2] = {st->nstreams, 2}, d_prev[2] = {st->nstreams, st->L};
    int64_t d_last[2] = {st->nstreams, 1}, d_mem[2] = {st->nstreams, (int64_t)st->msize};
    int rc = move(x, "streams/cursor", IO_I64, 2, d_cur, st->B, ids, st->cursor);
    if (!rc) rc = move(x, "streams/prev_segment", IO_I32, 2, d_prev, st->B, ids, st->prev);
    if (!rc) rc = move(x, "streams/last_token", IO_I32, 2, d_last, st->B, ids, st->last);
    if (!rc && st->msize) rc = move(x, "streams/memory", IO_F32, 2, d_mem, st->B, ids, st->M);
    free(ids);
    return rc;
}

int trainer_ckpt_save(comm_ctx *c, const trainer_config *cfg, trainer_model *m,
                      const trainer_stream_state *st, int64_t step, char *err, size_t n) {
    char dir[1100];
    ckpt_dir(dir, sizeof(dir), cfg->run_dir);
    io_ckpt *ck = io_ckpt_create(c, dir, step, err, n);
    if (!ck) return -1;
    xfer x = {ck, 1, err, n};
    if (transfer(&x, c, m, (trainer_stream_state *)st) != 0) {
        io_ckpt_abort(ck);
        return -1;
    }
    size_t len = trainer_config_to_text(cfg, NULL, 0);
    char *text = layer_xmalloc(len + 1);
    trainer_config_to_text(cfg, text, len + 1);
    io_ckpt_set_attr_str(ck, "config", text);
    free(text);
    /* no dropout or sampling in training: the data order and the seed are the whole of the
       run's randomness, and both are in the config and the stream cursors */
    io_ckpt_set_attr_i64(ck, "seed", cfg->seed);
    io_ckpt_set_attr_i64(ck, "schedule_step", step);
    io_ckpt_set_attr_i64(ck, "ranks", comm_size(c));
    return io_ckpt_commit(ck, cfg->keep_ckpts, err, n);
}

/* The candidates of run_dir/ckpt, newest first, the same list on every rank. */
static int candidates(comm_ctx *c, const char *run_dir, char (*paths)[IO_CKPT_PATH_MAX]) {
    char dir[1100];
    ckpt_dir(dir, sizeof(dir), run_dir);
    int64_t count = 0;
    if (comm_rank(c) == 0) count = io_ckpt_list(dir, paths, MAX_CKPTS);
    comm_broadcast(c, &count, sizeof(count), 0);
    comm_broadcast(c, paths, (size_t)count * IO_CKPT_PATH_MAX, 0);
    return (int)count;
}

int trainer_ckpt_peek_config(comm_ctx *c, const char *run_dir, trainer_config *cfg, char *path,
                             size_t pathlen, char *err, size_t n) {
    char (*paths)[IO_CKPT_PATH_MAX] = layer_xmalloc(MAX_CKPTS * IO_CKPT_PATH_MAX);
    int count = candidates(c, run_dir, paths), rc = -1;
    snprintf(err, n, "no checkpoint in %s/ckpt to resume from", run_dir);
    for (int i = 0; i < count && rc != 0; i++) {
        io_ckpt *ck = io_ckpt_open(c, paths[i], err, n);
        if (!ck) continue;
        char *text = NULL;
        if (io_ckpt_get_attr_str(ck, "config", &text, err, n) == 0) {
            rc = trainer_config_load_text(cfg, text, paths[i], err, n);
            snprintf(path, pathlen, "%s", paths[i]);
            free(text);
        }
        io_ckpt_close(ck);
    }
    free(paths);
    return rc;
}

int trainer_ckpt_read_config(comm_ctx *c, const char *path, trainer_config *cfg, char *err,
                             size_t n) {
    io_ckpt *ck = io_ckpt_open(c, path, err, n);
    if (!ck) return -1;
    char *text = NULL;
    int rc = io_ckpt_get_attr_str(ck, "config", &text, err, n);
    if (rc == 0) rc = trainer_config_load_text(cfg, text, path, err, n);
    free(text);
    io_ckpt_close(ck);
    return rc;
}

int trainer_ckpt_load(comm_ctx *c, const char *path, trainer_model *m, trainer_stream_state *st,
                      int64_t *step, char *err, size_t n) {
    io_ckpt *ck = io_ckpt_open(c, path, err, n);
    if (!ck) return -1;
    xfer x = {ck, 0, err, n};
    int rc = io_ckpt_get_attr_i64(ck, "step", step, err, n);
    if (!rc) rc = transfer(&x, c, m, st);
    io_ckpt_close(ck);
    return rc;
}

int trainer_ckpt_resume(comm_ctx *c, const char *run_dir, trainer_model *m,
                        trainer_stream_state *st, int64_t *step, char *path, size_t pathlen,
                        char *err, size_t n) {
    char (*paths)[IO_CKPT_PATH_MAX] = layer_xmalloc(MAX_CKPTS * IO_CKPT_PATH_MAX);
    int count = candidates(c, run_dir, paths), rc = -1;
    snprintf(err, n, "no checkpoint in %s/ckpt to resume from", run_dir);
    for (int i = 0; i < count; i++) {
        rc = trainer_ckpt_load(c, paths[i], m, st, step, err, n);
        if (rc == 0) {
            snprintf(path, pathlen, "%s", paths[i]);
            break;
        }
        if (comm_rank(c) == 0) {
            fprintf(stderr, "memtrain: %s; %s\n", err,
                    i + 1 < count ? "falling back to an older checkpoint" : "no older checkpoint left");
            fflush(stderr);
        }
    }
    free(paths);
    return rc;
}
