/* A model from a checkpoint, and its validation perplexity (memtrain eval). */
#ifndef MEMTRAIN_TRAINER_EVAL_H
#define MEMTRAIN_TRAINER_EVAL_H

#include <stdint.h>

#include "comm/comm.h"
#include "trainer/config/config.h"
#include "trainer/engine/footprint.h"
#include "trainer/model/model.h"

/* The model cfg describes, with the parameters and tables of checkpoint `path` (its step in
 * *step), after checking that this rank's memory holds it for `use` (`batch` sequences at
 * once when sampling). Collective; user errors end the job on every rank. */
trainer_model *trainer_model_from_checkpoint(comm_ctx *comm, const trainer_config *cfg,
                                            const char *path, trainer_footprint_use use,
                                            int batch, int64_t *step);

/* Loads the checkpoint `path` into a model built from cfg and prints (rank 0) the validation
 * perplexity of cfg's data. Collective. Returns 0; user errors end the job on every rank. */
int trainer_eval_checkpoint(comm_ctx *comm, const trainer_config *cfg, const char *path);

#endif
