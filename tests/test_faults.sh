#!/usr/bin/env bash
# Fault injection: a full disk during a checkpoint write, checkpoints rewritten by h5py or
# damaged, foreign and other runs' checkpoints, FIFOs where files belong, sizes no machine
# holds, unwritable run directories, signal pairs during a checkpoint write, a killed
# launcher with a resume racing it. Every case checks the exit status, the one error line,
# and that the last good checkpoint still loads and resumes bit for bit (the losses of
# metrics.csv against an uninterrupted run).
#
# Kill moments, disk sizes and damage offsets come from one seed, printed first: replay a
# failure with FAULT_SEED=<seed> bash tests/test_faults.sh. The full-disk cases mount small
# tmpfs file systems and need root (the tests run as root; elsewhere they are skipped, loudly).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$TOP"

seed=${FAULT_SEED:-$(( $(date +%s%N) % 1000000 ))}
RANDOM=$seed
echo "seed: $seed (replay with FAULT_SEED=$seed)"
mounts=()
cleanup() {
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

# rand LO HI: an integer in [LO, HI] from the seeded stream (not in a subshell: $(rand) would
# not advance it)
rand() { r=$(( $1 + RANDOM % ($2 - $1 + 1) )); }

# mt as in lib.sh, with a time limit (a case that blocks fails instead of holding the suite);
# np 0 runs one process without mpirun, which starts in a fraction of mpirun's time: the
# cases where every rank agreeing is not the point
mt() {
  local np=$1; shift
  status=0
  if [ "$np" = 0 ]; then
    timeout -k 5 120 "$BIN/memtrain" "$@" >"$TMP/out" 2>&1 || status=$?
  else
    timeout -k 5 120 mpirun --oversubscribe -np "$np" "$BIN/memtrain" "$@" >"$TMP/out" 2>&1 || status=$?
  fi
}

# A small Fashion-MNIST (the first images of Debian's files) loads in milliseconds: most of a
# case's time is then the case itself
mkdir -p "$TMP/fmnist"
/usr/bin/python3 - "$TMP/fmnist" <<'PY'
import gzip, sys
src = "/usr/share/datasets/fashion-mnist/"
for name, n in (("train-images-idx3-ubyte.gz", 600), ("t10k-images-idx3-ubyte.gz", 100)):
    with gzip.open(src + name) as f:
        raw = f.read(16 + 784 * n)
    hdr = bytearray(raw[:16]); hdr[4:8] = n.to_bytes(4, "big")
    with gzip.open(sys.argv[1] + "/" + name, "wb") as f:
        f.write(bytes(hdr) + raw[16:])
PY
export MEMTRAIN_FASHION_MNIST_DIR=$TMP/fmnist

SMALL=(--config jobs/configs/memformer.conf --d_model=32 --seg_len=28 --streams=6 --stream_block=2 --horizon=2
       --warmup=2 --log_every=1 --eval_every=0 --keep_ckpts=0)
# a model whose checkpoint takes a good part of a second to write: signals can land inside;
# its steps take long enough (2 x 4 segments of 32 tokens) that a signal sent at step 1-5
# finds it training (at 16-token segments and horizon 1 a host ran all 20 steps in 0.3 s)
BIG=(--config jobs/configs/memformer.conf --d_model=128 --seg_len=32 --streams=2 --stream_block=1 --horizon=4
     --warmup=1 --log_every=1 --eval_every=0 --keep_ckpts=2)

losses() { awk -F, 'NR > 1 {print $1, $2}' "$1/metrics.csv"; }

# no_crash: the output shows no abort, crash or library trace
no_crash() {
  ! grep -qE 'internal check failed|Segmentation fault|signal 11|signal 6|HDF5-DIAG|^HDF5:|out of memory allocating' "$TMP/out" \
    || { cat "$TMP/out"; fail "$1: crashed or aborted"; }
}

# one_error PATTERN WHAT: exactly one 'memtrain: ' line matches PATTERN (an ERE)
one_error() {
  local n
  n=$(grep -cE "^memtrain: .*$1" "$TMP/out" || true)
  [ "$n" -eq 1 ] || { cat "$TMP/out"; fail "$2: expected one line matching '$1', found $n"; }
}

# resume_exact DIR REF FINAL WHAT [FROM]: resumes DIR to step FINAL and checks the steps after
# the checkpoint it resumed from against the reference run REF (and that it was FROM, if given)
resume_exact() {
  local d=$1 ref=$2 final=$3 what=$4 from=${5:-}
  mt 2 --resume "$d" --steps="$final" --ckpt_every=0
  [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "$what: resume exited $status"; }
  no_crash "$what: resume"
  local k
  k=$(sed -n 's/^resumed from .*ckpt-0*\([0-9][0-9]*\)\.h5 at step \([0-9]*\) .*/\2/p' "$TMP/out")
  [ -n "$k" ] || { cat "$TMP/out"; fail "$what: no 'resumed from' line"; }
  [ -z "$from" ] || [ "$k" = "$from" ] || { cat "$TMP/out"; fail "$what: resumed from step $k, expected $from"; }
  cmp <(losses "$ref" | awk -v k="$k" -v f="$final" '$1 > k && $1 <= f') \
      <(losses "$d" | tail -n $(( final - k ))) \
    || fail "$what: the run resumed from step $k does not continue bit for bit"
  resumed_at=$k
}

echo "($SECONDS s)"
# ---- references: uninterrupted runs ----
mt 2 "${SMALL[@]}" --steps=18 --ckpt_every=6 --run_dir="$TMP/refS"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "reference run"; }
grep -q '^memory: about .* per rank' "$TMP/out" || { cat "$TMP/out"; fail "no memory estimate printed"; }
mt 2 "${BIG[@]}" --steps=20 --ckpt_every=0 --run_dir="$TMP/refB"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "reference run (big)"; }
pass "reference runs"

# fresh DIR STEPS...: DIR/ckpt holds the reference checkpoints of those steps (and its RUN_ID)
fresh() {
  local d=$1; shift
  rm -rf "$d"; mkdir -p "$d/ckpt"
  cp "$TMP/refS/ckpt/RUN_ID" "$d/ckpt/"
  for s in "$@"; do cp "$TMP/refS/ckpt/ckpt-$(printf %08d "$s").h5" "$d/ckpt/"; done
}

