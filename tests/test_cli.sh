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
# plan computes nothing in parallel: one process inside an allocation is right (scaling.sbatch's
# comm_model.py runs it so, and failed there at the end of every sweep)
SLURM_NTASKS=4 "$BIN/memtrain" plan --config jobs/configs/demo.conf --ranks 2 --csv >"$TMP/out" 2>&1 \
  && grep -q '^2,' "$TMP/out" || { cat "$TMP/out"; fail "plan inside an allocation of 4 tasks"; }
pass "plan runs as one process inside an allocation"

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

# switches that take no value, and nothing after '--', are refused rather than ignored (a
# --help=yes trained the default model)
expect_error 1 "--help takes no value" --help=yes
expect_error 2 "--csv takes no value" plan --ranks 2 --csv=yes
expect_error 2 "unexpected argument '--'" "${S[@]}" --run_dir="$TMP/dd" -- --steps=5
[ ! -e "$TMP/dd" ] || fail "a refused command line made its run_dir"
expect_error 1 "--ranks = 2,,4: expected rank counts" plan --ranks 2,,4
expect_error 1 "--ranks = 2,: expected rank counts" plan --ranks 2,
expect_error 1 "--prompt has no value: write --prompt TEXT" sample --ckpt "$TMP/sa/ckpt/ckpt-00000004.h5" --prompt
# an option after a flag is never its value (it was read both as the prompt and as --seed)
expect_error 1 "--prompt has no value" sample --ckpt "$TMP/sa/ckpt/ckpt-00000004.h5" --prompt --seed 5
expect_error 1 "--ckpt has no value" sample --ckpt --prompt hi
# a flag given twice takes its last value, as config keys do
mt 1 sample --ckpt "$TMP/sa/ckpt/ckpt-00000004.h5" --prompt "ab" --length 30 --length 5
[ "$status" -eq 0 ] && [ "$(tail -n +2 "$TMP/out" | wc -c)" -eq 8 ] \
  || { cat "$TMP/out"; fail "--length given twice: the last one"; }
pass "switch values, '--', strict --ranks, a missing --prompt, the last of a repeated flag"

# a data spec names its key; a file of blank lines is empty; a resume failure is one line
expect_error 1 "val_data: unknown dataset 'train'" "${S[@]}" --val_data=train
printf '\n\n\n\n\n' >"$TMP/blank.txt"
for v in split text:"$TMP/v.txt"; do
  expect_error 1 "blank.txt: empty: only whitespace and separators" "${S[@]}" \
    --data=text:"$TMP/blank.txt" --val_data="$v" --run_dir="$TMP/bl"
done
[ ! -e "$TMP/bl" ] || fail "a data error left a run_dir behind"
printf 'one doc here\n\n\nanother doc\n\n\na third\n\n\nand a fourth one\n' >"$TMP/d4.txt"
mt 1 "${S[@]}" --data=text:"$TMP/d4.txt" --val_data=text:"$TMP/v.txt" --run_dir="$TMP/shr"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "train on d4.txt"; }
printf 'a\n\n\nb\n' >"$TMP/d4.txt" # shorter than the checkpoint's cursors
expect_error 1 "the training data changed since it was written" --resume "$TMP/shr" --steps=4
[ "$(grep -c "the training data changed" "$TMP/out")" -eq 1 ] || fail "the resume failure said twice"
# a checkpoint from before data_docs was kept: its cursors are still checked against the data
/usr/bin/python3 -c '
import glob, h5py, sys
for p in glob.glob(sys.argv[1] + "/ckpt/ckpt-*.h5"):
    with h5py.File(p, "r+") as f:
        del f.attrs["data_docs"], f.attrs["data_crc32"]' "$TMP/shr"
expect_error 1 "lies outside the data" --resume "$TMP/shr" --steps=4
# init_from: a new run may read other data with other streams (the model's shape stays)
mt 2 "${S[@]}" --data=text:"$TMP/v.txt" --streams=4 --run_dir="$TMP/if" \
  --init_from="$TMP/sa/ckpt/ckpt-00000004.h5"
[ "$status" -eq 0 ] && grep -q "^initialised from" "$TMP/out" \
  || { cat "$TMP/out"; fail "init_from with other data"; }
# eval's help names its key
"$BIN/memtrain" eval --help | grep -q -- "--eval_docs=N" || fail "eval --help"
pass "val_data named, blank files empty, one resume line, init_from on other data"

