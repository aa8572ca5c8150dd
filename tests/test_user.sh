#!/usr/bin/env bash
# What a new user meets after the README: a finished run resumed, sample's options and output
# file, each command's --help, option spellings and suggestions, eval with a shape change,
# srun without MPI support, train.sbatch's run directory, the run directory's log, config
# copy and metrics columns, --init_from, ckpt_minutes, a one-document text file.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$TOP"
TINY=(--config jobs/configs/memformer.conf --d_model=32 --n_heads=2 --seg_len=49 --streams=4
      --stream_block=2 --warmup=1 --eval_every=0 --log_every=2 --ckpt_every=0)
snapshot() { (cd "$1" && find . -type f -printf '%p %s\n' | sort && find . -type f -exec sha256sum {} + | sort); }

# ---- a finished run, resumed: one line, exit 0, nothing written ----
d=$TMP/a
mt 2 train "${TINY[@]}" --steps=4 --eval_every=4 --run_dir="$d"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "training exited $status"; }
grep -q "^summary: steps 1-4 of 4 in .* val ppl [0-9.]*; checkpoint $d/ckpt/ckpt-00000004.h5$" "$TMP/out" \
  || { cat "$TMP/out"; fail "no summary line"; }
grep -q "tokens per stream: 784 tokens per step$" "$TMP/out" || { cat "$TMP/out"; fail "tokens per step"; }
for f in train.log config.conf; do [ -s "$d/$f" ] || fail "no run_dir/$f"; done
grep -q "^summary: " "$d/train.log" || fail "train.log lacks the summary"
# train.log is what rank 0 printed, from the memory line through the plan to the summary
cmp "$TMP/out" "$d/train.log" || { diff "$TMP/out" "$d/train.log" | head; fail "train.log is not what the run printed"; }
grep -q "^d_model = 32$" "$d/config.conf" || fail "config.conf lacks d_model = 32"
head -n 1 "$d/metrics.csv" | grep -q ",elapsed_s,tokens,val_loss$" || fail "metrics.csv columns"
tail -n 1 "$d/metrics.csv" | awk -F, '{exit !($(NF-1) == 3136 && $NF > 0 && $(NF-2) > 0)}' \
  || { cat "$d/metrics.csv"; fail "metrics.csv: tokens, val_loss or elapsed_s"; }
before=$(snapshot "$d")
for steps in 4 3; do
  mt 2 --resume "$d" --steps=$steps
  [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "resume of a finished run exited $status"; }
  [ "$(wc -l <"$TMP/out")" -eq 1 ] || { cat "$TMP/out"; fail "resume of a finished run: more than one line"; }
  grep -q "^memtrain: nothing to do: the run is at step 4 of $steps " "$TMP/out" || { cat "$TMP/out"; fail "nothing-to-do line"; }
  [ "$before" = "$(snapshot "$d")" ] || fail "resume of a finished run changed the run directory"
done
pass "a finished run resumed: one line, exit 0, nothing written; summary, train.log, config.conf, metrics columns"

# ---- sample: options of the other data refused, no overwrite, output beside the run ----
ck=$d/ckpt/ckpt-00000004.h5
expect_error 2 "--prompt does not apply to a checkpoint of image data" sample --ckpt "$ck" --prompt hi
expect_error 2 "--length does not apply to a checkpoint of image data" sample --ckpt "$ck" --length=5
mkdir -p "$TMP/elsewhere"
# sampling reads the checkpoint alone: no data needed where it runs
(cd "$TMP/elsewhere" && MEMTRAIN_FASHION_MNIST_DIR=/nonexistent mpirun --oversubscribe -np 2 "$BIN/memtrain" sample --ckpt ../a/ckpt/ckpt-00000004.h5 \
   --count 1 --scale 1 >"$TMP/out" 2>&1) || { cat "$TMP/out"; fail "sample from another directory"; }
