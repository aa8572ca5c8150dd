#!/usr/bin/env bash
# Runs every test program (tests/check_*.c, built into $BUILD/bin) and every test script
# (tests/test_*.sh). A C test whose source has a line "// mpirun-np: 1 2 3" is started under
# mpirun once per listed rank count; the others run directly (they may still call MPI_Init
# as a singleton). Ends with the line "N passed, N failed" and a non-zero exit on failure.
set -u
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
export BUILD=${BUILD:-build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Quiet Open MPI's interconnect probing on machines without fast networks.
export OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader,tcp} OMPI_MCA_btl_base_warn_component_unused=0
export OMPI_MCA_rmaps_base_oversubscribe=1
# Under SANITIZER=address: Open MPI's own allocations at exit would drown the leak report.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
only=${1:-}
pass=0
fail=0
failed=()

run() { # name, command...
  local name=$1; shift
  local t0=$SECONDS
  # a hung collective must fail the test, not the CI job
  if timeout -k 10 "${TEST_TIMEOUT:-600}" "$@" >"$log/$name.log" 2>&1; then
    pass=$((pass + 1)); echo "PASS $name ($((SECONDS - t0)) s)"
  else
    fail=$((fail + 1)); failed+=("$name"); echo "FAIL $name ($((SECONDS - t0)) s)"
    tail -n 30 "$log/$name.log" | sed 's/^/    /'
  fi
  grep -E '^[0-9]+%: Checks' "$log/$name.log" | sed 's/^/    /'
}

log=$(mktemp -d /tmp/memtrain-tests.XXXXXX)
for src in tests/check_*.c; do
  name=$(basename "$src" .c)
  [ -n "$only" ] && [[ $name != *$only* ]] && continue
  nps=$(sed -n 's|^// mpirun-np:||p' "$src" | head -1)
  if [ -n "$nps" ]; then
    for np in $nps; do
      run "$name-np$np" mpirun --oversubscribe -np "$np" "$BIN/$name"
    done
  else
    run "$name" env CK_DEFAULT_TIMEOUT=600 "$BIN/$name"
  fi
done
# the same tests built without AVX-512 (make test builds them): the kernels' portable paths
for b in ${PORTABLE_BUILD:+$PORTABLE_BUILD/bin/check_*}; do
  [ -x "$b" ] || continue
  name=$(basename "$b")-portable
  [ -n "$only" ] && [[ $name != *$only* ]] && continue
  run "$name" env CK_DEFAULT_TIMEOUT=600 "$b"
done
for sh in tests/test_*.sh; do
  [ -e "$sh" ] || continue
  name=$(basename "$sh" .sh)
  [ -n "$only" ] && [[ $name != *$only* ]] && continue
  run "$name" bash "$sh"
done
echo "logs in $log"
[ ${#failed[@]} -eq 0 ] || echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
