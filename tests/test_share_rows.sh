#!/usr/bin/env bash
# share_rows = on (the default): the ranks of a node map each other's shards of a fetched
# group and read those rows in place. A hashed Memformer (every group fetches: its memory
# makes segments sequential, which the owner strategy cannot serve) on 2 and 3 ranks must
# give bitwise the checkpoint it gives with share_rows = off, where every row is fetched. With
# sharing no row is fetched ("fetched 0.0%") and fewer bytes move (gradients alone); without,
# rows are fetched. A resume on another rank count reads the restored rows (bitwise the same
# resume with rows fetched), and the runs leave nothing in /dev/shm.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$TOP"

ARGS=(--config jobs/configs/memformer.conf --d_model=32 --n_heads=2 --seg_len=49 --stream_block=2
      --warmup=2 --eval_every=0 --log_every=1 --shuffle=off)
shm_count() { find /dev/shm -maxdepth 1 -name 'memtrain.*' 2>/dev/null | wc -l; }
before=$(shm_count)
sent() { # metrics.csv -> bytes sent per rank over the run
  /usr/bin/python3 -c 'import csv,sys; print(int(sum(float(r["bytes_sent_per_rank"]) for r in csv.DictReader(open(sys.argv[1])))))' "$1"
}

for np in 2 3; do
  streams=$((2 * np))
  for share in on off; do
    mt "$np" train "${ARGS[@]}" --streams=$streams --steps=4 --ckpt_every=4 --share_rows=$share \
      --run_dir="$TMP/np$np-$share"
    [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "np=$np share_rows=$share: exited $status"; }
    cp "$TMP/out" "$TMP/np$np-$share.log"
  done
  a=$(digest "$TMP/np$np-on/ckpt/ckpt-00000004.h5")
  b=$(digest "$TMP/np$np-off/ckpt/ckpt-00000004.h5")
  [ "$a" = "$b" ] || fail "np=$np: shared rows and fetched rows give different checkpoints"
  grep '^step' "$TMP/np$np-on.log" | grep -qv 'fetched 0.0%' &&
    fail "np=$np share_rows=on: rows were fetched: $(grep '^step' "$TMP/np$np-on.log" | tail -1)"
  grep '^step' "$TMP/np$np-off.log" | grep -q 'fetched 0.0%' &&
    fail "np=$np share_rows=off: a step fetched nothing: $(grep '^step' "$TMP/np$np-off.log" | head -1)"
  s_on=$(sent "$TMP/np$np-on/metrics.csv") s_off=$(sent "$TMP/np$np-off/metrics.csv")
  [ "$s_on" -lt "$s_off" ] || fail "np=$np: $s_on bytes sent with shared rows, $s_off without"
  pass "np=$np: shared rows give the fetched rows' checkpoint bit for bit, $s_on bytes sent against $s_off"
done

# a resume on 3 ranks of the 2-rank run: the restored rows are shared before anyone reads them
mt 2 train "${ARGS[@]}" --streams=6 --steps=2 --ckpt_every=2 --run_dir="$TMP/cut"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "first half: exited $status"; }
mt 3 train --resume "$TMP/cut" --steps=4 --ckpt_every=4
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "resume on 3 ranks: exited $status"; }
# the reference: the same two halves with every row fetched (under deterministic = fast the
# first half's sums are 2 ranks')
mt 2 train "${ARGS[@]}" --streams=6 --steps=2 --ckpt_every=2 --share_rows=off --run_dir="$TMP/cut-off"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "first half, fetched: exited $status"; }
mt 3 train --resume "$TMP/cut-off" --steps=4 --ckpt_every=4 --share_rows=off
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "resume on 3 ranks, fetched: exited $status"; }
[ "$(digest "$TMP/cut/ckpt/ckpt-00000004.h5")" = "$(digest "$TMP/cut-off/ckpt/ckpt-00000004.h5")" ] ||
  fail "resume on 3 ranks: shared rows and fetched rows give different checkpoints"
pass "a 2-rank run resumed on 3 ranks: shared rows give the fetched rows' checkpoint bit for bit"

[ "$(shm_count)" = "$before" ] || fail "runs left $(( $(shm_count) - before )) objects in /dev/shm"
pass "nothing left in /dev/shm"