[ -s "$d/samples.png" ] || { cat "$TMP/out"; fail "default output not beside the run"; }
mt 2 sample --ckpt "$ck" --count=1 --scale=1 --top_k 5 --seed 3
[ -s "$d/samples-2.png" ] || { cat "$TMP/out"; fail "a second default output is not numbered"; }
expect_error 2 "--out $d/samples.png exists: choose another file or remove it" sample --ckpt "$ck" --out "$d/samples.png"
# a directory that is not there is refused before the drawing starts
expect_error 2 "--out $TMP/nodir/x.png: its directory $TMP/nodir does not exist" sample --ckpt "$ck" --out "$TMP/nodir/x.png"
# and one where access() says yes but no file can be made (/sys, even for root), on 2 ranks
# that each try it at once
[ -w /sys/kernel ] && expect_error 2 "--out /sys/kernel/x.png: its directory /sys/kernel: cannot create a file there (" \
  sample --ckpt "$ck" --out /sys/kernel/x.png
# two samplers at once with the default output: each grid gets its own number
for t in 0.5 1; do
  mpirun --oversubscribe -np 1 "$BIN/memtrain" sample --ckpt "$ck" --count=1 --scale=1 \
    --temperature $t >"$TMP/par$t" 2>&1 &
done
wait
[ -s "$d/samples-3.png" ] && [ -s "$d/samples-4.png" ] && [ ! -e "$d/samples-5.png" ] \
  || { cat "$TMP/par0.5" "$TMP/par1"; fail "two samplers at once: a grid lost"; }
[ "$(cat "$TMP/par0.5" "$TMP/par1" | grep -o 'samples-[34].png' | sort -u | wc -l)" -eq 2 ] \
  || fail "two samplers named the same grid"
# a dangling symbolic link as --out is a file that exists: refused before the drawing
ln -s "$TMP/nowhere.png" "$TMP/dangling.png"
expect_error 2 "--out $TMP/dangling.png exists" sample --ckpt "$ck" --out "$TMP/dangling.png"
[ ! -e "$TMP/nowhere.png" ] || fail "written through a dangling link"
# a directory under the next name is passed over like a file
mkdir "$d/samples-5.png"
mt 1 sample --ckpt "$ck" --count=1 --scale=1
[ "$status" -eq 0 ] && [ -s "$d/samples-6.png" ] || { cat "$TMP/out"; fail "a directory named samples-5.png"; }
pass "sample: image options only, an existing --out refused, default output beside the run, numbered"

# a text run from a one-document file: refused without a validation file, trained with one
printf 'one long document without any separator, about a hundred bytes of plain text to learn.\n%.0s' \
  $(seq 30) >"$TMP/one.txt"
printf 'validation text\n%.0s' $(seq 20) >"$TMP/val.txt"
expect_error 1 "validation split is empty (1 document; validation takes every 10th, or the last of 2..9); give a validation file with val_data=text:FILE" \
  train "${TINY[@]}" --data=text:"$TMP/one.txt" --steps=2 --run_dir="$TMP/t0"
mt 1 train "${TINY[@]}" --data=text:"$TMP/one.txt" --val_data=text:"$TMP/val.txt" --steps=2 \
  --eval_every=2 --run_dir="$TMP/t"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "one-document text with val_data exited $status"; }
grep -q "val text:$TMP/val.txt: 1 document, " "$TMP/out" || { cat "$TMP/out"; fail "val_data not read whole"; }
tck=$TMP/t/ckpt/ckpt-00000002.h5
for o in "--count 2" "--scale=2" "--out $TMP/x.png"; do
  # shellcheck disable=SC2086
  expect_error 1 "${o%%[ =]*} does not apply to a checkpoint of text data" sample --ckpt "$tck" $o
