/* Mapping of a run's state onto checkpoint arrays (names documented in the README), save, load, resume with fallback. */
#include "trainer/run/checkpoint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/ckpt.h"
#include "io/files.h"
#include "layers/common.h"
#include "trainer/run/watchdog.h"

enum { MAX_CKPTS = 64 };

static void ckpt_dir(char *buf, size_t n, const char *run_dir) { snprintf(buf, n, "%s/ckpt", run_dir); }

/* One array's transfer: the same call shape for writing and reading. */
typedef struct xfer {
    io_ckpt *ck;
    int writing;
    char *err;
    size_t n;
    io_ckpt_size *sizing; /* writing: only add each array's size here */
} xfer;

static int move(xfer *x, const char *name, io_dtype t, int ndims, const int64_t *dims,
                int nslices, const int64_t *slices, void *data) {
    if (x->sizing) {
        io_ckpt_size_add(x->sizing, t, ndims, dims);
        return 0;
    }
    if (x->writing)
        return io_ckpt_write(x->ck, name, t, ndims, dims, nslices, slices, data, x->err, x->n);
    return io_ckpt_read(x->ck, name, t, ndims, dims, nslices, slices, data, x->err, x->n);
}

/* Whether this rank's restored stream state can be used: cursors inside the data, tokens
 * below the vocabulary. Returns 0, or 1 with a message naming the file and the stream. */
static int check_streams(const trainer_stream_state *st, int vocab, const char *path, char *err,
                         size_t n) {
    for (int b = 0; b < st->B; b++) {
        int s = st->first + b;
        io_stream pos = {.stream = s, .nstreams = st->nstreams, .doc_count = st->cursor[2 * b],
                         .pos = st->cursor[2 * b + 1], .shuffle = st->shuffle,
                         .by_class = st->by_class, .seed = st->data_seed};
        int ok = pos.doc_count >= 0 && pos.pos >= 0 && (!st->data || io_stream_valid(&pos, st->data));
        if (!ok) {
            snprintf(err, n, "%s: streams/cursor of stream %d (%lld, %lld) lies outside the data "
                     "(damaged, or a checkpoint of other data)", path, s,
                     (long long)pos.doc_count, (long long)pos.pos);
            return 1;
        }
        int32_t last = st->last[b];
        for (int i = 0; i <= st->L && ok; i++) {
            int32_t t = i < st->L ? st->prev[(size_t)b * st->L + i] : last;
            ok = t >= -1 && t < vocab;
        }
        if (!ok) {
            snprintf(err, n, "%s: streams/prev_segment or last_token of stream %d holds a token "
                     "outside the vocabulary (%d)", path, s, vocab);
            return 1;
        }
    }
    return 0;
}

/* One chunk's rows, moments or second moments of one output, out of the row store. */
typedef struct unit_fill {
    const trainer_tables *tb;
    int g, out, what; /* what: 0 rows, 1 m, 2 v */
    const int64_t *chunks;
} unit_fill;

static void fill_unit(void *ctx, int i, void *dst) {
    const unit_fill *f = ctx;
    float *to[3] = {NULL, NULL, NULL};
    to[f->what] = dst;
    trainer_tables_unit_get(f->tb, f->g, (int)f->chunks[i], f->out, to[0], to[1], to[2], NULL);
}

