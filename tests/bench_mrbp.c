/* Benchmark: MRBP against full BPTT at horizon 16 on the same Memformer: peak resident memory and step time, side by side. */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cblas.h>

#include "comm/comm.h"
#include "tests/testutil.h"
#include "trainer/config/config.h"
#include "trainer/engine/schedule.h"
#include "trainer/engine/step.h"
#include "trainer/run/train.h"
#include "trainer/run/blas.h"

extern char **environ;

/* Peak resident set of this process in KiB (VmHWM). */
static long peak_rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmHWM:", 6) == 0) kib = atol(line + 6);
    if (f) fclose(f);
    return kib;
}

static void config_for(trainer_config *cfg, const char *proj, int full) {
    trainer_config_defaults(cfg);
    cfg->arch = TRAINER_ARCH_MEMFORMER;
    cfg->proj = strcmp(proj, "hash") == 0 ? TRAINER_PROJ_HASH : TRAINER_PROJ_DENSE;
    cfg->d_model = 256;
    cfg->n_heads = 4;
    cfg->enc_layers = 1;
    cfg->dec_layers = 2;
    cfg->seg_len = 128;
    cfg->mem_slots = 16;
    cfg->horizon = 16;
    cfg->streams = 4;
    cfg->bptt = full ? TRAINER_BPTT_FULL : TRAINER_BPTT_MRBP;
    cfg->warmup = 1;
}

/* Child: trains `steps` steps in one mode, prints "peak_kib ms_per_step activation_bytes". */
static int child(const char *proj, int full, int steps) {
    comm_ctx *comm = comm_init(NULL, NULL);
    openblas_set_num_threads(1);
    trainer_config cfg;
    char err[256];
    config_for(&cfg, proj, full);
    trainer_model_spec spec;
    trainer_spec_from_config(&spec, &cfg);
    trainer_model *m = trainer_model_create(&spec, comm);
    trainer_rollout *r = trainer_rollout_create(m, cfg.horizon, cfg.streams,
                                                full ? TRAINER_ROLLOUT_FULL : TRAINER_ROLLOUT_MRBP);
    cfg.stream_block = trainer_config_stream_block(&cfg, 1);
    trainer_schedule sched = trainer_schedule_make(cfg.streams, cfg.stream_block, 1, 0);
    trainer_rollout_set_block(r, cfg.stream_block);
    trainer_schedule_attach(&sched, m);
    float *M = calloc((size_t)cfg.streams * trainer_model_memory_size(m) + 1, sizeof(float));
    layer_rng rng;
    tu_seed(&rng, "bench-mrbp");
    double secs = 0;
    for (int s = 0; s < steps + 1; s++) {
        tu_random_rollout(r, 256, &rng);
        trainer_step_info si;
        if (trainer_step(m, r, &sched, M, comm, &cfg, s, &si, err, sizeof(err)) != 0) {
            fprintf(stderr, "bench: %s\n", err);
            return 1;
        }
        if (s > 0) secs += trainer_timers_total(&si.time);
    }
    printf("%ld %.3f %zu\n", peak_rss_kib(), 1000 * secs / steps, trainer_rollout_peak_bytes(r));
    fflush(stdout);
    free(M);
    trainer_rollout_free(r);
    trainer_model_free(m);
    comm_finalize(comm);
    return 0;
}

/* Runs this program as a child in one mode and reads its figures. */
static int measure(const char *self, const char *proj, int full, int steps, long *kib, double *ms,
                   double *act) {
    char sfull[8], ssteps[16], path[] = "/tmp/memtrain-bench-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    snprintf(sfull, sizeof(sfull), "%d", full);
    snprintf(ssteps, sizeof(ssteps), "%d", steps);
    char *args[] = {(char *)self, "--child", (char *)proj, sfull, ssteps, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd, 1);
    pid_t pid;
    int rc = posix_spawn(&pid, self, &fa, NULL, args, environ), status = 0;
    posix_spawn_file_actions_destroy(&fa);
    if (rc == 0) waitpid(pid, &status, 0);
    FILE *f = fopen(path, "r");
    int ok = rc == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 && f &&
             fscanf(f, "%ld %lf %lf", kib, ms, act) == 3;
    if (f) fclose(f);
    unlink(path);
    return ok ? 0 : -1;
}

int main(int argc, char **argv) {
    trainer_blas_choose(argv); /* the kernels memtrain itself runs (trainer/run/blas.h) */
    if (argc == 5 && strcmp(argv[1], "--child") == 0)
        return child(argv[2], atoi(argv[3]), atoi(argv[4]));
    int steps = argc > 1 ? atoi(argv[1]) : 3;
    printf("MRBP against full BPTT: memformer d_model 256, 1 enc + 2 dec layers, 16 slots, seg_len 128,\n"
           "4 streams, horizon 16, one rank, one thread; each mode in its own process, %d timed steps\n",
           steps);
    printf("%-6s %-5s %12s %12s %16s\n", "proj", "mode", "peak RSS MiB", "ms/step", "activations MiB");
    const char *projs[2] = {"dense", "hash"};
    for (int p = 0; p < 2; p++) {
        long kib[2];
        double ms[2], act[2];
        for (int full = 1; full >= 0; full--) {
            if (measure(argv[0], projs[p], full, steps, &kib[full], &ms[full], &act[full]) != 0) {
                fprintf(stderr, "bench_mrbp: child run failed\n");
                return 1;
            }
            printf("%-6s %-5s %12.1f %12.1f %16.1f\n", projs[p], full ? "full" : "mrbp",
                   kib[full] / 1024.0, ms[full], act[full] / 1048576.0);
            fflush(stdout);
        }
        printf("%s: MRBP/full peak memory %.2fx, activation memory %.2fx, speed %.2fx (step time %.2fx)\n",
               projs[p], (double)kib[0] / kib[1], act[0] / act[1], ms[1] / ms[0], ms[0] / ms[1]);
    }
    return 0;
}