done
mv "$TMP/one.txt" "$TMP/one.moved" # the text it trained on is not needed to sample
mt 1 sample --ckpt "$tck" --prompt "one" --length 10 --top-p=0.9
mv "$TMP/one.moved" "$TMP/one.txt"
[ "$status" -eq 0 ] && grep -q "prompt 'one'" "$TMP/out" || { cat "$TMP/out"; fail "text sample"; }
pass "a one-document text file trains with val_data; text sampling refuses image options"
mt 1 sample --ckpt "$tck" --prompt -h --length 3
[ "$status" -eq 0 ] && grep -q "prompt '-h'" "$TMP/out" || { cat "$TMP/out"; fail "--prompt -h: not a prompt"; }
pass "--prompt -h is the prompt '-h', not a call for help"

# ---- keys of no use to the model are named, and the memory refusal names what drives it ----
mt 1 train "${TINY[@]}" --arch=decoder --steps=1 --mem_slots=3 --run_dir="$TMP/unused"
grep -q "^model: set but of no use to this model .*change nothing: .*mem_slots" "$TMP/out" \
  || { cat "$TMP/out"; fail "mem_slots on a decoder: not named as unused"; }
! grep -q "of no use" "$d/train.log" || fail "a Memformer run named keys of no use"
expect_error 1 "driven by stream_block = 2 x horizon = 1000000 segments at once" \
  train "${TINY[@]}" --arch=decoder --horizon=1000000 --run_dir="$TMP/huge"
pass "keys of no use to the model named; a decoder's memory refusal names horizon"

# ---- what a run keeps in its directory, and what it will not take over ----
# a metrics.csv or config.conf memtrain did not write: refused, left as it was
mkdir -p "$TMP/own"
printf 'name,value\nfoo,1\nbar,2' >"$TMP/own/metrics.csv"
expect_error 1 "$TMP/own/metrics.csv was not written by memtrain (it starts 'name,value')" \
  train "${TINY[@]}" --steps=2 --run_dir="$TMP/own"
[ "$(cat "$TMP/own/metrics.csv")" = "$(printf 'name,value\nfoo,1\nbar,2')" ] || fail "a foreign metrics.csv was changed"
rm "$TMP/own/metrics.csv"
printf '# my notes\nsteps = 2\n' >"$TMP/own/config.conf"
expect_error 1 "$TMP/own/config.conf was not written by memtrain (it starts '# my notes')" \
  train --config "$TMP/own/config.conf" "${TINY[@]:2}" --run_dir="$TMP/own"
grep -q '^# my notes$' "$TMP/own/config.conf" || fail "a foreign config.conf was replaced"
# a key's value that is the next option: refused, no directory named after it
expect_error 1 "--run_dir has no value (the next word, '--steps=2', is an option)" \
  train "${TINY[@]}" --run_dir --steps=2
[ ! -e ./--steps=2 ] || fail "a directory named --steps=2 was made"
# inspect shows what is stored: overrides refused; a cut-short option gets its full name
expect_error 1 "inspect prints the checkpoint as it is stored: it takes no --key=value (given: lr (" \
  inspect --ckpt "$ck" --lr=5
expect_error 1 "unknown option '--temp' (did you mean --temperature?" sample --ckpt "$ck" --temp 0.5
expect_error 1 "eval uses the checkpoint's model as it is: lr, set here other than the checkpoint's, is a key of training" \
  eval --ckpt "$ck" --lr=5
expect_error 1 "sample uses the checkpoint's model as it is: steps, set here other than the checkpoint's, is a key of training" \
  sample --ckpt "$ck" --steps=9
expect_error 1 "sample draws what the model was trained on (data = text:" sample --ckpt "$tck" \
  --data=fashion-mnist
expect_error 1 "(--resume takes the run directory, the one holding ckpt/)" --resume "$d/ckpt/LATEST"
# a checkpoint kept outside its run's ckpt/: the grid goes beside it
mkdir -p "$TMP/kept"; cp "$ck" "$TMP/kept/c.h5"
mt 1 sample --ckpt "$TMP/kept/c.h5" --count=1 --scale=1
[ "$status" -eq 0 ] && [ -s "$TMP/kept/samples.png" ] && [ ! -e "$TMP/samples.png" ] \
  || { cat "$TMP/out"; fail "sample of a checkpoint kept outside ckpt/: grid not beside it"; }
