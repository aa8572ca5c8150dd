/* Stops a rank whose launcher (mpirun, orted, prted, slurmstepd) has died, so that no rank trains on with nobody reading it. */
#ifndef MEMTRAIN_TRAINER_WATCHDOG_H
#define MEMTRAIN_TRAINER_WATCHDOG_H

/* Why a thread that polls getppid(): a rank is the child of the launcher's daemon on its
 * node (mpirun itself on mpirun's node, orted/prted elsewhere, slurmstepd under srun), and
 * when that process is killed (kill -9 of mpirun) the rank is re-parented and nothing tells
 * it. prctl(PR_SET_PDEATHSIG) is not enough: it fires when the forking *thread* of the parent
 * ends, which in a multi-threaded launcher is not the launcher's end, and it is Linux-only.
 * A per-step check would not do either: a rank waiting in a collective on a peer that is gone
 * never reaches the next step. So a thread, which never calls MPI, looks every 100 ms whether
 * the parent is still the one the rank started with; when it is not, the rank ends at once
 * (_exit, status 1), or when a checkpoint is being written, as soon as that write is over
 * (at most 60 s), so that the run directory keeps a complete newest checkpoint; Open MPI's
 * own runtime ends a rank that lost mpirun about two seconds later in any case. The run lock
 * (trainer/run/preflight.h) ends with the process.
 *
 * The poll alone would let a rank start new work between two looks (a step, then a whole new
 * checkpoint the thread then waits for). So the training loop also asks at every step
 * boundary, and a checkpoint before it starts (trainer_watchdog_orphaned, agreed over the
 * ranks): once the launcher is gone no new step and no new checkpoint write begins.
 *
 * Only ranks started by a launcher are watched (Open MPI's OMPI_COMM_WORLD_SIZE, PMIx's
 * PMIX_RANK or Slurm's SLURM_STEP_ID in the environment): a single process started from a
 * shell goes on when that shell exits (nohup). */

/* Starts the watch (once; later calls do nothing). Call before MPI starts, so the environment
 * is still the launcher's. */
void trainer_watchdog_start(void);

/* A checkpoint write begins (1) or ends (0): the watchdog lets it finish before it ends the
 * rank. */
void trainer_watchdog_hold(int writing);

/* 1 when this rank is watched and its launcher is gone (it was re-parented), else 0. Local and
 * cheap (getppid): callers sum it over the ranks so that all stop together. */
int trainer_watchdog_orphaned(void);

/* Ends the rank as the watchdog does: "memtrain: pid 123: the launcher (pid 99) is gone;
 * stopping" (or "another rank's launcher is gone" on a rank whose own is there) on stderr,
 * then _exit(1). */
_Noreturn void trainer_watchdog_exit(void);

#endif