# every rank must be started alike: other arguments, another config file, other data
printf 'arch = decoder\nd_model = 32\nn_heads = 2\nn_layers = 1\nseg_len = 8\nstreams = 2\nhorizon = 1\nwarmup = 1\nsteps = 2\neval_every = 0\ndata = text:d.txt\n' >"$TMP/c.conf"
mkdir -p "$TMP/n1" "$TMP/n2"
sed 's/d_model = 32/d_model = 64/' "$TMP/c.conf" >"$TMP/n2/c.conf"
cp "$TMP/c.conf" "$TMP/n1/c.conf"
cp "$TMP/d4.txt" "$TMP/n1/d.txt"; cp "$TMP/d4.txt" "$TMP/n2/d.txt"
mpmd() { # ARGS0 -- ARGS1: rank 0 in n1, rank 1 in n2
  local a=() ; while [ "$1" != "--" ]; do a+=("$1"); shift; done; shift
  status=0
  mpirun --oversubscribe -np 1 -wdir "$TMP/n1" "$BIN/memtrain" "${a[@]}" : \
    -np 1 -wdir "$TMP/n2" "$BIN/memtrain" "$@" >"$TMP/out" 2>&1 || status=$?
  [ "$status" -eq 2 ] && [ "$(grep -c '^memtrain: rank 1 ' "$TMP/out")" -eq 1 ] \
    || { cat "$TMP/out"; fail "ranks started unlike"; }
  ! grep -qi "signal\|internal check\|MPI_ERR" "$TMP/out" || { cat "$TMP/out"; fail "a crash"; }
  pass "$(grep '^memtrain: rank 1 ' "$TMP/out")"
}
mpmd --config c.conf --run_dir=r --steps=2 -- --config c.conf --run_dir=r --steps=3
grep -q "other arguments than rank 0: '--steps=3' where rank 0 has '--steps=2'" "$TMP/out" || fail "arguments"
mpmd --config c.conf --run_dir=r -- --config c.conf --run_dir=r --steps=3
grep -q "other arguments than rank 0: '--steps=3' where rank 0 has '(nothing)'" "$TMP/out" || fail "an argument more"
mpmd --config c.conf --run_dir=r -- --config c.conf --run_dir=r
grep -q "other settings than rank 0: 'd_model = 64' where rank 0 has 'd_model = 32'" "$TMP/out" || fail "settings"
# the same with init_from, whose check is collective: refused, not hung
for f in n1 n2; do echo "init_from = $TMP/sa/ckpt/ckpt-00000004.h5" >>"$TMP/$f/c.conf"; done
mpmd --config c.conf --run_dir=r -- --config c.conf --run_dir=r
grep -q "other settings than rank 0: 'd_model = 64' where rank 0 has 'd_model = 32'" "$TMP/out" || fail "settings"
cp "$TMP/c.conf" "$TMP/n1/c.conf"; cp "$TMP/c.conf" "$TMP/n2/c.conf"; printf 'x\n\n\ny\n\n\nzz\n\n\nw\n' >"$TMP/n2/d.txt"
mpmd --config c.conf --run_dir=r -- --config c.conf --run_dir=r
grep -q "read other data than rank 0 for text:d.txt: 3 documents, 7 tokens (rank 0: 1, 2)" "$TMP/out" || fail "data"
# the same counts, other bytes: told by the CRC
printf 'q\n\n\nz\n' >"$TMP/n2/d.txt"
mpmd --config c.conf --run_dir=r -- --config c.conf --run_dir=r
grep -q "read other data than rank 0 for text:d.txt: 1 documents, 2 tokens (rank 0: 1, 2), other values" "$TMP/out" || fail "data by CRC"
[ ! -e "$TMP/n1/r" ] || fail "ranks started unlike made a run_dir"
# ranks of two builds (another commit on another node): refused by the first agreement; they
# hung where their collectives parted. The other build is this one with its source id changed.
cp "$BIN/memtrain" "$TMP/other-memtrain"
perl -pi -e 's/memtrain source \K(.)/$1 eq "X" ? "Y" : "X"/e' "$TMP/other-memtrain"
source_id() { # the id memtrain's binary $1 carries ("memtrain source ID")
  local s
  s=$(grep -a -o -m1 'memtrain source [^[:cntrl:]]*' "$1") || true
  s=${s%%$'\n'*}
  echo "${s#memtrain source }"
}
ours=$(source_id "$BIN/memtrain")
theirs=$(source_id "$TMP/other-memtrain")
[ -n "$ours" ] && [ "$ours" != "$theirs" ] || fail "the copy's source id was not changed ($ours, $theirs)"
status=0
timeout 60 mpirun -q --oversubscribe -np 1 -wdir "$TMP/n1" "$BIN/memtrain" --config c.conf --run_dir=r : \
  -np 1 -wdir "$TMP/n1" "$TMP/other-memtrain" --config c.conf --run_dir=r >"$TMP/out" 2>&1 || status=$?
