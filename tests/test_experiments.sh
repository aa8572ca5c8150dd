#!/usr/bin/env bash
# Test of jobs/experiments.sh on its tiny set (about 20 s on two cores): two arms of 6 steps in
# two sittings (UNTIL=4, then to the end), the second of which must continue each run from its
# checkpoint rather than start it again. Checks evals.csv's columns and rows (evaluations at steps 2, 4
# and 6, each once, with tokens = step x tokens per step and FLOPs = 3 x MFLOP/token x tokens),
# the shared validation set (arms with other seg_len and streams score the same 3 whole images),
# the parameter counts, one header line in metrics.csv after the second sitting, the losses of
# steps 5 and 6 equal to those of an uninterrupted 6-step run, summary.md's rows and the plots.
#
# Run: bash tests/test_experiments.sh   (after make all)
set -euo pipefail
# shellcheck source=tests/lib.sh disable=SC1091
source "$(dirname "$0")/lib.sh"
cd "$TOP" || exit 1
export BUILD=${BUILD:-build}

# refusals of its settings: one line, exit 2, nothing made
for bad in "STEPS=abc" "UNTIL=0" "UNTIL=7 STEPS=6" "NP=08" "NP=0" "SEEDS=x" "SEEDS=1,2"; do
  status=0
  env $bad jobs/experiments.sh tiny "$TMP/refused" >"$TMP/r.log" 2>&1 || status=$?
  [ "$status" -eq 2 ] && [ "$(wc -l <"$TMP/r.log")" -eq 1 ] && grep -q "^experiments: " "$TMP/r.log" \
    && [ ! -e "$TMP/refused" ] || { cat "$TMP/r.log"; fail "experiments.sh with $bad: exit $status"; }
done
pass "experiments.sh refuses non-numeric, zero and past-the-end settings in one line"
# one driver at a time in an output directory
mkdir -p "$TMP/held"
status=0
flock "$TMP/held/.lock" jobs/experiments.sh tiny "$TMP/held" >"$TMP/r.log" 2>&1 || status=$?
[ "$status" -eq 2 ] && [ "$(cat "$TMP/r.log")" = "experiments: $TMP/held is in use by another experiments.sh: wait for it, or give another OUT_DIR" ] \
  || { cat "$TMP/r.log"; fail "a second experiments.sh on one OUT_DIR: exit $status"; }
pass "a second experiments.sh on an OUT_DIR in use: refused in one line"

out=$TMP/exp # the first sitting names it relative to where it starts, the others whole
(cd "$TMP" && STEPS=6 UNTIL=4 "$TOP/jobs/experiments.sh" tiny exp) >"$TMP/s1.log" 2>&1 \
  || { cat "$TMP/s1.log"; fail "first sitting exited non-zero"; }
STEPS=6 jobs/experiments.sh tiny "$out" >"$TMP/s2.log" 2>&1 \
  || { cat "$TMP/s2.log"; fail "second sitting exited non-zero"; }
grep -q 'a seed 1: continuing from step 4 to 6 of 6' "$TMP/s2.log" \
  || { cat "$TMP/s2.log"; fail "second sitting did not continue arm a from step 4"; }
STEPS=6 jobs/experiments.sh tiny "$out" >"$TMP/s3.log" 2>&1 || fail "third sitting failed"
grep -q 'b seed 1: done (6 steps)' "$TMP/s3.log" || fail "a finished run was started again"
pass "runs continue from their checkpoints and finished runs are left alone"

for arm in a b; do
  n=$(grep -c '^step,' "$out/$arm-s1/metrics.csv")
  [ "$n" -eq 1 ] || fail "$arm: metrics.csv has $n header lines after a resume"
  [ "$(wc -l <"$out/$arm-s1/peak_kib")" -eq 4 ] || fail "$arm: expected 2 ranks x 2 sittings of peak memory"
done
pass "metrics.csv keeps one header across sittings"

/usr/bin/python3 - "$out" <<'PY' || fail "evals.csv is not as expected"
import csv, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(out + "/evals.csv")))
need = ["set", "arm", "seed", "step", "tokens", "wall_s", "flops", "train_ppl", "val_ppl",
        "val_tokens", "peak_rss_mib", "mflop_per_token", "tokens_per_s", "dense_params",
        "table_params", "passes"]
assert list(rows[0].keys()) == need, list(rows[0].keys())
got = sorted((r["arm"], int(r["step"])) for r in rows)
assert got == [("a", 2), ("a", 4), ("a", 6), ("b", 2), ("b", 4), ("b", 6)], got
for r in rows:
    per_step = 8 * 4 * 49  # experiment-base.conf: 8 streams, horizon 4, seg_len 49
    assert int(r["tokens"]) == int(r["step"]) * per_step, r
    flops = 3 * float(r["mflop_per_token"]) * 1e6 * int(r["tokens"])
    assert abs(float(r["flops"]) / flops - 1) < 1e-3, r
    assert 1 < float(r["val_ppl"]) < 300 and float(r["train_ppl"]) > 1, r
    assert float(r["wall_s"]) > 0 and float(r["peak_rss_mib"]) > 10, r
    # arm a: 8 streams of 49 pixels, arm b: 4 of 98; both score images 0-2 whole
    assert int(r["val_tokens"]) == 3 * 784, r
    assert float(r["passes"]) > 0, r
    if r["arm"] == "a":  # hashed: its projections live in tables
        assert int(r["table_params"]) > 0 and int(r["dense_params"]) > 0, r
    else:  # dense
        assert int(r["table_params"]) == 0 and int(r["dense_params"]) > 0, r
