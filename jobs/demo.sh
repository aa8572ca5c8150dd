#!/usr/bin/env bash
# make demo: trains a small Memformer with hashed projections on Fashion-MNIST with mpirun and
# prints perplexity as it goes (a few minutes on a 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
NP=${NP:-1}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
exec mpirun --oversubscribe -np "$NP" "$BIN/memtrain" train --config jobs/configs/demo.conf "$@"
