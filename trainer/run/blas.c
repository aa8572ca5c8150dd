/* OpenBLAS kernel choice for CPUs the library does not know (see blas.h). */
#define _DEFAULT_SOURCE /* setenv */
#include "trainer/run/blas.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "io/files.h"
#include "layers/common.h"

/* Set beside OPENBLAS_CORETYPE when memtrain chose it, so the re-executed process can say so. */
#define CHOSEN_ENV "MEMTRAIN_BLAS_CHOSEN"

/* The kernel family the CPU runs, or NULL when it has neither AVX2 with FMA nor more. */
static const char *cpu_family(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
}

void trainer_blas_choose(char **argv) {
    if (getenv("OPENBLAS_CORETYPE")) return;
    const char *core = openblas_get_corename();
    if (!core || strcmp(core, "Prescott") != 0) return;
    const char *family = cpu_family();
    if (!family) return;
    if (setenv("OPENBLAS_CORETYPE", family, 1) != 0 || setenv(CHOSEN_ENV, core, 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* no re-execution (no /proc, say): run on with the kernels the library chose */
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv(CHOSEN_ENV);
}

void trainer_blas_describe(char *out, int cap) {
    const char *config = openblas_get_config(), *core = openblas_get_corename();
    const char *ver = config && strncmp(config, "OpenBLAS ", 9) == 0 ? config + 9 : "";
    int n = (int)strcspn(ver, " ");
    const char *chosen = getenv(CHOSEN_ENV), *set = getenv("OPENBLAS_CORETYPE");
    if (chosen && set)
        snprintf(out, (size_t)cap,
                 "OpenBLAS %.*s, %s kernels (chosen by memtrain: the library does not know this "
                 "CPU and would run its generic %s ones; set OPENBLAS_CORETYPE to choose)",
                 n, ver, core ? core : "?", chosen);
    else if (set)
        snprintf(out, (size_t)cap, "OpenBLAS %.*s, %s kernels (OPENBLAS_CORETYPE=%s)", n, ver,
                 core ? core : "?", set);
    else
        snprintf(out, (size_t)cap, "OpenBLAS %.*s, %s kernels", n, ver, core ? core : "?");
}

/* Bytes the address-space limit leaves beside what is mapped, or -1 when there is no limit. */
static double address_space_left(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return -1;
    char buf[4096], why[64];
    double mapped = 0;
    if (io_read_small("/proc/self/status", buf, sizeof buf, why, sizeof why) > 0) {
        const char *p = strstr(buf, "VmSize:");
        if (p) mapped = strtod(p + 7, NULL) * 1024.0;
    }
    return (double)rl.rlim_cur - mapped;
}

int trainer_blas_warm(char *err, size_t n) {
    /* the work buffer (128 MiB on x86-64) and a little more for the product's operands */
    double left = address_space_left();
    if (left >= 0 && left < 160.0 * 1048576.0) {
        snprintf(err, n, "memory: the address-space limit (ulimit -v) leaves %.1f MiB beside what "
                 "is mapped at the start, less than OpenBLAS's 128 MiB work buffer: raise it",
                 left / 1048576.0);
        return -1;
    }
    /* large enough for the library's blocked path, which maps its work buffer */
    enum { N = 192 };
    float *a = layer_xcalloc((size_t)3 * N * N, sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, a + N * N, N,
                0.0f, a + 2 * N * N, N);
    free(a);
    return 0;
}
