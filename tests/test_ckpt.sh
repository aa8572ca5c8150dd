#!/usr/bin/env bash
# Checkpoints end to end: exact resume, resume on another rank count, fallback past corrupt or
# truncated files, kill -9 during writes, h5py reading what memtrain stored, eval and sample.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$TOP"

SMALL=(--config jobs/configs/memformer.conf --d_model=32 --seg_len=28 --streams=6 --stream_block=2 --horizon=2
       --deterministic=bitwise
       --steps=12 --warmup=2 --log_every=1 --eval_every=0 --ckpt_every=6 --keep_ckpts=0)

losses() { # run_dir -> "step loss" lines from metrics.csv (the loss printed in full)
  awk -F, 'NR > 1 {print $1, $2}' "$1/metrics.csv"
}

# A: 12 uninterrupted steps, checkpoints at 6 and 12
for np in 1 2 3; do
  mt "$np" "${SMALL[@]}" --run_dir="$TMP/A$np"
  [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "run A on $np ranks"; }
done
# the rank count does not change the result
cmp <(losses "$TMP/A1") <(losses "$TMP/A2") || fail "1 and 2 ranks disagree"
cmp <(losses "$TMP/A1") <(losses "$TMP/A3") || fail "1 and 3 ranks disagree"
pass "1, 2 and 3 ranks give bitwise identical losses"

# B: resume from A's step-6 checkpoint, on the same and on other rank counts
resume_from() { # from_np to_np
  local d=$TMP/B$1to$2
  mkdir -p "$d/ckpt"
  cp "$TMP/A$1/ckpt/ckpt-00000006.h5" "$d/ckpt/"
  mt "$2" --resume "$d"
  [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "resume $1 -> $2 ranks"; }
  grep -q "resumed from $d/ckpt/ckpt-00000006.h5 at step 6" "$TMP/out" || { cat "$TMP/out"; fail "resume did not say where from"; }
  cmp <(losses "$TMP/A$1" | sed -n '7,12p') <(losses "$d") \
    || { diff <(losses "$TMP/A$1" | sed -n '7,12p') <(losses "$d"); fail "resume $1 -> $2 ranks changed the losses"; }
  pass "resume $1 -> $2 ranks continues bitwise identically"
}
resume_from 1 1
resume_from 2 2
resume_from 2 3
resume_from 3 2

# a config that changes the model's shape is refused, naming the keys
d=$TMP/B2to2
expect_error 2 "d_model (32 -> 64)" --resume "$d" --d_model=64
mt 2 --resume "$d" --steps=14 --log_every=7
grep -q "^resume: changed settings: steps (12 -> 14), log_every (1 -> 7)$" "$TMP/out" || { cat "$TMP/out"; fail "harmless change not logged"; }
grep -A1 "^resumed from " "$d/train.log" | tail -n 1 | grep -q "^resume: changed settings: steps (12 -> 14), log_every (1 -> 7)$" \
  || { cat "$d/train.log"; fail "train.log lacks the changed settings after its resume line"; }
pass "harmless changes are logged"

# fallback: flip one byte inside a table dataset of the newest file, then truncate it
d=$TMP/C
mkdir -p "$d/ckpt"
cp "$TMP/A2/ckpt/ckpt-00000006.h5" "$TMP/A2/ckpt/ckpt-00000012.h5" "$d/ckpt/"
echo ckpt-00000012.h5 >"$d/ckpt/LATEST"
/usr/bin/python3 - "$d/ckpt/ckpt-00000012.h5" <<'PY'
import h5py, sys
path = sys.argv[1]
with h5py.File(path, "r") as f:
    ds = f["tables/dec0.ffn.ml2/out0/data"]
    off = ds.id.get_offset() + 4 * 1000
