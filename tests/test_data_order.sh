#!/usr/bin/env bash
# Shuffled training data end to end: the same data_seed gives bitwise the same losses on 1, 2
# and 3 ranks and across resumes on other rank counts, over several passes of a small file;
# another data_seed, or shuffle = off, gives other losses; the log counts the passes.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$TOP"

# 40 short documents (36 for training): 20 steps of 6 streams x 2 segments of up to 16 bytes
# (a segment ends with its document) make about two passes, so pass boundaries, where a new
# order is drawn, fall inside the runs and after the resumes
for i in $(seq 1 40); do printf 'document %d: %s\f' "$i" "$(seq -s ' ' 1 $((5 + i % 7 * 3)))"; done >"$TMP/docs.txt"
SMALL=(--config jobs/configs/memformer.conf --data=text:"$TMP/docs.txt" --d_model=32 --seg_len=16
       --streams=6 --stream_block=2 --deterministic=bitwise --horizon=2 --steps=20 --warmup=2 --log_every=1
       --eval_every=0 --ckpt_every=10 --keep_ckpts=0 --shuffle=on --data_seed=7)
losses() { awk -F, 'NR > 1 {print $1, $2}' "$1/metrics.csv"; }

for np in 1 2 3; do
  mt "$np" "${SMALL[@]}" --run_dir="$TMP/A$np"
  [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "shuffled run on $np ranks"; }
done
grep -q "^data: training documents in a shuffled order, drawn anew each pass (data_seed 7)" "$TMP/out" \
  || { cat "$TMP/out"; fail "the log does not name the order"; }
passes=$(grep -o 'pass [0-9.]*' "$TMP/out" | tail -1 | awk '{print $2}')
/usr/bin/python3 -c "import sys; sys.exit(0 if 1.5 < $passes < 3 else 1)" \
  || fail "expected about two passes over the 36 documents, the log says $passes"
/usr/bin/python3 - "$TMP/A3/metrics.csv" "$passes" <<'PY' || fail "metrics.csv's passes disagree with the log"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
p = [float(r["passes"]) for r in rows]
assert p == sorted(p) and p[0] > 0 and abs(p[-1] - float(sys.argv[2])) < 1e-3, p
PY
cmp <(losses "$TMP/A1") <(losses "$TMP/A2") || fail "shuffled: 1 and 2 ranks disagree"
cmp <(losses "$TMP/A1") <(losses "$TMP/A3") || fail "shuffled: 1 and 3 ranks disagree"
pass "shuffled order over $passes passes: 1, 2 and 3 ranks give bitwise identical losses"

# the cursor in the checkpoint is enough: resume at step 10 on other rank counts
for pair in "2 3" "3 1" "1 2"; do
  read -r from to <<<"$pair"
  d=$TMP/R$from$to
  mkdir -p "$d/ckpt"
  cp "$TMP/A$from/ckpt/ckpt-00000010.h5" "$d/ckpt/"
  mt "$to" --resume "$d"
  [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "resume $from -> $to ranks"; }
  cmp <(losses "$TMP/A1" | sed -n '11,20p') <(losses "$d") \
    || fail "shuffled: resume $from -> $to ranks changed the losses"
done
pass "shuffled order: resumes from step 10 on 3, 1 and 2 ranks continue bitwise"
# the cursors count places in the checkpoint's order: another order is refused, not misread
expect_error 2 "its streams read documents shuffled (data_seed 7); keep shuffle and data_seed" \
  --resume "$TMP/R23" --data_seed=8
expect_error 2 "its streams read documents shuffled" --resume "$TMP/R23" --shuffle=off

# a checkpoint without streams/order (written before stream classes) counts its cursors in the
# order over all documents: the resume reads that order, says so, keeps the whole split, and
# its own checkpoints carry the order on. Documents of one length, so that a cursor written in
# one order is a valid place in the other (6 streams over 36 documents: 6 classes, so the two
# orders differ)
for i in $(seq 10 49); do printf 'document %d: %s\f' "$i" "$(seq -s ' ' 101 109)"; done >"$TMP/even.txt"
EVEN=("${SMALL[@]}" --data=text:"$TMP/even.txt")
mt 2 "${EVEN[@]}" --run_dir="$TMP/E"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "shuffled run over documents of one length"; }
d=$TMP/old
mkdir -p "$d/ckpt"
cp "$TMP/E/ckpt/ckpt-00000010.h5" "$d/ckpt/"
/usr/bin/python3 - "$d/ckpt/ckpt-00000010.h5" <<'PY' || fail "could not remove streams/order"
import h5py, sys
with h5py.File(sys.argv[1], "r+") as f:
    assert int(f["streams/order"][0]) == 2
    del f["streams/order"]
PY
mt 2 --resume "$d" --steps=15 --ckpt_every=5
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "resume of a checkpoint without streams/order"; }
grep -q "^data: the checkpoint's streams read documents shuffled over all of them" "$TMP/out" \
  || { cat "$TMP/out"; fail "the older order is not named"; }
cmp -s <(losses "$TMP/E" | sed -n '11,15p') <(losses "$d") \
  && fail "a checkpoint without streams/order resumed in the order by class"
/usr/bin/python3 -c "import h5py, sys; sys.exit(int(h5py.File(sys.argv[1])['streams/order'][0]) != 1)" \
  "$d/ckpt/ckpt-00000015.h5" || fail "the resumed run's checkpoint does not record order 1"
mkdir -p "$TMP/old2/ckpt"
cp "$d/ckpt/ckpt-00000015.h5" "$TMP/old2/ckpt/"
mt 3 --resume "$d" --steps=20
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "resume in the older order on 3 ranks"; }
mt 1 --resume "$TMP/old2" --steps=20
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "second resume in the older order"; }
cmp <(losses "$d" | sed -n '6,10p') <(losses "$TMP/old2") \
  || fail "the older order did not carry on across a resume on another rank count"
pass "a checkpoint without streams/order resumes in the order over all documents, and keeps it"

# the order is the seed's: another seed, or file order, trains on other data
mt 2 "${SMALL[@]}" --data_seed=8 --run_dir="$TMP/seed8"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "data_seed 8"; }
mt 2 "${SMALL[@]}" --shuffle=off --run_dir="$TMP/off"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "shuffle off"; }
grep -q "^data: training documents in file order" "$TMP/out" || fail "file order not named"
cmp -s <(losses "$TMP/A1") <(losses "$TMP/seed8") && fail "data_seed 8 gave the losses of data_seed 7"
cmp -s <(losses "$TMP/A1") <(losses "$TMP/off") && fail "shuffle = off gave the shuffled losses"
cmp -s <(losses "$TMP/seed8") <(losses "$TMP/off") && fail "data_seed 8 gave the file order"
pass "another data_seed and file order give other losses"
echo "test_data_order: all passed"