echo "($SECONDS s)"
# ---- 1. a full disk during a checkpoint write ----
ckpt_kb=$(( $(stat -c %s "$TMP/refS/ckpt/ckpt-00000006.h5") / 1024 ))
if mkdir -p "$TMP/mnt0" && mount -t tmpfs -o size=64k tmpfs "$TMP/mnt0" 2>/dev/null; then
  umount "$TMP/mnt0"
  # room for the first checkpoint and a random part of the later ones
  for trial in 1 2; do
    rand $(( ckpt_kb + 1400 )) $(( 2 * ckpt_kb + 1400 )); kb=$r
    m=$TMP/full$trial; mkdir -p "$m"; mount -t tmpfs -o size=${kb}k tmpfs "$m"; mounts+=("$m")
    t0=$SECONDS
    mt 2 "${SMALL[@]}" --steps=18 --ckpt_every=6 --run_dir="$m/run"
    no_crash "disk full (${kb} KiB)"
    [ "$status" -eq 2 ] || { cat "$TMP/out"; fail "disk full (${kb} KiB): exit $status, expected 2"; }
    [ $(( SECONDS - t0 )) -lt 60 ] || fail "disk full: took $(( SECONDS - t0 )) s"
    one_error '(disk full|No space left|no room)' "disk full (${kb} KiB)"
    ! ls "$m/run/ckpt/"*.tmp >/dev/null 2>&1 || fail "disk full (${kb} KiB): a .tmp was left"
    msg=$(grep -E '^memtrain: .*(disk full|No space|no room)' "$TMP/out" | sed "s|$m/run/ckpt/||" | cut -c1-100)
    # the room the whole file needs, reserved at once: not the part reached when it ran out
    need=$(sed -n 's/.*no room for \([0-9.]*\) MiB.*/\1/p' <<<"$msg")
    awk -v a="$need" -v b="$ckpt_kb" 'BEGIN { exit !(a * 1024 >= b) }' \
      || fail "disk full (${kb} KiB): '$msg' names less than the checkpoint's $ckpt_kb KiB"
    # the last good checkpoint is intact: it resumes bit for bit, elsewhere
    last=$(cat "$m/run/ckpt/LATEST")
    d=$TMP/afterfull$trial; rm -rf "$d"; mkdir -p "$d/ckpt"; cp "$m/run/ckpt/$last" "$d/ckpt/"
    resume_exact "$d" "$TMP/refS" 18 "after a full disk (${kb} KiB)" "$(( 10#${last:5:8} ))"
    pass "disk of ${kb} KiB: exit 2, '$msg...'; $last resumes bit for bit"
  done
  # a disk with room for the run's small files but not for a checkpoint's first blocks: the
  # message still names the whole file's size (it named the 0.3 MiB of those blocks)
  m=$TMP/full0; mkdir -p "$m"; mount -t tmpfs -o size=300k tmpfs "$m"; mounts+=("$m")
  mt 2 "${SMALL[@]}" --steps=6 --ckpt_every=6 --run_dir="$m/run"
  no_crash "disk of 300 KiB"
  msg=$(grep -E '^memtrain: .*no room' "$TMP/out" | sed "s|$m/run/ckpt/||" | cut -c1-100)
  need=$(sed -n 's/.*no room for \([0-9.]*\) MiB.*/\1/p' <<<"$msg")
  [ "$status" -eq 2 ] && [ -n "$need" ] && awk -v a="$need" -v b="$ckpt_kb" 'BEGIN { exit !(a * 1024 >= b) }' \
    || { cat "$TMP/out"; fail "disk of 300 KiB: exit $status, '$msg' does not name the checkpoint's $ckpt_kb KiB"; }
  pass "disk of 300 KiB: exit 2, '$msg...'"
  # a disk that something else fills after the first checkpoint: no room even to close the
  # second file (the job then ends through MPI_Abort, after the one line)
  FILL=("${SMALL[@]}" --horizon=8 --steps=18 --ckpt_every=6)
  mt 2 "${FILL[@]}" --run_dir="$TMP/refF"
  [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "reference run (fill)"; }
  m=$TMP/full3; mkdir -p "$m"; mount -t tmpfs -o size=$(( 3 * ckpt_kb + 8192 ))k tmpfs "$m"; mounts+=("$m")
  setsid timeout -k 5 120 mpirun --oversubscribe -np 2 "$BIN/memtrain" "${FILL[@]}" --run_dir="$m/run" \
    >"$TMP/out" 2>&1 &
  pid=$!
  for _ in $(seq 3000); do [ -e "$m/run/ckpt/LATEST" ] && break; sleep 0.01; done
  dd if=/dev/zero of="$m/filler" bs=64k 2>/dev/null || true
  status=0; wait "$pid" || status=$?
  no_crash "disk filled by another file"
  [ "$status" -eq 2 ] || { cat "$TMP/out"; fail "disk filled by another file: exit $status, expected 2"; }
  one_error '(disk full|No space left|no room)' "disk filled by another file"
  ! ls "$m/run/ckpt/"*.tmp >/dev/null 2>&1 || fail "disk filled: a .tmp was left"
  d=$TMP/afterfill; rm -rf "$d"; mkdir -p "$d/ckpt"; cp "$m/run/ckpt/ckpt-00000006.h5" "$d/ckpt/"
  resume_exact "$d" "$TMP/refF" 18 "after a disk filled by another file" 6
  pass "disk filled by another file: exit 2, one line, ckpt-00000006.h5 resumes bit for bit"

  # the same, repeated: another program fills the disk while a checkpoint is being written and
  # goes on writing (a hang of one fill in seven would show in 15 with 90% odds); every fill
  # must end on every rank within seconds, exit 2 with one line, and leave no .tmp
  echo "($SECONDS s)"
  FILLS=${FAULT_FILLS:-15}
  # (small tables, tau 4: a checkpoint of 1.6 MB, written at every step)
  RUN=("${SMALL[@]}" --streams=4 --tau=4 --steps=30 --ckpt_every=1 --keep_ckpts=1)
  hung=0; ends=""
  for trial in $(seq "$FILLS"); do
    m=$TMP/fill$trial; mkdir -p "$m"; mount -t tmpfs -o size=8m tmpfs "$m"; mounts+=("$m")
    rand 1 3; step=$r
    setsid timeout -k 2 40 mpirun --oversubscribe -np 2 "$BIN/memtrain" "${RUN[@]}" --run_dir="$m/run" \
      >"$TMP/out" 2>&1 &
    pid=$!
    for _ in $(seq 1500); do grep -q "^step $step/" "$TMP/out" 2>/dev/null && break; sleep 0.01; done
    for _ in $(seq 500); do ls "$m/run/ckpt/"*.tmp >/dev/null 2>&1 && break; sleep 0.002; done
    rand 0 4; sleep "0.0$r"
    ( k=0; while kill -0 "$pid" 2>/dev/null; do
        dd if=/dev/zero of="$m/filler$k" bs=4k count=16 2>/dev/null; k=$((k + 1)); done ) &
    status=0; wait "$pid" || status=$?
    wait
    [ "$status" -ne 124 ] && [ "$status" -ne 137 ] || { cat "$TMP/out"; hung=$((hung + 1)); echo "fill $trial (step $step): hung"; continue; }
    no_crash "fill $trial"
    ! ls "$m/run/ckpt/"*.tmp >/dev/null 2>&1 || fail "fill $trial: a .tmp was left"
    if [ "$status" -eq 2 ]; then
      one_error '(disk full|No space left|no room)' "fill $trial"
      ends="$ends 2"
    else
      # the filler found the disk full before the run needed more room: the run ended well
      [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "fill $trial: exit $status"; }
      ends="$ends 0"
    fi
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  [ "$hung" -eq 0 ] || fail "$hung of $FILLS fills hung"
  pass "$FILLS disks filled by a program writing on during a checkpoint: exits$ends, no hang, no .tmp left"

  # metrics.csv that cannot be written: the run checkpoints and ends with one line naming it.
  # Its own file system of five pages (the lock's, config.conf's, its own, train.log's, which
  # starts with what rank 0 printed before the run directory opened, and one to spare; the
  # checkpoints on another; train.log finds no room in time and is written as far as it goes),
  # the file holding its header and padding up to a few rows short of its page
  pad_metrics() {
    mkdir -p "$1"
    local h; h=$(head -n 1 "$TMP/refS/metrics.csv")
    { echo "$h"; printf '#%.0s' $(seq $(( 3800 - ${#h} - 2 ))); echo; } >"$1/metrics.csv"
  }
  m=$TMP/metricsfull; mkdir -p "$m"; mount -t tmpfs -o size=20k tmpfs "$m"; mounts+=("$m")
  pad_metrics "$m/run"
  mkdir -p "$m/run/ckpt"; mount -t tmpfs -o size=64m tmpfs "$m/run/ckpt"; mounts=("$m/run/ckpt" "${mounts[@]}")
  mt 2 "${SMALL[@]}" --steps=60 --ckpt_every=0 --run_dir="$m/run"
  no_crash "metrics.csv on a full disk"
  [ "$status" -eq 2 ] || { cat "$TMP/out"; fail "metrics.csv on a full disk: exit $status, expected 2"; }
  one_error "$m/run/metrics.csv: cannot write \(No space left on device\) after step [0-9]+: stopped after writing checkpoint ckpt-[0-9]+\.h5" "metrics.csv on a full disk"
  k=$(sed -n 's/.*after step \([0-9]*\): stopped.*/\1/p' "$TMP/out")
  [ -e "$m/run/ckpt/ckpt-$(printf %08d "$k").h5" ] || fail "metrics.csv on a full disk: no checkpoint of step $k"
  pass "metrics.csv on a full disk: exit 2 at step $k, 'metrics.csv: cannot write (No space left on device) after step $k: stopped after writing checkpoint ...'"
  # everything on one small file system: the checkpoint cannot be written either, and the
  # one line says both
  m=$TMP/allfull; mkdir -p "$m"; mount -t tmpfs -o size=24k tmpfs "$m"; mounts+=("$m")
  pad_metrics "$m/run"
  mt 2 "${SMALL[@]}" --steps=60 --ckpt_every=0 --run_dir="$m/run"
  [ "$status" -eq 2 ] || { cat "$TMP/out"; fail "metrics.csv and checkpoint on a full disk: exit $status, expected 2"; }
  one_error "metrics.csv: cannot write \(No space left on device\) after step [0-9]+, and no checkpoint could be written either: .*no room" "metrics.csv and checkpoint on a full disk"
  ! ls "$m/run/ckpt/"*.tmp >/dev/null 2>&1 || fail "metrics.csv and checkpoint on a full disk: a .tmp was left"
  pass "metrics.csv and the checkpoint on a full disk: exit 2, one line naming both"
else
  echo "SKIP: full-disk cases need to mount a tmpfs (root); not run"
fi

# the cut-off row a failed write leaves: the next sitting removes it before its own rows
d=$TMP/cutrow
mt 2 "${SMALL[@]}" --steps=4 --ckpt_every=0 --run_dir="$d"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "cut row: first sitting exited $status"; }
cp "$d/metrics.csv" "$TMP/cutrow.csv"
printf '434,3.4974663174027638,24.' >>"$d/metrics.csv"
mt 2 --resume "$d" --steps=6
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "cut row: resume exited $status"; }
grep -q "^run_dir: removed the cut-off last row of $d/metrics.csv (26 bytes, from a write that failed)$" "$TMP/out" \
  || { cat "$TMP/out"; fail "cut row: no line saying it was removed"; }
head -c "$(stat -c %s "$TMP/cutrow.csv")" "$d/metrics.csv" | cmp -s - "$TMP/cutrow.csv" \
  || fail "cut row: the whole rows before it changed"
awk -F, 'NR == 1 {n = NF} NF != n {bad = 1} END {exit bad}' "$d/metrics.csv" \
  || { cat "$d/metrics.csv"; fail "cut row: a row of another width"; }
[ "$(awk -F, 'NR > 1 {print $1}' "$d/metrics.csv" | tr '\n' ' ')" = "1 2 3 4 5 6 " ] \
  || { cat "$d/metrics.csv"; fail "cut row: steps 1-6 not each one row"; }
pass "a cut-off last row of metrics.csv is removed by the next sitting, which starts its rows on a line of their own"

echo "($SECONDS s)"
# ---- 2. rewritten, damaged, foreign and other runs' checkpoints ----
# h5py rewrites string attributes with its own type (variable-length UTF-8): same text
d=$TMP/rewritten; fresh "$d" 6 12
/usr/bin/python3 - "$d/ckpt/ckpt-00000012.h5" <<'PY'
import h5py, sys
with h5py.File(sys.argv[1], "r+") as f:
    for k in ("config", "magic", "run_id"):
        v = f.attrs[k]
        f.attrs[k] = v.decode() if isinstance(v, bytes) else str(v)
    assert h5py.check_string_dtype(f.attrs.get_id("config").dtype).length is None
PY
mt 2 eval --ckpt "$d/ckpt/ckpt-00000012.h5" --eval_docs=2
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "eval of a checkpoint rewritten by h5py"; }
no_crash "eval of a rewritten checkpoint"
resume_exact "$d" "$TMP/refS" 18 "attributes rewritten by h5py" 12
pass "attributes rewritten by h5py: read as they are, resumed from step 12 bit for bit"

# values no run writes, under good checksums: a NaN weight, a cursor past any run, a negative
# step; eval refuses each in one line, a resume falls back past the file
edit() { # FILE DATASET SLICE PYTHON-EXPR: sets the slice's first value, and its crc32 again
  /usr/bin/python3 - "$@" <<'PY'
import h5py, sys, zlib, numpy as np
path, name, i, expr = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with h5py.File(path, "r+") as f:
    if name == "@step":
        f.attrs["step"] = np.int64(eval(expr))
        sys.exit(0)
    if name == "@config": # one line replaced: OLD/NEW, "_=_" for " = " (one shell word)
        old, new = expr.replace("_=_", " = ").split("/")
        assert old in f.attrs["config"]
        f.attrs["config"] = f.attrs["config"].replace(old, new)
        sys.exit(0)
    ds = f[name]
    row = ds[i]
    row.flat[0] = eval(expr)
    ds[i] = row
    crc = ds.attrs["crc32"]
    crc[i] = zlib.crc32(ds[i].tobytes())
    ds.attrs["crc32"] = crc
PY
}
for e in "dense/wte/data 0 float('nan'):holds a NaN or infinite value" \
         "streams/cursor 1 2**62:streams/cursor of stream 1 (4611686018427387904, " \
         "@step 0 -5:holds step -5, which is invalid" \
         "@config 0 d_model_=_32/d_model_=_64:attribute config fails its checksum (config_crc32)"; do
  want=${e#*:}; e=${e%%:*}
  d=$TMP/values; fresh "$d" 6 12
  # shellcheck disable=SC2086  # the words of $e are the arguments
  edit "$d/ckpt/ckpt-00000012.h5" $e || fail "editing $e"
  if [ "${e%% *}" != streams/cursor ]; then # eval reads no cursors
    expect_error 2 "$want" eval --ckpt "$d/ckpt/ckpt-00000012.h5" --eval_docs=2
  fi
  resume_exact "$d" "$TMP/refS" 18 "${e%% *} edited" 6
  one_error "ckpt-00000012.h5: .*$(sed 's/[()*]/\\&/g' <<<"$want").*falling back" "${e%% *} edited"
done
pass "a NaN weight, a cursor past any run, a negative step and an edited config refused; resumes fell back to step 6"

# a newest checkpoint this user may not read is no damage: refused, not set aside (root reads
# everything, so the run is nobody's; skipped where nobody cannot reach the build)
if [ "$(id -u)" -eq 0 ] && runuser -u nobody -- test -x "$BIN/memtrain" 2>/dev/null \
   && runuser -u nobody -- test -r "$TOP/jobs/configs/memformer.conf" 2>/dev/null; then
  chmod o+x "$TMP"; d=$TMP/nobody; mkdir -m 777 "$d"
  asnobody() { runuser -u nobody -- env HOME="$d" mpirun -q --oversubscribe -np 2 "$BIN/memtrain" "$@" >"$TMP/out" 2>&1; }
  status=0; asnobody "${SMALL[@]}" --steps=8 --ckpt_every=4 --run_dir="$d/r" || status=$?
  [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "a run as nobody exited $status"; }
  chmod 000 "$d/r/ckpt/ckpt-00000008.h5"
  status=0; asnobody --resume "$d/r" --steps=12 || status=$?
  one_error "$d/r/ckpt/ckpt-00000008.h5: cannot read \(Permission denied\): fix its permissions to resume from it, or move it away to resume from an older checkpoint$" "unreadable checkpoint"
  [ "$status" -eq 2 ] && [ -e "$d/r/ckpt/ckpt-00000008.h5" ] && ! ls "$d/r/ckpt/"*.skipped* >/dev/null 2>&1 \
    || { cat "$TMP/out"; ls -l "$d/r/ckpt"; fail "unreadable checkpoint: exit $status, or set aside"; }
  pass "a newest checkpoint its user may not read: refused in one line, left in place"
else
  echo "SKIP: the unreadable checkpoint case needs root and a build user nobody can run"
fi

# a newest checkpoint another program holds open for writing (h5py's mode 'a', as a user adding
# a note does) is no damage either: refused while it is held, left in place, resumed from after
# (HDF5's locks may be turned off on HPC systems: not here)
unset HDF5_USE_FILE_LOCKING
d=$TMP/held; fresh "$d" 6 12
/usr/bin/python3 - "$d/ckpt/ckpt-00000012.h5" "$TMP/held.ready" <<'PY' &
import h5py, signal, sys, time
f = h5py.File(sys.argv[1], "a")
f.attrs["note"] = "looked at"
signal.signal(signal.SIGTERM, lambda *a: (f.close(), sys.exit(0)))  # closed as a user closes it
open(sys.argv[2], "w").close()
time.sleep(120)
PY
holder=$!
for _ in $(seq 200); do [ -e "$TMP/held.ready" ] && break; sleep 0.1; done
[ -e "$TMP/held.ready" ] || { kill "$holder"; fail "the h5py holder did not open the checkpoint within 20 s"; }
expect_error 2 "ckpt-00000012.h5: open for writing in another program (which holds HDF5's lock on it): close it there first" \
  eval --ckpt "$d/ckpt/ckpt-00000012.h5" --eval_docs=2
mt 2 --resume "$d" --steps=18 --ckpt_every=0
one_error "ckpt-00000012.h5: open for writing in another program \(which holds HDF5's lock on it\): close it there to resume from it, or move it away to resume from an older checkpoint$" "held checkpoint"
[ "$status" -eq 2 ] && [ -e "$d/ckpt/ckpt-00000012.h5" ] && ! ls "$d/ckpt/"*.skipped* >/dev/null 2>&1 \
  || { cat "$TMP/out"; ls -l "$d/ckpt"; fail "held checkpoint: exit $status, or set aside"; }
kill "$holder"; wait "$holder" 2>/dev/null || true
/usr/bin/python3 -c 'import h5py, sys; assert h5py.File(sys.argv[1], "r").attrs["note"] == "looked at"' \
  "$d/ckpt/ckpt-00000012.h5" || fail "the holder's note is not in the checkpoint"
resume_exact "$d" "$TMP/refS" 18 "a checkpoint once held open, with an attribute added" 12
pass "a newest checkpoint another program holds open for writing: refused in one line, left in place, resumed from once closed"

# an unrelated HDF5 file with a magic attribute, under the newest name
d=$TMP/foreign; fresh "$d" 6
/usr/bin/python3 - "$d/ckpt/ckpt-00000012.h5" <<'PY'
import h5py, numpy as np, sys
with h5py.File(sys.argv[1], "w") as f:
    f.attrs["magic"] = "netcdf4\nsomething else"
    f["x"] = np.arange(10)
PY
resume_exact "$d" "$TMP/refS" 18 "a foreign HDF5 file" 6
one_error "ckpt-00000012.h5: not a memtrain checkpoint \(magic 'netcdf4\\\\nsomething else'\); falling back" "foreign file"
pass "foreign HDF5 file refused by name (its magic printed escaped), fell back to step 6"

# a checkpoint of another model copied in under the newest name
mt 2 "${SMALL[@]}" --d_model=64 --steps=12 --ckpt_every=12 --run_dir="$TMP/other"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "the other model's run"; }
d=$TMP/otherrun; fresh "$d" 6; cp "$TMP/other/ckpt/ckpt-00000012.h5" "$d/ckpt/"
resume_exact "$d" "$TMP/refS" 18 "another run's checkpoint" 6
one_error "ckpt-00000012.h5: belongs to another run" "another run's checkpoint"
d=$TMP/otherrun2; fresh "$d" 6; rm "$d/ckpt/RUN_ID"; cp "$TMP/other/ckpt/ckpt-00000012.h5" "$d/ckpt/"
# without RUN_ID (checkpoints copied in by hand) the newest checkpoint names the run, and the
# older one of another shape is then the stranger
mt 2 --resume "$d" --steps=14
no_crash "no RUN_ID"
[ "$status" -eq 0 ] && grep -q "resumed from $d/ckpt/ckpt-00000012.h5 at step 12" "$TMP/out" \
  || { cat "$TMP/out"; fail "no RUN_ID: the newest checkpoint should name the run"; }
pass "another run's checkpoint refused by name (run id), fell back to step 6"

# a checkpoint saved under a name whose step is not its content
d=$TMP/renamed; fresh "$d" 6; cp "$d/ckpt/ckpt-00000006.h5" "$d/ckpt/ckpt-00000012.h5"
cp "$d/ckpt/ckpt-00000012.h5" "$TMP/renamed.orig"
resume_exact "$d" "$TMP/refS" 18 "a renamed checkpoint" 6
one_error "ckpt-00000012.h5: its name says step 12 but it holds step 6" "renamed checkpoint"
cmp -s "$TMP/renamed.orig" "$d/ckpt/ckpt-00000012.h5.skipped" ||
  fail "renamed checkpoint: not kept as ckpt-00000012.h5.skipped"
pass "a checkpoint named for another step refused by name, fell back to step 6, kept as .skipped"

# the same checkpoint to eval, which refuses it as resume does, and shape overrides to eval
mkdir -p "$TMP/renamed2"; cp "$d/ckpt/ckpt-00000012.h5.skipped" "$TMP/renamed2/ckpt-00000012.h5"
expect_error 0 "ckpt-00000012.h5: its name says step 12 but it holds step 6 (renamed or copied over?)" \
  eval --ckpt "$TMP/renamed2/ckpt-00000012.h5"
f=$TMP/refS/ckpt/ckpt-00000018.h5
expect_error 0 "cannot eval $f: the model's shape would change: d_model (32 -> 64)" eval --ckpt "$f" --d_model=64
expect_error 0 "cannot eval $f: the model's shape would change: row_format (f32 -> bf16)" eval --ckpt "$f" --row_format=bf16

# a stale LATEST (naming step 6 while 12 loads): the scan decides, and says so
d=$TMP/stale; fresh "$d" 6 12; echo ckpt-00000006.h5 >"$d/ckpt/LATEST"
resume_exact "$d" "$TMP/refS" 18 "a stale LATEST" 12
one_error "$d/ckpt/LATEST names ckpt-00000006.h5, older than $d/ckpt/ckpt-00000012.h5, which loads: LATEST was stale" "stale LATEST"
pass "LATEST naming step 6 while step 12 loads: resumed from 12 bit for bit, 'LATEST was stale' said once"

# a byte flipped in the root group's header (where every root attribute lives, under one
# checksum): the attributes it holds are named, not just magic
d=$TMP/rootdamage; fresh "$d" 6 12
/usr/bin/python3 - "$d/ckpt/ckpt-00000012.h5" <<'PY'
import sys
path = sys.argv[1]
with open(path, "r+b") as f:
    b = f.read(); off = b.rfind(b"schedule_step")
    assert off > 0
    f.seek(off); f.write(bytes([b[off] ^ 0xff]))
PY
expect_error 0 "ckpt-00000012.h5: root attributes damaged: the header holding magic, format_version, step, seed, schedule_step, ranks, config, run_id fails its checksum (damaged file)" \
  eval --ckpt "$d/ckpt/ckpt-00000012.h5"

# a byte flipped in the metadata of the only file eval and inspect read: a refusal is one line
# (HDF5, left unable to close by some of these, printed "HDF5: infinite loop closing library"
# and a long line after it, on every rank)
lines=0
for off in $(seq 400 37 1200); do
  cp "$TMP/refS/ckpt/ckpt-00000012.h5" "$TMP/flip.h5"
  /usr/bin/python3 -c "import sys; f=open(sys.argv[1],'r+b'); f.seek($off); b=f.read(1); f.seek($off); f.write(bytes([b[0]^16]))" "$TMP/flip.h5"
  for cmd in inspect eval; do
    mt 0 "$cmd" --ckpt "$TMP/flip.h5"
    [ "$status" -eq 0 ] && continue
    no_crash "$cmd of a byte flipped at $off"
    [ "$(wc -l <"$TMP/out")" -eq 1 ] || { cat "$TMP/out"; fail "$cmd of a byte flipped at $off: more than one line"; }
    lines=$((lines + 1))
  done
done
[ "$lines" -gt 0 ] || fail "no flipped byte was refused"
pass "$lines refusals of flipped metadata bytes by inspect and eval: one line each"

# byte damage at seeded offsets in the metadata at the head of the newest file
for trial in 1 2 3; do
  d=$TMP/damaged$trial; fresh "$d" 6 12
  rand 0 4095; off=$r
  /usr/bin/python3 - "$d/ckpt/ckpt-00000012.h5" "$off" <<'PY'
import sys
path, off = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0xff]))
PY
  resume_exact "$d" "$TMP/refS" 18 "a byte flipped at offset $off"
  if [ "$resumed_at" = 6 ]; then
    one_error "ckpt-00000012.h5: .*falling back to an older checkpoint" "byte flipped at offset $off"
    pass "byte flipped at offset $off: $(grep -o 'ckpt-00000012.h5: .*' "$TMP/out" | head -1 | cut -c1-100)"
  else
    pass "byte flipped at offset $off: an unused byte, the file still loads (step 12, bit for bit)"
  fi
