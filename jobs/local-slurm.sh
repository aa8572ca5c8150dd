#!/usr/bin/env bash
# Starts and stops a private single-node Slurm cluster (munged + slurmctld + slurmd) on this
# machine, everything kept in one directory, for tests and for trying the job scripts.
#
#   jobs/local-slurm.sh start DIR    # create DIR's key, config, state; start daemons; wait for idle
#   eval "$(jobs/local-slurm.sh env DIR)"   # point sbatch/squeue/scontrol/srun at it
#   jobs/local-slurm.sh status DIR   # daemons alive? plus sinfo; exit 1 if any daemon is down
#   jobs/local-slurm.sh stop DIR     # stop the daemons (idempotent); DIR itself is left for the caller
#
# Runs as root, without systemd or cgroups (container friendly). Ports are picked free at start,
# so several instances and a system Slurm can coexist. Environment knobs:
#   LOCAL_SLURM_CPUS     CPUs to advertise (default: nproc). More than nproc is allowed; slurmd
#                        then trusts the config (SlurmdParameters=config_overrides).
#   LOCAL_SLURM_TIMEOUT  seconds to wait for the node to become idle (default 60).
#   LOCAL_SLURM_CRED_EXPIRE  AuthInfo cred_expire in seconds (default 10; Slurm's default is 120),
#                        which is also the delay before a requeued job becomes eligible again.
#
# Findings with slurm-wlm 22.05.8, munge 0.5.15, Open MPI 4.1.4 (Debian 12):
# - AuthInfo=socket=PATH is read by both auth/munge and cred/munge; the clients (sbatch, ...) read
#   it from SLURM_CONF, so no munge environment variable is needed (libmunge has none).
# - slurmd must be started with -N NODENAME matching NodeName; NodeName is `hostname -s`
#   with NodeAddr=127.0.0.1, SlurmctldHost=NAME(127.0.0.1).
# - Requeue on a signal: submit with
#     sbatch --signal=B:USR1@SECONDS --requeue --open-mode=append SCRIPT
#   and in SCRIPT trap USR1: pass it to mpirun, wait for mpirun to exit (the ranks checkpoint),
#   then `scontrol requeue "$SLURM_JOB_ID"` and exit 0 (no exit-code trick is needed). Requeue
#   before mpirun has ended and the batch shell's exit orphans it; proctrack/linuxproc then loses
#   it and it runs on beside the rerun (`stop` kills such leftovers). The rerun sees
#   SLURM_RESTART_COUNT=1,2,... ; with --open-mode=append all runs' output stays in one file.
#   The requeued job stays PENDING (Reason=BeginTime) for cred_expire+1 s: 121 s with Slurm's
#   default, 11 s here.
# - Bash runs a trap only between commands, so the long-running step must be started in the
#   background and waited for: `mpirun ... & pid=$!; wait $pid`, and after the trap ran, `wait $pid`
#   again for its exit status. Until the trap is set, USR1 kills the batch shell.
# - B: matters with mpirun: the ranks are not a Slurm job step, so --signal=USR1 without B: (like
#   `scancel --signal=USR1 JOBID` without --batch) reaches nobody. The batch shell's trap can
#   pass it on with `kill -USR1 $pid`; mpirun forwards USR1 to every rank.
# - The time-limit signal is checked about every 30 s, so it may come late: with --time=1 and
#   @50 it arrived 27 s after start (33 s before the limit). Leave that much slack in SECONDS.
#   `scancel --signal=USR1 --batch JOBID` delivers the same signal at once (used by the test).
# - Inside an allocation, `mpirun` (Open MPI built --with-slurm) takes its slots from SLURM_* and
#   needs no -np; OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 are needed as root.
#   `srun --mpi=pmix` also works (Slurm's mpi_pmix_v4 with Open MPI's pmix ext3x).
# - More tasks than CPUs (sbatch -n 3 on 2 CPUs) pends forever (Reason=PartitionConfig) unless
#   the job asks for --overcommit, or the cluster is started with LOCAL_SLURM_CPUS=3 or more.
set -euo pipefail

usage() {
  echo "usage: $0 start|stop|status|env DIR" >&2
  exit 2
}

[ $# -eq 2 ] || usage
cmd=$1
dir=$2

# Absolute path: the config and the daemons must not depend on the caller's working directory.
abs_dir() {
  mkdir -p "$1"
  (cd "$1" && pwd -P)
}

# True if nothing listens on TCP port $1.
port_free() {
  ! ss -Htan "( sport = :$1 )" | grep -q .
}

# Prints a port P in 20000..29998 with P and P+1 both free.
pick_ports() {
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + (RANDOM * 32768 + RANDOM + i) % 9999))
    if port_free "$p" && port_free $((p + 1)); then
      echo "$p"
      return 0
    fi
  done
  echo "local-slurm: no free port pair found in 20000-29999" >&2
  return 1
}

