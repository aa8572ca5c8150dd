#!/usr/bin/env bash
# Weak and strong scaling sweeps of memtrain on this machine, with a communication-volume check.
#
# Runs the small Memformer of memformer.conf (hashed projections, Fashion-MNIST) on P = 1..MAXP ranks twice:
# weak scaling (PER_RANK streams per rank: streams = PER_RANK * P) and strong scaling
# (STRONG_STREAMS streams in all). Every rank computes its streams as one block
# (stream_block = streams / P), the fastest batching for the rank count. The first log window
# of each run is discarded as warm-up.
# Runs on P <= CORES ranks are repeated REPEATS times (interleaved: the whole sweep, then again)
# and each point keeps its fastest repeat: the cores are shared with whatever else runs, and a
# busy neighbour stalls every rank that waits for the slowed one at the next exchange (load1 in
# the CSV is the load average when the kept repeat started). Oversubscribed runs go once: their
# times show overheads anyway, and byte counts are the same in every repeat.
# Writes to OUT_DIR (default runs/scaling in the repository; a relative OUT_DIR is read from the
# directory the script is started in):
#   scaling.csv         one row per run: throughput, efficiency, bytes sent per rank per step
#                       (measured, and predicted by memtrain plan via jobs/comm_model.py), the
#                       strategies, all-to-all share of
#                       the step time, all-reduce time, cache hit rate
#   tokens_per_s.png, efficiency.png, bytes.png, a2a_share.png   gnuplot figures
#   comm_model.md       the communication model with predicted vs measured bytes (weak runs)
#   weak-pP/, strong-pP/  each run's log.txt and metrics.csv (the kept repeat; all in rK/)
# Runs with P above the core count (CORES, default nproc) share the cores: their time figures
# measure overheads (oversubscription, synchronisation), not speedup; their byte counts are exact.
#
# Usage: jobs/scaling.sh [OUT_DIR]
# Environment: CONF (jobs/configs/memformer.conf), STEPS (40), MAXP (8), PER_RANK (4),
#              STRONG_STREAMS (8), LOG_EVERY (STEPS/4),
#              REPEATS (2), CORES (nproc), MPIRUN_ARGS (--bind-to none: let the scheduler move
#              ranks away from busy cores), BUILD (build: binaries in $BUILD/bin),
#              PLOT_ONLY (1: no runs, redo the CSV, model and plots from OUT_DIR's runs).
# A few minutes with the defaults.
set -euo pipefail
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$TOP/runs/scaling} # a relative OUT_DIR or CONF is read from where the script starts
[[ $OUT == /* ]] || OUT=$PWD/$OUT
[ -z "${CONF:-}" ] || [[ $CONF == /* ]] || CONF=$PWD/$CONF
cd "$TOP"
for v in STEPS MAXP PER_RANK STRONG_STREAMS LOG_EVERY REPEATS CORES; do
  [[ ${!v:-1} =~ ^(0|[1-9][0-9]{0,8})$ ]] || { echo "scaling.sh: $v=${!v}: expected a whole number" >&2; exit 1; }
done
STEPS=${STEPS:-40}
MAXP=${MAXP:-8}
PER_RANK=${PER_RANK:-4}
STRONG_STREAMS=${STRONG_STREAMS:-8}
LOG_EVERY=${LOG_EVERY:-$(( STEPS / 4 > 0 ? STEPS / 4 : 1 ))}
REPEATS=${REPEATS:-2}
PLOT_ONLY=${PLOT_ONLY:-0}
# anything but 0 or 1 would start a new sweep, which removes the last one's runs
[[ $PLOT_ONLY =~ ^[01]$ ]] || { echo "scaling.sh: PLOT_ONLY=$PLOT_ONLY: expected 0 or 1" >&2; exit 1; }
CORES=${CORES:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)} # nproc counts OMP_NUM_THREADS
MPIRUN_ARGS=${MPIRUN_ARGS:---bind-to none}
BIN=$TOP/${BUILD:-build}/bin/memtrain
CONF=${CONF:-jobs/configs/memformer.conf}
WARMUP=$(( STEPS < 30 ? STEPS : 30 ))
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
export OMPI_MCA_btl_base_warn_component_unused=0

die() { echo "scaling.sh: $*" >&2; exit 1; }
[ -x "$BIN" ] || die "no $BIN: build it first (make all)"
for v in MAXP REPEATS PER_RANK LOG_EVERY; do
  [ "${!v}" -ge 1 ] || die "$v must be at least 1"
done
[ "$STEPS" -ge $(( 2 * LOG_EVERY )) ] || die "STEPS ($STEPS) must hold two log windows of $LOG_EVERY steps (one is warm-up)"
[ "$STRONG_STREAMS" -ge "$MAXP" ] || die "STRONG_STREAMS ($STRONG_STREAMS) must be at least MAXP ($MAXP)"
mkdir -p "$OUT"
# one sweep at a time in OUT: a second would remove the first one's runs under it
exec 9>>"$OUT/.lock"
flock -n 9 || die "$OUT is in use by another scaling.sh: wait for it, or give another OUT_DIR"
# shellcheck source=jobs/lib/ranks.sh
. jobs/lib/ranks.sh
ROWS=$OUT/runs.tmp
: >"$ROWS"

# run MODE P STREAMS REP: one training run into OUT/MODE-pP/rREP (log.txt, metrics.csv, load1)
run() {
  local mode=$1 p=$2 streams=$3 rep=$4 dir=$OUT/$1-p$2/r$4
  mkdir -p "$dir"
  # memtrain appends to metrics.csv, and a new run refuses a directory holding checkpoints
  rm -rf "$dir/metrics.csv" "$dir/ckpt"
  local note=""
  [ "$p" -gt "$CORES" ] && note=" (oversubscribed: $p ranks on $CORES cores)"
  echo "== $mode P=$p streams=$streams repeat $rep$note"
  cut -d' ' -f1 /proc/loadavg >"$dir/load1"
  local status=0
  # shellcheck disable=SC2086 # MPIRUN_ARGS is a list of options
  run_ranks scaling.sh mpirun -q --oversubscribe $MPIRUN_ARGS -np "$p" "$BIN" train --config "$CONF" \
      --streams="$streams" --stream_block=$(( streams / p )) --steps="$STEPS" \
      --warmup="$WARMUP" --log_every="$LOG_EVERY" \
      --eval_every=0 --ckpt_every=0 --run_dir="$dir" </dev/null >"$dir/log.txt" 2>&1 9>&- || status=$?
  if [ -n "$ranks_stopped_by" ]; then
    echo "scaling.sh: stopped by $ranks_stopped_by during the $mode run at P=$p" >&2
    exit "$ranks_stop_status"
  fi
  if [ "$status" -ne 0 ]; then
    cat "$dir/log.txt" >&2
    die "$mode run on $p ranks failed (log: $dir/log.txt)"
  fi
  grep -E '^step ' "$dir/log.txt" | tail -n +2 | sed 's/^/   /'
}

for p in $(seq 1 "$MAXP"); do echo "weak $p $(( PER_RANK * p )) $OUT/weak-p$p"; done >>"$ROWS"
for p in $(seq 1 "$MAXP"); do echo "strong $p $STRONG_STREAMS $OUT/strong-p$p"; done >>"$ROWS"
if [ "$PLOT_ONLY" = 1 ]; then
  while read -r _ _ _ d; do
    [ -f "$d/r1/metrics.csv" ] || die "PLOT_ONLY: no $d/r1/metrics.csv (run the sweep first)"
  done <"$ROWS"
else
  # a new sweep: the runs of an earlier one (other repeats, settings or rank counts) go
  rm -rf "$OUT"/weak-p* "$OUT"/strong-p*
  for rep in $(seq 1 "$REPEATS"); do
    while read -r mode p streams _; do
      if [ "$rep" -gt 1 ] && [ "$p" -gt "$CORES" ]; then continue; fi
      run "$mode" "$p" "$streams" "$rep"
    done <"$ROWS"
  done
fi

# predicted bytes per run from the communication model (byte counts and cache hits are the
# same in every repeat: same seed and rank count give the same keys), then one CSV row per run
while read -r _ p streams dir; do
  jobs/comm_model.py --bin "$BIN" --config "$CONF" --streams="$streams" \
    --stream_block=$(( streams / p )) --ranks "$p" \
    --metrics "$dir/r1/metrics.csv" --format csv | tail -1 >"$dir/comm_model.csv"
done <"$ROWS"

/usr/bin/python3 - "$ROWS" "$OUT/scaling.csv" "$CORES" <<'PY'
import csv, glob, re, shutil, sys
rows_file, out_path, cores = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = [l.rstrip("\n").split(" ", 3) for l in open(rows_file) if l.strip()]  # paths keep spaces

def windows(path):
    w = list(csv.DictReader(open(path)))
    return w[1:] if len(w) > 1 else w  # first window: warm-up

def rate(w):  # equal steps and tokens per window: the run's rate is the windows' harmonic mean
    return len(w) / sum(1.0 / float(r["tokens_per_s"]) for r in w)

table = []
for mode, p, streams, d in runs:
    reps = sorted(glob.glob(d + "/r*/metrics.csv"))
    best = max(reps, key=lambda f: rate(windows(f)))
    rdir = best[: -len("/metrics.csv")]
    for f in ("metrics.csv", "log.txt", "load1"):
        shutil.copy(rdir + "/" + f, d + "/" + f)
    w = windows(best)
    mean = lambda k: sum(float(r[k]) for r in w) / len(w)
    tps = rate(w)
    rates = sorted(rate(windows(f)) for f in reps)
    median = (rates[(len(rates) - 1) // 2] + rates[len(rates) // 2]) / 2
    m = re.search(r"\(imbalance ([0-9.]+)\)", open(d + "/log.txt").read())
    imb = m.group(1) if m else "1"
    comp, a2a, ar = mean("ms_compute"), mean("ms_alltoall"), mean("ms_allreduce")
    pred = next(csv.reader(open(d + "/comm_model.csv")))
    table.append({"mode": mode, "P": int(p), "streams": int(streams),
                  "oversubscribed": int(int(p) > cores), "tokens_per_s": tps,
                  "tokens_per_s_median": median,
                  "bytes_per_rank_step": mean("bytes_sent_per_rank"),
                  "pred_bytes": float(pred[3]), "plan": pred[6],
                  "a2a_share": a2a / (comp + a2a + ar) if comp + a2a + ar > 0 else 0.0,
                  "ms_compute": comp, "ms_alltoall": a2a, "ms_allreduce": ar,
                  "cache_hit_rate": mean("cache_hit_rate"), "table_imbalance": float(imb),
                  "repeats": len(reps), "load1": float(open(d + "/load1").read())})
for r in table:
    base = [b for b in table if b["mode"] == r["mode"] and b["P"] == 1]
    r["efficiency"] = r["tokens_per_s"] / (r["P"] * base[0]["tokens_per_s"]) if base else 0.0
cols = ["mode", "P", "streams", "oversubscribed", "tokens_per_s", "efficiency",
        "tokens_per_s_median",
        "bytes_per_rank_step", "pred_bytes", "plan", "a2a_share",
        "ms_compute", "ms_alltoall", "ms_allreduce", "cache_hit_rate", "table_imbalance",
        "repeats", "load1"]
fmt = {"tokens_per_s": "%.0f", "tokens_per_s_median": "%.0f", "efficiency": "%.4f",
       "bytes_per_rank_step": "%.0f",
       "pred_bytes": "%.0f", "a2a_share": "%.4f",
       "ms_compute": "%.2f", "ms_alltoall": "%.2f", "ms_allreduce": "%.2f",
       "cache_hit_rate": "%.4f", "table_imbalance": "%.3f", "load1": "%.2f"}
with open(out_path, "w", newline="") as f:
    wr = csv.writer(f, lineterminator="\n")
    wr.writerow(cols)
    for r in table:
        wr.writerow([fmt[c] % r[c] if c in fmt else r[c] for c in cols])
print()
print("%-6s %2s %7s %9s %6s %9s %10s %10s %-7s %6s %8s %6s %7s %6s %5s" %
      ("mode", "P", "streams", "tok/s", "eff", "median", "KiB/step", "pred KiB", "f/o/r",
       "a2a%",
       "compute", "a2a", "allred", "hit%", "load"))
for r in table:
    print("%-6s %2d %7d %9.0f %5.0f%% %9.0f %10.1f %10.1f %-7s %5.1f%% %8.1f %6.1f %7.2f %5.1f%% %5.2f%s" %
          (r["mode"], r["P"], r["streams"], r["tokens_per_s"], 100 * r["efficiency"],
           r["tokens_per_s_median"],
           r["bytes_per_rank_step"] / 1024, r["pred_bytes"] / 1024, r["plan"],
           100 * r["a2a_share"], r["ms_compute"],
           r["ms_alltoall"], r["ms_allreduce"], 100 * r["cache_hit_rate"], r["load1"],
           "  *" if r["oversubscribed"] else ""))
print("(tok/s, eff and the times: the fastest of %d repeats, oversubscribed runs once; median:"
      " tok/s of the median repeat; ms per step on rank 0; load: 1-minute load average at the"
      " kept run's start;" % max(r["repeats"] for r in table))
print(" * oversubscribed: more ranks than the %d cores, so times show "
      "overheads, not speedup)" % cores)
weak2 = [r for r in table if r["mode"] == "weak" and r["P"] == min(2, cores)]
if weak2 and weak2[0]["P"] > 1:
    print("weak-scaling efficiency 1 -> %d ranks: %.1f%%" % (weak2[0]["P"], 100 * weak2[0]["efficiency"]))
PY
rm -f "$ROWS"

# the communication model against the weak runs with more than one rank
ranks=$(seq -s, 2 "$MAXP" || true)
if [ -n "$ranks" ]; then
  {
    jobs/comm_model.py --bin "$BIN" --config "$CONF" --per-rank-streams "$PER_RANK" \
      --stream_block="$PER_RANK" --ranks "$ranks" --metrics "$OUT/weak-p{P}/metrics.csv" --format markdown
    echo
    echo "Byte counts do not depend on timing, so the oversubscribed runs (P > $CORES on this" \
         "$CORES-core machine) measure them as well as the others; $STEPS steps per run."
  } >"$OUT/comm_model.md"
  echo "wrote $OUT/comm_model.md"
fi

gnuplot <<GP
set terminal pngcairo size 800,560 noenhanced font ",10"
set datafile separator ","
set datafile columnheaders
set grid
set key top right
set xlabel "ranks P"
set xrange [0.5:$MAXP + 0.5]
set xtics 1
set arrow 1 from $CORES + 0.5, graph 0 to $CORES + 0.5, graph 1 nohead dashtype 2
set label 1 "P > $CORES: oversubscribed ($CORES cores shared):\ntimes show overheads, not speedup" at $CORES + 0.6, graph 0.08 font ",9"
csv = "$OUT/scaling.csv"
is(m) = strcol("mode") eq m

set output "$OUT/tokens_per_s.png"
set title "Throughput (global tokens/s), Fashion-MNIST small Memformer"
set ylabel "tokens / s"
set yrange [0:*]
plot csv using "P":(is("weak") ? column("tokens_per_s") : 1/0) with linespoints lw 2 pt 7 title "weak ($PER_RANK streams/rank)", \
     csv using "P":(is("strong") ? column("tokens_per_s") : 1/0) with linespoints lw 2 pt 5 title "strong ($STRONG_STREAMS streams)"

set output "$OUT/efficiency.png"
set title "Parallel efficiency tokens/s(P) / (P tokens/s(1))"
set ylabel "efficiency"
set yrange [0:1.2]
plot csv using "P":(is("weak") ? column("efficiency") : 1/0) with linespoints lw 2 pt 7 title "weak", \
     csv using "P":(is("strong") ? column("efficiency") : 1/0) with linespoints lw 2 pt 5 title "strong", \
     0.9 with lines dashtype 3 lc rgb "gray40" title "90% target"

set output "$OUT/bytes.png"
set title "Row-exchange bytes sent per rank per step (none at P = 1)"
set ylabel "KiB / rank / step"
set logscale y
set yrange [1000:100000]
set xrange [1.5:$MAXP + 0.5]
set key bottom right
set label 1 at $CORES + 0.6, graph 0.93
plot csv using "P":(is("weak") ? column("bytes_per_rank_step")/1024 : 1/0) with linespoints lw 2 pt 7 title "weak measured", \
     csv using "P":(is("weak") ? column("pred_bytes")/1024 : 1/0) with linespoints dashtype 3 pt 4 title "weak, the planner's prediction (uniform buckets)", \
     csv using "P":(is("strong") ? column("bytes_per_rank_step")/1024 : 1/0) with linespoints lw 2 pt 5 title "strong measured", \
     csv using "P":(is("strong") ? column("pred_bytes")/1024 : 1/0) with linespoints dashtype 3 pt 12 title "strong, the planner's prediction"

unset logscale y
set xrange [0.5:$MAXP + 0.5]
set key top right
set label 1 at $CORES + 0.6, graph 0.08
set output "$OUT/a2a_share.png"
set title "All-to-all share of step time  a2a / (compute + a2a + allreduce), rank 0"
set ylabel "share"
set yrange [0:1]
plot csv using "P":(is("weak") ? column("a2a_share") : 1/0) with linespoints lw 2 pt 7 title "weak", \
     csv using "P":(is("strong") ? column("a2a_share") : 1/0) with linespoints lw 2 pt 5 title "strong"
GP
echo "wrote $OUT/scaling.csv and $OUT/{tokens_per_s,efficiency,bytes,a2a_share}.png"
