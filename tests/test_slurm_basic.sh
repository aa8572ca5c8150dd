#!/usr/bin/env bash
# Starts a private Slurm cluster (jobs/local-slurm.sh) and checks what the job scripts rely on:
# sbatch runs a 2-rank mpirun; MPI programs start under both mpirun and srun --mpi=pmix inside an
# allocation; a job signalled with USR1 passes it on to its ranks, requeues itself, and its second
# run appends to the same output file; no job leaves a process behind.
# Run: bash tests/test_slurm_basic.sh (as root; about 20 s). Exit status 0 = pass.
# shellcheck source=tests/slurm_lib.sh
source "$(dirname "$0")/slurm_lib.sh"
t0=$SECONDS
start_cluster
cd "$dir" || exit 1
ompi_env="export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
ompi_env+=" OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_base_warn_component_unused=0"

# 1. A batch job running a 2-rank mpirun.
cat >hostname.sbatch <<EOF
#!/bin/bash
$ompi_env
mpirun --oversubscribe -np 2 hostname
EOF
hostname_job=$(sbatch --parsable -n 2 -o hostname.out hostname.sbatch)

# 2. An MPI program, launched the two ways a job script may use inside a 2-task allocation.
# With "wait" it stands in for the trainer: each rank waits for SIGUSR1 (its cue to checkpoint)
# and then exits cleanly.
cat >ranks.c <<'EOF'
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static volatile sig_atomic_t got_usr1;
static void on_usr1(int sig) { (void)sig; got_usr1 = 1; }
int main(int argc, char **argv) {
  int rank, size, sum = 0;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  signal(SIGUSR1, on_usr1);
  /* Doubles as a barrier: every rank has its handler once rank 0 says "ready". */
  MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (argc > 1 && strcmp(argv[1], "wait") == 0) {
    if (rank == 0) printf("ranks ready\n");
    fflush(stdout);
    for (int i = 0; i < 600 && !got_usr1; i++) usleep(100000);
    printf("rank %d %s\n", rank, got_usr1 ? "got USR1" : "timed out");
  } else {
    printf("rank %d of %d sum %d\n", rank, size, sum);
  }
  MPI_Finalize();
  return 0;
}
EOF
mpicc -o ranks ranks.c || fail "mpicc could not build a 20-line MPI program"
cat >ranks.sbatch <<EOF
#!/bin/bash
$ompi_env
echo "mpirun:"
mpirun ./ranks | sort
echo "srun-pmix:"
srun --mpi=pmix ./ranks | sort
EOF
ranks_job=$(sbatch --parsable -n 2 -o ranks.out ranks.sbatch)

# 3. The checkpoint-and-requeue pattern of the job scripts. On USR1 the batch shell passes the
# signal to mpirun (which forwards it to every rank), waits for mpirun to exit, then requeues
# the job. mpirun runs in the background because bash runs traps only between commands; and it
# must have ended before the requeue, or it would outlive its batch shell.
cat >requeue.sbatch <<EOF
#!/bin/bash
$ompi_env
EOF
cat >>requeue.sbatch <<'EOF'
run=${SLURM_RESTART_COUNT:-0}
echo "run $run start"
if [ "$run" -ge 1 ]; then
  echo "run $run done"
  exit 0
fi
mpirun ./ranks wait &
pid=$!
on_usr1() {
  echo "run $run got USR1"
  kill -USR1 "$pid"
  wait "$pid"
  echo "run $run mpirun exit $?"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
}
trap on_usr1 USR1
echo "run $run trap set"
wait "$pid"
echo "run $run not signalled"
EOF
requeue_job=$(sbatch --parsable -n 2 --signal=B:USR1@5 --requeue --open-mode=append --time=1 \
  -o requeue.out requeue.sbatch)

# Checks for job 1.
state=$(wait_state "$hostname_job" 30 'COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY')
[ "$state" = COMPLETED ] || fail "hostname job ended $state"
[ "$(job_field "$hostname_job" ExitCode)" = 0:0 ] || fail "hostname job exit code"
[ "$(wc -l <hostname.out)" -eq 2 ] || fail "hostname.out should hold 2 lines"
[ "$(grep -cx "$(hostname)" hostname.out)" -eq 2 ] || fail "hostname.out lines are not the host name"
squeue -h -j "$hostname_job" -o %T >/dev/null || fail "squeue does not know the finished job"
echo "sbatch + mpirun -np 2: ok after $((SECONDS - t0)) s"

# Checks for job 3: signal it once the batch shell's trap is set and the ranks have their
# handlers (an untrapped USR1 would kill them).
wait_state "$requeue_job" 30 RUNNING >/dev/null
deadline=$((SECONDS + 30))
until grep -q '^run 0 trap set$' requeue.out 2>/dev/null && grep -q '^ranks ready$' requeue.out; do
  [ $SECONDS -lt $deadline ] || fail "requeue job's first run never got ready"
  sleep 0.2
done
scancel --signal=USR1 --batch "$requeue_job"
state=$(wait_state "$requeue_job" 45 'COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL')
[ "$state" = COMPLETED ] || fail "requeue job ended $state"
[ "$(job_field "$requeue_job" Restarts)" = 1 ] || fail "requeue job was not restarted once"
# Slurm adds its own "CANCELLED ... DUE TO JOB REQUEUE" line between the runs.
got=$(grep '^run ' requeue.out | tr '\n' '|')
[ "$got" = "run 0 start|run 0 trap set|run 0 got USR1|run 0 mpirun exit 0|run 1 start|run 1 done|" ] ||
  fail "requeue.out has '$got'"
[ "$(grep -c '^rank [01] got USR1$' requeue.out)" -eq 2 ] || fail "not every rank got USR1"
echo "USR1 -> mpirun -> ranks, requeue, rerun: ok after $((SECONDS - t0)) s"

# Checks for job 2.
state=$(wait_state "$ranks_job" 30 'COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY')
[ "$state" = COMPLETED ] || fail "MPI job ended $state"
# Both launchers must start 2 ranks that see each other (sum of ranks 0+1 = 1).
want=$'mpirun:\nrank 0 of 2 sum 1\nrank 1 of 2 sum 1\nsrun-pmix:\nrank 0 of 2 sum 1\nrank 1 of 2 sum 1'
[ "$(cat ranks.out)" = "$want" ] || fail "ranks.out differs from expected"
echo "mpirun and srun --mpi=pmix in an allocation: ok"

# No job left a process behind (proctrack/linuxproc loses orphans; stop would kill them, but
# a job script that orphans its mpirun is wrong on a real cluster too).
for e in /proc/[0-9]*/environ; do
  if grep -qzxF "SLURM_CONF=$dir/slurm.conf" "$e" 2>/dev/null &&
    grep -qz '^SLURM_JOB_ID=' "$e" 2>/dev/null; then
    p=${e#/proc/}
    p=${p%/environ}
    fail "job process $p ($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null || true)) still running"
  fi
done

"$repo/jobs/local-slurm.sh" stop "$dir"
! "$repo/jobs/local-slurm.sh" status "$dir" >/dev/null || fail "daemons still running after stop"
"$repo/jobs/local-slurm.sh" stop "$dir" # stopping twice is fine
echo "all slurm checks passed in $((SECONDS - t0)) s"
