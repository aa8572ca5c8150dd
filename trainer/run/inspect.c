/* memtrain inspect: what a checkpoint holds, and a few of its values as stored. */
#include "trainer/run/inspect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/ckpt.h"
#include "layers/common.h"
#include "trainer/model/model.h"
#include "trainer/run/checkpoint.h"

int trainer_inspect_checkpoint(comm_ctx *comm, const trainer_config *cfg, const char *path) {
    char err[512], name[256];
    /* the model's shape gives every array's dims */
    trainer_model_spec spec;
    trainer_spec_from_config(&spec, cfg);
    trainer_model *m = trainer_model_create(&spec, comm);
    int64_t step = 0, zero = 0;
    /* every array read and checked first (dims, checksums), as eval would: the listing below
       is of the arrays the model has, so it stands for the file only once they all load */
    if (trainer_ckpt_load(comm, path, m, NULL, &step, err, sizeof(err)) != 0)
        comm_exit_error(comm, err);
    io_ckpt *ck = io_ckpt_open(comm, path, err, sizeof(err));
    if (!ck) comm_exit_error(comm, err);
    char *run_id = NULL;
    if (io_ckpt_get_attr_str(ck, "run_id", &run_id, err, sizeof(err)) != 0)
        run_id = NULL; /* a version 1 file has none */
    int has_order = io_ckpt_has(ck, "streams/order"); /* on every rank: older files lack it */
    char shown[2200];
    trainer_params *p = trainer_model_params(m);
    trainer_tables *tb = trainer_model_tables(m);
    if (comm_rank(comm) == 0) {
        printf("%s: step %lld\n", comm_escape(shown, sizeof(shown), path), (long long)step);
        printf("run id: %s\n", run_id ? run_id : "(none: a version 1 file)");
        printf("model: %s/%s d_model %d, dense params %zu in %d tensors, table params %zu in %d "
               "groups\n", spec.memformer ? "memformer" : "decoder", spec.hash ? "hash" : "dense",
               spec.C, p->total, p->n, trainer_tables_numel(tb), trainer_tables_ngroups(tb));
        size_t len = trainer_config_to_text(cfg, NULL, 0);
        char *text = layer_xmalloc(len + 1);
        trainer_config_to_text(cfg, text, len + 1);
        printf("config:\n");
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) printf("  %s\n", line);
        free(text);
        /* dense tensors are stored flat, as one dim-0 slice with its own checksum */
        printf("arrays (each also with Adam moments m and v beside data):\n");
        for (int i = 0; i < p->n; i++) {
            const trainer_tensor *t = &p->t[i];
            char rows[64] = "";
            if (t->size > (size_t)spec.C && t->size % (size_t)spec.C == 0)
                snprintf(rows, sizeof(rows), " = %zu x %d", t->size / (size_t)spec.C, spec.C);
            printf("  dense/%s/data (1, %zu)%s\n", t->name, t->size, rows);
        }
        for (int g = 0; g < trainer_tables_ngroups(tb); g++) {
            const trainer_table_group *gr = trainer_tables_group(tb, g);
            for (int o = 0; o < gr->nout; o++)
                printf("  tables/%s/out%d/data (%d, %d, %d)\n", gr->name, o, gr->K, 1 << gr->tau,
                       gr->OC);
        }
        size_t ms0 = trainer_model_memory_size(m);
        printf("  streams/cursor (%d, 2), streams/prev_segment (%d, %d), streams/last_token (%d, 1)",
               cfg->streams, cfg->streams, cfg->seg_len, cfg->streams);
        if (has_order) printf(", streams/order (1)");
        if (ms0) printf(", streams/memory (%d, %zu)", cfg->streams, ms0);
        printf("\n");
    }
    free(run_id);
    if (trainer_tables_ngroups(tb) > 0) {
        const trainer_table_group *g = trainer_tables_group(tb, 0);
        int64_t dims[3] = {g->K, (int64_t)1 << g->tau, g->OC};
        float *row = layer_xmalloc((size_t)dims[1] * g->OC * sizeof(float));
        snprintf(name, sizeof(name), "tables/%s/out0/data", g->name);
        if (io_ckpt_read(ck, name, IO_F32, 3, dims, 1, &zero, row, err, sizeof(err)) != 0)
            comm_exit_error(comm, err);
        comm_print0(comm, "%s[0][0][0:4] = %.9g %.9g %.9g %.9g\n", name, row[0], row[1], row[2], row[3]);
        free(row);
    }
    size_t ms = trainer_model_memory_size(m);
    if (ms) {
        int64_t dims[2] = {cfg->streams, (int64_t)ms};
        float *mem = layer_xmalloc(ms * sizeof(float));
        if (io_ckpt_read(ck, "streams/memory", IO_F32, 2, dims, 1, &zero, mem, err, sizeof(err)) != 0)
            comm_exit_error(comm, err);
        comm_print0(comm, "streams/memory[0][0:4] = %.9g %.9g %.9g %.9g\n", mem[0], mem[1], mem[2], mem[3]);
        free(mem);
    }
    io_ckpt_close(ck);
    trainer_model_free(m);
    return 0;
}
