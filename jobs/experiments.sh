#!/usr/bin/env bash
# Experiment driver: named sets of training runs that test the two methods' claims, resumable
# across sittings, with one CSV row per evaluation and plots against step, FLOPs and wall time.
#
#   bash jobs/experiments.sh SET [OUT_DIR]        SET: main-fmnist main-brown memory hash wall tiny
#   STEPS=4000 SEEDS="1 2" NP=2 bash jobs/experiments.sh main-fmnist
#
# Sets (every arm starts from jobs/configs/experiment-base.conf):
#   main-fmnist  Fashion-MNIST pixels: the Memformer and a decoder over one 49-pixel segment,
#                each with dense and hashed projections, and a decoder over the whole image
#                (seg_len 784, 2 streams: the same 1568 tokens per step), dense and hashed
#   main-brown   Brown bytes: the same four, and decoders over the Memformer's context (the
#                horizon's 4 segments of 64 bytes: seg_len 256), dense and hashed
#   memory       the hashed Memformer on Fashion-MNIST (base: the main set's arm at this set's
#                length): memory off; 1 and 32 slots (8 in base);
#                forgetting off; write temperature 1 (0.25 in base); horizon 1 and 16 (4), with
#                32 and 2 streams so that every arm trains on 1568 tokens per step
#   hash         the hashed decoder on Fashion-MNIST (base: expanding bits 2, tau 8, l1prob):
#                expanding bits 0, 1, 3; tau 2 and 4 (the same d_model 64 and 4 heads: tau
#                must divide d_model, and tau + expanding bits stay within 16); score = prob;
#                rows read and fetched as bf16
#   wall         perplexity per wall-clock second where the hashed layers are faster per
#                token: the main set's decoder and Memformer at d_model 256, dense and hashed,
#                the same steps and tokens each; compare them at the time the fastest arm
#                finishes (val_ppl_vs_wall.png, evals.csv's wall_s)
#   tiny         two arms of a few steps, for the test suite (other seg_len and streams)
# Every arm runs for every seed in SEEDS (default: 1 2 for main sets, 1 otherwise) with mpirun
# on NP ranks (default 2) for STEPS optimizer steps (default per set; the learning-rate
# schedule spans them). A seed sets both the initialisation (seed) and the shuffled document
# order (data_seed), so the arms of one seed read the same documents in the same order.
# UNTIL=N ends this sitting's runs after step N (memtrain's stop_after): a set can span
# sittings, and a run continues from its last checkpoint when its directory has one, on the
# same schedule as a run that never stopped; a finished run is left as it is.
# (Raising STEPS for runs already started stretches their cosine decay from where they are.)
#
# Validation is one set for every arm of a set: the first eval_docs validation documents
# (256 images on Fashion-MNIST, 16 texts on Brown), scored whole by each model in its own way,
# whatever its seg_len, streams or rank count; val_tokens says how many tokens that was.
#
# OUT_DIR (default runs/exp-SET in the repository; a relative one is read from the directory the
# script is started in) gets a run directory per arm and seed, and
#   evals.csv     one row per evaluation: set, arm, seed, step, tokens, wall_s (training and
#                 evaluation time, summed over sittings), flops (training FLOPs: 3 x the
#                 forward's per token, times tokens; 2 per multiply-add, and a hashed
#                 projection counts its row sums, not its table lookups), train_ppl, val_ppl,
#                 val_tokens (tokens the evaluation scored), peak_rss_mib (the largest rank's
#                 peak over the sittings so far), mflop_per_token, tokens_per_s, dense_params,
#                 table_params (the model's parameters in dense tensors and in hash tables),
#                 passes (over the training documents)
#   summary.md    per arm: steps, tokens, passes, wall time, MFLOP/token, tokens/s, peak memory,
#                 dense and table parameters, validation tokens, final validation perplexity
#                 (mean over seeds, the spread, each seed); then whether every arm scored the
#                 same validation tokens
#   val_ppl_vs_{step,flops,wall}.png   each arm's mean over seeds, the seeds' range shaded
set -euo pipefail
set_name=${1:?usage: jobs/experiments.sh main-fmnist|main-brown|memory|hash|wall|tiny [OUT_DIR]}
out=${2:-} # a relative OUT_DIR is read from where the script starts
[ -z "$out" ] || [[ $out == /* ]] || out=$PWD/$out
cd "$(dirname "$0")/.."
out=${out:-runs/exp-$set_name}
NP=${NP:-2}
BIN=${BUILD:-build}/bin
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
export OMPI_MCA_btl_base_warn_component_unused=0

# arms: name, then memtrain --key=value arguments
fm="--data=fashion-mnist --seg_len=49"
br="--data=brown --seg_len=64 --eval_docs=16"
# a decoder over the whole image: 2 streams of one 784-pixel segment, the tokens per step of
# 8 streams x 4 segments x 49 pixels
whole="--data=fashion-mnist --arch=decoder --seg_len=784 --horizon=1 --streams=2 --stream_block=1"
case $set_name in
  main-fmnist)
    steps=3000 seeds="1 2"
    arms=("memformer-hash $fm --arch=memformer --proj=hash"
          "memformer-dense $fm --arch=memformer --proj=dense"
          "decoder-hash $fm --arch=decoder --proj=hash"
          "decoder-dense $fm --arch=decoder --proj=dense"
          "decoder784-hash $whole --proj=hash" "decoder784-dense $whole --proj=dense") ;;
  main-brown)
    steps=3000 seeds="1 2"
    arms=("memformer-hash $br --arch=memformer --proj=hash"
          "memformer-dense $br --arch=memformer --proj=dense"
          "decoder-hash $br --arch=decoder --proj=hash"
          "decoder-dense $br --arch=decoder --proj=dense"
          "decoder256-hash $br --arch=decoder --proj=hash --seg_len=256 --horizon=1"
          "decoder256-dense $br --arch=decoder --proj=dense --seg_len=256 --horizon=1") ;;
  memory)
    steps=3000 seeds="1"
    m="$fm --arch=memformer --proj=hash"
    arms=("base $m" "nomemory $m --memory=off" "slots1 $m --mem_slots=1" "slots32 $m --mem_slots=32"
          "noforgetting $m --forgetting=off" "writetemp1 $m --write_temp=1"
          "horizon1 $m --horizon=1 --streams=32"
          "horizon16 $m --horizon=16 --streams=2 --stream_block=1") ;;
  hash)
    steps=3000 seeds="1"
    d="$fm --arch=decoder --proj=hash"
    arms=("base $d" "expand0 $d --expand_bits=0" "expand1 $d --expand_bits=1" "expand3 $d --expand_bits=3"
          "tau2 $d --tau=2" "tau4 $d --tau=4"
          "prob $d --score=prob" "bf16 $d --row_format=bf16") ;;
  wall)
    steps=800 seeds="1 2"
    w="$fm --d_model=256 --n_heads=4 --eval_every=50"
    arms=("decoder-hash $w --arch=decoder --proj=hash" "decoder-dense $w --arch=decoder --proj=dense"
          "memformer-hash $w --arch=memformer --proj=hash"
          "memformer-dense $w --arch=memformer --proj=dense") ;;
  tiny)
    steps=4 seeds="1"
    t="--d_model=16 --eval_every=2 --eval_docs=3 --warmup=1 --log_every=1 --ckpt_every=2"
    # other seg_len, streams and stream_block, the same tokens per step and validation set
    arms=("a $fm --arch=decoder --proj=hash $t"
          "b --data=fashion-mnist --seg_len=98 --streams=4 --stream_block=2 --arch=memformer --proj=dense $t") ;;
  *) echo "experiments: unknown set '$set_name' (main-fmnist, main-brown, memory, hash, wall, tiny)" >&2
     exit 2 ;;
esac
for v in STEPS UNTIL NP; do
  [[ ${!v:-1} =~ ^(0|[1-9][0-9]{0,8})$ ]] || { echo "experiments: $v=${!v}: expected a whole number" >&2; exit 2; }
done
STEPS=${STEPS:-$steps}
SEEDS=${SEEDS:-$seeds}
[[ $SEEDS =~ ^[[:space:]]*(0|[1-9][0-9]{0,8})([[:space:]]+(0|[1-9][0-9]{0,8}))*[[:space:]]*$ ]] \
  || { echo "experiments: SEEDS=$SEEDS: expected whole numbers separated by spaces" >&2; exit 2; }
if [ "$NP" -eq 0 ]; then # mpirun -np 0 takes every slot it finds
  echo "experiments: NP=0: expected a number of ranks from 1" >&2
  exit 2
fi
UNTIL=${UNTIL:-$STEPS}
if [ "$UNTIL" -eq 0 ]; then # memtrain's stop_after = 0 means no stop: not what 0 asks
  echo "experiments: UNTIL=0: expected a step from 1 to STEPS=$STEPS" >&2
  exit 2
fi
if [ "$UNTIL" -gt "$STEPS" ]; then
  echo "experiments: UNTIL=$UNTIL is past STEPS=$STEPS" >&2
  exit 2
fi
stop=$UNTIL
[ "$UNTIL" -eq "$STEPS" ] && stop=0
# an output directory holds one set: its runs are found again by arm name and seed, and the
# arms of main-fmnist and main-brown (or wall) share names
if [ -f "$out/set" ] && [ "$(cat "$out/set")" != "$set_name" ]; then
  echo "experiments: $out holds the runs of set '$(cat "$out/set")', not '$set_name': give another OUT_DIR" >&2
  exit 2
fi
mkdir -p "$out"
# one driver at a time in OUT_DIR: a second would fail on the first's runs, and append to
# their logs (the lock's descriptor is closed for the ranks and their helpers, which could
# outlive the script by a moment and keep the next sitting out)
exec {lockfd}>>"$out/.lock"
flock -n "$lockfd" || { echo "experiments: $out is in use by another experiments.sh: wait for it, or give another OUT_DIR" >&2; exit 2; }
echo "$set_name" >"$out/set"
# shellcheck source=jobs/lib/ranks.sh
. jobs/lib/ranks.sh

for row in "${arms[@]}"; do
  read -r arm args <<<"$row"
  for seed in $SEEDS; do
    run=$out/$arm-s$seed
    # the arm's settings as this script gives them, kept in the run: a run started with
    # others (an edited arm, a directory copied in) is not taken as this arm's
    if [ -f "$run/arm" ] && [ "$(cat "$run/arm")" != "$args" ]; then
      echo "experiments: $run was started with other settings ($(cat "$run/arm")), not this" \
           "arm's ($args): move it away, or give another OUT_DIR" >&2
      exit 2
    fi
    if ls "$run"/ckpt/ckpt-*.h5 >/dev/null 2>&1; then
      done_steps=$(tail -n 1 "$run/metrics.csv" | cut -d, -f1)
      if [ "${done_steps:-0}" -ge "$UNTIL" ]; then
        echo "== $arm seed $seed: done ($done_steps steps)"
        continue
      fi
      echo "== $arm seed $seed: continuing from step $done_steps to $UNTIL of $STEPS"
      [ -f "$run/arm" ] || printf '%s\n' "$args" >"$run/arm" # a run from before arm files
      cmd=(--resume "$run" --steps="$STEPS" --stop_after="$stop")
    else
      echo "== $arm seed $seed: steps 1 to $UNTIL of $STEPS"
      mkdir -p "$run"
      printf '%s\n' "$args" >"$run/arm"
      # shellcheck disable=SC2206 # args is a list of options
      cmd=(--config jobs/configs/experiment-base.conf --ckpt_every=500 $args --seed="$seed"
           --data_seed="$seed"
           --steps="$STEPS" --stop_after="$stop" --run_dir="$run")
    fi
    # each rank's peak memory (KiB) from /usr/bin/time, one line per rank and sitting; time
    # ignores USR1 (mpirun passes a stop to each rank's process group), memtrain handles it
    status=0
    run_ranks experiments mpirun -q --oversubscribe -np "$NP" \
      sh -c 'trap "" USR1; exec /usr/bin/time -a -o "$0" -f %M "$@"' "$run/peak_kib" \
      "$BIN/memtrain" "${cmd[@]}" >>"$run/log.txt" 2>&1 {lockfd}>&- || status=$?
    if [ -n "$ranks_stopped_by" ]; then
      { grep -E '^(step|checkpoint:) ' "$run/log.txt" || true; } | tail -n 2 | sed 's/^/   /'
      if [ "$status" -eq 75 ]; then
        # this sitting's stop line: the log holds the earlier sittings' too
        if { grep '^memtrain: stopped by a signal' "$run/log.txt" || true; } | tail -n 1 |
            grep -q 'after step'; then
          what="wrote a checkpoint"
        else
          what="stopped before its first step, with nothing written"
        fi
        echo "experiments: stopped by $ranks_stopped_by: $arm seed $seed $what; run the same" \
             "command again to continue" >&2
        exit 75
      fi
      echo "experiments: stopped by $ranks_stopped_by (log: $run/log.txt)" >&2
      exit "$ranks_stop_status"
    fi
    if [ "$status" -ne 0 ]; then
      tail -n 20 "$run/log.txt" >&2
      echo "experiments: $arm seed $seed failed (log: $run/log.txt)" >&2
      exit 1
    fi
    grep -E '^step ' "$run/log.txt" | tail -n 1 | sed 's/^/   /'
  done
done

# one CSV row per evaluation, the summary and the plots, from every run of the set so far
/usr/bin/python3 - "$out" "$set_name" "${arms[@]}" <<'PY'
import csv, glob, re, statistics, sys
out, set_name, arms = sys.argv[1], sys.argv[2], [a.split()[0] for a in sys.argv[3:]]
cols = ["set", "arm", "seed", "step", "tokens", "wall_s", "flops", "train_ppl", "val_ppl",
        "val_tokens", "peak_rss_mib", "mflop_per_token", "tokens_per_s", "dense_params",
        "table_params", "passes"]
rows, final, curves = [], {}, {}
for arm in arms:
    for run in sorted(glob.glob("%s/%s-s*" % (out, arm))):
        seed = int(run.rsplit("-s", 1)[1])
        log = open(run + "/log.txt").read()
        mf = float(re.findall(r"([0-9.e+-]+) MFLOP/token", log)[0])
        dense, table = (int(v) for v in re.findall(r"dense params (\d+), table params (\d+)", log)[0])
        m = re.search(r"(\d+) streams(?: in blocks of \d+ \(\w+ sums\))?, horizon (\d+) x (\d+) tokens", log)
        per_step = int(m.group(1)) * int(m.group(2)) * int(m.group(3))
        peaks = [int(l) for l in open(run + "/peak_kib") if l.strip().isdigit()]
        peak = max(peaks) / 1024 if peaks else float("nan")
        # a step logged twice (a sitting stopped between a checkpoint and its next) counts once,
        # with the figures of the run that went on
        logged = {}
        for r in csv.DictReader(open(run + "/metrics.csv")):
            if r["step"].isdigit():
                logged[int(r["step"])] = r
        wall, last, tps = 0.0, 0, []
        for step, r in sorted(logged.items()):
            wall += (step - last) * sum(float(v) for k, v in r.items() if k.startswith("ms_")) / 1000
            last = step
            tps.append(float(r["tokens_per_s"]))
            if r["val_ppl"]:
                tokens = step * per_step
                flops = 3 * mf * 1e6 * tokens
                rows.append([set_name, arm, seed, step, tokens, "%.3f" % wall, "%.4g" % flops,
                             r["train_ppl"], r["val_ppl"], r["val_tokens"], "%.1f" % peak, mf,
                             "%.0f" % statistics.median(tps), dense, table, r["passes"]])
                final[(arm, seed)] = dict(step=step, tokens=tokens, wall=wall,
                                          ppl=float(r["val_ppl"]), vtok=int(r["val_tokens"]),
                                          peak=peak, mf=mf, tps=statistics.median(tps),
                                          dense=dense, table=table, passes=float(r["passes"]))
                curves.setdefault(arm, {}).setdefault(step, []).append(
                    (wall, flops, float(r["val_ppl"])))
with open(out + "/evals.csv", "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(cols)
    w.writerows(rows)
lines = ["| arm | steps | tokens | passes | wall | MFLOP/token | tokens/s | peak MiB/rank | "
         "dense params | table params | val tokens | val ppl (seeds) |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
for arm in arms:
    fs = [v for (a, s), v in sorted(final.items()) if a == arm]
    if not fs:
        continue
    ppl = [v["ppl"] for v in fs]
    spread = " +- %.3f" % ((max(ppl) - min(ppl)) / 2) if len(ppl) > 1 else ""
    lines.append("| %s | %d | %.3g | %.2f | %.0f s | %.3f | %.0f | %.0f | %d | %d | %s | %.3f%s (%s) |" % (
        arm, fs[0]["step"], fs[0]["tokens"], fs[0]["passes"],
        statistics.mean(v["wall"] for v in fs), fs[0]["mf"], statistics.mean(v["tps"] for v in fs),
        max(v["peak"] for v in fs), fs[0]["dense"], fs[0]["table"],
        "/".join(sorted({str(v["vtok"]) for v in fs})), statistics.mean(ppl), spread,
        ", ".join("%.3f" % p for p in ppl)))
vt = sorted({v["vtok"] for v in final.values()})
lines.append("")
lines.append("Validation: the same %s tokens for every arm (whole documents, eval_docs)." % vt[0]
             if len(vt) == 1 else
             "Validation: ARMS SCORED DIFFERENT TOKEN COUNTS (%s): not comparable." % vt)
# at equal wall-clock: each arm's seed-mean curve read at the time the fastest arm finished,
# and when it first reached the perplexity the slowest arm ended at
def mean_curve(arm):
    nseeds = len([1 for (a, s) in final if a == arm])
    pts = [(statistics.mean(p[0] for p in v), statistics.mean(p[2] for p in v))
           for _, v in sorted(curves.get(arm, {}).items()) if len(v) == nseeds]
    return pts
def at_time(pts, t):
    for (t0, p0), (t1, p1) in zip(pts, pts[1:]):
        if t0 <= t <= t1:
            return p0 + (p1 - p0) * (t - t0) / (t1 - t0) if t1 > t0 else p1
    return float("nan")
def first_reach(pts, ppl):
    for (t0, p0), (t1, p1) in zip([(0.0, float("inf"))] + pts, pts):
        if p1 <= ppl:
            return t0 + (t1 - t0) * (p0 - ppl) / (p0 - p1) if p0 != float("inf") else t1
    return float("nan")
mc = {a: mean_curve(a) for a in arms if mean_curve(a)}
if len(mc) > 1:
    budget = min(p[-1][0] for p in mc.values())
    slow = max(mc, key=lambda a: mc[a][-1][0])
    target = mc[slow][-1][1]
    lines += ["", "At equal wall-clock (seed means): the fastest arm finished after %.0f s; the "
              "slowest, %s, ended at perplexity %.3f." % (budget, slow, target), "",
              "| arm | val ppl at %.0f s | seconds to reach %.3f |" % (budget, target),
              "|---|---:|---:|"]
    def shown(v, fmt, missing):  # an arm whose curve never got there says so, not nan
        return missing if v != v else fmt % v
    for a in mc:
        lines.append("| %s | %s | %s |" % (a, shown(at_time(mc[a], budget), "%.3f", "-"),
                                           shown(first_reach(mc[a], target), "%.0f", "not reached")))
open(out + "/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
# per arm, at each evaluated step every seed has reached: the seeds' mean and range
for arm in arms:
    nseeds = len([1 for (a, s) in final if a == arm])
    with open("%s/%s.dat" % (out, arm), "w") as f:
        for step, pts in sorted(curves.get(arm, {}).items()):
            if len(pts) < nseeds:
                continue
            ppl = [p[2] for p in pts]
            f.write("%d %.3f %.4g %.6f %.6f %.6f\n" % (
                step, statistics.mean(p[0] for p in pts), statistics.mean(p[1] for p in pts),
                statistics.mean(ppl), min(ppl), max(ppl)))
PY

# distinguishable colours, no yellow; each arm's seed mean as a line, its range over the
# seeds shaded (a single seed: the line alone)
colors=("#1f77b4" "#d62728" "#2ca02c" "#9467bd" "#ff7f0e" "#17becf" "#8c564b" "#e377c2"
        "#000000" "#7f7f7f")
plot() { # file xlabel column logscale
  local arm i=0 bands="" lines="" c
  for r in "${arms[@]}"; do
    arm=${r%% *}
    c=${colors[$((i % ${#colors[@]}))]}
    i=$((i + 1))
    [ -s "$out/$arm.dat" ] || continue
    bands+="\"$out/$arm.dat\" using $3:5:6 with filledcurves fc rgb \"$c\" fs transparent solid 0.2 noborder notitle, "
    lines+="\"$out/$arm.dat\" using $3:4 with linespoints lw 2 pt 7 ps 0.6 lc rgb \"$c\" title \"$arm\", "
  done
  gnuplot <<GP
set terminal pngcairo size 1000,600 font ",10" noenhanced
set output "$out/$1"
set title "$set_name: validation perplexity, mean over seeds $SEEDS (range shaded)"
set xlabel "$2"
set ylabel "validation perplexity (one set of whole documents for all arms)"
set key top right
set grid
$4
plot ${bands}${lines%, }
GP
}
plot val_ppl_vs_step.png "optimizer step" 1 ""
plot val_ppl_vs_flops.png "training FLOPs (3 x forward, 2 per multiply-add; hashed projections: row sums counted, table lookups not)" 3 "set logscale x"
plot val_ppl_vs_wall.png "wall-clock seconds (training and evaluation)" 2 ""
echo "experiments: $out/evals.csv, summary.md and val_ppl_vs_{step,flops,wall}.png"
