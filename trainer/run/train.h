/* The training run: data streams, rollouts, gradient reduction, optimizer, evaluation and rank-0 logging. */
#ifndef MEMTRAIN_TRAINER_TRAIN_H
#define MEMTRAIN_TRAINER_TRAIN_H

#include "comm/comm.h"
#include "io/data.h"
#include "trainer/config/config.h"
#include "trainer/model/model.h"

/* Tokens one optimizer step trains on over all ranks: streams x horizon x seg_len. */
long long trainer_tokens_per_step(const trainer_config *cfg);

/* Loads one split of cfg's data on every rank; a missing or malformed file, tokens beyond
 * cfg->vocab, or a rank that read other data than rank 0 (compared by document and token
 * counts and a CRC of the tokens) end the job with one message from all ranks. Collective. */
io_dataset *trainer_load_split(comm_ctx *comm, const trainer_config *cfg, io_split split);

/* Whether cfg->init_from is a checkpoint a new run of cfg can start from: its model has cfg's
 * shape (other data within the vocab, and another stream count, are fine: the streams start
 * fresh). Collective. Returns 0, or -1 with "init_from = FILE: the model's shape differs:
 * d_model (64 -> 32)" or the file's own problem in err. Checked before the run directory is
 * made, and again when the run loads it. */
int trainer_init_from_check(comm_ctx *comm, const trainer_config *cfg, char *err, size_t n);

/* The validation documents an evaluation scores: the first cfg->eval_docs of val, or all of
 * them when eval_docs is 0 or larger than the split. */
int64_t trainer_eval_docs(const trainer_config *cfg, const io_dataset *val);

/* The lanes an evaluation of ndocs documents deals them to: cfg->streams, or with more streams
 * than documents, the lanes up to the first block boundary past the last document. Lane j
 * then scores document j alone either way, in blocks of the same size, so the figure is the
 * same, and time and memory follow the documents, not the streams asked for. */
int trainer_eval_lanes(const trainer_config *cfg, int64_t ndocs);

/* Validation perplexity of model over the first trainer_eval_docs documents of val, each
 * scored whole and from its start in the model's own way (segments of seg_len, the Memformer
 * carrying its memory from one to the next): the same tokens for every architecture,
 * seg_len, streams, stream_block and rank count, and the same figure on any rank count.
 * *tokens (if not NULL) receives the tokens scored. With may_stop, a stop signal on any rank
 * (train catches them) ends the pass where it is: NaN and no tokens. Collective. */
double trainer_validation_ppl(comm_ctx *comm, const trainer_config *cfg, trainer_model *model,
                              const io_dataset *val, int64_t *tokens, int may_stop);

/* From now on SIGUSR1, SIGTERM, SIGINT and SIGHUP (unless ignored) ask the training run to
 * stop at its next step boundary (or before its first step, with nothing written). main calls
 * it first thing for train, so that a signal while MPI starts is not lost (nor taken with a
 * launcher's wrapper's ignore rule); the run calls it again. */
void trainer_catch_stop_signals(void);

/* Exit status of a run stopped by SIGUSR1/SIGTERM after writing its checkpoint (EX_TEMPFAIL:
 * try again later, e.g. requeue the job and resume). */
#define TRAINER_EXIT_INTERRUPTED 75

/* Trains as the config says, on every rank of comm together, from scratch or, when resume_dir
 * is not NULL, from the newest valid checkpoint in resume_dir/ckpt (the caller has checked
 * the configs agree; `changed`, when neither NULL nor empty, names the settings the resume changes
 * and is logged after the resume line). Writes a checkpoint every ckpt_every steps and at the end. SIGUSR1 or
 * SIGTERM stop the run at the next step boundary with a checkpoint. Returns 0 when the run
 * finished, TRAINER_EXIT_INTERRUPTED when a signal stopped it; user errors (bad data, NaN loss)
 * end the job through comm_exit_error on all ranks. */
int trainer_train(comm_ctx *comm, const trainer_config *cfg, const char *resume_dir,
                  const char *changed);

#endif
