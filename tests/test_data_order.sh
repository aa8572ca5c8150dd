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
