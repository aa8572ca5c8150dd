/* Benchmark: the MemoryFormer memory layer against an OpenBLAS dense layer of the same shape, one thread. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "layers/hash.h"
#include "trainer/run/blas.h"

#define BENCH_REPS 15

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *randn(layer_rng *r, size_t n, float std) {
    float *x = layer_xmalloc(n * sizeof(float));
    layer_fill_normal(x, n, std, r);
    return x;
}

static double fmin2(double a, double b) { return a < b ? a : b; }

/* One shape: N tokens, d_in = K * tau inputs, d_out outputs. Times are the minimum over
 * BENCH_REPS repetitions, the memory and dense layers interleaved so both see the same noise. */
static void bench_shape(int N, int din_want, int dout, int tau) {
    /* d_in must be a multiple of tau: round down (tau = 10 gives d_in = 510, dense too). */
    const int K = din_want / tau, din = K * tau, R = K << tau;
    layer_rng rng;
    layer_rng_seed(&rng, 1234);
    size_t nx = (size_t)N * din, ny = (size_t)N * dout, nk = (size_t)N * K;
    size_t nr = layer_hash_store_floats(R, dout);
    float *x = randn(&rng, nx, 1.0f), *dy = randn(&rng, ny, 1.0f);
    /* row stores: random rows (the padding of a last partial tile too, which is never used) */
    float *rows = layer_hash_store_new(R, dout), *drows = layer_hash_store_new(R, dout);
    layer_fill_normal(rows, nr, 0.02f, &rng);
    float *b = randn(&rng, dout, 0.001f), *db = layer_xcalloc(dout, sizeof(float));
    float *y = layer_xmalloc(ny * sizeof(float)), *dx = layer_xcalloc(nx, sizeof(float));
    float *s = layer_xmalloc(nk * sizeof(float)), *gs = layer_xmalloc(nk * sizeof(float));
    int32_t *idx = layer_xmalloc(nk * sizeof(int32_t)), *rowid = layer_xmalloc(nk * sizeof(int32_t));
    /* dense layer: w (dout,din), dw (dout,din), out (N,dout), dinp (N,din) */
    float *w = randn(&rng, (size_t)dout * din, 0.02f), *dw = layer_xcalloc((size_t)dout * din, sizeof(float));
    float *out = layer_xmalloc(ny * sizeof(float)), *dinp = layer_xcalloc(nx, sizeof(float));

    double t_idx = 1e30, t_fwd = 1e30, t_bk = 1e30, t_sb = 1e30, t_df = 1e30, t_db = 1e30;
    for (int rep = 0; rep < BENCH_REPS; rep++) {
        double t0 = now();
        layer_hash_index(idx, s, x, N, K, tau, LAYER_SCORE_PROB, 1.0f);
        layer_hash_rowid_local(rowid, idx, N, K, tau);
        double t1 = now();
        layer_hash_forward(y, rowid, s, rows, b, N, K, R, dout);
        double t2 = now();
        memset(gs, 0, nk * sizeof(float));
        layer_hash_backward(drows, gs, db, dy, rowid, s, rows, N, K, R, dout);
        double t3 = now();
        layer_hash_score_backward(dx, gs, x, N, K, tau, LAYER_SCORE_PROB, 1.0f);
        double t4 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, dout, din, 1.0f, x, din, w, din,
                    0.0f, out, dout);
        double t5 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, din, dout, 1.0f, dy, dout, w,
                    din, 1.0f, dinp, din);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dout, din, N, 1.0f, dy, dout, x, din,
                    1.0f, dw, din);
        double t6 = now();
        t_idx = fmin2(t_idx, t1 - t0);
        t_fwd = fmin2(t_fwd, t2 - t1);
        t_bk = fmin2(t_bk, t3 - t2);
        t_sb = fmin2(t_sb, t4 - t3);
        t_df = fmin2(t_df, t5 - t4);
        t_db = fmin2(t_db, t6 - t5);
    }
    double mf = t_idx + t_fwd, mb = t_bk + t_sb, dt = t_df + t_db;
    double hits = (double)N * K, rowb = 4.0 * dout;
    /* Logical row traffic: forward reads a row per hit; backward reads it (for gs) and adds
     * into its gradient row. Table traffic: every distinct row once forward, and the row, its
     * gradient read and its gradient written backward. */
    int32_t *uniq = layer_xmalloc(nk * sizeof(int32_t));
    double nuniq = layer_hash_unique_rows(uniq, rowid, (int)nk, R);
    free(uniq);
    double fl_f = 2.0 * hits * dout, fl_b = 4.0 * hits * dout;
    printf("N=%d d_in=%d d_out=%d tau=%d (K=%d tables of %d rows, %.1f MiB of rows, %.0f%% rows hit)\n",
           N, din, dout, tau, K, 1 << tau, nr * 4.0 / (1 << 20), 100.0 * nuniq / R);
    printf("  memory layer: index %.2f ms + forward %.2f ms = %.2f ms; backward %.2f ms (rows/gs/db) + "
           "score %.2f ms = %.2f ms; total %.2f ms\n",
           1e3 * t_idx, 1e3 * t_fwd, 1e3 * mf, 1e3 * t_bk, 1e3 * t_sb, 1e3 * mb, 1e3 * (mf + mb));
    printf("  dense layer:  forward %.2f ms, backward %.2f ms, total %.2f ms (%.1f GFLOP/s)\n",
           1e3 * t_df, 1e3 * t_db, 1e3 * dt, 6.0 * N * din * dout / dt * 1e-9);
    printf("  ratio memory/dense: forward %.3f, backward %.3f, total %.3f\n", mf / t_df, mb / t_db,
           (mf + mb) / dt);
    printf("  memory kernels: forward %.1f GFLOP/s, %.1f GB/s per hit, %.1f GB/s of tables; "
           "backward %.1f GFLOP/s, %.1f GB/s per hit, %.1f GB/s of tables\n",
           fl_f / t_fwd * 1e-9, hits * rowb / t_fwd * 1e-9, nuniq * rowb / t_fwd * 1e-9,
           fl_b / t_bk * 1e-9, 2.0 * hits * rowb / t_bk * 1e-9, 3.0 * nuniq * rowb / t_bk * 1e-9);
    fflush(stdout);
    free(x); free(dy); layer_hash_store_free(rows); free(b); layer_hash_store_free(drows); free(db); free(y); free(dx); free(s);
    free(gs); free(idx); free(rowid); free(w); free(dw); free(out); free(dinp);
}

/* No arguments: the standard shapes. "N d_in d_out tau": that shape only. */
int main(int argc, char **argv) {
    trainer_blas_choose(argv); /* the kernels memtrain itself runs (trainer/run/blas.h) */
    openblas_set_num_threads(1);
    if (argc == 5) {
        bench_shape(atoi(argv[1]), atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
        return 0;
    }
    bench_shape(2048, 512, 512, 8);
    bench_shape(2048, 512, 512, 10);
    bench_shape(2048, 1024, 1024, 8);
    return 0;
}