[ "$status" -eq 2 ] && [ "$(grep -c '^memtrain: ' "$TMP/out")" -eq 1 ] \
  && grep -qF "memtrain: rank 1 was started with other memtrain build than rank 0: 'memtrain source $theirs' where rank 0 has 'memtrain source $ours' (every rank must run memtrain built from the same source)" "$TMP/out" \
  || { cat "$TMP/out"; fail "ranks of two builds: exit $status"; }
[ ! -e "$TMP/n1/r" ] || fail "ranks of two builds made a run_dir"
pass "ranks of two builds: refused in one line"
# --help on one rank only; a checkpoint that one rank cannot see (it hung in the collective open)
mpmd --config c.conf -- --help
grep -q "other arguments than rank 0: '--help' where rank 0 has '--config'" "$TMP/out" || fail "--help on one rank"
cp "$TMP/n2/d.txt" "$TMP/n1/d.txt"
mpirun --oversubscribe -np 2 -wdir "$TMP/n1" "$BIN/memtrain" --config c.conf --run_dir=r >"$TMP/out" 2>&1 \
  || { cat "$TMP/out"; fail "a run in n1"; }
status=0
mpirun --oversubscribe -np 1 -wdir "$TMP/n1" "$BIN/memtrain" eval --ckpt r/ckpt/ckpt-00000002.h5 : \
  -np 1 -wdir "$TMP/n2" "$BIN/memtrain" eval --ckpt r/ckpt/ckpt-00000002.h5 >"$TMP/out" 2>&1 || status=$?
[ "$status" -eq 2 ] && grep -q "^memtrain: r/ckpt/ckpt-00000002.h5: cannot open (No such file or directory) on rank 1, which rank 0 opens" "$TMP/out" \
  || { cat "$TMP/out"; fail "a checkpoint rank 1 cannot see"; }
# a relative run_dir from other working directories: two directories, refused at the start
# (the first checkpoint, written collectively, hung)
status=0
mpirun --oversubscribe -np 1 -wdir "$TMP/n1" "$BIN/memtrain" --config c.conf --run_dir=r3 : \
  -np 1 -wdir "$TMP/n2" "$BIN/memtrain" --config c.conf --run_dir=r3 >"$TMP/out" 2>&1 || status=$?
[ "$status" -eq 2 ] && grep -q "^memtrain: run_dir r3 cannot be used: rank 1 does not see r3/ckpt/RUN_ID as rank 0 wrote it" "$TMP/out" \
  && ! grep -q "^step " "$TMP/out" || { cat "$TMP/out"; fail "a run_dir one rank does not share"; }
pass "--help on one rank, a checkpoint one rank cannot see, a run_dir not shared: one line, no hang"

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

# too few blocks for the ranks: the refusal says what stream_block = auto came to
expect_error 3 "streams = 6 in blocks of stream_block = 4 make 2 blocks for 3 ranks: every rank needs a block; set stream_block <= 2 or use more streams (stream_block = auto is 4 under deterministic = bitwise)" \
  "${S[@]}" --streams=6 --deterministic=bitwise --run_dir="$TMP/blocks"
# the largest block that serves the ranks: 7 streams on 4 ranks take blocks of 2 (4 blocks),
# not only of 7 / 4 = 1
expect_error 4 "streams = 7 in blocks of stream_block = 3 make 3 blocks for 4 ranks: every rank needs a block; set stream_block <= 2 or use more streams" \
  "${S[@]}" --streams=7 --stream_block=3 --run_dir="$TMP/blocks"
mt 4 "${S[@]}" --streams=7 --stream_block=2 --steps=1 --warmup=0 --run_dir="$TMP/blocks2"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "7 streams in blocks of 2 on 4 ranks: exit $status"; }
echo "test_cli: all passed"
