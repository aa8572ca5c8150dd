#!/usr/bin/env bash
# Config and data errors: one clear line from rank 0, a non-zero exit from every rank together.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"

for np in 1 2; do
  expect_error "$np" "unknown config key 'foo' (see memtrain --help)" --foo=1
  expect_error "$np" "d_model = abc: expected a positive integer" --d_model=abc
  expect_error "$np" "score = max: expected one of prob|l1prob" --score=max
done
# an inconsistent combination names both keys
mt 2 --d_model=100 --n_heads=4 --tau=8 --proj=hash
[ "$status" -ne 0 ] && grep -q "d_model" "$TMP/out" && grep -q "tau" "$TMP/out" \
  || { cat "$TMP/out"; fail "d_model not divisible by tau accepted"; }
pass "d_model % tau refused: $(grep memtrain: "$TMP/out")"

# a config file with a bad line: file and line named
printf 'arch = memformer\n# comment\nd_model = 64\nlr = fast\n' >"$TMP/bad.conf"
expect_error 2 "$TMP/bad.conf:4" --config "$TMP/bad.conf"
expect_error 1 "cannot open" --config "$TMP/missing.conf"
printf 'lr = 0.5\0garbage\n' >"$TMP/nul.conf" # never read as lr = 0.5 with the rest dropped
expect_error 2 "$TMP/nul.conf:1: a NUL byte in the line" --config "$TMP/nul.conf"

