/* What a run checks and takes before any training: its run directory (writable, locked, its run id, the metrics file) and its memory. */
#ifndef MEMTRAIN_TRAINER_PREFLIGHT_H
#define MEMTRAIN_TRAINER_PREFLIGHT_H

#include <stdio.h>

#include "comm/comm.h"
#include "io/data.h"
#include "trainer/config/config.h"
#include "trainer/engine/footprint.h"

/* The run directory as a run holds it. */
typedef struct trainer_rundir trainer_rundir;

/* Collective, at the start of a training run, before data is loaded or memory allocated.
 * Every failure ends the job on every rank with one message (comm_exit_error), so a run that
 * cannot keep its results never starts:
 *  - makes cfg->run_dir and run_dir/ckpt (rank 0): a path under a regular file, a read-only
 *    file system or missing permissions are reported here, not at the first checkpoint;
 *  - locks run_dir/LOCK for the run's life: rank 0 takes it exclusively (naming itself in
 *    the file), then every rank holds it shared until trainer_rundir_close or its end, so a
 *    second run or resume on the directory is refused ("runs/a is in use by another memtrain
 *    run (memtrain pid 123 on host n1 since ...)") while any rank of this one lives;
 *  - refuses a directory under a checkpoint's name in run_dir/ckpt (no checkpoint could be
 *    written there): "run_dir runs/a cannot be used: runs/a/ckpt/ckpt-00000012.h5 is a
 *    directory, where a checkpoint file belongs: move it out of the way";
 *  - settles the run id: a new one for a fresh run, which refuses a run_dir that holds
 *    checkpoints already (another run's: resume it, or choose another run_dir); the
 *    directory's for a resume (trainer_run_id_for_resume on resume_dir); written to
 *    run_dir/ckpt/RUN_ID either way (proving the checkpoint directory writable);
 *  - refuses a metrics.csv or config.conf that memtrain did not write (its first line not
 *    memtrain's header), which the run would append to or replace;
 *  - opens run_dir/metrics.csv for appending on rank 0, writing csv_header when it is new.
 * Returns the holding, to release with trainer_rundir_close. */
/* The first line of run_dir/config.conf, by which the run knows the file for its own. */
#define TRAINER_RUN_CONFIG_HEAD "# the configuration of this run's latest sitting"
trainer_rundir *trainer_rundir_open(comm_ctx *c, const trainer_config *cfg,
                                    const char *resume_dir, const char *csv_header);

/* The run id (TRAINER_RUN_ID_LEN hex digits), owned by rd. */
const char *trainer_rundir_id(const trainer_rundir *rd);

/* Whether the run resumes the directory it writes into (the same directory, however spelled):
 * then its own checkpoints could land on the files a resume skipped. */
int trainer_rundir_resume_in_place(const trainer_rundir *rd);

/* Rank 0's metrics file (NULL on the other ranks), owned by rd. */
FILE *trainer_rundir_metrics(trainer_rundir *rd);

/* Rank 0: pushes what was written to the metrics file out (fflush) and checks that every
 * write since it was opened succeeded. Returns 0 (always on the other ranks), or -1 with
 * "runs/a/metrics.csv: cannot write (No space left on device)" in err. Not collective: the
 * caller agrees on the result. */
int trainer_rundir_metrics_flush(trainer_rundir *rd, char *err, size_t n);

/* As trainer_rundir_metrics_flush, then closes the metrics file (checking that too), which
 * trainer_rundir_metrics returns NULL for afterwards. */
int trainer_rundir_metrics_close(trainer_rundir *rd, char *err, size_t n);

/* Closes the metrics file and releases the lock. NULL is fine. Not collective. */
void trainer_rundir_close(trainer_rundir *rd);

/* 1 when the run directory is no longer the one this run locked: removed or moved away while
 * the run went on (its LOCK file is gone from run_dir, or is another file); 0 otherwise, also
 * on a file system without locks and when the name cannot be looked up for another reason (a
 * permission, an I/O error). Not collective. */
int trainer_rundir_gone(const trainer_rundir *rd);

/* Collective, before the model or data are allocated: checks that the products of cfg fit the
 * engine's ints (trainer_footprint_check_ranges) and that the footprint of `use` fits the
 * memory of each rank: MemAvailable (or the free pages), less when a cgroup or RLIMIT_AS
 * limits the process, divided by the job's ranks on the node. On a machine that cannot hold
 * it the job ends on every rank with one message naming the estimate and the keys that drive
 * it. With announce, rank 0 first prints "memory: about ... per rank ... of ... available".
 * `batch`: sequences sampled at once (TRAINER_USE_SAMPLE), else 0. */
void trainer_preflight_memory(comm_ctx *c, const trainer_config *cfg, trainer_footprint_use use,
                              int batch, int announce);

/* Rank 0 prints a note when cfg->eval_docs asks for more documents than the validation split
 * holds: each evaluation then scores all of them. Returns the documents an evaluation scores. */
long long trainer_preflight_eval(comm_ctx *c, const trainer_config *cfg, const io_dataset *val);

#endif
