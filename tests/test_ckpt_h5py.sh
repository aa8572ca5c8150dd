#!/usr/bin/env bash
# Standard tools read a memtrain checkpoint: h5py gets the arrays, attributes and per-slice crc32s, h5dump -H lists them.
# The checkpoint comes from check_ckpt's test_h5py_sample (see tests/check_ckpt.c for its values),
# written by 2 ranks so that the file is a real parallel-HDF5 product.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
PY=/usr/bin/python3

[ -x "$BIN/check_ckpt" ] || { echo "missing $BIN/check_ckpt: build it first (make all)"; exit 1; }
command -v h5dump >/dev/null || { echo "missing h5dump: install hdf5-tools"; exit 1; }
$PY -c 'import h5py' || { echo "missing h5py: install python3-h5py"; exit 1; }

tmp=$(mktemp -d /tmp/memtrain-h5py.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
ckpt=$tmp/sample.h5
if ! MEMTRAIN_CKPT_KEEP=$ckpt CK_RUN_CASE=h5py mpirun --oversubscribe -x MEMTRAIN_CKPT_KEEP \
    -x CK_RUN_CASE -np 2 "$BIN/check_ckpt" >"$tmp/log" 2>&1; then
  cat "$tmp/log"; exit 1
fi
[ -s "$ckpt" ] || { echo "check_ckpt did not leave $ckpt"; cat "$tmp/log"; exit 1; }

$PY - "$ckpt" <<'EOF'
import sys, zlib
import h5py
import numpy as np

f = h5py.File(sys.argv[1], "r")
a = f.attrs
def text(v):
    return v.decode() if isinstance(v, (bytes, np.bytes_)) else str(v)
assert text(a["magic"]) == "memtrain-checkpoint", a["magic"]
assert int(a["format_version"]) == 2, a["format_version"]
assert int(a["step"]) == 42, a["step"]
assert text(a["config"]) == "arch = memformer\nproj = hash\n", repr(a["config"])

w = f["dense/wte/data"]
assert w.dtype == np.float32 and w.shape == (3, 5), (w.dtype, w.shape)
want = (0.5 * np.arange(15, dtype=np.float32) - 1).reshape(3, 5)
assert np.array_equal(w[...], want), w[...]

c = f["streams/cursor"]
assert c.dtype == np.int64 and c.shape == (4, 2), (c.dtype, c.shape)
assert np.array_equal(c[...], np.arange(8, dtype=np.int64).reshape(4, 2) * 1000000007), c[...]

for ds in (w, c):
    crc = ds.attrs["crc32"]
    assert crc.dtype == np.uint32 and crc.shape == (ds.shape[0],), (crc.dtype, crc.shape)
    for i in range(ds.shape[0]):
        assert zlib.crc32(ds[i].tobytes()) == int(crc[i]), (ds.name, i)
print("h5py: arrays, attributes and checksums as expected")
EOF

header=$(h5dump -H "$ckpt")
for want in 'GROUP "dense"' 'DATASET "data"' 'DATASET "cursor"' 'ATTRIBUTE "crc32"' \
            'ATTRIBUTE "magic"' 'ATTRIBUTE "config"' 'H5T_IEEE_F32LE' 'H5T_STD_I64LE'; do
  grep -qF "$want" <<<"$header" || { echo "h5dump -H lacks $want:"; echo "$header"; exit 1; }
done
h5dump -a /magic "$ckpt" | grep -qF '"memtrain-checkpoint"' || { echo "h5dump: magic unreadable"; exit 1; }
echo "h5dump: header lists the datasets and attributes"
