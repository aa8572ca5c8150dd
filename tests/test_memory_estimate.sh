#!/usr/bin/env bash
# The memory estimate a run prints at start must be within 10% of the peak resident memory each
# rank reaches (/usr/bin/time -f %M inside mpirun), for the small Memformer (memformer.conf) and the d_model 256
# hashed decoder of the engine benchmarks, on 1, 2 and 4 ranks. The runs train 6 steps and write a
# checkpoint: the re-plan after step 5 takes no move that would hold more memory, so the
# estimate printed at start bounds the whole run.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$TOP"

kib() { # "447.8 MiB" / "1.14 GiB" -> KiB
  awk -v v="$1" -v u="$2" 'BEGIN { f = u == "GiB" ? 1048576 : u == "KiB" ? 1 : 1024; printf "%.0f", v * f }'
}
check() { # name np args...
  local name=$1 np=$2; shift 2
  status=0
  mpirun --oversubscribe -np "$np" /usr/bin/time -a -o "$TMP/$name.rss" -f %M "$BIN/memtrain" "$@" \
    --steps=6 --warmup=1 --eval_every=0 --ckpt_every=6 --log_every=6 --run_dir="$TMP/$name" \
    >"$TMP/$name.out" 2>&1 || status=$?
  [ "$status" -eq 0 ] || { cat "$TMP/$name.out"; fail "$name: exited $status"; }
  local est peak
  est=$(kib $(sed -n 's/^memory: about \([0-9.]*\) \([KMG]iB\) per rank.*/\1 \2/p' "$TMP/$name.out"))
  peak=$(grep -E '^[0-9]+$' "$TMP/$name.rss" | sort -n | tail -1)
  [ -n "$est" ] && [ -n "$peak" ] || { cat "$TMP/$name.out"; fail "$name: no estimate or no peak"; }
  awk -v e="$est" -v p="$peak" 'BEGIN { exit !(e >= 0.9 * p && e <= 1.1 * p) }' ||
    fail "$name: estimate $est KiB is not within 10% of the measured peak $peak KiB"
  pass "$name: estimate $est KiB, peak $peak KiB ($(awk -v e="$est" -v p="$peak" 'BEGIN { printf "%+.1f%%", 100 * (e - p) / p }'))"
}
check memformer-np1 1 --config jobs/configs/memformer.conf
check memformer-np2 2 --config jobs/configs/memformer.conf
# a quarter of the tables per rank: loading Fashion-MNIST is the largest part of the estimate
check memformer-np4 4 --config jobs/configs/memformer.conf
check d256-np1 1 --config jobs/configs/decoder-d256.conf
check d256-np2 2 --config jobs/configs/decoder-d256.conf --streams=16
check d256-np4 4 --config jobs/configs/decoder-d256.conf --streams=32