pass "foreign metrics.csv and config.conf refused and kept; a value that is an option refused; inspect takes no overrides; --temp suggests --temperature; a grid beside a kept checkpoint"

# ---- make demo: a second one on a directory in use is refused and removes nothing ----
mkdir -p "$TMP/dm/demo"; touch "$TMP/dm/demo/.made-by-demo" "$TMP/dm/demo/keep"
( flock 9; sleep 20 ) 9>>"$TMP/dm/.demo.demo-lock" &   # a demo at work there
holder=$!
sleep 0.5
# (RUN_DIR relative to where the script starts)
status=0; (cd "$TMP/dm" && RUN_DIR=demo bash "$TOP/jobs/demo.sh") >"$TMP/out" 2>&1 || status=$?
kill "$holder"; wait "$holder" 2>/dev/null || true
[ "$status" -eq 2 ] && grep -q "^demo: $TMP/dm/demo is in use by another make demo" "$TMP/out" \
  && [ -e "$TMP/dm/demo/keep" ] || { cat "$TMP/out"; fail "a second make demo on a directory in use"; }
pass "make demo on a directory another demo is using: refused in one line, nothing removed"

status=0; NP=two RUN_DIR=$TMP/dm/np bash jobs/demo.sh >"$TMP/out" 2>&1 || status=$?
[ "$status" -eq 2 ] && [ "$(cat "$TMP/out")" = "demo: NP=two: expected a number of ranks from 1" ] \
  && [ ! -e "$TMP/dm/np" ] || { cat "$TMP/out"; fail "make demo NP=two: exit $status"; }
pass "make demo NP=two: refused in one line"

# a demo's run that a resume by hand took past the checkpoint the demo left is no longer the
# demo's to remove (the marker names that checkpoint)
d=$TMP/dm/further; mkdir -p "$d/ckpt"
touch "$d/ckpt/ckpt-00000004.h5" "$d/ckpt/ckpt-00000006.h5"; echo ckpt-00000004.h5 >"$d/.made-by-demo"
status=0; RUN_DIR=$d bash jobs/demo.sh >"$TMP/out" 2>&1 || status=$?
[ "$status" -eq 2 ] && [ "$(wc -l <"$TMP/out")" -eq 1 ] \
  && grep -q "^demo: $d was taken further than make demo left it (ckpt-00000006.h5, after ckpt-00000004.h5)" "$TMP/out" \
  && [ -e "$d/ckpt/ckpt-00000006.h5" ] || { cat "$TMP/out"; fail "make demo over a run taken further: exit $status"; }
pass "make demo over its run taken further by hand: refused in one line, nothing removed"

# ---- make demo stopped by TERM: its ranks checkpoint and end, none is left running ----
RUN_DIR=$TMP/dm/stop bash jobs/demo.sh --d_model=16 --steps=100000 --log_every=1 --eval_every=0 \
  >"$TMP/demo.log" 2>&1 &
term_when_training $! "$TMP/dm/stop/train.log"
[ "$status" -eq 143 ] && grep -q "^demo: stopped by TERM while training" "$TMP/demo.log" \
  && ls "$TMP/dm/stop/ckpt/"ckpt-*.h5 >/dev/null || { cat "$TMP/demo.log"; fail "TERM to make demo: exit $status"; }
