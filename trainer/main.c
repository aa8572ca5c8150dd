/* memtrain command line: train (from scratch or --resume), eval and sample from checkpoints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/generate.h"
#include "trainer/plan_report.h"
#include "trainer/train.h"
#include "trainer/watchdog.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: mpirun -np P memtrain [train] [--config FILE] [--key=value ...]\n"
            "       mpirun -np P memtrain [train] --resume RUN_DIR [--key=value ...]\n"
            "       mpirun -np P memtrain eval --ckpt FILE [--key=value ...]\n"
            "       mpirun -np P memtrain sample --ckpt FILE [--out FILE.png] [--prompt TEXT]\n"
            "                                    [--count N] [--length N] [--temperature T]\n"
            "                                    [--top-k K] [--top-p P] [--scale S]\n"
            "       mpirun -np P memtrain inspect --ckpt FILE\n"
            "       memtrain plan --ranks P[,P...] [--per-rank-streams N] [--csv] [--key=value ...]\n"
            "       memtrain --help\n\n"
            "Trains a decoder or Memformer, with dense or hash-table projections, over MPI.\n"
            "A config file holds `key = value` lines; --key=value overrides it. --resume continues\n"
            "from the newest valid checkpoint in RUN_DIR/ckpt with the configuration stored in it\n"
            "(plus any overrides: keys that change the model's shape are refused). eval prints the\n"
            "validation perplexity of a checkpoint; sample writes a PNG grid of generated images\n"
            "(image data) or prints a continuation of the prompt (text data); inspect prints a few stored\n"
            "values (step, a table row, a carried memory) to compare with other readers; plan\n"
            "prints how the table groups would be served on P ranks and the predicted traffic\n"
            "and memory per rank, without training.\n\n");
    trainer_config_help(f);
}

/* Value of a caller flag given as `--flag VALUE` or `--flag=VALUE` in argv[1..argc). */
static const char *flag_value(int argc, char **argv, const char *flag) {
    size_t n = strlen(flag);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], flag) == 0) return i + 1 < argc ? argv[i + 1] : ""; /* "": no value */
        if (strncmp(argv[i], flag, n) == 0 && argv[i][n] == '=') return argv[i] + n + 1;
    }
    return NULL;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
    trainer_watchdog_start(); /* before MPI: it reads the launcher's environment */
    comm_ctx *comm = comm_init(&argc, &argv);
    char err[512] = "", path[1100] = "";
    int failed = 0;
    static const char *const mine[] = {"--resume", "--ckpt", "--out", "--prompt", "--count",
                                       "--length", "--temperature", "--top-k", "--top-p",
                                       "--scale", "--ranks",
                                       "--per-rank-streams", "--csv", NULL};
    /* the flags the config parser leaves to us, found before it reorders argv */
    const char *resume = flag_value(argc, argv, "--resume");
    const char *ckpt = flag_value(argc, argv, "--ckpt");
    trainer_sample_options so = {.out = flag_value(argc, argv, "--out"),
                                 .prompt = flag_value(argc, argv, "--prompt")};
    trainer_sample_args sa = {
        .count = flag_value(argc, argv, "--count"), .length = flag_value(argc, argv, "--length"),
        .temperature = flag_value(argc, argv, "--temperature"),
        .top_k = flag_value(argc, argv, "--top-k"), .top_p = flag_value(argc, argv, "--top-p"),
        .scale = flag_value(argc, argv, "--scale")};

    /* a flag last on the line, or given as --flag=, has no value: never a silent default */
    const char *given[3] = {resume, ckpt, so.out};
    const char *names[3] = {"--resume RUN_DIR", "--ckpt FILE", "--out FILE"};
    for (int i = 0; i < 3 && !failed; i++)
        if (given[i] && !given[i][0]) {
            snprintf(err, sizeof(err), "%.*s has no value: write %s", (int)strcspn(names[i], " "),
                     names[i], names[i]);
            failed = 1;
        }

    /* the base configuration: defaults, or what the checkpoint was trained with */
    trainer_config cfg, stored;
    trainer_config_defaults(&cfg);
    if (!failed && (resume || ckpt)) {
        int rc = resume ? trainer_ckpt_peek_config(comm, resume, &cfg, path, sizeof(path), err, sizeof(err))
                        : trainer_ckpt_read_config(comm, ckpt, &cfg, err, sizeof(err));
        failed = rc != 0;
        /* a resumed run goes on writing where it was found, unless told otherwise */
        if (!failed && resume) snprintf(cfg.run_dir, sizeof(cfg.run_dir), "%s", resume);
    }
    stored = cfg;
    int first = argc;
    if (!failed)
        failed = trainer_config_parse_args(&cfg, argc, argv, mine, &first, err, sizeof(err)) != 0 ||
                 trainer_config_validate(&cfg, err, sizeof(err)) != 0;
    const char *cmd = "train";
    if (!failed) {
        /* what remains after the config parser: the command and our flags with their values */
        int *left = calloc((size_t)argc + 1, sizeof(int));
        for (int i = first; i < argc; i++) {
            if (strcmp(argv[i], "--csv") == 0) {
                left[i] = 1;
            } else if (strncmp(argv[i], "--", 2) == 0 && strchr(argv[i], '=') == NULL) {
                left[i] = left[i + 1 < argc ? i + 1 : i] = 1; /* flag and its value */
                i++;
            } else if (strncmp(argv[i], "--", 2) == 0) {
                left[i] = 1;
            }
        }
        for (int i = first; i < argc && !failed; i++) {
            if (left[i]) continue;
            if (strcmp(argv[i], "train") == 0 || strcmp(argv[i], "eval") == 0 ||
                strcmp(argv[i], "sample") == 0 || strcmp(argv[i], "inspect") == 0 ||
                strcmp(argv[i], "plan") == 0) {
                cmd = argv[i];
            } else {
                snprintf(err, sizeof(err),
                         "unexpected argument '%s' (commands: train, eval, sample, inspect, plan; options are "
                         "--key=value; see memtrain --help)", argv[i]);
                failed = 1;
            }
        }
        free(left);
    }
    int ranks[64], nranks = 0;
    if (!failed && strcmp(cmd, "plan") == 0) {
        const char *list = flag_value(argc, argv, "--ranks");
        for (const char *p = list; p && *p && nranks < 64;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p || v < 1 || v > 1 << 20 || (*end && *end != ',')) {
                nranks = -1;
                break;
            }
            ranks[nranks++] = (int)v;
            p = *end ? end + 1 : end;
        }
        if (nranks <= 0) {
            snprintf(err, sizeof(err), "memtrain plan needs --ranks P[,P...] (positive rank counts)");
            failed = 1;
        }
    }
    if (!failed)
        failed = trainer_sample_options_read(&so, cmd, &sa, err, sizeof(err)) != 0;
    if (!failed && strcmp(cmd, "train") != 0 && strcmp(cmd, "plan") != 0 && !ckpt) {
        snprintf(err, sizeof(err), "memtrain %s needs --ckpt FILE", cmd);
        failed = 1;
    }
    if (!failed && resume) {
        char diff[400];
        if (trainer_config_diff_shape(&stored, &cfg, diff, sizeof(diff)) > 0) {
            snprintf(err, sizeof(err), "cannot resume %s: the model's shape would change: %s", path, diff);
            failed = 1;
        } else if (comm_rank(comm) == 0 &&
                   trainer_config_diff_other(&stored, &cfg, diff, sizeof(diff)) > 0) {
            printf("resume: changed settings: %s\n", diff);
        }
    }
    if (!failed && ckpt && strcmp(cmd, "train") != 0 && strcmp(cmd, "plan") != 0) {
        /* eval, sample and inspect build the checkpoint's model: its shape keys hold, as on
           resume, except the streams and the data, which load no stored state here */
        trainer_config want = cfg;
        want.streams = stored.streams;
        memcpy(want.data, stored.data, sizeof want.data);
        char diff[400];
        if (trainer_config_diff_shape(&stored, &want, diff, sizeof(diff)) > 0) {
            snprintf(err, sizeof(err), "cannot %s %s: the model's shape would change: %s", cmd,
                     ckpt, diff);
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
    int rc;
    if (strcmp(cmd, "plan") == 0) {
        const char *pr = flag_value(argc, argv, "--per-rank-streams");
        int csv = 0;
        for (int i = 1; i < argc; i++) csv |= strcmp(argv[i], "--csv") == 0;
        rc = trainer_plan_report(comm, &cfg, ranks, nranks, pr ? atoi(pr) : 0, csv);
    } else if (strcmp(cmd, "eval") == 0)
        rc = trainer_eval_checkpoint(comm, &cfg, ckpt);
    else if (strcmp(cmd, "inspect") == 0)
        rc = trainer_inspect_checkpoint(comm, &cfg, ckpt);
    else if (strcmp(cmd, "sample") == 0)
        rc = trainer_sample_checkpoint(comm, &cfg, ckpt, &so);
    else
        rc = trainer_train(comm, &cfg, resume);
    comm_finalize(comm);
    return rc;
}
