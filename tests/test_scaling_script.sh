#!/usr/bin/env bash
# Smoke test of jobs/scaling.sh and jobs/comm_model.py (about 30 s on two cores).
#
# Runs a tiny sweep (P = 1, 2; 6 steps; one repeat) and checks scaling.csv's columns and rows,
# positive figures, no bytes on one rank, and that the plots are PNG files. Then checks the
# communication model (memtrain plan, through jobs/comm_model.py): a hand-computed prediction
# for a one-layer decoder with its rows fetched, the measured counter of that decoder against
# it (every bucket of its 4-row tables gets hit, so the uniform model is almost exact there),
# 0 bytes at P = 1, and on the demo Memformer at P = 2 the prediction above the measured
# counter and within a factor of 8 of it.
#
# Run: bash tests/test_scaling_script.sh   (after make all)
set -euo pipefail
# shellcheck source=tests/lib.sh disable=SC1091
source "$(dirname "$0")/lib.sh"
cd "$TOP" || exit 1
export BUILD=${BUILD:-build}

# ---- the sweep script ----
# settings it cannot run: one line, before any run
for bad in LOG_EVERY=0 PER_RANK=0 MAXP=0 STEPS=x PLOT_ONLY=yes; do
  status=0
  env "$bad" jobs/scaling.sh "$TMP/refused" >"$TMP/r.log" 2>&1 || status=$?
  [ "$status" -eq 1 ] && [ "$(wc -l <"$TMP/r.log")" -eq 1 ] && grep -q '^scaling.sh: ' "$TMP/r.log" \
    && [ ! -e "$TMP/refused" ] || { cat "$TMP/r.log"; fail "scaling.sh with $bad: exit $status"; }
done
pass "scaling.sh refuses zero and non-numeric settings in one line"
out="$TMP/scaling out" # a path with a space, as users have
# an earlier sweep's runs (a third repeat, P = 3) must not be mixed into this one's
mkdir -p "$out/weak-p1/r3" "$out/strong-p3/r1"
echo "not a metrics file" >"$out/weak-p1/r3/metrics.csv"
# named relative to where the script starts
(cd "$TMP" && MAXP=2 STEPS=6 REPEATS=1 "$TOP/jobs/scaling.sh" "scaling out") >"$TMP/sweep.log" 2>&1 \
  || { cat "$TMP/sweep.log"; fail "jobs/scaling.sh exited non-zero"; }
[ ! -e "$out/weak-p1/r3" ] && [ ! -e "$out/strong-p3" ] || fail "an earlier sweep's runs were kept"
grep -q 'oversubscribed' "$TMP/sweep.log" || fail "sweep output does not explain oversubscribed runs"
/usr/bin/python3 - "$out/scaling.csv" <<'PY' || fail "scaling.csv is not as expected"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
need = ["mode", "P", "streams", "oversubscribed", "tokens_per_s", "efficiency",
        "bytes_per_rank_step", "pred_bytes", "plan", "a2a_share",
        "ms_compute", "ms_alltoall", "ms_allreduce", "cache_hit_rate"]
missing = [c for c in need if c not in rows[0]]
assert not missing, "missing columns %s" % missing
got = sorted((r["mode"], int(r["P"]), int(r["streams"])) for r in rows)
assert got == [("strong", 1, 8), ("strong", 2, 8), ("weak", 1, 4), ("weak", 2, 8)], got
for r in rows:
    P = int(r["P"])
    for c in ("tokens_per_s", "efficiency", "ms_compute"):
        assert float(r[c]) > 0, (c, r)
    assert 0 < float(r["cache_hit_rate"]) <= 1, r
    assert 0 <= float(r["a2a_share"]) < 1, r
    if P == 1:
        assert float(r["bytes_per_rank_step"]) == 0, r
        assert float(r["pred_bytes"]) == 0, r
        assert abs(float(r["efficiency"]) - 1) < 1e-9, r
    else:
        for c in ("bytes_per_rank_step", "pred_bytes"):
            assert float(r[c]) > 0, (c, r)
print("scaling.csv: %d rows, %d columns" % (len(rows), len(rows[0])))
PY
for f in tokens_per_s efficiency bytes a2a_share; do
  [ -s "$out/$f.png" ] || fail "no $f.png"
  [ "$(head -c 8 "$out/$f.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] \
    || fail "$f.png does not start with the PNG signature"
done
grep -q '^| 2 |' "$out/comm_model.md" || fail "comm_model.md has no P = 2 row"
pass "scaling.sh: CSV rows and columns, PNG plots, comm_model.md"

# a second sweep on the same OUT_DIR is refused in one line while the first holds it
status=0
( exec 9>>"$out/.lock"; flock -n 9
  MAXP=1 STEPS=2 REPEATS=1 jobs/scaling.sh "$out" 9>&- >"$TMP/second.log" 2>&1 ) || status=$?
[ "$status" -eq 1 ] && [ "$(wc -l <"$TMP/second.log")" -eq 1 ] \
  && grep -q "is in use by another scaling.sh" "$TMP/second.log" && [ -d "$out/weak-p2/r1" ] \
  || { cat "$TMP/second.log"; fail "a second sweep on one OUT_DIR: exit $status"; }