! pgrep -f "memtrain .*$TMP/dm/stop" >/dev/null || fail "ranks still running after make demo stopped"
pass "TERM to make demo: the ranks checkpoint and stop with it (exit 143)"
# Ctrl-C: INT to the whole process group, mpirun's too if it were in it (it would end the job).
# A script started with & here would ignore INT (bash's rule for jobs without job control), so
# perl restores its default first, as a terminal's foreground job has it
RUN_DIR=$TMP/dm/int setsid perl -e '$SIG{INT} = "DEFAULT"; exec @ARGV' bash jobs/demo.sh \
  --d_model=16 --steps=100000 --log_every=1 --eval_every=0 >"$TMP/demo.log" 2>&1 </dev/null &
pid=$!
for _ in $(seq 1 300); do grep -q '^step' "$TMP/dm/int/train.log" 2>/dev/null && break; sleep 0.1; done
kill -INT -- "-$pid"
status=0; wait "$pid" || status=$?
[ "$status" -eq 130 ] && grep -q "^demo: stopped by INT while training (its checkpoint is in" "$TMP/demo.log" \
  || { cat "$TMP/demo.log"; fail "INT to make demo's process group: exit $status"; }
! pgrep -f "memtrain .*$TMP/dm/int" >/dev/null || fail "ranks still running after Ctrl-C to make demo"
pass "Ctrl-C to make demo: the ranks checkpoint and stop (exit 130)"

# ---- the command line ----
mt 0 eval --help
grep -q -- "--ckpt FILE" "$TMP/out" && ! grep -q "^  arch" "$TMP/out" || { cat "$TMP/out"; fail "eval --help"; }
mt 0 plan --help
grep -q -- "--per-rank-streams N" "$TMP/out" || { cat "$TMP/out"; fail "plan --help"; }
expect_error 1 "unknown config key 'step' (did you mean --steps? see memtrain --help)" train "${TINY[@]}" --step=100
expect_error 1 "unknown option '--temprature' (did you mean --temperature? see memtrain --help)" sample --ckpt "$ck" --temprature 1
expect_error 2 "cannot eval $ck: the model's shape would change: d_model (32 -> 64)" eval --ckpt "$ck" --d_model=64
status=0
env SLURM_NTASKS=2 SLURM_STEP_ID=0 SLURM_PROCID=0 "$BIN/memtrain" "${TINY[@]}" >"$TMP/out" 2>&1 || status=$?
[ "$status" -eq 2 ] && [ "$(wc -l <"$TMP/out")" -eq 1 ] \
  && grep -q "^memtrain: started by srun as 2 tasks without MPI support: launch with 'mpirun memtrain ...'" "$TMP/out" \
  || { cat "$TMP/out"; fail "srun without MPI support (exit $status)"; }
pass "each command's --help, suggestions for unknown keys, eval names a shape change, srun without PMI"

# ---- init_from: the weights, not the optimizer state ----
mt 2 train "${TINY[@]}" --init_from="$ck" --steps=1 --warmup=0 --lr=1e-9 --min_lr=0 --run_dir="$TMP/ft"
[ "$status" -eq 0 ] && grep -q "^initialised from $ck (step 4)" "$TMP/out" || { cat "$TMP/out"; fail "init_from"; }
/usr/bin/python3 - "$ck" "$TMP/ft/ckpt/ckpt-00000001.h5" <<'PY' || fail "init_from did not take the weights with fresh moments"
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
assert int(b.attrs["step"]) == 1
for name in ("dense/wte/data", "tables/dec0.self.qkv/out0/data"):
    assert np.allclose(a[name][()], b[name][()], atol=1e-6), name
m = "dense/wte/m"
# one step's first moment is (1 - beta1) g: not the source run's after 4 steps
assert not np.allclose(a[m][()], b[m][()], atol=1e-9)
t = "tables/dec0.self.qkv/out0/m"
assert not np.allclose(a[t][()], b[t][()], atol=1e-9)
PY
expect_error 2 "init_from = $ck: the model's shape differs: d_model (32 -> 64)" train "${TINY[@]}" \
  --init_from="$ck" --d_model=64 --run_dir="$TMP/ft2"
