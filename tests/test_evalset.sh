#!/usr/bin/env bash
# The shared validation set: models with other seg_len, streams and stream_block score the same
# documents whole (the same val_tokens, the sum of those documents' lengths), and an evaluation
# gives the same figure on 1, 2 and 3 ranks.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$TOP"

# 40 documents of 21 to 71 bytes; validation takes every 10th (the 10th, 20th, 30th, 40th)
for i in $(seq 1 40); do printf 'document %d: %s\f' "$i" "$(seq -s ' ' 1 $((5 + i % 7 * 3)))"; done >"$TMP/docs.txt"
want=$(/usr/bin/python3 -c "
d = open('$TMP/docs.txt', 'rb').read().split(b'\f')[:-1]
print(sum(len(x) for x in d[9:30:10]))")  # the first 3 validation documents
BASE=(--config jobs/configs/memformer.conf --data=text:"$TMP/docs.txt" --d_model=32 --steps=4 --warmup=1
      --log_every=2 --eval_every=2 --eval_docs=3 --ckpt_every=0)
declare -A arms=(
  [memformer-hash]="--arch=memformer --proj=hash --seg_len=16 --streams=4 --stream_block=2"
  [memformer-dense]="--arch=memformer --proj=dense --seg_len=7 --streams=2 --stream_block=1"
  [decoder-hash]="--arch=decoder --proj=hash --seg_len=32 --streams=6 --stream_block=3 --horizon=1"
)
for arm in "${!arms[@]}"; do
  # shellcheck disable=SC2086
  mt 2 "${BASE[@]}" ${arms[$arm]} --run_dir="$TMP/$arm"
  [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "$arm: training"; }
  cp "$TMP/out" "$TMP/$arm.log"
  grep -q "^eval: every 2 steps, the first 3 validation documents whole ($want tokens)" "$TMP/out" \
    || { cat "$TMP/out"; fail "$arm: the log does not name the validation set"; }
  grep -q "val ppl [0-9.]* ($want tokens)" "$TMP/out" || { cat "$TMP/out"; fail "$arm: log line"; }
  got=$(awk -F, 'NR == 1 {for (i = 1; i <= NF; i++) c[$i] = i; next} $c["val_ppl"] != "" {print $c["val_tokens"]}' \
        "$TMP/$arm/metrics.csv" | sort -u)
  [ "$got" = "$want" ] || fail "$arm: metrics.csv val_tokens '$got', want $want"
done
pass "3 arms with seg_len 16, 7, 32 and 4, 2, 6 streams score the same $want tokens"

# the same figure on any rank count, for every arm
for arm in "${!arms[@]}"; do
  ck=$(ls "$TMP/$arm/ckpt/"ckpt-*.h5 | tail -1)
  for np in 1 2 3; do
    mt "$np" eval --ckpt "$ck" --eval_docs=3
    [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "$arm: eval on $np ranks"; }
    grep -o "validation perplexity .* tokens)" "$TMP/out" >"$TMP/e$np"
    grep -q "the first 3 documents whole ($want tokens)" "$TMP/e$np" || { cat "$TMP/out"; fail "$arm: eval scope"; }
  done
  cmp "$TMP/e1" "$TMP/e2" || fail "$arm: eval differs on 1 and 2 ranks: $(cat "$TMP/e1") / $(cat "$TMP/e2")"
  cmp "$TMP/e1" "$TMP/e3" || fail "$arm: eval differs on 1 and 3 ranks"
  # the training log's last figure is the eval's (same documents, same model)
  v=$(grep -o 'val ppl [0-9.]*' "$TMP/$arm.log" | tail -1 | awk '{print $3}')
  e=$(awk '{print $3}' "$TMP/e1")
  /usr/bin/python3 -c "import sys; sys.exit(0 if abs($v - $e) < 6e-4 else 1)" \
    || fail "$arm: training's last val ppl $v is not eval's $e"
done
pass "eval gives the same perplexity on 1, 2 and 3 ranks"
# all documents, and more than there are
mt 2 eval --ckpt "$ck" --eval_docs=0
all=$(/usr/bin/python3 -c "
d = open('$TMP/docs.txt', 'rb').read().split(b'\f')[:-1]
print(sum(len(x) for x in d[9::10]))")
grep -q "the first 4 documents whole ($all tokens)" "$TMP/out" || { cat "$TMP/out"; fail "eval_docs = 0"; }
pass "eval_docs = 0 scores all $all tokens of the 4 validation documents"
# lanes past the documents score nothing: far more streams than documents give the same figure
# (and run as long as the documents take, not the streams)
mt 2 eval --ckpt "$ck" --eval_docs=3 --streams=1000000
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "eval with 1000000 streams"; }
grep -o "validation perplexity .* tokens)" "$TMP/out" | cmp - "$TMP/e1" \
  || fail "eval with 1000000 streams differs: $(cat "$TMP/out")"
pass "eval with 1,000,000 streams for 3 documents gives the same figure"
# inspect reads every array first: a missing one is named, not listed from the config
cp "$ck" "$TMP/bad.h5"
/usr/bin/python3 -c "import h5py, sys; f = h5py.File(sys.argv[1], 'r+'); del f['dense/wte/data']" "$TMP/bad.h5"
expect_error 2 "bad.h5: dataset dense/wte/data damaged or missing" inspect --ckpt "$TMP/bad.h5"
echo "test_evalset: all passed"