done

echo "($SECONDS s)"
# ---- 3. FIFOs where regular files belong ----
mkfifo "$TMP/fifo"
for spec in text u8 u16; do
  np=0; [ "$spec" = text ] && np=2
  mt $np "${SMALL[@]}" --steps=2 --data="$spec:$TMP/fifo" --run_dir="$TMP/fifo-$spec"
  [ "$status" -eq 2 ] || { cat "$TMP/out"; fail "$spec: FIFO: exit $status"; }
  one_error "/fifo: not a regular file \(a FIFO\)" "$spec: FIFO"
done
expect_error 0 "/fifo: not a regular file (a FIFO)" --config "$TMP/fifo"
mkdir -p "$TMP/fm"; mkfifo "$TMP/fm/train-images-idx3-ubyte.gz"; cp /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz "$TMP/fm/"
MEMTRAIN_FASHION_MNIST_DIR=$TMP/fm expect_error 2 "train-images-idx3-ubyte.gz: not a regular file (a FIFO)" "${SMALL[@]}" --steps=2 --run_dir="$TMP/fifo-fm"
expect_error 0 "/fifo: not a regular file (a FIFO)" eval --ckpt "$TMP/fifo"
# as the newest checkpoint and as LATEST: refused by name, the older checkpoint resumes
d=$TMP/fifockpt; fresh "$d" 6; mkfifo "$d/ckpt/ckpt-00000012.h5"; rm -f "$d/ckpt/LATEST"; mkfifo "$d/ckpt/LATEST"
resume_exact "$d" "$TMP/refS" 18 "a FIFO as the newest checkpoint" 6
one_error "ckpt-00000012.h5: not a regular file \(a FIFO\); falling back" "FIFO checkpoint"
# as the run's log: refused by name at the start, nothing blocks
d=$TMP/fifolog; fresh "$d" 6; mkfifo "$d/train.log"
expect_error 2 "$d/train.log: not a regular file (a FIFO)" --resume "$d" --steps=8
pass "FIFOs as data, config, Fashion-MNIST file, checkpoint, LATEST and train.log: refused by name, nothing blocks"
# keep_ckpts prunes this run's own checkpoints only: another run's file and a damaged one
# under older names stay
mt 1 "${SMALL[@]}" --steps=2 --ckpt_every=1 --seed=9 --run_dir="$TMP/seed9"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "the other run"; }
d=$TMP/prune; fresh "$d" 6
cp "$TMP/seed9/ckpt/ckpt-00000002.h5" "$d/ckpt/"
head -c 3000 "$TMP/refS/ckpt/ckpt-00000006.h5" >"$d/ckpt/ckpt-00000001.h5"
sum=$(cat "$d/ckpt/ckpt-00000002.h5" "$d/ckpt/ckpt-00000001.h5" | sha256sum)
mt 1 --resume "$d" --steps=12 --ckpt_every=2 --keep_ckpts=2
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "prune: resume"; }
[ "$(cd "$d/ckpt" && echo ckpt-*.h5)" = "ckpt-00000001.h5 ckpt-00000002.h5 ckpt-00000010.h5 ckpt-00000012.h5" ] \
  && [ "$(cat "$d/ckpt/ckpt-00000002.h5" "$d/ckpt/ckpt-00000001.h5" | sha256sum)" = "$sum" ] \
  || { ls "$d/ckpt"; fail "keep_ckpts pruned another run's or a damaged file"; }