/* Every array, and the attributes of the training data the cursors count in, in one fixed
 * order for both directions. Returns 0; -1 with the message in x->err (damage: an older
 * checkpoint may do); -2 when the training data are not the checkpoint's (none will). */
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
        /* written straight out of the row stores, a bounded piece at a time; read into one
           buffer of the rank's chunks */
        float *buf = x->writing ? NULL : layer_xmalloc(((size_t)nk * unit + 1) * sizeof(float));
        for (int j = 0; j < grp->nout; j++) {
            const char *what[3] = {"data", "m", "v"};
            for (int a = 0; a < 3; a++) {
                snprintf(name, sizeof(name), "tables/%s/out%d/%s", grp->name, j, what[a]);
                unit_fill f = {tb, g, j, a, mine};
                if (x->sizing) {
                    io_ckpt_size_add(x->sizing, IO_F32, 3, dims);
                    continue;
                }
                int rc = x->writing ? io_ckpt_write_fill(x->ck, name, IO_F32, 3, dims, nk, mine,
                                                         fill_unit, &f, x->err, x->n)
                                    : io_ckpt_read(x->ck, name, IO_F32, 3, dims, nk, mine, buf,
                                                   x->err, x->n);
                if (rc != 0) {
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
    if (!x->writing) trainer_tables_rows_set(tb);
    if (!st) return 0; /* a model alone (eval, sample) */
    /* streams: global stream s is dim-0 slice s; each rank moves its own */
    int64_t *ids = layer_xmalloc(((size_t)st->B + 1) * sizeof(int64_t));
    for (int b = 0; b < st->B; b++) ids[b] = st->first + b;
    int64_t d_cur[2] = {st->nstreams, 2}, d_prev[2] = {st->nstreams, st->L};
    int64_t d_last[2] = {st->nstreams, 1}, d_mem[2] = {st->nstreams, (int64_t)st->msize};
    /* the order the cursors count in: 2 shuffled by class (or file order), 1 shuffled over
       all documents; older checkpoints have no streams/order and count in 1 */
    int64_t order = st->by_class ? 2 : 1, d_order[1] = {1};
    int rc = 0;
    if (x->writing) rc = move(x, "streams/order", IO_I64, 1, d_order, me0, &zero, &order);
    else if (io_ckpt_has(x->ck, "streams/order"))
        rc = move(x, "streams/order", IO_I64, 1, d_order, 1, &zero, &order);
    else order = 1;
    if (!rc && order != 1 && order != 2) {
        snprintf(x->err, x->n, "%s: streams/order is %lld, not 1 or 2 (damaged, or written by a "
                 "newer memtrain)", io_ckpt_path(x->ck), (long long)order);
        rc = -1;
    }
    if (!x->writing) st->by_class = order == 2;
    /* which documents the cursors count in: a resume over changed data is refused (train.c) */
    if (!rc && x->writing && !x->sizing && st->data) {
        io_ckpt_set_attr_i64(x->ck, "data_docs", st->data->ndocs);
        io_ckpt_set_attr_i64(x->ck, "data_crc32", st->data->crc);
    } else if (!rc && !x->writing) {
        st->data_docs = st->data_crc = -1;
        if (io_ckpt_has_attr(x->ck, "data_docs") && io_ckpt_has_attr(x->ck, "data_crc32") &&
            (io_ckpt_get_attr_i64(x->ck, "data_docs", &st->data_docs, x->err, x->n) != 0 ||
             io_ckpt_get_attr_i64(x->ck, "data_crc32", &st->data_crc, x->err, x->n) != 0))
            rc = -1;
        /* no damage: every older checkpoint counts in the same documents */
        if (!rc && st->data && st->data_docs >= 0 &&
            (st->data_docs != st->data->ndocs || st->data_crc != (int64_t)st->data->crc)) {
            snprintf(x->err, x->n, "cannot resume from %s: the training data changed since it "
                     "was written (%lld documents, crc32 %08llx then; %s now holds %lld, crc32 "
                     "%08llx), and its streams' cursors count places in the old documents: "
                     "restore the data the run trained on, or start a new run",
                     io_ckpt_path(x->ck), (long long)st->data_docs, (long long)st->data_crc,
                     st->data->name, (long long)st->data->ndocs, (long long)st->data->crc);
            rc = -2;
        }
    }
    if (!rc) rc = move(x, "streams/cursor", IO_I64, 2, d_cur, st->B, ids, st->cursor);
    if (!rc) rc = move(x, "streams/prev_segment", IO_I32, 2, d_prev, st->B, ids, st->prev);
    if (!rc) rc = move(x, "streams/last_token", IO_I32, 2, d_last, st->B, ids, st->last);
    if (!rc && st->msize) rc = move(x, "streams/memory", IO_F32, 2, d_mem, st->B, ids, st->M);
    free(ids);
    if (!rc && !x->writing) {
        /* checksums only show the file is as written: a file written by another tool may
           hold anything, and the data cursors and tokens index arrays */
        int bad = check_streams(st, trainer_model_get_spec(m)->vocab, io_ckpt_path(x->ck), x->err,
                                x->n);
        rc = comm_any_failed(c, bad, x->err, x->n) ? -1 : 0;
    }
    return rc;
}

int trainer_ckpt_save(comm_ctx *c, const trainer_config *cfg, const char *run_id,
                      trainer_model *m, const trainer_stream_state *st, int64_t step, char *err,
                      size_t n) {
    char dir[1100];
    ckpt_dir(dir, sizeof(dir), cfg->run_dir);
    /* no new checkpoint once the launcher is gone, agreed so that no rank waits in the write
       for one that stopped; a rank whose launcher dies after this finishes the file first
       (trainer/run/watchdog.h) */
    int64_t gone = trainer_watchdog_orphaned();
    comm_sum_i64(c, &gone, 1);
    if (gone) trainer_watchdog_exit();
    trainer_watchdog_hold(1);
    /* the whole file's room first: a full disk is named with the file's size (the sizing
       pass writes nothing and needs no file) */
    io_ckpt_size size = {0, 0, 0};
    xfer x = {NULL, 1, err, n, &size};
    transfer(&x, c, m, (trainer_stream_state *)st);
    io_ckpt *ck = io_ckpt_create_sized(c, dir, step, &size, err, n);
    if (!ck) {
        trainer_watchdog_hold(0);
        return -1;
    }
    x.ck = ck;
    x.sizing = NULL;
    if (transfer(&x, c, m, (trainer_stream_state *)st) != 0) {
        io_ckpt_abort(ck);
        trainer_watchdog_hold(0);
        return -1;
    }
    size_t len = trainer_config_to_text(cfg, NULL, 0);
    char *text = layer_xmalloc(len + 1);
    trainer_config_to_text(cfg, text, len + 1);
    io_ckpt_set_attr_str(ck, "config", text);
    io_ckpt_set_attr_i64(ck, "config_crc32", io_crc32(text, strlen(text)));
    free(text);
    /* no dropout or sampling in training: the data order and the seed are the whole of the
       run's randomness, and both are in the config and the stream cursors */
    io_ckpt_set_attr_i64(ck, "seed", cfg->seed);
    io_ckpt_set_attr_i64(ck, "schedule_step", step);
    io_ckpt_set_attr_i64(ck, "ranks", comm_size(c));
    io_ckpt_set_attr_str(ck, "run_id", run_id);
    int rc = io_ckpt_commit(ck, cfg->keep_ckpts, err, n);
    trainer_watchdog_hold(0);
    return rc;
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

/* ---- run identity ---- */

static int is_run_id(const char *s) {
    if (strlen(s) != TRAINER_RUN_ID_LEN) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
    return 1;
}

int trainer_run_id_read(const char *run_dir, char *id) {
    char path[1100], buf[128], why[1200];
    id[0] = '\0';
    snprintf(path, sizeof path, "%s/ckpt/RUN_ID", run_dir);
    if (io_read_small(path, buf, sizeof buf, why, sizeof why) < 0) return -1;
    buf[strcspn(buf, "\r\n")] = '\0';
    if (!is_run_id(buf)) return -1;
    snprintf(id, TRAINER_RUN_ID_LEN + 1, "%s", buf);
    return 0;
}

int trainer_run_id_write(comm_ctx *c, const char *run_dir, const char *id, char *err, size_t n) {
    int failed = 0;
    if (comm_rank(c) == 0) {
        char dir[1100], line[TRAINER_RUN_ID_LEN + 2];
        snprintf(dir, sizeof dir, "%s/ckpt", run_dir);
        snprintf(line, sizeof line, "%s\n", id);
        failed = io_mkdirs(dir, err, n) != 0 || io_write_atomic(dir, "RUN_ID", line, err, n) != 0;
    }
    if (comm_any_failed(c, failed, err, n)) return -1;
    /* Every rank must see the file rank 0 wrote: the checkpoints are written collectively
       into this directory, and a rank with a directory of its own (another working directory
       for a relative run_dir, node-local scratch) would leave the others waiting in the first
       one. A shared file system may show a new file late: a rank looks for up to 10 s. */
    if (comm_rank(c) != 0) {
        char seen[TRAINER_RUN_ID_LEN + 1] = "";
        for (int tries = 0; tries < 100; tries++) {
            if (trainer_run_id_read(run_dir, seen) == 0 && strcmp(seen, id) == 0) break;
            struct timespec pause = {0, 100000000};
            nanosleep(&pause, NULL);
        }
        if (strcmp(seen, id) != 0) {
            snprintf(err, n, "rank %d does not see %.300s/ckpt/RUN_ID as rank 0 wrote it: run_dir "
                     "must be one directory that every rank shares (a shared file system; a "
                     "relative run_dir resolved from the same working directory)", comm_rank(c),
                     run_dir);
            failed = 1;
        }
    }
    return comm_any_failed(c, failed, err, n) ? -1 : 0;
}

int trainer_run_id_create(comm_ctx *c, const char *run_dir, char *id, char *err, size_t n) {
    char buf[TRAINER_RUN_ID_LEN + 1] = "";
    if (comm_rank(c) == 0) {
        unsigned char r[TRAINER_RUN_ID_LEN / 2];
        if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
            /* no kernel entropy call: time, pid and address bits, mixed */
            layer_rng g;
            layer_rng_seed(&g, (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid() ^
                                   (uint64_t)(uintptr_t)&g);
            for (size_t i = 0; i < sizeof r; i++) r[i] = (unsigned char)layer_rng_next(&g);
        }
        for (size_t i = 0; i < sizeof r; i++) snprintf(buf + 2 * i, 3, "%02x", r[i]);
    }
    comm_broadcast(c, buf, sizeof buf, 0);
    snprintf(id, TRAINER_RUN_ID_LEN + 1, "%s", buf);
    return trainer_run_id_write(c, run_dir, id, err, n);
}

/* What tells the run of a checkpoint. */
/* The checkpoint's config text, checked against its config_crc32 where it has one (files
 * written before it was added have none): the file's model is built from this text, so an
 * edited one would make every older checkpoint look like another model's. Returns 0 with a
 * fresh *text, or -1 with the message. Collective. */
static int config_text(io_ckpt *ck, char **text, char *err, size_t n) {
    if (io_ckpt_get_attr_str(ck, "config", text, err, n) != 0) return -1;
    if (!io_ckpt_has_attr(ck, "config_crc32")) return 0;
    int64_t want = 0;
    int rc = io_ckpt_get_attr_i64(ck, "config_crc32", &want, err, n);
    if (rc == 0 && want != (int64_t)io_crc32(*text, strlen(*text))) {
        snprintf(err, n, "%s: attribute config fails its checksum (config_crc32): edited or "
                 "damaged", io_ckpt_path(ck));
        rc = -1;
    }
    if (rc != 0) {
        free(*text);
        *text = NULL;
    }
    return rc;
}

typedef struct member {
    int64_t step;                         /* the step it holds */
    char run_id[TRAINER_RUN_ID_LEN + 1];  /* "" in a version 1 file */
    trainer_config cfg;                   /* its stored config */
} member;

/* The step a checkpoint holds against its name: a negative one is damage, and a file named
 * for another step was renamed or copied over. Returns 0, or -1 with the message. */
static int check_step(const char *path, int64_t step, char *err, size_t n) {
    int64_t named;
    if (step < 0) {
        snprintf(err, n, "%s: holds step %lld, which is invalid", path, (long long)step);
        return -1;
    }
    if (io_ckpt_name_step(path, &named) == 0 && named != step) {
        snprintf(err, n, "%s: its name says step %lld but it holds step %lld (renamed or copied "
                 "over?)", path, (long long)named, (long long)step);
        return -1;
    }
    return 0;
}

/* Reads who the open checkpoint ck belongs to and checks it: the step in its file name is the
 * step it holds, its run id is run_id (unless either is unknown: NULL or "", or a version 1
 * file), its config is valid and, with ref, has ref's shape. Collective: every rank gets the
 * same answer. Returns 0, or -1 with "<path>: ..." in err. */
static int read_member(io_ckpt *ck, const char *run_id, const trainer_config *ref, member *mb,
                       char *err, size_t n) {
    const char *path = io_ckpt_path(ck);
    int64_t version = 0;
    mb->run_id[0] = '\0';
    if (io_ckpt_get_attr_i64(ck, "step", &mb->step, err, n) != 0 ||
        io_ckpt_get_attr_i64(ck, "format_version", &version, err, n) != 0)
        return -1;
    if (check_step(path, mb->step, err, n) != 0) return -1;
    if (version >= 2) {
        char *id = NULL;
        if (io_ckpt_get_attr_str(ck, "run_id", &id, err, n) != 0) return -1;
        int ok = is_run_id(id);
        if (ok) snprintf(mb->run_id, sizeof mb->run_id, "%s", id);
        else snprintf(err, n, "%s: attribute run_id '%.40s' is not a run id (damaged)", path, id);
        free(id);
        if (!ok) return -1;
        if (run_id && run_id[0] && strcmp(run_id, mb->run_id) != 0) {
            snprintf(err, n, "%s: belongs to another run (run id %.12s..., this run's is "
                     "%.12s...)", path, mb->run_id, run_id);
            return -1;
        }
    }
    char *text = NULL;
    if (config_text(ck, &text, err, n) != 0) return -1;
    trainer_config_defaults(&mb->cfg);
    char why[512];
    int rc = trainer_config_load_text(&mb->cfg, text, path, err, n);
    free(text);
    if (rc != 0) return -1;
    if (trainer_config_validate(&mb->cfg, why, sizeof why) != 0) {
        snprintf(err, n, "%s: its stored config is invalid: %s", path, why);
        return -1;
    }
    char diff[400];
    if (ref && trainer_config_diff_shape(&mb->cfg, ref, diff, sizeof diff) > 0) {
        snprintf(err, n, "%s: a checkpoint of a model of another shape: %s", path, diff);
        return -1;
    }
    return 0;
}

/* The newest candidate of run_dir that belongs to run_id (NULL: any run) and holds a valid
 * config: its index, its member record; or -1 with the newest refusal's reason in err. */
/* 1, with the message, when this user may not read the checkpoint at path, or another program
 * holds it open for writing (rank 0 decides): that is no damage, and setting the file aside would throw away the steps it holds, so a
 * resume stops there. Collective. */
static int unreadable(comm_ctx *c, const char *path, char *err, size_t n) {
    int64_t e = 0;
    if (comm_rank(c) == 0 && access(path, R_OK) != 0 && (errno == EACCES || errno == EPERM))
        e = errno;
    else if (comm_rank(c) == 0 && io_file_write_locked(path))
        e = EWOULDBLOCK;
    comm_broadcast(c, &e, sizeof e, 0);
    if (e == EWOULDBLOCK)
        snprintf(err, n, "%s: open for writing in another program (which holds HDF5's lock on "
                 "it): close it there to resume from it, or move it away to resume from an "
                 "older checkpoint", path);
    else if (e)
        snprintf(err, n, "%s: cannot read (%s): fix its permissions to resume from it, or move "
                 "it away to resume from an older checkpoint", path, strerror((int)e));
    return e != 0;
}

/* The first of paths that reads as a member of run_id's run (any run when NULL): its index,
 * or -1 with the first failure's message, or -2 when it is one this user may not read. */
static int first_member(comm_ctx *c, char (*paths)[IO_CKPT_PATH_MAX], int count,
                        const char *run_id, member *mb, char *err, size_t n) {
    char why[1024] = "";
    for (int i = 0; i < count; i++) {
        if (unreadable(c, paths[i], err, n)) return -2;
        io_ckpt *ck = io_ckpt_open(c, paths[i], err, n);
        int rc = ck ? read_member(ck, run_id, NULL, mb, err, n) : -1;
        io_ckpt_close(ck);
        if (rc == 0) return i;
        if (!why[0]) snprintf(why, sizeof why, "%s", err);
    }
    snprintf(err, n, "%s", why);
    return -1;
}

int trainer_run_id_for_resume(comm_ctx *c, const char *run_dir, char *id, char *err, size_t n) {
    int64_t have = trainer_run_id_read(run_dir, id) == 0;
    comm_broadcast(c, &have, sizeof have, 0);
    if (have) {
        comm_broadcast(c, id, TRAINER_RUN_ID_LEN + 1, 0);
        return 0;
    }
    char (*paths)[IO_CKPT_PATH_MAX] = layer_xmalloc(MAX_CKPTS * IO_CKPT_PATH_MAX);
    int count = candidates(c, run_dir, paths);
    member *mb = layer_xmalloc(sizeof *mb);
    int i = first_member(c, paths, count, NULL, mb, err, n);
    int rc = 0;
    if (i == -2) {
        rc = -1;
    } else if (i < 0) {
        char why[600];
        snprintf(why, sizeof why, "%s", err);
        snprintf(err, n, "no checkpoint to resume from in %s/ckpt%s%s", run_dir,
                 count ? ": " : "", why);
        rc = -1;
    } else if (mb->run_id[0]) {
        snprintf(id, TRAINER_RUN_ID_LEN + 1, "%s", mb->run_id);
        rc = trainer_run_id_write(c, run_dir, id, err, n);
    } else {
        rc = trainer_run_id_create(c, run_dir, id, err, n);
    }
    free(mb);
    free(paths);
    return rc;
}

int trainer_ckpt_peek_config(comm_ctx *c, const char *run_dir, trainer_config *cfg, char *path,
                             size_t pathlen, char *err, size_t n) {
    char (*paths)[IO_CKPT_PATH_MAX] = layer_xmalloc(MAX_CKPTS * IO_CKPT_PATH_MAX);
    char id[TRAINER_RUN_ID_LEN + 1];
    int64_t have = trainer_run_id_read(run_dir, id) == 0;
    comm_broadcast(c, &have, sizeof have, 0);
    comm_broadcast(c, id, sizeof id, 0);
    int count = candidates(c, run_dir, paths), rc = -1;
    member *mb = layer_xmalloc(sizeof *mb);
    int i = first_member(c, paths, count, have ? id : NULL, mb, err, n);
    if (i >= 0) {
        *cfg = mb->cfg;
        snprintf(path, pathlen, "%s", paths[i]);
        rc = 0;
    } else if (i == -1) {
        char why[600];
        snprintf(why, sizeof why, "%s", err);
        /* --resume runs/a/ckpt or --resume runs/a/ckpt/ckpt-N.h5: the run directory is meant */
        size_t len = strlen(run_dir);
        while (len > 1 && run_dir[len - 1] == '/') len--;
        const char *base = run_dir + len;
        while (base > run_dir && base[-1] != '/') base--;
        struct stat sb;
        int inner = (run_dir + len - base == 4 && strncmp(base, "ckpt", 4) == 0) ||
                    (len > 3 && strncmp(run_dir + len - 3, ".h5", 3) == 0) ||
                    (stat(run_dir, &sb) == 0 && !S_ISDIR(sb.st_mode)); /* a file */
        snprintf(err, n, "no checkpoint to resume from in %s/ckpt%s%s%s", run_dir,
                 count ? ": " : "", count ? why : "",
                 !count && inner ? " (--resume takes the run directory, the one holding ckpt/)"
                                 : "");
    }
    free(mb);
    free(paths);
    return rc;
}

int trainer_ckpt_read_config(comm_ctx *c, const char *path, trainer_config *cfg, char *err,
                             size_t n) {
    io_ckpt *ck = io_ckpt_open(c, path, err, n);
    if (!ck) return -1;
    char *text = NULL;
    int rc = config_text(ck, &text, err, n);
    if (rc == 0) rc = trainer_config_load_text(cfg, text, path, err, n);
    free(text);
    io_ckpt_close(ck);
    return rc;
}

int trainer_ckpt_load(comm_ctx *c, const char *path, trainer_model *m, trainer_stream_state *st,
                      int64_t *step, char *err, size_t n) {
    io_ckpt *ck = io_ckpt_open(c, path, err, n);
    if (!ck) return -1;
    xfer x = {ck, 0, err, n, NULL};
    int rc = io_ckpt_get_attr_i64(ck, "step", step, err, n);
    if (!rc) rc = check_step(path, *step, err, n); /* as on resume */
    if (!rc) rc = transfer(&x, c, m, st);
    io_ckpt_close(ck);
    return rc;
}

/* Renames the skipped checkpoint paths[0..nskip) to "<name>.skipped" (".skipped.2", ... when
 * taken) on rank 0, each said so: the run goes on from an older step and would otherwise write
 * its own checkpoint of that step over the file (another run's, a newer memtrain's, or a
 * damaged one kept for a look). Returns 0, or -1 with a message on every rank. */
static int set_aside(comm_ctx *c, char (*paths)[IO_CKPT_PATH_MAX], int nskip, char *err,
                     size_t n) {
    int64_t rc = 0;
    if (comm_rank(c) == 0)
        for (int i = 0; i < nskip && !rc; i++) {
            char to[IO_CKPT_PATH_MAX + 32], line[2 * IO_CKPT_PATH_MAX + 200];
            int k = 1;
            do {
                if (k == 1) snprintf(to, sizeof to, "%s.skipped", paths[i]);
                else snprintf(to, sizeof to, "%s.skipped.%d", paths[i], k);
            } while (access(to, F_OK) == 0 && ++k < 1000);
            if (k >= 1000 || rename(paths[i], to) != 0) {
                snprintf(err, n, "%s: cannot set the skipped checkpoint aside (%s), and this run "
                         "would write over it; move it out of the ckpt directory", paths[i],
                         k >= 1000 ? "too many .skipped files" : strerror(errno));
                rc = -1;
            } else {
                snprintf(line, sizeof line, "%s: set aside as %s, out of the way of this run's "
                         "own checkpoints", paths[i], to);
                comm_warn0(c, line);
            }
        }
    comm_broadcast(c, &rc, sizeof rc, 0);
    if (rc) comm_broadcast(c, err, n, 0);
    return (int)rc;
}

int trainer_ckpt_resume(comm_ctx *c, const char *run_dir, const char *run_id,
                        const trainer_config *cfg, trainer_model *m, trainer_stream_state *st,
                        int aside, int64_t *step, char *path, size_t pathlen, char *err,
                        size_t n) {
    char (*paths)[IO_CKPT_PATH_MAX] = layer_xmalloc(MAX_CKPTS * IO_CKPT_PATH_MAX);
    int count = candidates(c, run_dir, paths), rc = -1;
    member *mb = layer_xmalloc(sizeof *mb);
    snprintf(err, n, "no checkpoint in %s/ckpt to resume from", run_dir);
    int chosen = 0; /* the files before it were skipped */
    for (int i = 0; i < count; i++) {
        if (unreadable(c, paths[i], err, n)) {
            rc = -1;
            break;
        }
        io_ckpt *ck = io_ckpt_open(c, paths[i], err, n);
        rc = ck ? read_member(ck, run_id, cfg, mb, err, n) : -1;
        if (rc == 0) {
            xfer x = {ck, 0, err, n, NULL};
            rc = transfer(&x, c, m, st);
            *step = mb->step;
        }
        io_ckpt_close(ck);
        if (rc == 0) {
            snprintf(path, pathlen, "%s", paths[i]);
            chosen = i;
            break;
        }
        if (rc == -2) break; /* the data changed: no older checkpoint does better */
        if (i + 1 == count) { /* the caller says it: once */
            size_t len = strlen(err);
            if (count > 1 && len + 1 < n)
                snprintf(err + len, n - len, "; no older checkpoint left");
            break;
        }
        char line[1100];
        snprintf(line, sizeof line, "%s; falling back to an older checkpoint", err);
        comm_warn0(c, line);
    }
    if (rc == 0 && aside) rc = set_aside(c, paths, chosen, err, n);
    if (rc == 0 && comm_rank(c) == 0) {
        /* LATEST only hints: the newest checkpoint that loads decides, and a LATEST naming an
           older one (restored from a backup, left by hand) is said so */
        char dir[1100], latest[300];
        int64_t named;
        ckpt_dir(dir, sizeof dir, run_dir);
        if (io_ckpt_latest(dir, latest, sizeof latest) == 0 &&
            io_ckpt_name_step(latest, &named) == 0 && named < *step) {
            char line[1600];
            snprintf(line, sizeof line, "%s/LATEST names %s, older than %s, which loads: LATEST "
                     "was stale; resuming from the newest", dir, latest, path);
            comm_warn0(c, line);
        }
    }
    free(mb);
    free(paths);
    return rc;
}
