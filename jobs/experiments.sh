#!/usr/bin/env bash
# Experiment driver: memformer against a decoder of the same size, each with dense and hashed
# projections, plus memformer without memory, on one dataset; CSV and PNG plots of the results.
#
#   bash jobs/experiments.sh fashion-mnist|brown [OUT_DIR]
#   STEPS=800 NP=2 bash jobs/experiments.sh brown runs/exp-brown
#
# Each configuration trains with mpirun on NP ranks (default 2) from jobs/configs/
# experiment-base.conf (Fashion-MNIST: 49-pixel segments, 16 per image; Brown: 64-byte
# segments). OUT_DIR (default runs/exp-DATASET) gets one run directory per configuration,
# summary.csv (FLOPs per token next to the final and best validation perplexity, throughput,
# wall time) and PNG plots: validation perplexity against step and against training FLOPs,
# and tokens/s per configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: jobs/experiments.sh fashion-mnist|brown [OUT_DIR]}
out=${2:-runs/exp-$data}
NP=${NP:-2}
STEPS=${STEPS:-800}
BIN=${BUILD:-build}/bin
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
case $data in
  fashion-mnist) seg=49 ;;
  brown) seg=64 ;;
  *) echo "experiments: unknown dataset '$data' (fashion-mnist or brown)" >&2; exit 2 ;;
esac
mkdir -p "$out"

# name: arch proj memory
grid=(
  "memformer-hash memformer hash on"
  "memformer-dense memformer dense on"
  "decoder-hash decoder hash off"
  "decoder-dense decoder dense off"
  "memformer-hash-nomemory memformer hash off"
)
summary=$out/summary.csv
echo "name,arch,proj,memory,mflop_per_token,steps,tokens,train_ppl,val_ppl,best_val_ppl,tokens_per_s,wall_s" >"$summary"
for row in "${grid[@]}"; do
  read -r name arch proj memory <<<"$row"
  run=$out/$name
  rm -rf "$run"
  t0=$(date +%s.%N)
  mpirun --oversubscribe -np "$NP" "$BIN/memtrain" --config jobs/configs/experiment-base.conf \
    --data="$data" --seg_len="$seg" --arch="$arch" --proj="$proj" --memory="$memory" \
    --steps="$STEPS" --run_dir="$run" >"$run.log" 2>&1 || { tail "$run.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  mflop=$(sed -n 's/.* \([0-9.e+-]*\) MFLOP\/token.*/\1/p' "$run.log")
  /usr/bin/python3 - "$run/metrics.csv" "$name,$arch,$proj,$memory,$mflop" "$t0" "$t1" \
    "$STEPS" "$seg" >>"$summary" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
vals = [float(r["val_ppl"]) for r in rows if r["val_ppl"]]
steps, seg = int(sys.argv[5]), int(sys.argv[6])
tokens = steps * 8 * 4 * seg  # streams * horizon * seg_len per step
tps = sum(float(r["tokens_per_s"]) for r in rows) / len(rows)
print(f"{sys.argv[2]},{steps},{tokens},{float(rows[-1]['train_ppl']):.3f},{vals[-1]:.3f},"
      f"{min(vals):.3f},{tps:.0f},{float(sys.argv[4]) - float(sys.argv[3]):.0f}")
PY
  echo "$(tail -n 1 "$summary")"
  # val ppl against step and against training FLOPs (forward + backward ~ 3x forward)
  awk -F, -v seg="$seg" -v mf="$mflop" 'NR > 1 && $13 != "" {
      print $1, $13, 3 * mf * 1e6 * $1 * 8 * 4 * seg }' "$run/metrics.csv" >"$run/val.dat"
done

plot() { # output title xlabel using logscale
  gnuplot <<GP
set terminal pngcairo size 900,560 noenhanced
set output "$out/$1"
set title "$2"
set xlabel "$3"
set ylabel "validation perplexity"
set key top right
set grid
$5
plot for [n in "memformer-hash memformer-dense decoder-hash decoder-dense memformer-hash-nomemory"] \
  "$out/".n."/val.dat" using $4 with linespoints title n
GP
}
plot val_ppl_vs_step.png "$data: validation perplexity by step" "optimizer step" "1:2" ""
plot val_ppl_vs_flops.png "$data: validation perplexity by training FLOPs" \
  "training FLOPs (3 x forward)" "3:2" "set logscale x"
gnuplot <<GP
set terminal pngcairo size 900,500 noenhanced
set output "$out/tokens_per_s.png"
set title "$data: training throughput on $NP ranks"
set style data histograms
set style fill solid 0.7
set boxwidth 0.8
set ylabel "tokens/s"
set xtics rotate by -20
set datafile separator ","
set grid ytics
plot "$summary" using 11:xtic(1) skip 1 notitle
GP
echo "experiments: $summary and plots in $out"
