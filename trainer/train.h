/* The training run: data streams, rollouts, gradient reduction, optimizer, evaluation and rank-0 logging. */
#ifndef MEMTRAIN_TRAINER_TRAIN_H
#define MEMTRAIN_TRAINER_TRAIN_H

#include "comm/comm.h"
#include "trainer/config.h"
#include "trainer/model.h"

/* Fills a model spec from a validated config and the data's vocabulary. */
void trainer_spec_from_config(trainer_model_spec *spec, const trainer_config *cfg, int vocab);

/* Trains as the config says, on every rank of comm together. Returns 0 when the run finished;
 * user errors (bad data, NaN loss) end the job through comm_exit_error on all ranks. */
int trainer_train(comm_ctx *comm, const trainer_config *cfg);

#endif
