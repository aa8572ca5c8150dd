# Sourced by the job scripts (experiments.sh, scaling.sh, demo.sh): runs an mpirun line so that
# a stop signal to the script reaches the ranks instead of leaving them running.
#
#   run_ranks NAME mpirun ...   runs the mpirun line in the background and waits for it.
#
# TERM, INT or HUP to the script is passed to mpirun as USR1, which mpirun forwards to every
# rank (to each rank's process group: a wrapper such as /usr/bin/time must ignore USR1, see
# experiments.sh). A training run agrees on it at the next step boundary, writes a checkpoint
# and exits with status 75; eval and sample end at once. A second signal changes nothing.
# Returns the mpirun line's status; ranks_stopped_by then holds the signal's name (empty when
# none came) and ranks_stop_status 128 + its number, the status a script stopped by it ends with.
ranks_stopped_by=
ranks_stop_status=0
exec {_ranks_stderr}>&2 # the script's own: run_ranks' output may go to a log
run_ranks() {
  _ranks_who=$1
  shift
  "$@" &
  _ranks_pid=$!
  trap '_ranks_stop TERM' TERM
  trap '_ranks_stop INT' INT
  trap '_ranks_stop HUP' HUP
  local status
  while :; do
    wait "$_ranks_pid" && status=0 || status=$?
    # wait returns early (status > 128) when a trapped signal comes: wait on for mpirun
    kill -0 "$_ranks_pid" 2>/dev/null || break
  done
  trap - TERM INT HUP
  return "$status"
}
# shellcheck disable=SC2317  # called through the traps
_ranks_stop() {
  [ -z "$ranks_stopped_by" ] || return 0
  ranks_stopped_by=$1
  ranks_stop_status=$((128 + $(kill -l "$1")))
  echo "$_ranks_who: $1 received: stopping the ranks (a training run checkpoints first)" >&"$_ranks_stderr"
  kill -USR1 "$_ranks_pid" 2>/dev/null || true
}
