#!/usr/bin/env bash
# jobs/to_torch.py: a trained checkpoint converted to a PyTorch state_dict, loaded into the PyTorch module, gives memtrain eval's validation loss to 1e-5 relative (the printed perplexity rounds to about 1e-6), for the decoder and the Memformer, dense and hashed.
# Each case trains a tiny model (d_model 32) for 30 steps at a high learning rate on 1 or 2
# ranks, runs `memtrain eval` on its checkpoint on as many ranks, converts it and recomputes
# the loss in PyTorch over the same validation segments (30 segments of 32 tokens or, for the
# Memformer, 110 of 8 per stream: past the first image's end, so document starts, the BOS
# segment and the memory restart are in it). Short Memformer segments lean on the memory:
# the test also checks that dropping the memory writes or the forgetting bias moves the
# PyTorch loss by more than the tolerance, so the agreement covers them. The cases also vary what the model computes: rotary or learned
# positions, l1prob or prob scores with a temperature, bf16 rows, forgetting off, memory off,
# tau 4 without expanding bits, and a text file's whole validation split (eval_docs = 0).
# Two more cases check the gradient: PyTorch's autograd over the training rollout that
# follows a checkpoint (through the memory over the horizon, as MRBP) against the step
# memtrain took, recovered from the Adam moments of two consecutive checkpoints.
# Needs Debian's python3-torch (make test installs it).
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
$PY -c 'import torch, h5py' 2>/dev/null || fail "python3-torch and python3-h5py are needed (make test installs them)"
TOOL=$TOP/jobs/to_torch.py

# a text file of 12 documents (runs of blank lines, a form feed): the last validates
$PY - "$TMP/docs.txt" <<'EOF'
import random, sys
random.seed(3)
w = "memory table hash segment stream rank shard the a of to and in".split()
docs = [" ".join(random.choice(w) for _ in range(random.randint(20, 120))) for _ in range(12)]
open(sys.argv[1], "w").write("\n\n\n".join(docs[:6]) + "\f" + "\n\n\n".join(docs[6:]) + "\n")
EOF

BASE=(--d_model=32 --n_heads=2 --seg_len=32 --mem_slots=4 --streams=2 --stream_block=1
      --horizon=2 --steps=30 --warmup=2 --lr=0.01 --eval_every=0 --eval_docs=8 --shuffle=off
      --log_every=12 --ckpt_every=0)

# check NAME NP ARGS...: train, eval, convert, compare
check() {
  local name=$1 np=$2; shift 2
  mt "$np" "${BASE[@]}" --run_dir="$TMP/$name" "$@"
  [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "$name: training failed"; }
  local ck=$TMP/$name/ckpt/ckpt-00000030.h5
  mt "$np" eval --ckpt "$ck"
  [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "$name: memtrain eval failed"; }
  local ppl
  ppl=$(sed -n 's/.*validation perplexity \([0-9.]*\) .*/\1/p' "$TMP/out")
  [ -n "$ppl" ] || { cat "$TMP/out"; fail "$name: no perplexity from memtrain eval"; }
  $PY "$TOOL" "$ck" --out "$TMP/$name.pt" --eval >"$TMP/torch.out" 2>&1 ||
    { cat "$TMP/torch.out"; fail "$name: to_torch.py failed"; }
  local loss
  loss=$(sed -n 's/.*torch validation loss \([0-9.]*\) .*/\1/p' "$TMP/torch.out")
  [ -n "$loss" ] || { cat "$TMP/torch.out"; fail "$name: no loss from to_torch.py"; }
  $PY - "$ppl" "$loss" "$name" <<'EOF' || fail "$name: PyTorch loss does not match memtrain eval"
import math, sys
ppl, loss, name = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ref = math.log(ppl)
rel = abs(loss - ref) / ref
print("%s: memtrain eval loss %.6f (ppl %.4f), PyTorch %.6f, relative difference %.1e"
      % (name, ref, ppl, loss, rel))
# a model that learnt nothing scores about ln(vocab): the checkpoints must be trained ones
assert ref < math.log(256) - 0.5, "the model did not train"
sys.exit(0 if rel <= 1e-5 else 1)
EOF
  [ -s "$TMP/$name.conf" ] || fail "$name: no config written beside the state_dict"
  pass "$name on $np rank(s): PyTorch reproduces memtrain eval"
}

