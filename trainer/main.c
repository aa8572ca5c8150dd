/* memtrain command line: `memtrain [train] [--config FILE] [--key=value ...]`, `memtrain --help`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "trainer/config.h"
#include "trainer/train.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: mpirun -np P memtrain [train] [--config FILE] [--key=value ...]\n"
            "       memtrain --help\n\n"
            "Trains a decoder or Memformer, with dense or hash-table projections, over MPI.\n"
            "A config file holds `key = value` lines; --key=value overrides it.\n\n"
            "keys:\n");
    trainer_config_help(f);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
    comm_ctx *comm = comm_init(&argc, &argv);
    trainer_config cfg;
    char err[512] = "";
    int first = argc;
    static const char *const mine[] = {NULL};
    trainer_config_defaults(&cfg);
    int failed = trainer_config_parse_args(&cfg, argc, argv, mine, &first, err, sizeof(err)) != 0 ||
                 trainer_config_validate(&cfg, err, sizeof(err)) != 0;
    const char *cmd = "train";
    if (!failed && first < argc) {
        cmd = argv[first];
        if (strcmp(cmd, "train") != 0) {
            snprintf(err, sizeof(err), "unknown command '%s' (commands: train; see memtrain --help)", cmd);
            failed = 1;
        } else if (first + 1 < argc) {
            snprintf(err, sizeof(err), "unexpected argument '%s' (options are --key=value; see memtrain --help)",
                     argv[first + 1]);
            failed = 1;
        }
    }
    /* `srun memtrain` without MPI support starts N unrelated one-process jobs */
    const char *ntasks = getenv("SLURM_NTASKS");
    if (!failed && ntasks && atoi(ntasks) > 1 && comm_size(comm) == 1) {
        snprintf(err, sizeof(err),
                 "started as a single MPI process but Slurm allocated SLURM_NTASKS=%s tasks: launch "
                 "with 'mpirun memtrain ...' inside the allocation (or 'srun --mpi=pmix memtrain ...')",
                 ntasks);
        failed = 1;
    }
    /* every rank parsed the same command line, but agree anyway so no rank runs alone */
    if (comm_any_failed(comm, failed, err, sizeof(err))) comm_exit_error(comm, err);
    int rc = trainer_train(comm, &cfg);
    comm_finalize(comm);
    return rc;
}
