#!/usr/bin/env bash
# Peak memory per rank against the rank count: the hashed decoder of jobs/configs/decoder-d256.conf
# with 8 streams per rank (one block each) on P = 1, 2, 4, 8 ranks (P > cores shares them: this
# measures memory and bytes, not speed). Each rank's peak RSS comes from /usr/bin/time -f %M
# inside mpirun; the table state per rank (rows + Adam moments of the shards it owns) and the
# activations are the run's own estimate, printed at start. Prints per P the largest rank's peak
# beside the bound 1.25 x (one rank's table state) / P + activations + row budget, and the
# bytes a rank sent per step. Environment: PS ("1 2 4 8"), STEPS (6), BUDGET (row_cache_mb, 256).
set -eu
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
PS=${PS:-1 2 4 8}
STEPS=${STEPS:-6}
BUDGET=${BUDGET:-256}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
export OMPI_MCA_btl_base_warn_component_unused=0
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mib() { # "12.5 MiB" / "1.2 GiB" / "300 KiB" -> MiB
  awk -v v="$1" -v u="$2" 'BEGIN { f = u == "GiB" ? 1024 : u == "KiB" ? 1 / 1024 : u == "TiB" ? 1048576 : 1; printf "%.1f", v * f }'
}
printf '%3s %8s %14s %12s %12s %12s %10s %14s\n' P streams "peak MiB/rank" "tables MiB" \
  "activ. MiB" "bound MiB" "peak/bound" "sent KiB/step"
state1=
for P in $PS; do
  run=$TMP/p$P
  mpirun --oversubscribe -np "$P" /usr/bin/time -a -o "$TMP/peak$P" -f %M "$BIN/memtrain" \
    --config jobs/configs/decoder-d256.conf --streams=$((8 * P)) --stream_block=8 \
    --steps="$STEPS" --warmup=1 --log_every=$((STEPS / 2)) --row_cache_mb="$BUDGET" \
    --run_dir="$run" >"$TMP/log$P" 2>&1 || { cat "$TMP/log$P"; exit 1; }
  peak=$(sort -n "$TMP/peak$P" | tail -n 1)
  line=$(grep '^memory: about' "$TMP/log$P")
  tab=$(sed -E 's/.*tables and Adam state ([0-9.]+) ([KMGT]iB).*/\1 \2/' <<<"$line")
  act=$(sed -E 's/.*activations ([0-9.]+) ([KMGT]iB).*/\1 \2/' <<<"$line")
  tab=$(mib $tab)
  act=$(mib $act)
  [ -n "$state1" ] || state1=$(awk -v t="$tab" -v p="$P" 'BEGIN { print t * p }')
  sent=$(grep -E '^step' "$TMP/log$P" | tail -n 1 | sed -E 's/.*sent ([0-9.]+) ([KMG]iB).*/\1 \2/;t;s/.*/0 KiB/')
  sent=$(awk -v m="$(mib $sent)" 'BEGIN { print m * 1024 }')
  awk -v P="$P" -v s=$((8 * P)) -v pk="$peak" -v t="$tab" -v a="$act" -v s1="$state1" \
    -v b="$BUDGET" -v sent="$sent" 'BEGIN {
      bound = 1.25 * s1 / P + a + b
      printf "%3d %8d %14.1f %12.1f %12.1f %12.1f %10.2f %14.1f\n", P, s, pk / 1024, t, a, bound,
             pk / 1024 / bound, sent }'
done
