/* A model from a checkpoint, and its validation perplexity (memtrain eval). */
#include "trainer/run/eval.h"

#include <stdio.h>
#include <string.h>

#include "io/data.h"
#include "trainer/run/checkpoint.h"
#include "trainer/run/preflight.h"
#include "trainer/run/train.h"

trainer_model *trainer_model_from_checkpoint(comm_ctx *comm, const trainer_config *cfg,
                                            const char *path, trainer_footprint_use use,
                                            int batch, int64_t *step) {
    char err[512];
    trainer_preflight_memory(comm, cfg, use, batch, 0);
    trainer_model_spec spec;
    trainer_spec_from_config(&spec, cfg);
    trainer_model *m = trainer_model_create(&spec, comm);
    if (trainer_ckpt_load(comm, path, m, NULL, step, err, sizeof(err)) != 0)
        comm_exit_error(comm, err);
    return m;
}

int trainer_eval_checkpoint(comm_ctx *comm, const trainer_config *cfg, const char *path) {
    io_dataset *val = trainer_load_split(comm, cfg, IO_SPLIT_VAL);
    long long ndocs = trainer_preflight_eval(comm, cfg, val);
    /* the memory estimate and the model's plan for the lanes the documents fill */
    trainer_config ec = *cfg;
    ec.streams = trainer_eval_lanes(cfg, ndocs);
    int64_t step = 0;
    trainer_model *m = trainer_model_from_checkpoint(comm, &ec, path, TRAINER_USE_EVAL, 0, &step);
    double t = comm_time();
    int64_t tokens = 0;
    double ppl = trainer_validation_ppl(comm, &ec, m, val, &tokens, 0);
    if (comm_rank(comm) == 0) {
        char shown[2200];
        /* the set scored: the data's own split, or val_data when it names another file */
        char set[600], shown_set[2400];
        if (strcmp(cfg->val_data, "split") == 0) snprintf(set, sizeof set, "%s", cfg->data);
        else snprintf(set, sizeof set, "%s (val_data)", cfg->val_data);
        printf("%s (step %lld): validation perplexity %.6f on %s, the first %lld documents whole "
               "(%lld tokens) (%.1f s)\n",
               comm_escape(shown, sizeof(shown), path), (long long)step, ppl,
               comm_escape(shown_set, sizeof(shown_set), set), ndocs, (long long)tokens, comm_time() - t);
    }
    trainer_model_free(m);
    io_dataset_free(val);
    return 0;
}
