# Sourced by the job scripts (experiments.sh, scaling.sh, demo.sh): runs an mpirun line so that
# a stop signal to the script reaches the ranks instead of leaving them running.
#
#   run_ranks NAME mpirun ...   runs the mpirun line in the background and waits for it.
#
# mpirun runs in a session of its own, so Ctrl-C or a closed terminal reaches the script
# alone (mpirun itself would end the job on INT, TERM or HUP, SIGKILLing the ranks a second
# later). TERM, INT, HUP, USR1 or USR2 to the script (USR1: Slurm's --signal=B:USR1@N warning)
# is passed to mpirun as USR1, which mpirun forwards to
# every rank (to each rank's process group: a wrapper such as /usr/bin/time must ignore USR1,
# see experiments.sh). A training run agrees on it at the next step boundary, writes a
# checkpoint and exits with status 75 (or, before its first step, exits 75 with nothing
# written); eval and sample end at once. USR1 goes again every 2 s until mpirun ends: one sent
# before mpirun has started its ranks is lost, and a rank listens once memtrain's handlers are
# in. A rank that stops already takes no notice of another.
# Returns the mpirun line's status; ranks_stopped_by then holds the signal's name (empty when
# none came) and ranks_stop_status 128 + its number, the status a script stopped by it ends with.
ranks_stopped_by=
ranks_stop_status=0
_ranks_again=
exec {_ranks_stderr}>&2 # the script's own: run_ranks' output may go to a log
run_ranks() {
  _ranks_who=$1
  shift
  _ranks_pid=
  trap '_ranks_stop TERM' TERM
  trap '_ranks_stop INT' INT
  trap '_ranks_stop HUP' HUP
  trap '_ranks_stop USR1' USR1
  trap '_ranks_stop USR2' USR2
  setsid "$@" &
  _ranks_pid=$!
  # a signal that came while it was being started
  [ -z "$ranks_stopped_by" ] || _ranks_forward
  local status s
  while :; do
    wait "$_ranks_pid" && status=0 || status=$?
    [ "$status" -gt 128 ] || break
    # wait returns early (status > 128) when a trapped signal comes: wait on for mpirun
    kill -0 "$_ranks_pid" 2>/dev/null && continue
    # it ended meanwhile: its own status, where bash kept it (else that of its death)
    wait "$_ranks_pid" 2>/dev/null && status=0 || { s=$?; [ "$s" -eq 127 ] || status=$s; }
    break
  done
  trap - TERM INT HUP USR1 USR2
  [ -z "$_ranks_again" ] || kill "$_ranks_again" 2>/dev/null || true
  _ranks_again=
  return "$status"
}
# shellcheck disable=SC2317  # called through the traps
_ranks_stop() {
  [ -z "$ranks_stopped_by" ] || return 0
  ranks_stopped_by=$1
  ranks_stop_status=$((128 + $(kill -l "$1")))
  echo "$_ranks_who: $1 received: stopping the ranks (a training run checkpoints first)" >&"$_ranks_stderr"
  [ -z "$_ranks_pid" ] || _ranks_forward
}
# shellcheck disable=SC2317
_ranks_forward() {
  kill -USR1 "$_ranks_pid" 2>/dev/null || true
  (while sleep 2 && kill -USR1 "$_ranks_pid" 2>/dev/null; do :; done) &
  _ranks_again=$!
}
