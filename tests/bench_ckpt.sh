#!/usr/bin/env bash
# Benchmark: checkpoint size, write and read time, for the small Memformer (memformer.conf) and for a model whose
# tables hold more than 1 GiB of parameters, on 1 and 2 ranks, and the write time as a share
# of training time at the default interval (ckpt_every = 100 steps).
#   bash tests/bench_ckpt.sh            (BIG=0 skips the large model)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
export OMPI_MCA_btl_base_warn_component_unused=0
tmp=$(mktemp -d /tmp/memtrain-bench-ckpt.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

measure() { # name np steps args...
  local name=$1 np=$2 steps=$3
  shift 3
  local d=$tmp/$name-$np
  mpirun --oversubscribe -np "$np" "$BIN/memtrain" "$@" --steps="$steps" --warmup=1 \
    --eval_every=0 --log_every="$steps" --ckpt_every=0 --keep_ckpts=1 --run_dir="$d" >"$d.log" 2>&1 \
    || { cat "$d.log"; exit 1; }
  # one step more: a resume with nothing to train is refused before it reads anything
  mpirun --oversubscribe -np "$np" "$BIN/memtrain" --resume "$d" --steps=$((steps + 1)) >"$d.resume.log" 2>&1 \
    || { cat "$d.resume.log"; exit 1; }
  local file write read ms tables
  file=$(ls "$d"/ckpt/ckpt-*.h5 | head -n 1)
  write=$(sed -n 's/^checkpoint: .* written in \([0-9.]*\) s$/\1/p' "$d.log" | tail -n 1)
  read=$(sed -n 's/.*(read in \([0-9.]*\) s)$/\1/p' "$d.resume.log")
  [ -n "$write" ] && [ -n "$read" ] || { cat "$d.log" "$d.resume.log"; exit 1; }
  # training time per step: every ms_ column of the last log window but eval and ckpt
  ms=$(/usr/bin/python3 -c '
import csv, sys
r = list(csv.DictReader(open(sys.argv[1])))[-1]
print(sum(float(v) for k, v in r.items() if k.startswith("ms_") and k not in ("ms_eval", "ms_ckpt")))
' "$d/metrics.csv")
  tables=$(sed -n 's/.*table params \([0-9]*\).*/\1/p' "$d.log")
  awk -v n="$name" -v np="$np" -v sz="$(stat -c %s "$file")" -v w="$write" -v r="$read" \
      -v ms="$ms" -v t="$tables" 'BEGIN {
    printf "%-6s %2d %10.2f %10.0f %9.2f %9.2f %10.1f %8.2f%%\n", n, np, t * 4 / 1073741824,
      sz / 1048576, w, r, ms, 100 * w / (w + 100 * ms / 1000) }'
}

echo "checkpoint cost: size, write and read (resume) time; share = write / (write + 100 steps)"
printf "%-6s %2s %10s %10s %9s %9s %10s %9s\n" model np "tables GiB" "file MiB" "write s" \
  "read s" "ms/step" "share"
for np in 1 2; do measure memformer "$np" 20 --config jobs/configs/memformer.conf; done
if [ "${BIG:-1}" != 0 ]; then
  BIGARGS=(--config jobs/configs/memformer.conf --d_model=512 --n_heads=8 --seg_len=16 --streams=2
           --horizon=1)
  for np in 1 2; do measure big "$np" 3 "${BIGARGS[@]}"; done
fi
