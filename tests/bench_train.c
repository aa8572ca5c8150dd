/* Benchmark: training tokens/s of the four configurations at d_model = 256 on one rank, hash against dense. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "tests/testutil.h"
#include "trainer/config/config.h"
#include "trainer/engine/schedule.h"
#include "trainer/engine/step.h"
#include "trainer/run/train.h"
#include "trainer/run/blas.h"

#include <cblas.h>

typedef struct result {
    double tok_s, flops_tok, ms_step;
} result;

static result run_config(comm_ctx *comm, int memformer, int hash, int steps, int block) {
    trainer_config cfg;
    char err[256];
    trainer_config_defaults(&cfg);
    cfg.arch = memformer ? TRAINER_ARCH_MEMFORMER : TRAINER_ARCH_DECODER;
    cfg.proj = hash ? TRAINER_PROJ_HASH : TRAINER_PROJ_DENSE;
    cfg.d_model = 256;
    cfg.n_heads = 4;
    cfg.n_layers = 3; /* decoder: as many blocks as the Memformer's 1 encoder + 2 decoder layers */
    cfg.enc_layers = 1;
    cfg.dec_layers = 2;
    cfg.seg_len = 64;
    cfg.mem_slots = 16;
    cfg.horizon = 4;
    cfg.streams = 8;
    cfg.stream_block = block > 0 ? block : cfg.streams; /* one block: what one rank would choose */
    cfg.steps = steps + 2;
    cfg.warmup = 1;
    if (trainer_config_validate(&cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench config: %s\n", err);
        exit(1);
    }
    trainer_model_spec spec;
    trainer_spec_from_config(&spec, &cfg);
    trainer_model *m = trainer_model_create(&spec, comm);
    trainer_rollout *r = trainer_rollout_create(m, cfg.horizon, cfg.streams, TRAINER_ROLLOUT_MRBP);
    trainer_schedule sched = trainer_schedule_make(cfg.streams, cfg.stream_block, 1, 0);
    trainer_rollout_set_block(r, cfg.stream_block);
    trainer_schedule_attach(&sched, m);
    float *M = calloc((size_t)cfg.streams * trainer_model_memory_size(m) + 1, sizeof(float));
    layer_rng rng;
    tu_seed(&rng, "bench-train");
    double tokens = 0, secs = 0;
    for (int s = 0; s < steps + 2; s++) {
        tu_random_rollout(r, spec.vocab, &rng);
        trainer_step_info si;
        if (trainer_step(m, r, &sched, M, comm, &cfg, s, &si, err, sizeof(err)) != 0) {
            fprintf(stderr, "bench: %s\n", err);
            exit(1);
        }
        if (s >= 2) { /* the first steps warm caches and page in the tables */
            tokens += si.tokens;
            secs += trainer_timers_total(&si.time);
        }
    }
    result res = {tokens / secs, trainer_model_flops_per_token(m) * 2, 1000 * secs / steps};
    free(M);
    trainer_rollout_free(r);
    trainer_model_free(m);
    return res;
}

int main(int argc, char **argv) {
    trainer_blas_choose(argv); /* the kernels memtrain itself runs (trainer/run/blas.h) */
    comm_ctx *comm = comm_init(&argc, &argv);
    openblas_set_num_threads(1);
    int steps = argc > 1 ? atoi(argv[1]) : 6;
    const char *only = argc > 2 ? argv[2] : ""; /* e.g. decoder-hash */
    int block = argc > 3 ? atoi(argv[3]) : 0;   /* stream_block; 0: the default */
    const char *arch[2] = {"decoder", "memformer"}, *proj[2] = {"dense", "hash"};
    result res[2][2];
    printf("training throughput, one rank, one thread: d_model 256, 4 heads, 3 layers (memformer 1 enc + 2 dec),\n"
           "seg_len 64, 8 streams, horizon 4 (MRBP), vocab 256, %d timed steps each\n", steps);
    printf("%-10s %-6s %12s %10s %14s\n", "arch", "proj", "tokens/s", "ms/step", "MFLOP/token");
    for (int a = 0; a < 2; a++)
        for (int p = 0; p < 2; p++) {
            char name[32];
            snprintf(name, sizeof(name), "%s-%s", arch[a], proj[p]);
            if (*only && !strstr(name, only)) {
                res[a][p] = (result){0, 0, 0};
                continue;
            }
            res[a][p] = run_config(comm, a, p, steps, block);
            printf("%-10s %-6s %12.0f %10.1f %14.2f\n", arch[a], proj[p], res[a][p].tok_s,
                   res[a][p].ms_step, res[a][p].flops_tok / 1e6);
            fflush(stdout);
        }
    for (int a = 0; a < 2; a++) /* the ratio only where both ran */
        if (res[a][0].tok_s > 0 && res[a][1].tok_s > 0)
            printf("%s: hash/dense throughput %.2fx at %.2fx the FLOPs per token\n", arch[a],
                   res[a][1].tok_s / res[a][0].tok_s, res[a][1].flops_tok / res[a][0].flops_tok);
    comm_finalize(comm);
    return 0;
}
