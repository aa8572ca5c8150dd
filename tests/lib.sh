# Shared helpers of the shell tests: paths, MPI environment, assertions.
# shellcheck shell=bash
set -euo pipefail
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$TOP/${BUILD:-build}/bin
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
export OMPI_MCA_btl_base_warn_component_unused=0 OMPI_MCA_rmaps_base_oversubscribe=1
TMP=$(mktemp -d /tmp/memtrain-test.XXXXXX)
trap "${KEEP_TMP:+:} rm -rf \"\$TMP\"" EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

# mt NP ARGS...: runs memtrain on NP ranks, output in $TMP/out, status in $status
mt() {
  local np=$1; shift
  status=0
  mpirun --oversubscribe -np "$np" "$BIN/memtrain" "$@" >"$TMP/out" 2>&1 || status=$?
}

# term_when_training PID LOG: once LOG shows a step line (at most 30 s on), TERM to PID (a job
# script in the background), then waits for it: its status in $status
term_when_training() {
  local pid=$1 log=$2
  for _ in $(seq 1 300); do
    grep -q '^step' "$log" 2>/dev/null && break
    sleep 0.1
  done
  kill -TERM "$pid"
  status=0
  wait "$pid" || status=$?
}

# expect_error NP MESSAGE ARGS...: memtrain must fail with MESSAGE on one line, printed once
expect_error() {
  local np=$1 msg=$2; shift 2
  mt "$np" "$@"
  [ "$status" -ne 0 ] || fail "memtrain $* exited 0, expected an error"
  local n
  n=$(grep -cF -- "$msg" "$TMP/out" || true)
  [ "$n" -eq 1 ] || { cat "$TMP/out" >&2; fail "expected '$msg' once (found $n) from memtrain $*"; }
  grep -F -- "$msg" "$TMP/out" | grep -q '^memtrain: ' || fail "message does not start with 'memtrain: ': $msg"
  pass "np=$np: $msg (exit $status)"
}

digest() { # checkpoint -> one sha256 over every dataset's name, shape, type and bytes
  /usr/bin/python3 - "$1" <<'PY'
import hashlib, sys, h5py
h = hashlib.sha256()
def visit(name, obj):
    # streams/order says which order the cursors count in (test_data_order checks it); the
    # sums were taken before checkpoints held it
    if isinstance(obj, h5py.Dataset) and name != "streams/order":
        a = obj[()]
        h.update(f"{name} {obj.shape} {obj.dtype}\n".encode())
        h.update(a.tobytes() if hasattr(a, "tobytes") else bytes(a))
with h5py.File(sys.argv[1], "r") as f:
    f.visititems(visit)
print(h.hexdigest())
PY
}