# refused before the run directory is made, and on a resume (which goes on from its own)
[ ! -e "$TMP/ft2" ] || fail "a refused init_from left $TMP/ft2 behind"
expect_error 2 "init_from starts a new run" --resume "$TMP/ft" --init_from="$TMP/ft/ckpt/ckpt-00000001.h5"
# a file that is no checkpoint, and missing data, are named by their keys
expect_error 2 "init_from: $TMP: not a regular file (a directory)" train "${TINY[@]}" \
  --init_from="$TMP" --run_dir="$TMP/ft3"
expect_error 2 "val_data: $TMP/none.txt: cannot open (No such file or directory)" train "${TINY[@]}" \
  --val_data=text:"$TMP/none.txt" --run_dir="$TMP/ft3"
expect_error 2 "data: $TMP/none.txt: cannot open (No such file or directory)" train "${TINY[@]}" \
  --data=text:"$TMP/none.txt" --run_dir="$TMP/ft3"
expect_error 2 "data: none.txt: cannot open (No such file or directory); a relative path, read from the working directory $TOP" \
  train "${TINY[@]}" --data=text:none.txt --run_dir="$TMP/ft3"
expect_error 2 "data: $TMP/nodata/brown/cats.txt: cannot open (No such file or directory) (no Brown corpus under data_dir = $TMP/nodata: run 'make data', or set data_dir to where it was fetched)" \
  train "${TINY[@]}" --data=brown --data_dir="$TMP/nodata" --run_dir="$TMP/ft3"
[ ! -e "$TMP/ft3" ] || fail "a refused init_from, data or val_data left $TMP/ft3 behind"
pass "init_from starts from a checkpoint's weights with fresh optimizer state; a shape change is named"

# ---- output that cannot be written: an error, not exit 0 with the output lost ----
for args in "inspect --ckpt $ck" "eval --ckpt $ck --eval_docs=2" "--help"; do
  status=0
  # shellcheck disable=SC2086  # the words of $args are the arguments
  "$BIN/memtrain" $args >/dev/full 2>"$TMP/out" || status=$?
  [ "$status" -eq 2 ] && [ "$(cat "$TMP/out")" = "memtrain: standard output: cannot write (No space left on device): the command's output is incomplete" ] \
    || { cat "$TMP/out"; fail "memtrain $args >/dev/full: exit $status"; }
done
status=0
/usr/bin/python3 jobs/pretokenize.py "$TMP/one.txt" --out "$TMP/full-out.u16" >/dev/full 2>"$TMP/out" || status=$?
[ "$status" -eq 1 ] && [ "$(cat "$TMP/out")" = "pretokenize: standard output: No space left on device ($TMP/full-out.u16 is written)" ] \
  || { cat "$TMP/out"; fail "pretokenize >/dev/full: exit $status"; }
pass "memtrain's commands and pretokenize.py on a standard output that cannot be written: one line, non-zero"

# ---- ckpt_minutes: checkpoints by time ----
mt 1 train "${TINY[@]}" --steps=20 --ckpt_minutes=0.0005 --keep_ckpts=0 --run_dir="$TMP/timed"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "ckpt_minutes run exited $status"; }
n=$(find "$TMP/timed/ckpt" -name 'ckpt-*.h5' | wc -l)
[ "$n" -ge 3 ] || { cat "$TMP/out"; fail "ckpt_minutes: $n checkpoints"; }
pass "ckpt_minutes: $n checkpoints in 20 steps with ckpt_every = 0"

# ---- train.sbatch outside Slurm: the run directory memtrain will use ----
sed -e "s|^run_dir = .*|run_dir = $TMP/fromconf|" jobs/configs/memformer.conf >"$TMP/own.conf"
JOB=(--d_model=32 --n_heads=2 --seg_len=49 --streams=4 --stream_block=2 --warmup=1 --eval_every=0
     --log_every=2 --ckpt_every=0 --steps=2)