# Each daemon's pid file, by daemon name.
pidfile() {
  case $1 in
    munged) echo "$dir/munge/munged.pid" ;;
    *) echo "$dir/run/$1.pid" ;;
  esac
}

# Prints the pid of daemon $1 if its pid file names a live process of that name (so a stale
# pid file whose pid was reused by another program is never acted on); fails otherwise.
daemon_pid() {
  local f pid
  f=$(pidfile "$1")
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
  echo "$pid"
}

print_logs() {
  local f
  for f in "$dir"/log/*.log; do
    [ -e "$f" ] || continue
    echo "---- $f (last 30 lines)" >&2
    tail -n 30 "$f" >&2
  done
}

write_conf() { # ctld_port
  local port=$1 node cores cpus mem overrides=""
  node=$(hostname -s)
  # (GNU nproc counts OMP_NUM_THREADS, which jobs set to 1: the cores without it)
  cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
  cpus=${LOCAL_SLURM_CPUS:-$cores}
  if [ "$cpus" -gt "$cores" ]; then
    # Otherwise slurmd reports fewer CPUs than configured and the node is drained.
    overrides="SlurmdParameters=config_overrides"
  fi
  # A little under MemTotal so the node is never drained for "Low RealMemory".
  mem=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.95 }' /proc/meminfo)
  cat >"$dir/slurm.conf" <<EOF
# Private single-node cluster written by jobs/local-slurm.sh; see that script for how to use it.
ClusterName=memtrain-local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=${LOCAL_SLURM_CRED_EXPIRE:-10}
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: track processes through /proc (parent links), no task binding.
# linuxproc loses processes orphaned by an exiting batch shell; proctrack/pgid was worse here,
# since mpirun puts its ranks in their own process group, so cancelled ranks lived on.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
JobRequeue=1
# Seconds between SIGTERM and SIGKILL when a job is cancelled or times out (default 30).
KillWait=5
SchedulerParameters=sched_interval=1
# Finished jobs stay visible to scontrol/squeue this long (there is no accounting database).
MinJobAge=300
MailProg=/bin/true
$overrides
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=$cpus RealMemory=$mem State=UNKNOWN
# FORCE:4 lets up to four jobs share a core, so tests can run several small jobs side by side.
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
}

# Reports why start failed, shows the logs, and stops whatever did start.
start_failed() {
  echo "local-slurm: start failed: $1" >&2
  print_logs
  stop
  exit 1
}

start() {
  local port node t0 deadline state
  if daemon_pid slurmctld >/dev/null || daemon_pid slurmd >/dev/null ||
    daemon_pid munged >/dev/null; then
    echo "local-slurm: already running in $dir (stop it first)" >&2
    exit 1
  fi
  for v in LOCAL_SLURM_CPUS LOCAL_SLURM_TIMEOUT LOCAL_SLURM_CRED_EXPIRE; do
    if ! [[ ${!v:-1} =~ ^[1-9][0-9]{0,8}$ ]]; then
      echo "local-slurm: $v='${!v}' is not a positive integer" >&2
      exit 2
    fi
  done
  # munged refuses key/socket directories that others can write to; the socket directory stays
  # searchable so that other users may submit jobs too.
  install -d -m 0700 "$dir/state" "$dir/spool" "$dir/run" "$dir/log"
  install -d -m 0755 "$dir/munge"
  rm -f "$dir/munge/munge.key"
  mungekey --create --keyfile="$dir/munge/munge.key"
  chmod 0600 "$dir/munge/munge.key"
  # --force: accept parent directories we do not control (e.g. a group-writable TMPDIR).
  munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munged.seed" || start_failed "munged"

  port=$(pick_ports) || start_failed "no free ports"
  write_conf "$port"
  node=$(hostname -s)
  # -i: ignore state from an earlier run of the same DIR rather than refusing to start.
  slurmctld -f "$dir/slurm.conf" -i || start_failed "slurmctld"
  slurmd -f "$dir/slurm.conf" -N "$node" || start_failed "slurmd"

  t0=$SECONDS
  deadline=$((t0 + ${LOCAL_SLURM_TIMEOUT:-60}))
  while :; do
    state=$(SLURM_CONF=$dir/slurm.conf sinfo -h -n "$node" -o %t 2>/dev/null || true)
    case $state in
      idle | mix | alloc) break ;;
    esac
    # The daemons write their pid files a moment after forking, so a missing one only counts
    # as a dead daemon after a few seconds.
    if [ $((SECONDS - t0)) -ge 5 ]; then
      daemon_pid slurmctld >/dev/null || start_failed "slurmctld exited"
      daemon_pid slurmd >/dev/null || start_failed "slurmd exited"
    fi
    [ $SECONDS -lt "$deadline" ] ||
      start_failed "node $node not idle after ${LOCAL_SLURM_TIMEOUT:-60} s (state '$state')"
    sleep 0.5
  done
  echo "local-slurm: cluster up in $dir (slurmctld port $port, node $node)"
}

# Sends SIGTERM to the named daemons, waits up to 10 s for all of them, then SIGKILLs the rest.
stop_daemons() { # name...
  local name pid pids=() i alive
  for name in "$@"; do
    if pid=$(daemon_pid "$name"); then
      pids+=("$pid")
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for i in $(seq 1 100); do
    alive=()
    for pid in "${pids[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then alive+=("$pid"); fi
    done
    [ ${#alive[@]} -gt 0 ] || return 0
    sleep 0.1
  done
  echo "local-slurm: pids ${alive[*]} ignored SIGTERM for 10 s, killing" >&2
  kill -KILL "${alive[@]}" 2>/dev/null || true
}

# Pids of processes left over from this cluster's jobs: slurmstepd, or anything carrying both
# this cluster's SLURM_CONF and a SLURM_JOB_ID in its environment (a job's background process
# orphaned by its batch shell escapes proctrack/linuxproc). Never this script or its callers.
leftover_pids() {
  local conf="SLURM_CONF=$dir/slurm.conf" ancestors=" " p=$$ e pid
  while [ "$p" -gt 1 ]; do
    ancestors+="$p "
    p=$(awk '/^PPid:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 1)
  done
  for e in /proc/[0-9]*/environ; do
    pid=${e#/proc/}
    pid=${pid%/environ}
    [[ $ancestors == *" $pid "* ]] && continue
    # environ is NUL-separated; -z makes each variable one "line".
    grep -qzxF "$conf" "$e" 2>/dev/null || continue
    if grep -qz '^SLURM_JOB_ID=' "$e" 2>/dev/null ||
      [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slurmstepd ]; then
      echo "$pid"
    fi
  done
}

stop() {
  local deadline left
  # Cancel the jobs first, so slurmstepd ends them while slurmd is still there to help.
  if daemon_pid slurmctld >/dev/null &&
    SLURM_CONF=$dir/slurm.conf squeue -h -o %A 2>/dev/null | grep -q .; then
    SLURM_CONF=$dir/slurm.conf scancel --partition=debug 2>/dev/null || true
    deadline=$((SECONDS + 15))
    while [ $SECONDS -lt $deadline ] &&
      SLURM_CONF=$dir/slurm.conf squeue -h -t R,CG -o %A 2>/dev/null | grep -q .; do
      sleep 0.3
    done
  fi
  # munged last: the Slurm daemons may still talk to it while shutting down.
  stop_daemons slurmd slurmctld
  stop_daemons munged
  rm -f "$(pidfile slurmd)" "$(pidfile slurmctld)" "$(pidfile munged)"
  left=$(leftover_pids)
  if [ -n "$left" ]; then
    echo "local-slurm: killing processes left by jobs: ${left//$'\n'/ }" >&2
    # shellcheck disable=SC2086 # one pid per word
    kill -KILL $left 2>/dev/null || true
  fi
}

status() {
  local rc=0 name pid
  for name in slurmctld slurmd munged; do
    if pid=$(daemon_pid "$name"); then
      echo "$name: running (pid $pid)"
    else
      echo "$name: stopped"
      rc=1
    fi
  done
  if [ $rc -eq 0 ]; then
    SLURM_CONF=$dir/slurm.conf sinfo || rc=1
  fi
  return $rc
}

case $cmd in
  start)
    dir=$(abs_dir "$dir")
    # slurm.conf cannot quote paths: its values end at white space
    case $dir in *[[:space:]]*)
      echo "local-slurm: $dir holds white space, which slurm.conf paths cannot: choose another directory" >&2
      exit 1 ;;
    esac
    start
    ;;
  stop | status | env)
    [ -d "$dir" ] || { [ "$cmd" = stop ] && exit 0; echo "local-slurm: no directory $dir" >&2; exit 1; }
    dir=$(cd "$dir" && pwd -P)
    case $cmd in
      stop) stop ;;
      status) status ;;
      env) printf 'export SLURM_CONF=%q\n' "$dir/slurm.conf" ;;
    esac
    ;;
  *) usage ;;
esac
