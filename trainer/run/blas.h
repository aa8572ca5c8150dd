/* Which of OpenBLAS's kernels a process runs, chosen once before anything else starts. */
#ifndef MEMTRAIN_TRAINER_BLAS_H
#define MEMTRAIN_TRAINER_BLAS_H

#include <stddef.h>

/* OpenBLAS picks its kernels from the CPU's model number when the library loads. A release
 * that does not know the model (Debian 12's 0.3.21 on Intel's Emerald Rapids, family 6 model
 * 207) falls back to its generic Prescott (SSE3) kernels, which ran the d_model 256 dense
 * decoder 3.8x slower than its SkylakeX ones on such a CPU. When OPENBLAS_CORETYPE is unset,
 * the library reports Prescott and the CPU has AVX-512 (F, CD, BW, DQ, VL: SkylakeX) or AVX2
 * with FMA (Haswell), this sets OPENBLAS_CORETYPE to that kernel family and re-executes the
 * program (/proc/self/exe, the same arguments) so the library loads with it; it returns
 * otherwise, also when the re-execution fails. A set OPENBLAS_CORETYPE is never touched.
 * Call it first in main, before MPI and before any thread starts. */
void trainer_blas_choose(char **argv);

/* One line for the run's start: the kernels OpenBLAS runs and who chose them, e.g.
 * "OpenBLAS 0.3.21, SkylakeX kernels (chosen by memtrain: the library does not know this CPU
 * and would run its generic Prescott ones; set OPENBLAS_CORETYPE to choose)". */
void trainer_blas_describe(char *out, int cap);

/* One small product through OpenBLAS, so that it maps its work buffer (128 MiB of address
 * space) now, while there is room, rather than in the first step: under an address-space
 * limit a mapping that fails makes the library retry for ever instead of failing. Returns 0,
 * or -1 with err set (and nothing called) when the limit leaves no room for the buffer. */
int trainer_blas_warm(char *err, size_t n);

#endif