sb() { status=0; env -u RUN_DIR MEMTRAIN="$BIN/memtrain" bash jobs/train.sbatch "$@" >"$TMP/out" 2>&1 || status=$?; }
sb "$TMP/own.conf" "${JOB[@]}"
[ "$status" -eq 0 ] && [ -e "$TMP/fromconf/ckpt/ckpt-00000002.h5" ] || { cat "$TMP/out"; fail "sbatch: the config's run_dir"; }
sb "$TMP/own.conf" "${JOB[@]}" --run_dir="$TMP/given"
[ "$status" -eq 0 ] && grep -q "starting $TMP/given from" "$TMP/out" || { cat "$TMP/out"; fail "sbatch: --run_dir="; }
sb "$TMP/own.conf" "${JOB[@]}" --run_dir="$TMP/given" --steps=4
[ "$status" -eq 0 ] && grep -q "resuming $TMP/given" "$TMP/out" && grep -q "resumed from $TMP/given/ckpt/ckpt-00000002.h5" "$TMP/out" \
  || { cat "$TMP/out"; fail "sbatch: resume of the given run_dir"; }
! grep -q "^-----" "$TMP/out" || { cat "$TMP/out"; fail "sbatch: Open MPI's block"; }
# a config spelling the key run-dir, as memtrain accepts it
sed -e "s|^run_dir = .*|run-dir = $TMP/dashed|" jobs/configs/memformer.conf >"$TMP/dash.conf"
sb "$TMP/dash.conf" "${JOB[@]}"
[ "$status" -eq 0 ] && grep -q "starting $TMP/dashed from" "$TMP/out" || { cat "$TMP/out"; fail "sbatch: run-dir"; }
# checkpoints without LATEST (a kill between a checkpoint's rename and LATEST's write): resumed
rm "$TMP/given/ckpt/LATEST"
sb "$TMP/own.conf" "${JOB[@]}" --run_dir="$TMP/given" --steps=6
[ "$status" -eq 0 ] && grep -q "resumed from $TMP/given/ckpt/ckpt-00000004.h5" "$TMP/out" \
  || { cat "$TMP/out"; fail "sbatch: checkpoints without LATEST"; }
# a config that starts with a byte-order mark still names the run_dir
{ printf '\xef\xbb\xbfrun_dir = %s\n' "$TMP/bom"; grep -v '^run_dir' jobs/configs/memformer.conf; } >"$TMP/bom.conf"
sb "$TMP/bom.conf" "${JOB[@]}"
[ "$status" -eq 0 ] && grep -q "starting $TMP/bom from" "$TMP/out" || { cat "$TMP/out"; fail "sbatch: a BOM"; }
pass "train.sbatch starts and resumes the run_dir memtrain uses (--run_dir=, else the config's; without LATEST; after a BOM)"

# ---- jobs/pretokenize.py: text to uint16 tokens that train ----
/usr/bin/python3 jobs/pretokenize.py "$TMP/one.txt" --out "$TMP/tok.u16" --vocab 300 >"$TMP/out" 2>&1 \
  || { cat "$TMP/out"; fail "pretokenize"; }
/usr/bin/python3 jobs/pretokenize.py "$TMP/val.txt" --out "$TMP/val.u16" --merges "$TMP/tok.u16.merges.json" \
  >>"$TMP/out" 2>&1 || { cat "$TMP/out"; fail "pretokenize with merges"; }
/usr/bin/python3 - "$TMP/one.txt" "$TMP/tok.u16" "$TMP/tok.u16.merges.json" <<'PY' || fail "pretokenized tokens do not decode to the text"
import json, sys
from array import array
text, toks, merges = open(sys.argv[1], "rb").read(), array("H"), json.load(open(sys.argv[3]))
toks.frombytes(open(sys.argv[2], "rb").read())
def dec(t):
    return bytes([t]) if t < 256 else dec(merges[t - 256][0]) + dec(merges[t - 256][1])