# data files: missing, truncated, malformed
expect_error 2 "/nonexistent/tokens.bin" --data=u8:/nonexistent/tokens.bin --steps=1 --warmup=1
mkdir -p "$TMP/fm"
for f in /usr/share/datasets/fashion-mnist/*.gz; do cp "$f" "$TMP/fm/"; done
head -c 100000 /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz >"$TMP/fm/train-images-idx3-ubyte.gz"
MEMTRAIN_FASHION_MNIST_DIR=$TMP/fm expect_error 2 "train-images-idx3-ubyte.gz" --steps=1 --warmup=1
grep -q -i "truncated\|corrupt" "$TMP/out" || { cat "$TMP/out"; fail "truncation not named"; }
printf '\x01\x02\x03' >"$TMP/odd.u16"
expect_error 2 "odd.u16" --data=u16:"$TMP/odd.u16" --steps=1 --warmup=1

# tokens beyond the configured vocabulary: the fix is named
/usr/bin/python3 -c "import struct; open('$TMP/big.u16','wb').write(struct.pack('<6H', 1, 2, 300, 4, 5, 6) * 4000)"
expect_error 2 "set vocab = 301" --data=u16:"$TMP/big.u16" --steps=1 --warmup=1

# the singleton trap: one process where Slurm allocated several tasks
status=0
SLURM_NTASKS=4 "$BIN/memtrain" --steps=1 --warmup=1 >"$TMP/out" 2>&1 || status=$?
[ "$status" -ne 0 ] && grep -q "SLURM_NTASKS=4" "$TMP/out" || { cat "$TMP/out"; fail "singleton trap not caught"; }
pass "singleton trap: $(cat "$TMP/out")"

# ranges that keep a stray digit from the memory estimate, flags of other commands, two
# commands, and a negative number given as a flag's next argument
S=(--data=brown --steps=2 --warmup=1 --d_model=32 --n_heads=2 --n_layers=1 --seg_len=8
   --streams=2 --horizon=1 --arch=decoder --eval_every=0 --log_every=1)
for np in 1 2; do
  expect_error "$np" "n_layers = 10000000: expected an integer in 1..1024" --n_layers=10000000
  expect_error "$np" "streams = 2147483647: expected an integer in 1..1048576" --streams=2147483647
  expect_error "$np" "--ckpt is not an option of train (it belongs to: eval sample inspect)" \
    --ckpt "$TMP/none.h5"
  expect_error "$np" "two commands, 'eval' and 'sample': give one" eval sample --ckpt "$TMP/none.h5"
  expect_error "$np" "--per-rank-streams = 3x: expected an integer in 1..1048576" plan --ranks 1 \
    --per-rank-streams 3x
done
# a value too long to show keeps the reason in the message
expect_error 1 "(5005 characters): expected a non-empty value of at most 255 characters" \
  --data=text:"$(head -c 5000 /dev/zero | tr '\0' a)"
# a stream_block past streams is one block of them all
mt 1 "${S[@]}" --stream_block=1048576 --run_dir="$TMP/blk"
[ "$status" -eq 0 ] && grep -q "2 streams in blocks of 2 " "$TMP/out" || { cat "$TMP/out"; fail "stream_block past streams"; }
pass "stream_block past streams: one block of them all"
expect_error 2 "--top-k = -1: expected an integer in 0..65536" sample \
  --ckpt "$TMP/blk/ckpt/ckpt-00000002.h5" --top-k -1
expect_error 3 "has streams = 2, which a resume keeps: resume it on at most 2 ranks" \
  --resume "$TMP/blk" --steps=3
# a run_dir whose earlier run logged steps but left no checkpoint is refused, files untouched
rm -rf "$TMP/blk/ckpt"
sum=$(cat "$TMP/blk/metrics.csv" "$TMP/blk/config.conf" | sha256sum)
expect_error 2 "holds an earlier run's figures ($TMP/blk/metrics.csv) but no checkpoint" \
  "${S[@]}" --run_dir="$TMP/blk"
[ "$(cat "$TMP/blk/metrics.csv" "$TMP/blk/config.conf" | sha256sum)" = "$sum" ] \
  || fail "the earlier run's files changed"
# a sitting's stop_after is its own: not carried into a resume, and refused once passed
mt 1 "${S[@]}" --steps=6 --stop_after=4 --run_dir="$TMP/sa"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "stop_after run"; }
mt 2 --resume "$TMP/sa" --steps=3
[ "$status" -eq 0 ] && grep -q "^memtrain: nothing to do: the run is at step 4 of 3" "$TMP/out" \
  || { cat "$TMP/out"; fail "a lowered --steps after a stop_after sitting"; }
expect_error 2 "stop_after = 2: the run is at step 4 already" --resume "$TMP/sa" --stop_after=2
# eval names the set it scored
printf 'one doc here\n\n\nanother doc\n' >"$TMP/v.txt"
mt 2 eval --ckpt "$TMP/sa/ckpt/ckpt-00000004.h5" --val_data=text:"$TMP/v.txt"
grep -q "on text:$TMP/v.txt (val_data), the first 2 documents" "$TMP/out" || { cat "$TMP/out"; fail "eval's set"; }
# plan checks every rank count before it prints a row
status=0
"$BIN/memtrain" plan "${S[@]}" --ranks 1,5 --csv >"$TMP/plan.csv" 2>"$TMP/out" || status=$?
[ "$status" -eq 2 ] && [ ! -s "$TMP/plan.csv" ] || fail "plan printed a cut table"
pass "stop_after per sitting, eval names val_data, plan refuses before printing"

# --help once per job, not once per rank
mpirun --oversubscribe -np 2 "$BIN/memtrain" --help >"$TMP/help2"
[ "$(wc -l <"$TMP/help2")" -eq "$("$BIN/memtrain" --help | wc -l)" ] || fail "--help printed per rank"
pass "--help printed once under mpirun -np 2"

# --help lists every key with its default
"$BIN/memtrain" --help >"$TMP/help"
for key in arch proj d_model tau expand_bits score horizon bptt streams lr warmup min_lr \
           weight_decay grad_clip steps seed data eval_every log_every run_dir; do
  grep -qE "^  $key\*? " "$TMP/help" || fail "--help does not list $key"
done
pass "--help lists the keys"
echo "test_cli: all passed"
