#!/usr/bin/env bash
# Runs every benchmark (tests/bench_*.c programs, tests/bench_*.sh scripts) one after another,
# single-threaded BLAS. An argument selects the benchmarks whose name contains it.
set -eu
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for b in "$BIN"/bench_* tests/bench_*.sh; do
  [ -n "${1:-}" ] && [[ $(basename "$b") != *$1* ]] && continue
  echo "== $(basename "$b")"
  case $b in
    *.sh) bash "$b" ;;
    *) "$b" ;;
  esac
done