check decoder-dense 1 --arch=decoder --proj=dense
check decoder-hash 2 --arch=decoder --proj=hash --pos=learned --score=prob --hash_temp=0.5
MF=(--seg_len=8 --eval_docs=6)
check memformer-dense 2 --arch=memformer --proj=dense --rope_frac=0.25 "${MF[@]}"
check memformer-hash 1 --arch=memformer --proj=hash "${MF[@]}"
check memformer-hash-variants 2 --arch=memformer --proj=hash --row_format=bf16 --forgetting=off \
  --tau=4 --expand_bits=0 --n_heads=4 --write_temp=0.5 "${MF[@]}"
check memformer-nomemory-text 1 --arch=memformer --proj=dense --memory=off \
  --data="text:$TMP/docs.txt" --eval_docs=0 --streams=1

# check_grad NAME NP ARGS...: PyTorch's gradient of the rollout after step 10 against the step
# memtrain took (from the Adam moments of the checkpoints at steps 10 and 11; no clipping)
check_grad() {
  local name=$1 np=$2; shift 2
  mt "$np" "${BASE[@]}" --steps=11 --ckpt_every=10 --grad_clip=0 --run_dir="$TMP/$name" "$@"
  [ "$status" -eq 0 ] || { cat "$TMP/out"; fail "$name: training failed"; }
  local d=$TMP/$name/ckpt
  $PY "$TOOL" "$d/ckpt-00000010.h5" --no-save --grad "$d/ckpt-00000011.h5" >"$TMP/torch.out" 2>&1 ||
    { cat "$TMP/torch.out"; fail "$name: to_torch.py --grad failed"; }
  local worst
  worst=$(sed -n 's/.*gradient error at most \([0-9.e+-]*\) over.*/\1/p' "$TMP/torch.out")
  [ -n "$worst" ] || { cat "$TMP/torch.out"; fail "$name: no gradient comparison"; }
  $PY -c "import sys; sys.exit(0 if float('$worst') <= 1e-3 else 1)" ||
    { cat "$TMP/torch.out"; fail "$name: PyTorch gradient differs from memtrain's by $worst"; }
  pass "$name on $np rank(s): PyTorch's gradient matches memtrain's step (error $worst)"
}

check_grad grad-decoder-dense 1 --arch=decoder --proj=dense
check_grad grad-memformer-hash 2 --arch=memformer --proj=hash --horizon=3 "${MF[@]}"

# the state_dict: real shapes, loadable by the module with strict key matching
$PY - "$TMP" "$TOOL" <<'EOF' || fail "state_dict names or shapes"
import importlib.util, sys
import torch
tmp, tool = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("to_torch", tool)
tt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tt)
sd = torch.load(tmp + "/memformer-hash.pt")
want = {"wte.weight": (257, 32), "lm_head.weight": (256, 32), "writer.vbias": (4, 32),
        "dec.0.self.q.table": (4 * 256, 32), "dec.0.self.v.bias": (32,),
        "enc.0.reader.k.table": (4 * 256, 32), "enc.0.ffn.ml1.table": (4 * 256, 40),
        "enc.0.ffn.ml2.table": (4 * 1024, 32), "enc.0.ffn.ln.weight": (40,),
        "dec_norm.weight": (32,)}
for k, shape in want.items():
    assert tuple(sd[k].shape) == shape, (k, tuple(sd[k].shape), shape)
model = tt.MemtrainModel.from_config(open(tmp + "/memformer-hash.conf").read())
model.load_state_dict(sd)  # strict: every name matches
sd = torch.load(tmp + "/decoder-dense.pt")
for k, shape in {"dec.0.self.o.weight": (32, 32), "dec.1.ffn.fc1.weight": (128, 32),
                 "dec.1.ffn.fc2.bias": (32,)}.items():
    assert tuple(sd[k].shape) == shape, (k, tuple(sd[k].shape), shape)
print("state_dict names and shapes as documented")
# comments as memtrain reads them: '#' at a line's start or after white space; one inside a
# value (a data path) belongs to it
cfg = tt.parse_config("# a run\ndata = text:/d/notes#1.txt # mine\nlr = 0.01\t#x\nseed = 3#4\n")
assert cfg == {"data": "text:/d/notes#1.txt", "lr": "0.01", "seed": "3#4"}, cfg

