#!/usr/bin/env bash
# Benchmark: scaling from 1 to 2 ranks, memtrain hash, memtrain dense and PyTorch DDP (gloo)
# dense, side by side in the same run, on the shape of the scaling issue: decoder, d_model
# 256, 4 heads, 3 blocks, seg_len 64, horizon 4, Fashion-MNIST (PyTorch: random tokens).
# memtrain runs with its default settings except `streams` (stream_block = auto,
# deterministic = fast), one OpenBLAS thread per rank. Each round runs, one after another:
#   P = 1, 8 streams    the weak-scaling base
#   P = 1, 16 streams   the strong-scaling base
#   P = 2, 16 streams   8 per rank: weak against the first, strong against the second
# of each system, and the hashed Memformer of the same shape at P = 1 with 8 streams and P = 2
# with 16 (weak scaling only; 2 x STEPS steps), and the summary prints tokens/s (all ranks together) and the scaling
# efficiencies tokens/s(P=2) / (2 x tokens/s(P=1)) as the median and range over ROUNDS rounds.
# For memtrain each round also runs two independent one-rank runs of 8 streams at once, one
# on each of the first two CPUs (taskset): what two processes get from the host's shared
# caches and memory with no communication at all, the bound of weak scaling on this host.
# P = 2 against their sum is the share of that bound the distribution keeps.
#   ROUNDS=3 STEPS=24 bash tests/bench_scaling.sh
# memtrain's tokens/s are those of its log windows after the first (a third of its steps each).
# Timings mean something only on a machine doing nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-24}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_base_warn_component_unused=0
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "bench_scaling: PyTorch is not installed (make bench installs Debian's python3-torch)" >&2
  exit 1
fi
tmp=$(mktemp -d /tmp/memtrain-bench-scaling.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
win=$(( STEPS / 3 > 0 ? STEPS / 3 : 1 ))

mt() { # proj P streams [arch steps] -> tokens/s of memtrain train (on CPU $CPU if set)
  local d=$tmp/mt-$1-$2-$3-${4:-decoder}${CPU:+-cpu$CPU} steps=${5:-$STEPS} pin=() bind=()
  [ -n "${CPU:-}" ] && pin=(taskset -c "$CPU") bind=(--bind-to none)
  rm -rf "$d"
  "${pin[@]}" mpirun "${bind[@]}" --oversubscribe -np "$2" "$BIN/memtrain" train \
    --config jobs/configs/decoder-d256.conf \
    --arch="${4:-decoder}" --proj="$1" --streams="$3" --stream_block=auto --steps="$steps" \
    --warmup=$(( steps < 5 ? steps : 5 )) --log_every=$(( steps / 3 > 0 ? steps / 3 : 1 )) \
    --eval_every=0 --ckpt_every=0 --keep_ckpts=1 --run_dir="$d" \
    >"$d.log" 2>&1 || { cat "$d.log" >&2; exit 1; }
  /usr/bin/python3 -c '
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
rows = rows[1:] or rows
print("%.0f" % statistics.median(float(r["tokens_per_s"]) for r in rows))' "$d/metrics.csv"
}

pair() { # proj [arch steps] -> tokens/s of two one-rank runs of 8 streams at once, summed
  CPU=0 mt "$1" 1 8 "${2:-decoder}" "${3:-$STEPS}" >"$tmp/pair0" &
  local first=$! second
  second=$(CPU=1 mt "$1" 1 8 "${2:-decoder}" "${3:-$STEPS}")
  wait "$first" || exit 1
  echo $(( $(cat "$tmp/pair0") + second ))
}

torch() { # P streams_per_rank -> tokens/s of PyTorch DDP
  local out
  out=$(/usr/bin/python3 tests/bench_torch.py --ranks "$1" --streams "$2" --steps "$win" \
        --warmup 2 --reps 2) || exit 1
  echo "$out" | awk '{print $4}'
}

: >"$tmp/rows"
for round in $(seq 1 "$ROUNDS"); do
  row=""
  for sys in hash dense torch; do
    if [ "$sys" = torch ]; then
      a=$(torch 1 8) b=$(torch 1 16) c=$(torch 2 8) d=0
    else
      a=$(mt "$sys" 1 8) b=$(mt "$sys" 1 16) c=$(mt "$sys" 2 16) d=$(pair "$sys")
    fi
    row="$row $a $b $c $d"
    echo "round $round: $sys P=1 8 streams $a, P=1 16 streams $b, P=2 16 streams $c," \
         "two P=1 at once $d tokens/s"
  done
  # the Memformer's first steps run slower for longer (rows and state touched the first
  # time, the re-plan), so its runs are twice as long and its windows too
  a=$(mt hash 1 8 memformer $(( 2 * STEPS ))) c=$(mt hash 2 16 memformer $(( 2 * STEPS )))
  d=$(pair hash memformer $(( 2 * STEPS )))
  row="$row $a $c $d"
  echo "round $round: memformer hash P=1 8 streams $a, P=2 16 streams $c, two P=1 at once" \
       "$d tokens/s"
  echo "$row" >>"$tmp/rows"
done

/usr/bin/python3 - "$tmp/rows" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
def fig(v, fmt):
    return "%s (%s-%s)" % (fmt % statistics.median(v), fmt % min(v), fmt % max(v))
names = ["memtrain hash", "memtrain dense", "PyTorch DDP dense"]
print()
print("tokens/s over all ranks and scaling 1 -> 2 ranks, median (min-max) of %d rounds" % len(rows))
print("| system | P=1, 8 streams | P=1, 16 streams | P=2, 16 streams | weak (8/rank) | strong (16) |"
      " two P=1 at once | P=2 / two at once |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for i, name in enumerate(names):
    a = [r[4 * i] for r in rows]
    b = [r[4 * i + 1] for r in rows]
    c = [r[4 * i + 2] for r in rows]
    d = [r[4 * i + 3] for r in rows]
    weak = [z / (2 * x) for x, z in zip(a, c)]
    strong = [z / (2 * y) for y, z in zip(b, c)]
    pair = ("%s | %s" % (fig(d, "%.0f"), fig([z / w for z, w in zip(c, d)], "%.2f"))
            if min(d) > 0 else "- | -")
    print("| %s | %s | %s | %s | %s | %s | %s |" % (name, fig(a, "%.0f"), fig(b, "%.0f"),
          fig(c, "%.0f"), fig(weak, "%.2f"), fig(strong, "%.2f"), pair))
a = [r[12] for r in rows]
c = [r[13] for r in rows]
d = [r[14] for r in rows]
print("| memtrain Memformer hash | %s | - | %s | %s | - | %s | %s |" % (fig(a, "%.0f"),
      fig(c, "%.0f"), fig([z / (2 * x) for x, z in zip(a, c)], "%.2f"), fig(d, "%.0f"),
      fig([z / w for z, w in zip(c, d)], "%.2f")))
print()
print("targets: memtrain hash weak >= 0.90, strong >= 0.80; Memformer hash weak >= 0.85")
PY
