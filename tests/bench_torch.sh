#!/usr/bin/env bash
# Benchmark: memtrain against PyTorch on this machine, one thread each, in the same run.
#
# The shape of the engine issue: d_model 256, 4 heads, 3 blocks, seg_len 64, 8 streams x
# horizon 4 = 2048 scored tokens per optimizer step. Each round runs, one after another:
#   torch   PyTorch's dense GPT decoder of that shape (tests/bench_torch.py, random tokens)
#   random  build/bin/bench_train: memtrain's four configurations on random tokens (which
#           touch nearly every table row every step)
#   real    memtrain train on Fashion-MNIST, the shape of the scaling issue's benchmarks:
#           decoder and Memformer, dense and hash (tokens/s of the log windows after the
#           first)
# and prints tokens/s and the ratios memtrain / PyTorch of that round; the summary gives each
# figure's median and range over ROUNDS (default 3) rounds. memtrain computes its 8 streams
# as one block (stream_block = 8), the batching a one-rank run would choose. Both sides run
# with OPENBLAS_NUM_THREADS=1: PyTorch's matrix products are OpenBLAS's, which
# torch.set_num_threads does not limit.
#   ROUNDS=5 bash tests/bench_torch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
ROUNDS=${ROUNDS:-3}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_base_warn_component_unused=0
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "bench_torch: PyTorch is not installed (make bench installs Debian's python3-torch)" >&2
  exit 1
fi
tmp=$(mktemp -d /tmp/memtrain-bench-torch.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

SHAPE=(--d_model=256 --n_heads=4 --n_layers=3 --seg_len=64 --streams=8 --stream_block=8
       --horizon=4)

real() { # proj [arch] -> tokens/s of memtrain train on Fashion-MNIST
  local d=$tmp/real-$1-${2:-decoder} slots=()
  [ "${2:-decoder}" = memformer ] && slots=(--mem_slots=16) # as bench_train's
  rm -rf "$d"
  "$BIN/memtrain" train --arch="${2:-decoder}" --proj="$1" "${SHAPE[@]}" "${slots[@]}" \
    --data=fashion-mnist \
    --steps=50 --warmup=5 --log_every=10 --eval_every=0 --ckpt_every=0 --keep_ckpts=1 \
    --run_dir="$d" >"$d.log" 2>&1 || { cat "$d.log" >&2; exit 1; }
  /usr/bin/python3 -c '
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))[1:]
print("%.0f" % statistics.median(float(r["tokens_per_s"]) for r in rows))' "$d/metrics.csv"
}

: >"$tmp/rows"
for round in $(seq 1 "$ROUNDS"); do
  read -r _ _ _ torch _ cpu < <(/usr/bin/python3 tests/bench_torch.py --steps 10 --warmup 5 --reps 1)
  awk -v c="$cpu" 'BEGIN { exit !(c < 1.2) }' ||
    echo "bench_torch: PyTorch used $cpu cores' worth of CPU time, not one" >&2
  "$BIN/bench_train" 10 >"$tmp/bt.txt"
  rnd() { awk -v a="$1" -v p="$2" '$1 == a && $2 == p {print $3}' "$tmp/bt.txt"; }
  dd=$(rnd decoder dense) dh=$(rnd decoder hash) md=$(rnd memformer dense) mh=$(rnd memformer hash)
  rd=$(real dense) rh=$(real hash) rmd=$(real dense memformer) rmh=$(real hash memformer)
  echo "$round $torch $dd $dh $md $mh $rd $rh $rmd $rmh" >>"$tmp/rows"
  echo "round $round: torch $torch | random: decoder dense $dd hash $dh, memformer dense $md" \
       "hash $mh | fashion-mnist: decoder dense $rd hash $rh, memformer dense $rmd hash $rmh" \
       "tokens/s"
done

/usr/bin/python3 - "$tmp/rows" <<'PY'
import statistics, sys
rows = [list(map(float, l.split()))[1:] for l in open(sys.argv[1]) if l.strip()]
cols = list(zip(*rows))
torch, dd, dh, md, mh, rd, rh, rmd, rmh = cols
def fig(v, fmt):
    return "%s (%s-%s)" % (fmt % statistics.median(v), fmt % min(v), fmt % max(v))
print()
print("tokens/s, one thread, median (min-max) of %d rounds" % len(rows))
print("| what | tokens/s |")
print("|---|---:|")
for name, v in [("PyTorch dense decoder (random tokens)", torch),
                ("memtrain decoder dense (random tokens)", dd),
                ("memtrain decoder hash (random tokens)", dh),
                ("memtrain decoder dense (Fashion-MNIST)", rd),
                ("memtrain decoder hash (Fashion-MNIST)", rh),
                ("memtrain memformer dense (random tokens)", md),
                ("memtrain memformer hash (random tokens)", mh),
                ("memtrain memformer dense (Fashion-MNIST)", rmd),
                ("memtrain memformer hash (Fashion-MNIST)", rmh)]:
    print("| %s | %s |" % (name, fig(v, "%.0f")))
print()
print("ratios, each round's figures against the same round's (target in brackets)")
print("| ratio | median (min-max) |")
print("|---|---:|")
r = lambda a, b: [x / y for x, y in zip(a, b)]
for name, v in [("decoder dense / PyTorch dense (>= 1.0)", r(dd, torch)),
                ("decoder hash / PyTorch dense, random tokens (>= 3.0)", r(dh, torch)),
                ("decoder hash / PyTorch dense, Fashion-MNIST (>= 3.0)", r(rh, torch)),
                ("memformer hash / memformer dense, random tokens", r(mh, md)),
                ("memformer hash / memformer dense, Fashion-MNIST (>= 2.0)", r(rmh, rmd))]:
    print("| %s | %s |" % (name, fig(v, "%.2f")))
PY