pass "keep_ckpts = 2 kept this run's newest two and left another run's and a damaged file alone"
# a directory under the newest checkpoint's name: no checkpoint could be renamed onto it, so
# the run is refused at its start, naming it
d=$TMP/dirckpt; fresh "$d" 6; mkdir "$d/ckpt/ckpt-00000012.h5"
expect_error 2 "run_dir $d cannot be used: $d/ckpt/ckpt-00000012.h5 is a directory, where a checkpoint file belongs: move it out of the way" \
  --resume "$d" --steps=14 --ckpt_every=3
! grep -q "^step " "$TMP/out" || fail "trained before refusing the directory"
# the same for LATEST; a FIFO at LATEST.tmp is replaced, not opened (which would block)
rmdir "$d/ckpt/ckpt-00000012.h5"; rm -f "$d/ckpt/LATEST"; mkdir "$d/ckpt/LATEST"
expect_error 2 "run_dir $d cannot be used: $d/ckpt/LATEST is a directory, where the newest checkpoint's name belongs: move it out of the way" \
  --resume "$d" --steps=14 --ckpt_every=3
! grep -q "^step " "$TMP/out" || fail "trained before refusing LATEST as a directory"
rmdir "$d/ckpt/LATEST"; mkfifo "$d/ckpt/LATEST.tmp"
mt 2 --resume "$d" --steps=8 --ckpt_every=0
[ "$status" -eq 0 ] && [ "$(cat "$d/ckpt/LATEST")" = ckpt-00000008.h5 ] && [ ! -e "$d/ckpt/LATEST.tmp" ] \
  || { cat "$TMP/out"; ls -l "$d/ckpt"; fail "a FIFO at LATEST.tmp"; }