walls = [float(r["wall_s"]) for r in rows if r["arm"] == "a"]
assert walls == sorted(walls) and walls[0] < walls[-1], walls
summary = open(out + "/summary.md").read().splitlines()
assert len(summary) == 13 and summary[2].startswith("| a | 6 |"), summary
assert summary[7].startswith("At equal wall-clock (seed means): the fastest arm finished after"), summary
assert summary[11].startswith("| a | ") and summary[12].startswith("| b | "), summary
assert "| 2352 | " in summary[2] and "| 2352 | " in summary[3], summary
assert summary[5] == "Validation: the same 2352 tokens for every arm (whole documents, eval_docs).", summary
PY
pass "evals.csv: one row per evaluation, tokens and FLOPs as counted, one validation set, summary per arm"

for p in step flops wall; do
  head -c 8 "$out/val_ppl_vs_$p.png" | od -An -tx1 | grep -q '89 50 4e 47' || fail "val_ppl_vs_$p.png is not a PNG"
done
pass "plots written"

# the continued run's steps 5 and 6 are those of a run that never stopped
mt 2 --config jobs/configs/experiment-base.conf --ckpt_every=500 --data=fashion-mnist \
  --seg_len=49 --arch=decoder --proj=hash --d_model=16 --eval_every=2 --eval_docs=3 \
  --warmup=1 --log_every=1 --ckpt_every=2 --seed=1 --data_seed=1 --steps=6 --run_dir="$TMP/straight"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "uninterrupted run failed"; }
a=$(awk -F, '$1 == 5 || $1 == 6 {print $1, $2}' "$out/a-s1/metrics.csv" | sort -u)
b=$(awk -F, '$1 == 5 || $1 == 6 {print $1, $2}' "$TMP/straight/metrics.csv")
[ -n "$a" ] && [ "$a" = "$b" ] || fail "continued losses differ: '$a' vs '$b'"
pass "continued run matches the uninterrupted one at steps 5 and 6"

# an output directory holds one set, and a run its own arm's settings: refused in one line
for case in "hash $out" "tiny $out edited"; do
  read -r set dir edited <<<"$case"
  [ -z "$edited" ] || { cp "$out/a-s1/arm" "$TMP/arm"; echo "--d_model=32" >"$out/a-s1/arm"; }
  status=0
  STEPS=6 jobs/experiments.sh "$set" "$dir" >"$TMP/r.log" 2>&1 || status=$?
  [ -z "$edited" ] || cp "$TMP/arm" "$out/a-s1/arm"
  [ "$status" -eq 2 ] && [ "$(wc -l <"$TMP/r.log")" -eq 1 ] && grep -q "^experiments: $out" "$TMP/r.log" \
    || { cat "$TMP/r.log"; fail "experiments.sh $case: exit $status"; }
done
[ "$(cat "$out/set")" = tiny ] || fail "the refused set changed $out/set"
pass "another set's directory and a run started with other settings are refused"

# TERM to the script stops its ranks with a checkpoint (75), and the next sitting goes on
long=$TMP/long
STEPS=100000 jobs/experiments.sh tiny "$long" >"$TMP/t.log" 2>&1 &
term_when_training $! "$long/a-s1/log.txt"
[ "$status" -eq 75 ] && grep -q 'experiments: stopped by TERM: a seed 1 wrote a checkpoint' "$TMP/t.log" \
  || { cat "$TMP/t.log"; fail "TERM to experiments.sh: exit $status"; }
! pgrep -f "memtrain .*$long" >/dev/null || fail "ranks still running after experiments.sh stopped"
at=$(sed 's/^ckpt-0*\([0-9]*\)\.h5$/\1/' "$long/a-s1/ckpt/LATEST")
[ "$at" -gt 0 ] || fail "no checkpoint after the stop"
STEPS=100000 UNTIL=$((at + 2)) jobs/experiments.sh tiny "$long" >"$TMP/t2.log" 2>&1 \
  || { cat "$TMP/t2.log"; fail "the sitting after TERM failed"; }
grep -q "a seed 1: continuing from step $at to $((at + 2))" "$TMP/t2.log" \
  || { cat "$TMP/t2.log"; fail "the sitting after TERM did not continue from step $at"; }
pass "TERM checkpoints the running arm (step $at), leaves no rank running, and the next sitting continues"

# USR1 (Slurm's time-limit warning, --signal=B:USR1@N) as mpirun starts (before its ranks
# exist, or listen: time ignores USR1): the stop still reaches them, before the first step,
# with nothing written (USR1 used to end the script and leave the ranks running)
early=$TMP/early
STEPS=100000 jobs/experiments.sh tiny "$early" >"$TMP/e.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do pgrep -f "mpirun .*$early" >/dev/null && break; sleep 0.01; done
kill -USR1 "$pid"
status=0
timeout 120 tail --pid="$pid" -f /dev/null || fail "experiments.sh did not stop within 120 s of an early TERM"
wait "$pid" || status=$?
[ "$status" -eq 75 ] && grep -qE "experiments: stopped by USR1: a seed 1 (stopped before its first step|wrote a checkpoint)" "$TMP/e.log" \
  || { cat "$TMP/e.log"; fail "an early USR1 to experiments.sh: exit $status"; }
! pgrep -f "memtrain .*$early" >/dev/null || fail "ranks still running after an early USR1"
pass "an early USR1 stops the ranks too: $(grep -o 'seed 1 [a-z ]*step[a-z ,]*\|seed 1 wrote a checkpoint' "$TMP/e.log")"
