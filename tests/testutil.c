/* Random tensors, finite-difference gradient checks and the suite runner for the Check tests. */
#include "tests/testutil.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/engine/rollout.h"
#include "trainer/engine/schedule.h"

void tu_seed(layer_rng *r, const char *name) {
    uint64_t h = 1469598103934665603ull;
    for (const char *c = name; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
    layer_rng_seed(r, h);
}

float *tu_randn(layer_rng *r, size_t n, float std) {
    float *x = layer_xmalloc(n * sizeof(float));
    layer_fill_normal(x, n, std, r);
    return x;
}

float *tu_zeros(size_t n) { return layer_xcalloc(n, sizeof(float)); }

int tu_randint(layer_rng *r, int lo, int hi) {
    return lo + (int)(layer_rng_next(r) % (uint64_t)(hi - lo + 1));
}

double tu_gradcheck(tu_loss_fn loss, void *ctx, float *p, const float *g, int n, float eps,
                    double floor, int max_checks, layer_rng *r) {
    double worst = 0.0;
    int checks = n <= max_checks ? n : max_checks;
    for (int c = 0; c < checks; c++) {
        int i = n <= max_checks ? c : (int)(layer_rng_next(r) % (uint64_t)n);
        float keep = p[i];
        p[i] = keep + eps;
        double lp = loss(ctx);
        p[i] = keep - eps;
        double lm = loss(ctx);
        p[i] = keep;
        /* the actual step taken in float, not the nominal eps */
        double h = (double)(keep + eps) - (double)(keep - eps);
        double fd = (lp - lm) / h;
        double err = fabs(g[i] - fd) / fmax(fabs(g[i]) + fabs(fd), floor);
        if (err > worst) worst = err;
    }
    return worst;
}

double tu_max_relerr(const float *a, const float *b, size_t n, double floor) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)a[i] - b[i]) / fmax(fabs(a[i]) + fabs(b[i]), floor);
        if (err > worst) worst = err;
    }
    return worst;
}

double tu_dot(const float *w, const float *y, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)w[i] * y[i];
    return s;
}

int tu_run(Suite *s) {
    SRunner *sr = srunner_create(s);
    /* no fork: test programs may hold an MPI context, and MPI processes must not fork */
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

void tu_random_rollout(struct trainer_rollout *r, int vocab, layer_rng *rng) {
    size_t n = (size_t)r->T * r->B * r->L;
    for (size_t i = 0; i < n; i++) {
        r->enc[i] = tu_randint(rng, 0, vocab);
        r->dec[i] = tu_randint(rng, 0, vocab);
        r->tgt[i] = tu_randint(rng, 0, vocab - 1);
    }
    memset(r->reset, 0, (size_t)r->T * r->B);
    r->reset[0] = 1;
}

int tu_vm_flags(const void *p, char *flags, size_t n) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[512];
    int in = 0, found = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
        else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(flags, n, "%s", line + 8);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

int tu_run_mpi(Suite *s, comm_ctx *c) {
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* MPI processes must not fork */
    int rank = comm_rank(c);
    srunner_run_all(sr, rank == 0 ? CK_NORMAL : CK_SILENT);
    int failed = srunner_ntests_failed(sr);
    if (rank != 0 && failed) srunner_print(sr, CK_NORMAL);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

double tu_train_rollout(trainer_rollout *r, trainer_model *m, float *M, float grad_scale) {
    trainer_schedule s = trainer_schedule_make(r->B, r->block, 1, 0);
    trainer_schedule_attach(&s, m);
    double *block_loss = layer_xcalloc((size_t)s.nblocks, sizeof(double));
    trainer_schedule_train(&s, r, m, M, grad_scale, block_loss);
    if (s.nblocks > 1) trainer_params_unfold(trainer_model_params(m));
    double loss = 0.0;
    for (int b = 0; b < s.nblocks; b++) loss += block_loss[b];
    free(block_loss);
    return loss;
}
