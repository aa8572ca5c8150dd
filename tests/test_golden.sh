#!/usr/bin/env bash
# Short runs must give bitwise the checkpoint they gave when tests/golden.sha256 was written:
# a restructuring or an engine change that claims "no change of results" is held to it.
#
# Each run trains a tiny model for a few steps and writes one checkpoint; every dataset of it
# (dense weights, table shards, optimizer moments, carried memory, cursors) is hashed in name
# order, with its shape and type. The sums were taken with the AVX-512 kernels (-march=native
# on an AVX-512 machine, the build make test does here); elsewhere the test says so and skips.
# The dense layers' products come from OpenBLAS, whose kernels (and so the last bits) depend
# on the core it runs for (its CPU probe, or OPENBLAS_CORETYPE): each line of the sums names
# that core, and a core without sums is reported and skipped.
# To renew the sums after a change that is meant to change results, or to add a core's:
# GOLDEN_WRITE=1 bash this (it replaces the lines of the core in use).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$TOP"
golden=$TOP/tests/golden.sha256

if ! grep -qw avx512f /proc/cpuinfo; then
  echo "skip: the golden sums were taken with the AVX-512 kernels"; exit 0
fi
core=$(/usr/bin/python3 -c '
import ctypes
lib = ctypes.CDLL("libopenblas.so.0")
lib.openblas_get_corename.restype = ctypes.c_char_p
print(lib.openblas_get_corename().decode())') || fail "cannot ask OpenBLAS for its core"
if [ -z "${GOLDEN_WRITE:-}" ] && ! grep -q "^$core " "$golden"; then
  echo "skip: no golden sums for OpenBLAS core $core (GOLDEN_WRITE=1 bash $0 records them)"; exit 0
fi

# --shuffle=off: the sums were taken when documents were read in file order
TINY=(--config jobs/configs/memformer.conf --d_model=32 --n_heads=2 --seg_len=49 --streams=4
      --stream_block=2 --deterministic=bitwise --steps=6 --warmup=2 --eval_every=0 --log_every=6
      --ckpt_every=6 --shuffle=off)
declare -A runs=(
  [memformer-hash-np2]="2 --arch=memformer --proj=hash"
  [memformer-dense-np1]="1 --arch=memformer --proj=dense"
  [decoder-hash-np2]="2 --arch=decoder --proj=hash --seg_len=64"
  [decoder-hash-np3]="3 --arch=decoder --proj=hash --seg_len=64 --streams=6"
)
out=$TMP/sums
: >"$out"
for name in $(printf '%s\n' "${!runs[@]}" | sort); do
  read -r np args <<<"${runs[$name]}"
  # shellcheck disable=SC2086
  mt "$np" train "${TINY[@]}" $args --run_dir="$TMP/$name"
  [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "$name: training exited $status"; }
  echo "$core $name $(digest "$TMP/$name/ckpt/ckpt-00000006.h5")" >>"$out"
done
if [ -n "${GOLDEN_WRITE:-}" ]; then
  { grep -v "^$core " "$golden" || true; cat "$out"; } | sort >"$TMP/new"
  cp "$TMP/new" "$golden"; cat "$golden"; echo "wrote $golden"; exit 0
fi
diff <(grep "^$core " "$golden") "$out" >&2 ||
  fail "checkpoints differ from tests/golden.sha256 for OpenBLAS core $core (lines above: < golden, > now)"
pass "$(wc -l <"$out") short runs give bitwise their golden checkpoints (OpenBLAS core $core)"
