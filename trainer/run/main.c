/* memtrain command line: train (from scratch or --resume), eval and sample from checkpoints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "comm/comm.h"
#include "io/ckpt.h"
#include "layers/common.h"
#include "trainer/run/checkpoint.h"
#include "trainer/config/config.h"
#include "trainer/run/generate.h"
#include "trainer/run/plan_report.h"
#include "trainer/run/train.h"
#include "trainer/run/watchdog.h"

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
            "(image data) or prints a continuation of the prompt (text data); inspect prints a\n"
            "checkpoint's run id, configuration, arrays and parameter counts; plan prints how the\n"
            "table groups would be served on P ranks and the predicted traffic and memory per rank,\n"
            "without training. `memtrain COMMAND --help` lists a command's own options. Options\n"
            "take --key=value or --key value, with '-' or '_'.\n\n");
    trainer_config_help(f);
}

/* Each command's own options, with their defaults. */
static void usage_command(FILE *f, const char *cmd) {
    if (strcmp(cmd, "eval") == 0)
        fprintf(f,
                "usage: mpirun -np P memtrain eval --ckpt FILE [--key=value ...]\n\n"
                "Prints the validation perplexity of a checkpoint, with the configuration stored in it.\n"
                "  --ckpt FILE            the checkpoint (required)\n"
                "  --eval_segments=N      segments per stream (default: the checkpoint's; 0: every\n"
                "                         validation document)\n"
                "  --data=SPEC, --val_data=SPEC, --streams=N   evaluate on other data or streams\n"
                "Keys that change the model's shape (d_model, ...) are refused.\n");
    else if (strcmp(cmd, "sample") == 0)
        fprintf(f,
                "usage: mpirun -np P memtrain sample --ckpt FILE [options]\n\n"
                "Samples from a checkpoint's model; every rank count gives the same samples.\n"
                "  --ckpt FILE            the checkpoint (required)\n"
                "  --temperature T        softmax temperature, 0 = argmax (default 1)\n"
                "  --top-k K              draw among the K most likely tokens, 0 = all (default 0)\n"
                "  --top-p P              nucleus: the fewest tokens holding P of the mass (default 1)\n"
                "  --seed N               the random stream (default: the checkpoint's seed)\n"
                "images (data = fashion-mnist):\n"
                "  --count N              images, 1..65536 (default 16)\n"
                "  --scale S              screen pixels per image pixel, 1..32 (default 4)\n"
                "  --out FILE.png         the grid (default: samples.png beside the checkpoint's run,\n"
                "                         that is CKPT/../../samples.png, numbered samples-2.png, ...\n"
                "                         when it exists; an existing --out is refused)\n"
                "text (every other data):\n"
                "  --prompt TEXT          the start of the text (default 'The ')\n"
                "  --length N             bytes to generate, 1..10000000 (default 400)\n"
                "Options of the other kind of data are refused. Every option takes --opt VALUE or\n"
                "--opt=VALUE, with '-' or '_'.\n");
    else if (strcmp(cmd, "inspect") == 0)
        fprintf(f,
                "usage: memtrain inspect --ckpt FILE\n\n"
                "Prints a checkpoint's run id, step, configuration, every stored array with its shape,\n"
                "the parameter counts (dense and table), and a few stored values to compare with other\n"
                "readers (h5py).\n");
    else if (strcmp(cmd, "plan") == 0)
        fprintf(f,
                "usage: memtrain plan --ranks P[,P...] [--per-rank-streams N] [--csv] [--config FILE]\n"
                "                     [--key=value ...]\n\n"
                "Prints how the table groups would be served on P ranks, the predicted traffic, the\n"
                "table state and the total memory per rank, without training.\n"
                "  --ranks P[,P...]       rank counts (required)\n"
                "  --per-rank-streams N   streams = N x P in blocks of N (default: the config's streams\n"
                "                         and stream_block)\n"
                "  --csv                  one CSV row per rank count\n");
    else
        fprintf(f,
                "usage: mpirun -np P memtrain [train] [--config FILE] [--key=value ...]\n"
                "       mpirun -np P memtrain [train] --resume RUN_DIR [--key=value ...]\n\n"
                "Trains from the config file and overrides (every key below), or continues the run in\n"
                "RUN_DIR from its newest valid checkpoint with the configuration stored in it (shape\n"
                "keys cannot change). A resumed run that is already at its last step prints 'nothing to\n"
                "do' and exits 0. --init_from=CKPT starts a new run from a checkpoint's weights.\n"
                "Options take --key=value or --key value, with '-' or '_'.\n\n");
}