pass "directories at a checkpoint's name and at LATEST refused at the start; a FIFO at LATEST.tmp replaced"

echo "($SECONDS s)"
# ---- 4. sizes no machine holds ----
for over in "--d_model=65536 --tau=8:memory: .*d_model = 65536" \
            "--horizon=100000000:memory: .*horizon = 100000000" \
            "--dec_layers=200000:dec_layers = 200000: expected an integer in 1..1024" \
            "--seg_len=100000:seg_len = 100000 squared" \
            "--streams=2000000000:streams = 2000000000: expected an integer in 1..1048576" \
            "--mem_slots=2000000000:mem_slots = 2000000000"; do
  args=${over%%:*}; want=${over#*:}
  t0=$SECONDS
  np=0; [ "${args%% *}" = --d_model=65536 ] && np=2
  # shellcheck disable=SC2086 # args is a list of options
  mt $np "${SMALL[@]}" --steps=2 $args --run_dir="$TMP/huge"
  [ "$status" -eq 2 ] || { cat "$TMP/out"; fail "$args: exit $status"; }
  one_error "$want" "$args"
  no_crash "$args"
  [ ! -e "$TMP/huge" ] || fail "$args: run_dir created before the refusal"
  [ $(( SECONDS - t0 )) -lt 30 ] || fail "$args: took $(( SECONDS - t0 )) s"
done
# stream counts: the most the range allows (no overflowed block count), fewer than the ranks
mt 2 "${SMALL[@]}" --steps=2 --streams=1048576 --run_dir="$TMP/huge"
[ "$status" -eq 2 ] && ! grep -qE -- '-[0-9]+ blocks?' "$TMP/out" || { cat "$TMP/out"; fail "streams = 1048576"; }
one_error "streams = 1048576 over 2 ranks x seg_len = 28 x vocab = 256 \(the logits of the tokens a rank evaluates at once\) = .*: too large" "streams = 1048576"
expect_error 3 "streams = 2 is fewer than the 3 ranks: every rank needs a stream; set streams >= 3 or run on at most 2 ranks" \
  "${SMALL[@]}" --steps=2 --streams=2 --run_dir="$TMP/few"
# a config starting with a UTF-8 byte-order mark: skipped, the key named as written
printf '\xef\xbb\xbfstepz = 3\n' >"$TMP/bom.conf"
expect_error 0 "bom.conf:1: unknown config key 'stepz' (did you mean steps? see memtrain --help)" --config "$TMP/bom.conf"
# a float past float's range is named so, not as out of the key's range
expect_error 0 "lr = 1e400: too large for a float" --lr=1e400
expect_error 0 "ckpt_minutes = 1e-60: too small for a float" --ckpt_minutes=1e-60
f=$TMP/refS/ckpt/ckpt-00000018.h5
expect_error 0 "--count = 2000000000: expected an integer in 1..65536" sample --ckpt "$f" --count 2000000000
expect_error 2 "memory: this run needs about" sample --ckpt "$f" --count 65536 --out "$TMP/s.png"
grep -q "driven by --count = 65536" "$TMP/out" || { cat "$TMP/out"; fail "--count not named as the driver"; }
for bad in "--count=-5:--count = -5" "--count=abc:--count = abc" "--length=-1:--length = -1" \
           "--temperature=nan:--temperature = nan" "--temperature=-1:--temperature = -1"; do
  expect_error 0 "${bad#*:}: expected" sample --ckpt "$f" "${bad%%:*}"
done
# eval_docs beyond the validation split: every document once, said so (20 documents
# separated by form feeds, every 10th for validation)
for i in $(seq 1 20); do printf 'document %d: %s\f' "$i" "$(seq -s ' ' 1 200)"; done >"$TMP/docs.txt"
mt 0 eval --ckpt "$f" --data=text:"$TMP/docs.txt" --eval_docs=100000
grep -q "^eval: eval_docs = 100000 is more than the validation split's 2 documents" "$TMP/out" \
  || { cat "$TMP/out"; fail "eval_docs beyond the split"; }
grep -q "the first 2 documents whole" "$TMP/out" || { cat "$TMP/out"; fail "eval_docs beyond the split: not all scored"; }
# the retired eval_segments is refused wherever it is set, naming its replacement
expect_error 0 "eval_segments was replaced by eval_docs" eval --ckpt "$f" --eval_segments=4
printf 'eval_segments = 32\n' >"$TMP/old.conf"
expect_error 0 "old.conf:1: eval_segments was replaced by eval_docs" --config "$TMP/old.conf"
pass "sizes no machine holds: refused before any allocation, naming the keys; sample options validated"

echo "($SECONDS s)"
# ---- 5. run directories that cannot be written ----
touch "$TMP/plainfile"
expect_error 2 "run_dir $TMP/plainfile/run cannot be used: $TMP/plainfile/run: cannot create (Not a directory)" \
  "${SMALL[@]}" --steps=2 --run_dir="$TMP/plainfile/run"
mkdir -p "$TMP/metricsdir/metrics.csv"
expect_error 0 "metrics.csv: not a regular file (a directory)" "${SMALL[@]}" --steps=2 --run_dir="$TMP/metricsdir"
! grep -q "^step " "$TMP/out" || fail "trained before refusing the metrics file"
if mkdir -p "$TMP/ro" && mount -t tmpfs -o size=1m,ro tmpfs "$TMP/ro" 2>/dev/null; then
  mounts+=("$TMP/ro")
  expect_error 0 "cannot create (Read-only file system)" "${SMALL[@]}" --steps=2 --run_dir="$TMP/ro/run"
fi
# a fresh run on a directory holding checkpoints: refused, the way to continue named
expect_error 0 "run_dir $TMP/refS holds checkpoints already" "${SMALL[@]}" --steps=2 --run_dir="$TMP/refS"
pass "unwritable run directories refused before any training"

echo "($SECONDS s)"
# ---- 6. signal pairs during a checkpoint write ----
# ranks_of DIR: the pids of the ranks writing to DIR
ranks_of() { pgrep -f "^$BIN/memtrain .*--run_dir=$1\$" || true; }
# sig_pair DIR TARGET SECOND: USR1 at a seeded step, SECOND once the .tmp of its checkpoint
# exists plus a seeded delay; to the ranks (as Slurm and srun deliver signals) or to mpirun
sig_pair() {
  local d=$1 target=$2 second=$3 step every=0
  rm -rf "$d"
  # mpirun SIGKILLs its ranks a second after a TERM: a checkpoint that takes longer is lost,
  # so that run has older ones to fall back to
  [ "$target" = mpirun ] && every=2
  setsid mpirun --oversubscribe -np 2 "$BIN/memtrain" "${BIG[@]}" --steps=20 --ckpt_every=$every \
    --run_dir="$d" >"$TMP/sig.out" 2>&1 &
  local pid=$!
  rand 1 5; step=$r
  for _ in $(seq 1200); do grep -q "^step $step/" "$TMP/sig.out" 2>/dev/null && break; sleep 0.05; done
  # mpirun's run signals only once a complete checkpoint exists to fall back to
  if [ "$target" = mpirun ]; then
    for _ in $(seq 1200); do [ -e "$d/ckpt/LATEST" ] && break; sleep 0.05; done
  fi
  local victims=$pid
  [ "$target" = ranks ] && victims=$(ranks_of "$d")
  # shellcheck disable=SC2086
  kill -USR1 $victims
  for _ in $(seq 600); do ls "$d/ckpt/"*.tmp >/dev/null 2>&1 && break; sleep 0.01; done
  rand 0 9; sleep "0.0$r"
  for s in $second; do
    [ "$target" = ranks ] && victims=$(ranks_of "$d")
    # shellcheck disable=SC2086
    kill -"$s" $victims 2>/dev/null || true
    sleep 0.05
  done
  status=0; wait "$pid" || status=$?
  cp "$TMP/sig.out" "$TMP/out"
}
for second in TERM "INT TERM"; do
  d=$TMP/sig-ranks; sig_pair "$d" ranks "$second"
  no_crash "USR1 then $second to the ranks"
  [ "$status" -eq 75 ] || { cat "$TMP/out"; fail "USR1 then $second to the ranks: exit $status, expected 75"; }
  grep -q "stopped by a signal after step" "$TMP/out" || { cat "$TMP/out"; fail "no stop message"; }
  resume_exact "$d" "$TMP/refB" 20 "after USR1 then $second"
  pass "USR1 then $second to the ranks during the checkpoint write: exit 75, resumed at step $resumed_at bit for bit"
done
# HUP to one rank, and USR2 to mpirun (which forwards it), between log lines: a stop like the
# others (75, a checkpoint), and the steps since the last log line get their line and metrics
# row (the summary's train ppl was nan); USR2 used to end every rank at once, with no word
for sig in HUP USR2; do
  d=$TMP/stop-$sig
  setsid mpirun --oversubscribe -np 2 "$BIN/memtrain" "${SMALL[@]}" --steps=100000 --log_every=100000 \
    --ckpt_every=0 --run_dir="$d" >"$TMP/out" 2>&1 &
  pid=$!
  for _ in $(seq 600); do [ -n "$(ranks_of "$d")" ] && grep -q '^model:' "$TMP/out" && break; sleep 0.05; done
  sleep 1
  if [ "$sig" = HUP ]; then kill -HUP "$(ranks_of "$d" | tail -n 1)"; else kill -USR2 "$pid"; fi
  status=0; wait "$pid" || status=$?
  at=$(sed -n 's/^memtrain: stopped by a signal after step \([0-9]*\);.*/\1/p' "$TMP/out")
  [ "$status" -eq 75 ] && [ -n "$at" ] && [ "$(tail -n 1 "$d/metrics.csv" | cut -d, -f1)" = "$at" ] \
    && grep -q "^step $at/100000 " "$TMP/out" && grep -q "^summary: steps 1-$at of .*train ppl [0-9]" "$TMP/out" \
    && [ -e "$d/ckpt/ckpt-$(printf %08d "$at").h5" ] || { cat "$TMP/out" "$d/metrics.csv"; fail "$sig: exit $status"; }
done
pass "HUP to one rank, USR2 to mpirun: exit 75, a checkpoint, the step logged and in metrics.csv, the summary's train ppl a number"

# mpirun itself, signalled: it ends the job and exits 1 whatever the ranks return (see README,
# "Signals and exit status"); the ranks finish a checkpoint they write and are gone within
# seconds, and the newest complete checkpoint resumes bit for bit
for second in TERM "INT INT"; do
  d=$TMP/sig-mpirun; sig_pair "$d" mpirun "$second"
  no_crash "USR1 then $second to mpirun"
  [ "$status" -eq 1 ] || { cat "$TMP/out"; fail "USR1 then $second to mpirun: mpirun exited $status (README says 1)"; }
  for _ in $(seq 50); do [ -z "$(ranks_of "$d")" ] && break; sleep 0.1; done
  [ -z "$(ranks_of "$d")" ] || fail "USR1 then $second to mpirun: ranks left running"
  ls "$d/ckpt/"ckpt-*.h5 >/dev/null 2>&1 || { cat "$TMP/out"; fail "no checkpoint after USR1 then $second to mpirun"; }
  resume_exact "$d" "$TMP/refB" 20 "after USR1 then $second to mpirun"
  pass "USR1 then $second to mpirun: mpirun exits 1 (documented), no rank left, resumed at step $resumed_at bit for bit"
done

# the Slurm script outside Slurm: TERM to its shell (as sbatch --signal=B:TERM or scancel
# --batch send it) reaches the ranks; when mpirun then dies after they wrote their checkpoint
# (Open MPI's launcher can crash on a second TERM), the script still ends with 75
d=$TMP/sbatch
RUN_DIR=$d MEMTRAIN=$BIN/memtrain setsid bash jobs/train.sbatch jobs/configs/memformer.conf "${SMALL[@]:2}" \
  --streams=4 --steps=400 --ckpt_every=0 >"$TMP/sb.out" 2>&1 &
pid=$!
rand 2 6; step=$r
for _ in $(seq 1500); do grep -q "^step $step/" "$TMP/sb.out" 2>/dev/null && break; sleep 0.01; done
kill -TERM "$pid"; sleep 0.05; kill -TERM "$pid"
for _ in $(seq 1500); do grep -q "stopped by a signal after step" "$TMP/sb.out" && break; sleep 0.01; done
pkill -9 -P "$pid" -x mpirun 2>/dev/null || true
status=0; wait "$pid" || status=$?
cp "$TMP/sb.out" "$TMP/out"
no_crash "TERM to the Slurm script"
[ "$status" -eq 75 ] || { cat "$TMP/out"; fail "TERM to the Slurm script, mpirun killed after the checkpoint: exit $status, expected 75"; }
[ -e "$d/ckpt/LATEST" ] || fail "TERM to the Slurm script: no checkpoint"
how=$(grep -o 'mpirun exited [0-9]* after the ranks wrote' "$TMP/out" || echo "mpirun had exited 75 itself")
pass "TERM twice to the Slurm script, mpirun killed after the ranks' checkpoint: exit 75 ($(cat "$d/ckpt/LATEST"); $how)"

# TERM to the ranks while they load the data: no step, nothing written, status 75. The data is
# 400 MB of tokens, so that the load is under way (a rank past 150 MB resident) when it comes
head -c 400M /dev/zero >"$TMP/big.u16"
d=$TMP/sigload; rm -rf "$d"
setsid mpirun --oversubscribe -np 2 "$BIN/memtrain" "${SMALL[@]}" --data=u16:"$TMP/big.u16":256 \
  --steps=20 --ckpt_every=0 --run_dir="$d" >"$TMP/sig.out" 2>&1 &
pid=$!
loading=0
for _ in $(seq 3000); do
  for v in $(ranks_of "$d"); do
    [ "$(awk '/^VmRSS/ {print $2}' "/proc/$v/status" 2>/dev/null || echo 0)" -gt 150000 ] && loading=1
  done
  [ "$loading" -eq 1 ] && break; sleep 0.005
done
victims=$(ranks_of "$d")
[ "$loading" -eq 1 ] && [ -n "$victims" ] || { cat "$TMP/sig.out"; fail "TERM while loading: no rank seen loading"; }
# shellcheck disable=SC2086
kill -TERM $victims
status=0; wait "$pid" || status=$?
rm -f "$TMP/big.u16"
cp "$TMP/sig.out" "$TMP/out"
no_crash "TERM while loading"
[ "$status" -eq 75 ] && [ ! -e "$d" ] \
  && grep -q "^memtrain: stopped by a signal while loading the data, before the first step: nothing was written$" "$TMP/out" \
  || { cat "$TMP/out"; ls -R "$d" 2>&1 | head; fail "TERM while loading the data: exit $status, expected 75 and no run directory"; }
pass "TERM to the ranks while they load the data: stopped before the first step, nothing written, exit 75"

echo "($SECONDS s)"
# ---- 7. the run lock, and a killed launcher with a resume racing it ----
d=$TMP/live
setsid mpirun --oversubscribe -np 2 "$BIN/memtrain" "${BIG[@]}" --steps=20 --ckpt_every=1 \
  --run_dir="$d" >"$TMP/live.out" 2>&1 &
pid=$!
for _ in $(seq 600); do [ -e "$d/ckpt/LATEST" ] && break; sleep 0.05; done
expect_error 2 "run_dir $d is in use by another memtrain run (memtrain pid" --resume "$d"
rand 0 10; sleep "$r"e-1
kill -0 "$pid" 2>/dev/null && [ "$(cat "$d/ckpt/LATEST")" != ckpt-00000020.h5 ] \
  || fail "the run ended before its launcher could be killed: nothing tested"
kill -9 "$pid"   # mpirun alone: its ranks lose their launcher
t0=$(date +%s%N)
# a resume starts at once, racing the orphaned ranks: refused by name while any of them lives
timeout -k 5 120 mpirun --oversubscribe -np 2 "$BIN/memtrain" --resume "$d" --steps=20 --ckpt_every=0 \
  >"$TMP/race.out" 2>&1 &
rpid=$!
gone=""
for _ in $(seq 200); do [ -z "$(ranks_of "$d")" ] && { gone=$(( ($(date +%s%N) - t0) / 1000000 )); break; }; sleep 0.02; done
[ -n "$gone" ] || fail "ranks still running 4 s after their launcher was killed"
status=0; wait "$rpid" || status=$?
cp "$TMP/race.out" "$TMP/out"
no_crash "resume racing a killed launcher"
attempts=1
if [ "$status" -ne 0 ]; then
  one_error "run_dir $d is in use by another memtrain run" "resume racing orphaned ranks"
  raced="refused while they lived, then"
  attempts=2
  mt 2 --resume "$d" --steps=20 --ckpt_every=0
  [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "resume after the orphans ended: exit $status"; }
else
  raced="not refused (they were gone first), and"
fi
k=$(sed -n 's/^resumed from .* at step \([0-9]*\) .*/\1/p' "$TMP/out")
[ -n "$k" ] || { cat "$TMP/out"; fail "no 'resumed from' line"; }
cmp <(losses "$TMP/refB" | awk -v k="$k" '$1 > k') <(losses "$d" | tail -n $(( 20 - k ))) \
  || fail "resume after a killed launcher is not bit for bit"
pass "launcher killed: ranks gone within ${gone} ms; the racing resume was $raced continued from step $k bit for bit"

# a killed launcher during a run checkpointing every other step: no new step and no new
# checkpoint once it is gone (the step under way ends, a checkpoint under way completes)
d=$TMP/orphan
setsid mpirun --oversubscribe -np 2 "$BIN/memtrain" "${SMALL[@]}" --streams=4 --steps=400 --ckpt_every=2 \
  --run_dir="$d" >"$TMP/orphan.out" 2>&1 &
pid=$!
rand 4 10; step=$r
for _ in $(seq 1500); do grep -q "^step $step/" "$TMP/orphan.out" 2>/dev/null && break; sleep 0.01; done
rand 0 9; sleep "0.0$r"
kill -9 "$pid"
# counted once the launcher is gone (reaped: its ranks have a new parent), not when the
# signal is sent: a step of this model is shorter than the launcher's exit
wait "$pid" 2>/dev/null || true
ck0=$(find "$d/ckpt" -name 'ckpt-*.h5' | wc -l); row0=$(tail -n 1 "$d/metrics.csv" | cut -d, -f1)
for _ in $(seq 200); do [ -z "$(ranks_of "$d")" ] && break; sleep 0.02; done
[ -z "$(ranks_of "$d")" ] || fail "orphaned ranks still running 4 s after their launcher was killed"
ck1=$(find "$d/ckpt" -name 'ckpt-*.h5' | wc -l); row1=$(tail -n 1 "$d/metrics.csv" | cut -d, -f1)
! ls "$d/ckpt/"*.tmp >/dev/null 2>&1 || fail "launcher killed: a .tmp was left"
[ "$ck1" -le $(( ck0 + 1 )) ] && [ "$row1" -le $(( row0 + 1 )) ] \
  || fail "launcher killed at step $row0 with $ck0 checkpoints: the ranks went on to step $row1 and $ck1 checkpoints"
pass "launcher killed at step $row0: the ranks stopped at step $row1 with $ck1 checkpoints (had $ck0)"

# ---- a stop signal during validation ----
# the pass over all 10,000 validation images of the whole dataset (not this test's small copy)
# takes this model about 40 s here; a stop ends it at its next segment, and the checkpoint of
# the step follows at once (it waited for the pass)
d=$TMP/evalstop
MEMTRAIN_FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist \
  mpirun -q --oversubscribe -np 2 "$BIN/memtrain" "${SMALL[@]}" --steps=50 --eval_every=3 --eval_docs=0 \
  --run_dir="$d" >"$TMP/out" 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q '^step 2/' "$TMP/out" 2>/dev/null && break; sleep 0.05; done
sleep 1
kill -USR1 "$pid"
status=0; timeout 15 tail --pid="$pid" -f /dev/null || fail "a stop during validation waited 15 s or more for the pass"
wait "$pid" || status=$?
[ "$status" -eq 75 ] && grep -q '^memtrain: stopped by a signal after step 3;' "$TMP/out" \
  && [ -e "$d/ckpt/ckpt-00000003.h5" ] && ! grep -q '^step 3/.*val ppl' "$TMP/out" \
  || { cat "$TMP/out"; fail "a stop during validation: exit $status"; }
pass "a stop signal during a validation pass: the pass ends at its next segment, exit 75, the step's checkpoint"

# ---- a run directory removed while the run goes on ----
# the run stops at the next step with one line and writes nothing more: a checkpoint would
# have made the directory anew, and a second run on the path would have shared it
d=$TMP/removed
# (no checkpoint while it runs: one being written as the directory goes fails on its own, with
# a line of its own)
mpirun -q --oversubscribe -np 2 "$BIN/memtrain" "${SMALL[@]}" --steps=100000 --ckpt_every=0 --log_every=1 \
  --run_dir="$d" >"$TMP/out" 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q '^step 2/' "$TMP/out" 2>/dev/null && break; sleep 0.05; done
rm -rf "$d"
status=0; timeout 60 tail --pid="$pid" -f /dev/null || fail "the run went on 60 s after its run_dir was removed"
wait "$pid" || status=$?
one_error "run_dir $d was removed or moved while the run went on \(its LOCK file is not there\): stopping after step [0-9]+, writing nothing more$" "run_dir removed"
[ "$status" -eq 2 ] && [ ! -e "$d" ] || { cat "$TMP/out"; ls -R "$d" 2>&1 | head; fail "run_dir removed: exit $status, or the directory made anew"; }
pass "a run_dir removed while the run goes on: one line, exit 2, nothing written after"

# ---- an address-space limit (ulimit -v) on one rank ----
# too small for the run: the memory check counts what is mapped already and refuses in one
# line; a little more: the run may pass the check and then fail to map its stores, which ends
# the job with one line and status 2 (it hung in OpenBLAS's allocator, or aborted with a core
# dump's report). Either way: one memtrain line, status 2, no rank left.
printf '#!/bin/bash\nulimit -v "$LIMKB"\nexec "$@"\n' >"$TMP/limited.sh"; chmod +x "$TMP/limited.sh"
# (AddressSanitizer reserves terabytes of address space: no such limit can be set under it)
[[ $BIN == *address* ]] && kbs=() || kbs=(450000 700000)
for kb in "${kbs[@]}"; do
  d=$TMP/aslimit-$kb; rm -rf "$d"
  status=0
  timeout 120 mpirun -q --oversubscribe -np 1 "$BIN/memtrain" "${SMALL[@]}" --d_model=128 --steps=3 --run_dir="$d" \
    : -np 1 -x LIMKB=$kb "$TMP/limited.sh" "$BIN/memtrain" "${SMALL[@]}" --d_model=128 --steps=3 --run_dir="$d" \
    >"$TMP/out" 2>&1 || status=$?
  n=$(grep -cE "^memtrain: (memory: this run needs about .* \(the address-space limit, ulimit -v, of .* mapped before the run's own memory\)|out of memory allocating .*ulimit -v, is used up\))" "$TMP/out" || true)
  ! grep -qE 'internal check failed|Segmentation fault|signal 11|signal 6|HDF5-DIAG|^HDF5:' "$TMP/out" \
    || { cat "$TMP/out"; fail "ulimit -v $kb on one rank: crashed or aborted"; }
  [ "$status" -eq 2 ] && [ "$n" -eq 1 ] && [ -z "$(ranks_of "$d")" ] \
    || { cat "$TMP/out"; fail "ulimit -v $kb on one rank: exit $status, $n lines"; }
  [ "$kb" -ne 450000 ] || grep -q 'address-space limit' "$TMP/out" || fail "ulimit -v $kb: not refused by the memory check"
done
pass "an address-space limit on one rank: refused by the memory check, or one out-of-memory line; status 2 either way"
echo "test_faults: all passed (seed $seed)"
