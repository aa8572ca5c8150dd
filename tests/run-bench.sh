#!/usr/bin/env bash
# Runs every benchmark program (tests/bench_*.c) one after another, single-threaded BLAS.
set -eu
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for b in "$BIN"/bench_*; do
  [ -n "${1:-}" ] && [[ $(basename "$b") != *$1* ]] && continue
  echo "== $(basename "$b")"
  "$b"
done