assert b"".join(dec(t) for t in toks) == text and len(toks) < len(text) and max(toks) >= 256
PY
mt 1 train "${TINY[@]}" --data=u16:"$TMP/tok.u16":300 --vocab=300 --val_data=u16:"$TMP/val.u16":300 \
  --steps=2 --eval_every=2 --run_dir="$TMP/u16"
[ "$status" -eq 0 ] && grep -q "val ppl" "$TMP/out" || { cat "$TMP/out"; fail "training on pretokenized text"; }
# its refusals: one line, nothing written
printf 'garbage' >"$TMP/bad.json"
# merges files that are FIFOs, nested past Python's recursion, of booleans, or of tokens not
# yet made; each was a hang, a traceback or accepted
mkfifo "$TMP/merges.fifo"
/usr/bin/python3 -c 'print("[" * 200000 + "]" * 200000)' >"$TMP/deep.json"
printf '[[true, false]]' >"$TMP/bool.json"
printf '[[104, 101], [65535, 65535]]' >"$TMP/later.json"
printf ' \n\n\t' >"$TMP/blank.txt"
sum=$(sha256sum <"$TMP/one.txt")
for a in "$TMP/missing.txt --out $TMP/m.u16" "$TMP/one.txt --out $TMP" "$TMP/one.txt --out $TMP/one.txt" \
         "$TMP/one.txt --out $TMP/nodir/m.u16" "$TMP/one.txt --out $TMP/m.u16 --merges $TMP/bad.json" \
         "$TMP/blank.txt --out $TMP/m.u16" "$TMP/one.txt --out $TMP/m.u16 --vocab abc" "--out $TMP/m.u16" \
         "$TMP/one.txt --out $TMP/m.u16 --merges $TMP/tok.u16.merges.json --vocab 300" \
         "$TMP/one.txt --out /proc/m.u16" "$TMP/one.txt --out $TMP/m.u16 --merges $TMP/merges.fifo" \
         "$TMP/one.txt --out $TMP/m.u16 --merges $TMP/deep.json" \
         "$TMP/one.txt --out $TMP/m.u16 --merges $TMP/bool.json" \
         "$TMP/one.txt --out $TMP/m.u16 --merges $TMP/later.json"; do
  status=0
  # shellcheck disable=SC2086  # the words of $a are the arguments
  timeout 60 /usr/bin/python3 jobs/pretokenize.py $a >"$TMP/out" 2>&1 || status=$?
  [ "$status" -ne 0 ] && [ "$status" -ne 124 ] && [ "$(wc -l <"$TMP/out")" -eq 1 ] && grep -q "^pretokenize: " "$TMP/out" \
    && [ ! -e "$TMP/m.u16" ] && [ ! -e "$TMP/m.u16.merges.json" ] || { cat "$TMP/out"; fail "pretokenize $a"; }
done
[ "$(sha256sum <"$TMP/one.txt")" = "$sum" ] || fail "pretokenize wrote over its input"
# a disk without room for the tokens: one line, and no part of a file left (root mounts one)
if mkdir -p "$TMP/full" && mount -t tmpfs -o size=8k tmpfs "$TMP/full" 2>/dev/null; then
  status=0
  /usr/bin/python3 jobs/pretokenize.py "$TMP/one.txt" "$TMP/one.txt" "$TMP/one.txt" "$TMP/one.txt" \
    --out "$TMP/full/m.u16" >"$TMP/out" 2>&1 || status=$?
  left=$(ls -A "$TMP/full")
  umount "$TMP/full"
  [ "$status" -ne 0 ] && [ "$(cat "$TMP/out")" = "pretokenize: $TMP/full/m.u16: cannot write (No space left on device): nothing written" ] \
    && [ -z "$left" ] || { cat "$TMP/out"; echo "left: $left"; fail "pretokenize on a full disk"; }
fi
pass "jobs/pretokenize.py: byte-pair tokens that decode to the text and train; bad input refused in one line"