# the agreement is worth something only if the memory's details move the loss beyond 1e-5
ckpt = tmp + "/memformer-hash/ckpt/ckpt-00000030.h5"
text, step, sd = tt.read_checkpoint(ckpt)
cfg = tt.parse_config(text)
docs = tt.load_validation_docs(cfg)
def loss(patch=None):
    m = tt.MemtrainModel.from_config(text)
    m.load_state_dict(sd)
    if patch:
        patch(m)
    return tt.validation_loss(m, cfg, docs)[0]
base = loss()
def no_writes(m):
    m.writer.forward = lambda M, E: M
def no_forgetting_bias(m):
    m.spec.forgetting = False
for patch in (no_writes, no_forgetting_bias):
    rel = abs(loss(patch) - base) / base
    print("%s moves the loss by %.1e relative" % (patch.__name__, rel))
    assert rel > 1e-5, patch.__name__
EOF
pass "state_dict names and shapes; the module loads it strictly; the memory matters beyond the tolerance"

# refusals: one line, exit 2, nothing written
status=0
/usr/bin/python3 "$TOOL" "$TMP/missing.h5" >"$TMP/r.out" 2>&1 || status=$?
[ "$status" -eq 2 ] && [ "$(wc -l <"$TMP/r.out")" -eq 1 ] && grep -q "^to_torch: $TMP/missing.h5: " "$TMP/r.out" \
  || { cat "$TMP/r.out"; fail "a missing checkpoint: not one line and exit 2"; }
/usr/bin/python3 -c "import h5py, sys; h5py.File(sys.argv[1], 'w')['x'] = [1]" "$TMP/other.h5"
status=0
/usr/bin/python3 "$TOOL" "$TMP/other.h5" --no-save --eval >"$TMP/r.out" 2>&1 || status=$?
[ "$status" -eq 2 ] && [ "$(cat "$TMP/r.out")" = "to_torch: $TMP/other.h5: not a memtrain checkpoint" ] \
  || { cat "$TMP/r.out"; fail "an HDF5 file that is no checkpoint: not one line and exit 2"; }
