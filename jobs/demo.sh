#!/usr/bin/env bash
# make demo: trains a hashed decoder over whole Fashion-MNIST images (jobs/configs/demo.conf) on
# 2 ranks with mpirun, printing perplexity as it goes (about 2.5 minutes on a 2-core machine),
# then samples a grid of 16 images from the trained model into runs/demo/samples.png (4 screen
# pixels a pixel, numbered, captioned with the settings; about 1.5 minutes: each pixel reruns
# the decoder over the image so far). Sampling is plain: temperature 1, no top-k or top-p cut;
# colder draws leave more images nearly black (the background is likely enough at the top of
# an image that a garment often never starts).
set -euo pipefail
# a relative RUN_DIR is read from where the script starts (make demo: the repository)
[ -z "${RUN_DIR:-}" ] || [[ $RUN_DIR == /* ]] || RUN_DIR=$PWD/$RUN_DIR
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
NP=${NP:-2}
RUN_DIR=${RUN_DIR:-runs/demo}
[[ $NP =~ ^[1-9][0-9]{0,3}$ ]] || { echo "demo: NP=$NP: expected a number of ranks from 1" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
export OMPI_MCA_btl_base_warn_component_unused=0
# the directory is made anew, but only one an earlier make demo made: a run of demo.conf
# started by hand or by jobs/train.sbatch (its run_dir is runs/demo too) is left alone
newest() { ls "$RUN_DIR"/ckpt/ckpt-*.h5 2>/dev/null | tail -n 1 | xargs -r basename; }
if [ -e "$RUN_DIR" ] && [ ! -e "$RUN_DIR/.made-by-demo" ]; then
  echo "demo: $RUN_DIR holds a run make demo did not start: move it away, or give another" \
       "directory (make demo RUN_DIR=runs/demo2)" >&2
  exit 2
fi
# nor one an earlier demo started and a resume by hand took further: the marker names the
# newest checkpoint the demo left
if [ -s "$RUN_DIR/.made-by-demo" ] && [ "$(newest)" != "$(cat "$RUN_DIR/.made-by-demo")" ]; then
  echo "demo: $RUN_DIR was taken further than make demo left it ($(newest), after" \
       "$(cat "$RUN_DIR/.made-by-demo")): move it away, or give another directory" \
       "(make demo RUN_DIR=runs/demo2)" >&2
  exit 2
fi
# one demo at a time on a directory, for the whole script (training, then sampling): a
# second would remove the first one's files under it
mkdir -p "$(dirname "$RUN_DIR")"
exec 9>>"$(dirname "$RUN_DIR")/.$(basename "$RUN_DIR").demo-lock"
flock -n 9 || { echo "demo: $RUN_DIR is in use by another make demo: wait for it, or give another" \
                      "directory (make demo RUN_DIR=runs/demo2)" >&2; exit 2; }
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"
touch "$RUN_DIR/.made-by-demo"
# shellcheck source=jobs/lib/ranks.sh
. jobs/lib/ranks.sh
# a stop signal (TERM, INT, HUP, USR1, USR2) reaches the ranks: training checkpoints and ends
stopped() {
  echo "demo: stopped by $ranks_stopped_by$1" >&2
  exit "$ranks_stop_status"
}
status=0
run_ranks demo mpirun -q --oversubscribe -np "$NP" "$BIN/memtrain" train \
  --config jobs/configs/demo.conf --run_dir="$RUN_DIR" "$@" 9>&- || status=$?
newest >"$RUN_DIR/.made-by-demo"
if [ -n "$ranks_stopped_by" ]; then
  if [ "$status" -eq 75 ] && [ -e "$RUN_DIR/ckpt/LATEST" ]; then
    stopped " while training (its checkpoint is in $RUN_DIR/ckpt)"
  fi
  stopped " while training"
fi
[ "$status" -eq 0 ] || exit "$status"
last=$RUN_DIR/ckpt/$(cat "$RUN_DIR/ckpt/LATEST")
run_ranks demo mpirun -q --oversubscribe -np "$NP" "$BIN/memtrain" sample --ckpt "$last" \
  --count 16 --temperature 1 --top-p 1 --seed=1 --out "$RUN_DIR/samples.png" 9>&- || status=$?
[ -z "$ranks_stopped_by" ] || stopped " while sampling"
[ "$status" -eq 0 ] || exit "$status"
echo "demo: metrics in $RUN_DIR/metrics.csv, checkpoint $last, samples $RUN_DIR/samples.png"