pass "a second sweep on a busy OUT_DIR is refused and removes nothing"

# TERM to the script stops its ranks: none is left running
STEPS=100000 MAXP=1 REPEATS=1 LOG_EVERY=1 jobs/scaling.sh "$TMP/stopped" >"$TMP/stop.log" 2>&1 &
term_when_training $! "$TMP/stopped/weak-p1/r1/log.txt"
[ "$status" -eq 143 ] && grep -q 'scaling.sh: stopped by TERM during the weak run at P=1' "$TMP/stop.log" \
  || { cat "$TMP/stop.log"; fail "TERM to scaling.sh: exit $status"; }
! pgrep -f "memtrain .*$TMP/stopped" >/dev/null || fail "ranks still running after scaling.sh stopped"
pass "TERM to scaling.sh stops its ranks (exit 143)"

# ---- the model by hand ----
# decoder, 1 layer, d_model 8, tau 2, expand_bits 0: K = 4 tables of 4 rows per group;
# groups qkv (W = 3*8), ml1 (OC = K*(tau+e) = 8), ml2 (OC = 8). m = 784 lookups per table
# fill all 4 rows: U = 4(1 - (3/4)^784) = 4. Rows fetched: half the keys are remote, 8 + 4 W
# bytes each, and as much pushed (one block per rank): 2 * 2 * 8 * (8 + 4 W) per group is
# 1664, 640, 640; counts to the other rank: a fetch and a push per group, 12 B each, 72.
# P = 2, rows fetched (forced): 2944 + 72 = 3016.
tiny=(--arch=decoder --n_layers=1 --d_model=8 --n_heads=1 --tau=2 --expand_bits=0 --horizon=1
      --seg_len=784 --stream_block=1 --table_strategy=fetch)
pred() { # P -> predicted bytes
  jobs/comm_model.py --bin "$BIN/memtrain" "${tiny[@]}" --streams="$1" --ranks "$1" --format csv \
    | tail -1 | cut -d, -f4
}
[ "$(pred 2)" = 3016 ] || fail "comm_model.py predicts $(pred 2) bytes for the tiny decoder at P=2, hand count 3016"
[ "$(pred 1)" = 0 ] || fail "comm_model.py predicts $(pred 1) bytes at P=1, expected 0"
pass "comm_model.py: hand-counted 3016 bytes at P=2, 0 at P=1"
status=0
jobs/comm_model.py --bin "$BIN/memtrain" "${tiny[@]}" --streams=1 --ranks 1 --metrics README.md \
  >"$TMP/r.log" 2>&1 || status=$?
[ "$status" -eq 2 ] && [ "$(cat "$TMP/r.log")" = \
  "comm_model: README.md is not a memtrain metrics.csv (no bytes_sent_per_rank column)" ] \
  || { cat "$TMP/r.log"; fail "comm_model.py --metrics of another file: exit $status"; }
pass "comm_model.py refuses a --metrics file that is no metrics.csv in one line"

# the real counter: at most the saturated count, and at least 90% of it (nearly every bucket hit)
mpirun --oversubscribe -np 2 "$BIN/memtrain" "${tiny[@]}" --streams=2 --steps=2 --warmup=1 \
  --log_every=1 --eval_every=0 --ckpt_every=0 --run_dir="$TMP/tiny" >"$TMP/out" 2>&1 \
  || { cat "$TMP/out"; fail "tiny decoder run failed"; }
/usr/bin/python3 - "$TMP/tiny/metrics.csv" <<'PY' || fail "tiny decoder: measured bytes outside [0.9, 1] x 3016"
import csv, sys
for r in csv.DictReader(open(sys.argv[1])):
    b = float(r["bytes_sent_per_rank"])
    assert 0.9 * 3016 <= b <= 3016, b
    print("tiny decoder step %s: measured %.0f bytes = %.3f x 3016" % (r["step"], b, b / 3016))
PY
pass "tiny decoder: measured counter within [0.9, 1] of the saturated prediction"

# ---- the demo Memformer at P = 2, from the sweep's weak run ----
jobs/comm_model.py --bin "$BIN/memtrain" --config jobs/configs/memformer.conf --streams=8 \
  --stream_block=4 --ranks 2 --metrics "$out/weak-p2/metrics.csv" --format csv | tail -1 >"$TMP/p2.csv"
/usr/bin/python3 - "$TMP/p2.csv" <<'PY' || fail "demo at P=2: prediction and measurement disagree"
import sys
f = open(sys.argv[1]).read().strip().split(",")
pred, meas = float(f[3]), float(f[4])
print("demo P=2: measured %.0f B, predicted %.0f B (ratio %.2f)" % (meas, pred, pred / meas))
assert pred >= meas, "the uniform-bucket estimate should bound the measurement from above"
assert pred <= 8 * meas, "the prediction is more than 8 times the measurement"
PY
pass "demo P=2: prediction above the measurement, within a factor of 8"
echo "test_scaling_script: all passed"
