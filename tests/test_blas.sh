#!/usr/bin/env bash
# The OpenBLAS kernels memtrain runs (trainer/run/blas.h). The run's start names them and who
# chose them. A set OPENBLAS_CORETYPE is kept as it is; unset, a CPU with AVX2 and FMA never
# runs the library's generic Prescott kernels (Debian 12's OpenBLAS falls back to them on CPUs
# it does not know).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
tiny=(--d_model=32 --n_heads=2 --n_layers=1 --seg_len=16 --horizon=2 --streams=2
      --stream_block=auto --steps=2 --warmup=1 --eval_every=0 --ckpt_every=0 --log_every=1)

blas_line() { grep '^blas: ' "$TMP/out" || { cat "$TMP/out"; fail "no blas line"; }; }

# set: kept, and said so
OPENBLAS_CORETYPE=Haswell mt 2 "${tiny[@]}" --run_dir="$TMP/set"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "run with OPENBLAS_CORETYPE=Haswell failed"; }
line=$(blas_line)
[[ $line == *"Haswell kernels (OPENBLAS_CORETYPE=Haswell)"* ]] || fail "a set OPENBLAS_CORETYPE changed: $line"
pass "set: $line"

# unset: never the generic kernels where the CPU has AVX2 and FMA
status=0
env -u OPENBLAS_CORETYPE -u MEMTRAIN_BLAS_CHOSEN mpirun --oversubscribe -np 2 "$BIN/memtrain" \
  "${tiny[@]}" --run_dir="$TMP/unset" >"$TMP/out" 2>&1 || status=$?
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "run without OPENBLAS_CORETYPE failed"; }
line=$(blas_line)
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
  [[ $line != *" Prescott kernels"* ]] || fail "generic kernels on a CPU with AVX2: $line"
fi
grep -q '^step 2/2 ' "$TMP/out" || { cat "$TMP/out"; fail "the run did not train"; }
pass "unset: $line"
