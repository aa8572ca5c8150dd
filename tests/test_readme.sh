#!/usr/bin/env bash
# The README's command examples (the block under "Running") run as written, shortened: fewer
# steps, smaller evaluations and sample grids, a narrower demo model with shorter segments. They run in a scratch
# directory that links build/, jobs/ and data/, with Open MPI's root and oversubscription
# settings removed from the environment, so the block's own export and --oversubscribe are
# what lets them start.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
unset OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM OMPI_MCA_rmaps_base_oversubscribe
work=$TMP/repo
mkdir -p "$work"
ln -s "$BIN/.." "$work/build"
ln -s "$TOP/jobs" "$work/jobs"
ln -s "$TOP/data" "$work/data"
printf 'Notes kept over a week, one paragraph after another without a blank line between them.\n%.0s' \
  $(seq 40) >"$work/notes.txt"
printf 'A held-out paragraph of the same kind, for validation only.\n%.0s' $(seq 10) >"$work/held-out.txt"

# the block, continuation lines joined, trailing comments dropped
/usr/bin/python3 - "$TOP/README.md" >"$TMP/commands" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
block = text.split("\n## Running\n", 1)[1].split("```\n", 2)[1]
for line in block.replace("\\\n", " ").splitlines():
    line = re.sub(r"\s+#(?![^\"]*\"[^\"]*$).*$", "", line).strip()
    if line:
        print(re.sub(r"\s+", " ", line))
PY
[ "$(wc -l <"$TMP/commands")" -ge 10 ] || { cat "$TMP/commands"; fail "the Running block was not found"; }

# shortened: steps, checkpoint names, evaluation and sampling sizes, the demo model's width
SHORT="--warmup=1 --log_every=2 --eval_every=4 --eval_docs=2"
# and a smaller demo model: sampling an image takes 784 forwards of a segment
SMALL="--d_model=32 --n_heads=2 --seg_len=49"
n=0
cd "$work"
while IFS= read -r cmd; do
  run=$(sed -e 's/--steps=2000/--steps=4/; s/--steps=4000/--steps=8/; s/ckpt-0000[0-9]000/ckpt-00000008/g' \
            -e 's/--count 16/--count 2/' <<<"$cmd")
  case $run in
    *--help*) ;;
    *" eval "*) run="$run --eval_docs=2" ;;
    *" sample "*) run="$run --length 40" ; [[ $run == *--count* ]] && run=${run/ --length 40/} ;;
    *brown.conf*) run="$run --steps=8 $SHORT" ;;
    *"--data=text:"*) run="$run --steps=4 $SHORT --d_model=32 --n_heads=2" ;;
    *demo.conf*--run_dir=*) run="$run $SHORT $SMALL" ;;
    *"--resume"*) run="$run $SHORT" ;;
  esac
  echo "\$ $run"
  t0=$SECONDS status=0
  eval "$run" </dev/null >"$TMP/out" 2>&1 || status=$?
  [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "README command exited $status: $cmd"; }
  case $cmd in
    export*) ;;
    *"--resume runs/a"*) grep -q "resumed from runs/a/ckpt/ckpt-00000004.h5 at step 4" "$TMP/out" \
                           || { cat "$TMP/out"; fail "resume"; } ;;
    *" eval "*) grep -q "validation perplexity [0-9]" "$TMP/out" || { cat "$TMP/out"; fail "eval"; } ;;
    *"--out grid.png"*) [ -s grid.png ] || { cat "$TMP/out"; fail "no grid.png"; } ;;
    *'--prompt "The jury"'*) grep -q "prompt 'The jury'" "$TMP/out" || { cat "$TMP/out"; fail "text sample"; } ;;
    *" plan "*) grep -q "total MiB" "$TMP/out" || { cat "$TMP/out"; fail "plan"; } ;;
    *"sample --help"*) grep -q -- "--top-p P" "$TMP/out" || { cat "$TMP/out"; fail "sample --help"; } ;;
    *"--help"*) grep -q "stream_block" "$TMP/out" || { cat "$TMP/out"; fail "--help"; } ;;
    *) grep -q "^summary: " "$TMP/out" || { cat "$TMP/out"; fail "no summary line: $cmd"; } ;;
  esac
  echo "  ($((SECONDS - t0)) s)"
  n=$((n + 1))
done <"$TMP/commands"
pass "$n README commands ran as written (shortened), as root, with the block's own mpirun settings"

# the README's h5py example, on the shortened run's last checkpoint
/usr/bin/python3 - "$TOP/README.md" >"$TMP/example.py" <<'PY'
import sys
text = open(sys.argv[1]).read()
code = [b.split("```", 1)[0] for b in text.split("```python\n")[1:] if "import h5py" in b]
assert len(code) == 1, "the h5py example was not found"
print(code[0].replace("ckpt-00004000.h5", "ckpt-00000008.h5"))
PY
(cd "$work" && /usr/bin/python3 "$TMP/example.py") >"$TMP/out" 2>&1 \
  || { cat "$TMP/example.py" "$TMP/out"; fail "the README's h5py example"; }
pass "the README's h5py example reads a table row and checks its CRC"
