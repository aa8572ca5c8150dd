# Shared by the Slurm tests: a private cluster in a temporary directory, job state helpers.
# shellcheck shell=bash
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

dir=$(mktemp -d /tmp/memtrain-slurm.XXXXXX)
cleanup() {
  "$repo/jobs/local-slurm.sh" stop "$dir" || true
  rm -rf "$dir"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in "$dir"/*.out "$dir"/log/slurmctld.log "$dir"/log/slurmd.log; do
    [ -e "$f" ] || continue
    echo "---- $f (last 20 lines)" >&2
    tail -n 20 "$f" >&2
  done
  exit 1
}

# Prints field $2 (e.g. JobState) of job $1 from `scontrol show job` (no accounting here).
job_field() {
  scontrol show job -o "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# Waits up to $2 seconds until job $1 is in one of the states $3 (a regex); prints the state.
wait_state() {
  local id=$1 limit=$2 want=$3 state="" deadline=$((SECONDS + $2))
  while [ $SECONDS -lt $deadline ]; do
    state=$(job_field "$id" JobState)
    if [[ $state =~ ^($want)$ ]]; then
      echo "$state"
      return 0
    fi
    sleep 0.3
  done
  fail "job $id still '$state' after $limit s (wanted $want)"
}

start_cluster() {
  local t0=$SECONDS
  "$repo/jobs/local-slurm.sh" start "$dir"
  eval "$("$repo/jobs/local-slurm.sh" env "$dir")"
  "$repo/jobs/local-slurm.sh" status "$dir" >/dev/null || fail "status reports a daemon down"
  echo "cluster up after $((SECONDS - t0)) s"
}