/* Value of a caller flag given as `--flag VALUE` or `--flag=VALUE` in argv[1..argc), '-' and
 * '_' alike. */
static const char *flag_value(int argc, char **argv, const char *flag) {
    size_t n = strlen(flag);
    for (int i = 1; i < argc; i++) {
        if (!trainer_config_flag_matches(argv[i], flag)) continue;
        if (argv[i][n] == '=') return argv[i] + n + 1;
        return i + 1 < argc ? argv[i + 1] : ""; /* "": no value */
    }
    return NULL;
}

/* The command word of argv (the first of train, eval, ...), "train" when none. */
static const char *command_word(int argc, char **argv) {
    static const char *const words[] = {"train", "eval", "sample", "inspect", "plan", NULL};
    for (int i = 1; i < argc; i++)
        for (int k = 0; words[k]; k++)
            if (strcmp(argv[i], words[k]) == 0) return words[k];
    return "train";
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            const char *cmd = command_word(argc, argv);
            if (strcmp(cmd, "train") == 0 && i > 1 && strcmp(argv[1], "train") == 0) {
                usage_command(stdout, cmd);
                trainer_config_help(stdout);
            } else if (strcmp(cmd, "train") != 0) {
                usage_command(stdout, cmd);
            } else {
                usage(stdout);
            }
            return 0;
        }
    /* `srun memtrain` without PMI support: Open MPI would fail in MPI_Init with its own
       message, so say how to launch before it is called (once, from task 0) */
    const char *slurm_tasks = getenv("SLURM_NTASKS"), *slurm_step = getenv("SLURM_STEP_ID");
    if (slurm_tasks && atoi(slurm_tasks) > 1 && slurm_step && !getenv("OMPI_COMM_WORLD_SIZE") &&
        !getenv("PMIX_RANK") && !getenv("PMI_RANK") && !getenv("PMI_FD") &&
        (!getenv("SLURM_MPI_TYPE") || strcmp(getenv("SLURM_MPI_TYPE"), "none") == 0)) {
        const char *procid = getenv("SLURM_PROCID");
        if (!procid || atoi(procid) == 0)
            fprintf(stderr,
                    "memtrain: started by srun as %s tasks without MPI support: launch with "
                    "'mpirun memtrain ...' inside the allocation (or 'srun --mpi=pmix memtrain ...')\n",
                    slurm_tasks);
        return 2;
    }
    trainer_watchdog_start(); /* before MPI: it reads the launcher's environment */
    comm_ctx *comm = comm_init(&argc, &argv);
    char err[512] = "", path[1100] = "";
    int failed = 0;
    static const char *const mine[] = {"--resume", "--ckpt", "--out", "--prompt", "--count",
                                       "--length", "--temperature", "--top-k", "--top-p",
                                       "--scale", "--ranks",
                                       "--per-rank-streams", "--csv", "--help", NULL};
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
        int *left = layer_xcalloc((size_t)argc + 1, sizeof(int));
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
    /* eval, sample and inspect read the stored arrays: the shape must stay (other data or
       streams are fine: evaluation starts fresh streams) */
    if (!failed && ckpt && strcmp(cmd, "train") != 0 && strcmp(cmd, "plan") != 0) {
        char diff[400];
        trainer_config base = stored;
        memcpy(base.data, cfg.data, sizeof(base.data));
        base.streams = cfg.streams;
        if (trainer_config_diff_shape(&base, &cfg, diff, sizeof(diff)) > 0) {
            snprintf(err, sizeof(err), "cannot %s %.200s: the model's shape would change: %.250s",
                     cmd, ckpt, diff);
            failed = 1;
        }
    }
    static char out_path[1200];
    if (!failed && strcmp(cmd, "sample") == 0) {
        /* options of the other kind of data are refused, not ignored */
        int image = strcmp(cfg.data, "fashion-mnist") == 0;
        const char *wrong = image ? (so.prompt ? "--prompt" : sa.length ? "--length" : NULL)
                                  : (sa.count ? "--count" : sa.scale ? "--scale" : so.out ? "--out" : NULL);
        if (wrong) {
            snprintf(err, sizeof(err), "%s does not apply to a checkpoint of %s data (data = %.200s): "
                     "%s", wrong, image ? "image" : "text", cfg.data,
                     image ? "--count, --scale and --out do" : "--prompt and --length do, and the "
                     "text goes to stdout");
            failed = 1;
        } else if (image && so.out) {
            struct stat sb;
            if (stat(so.out, &sb) == 0) {
                snprintf(err, sizeof(err), "--out %.300s exists: choose another file or remove it",
                         so.out);
                failed = 1;
            }
        } else if (image) {
            /* beside the checkpoint's run: CKPT/../../samples.png, numbered when it exists */
            char dir[1100];
            snprintf(dir, sizeof(dir), "%s", ckpt);
            char *slash = strrchr(dir, '/');
            if (!slash) snprintf(dir, sizeof(dir), "..");       /* ckpt-N.h5 */
            else if (slash == dir) snprintf(dir, sizeof(dir), "/");
            else {
                *slash = '\0';                                    /* runs/a/ckpt */
                slash = strrchr(dir, '/');
                if (!slash) snprintf(dir, sizeof(dir), ".");    /* ckpt */
                else if (slash == dir) dir[1] = '\0';
                else *slash = '\0';                               /* runs/a */
            }
            struct stat sb;
            snprintf(out_path, sizeof(out_path), "%s/samples.png", dir);
            for (int k = 2; stat(out_path, &sb) == 0 && k < 100000; k++)
                snprintf(out_path, sizeof(out_path), "%s/samples-%d.png", dir, k);
            so.out = out_path;
        }
    }
    char changed[400] = ""; /* settings a resume changes: printed when it trains */
    if (!failed && resume) {
        char diff[400];
        if (trainer_config_diff_shape(&stored, &cfg, diff, sizeof(diff)) > 0) {
            snprintf(err, sizeof(err), "cannot resume %s: the model's shape would change: %s", path, diff);
            failed = 1;
        } else if (stored.shuffle != cfg.shuffle ||
                   (cfg.shuffle && stored.data_seed != cfg.data_seed)) {
            /* the cursors count places in the checkpoint's document order */
            snprintf(err, sizeof(err), "cannot resume %s: its streams read documents %s (data_seed "
                     "%lld); keep shuffle and data_seed as they were", path,
                     stored.shuffle ? "shuffled" : "in file order", (long long)stored.data_seed);
            failed = 1;
        } else if (comm_rank(comm) == 0) {
            trainer_config_diff_other(&stored, &cfg, changed, sizeof(changed));
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
    /* a finished run resumed: say so and leave everything as it is */
    if (resume && strcmp(cmd, "train") == 0) {
        int64_t at = 0;
        io_ckpt *ck = io_ckpt_open(comm, path, err, sizeof(err));
        failed = !ck || io_ckpt_get_attr_i64(ck, "step", &at, err, sizeof(err)) != 0;
        io_ckpt_close(ck);
        if (comm_any_failed(comm, failed, err, sizeof(err))) comm_exit_error(comm, err);
        int64_t end = cfg.stop_after > at ? cfg.stop_after : cfg.steps;
        if (at >= end) {
            /* the newest checkpoint may not load (corrupt): the step is the one that does */
            char id[TRAINER_RUN_ID_LEN + 1] = "";
            int64_t have = trainer_run_id_read(resume, id) == 0;
            comm_broadcast(comm, &have, sizeof(have), 0);
            comm_broadcast(comm, id, sizeof(id), 0);
            trainer_model_spec spec;
            trainer_spec_from_config(&spec, &cfg);
            trainer_model *m = trainer_model_create(&spec, comm);
            failed = trainer_ckpt_resume(comm, resume, have ? id : NULL, &cfg, m, NULL, &at, path,
                                         sizeof(path), err, sizeof(err)) != 0;
            trainer_model_free(m);
            if (comm_any_failed(comm, failed, err, sizeof(err))) comm_exit_error(comm, err);
            end = cfg.stop_after > at ? cfg.stop_after : cfg.steps;
        }
        if (at >= end) {
            if (comm_rank(comm) == 0) {
                char shown[2200];
                printf("memtrain: nothing to do: the run is at step %lld of %lld (%s); raise "
                       "--steps to train on\n", (long long)at, (long long)cfg.steps,
                       comm_escape(shown, sizeof(shown), path));
                fflush(stdout);
            }
            comm_finalize(comm);
            return 0;
        }
    }
    if (changed[0]) printf("resume: changed settings: %s\n", changed);
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
