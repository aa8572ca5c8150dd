#!/usr/bin/env bash
# share_exchange = on (the default): the ranks of a node read the words of the owners'
# exchanges (lookups, partial sums, output and score gradients) and of the gradient pushes in
# place, from each other's shared-memory objects, instead of receiving copies from MPI. On 2
# and 3 ranks, a hashed decoder under `owner` and under `fetch` (its pushes leave when a
# group's backward ends) and a hashed Memformer (`fetch`, its pushes at the block end) must
# give bitwise the checkpoint they give with share_exchange = off and move the same bytes;
# with it every step's log says what share of the bytes its peers read in place, without it
# none does; and the runs leave nothing in /dev/shm. (tests/check_exchange.c checks the words
# themselves, that nobody overwrites words a peer has yet to read, and a rank whose large
# exchanges go through MPI while the others' are read in place.)
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$TOP"

ARGS=(--config jobs/configs/memformer.conf --proj=hash --d_model=32 --n_heads=2 --stream_block=2
      --warmup=2 --eval_every=0 --log_every=1 --shuffle=off)
declare -A model=(
  [decoder-owner]="--arch=decoder --seg_len=64 --table_strategy=owner"
  [decoder-fetch]="--arch=decoder --seg_len=64 --table_strategy=fetch"
  [memformer]="--arch=memformer --seg_len=49"
)
shm_count() { find /dev/shm -maxdepth 1 -name 'memtrain.*' 2>/dev/null | wc -l; }
before=$(shm_count)
sent() { # metrics.csv -> bytes sent per rank over the run
  /usr/bin/python3 -c 'import csv,sys; print(int(sum(float(r["bytes_sent_per_rank"]) for r in csv.DictReader(open(sys.argv[1])))))' "$1"
}

for strategy in decoder-owner decoder-fetch memformer; do
  for np in 2 3; do
    for share in on off; do
      # shellcheck disable=SC2086
      mt "$np" train "${ARGS[@]}" ${model[$strategy]} --streams=$((2 * np)) --steps=4 \
        --ckpt_every=4 --share_exchange=$share --run_dir="$TMP/$strategy-$np-$share"
      [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "$strategy np=$np share_exchange=$share: exited $status"; }
      steps=$(grep -c '^step' "$TMP/out") inplace=$(grep '^step' "$TMP/out" | grep -cE 'MiB \([1-9][0-9]*% read in place\)' || true)
      [ "$steps" -gt 0 ] || fail "$strategy np=$np share_exchange=$share: no step lines"
      if [ "$share" = on ]; then
        [ "$inplace" = "$steps" ] || fail "$strategy np=$np: $inplace of $steps steps read words in place: $(grep '^step' "$TMP/out" | head -1)"
      else
        [ "$inplace" = 0 ] || fail "$strategy np=$np share_exchange=off: words read in place"
      fi
    done
    d="$TMP/$strategy-$np"
    [ "$(digest "$d-on/ckpt/ckpt-00000004.h5")" = "$(digest "$d-off/ckpt/ckpt-00000004.h5")" ] ||
      fail "$strategy np=$np: words read in place and words sent by MPI give different checkpoints"
    s_on=$(sent "$d-on/metrics.csv") s_off=$(sent "$d-off/metrics.csv")
    [ "$s_on" = "$s_off" ] || fail "$strategy np=$np: $s_on bytes exchanged in place, $s_off by MPI"
    [ "$s_on" -gt 0 ] || fail "$strategy np=$np: nothing exchanged"
    pass "$strategy np=$np: words read in place give the MPI run's checkpoint bit for bit ($s_on bytes)"
  done
done

[ "$(shm_count)" = "$before" ] || fail "runs left $(( $(shm_count) - before )) objects in /dev/shm"
pass "nothing left in /dev/shm"