last=$(ls "$TMP"/*/ckpt/ckpt-*.h5 | tail -1)
cp "$last" "$TMP/v.h5"
status=0
/usr/bin/python3 "$TOOL" "$TMP/v.h5" --eval --val_data=text:/dev/null >"$TMP/r.out" 2>&1 || status=$?
[ "$status" -eq 2 ] && [ "$(wc -l <"$TMP/r.out")" -eq 1 ] && [ ! -e "$TMP/v.pt" ] \
  || { cat "$TMP/r.out"; fail "--eval with val_data: not one line before any write"; }
# an --out that is a file already, or whose .conf is, is refused and left as it was
cp "$last" "$TMP/keep.h5"
printf 'mine\n' >"$TMP/w.conf"
for o in "$TMP/keep.h5" "$TMP/w.pt"; do
  sum=$(cat "$TMP/keep.h5" "$TMP/w.conf" | sha256sum)
  status=0
  /usr/bin/python3 "$TOOL" "$TMP/v.h5" --out "$o" >"$TMP/r.out" 2>&1 || status=$?
  [ "$status" -eq 2 ] && [ "$(wc -l <"$TMP/r.out")" -eq 1 ] && grep -q "exists: choose another --out" "$TMP/r.out" \
    && [ "$(cat "$TMP/keep.h5" "$TMP/w.conf" | sha256sum)" = "$sum" ] && [ ! -e "$TMP/w.pt" ] \
    || { cat "$TMP/r.out"; fail "--out $o: an existing file not refused"; }
done
pass "to_torch refuses in one line (exit 2) before it writes anything, and never over a file"

# --no-save that leaves nothing to do, or with an --out it would not write
for args in "--no-save" "--no-save --eval --out=$TMP/n.pt"; do
  status=0
  # shellcheck disable=SC2086 # args is a list of options
  /usr/bin/python3 "$TOOL" "$TMP/v.h5" $args >"$TMP/r.out" 2>&1 || status=$?
  [ "$status" -eq 2 ] && [ "$(wc -l <"$TMP/r.out")" -eq 1 ] && grep -q "^to_torch: --no-save " "$TMP/r.out" \
    && [ ! -e "$TMP/v.pt" ] && [ ! -e "$TMP/n.pt" ] || { cat "$TMP/r.out"; fail "to_torch $args: not refused"; }
done

status=0
/usr/bin/python3 "$TOOL" "$TMP/v.h5" --d_model=64 >"$TMP/r.out" 2>&1 || status=$?
[ "$status" -eq 2 ] && [ "$(wc -l <"$TMP/r.out")" -eq 1 ] && grep -q "^to_torch: --d_model: " "$TMP/r.out" \
  || { cat "$TMP/r.out"; fail "a shape key: not one line and exit 2"; }

# a damaged or edited checkpoint is refused as memtrain refuses it, in one line, nothing written
mkfifo "$TMP/fifo.h5"
status=0
timeout 60 /usr/bin/python3 "$TOOL" "$TMP/fifo.h5" >"$TMP/r.out" 2>&1 || status=$?
[ "$status" -eq 2 ] && [ "$(cat "$TMP/r.out")" = "to_torch: $TMP/fifo.h5: not a regular file (a FIFO)" ] \
  || { cat "$TMP/r.out"; fail "a FIFO as the checkpoint: exit $status"; }
for e in "step:attribute step missing" "flip:dense/wte/data slice 0 fails its checksum" \
         "nan:dense/wte/data holds a NaN or infinite value" "nodense:no tensor for wte.weight" \
         "loop:cannot be read as a checkpoint" "config:attribute config fails its checksum" \
         "version:format_version 3" "stepstr:attribute step is not an integer" \
         "stepfloat:attribute step is not an integer" "f64:dense/wte/data has type float64, expected float32"; do
  what=${e%%:*} want=${e#*:}
  cp "$last" "$TMP/d-$what.h5"
  /usr/bin/python3 - "$TMP/d-$what.h5" "$what" <<'EOF' || fail "editing $what"
import h5py, sys, zlib, numpy as np
path, what = sys.argv[1:]
with h5py.File(path, "r+") as f:
    ds = f["dense/wte/data"]
    if what == "step":
        del f.attrs["step"]
    elif what in ("flip", "nan"):  # nan: under a checksum made anew
        row = ds[0]
        row[5] = row[5] + 1 if what == "flip" else np.nan
        ds[0] = row
        if what == "nan":
            crc = ds.attrs["crc32"]; crc[0] = zlib.crc32(ds[0].tobytes()); ds.attrs["crc32"] = crc
    elif what == "nodense":
        del f["dense"]
    elif what == "loop":
        del f["dense/wte/data"]
        f["dense/wte/data"] = h5py.SoftLink("/dense/wte/data")
    elif what == "config":
        f.attrs["config"] = f.attrs["config"].replace("d_model = ", "d_model = 1")
    elif what == "version":
        f.attrs["format_version"] = np.int64(3)
    elif what == "stepstr":  # as memtrain refuses them: an integer stored as text or a float
        f.attrs["step"] = str(int(f.attrs["step"]))
    elif what == "stepfloat":
        f.attrs["step"] = float(f.attrs["step"])
    elif what == "f64":  # the same values, their checksums made anew, in another type
        a, crc = ds[()].astype(np.float64), ds.attrs["crc32"]
        del f["dense/wte/data"]
        d = f.create_dataset("dense/wte/data", data=a)
        d.attrs["crc32"] = np.array([zlib.crc32(r.tobytes()) for r in a], dtype=crc.dtype)
EOF
  status=0
  /usr/bin/python3 "$TOOL" "$TMP/d-$what.h5" >"$TMP/r.out" 2>&1 || status=$?
  [ "$status" -eq 2 ] && [ "$(wc -l <"$TMP/r.out")" -eq 1 ] && grep -qF "$want" "$TMP/r.out" \
    && [ ! -e "$TMP/d-$what.pt" ] || { cat "$TMP/r.out"; fail "a checkpoint with $what: exit $status"; }
done
pass "a FIFO, a missing attribute, a failed checksum, a NaN, a missing group, a link loop, an edited config, a newer format, a step not an integer, float64 arrays: one line each"