with open(path, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0x40]))
PY
damaged=$(sha256sum <"$d/ckpt/ckpt-00000012.h5")
mt 2 --resume "$d" --steps=12
grep -q "tables/dec0.ffn.ml2/out0/data slice 0 fails its checksum" "$TMP/out" || { cat "$TMP/out"; fail "flipped byte not detected"; }
grep -q "falling back to an older checkpoint" "$TMP/out" || fail "no fallback message"
grep -q "resumed from $d/ckpt/ckpt-00000006.h5" "$TMP/out" || fail "did not fall back to step 6"
pass "flipped byte detected by name, fell back to step 6"
# the skipped file is kept, set aside, and the run's own step 12 is a file of its own
grep -q "ckpt-00000012.h5: set aside as $d/ckpt/ckpt-00000012.h5.skipped" "$TMP/out" \
  || { cat "$TMP/out"; fail "skipped file not said to be set aside"; }
[ "$(sha256sum <"$d/ckpt/ckpt-00000012.h5.skipped")" = "$damaged" ] || fail "skipped file changed"
[ "$(sha256sum <"$d/ckpt/ckpt-00000012.h5")" != "$damaged" ] || fail "no new step 12 written"
pass "the skipped file kept as .skipped, the run's step 12 written beside it"
cp "$TMP/A2/ckpt/ckpt-00000012.h5" "$d/ckpt/"
truncate -s $(( $(stat -c %s "$d/ckpt/ckpt-00000012.h5") / 2 )) "$d/ckpt/ckpt-00000012.h5"
echo ckpt-00000012.h5 >"$d/ckpt/LATEST"
mt 2 --resume "$d" --steps=12
grep -q "ckpt-00000012.h5: not an HDF5 file or truncated" "$TMP/out" || { cat "$TMP/out"; fail "truncation not detected"; }
grep -q "resumed from $d/ckpt/ckpt-00000006.h5" "$TMP/out" || fail "did not fall back after truncation"
pass "truncated file detected, fell back to step 6"
# nothing valid at all: a clear error, non-zero exit
mkdir -p "$TMP/D/ckpt"
head -c 5000 "$TMP/A2/ckpt/ckpt-00000012.h5" >"$TMP/D/ckpt/ckpt-00000012.h5"
mt 1 --resume "$TMP/D"
[ "$status" -ne 0 ] && grep -q "not an HDF5 file" "$TMP/out" \
  || { cat "$TMP/out"; fail "resume with no valid checkpoint"; }
pass "no valid checkpoint: clear error"

# kill -9 while checkpoints are being written: a checkpoint every step of a model whose file
# takes a while to write; whatever the moment, the run dir keeps a loadable checkpoint
BIG=(--config jobs/configs/memformer.conf --d_model=128 --seg_len=16 --streams=2 --stream_block=1 --horizon=1
     --steps=100000 --warmup=1 --log_every=1 --eval_every=0 --ckpt_every=1 --keep_ckpts=2)
for delay in ${KILL_DELAYS:-0.05 0.2 0.4 0.7 1.1}; do
  d=$TMP/K$delay
  setsid mpirun --oversubscribe -np 2 "$BIN/memtrain" "${BIG[@]}" --run_dir="$d" >"$TMP/kill.out" 2>&1 &
  pid=$!
  # after the first checkpoint, at different moments of the next ones
  for _ in $(seq 600); do [ -e "$d/ckpt/LATEST" ] && break; sleep 0.1; done
  sleep "$delay"
  kill -9 -- "-$pid" 2>/dev/null || true
  pkill -9 -f "memtrain.*$d" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  ls "$d/ckpt/"ckpt-*.h5 >/dev/null 2>&1 || { cat "$TMP/kill.out"; fail "killed at ${delay}s: no checkpoint left"; }
  mt 2 --resume "$d" --steps=1 --ckpt_every=0
  [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "killed at ${delay}s: resume failed"; }
  pass "killed at ${delay}s ($(ls "$d/ckpt" | tr '\n' ' ')): $(grep -o 'resumed from .*' "$TMP/out")"
done

# h5py reads what memtrain stored, and the layout is what the README documents
f=$TMP/A2/ckpt/ckpt-00000012.h5
mt 2 inspect --ckpt "$f"
/usr/bin/python3 - "$f" "$TMP/out" <<'PY' || fail "h5py disagrees with memtrain inspect"
import h5py, re, sys, zlib
import numpy as np
path, printed = sys.argv[1], open(sys.argv[2]).read()
want = {}
for name, vals in re.findall(r"^([^\s\[]+)(?:\[0\])+\[0:4\] = (.*)$", printed, re.M):
    want[name] = [float(v) for v in vals.split()]
