/* Helpers shared by the Check test programs: random tensors, finite-difference gradient checks. */
#ifndef MEMTRAIN_TESTS_TESTUTIL_H
#define MEMTRAIN_TESTS_TESTUTIL_H

#include <check.h>
#include <stdint.h>

#include "comm/comm.h"
#include "layers/common.h"

/* The test's RNG, seeded from the test name so every test is reproducible on its own. */
void tu_seed(layer_rng *r, const char *name);
/* Fresh (n) array of normal(0, std) values; free() it. */
float *tu_randn(layer_rng *r, size_t n, float std);
/* Fresh (n) array of zeros; free() it. */
float *tu_zeros(size_t n);
/* Random integer in [lo, hi]. */
int tu_randint(layer_rng *r, int lo, int hi);

/* A scalar loss of the current parameter values (double, so finite differences stay exact). */
typedef double (*tu_loss_fn)(void *ctx);

/* Central-difference check of the analytic gradient g (n) of loss(ctx) with respect to p (n):
 * for up to max_checks entries of p (all if n <= max_checks, else a random subset) compares
 * g[i] with (loss(p_i + eps) - loss(p_i - eps)) / 2eps and returns the largest
 *   |g - fd| / max(|g| + |fd|, floor).
 * p is restored afterwards. */
double tu_gradcheck(tu_loss_fn loss, void *ctx, float *p, const float *g, int n, float eps,
                    double floor, int max_checks, layer_rng *r);

/* Largest |a - b| / max(|a| + |b|, floor) over n entries. */
double tu_max_relerr(const float *a, const float *b, size_t n, double floor);

/* sum_i w[i] * y[i] in double: projects an output onto random weights to make a scalar loss. */
double tu_dot(const float *w, const float *y, size_t n);

/* Random inputs for every segment of a rollout (ids in [0,vocab], targets in [0,vocab)),
 * documents restarting in stream 0 at the first segment. */
struct trainer_rollout;
void tu_random_rollout(struct trainer_rollout *r, int vocab, layer_rng *rng);

/* One training pass of a rollout on this process through the production loop: a one-rank
 * schedule of the rollout's streams in its blocks (trainer_schedule_train), then, with
 * several blocks, their double sums back into the float gradients as trainer_step does after
 * its all-reduce. Returns the summed loss. For tests of a single process (comm of one rank). */
struct trainer_model;
double tu_train_rollout(struct trainer_rollout *r, struct trainer_model *m, float *M,
                        float grad_scale);

/* The VmFlags of the mapping of /proc/self/smaps that holds p, into flags (" hg": advised
 * as huge pages, " nh": advised against them). Returns 0, or -1 when no mapping holds p. */
int tu_vm_flags(const void *p, char *flags, size_t n);

/* Runs a suite without forking, prints Check's summary, returns the process exit code. */
int tu_run(Suite *s);
/* The same for a test program on every rank of c: rank 0 prints the summary, another rank
 * prints only when it saw a failure. */
int tu_run_mpi(Suite *s, comm_ctx *c);

#endif