assert len(want) == 2, printed
with h5py.File(path, "r") as f:
    assert f.attrs["magic"] in (b"memtrain-checkpoint", "memtrain-checkpoint")
    assert int(f.attrs["step"]) == 12 and int(f.attrs["format_version"]) == 2
    assert "d_model = 32" in (f.attrs["config"].decode() if isinstance(f.attrs["config"], bytes) else f.attrs["config"])
    t = [k for k in want if k.startswith("tables/")][0]
    row = f[t][0][0][:4]
    mem = f["streams/memory"][0][:4]
    # %.9g round-trips a float32 exactly
    assert (row == np.array(want[t], dtype=np.float32)).all(), (row, want[t])
    assert (mem == np.array(want["streams/memory"], dtype=np.float32)).all(), (mem, want["streams/memory"])
    assert f["streams/memory"].shape == (6, 8 * 32)
    assert f["streams/cursor"].shape == (6, 2)
    ds = f[t]
    assert all(zlib.crc32(ds[i].tobytes()) == ds.attrs["crc32"][i] for i in range(ds.shape[0]))
    # every array of the file is listed with its shape (Adam's m and v go beside each data)
    unlisted = []
    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and name.rsplit("/", 1)[-1] not in ("m", "v"):
            if "%s (%s)" % (name, ", ".join(map(str, obj.shape))) not in printed:
                unlisted.append(name)
    f.visititems(visit)
    assert not unlisted, ("inspect does not list", unlisted)
print("h5py matches", t, "and streams/memory")
PY
h5dump -H "$f" >"$TMP/h5dump.txt"
grep -q 'DATASET "memory"' "$TMP/h5dump.txt" || fail "h5dump does not list streams/memory"
pass "h5py reads the table row and carried memory memtrain printed; h5dump lists the datasets"

# eval and sample from a checkpoint
mt 2 eval --ckpt "$f" --eval_docs=4
grep -q "validation perplexity [0-9]" "$TMP/out" || { cat "$TMP/out"; fail "eval"; }
mt 2 sample --ckpt "$f" --count 4 --scale 2 --out "$TMP/s.png"
/usr/bin/python3 -c "import sys; d=open('$TMP/s.png','rb').read(); sys.exit(0 if d[:8]==b'\x89PNG\r\n\x1a\n' and int.from_bytes(d[16:20],'big')==124 else 1)" \
  || { cat "$TMP/out"; fail "sample PNG"; }
pass "eval prints a perplexity; sample writes a 2x2 PNG grid"

# a resume over training data that changed since the checkpoint: refused in one line, the
# checkpoints left as they were (the cursors count places in the old documents)
for i in $(seq 40); do printf 'document %d, long enough for a few segments of sixteen bytes.\n\n' "$i"; done >"$TMP/mut.txt"
D=(--config jobs/configs/memformer.conf --d_model=32 --seg_len=16 --warmup=1 --eval_every=0
   --data=text:"$TMP/mut.txt" --val_data=text:"$TMP/mut.txt" --streams=4)
mt 2 "${D[@]}" --steps=6 --stop_after=2 --ckpt_every=1 --run_dir="$TMP/mut"
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "the run over mut.txt"; }
printf 'one more document\n\n' >>"$TMP/mut.txt"
before=$(ls "$TMP/mut/ckpt")
expect_error 2 "the training data changed since it was written" --resume "$TMP/mut"
[ "$(ls "$TMP/mut/ckpt")" = "$before" ] || fail "a resume over changed data set checkpoints aside"
! grep -q "falling back" "$TMP/out" || fail "changed data was taken for a damaged checkpoint"
head -c -19 "$TMP/mut.txt" >"$TMP/mut.back" && mv "$TMP/mut.back" "$TMP/mut.txt"
mt 2 --resume "$TMP/mut" --stop_after=3
[ "$status" -eq 0 ] || { cat "$TMP/out"; fail "the resume over the restored data"; }
pass "a resume over changed training data refused, nothing set aside; over the restored data it goes on"
echo "test_ckpt: all passed"
