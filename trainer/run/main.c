/* memtrain command line: train (from scratch or --resume), eval and sample from checkpoints. */
/* realpath(3) is XSI */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "comm/comm.h"
#include "io/ckpt.h"
#include "io/files.h"
#include "layers/common.h"
#include "trainer/run/blas.h"
#include "trainer/run/checkpoint.h"
#include "trainer/config/config.h"
#include "trainer/run/eval.h"
#include "trainer/run/inspect.h"
#include "trainer/run/sample.h"
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
                "  --eval_docs=N          the first N validation documents, whole (default: the\n"
                "                         checkpoint's; 0: every validation document)\n"
                "  --data=SPEC, --val_data=SPEC, --streams=N   evaluate on other data or streams\n"
                "  --data_dir=DIR         the directory make data fetched into (default: data)\n"
                "Keys that change the model's shape (d_model, ...) and keys of training (lr, steps,\n"
                "...) are refused.\n");
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
                "  --out FILE.png         the grid (default: samples.png in the checkpoint's run\n"
                "                         directory, RUN_DIR for RUN_DIR/ckpt/CKPT, else beside CKPT;\n"
                "                         numbered samples-2.png, ... when it exists; an existing --out\n"
                "                         is refused)\n"
                "text (every other data):\n"
                "  --prompt TEXT          the start of the text (default 'The ')\n"
                "  --length N             bytes to generate, 1..10000000 (default 400)\n"
                "Options of the other kind of data, --data, and keys of training are refused. Every\n"
                "option takes --opt VALUE or --opt=VALUE, with '-' or '_'.\n");
    else if (strcmp(cmd, "inspect") == 0)
        fprintf(f,
                "usage: memtrain inspect --ckpt FILE\n\n"
                "Prints a checkpoint's run id, step, configuration, every stored array with its shape,\n"
                "the parameter counts (dense and table), and a few stored values to compare with other\n"
                "readers (h5py). It prints the file as stored: --key=value overrides are refused.\n");
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

static const char no_value[] = ""; /* what a flag without a value holds */

/* Value of a caller flag given as `--flag VALUE` or `--flag=VALUE` in argv[1..argc), '-' and
 * '_' alike; the last when given twice; no_value when nothing follows it, or another option
 * does (`--prompt --seed 5`: a text that starts with -- is written --prompt=--seed). */
static const char *flag_value(int argc, char **argv, const char *flag) {
    size_t n = strlen(flag);
    const char *v = NULL;
    for (int i = 1; i < argc; i++) { /* the last one, as for config keys */
        if (!trainer_config_flag_matches(argv[i], flag)) continue;
        if (argv[i][n] == '=') v = argv[i] + n + 1;
        else v = i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0 ? argv[++i] : no_value;
    }
    return v;
}

/* Whether argument a is a flag whose value is the next argument ("--ckpt F"; --csv is a
 * switch, "--k=v" holds its own). */
static int flag_takes_next(const char *a) {
    return strncmp(a, "--", 2) == 0 && a[2] && !strchr(a, '=') && strcmp(a, "--csv") != 0 &&
           strcmp(a, "--help") != 0;
}

/* The command s names (train, eval, sample, inspect, plan), or NULL. */
static const char *command_of(const char *s) {
    static const char *const words[] = {"train", "eval", "sample", "inspect", "plan", NULL};
    for (int k = 0; words[k]; k++)
        if (strcmp(s, words[k]) == 0) return words[k];
    return NULL;
}

/* The command word of argv (the first of train, eval, ...), "train" when none. */
static const char *command_word(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (command_of(argv[i])) return command_of(argv[i]);
    return "train";
}

/* What the command line asks for, read in the phases main runs one after the other; every
 * phase that finds a mistake writes one line to err and returns -1. */
typedef struct cli {
    int argc;
    char **argv;
    const char *cmd;                 /* train, eval, sample, inspect, plan */
    const char *resume, *ckpt;       /* --resume RUN_DIR, --ckpt FILE */
    trainer_sample_options so;
    trainer_sample_args sa;
    trainer_config cfg;              /* the configuration the command runs with */
    trainer_config stored;           /* the checkpoint's, before the overrides */
    char path[1100];                 /* the checkpoint a resume starts from */
    char changed[400];               /* settings a resume changes: logged when it trains */
    char out_dir[1100];              /* where sample's grid goes by default */
    int ranks[64], nranks;           /* plan --ranks */
    int per_rank;                    /* plan --per-rank-streams, 0 when not given */
} cli;

/* --help anywhere: the help of the command it follows, once per job (rank 0 prints; every rank
 * was started with it, as the arguments agree). Returns 1 when it was asked for. */
static int print_help(int argc, char **argv, int rank) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 ||
            /* "--prompt -h": the value of the flag before it */
            (strcmp(argv[i], "-h") == 0 && !(i > 1 && flag_takes_next(argv[i - 1])))) {
            if (rank != 0) return 1;
            const char *cmd = command_word(argc, argv);
            if (strcmp(cmd, "train") == 0 && i > 1 && strcmp(argv[1], "train") == 0) {
                usage_command(stdout, cmd);
                trainer_config_help(stdout);
            } else if (strcmp(cmd, "train") != 0) {
                usage_command(stdout, cmd);
            } else {
                usage(stdout);
            }
            return 1;
        }
    return 0;
}

/* `srun memtrain` without PMI support: Open MPI would fail in MPI_Init with its own message,
 * so say how to launch before it is called (once, from task 0). Returns 1 when it said so. */
static int srun_without_pmi(void) {
    const char *tasks = getenv("SLURM_NTASKS"), *step = getenv("SLURM_STEP_ID");
    if (!tasks || atoi(tasks) <= 1 || !step || getenv("OMPI_COMM_WORLD_SIZE") ||
        getenv("PMIX_RANK") || getenv("PMI_RANK") || getenv("PMI_FD") ||
        (getenv("SLURM_MPI_TYPE") && strcmp(getenv("SLURM_MPI_TYPE"), "none") != 0))
        return 0;
    const char *procid = getenv("SLURM_PROCID");
    if (!procid || atoi(procid) == 0)
        fprintf(stderr,
                "memtrain: started by srun as %s tasks without MPI support: launch with "
                "'mpirun memtrain ...' inside the allocation (or 'srun --mpi=pmix memtrain ...')\n",
                tasks);
    return 1;
}

/* Each of our flags belongs to some commands: given to another, it would be ignored (a
 * --ckpt without eval trains a new run), so it is refused, naming the commands that take it. */
static int check_command_flags(const cli *c, const char *cmd, char *err, size_t n) {
    static const struct {
        const char *flag, *cmds;
    } own[] = {{"--resume", "train"},
               {"--ckpt", "eval sample inspect"},
               {"--out", "sample"},          {"--prompt", "sample"},
               {"--count", "sample"},        {"--length", "sample"},
               {"--temperature", "sample"},  {"--top-k", "sample"},
               {"--top-p", "sample"},        {"--scale", "sample"},
               {"--ranks", "plan"},          {"--per-rank-streams", "plan"},
               {"--csv", "plan"}};
    for (size_t k = 0; k < sizeof own / sizeof own[0]; k++) {
        if (!flag_value(c->argc, c->argv, own[k].flag)) continue;
        const char *p = own[k].cmds;
        size_t len = strlen(cmd);
        int ok = 0;
        while (*p && !ok) {
            size_t w = strcspn(p, " ");
            ok = w == len && strncmp(p, cmd, len) == 0;
            p += w + (p[w] == ' ');
        }
        if (!ok) {
            snprintf(err, n, "%s is not an option of %s (it belongs to: %s)", own[k].flag,
                     cmd, own[k].cmds);
            return -1;
        }
    }
    return 0;
}

/* The flags the config parser leaves to us, found before it reorders argv; a flag last on
 * the line, or given as --flag=, has no value: never a silent default. */
static int read_flags(cli *c, char *err, size_t n) {
    int argc = c->argc;
    char **argv = c->argv;
    c->resume = flag_value(argc, argv, "--resume");
    c->ckpt = flag_value(argc, argv, "--ckpt");
    c->so = (trainer_sample_options){.out = flag_value(argc, argv, "--out"),
                                     .prompt = flag_value(argc, argv, "--prompt")};
    c->sa = (trainer_sample_args){
        .count = flag_value(argc, argv, "--count"), .length = flag_value(argc, argv, "--length"),
        .temperature = flag_value(argc, argv, "--temperature"),
        .top_k = flag_value(argc, argv, "--top-k"), .top_p = flag_value(argc, argv, "--top-p"),
        .scale = flag_value(argc, argv, "--scale")};
    const char *given[4] = {c->resume, c->ckpt, c->so.out, c->so.prompt};
    const char *names[4] = {"--resume RUN_DIR", "--ckpt FILE", "--out FILE", "--prompt TEXT"};
    for (int i = 0; i < 4; i++) /* an empty prompt (--prompt= or "") starts from nothing */
        if (given[i] && (given[i] == no_value || (i < 3 && !given[i][0]))) {
            if (given[i] == no_value && i == 3) {
                snprintf(err, n, "--prompt has no value: write --prompt TEXT (or --prompt=TEXT "
                         "for a text that starts with --)");
                return -1;
            }
            snprintf(err, n, "%.*s has no value: write %s", (int)strcspn(names[i], " "), names[i],
                     names[i]);
            return -1;
        }
    /* one command word (a flag's value is not one), and only that command's flags; before
       anything opens the files the flags name */
    const char *cmd = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) { /* what follows would be left unread */
            snprintf(err, n, "unexpected argument '--': memtrain takes a command word and "
                     "--key=value options, and nothing after '--' (see memtrain --help)");
            return -1;
        }
        if (strncmp(argv[i], "--", 2) == 0) {
            i += flag_takes_next(argv[i]); /* and its value */
            continue;
        }
        const char *w = command_of(argv[i]);
        if (!w) continue;
        if (cmd) {
            snprintf(err, n, "two commands, '%s' and '%s': give one", cmd, argv[i]);
            return -1;
        }
        cmd = w;
    }
    return check_command_flags(c, cmd ? cmd : "train", err, n);
}

/* The base configuration (defaults, or what the checkpoint was trained with), then the
 * config file and the overrides; what the parser leaves is the command and our flags. */
static int read_config(cli *c, comm_ctx *comm, char *err, size_t n) {
    static const char *const mine[] = {"--resume", "--ckpt", "--out", "--prompt", "--count",
                                       "--length", "--temperature", "--top-k", "--top-p",
                                       "--scale", "--ranks",
                                       "--per-rank-streams", "--csv", "--help", NULL};
    trainer_config_defaults(&c->cfg);
    if (c->resume || c->ckpt) {
        int rc = c->resume ? trainer_ckpt_peek_config(comm, c->resume, &c->cfg, c->path,
                                                      sizeof(c->path), err, n)
                           : trainer_ckpt_read_config(comm, c->ckpt, &c->cfg, err, n);
        if (rc != 0) return -1;
        /* a resumed run goes on writing where it was found, unless told otherwise */
        if (c->resume) snprintf(c->cfg.run_dir, sizeof(c->cfg.run_dir), "%s", c->resume);
        /* stop_after ends one sitting: the next one runs to steps unless given its own (a
           stored 8 would otherwise refuse a resume with --steps=6) */
        c->cfg.stop_after = 0;
    }
    c->stored = c->cfg;
    int first = c->argc;
    if (trainer_config_parse_args(&c->cfg, c->argc, c->argv, mine, &first, err, n) != 0 ||
        trainer_config_validate(&c->cfg, err, n) != 0)
        return -1;
    /* what remains after the config parser: the command and our flags with their values */
    int argc = c->argc;
    char **argv = c->argv;
    int *left = layer_xcalloc((size_t)argc + 1, sizeof(int));
    for (int i = first; i < argc; i++) {
        if (flag_takes_next(argv[i])) {
            left[i] = left[i + 1 < argc ? i + 1 : i] = 1; /* flag and its value */
            i++;
        } else if (strncmp(argv[i], "--", 2) == 0 && argv[i][2]) { /* "--" is refused below */
            left[i] = 1;
        }
    }
    int rc = 0;
    c->cmd = "train";
    for (int i = first; i < argc && rc == 0; i++) {
        if ((trainer_config_flag_matches(argv[i], "--csv") ||
             trainer_config_flag_matches(argv[i], "--help")) && strchr(argv[i], '=')) {
            snprintf(err, n, "%.*s takes no value (it is a switch: write %.*s)",
                     (int)strcspn(argv[i], "="), argv[i], (int)strcspn(argv[i], "="), argv[i]);
            rc = -1;
            break;
        }
        if (left[i]) continue;
        if (command_of(argv[i])) {
            c->cmd = argv[i];
        } else {
            snprintf(err, n,
                     "unexpected argument '%s' (commands: train, eval, sample, inspect, plan; "
                     "options are --key=value; see memtrain --help)", argv[i]);
            rc = -1;
        }
    }
    free(left);
    return rc;
}

/* plan --ranks P[,P...] */
static int read_ranks(cli *c, char *err, size_t n) {
    const char *list = flag_value(c->argc, c->argv, "--ranks");
    c->nranks = 0;
    int bad = !list || !*list;
    for (const char *p = list; !bad && *p;) { /* digits, one comma between counts */
        char *end;
        errno = 0;
        long v = *p >= '0' && *p <= '9' ? strtol(p, &end, 10) : 0;
        bad = v < 1 || v > 1 << 20 || errno || (*end && *end != ',') || c->nranks == 64;
        if (bad) break;
        c->ranks[c->nranks++] = (int)v;
        p = end + (*end == ',');
        bad = *end == ',' && !*p;
    }
    if (bad) {
        char shown[80];
        if (list && *list)
            snprintf(err, n, "--ranks = %s: expected rank counts P[,P...] (up to 64, each "
                     "1..1048576)", comm_escape(shown, sizeof shown, list));
        else
            snprintf(err, n, "plan needs --ranks P[,P...] (up to 64 rank counts, each "
                     "1..1048576)");
        return -1;
    }
    const char *pr = flag_value(c->argc, c->argv, "--per-rank-streams");
    c->per_rank = 0;
    if (!pr) return 0;
    int maxp = 1;
    for (int i = 0; i < c->nranks; i++) maxp = c->ranks[i] > maxp ? c->ranks[i] : maxp;
    char *end;
    errno = 0;
    long v = strtol(pr, &end, 10);
    /* streams = N x P must stay within the streams key's range */
    if (end == pr || *end || errno || v < 1 || v > TRAINER_MAX_STREAMS / maxp) {
        char shown[80];
        snprintf(err, n, "--per-rank-streams = %s: expected an integer in 1..%d (streams = N x P "
                 "at most %d)", comm_escape(shown, sizeof shown, pr), TRAINER_MAX_STREAMS / maxp,
                 TRAINER_MAX_STREAMS);
        return -1;
    }
    c->per_rank = (int)v;
    return 0;
}

/* eval, sample and inspect read the stored arrays: they need --ckpt, and the shape must stay
 * (other data or streams are fine: evaluation starts fresh streams). */
static int check_ckpt_command(cli *c, char *err, size_t n) {
    if (!c->ckpt) {
        snprintf(err, n, "memtrain %s needs --ckpt FILE", c->cmd);
        return -1;
    }
    char diff[400];
    trainer_config base = c->stored;
    memcpy(base.data, c->cfg.data, sizeof(base.data));
    base.streams = c->cfg.streams;
    if (trainer_config_diff_shape(&base, &c->cfg, diff, sizeof(diff)) > 0) {
        snprintf(err, n, "cannot %s %.200s: the model's shape would change: %.250s", c->cmd,
                 c->ckpt, diff);
        return -1;
    }
    /* eval and sample use the model as stored: keys of training would change nothing (seed
       is sample's draw) */
    int sample = strcmp(c->cmd, "sample") == 0;
    const char *training = strcmp(c->cmd, "inspect") == 0 ? NULL
        : trainer_config_training_differs(&c->stored, &c->cfg, sample ? "seed" : NULL);
    if (training) {
        snprintf(err, n, "%s uses the checkpoint's model as it is: %s, set here other than the "
                 "checkpoint's, is a key of training and would change nothing", c->cmd, training);
        return -1;
    }
    /* inspect prints the configuration as stored: an override would be shown as if it were */
    if (strcmp(c->cmd, "inspect") == 0 &&
        (trainer_config_diff_shape(&c->stored, &c->cfg, diff, sizeof(diff)) > 0 ||
         trainer_config_diff_other(&c->stored, &c->cfg, diff, sizeof(diff)) > 0)) {
        snprintf(err, n, "inspect prints the checkpoint as it is stored: it takes no --key=value "
                 "(given: %.300s)", diff);
        return -1;
    }
    return 0;
}

/* Drops the last component of path in place: "a/b" -> "a", "b" -> ".", "/b" -> "/". */
static void cut_last(char *path) {
    char *slash = strrchr(path, '/');
    if (!slash) strcpy(path, ".");
    else if (slash == path) path[1] = '\0';
    else *slash = '\0';
}

/* sample: options of the other kind of data are refused, not ignored; an image grid never
 * overwrites a file, and by default lands beside the checkpoint's run
 * (run_dir/samples.png for run_dir/ckpt/CKPT, numbered when it exists; beside a checkpoint
 * kept outside a ckpt/ directory). */
static int check_sample(cli *c, char *err, size_t n) {
    /* what it draws (an image grid, or text) is what the model learned */
    if (strcmp(c->cfg.data, c->stored.data) != 0) {
        char stored[300];
        snprintf(err, n, "sample draws what the model was trained on (data = %s): --data does "
                 "not apply", comm_escape(stored, sizeof stored, c->stored.data));
        return -1;
    }
    int image = strcmp(c->cfg.data, "fashion-mnist") == 0;
    trainer_sample_options *so = &c->so;
    const trainer_sample_args *sa = &c->sa;
    const char *wrong = image ? (so->prompt ? "--prompt" : sa->length ? "--length" : NULL)
                              : (sa->count ? "--count" : sa->scale ? "--scale"
                                                       : so->out ? "--out" : NULL);
    struct stat sb;
    if (wrong) {
        snprintf(err, n, "%s does not apply to a checkpoint of %s data (data = %.200s): %s", wrong,
                 image ? "image" : "text", c->cfg.data,
                 image ? "--count, --scale and --out do"
                       : "--prompt and --length do, and the text goes to stdout");
        return -1;
    }
    if (!image) return 0;
    if (so->out) {
        if (strlen(so->out) >= 1100) {
            snprintf(err, n, "--out %.200s...: a path of %zu bytes, longer than the 1099 this "
                     "takes", so->out, strlen(so->out));
            return -1;
        }
        if (lstat(so->out, &sb) == 0) { /* a dangling symbolic link too: never followed */
            snprintf(err, n, "--out %.300s exists: choose another file or remove it", so->out);
            return -1;
        }
        /* its directory is checked now, not after minutes of drawing */
        char dir[1100];
        snprintf(dir, sizeof(dir), "%s", so->out);
        cut_last(dir);
        int there = stat(dir, &sb) == 0;
        char why[200];
        if (!there || !S_ISDIR(sb.st_mode) || access(dir, W_OK | X_OK) != 0) {
            snprintf(err, n, "--out %.200s: its directory %.200s %s", so->out, dir,
                     !there ? "does not exist"
                     : !S_ISDIR(sb.st_mode) ? "is not a directory" : "is not writable");
            return -1;
        }
        if (io_probe_create(dir, why, sizeof why) != 0) {
            snprintf(err, n, "--out %.150s: its directory %.150s: %.150s", so->out, dir, why);
            return -1;
        }
        return 0;
    }
    /* the run directory two levels above the checkpoint's real path, however it was named
       (ckpt-N.h5 from inside ckpt/, ./ckpt-N.h5, a symbolic link) */
    char *dir = c->out_dir, real[PATH_MAX];
    if (!realpath(c->ckpt, real) || strlen(real) >= sizeof(c->out_dir)) {
        snprintf(err, n, "--ckpt %.300s: cannot resolve its path: give --out FILE.png", c->ckpt);
        return -1;
    }
    snprintf(dir, sizeof(c->out_dir), "%s", real);
    cut_last(dir); /* runs/a/ckpt */
    /* runs/a; a checkpoint kept elsewhere (copied out of its run) gets it beside itself */
    const char *last = strrchr(dir, '/');
    if (last && strcmp(last, "/ckpt") == 0) cut_last(dir);
    if (access(dir, W_OK | X_OK) != 0 || io_probe_create(dir, NULL, 0) != 0) {
        snprintf(err, n, "the grid's default place %.300s is not writable: give --out FILE.png",
                 dir);
        return -1;
    }
    so->out_dir = dir; /* samples.png there, or samples-N.png past those that exist */
    return 0;
}

/* --resume: the shape and the document order stay; other changes are listed when it trains. */
static int check_resume(cli *c, comm_ctx *comm, char *err, size_t n) {
    char diff[400];
    if (trainer_config_diff_shape(&c->stored, &c->cfg, diff, sizeof(diff)) > 0) {
        snprintf(err, n, "cannot resume %.300s: the model's shape would change: %.150s", c->path, diff);
        return -1;
    }
    if (c->stored.shuffle != c->cfg.shuffle ||
        (c->cfg.shuffle && c->stored.data_seed != c->cfg.data_seed)) {
        /* the cursors count places in the checkpoint's document order */
        snprintf(err, n, "cannot resume %.300s: its streams read documents %s (data_seed %lld); "
                 "keep shuffle and data_seed as they were", c->path,
                 c->stored.shuffle ? "shuffled" : "in file order", (long long)c->stored.data_seed);
        return -1;
    }
    if (strcmp(c->stored.init_from, c->cfg.init_from) != 0) {
        /* only a new run starts from other weights: a resumed one goes on from its own */
        snprintf(err, n, "cannot resume %.200s with init_from = %.150s: init_from starts a new "
                 "run (give it a new run_dir); a resumed run goes on from its own checkpoint",
                 c->path, c->cfg.init_from);
        return -1;
    }
    if (comm_rank(comm) == 0)
        trainer_config_diff_other(&c->stored, &c->cfg, c->changed, sizeof(c->changed));
    return 0;
}

/* Whether a launcher started this process as a rank (mpirun sets these, also for -np 1),
 * read before MPI starts: a singleton's own initialisation may set some of them. */
static int launched_as_rank;

/* `srun memtrain` without MPI support, or a plain `memtrain` in an allocation, starts
 * unrelated one-process jobs; `mpirun -np 1` inside one (a sweep's first point) is meant. */
static int check_one_job(comm_ctx *comm, char *err, size_t n) {
    const char *ntasks = getenv("SLURM_NTASKS");
    if (!ntasks || atoi(ntasks) <= 1 || comm_size(comm) != 1 || launched_as_rank) return 0;
    snprintf(err, n,
             "started as a single MPI process but Slurm allocated SLURM_NTASKS=%s tasks: launch "
             "with 'mpirun memtrain ...' inside the allocation (or 'srun --mpi=pmix memtrain ...')",
             ntasks);
    return -1;
}

/* A resume of a finished run (the checkpoint that loads is at or past the sitting's end):
 * says so on one line and returns 1, leaving everything as it is. Collective; errors end the
 * job. */
static int nothing_to_do(cli *c, comm_ctx *comm) {
    char err[512] = "";
    int64_t at = 0;
    io_ckpt *ck = io_ckpt_open(comm, c->path, err, sizeof(err));
    int failed = !ck || io_ckpt_get_attr_i64(ck, "step", &at, err, sizeof(err)) != 0;
    io_ckpt_close(ck);
    if (comm_any_failed(comm, failed, err, sizeof(err))) comm_exit_error(comm, err);
    if (c->cfg.stop_after > 0 && c->cfg.stop_after <= at) {
        /* nothing could stop this sitting there: it would train on to steps unasked */
        snprintf(err, sizeof(err), "stop_after = %lld: the run is at step %lld already; give a "
                 "later step, or leave stop_after out to train to steps (%lld)",
                 (long long)c->cfg.stop_after, (long long)at, (long long)c->cfg.steps);
        comm_exit_error(comm, err);
    }
    int64_t end = c->cfg.stop_after > at ? c->cfg.stop_after : c->cfg.steps;
    if (at >= end) {
        /* the newest checkpoint may not load (corrupt): the step is the one that does */
        char id[TRAINER_RUN_ID_LEN + 1] = "";
        int64_t have = trainer_run_id_read(c->resume, id) == 0;
        comm_broadcast(comm, &have, sizeof(have), 0);
        comm_broadcast(comm, id, sizeof(id), 0);
        trainer_model_spec spec;
        trainer_spec_from_config(&spec, &c->cfg);
        trainer_model *m = trainer_model_create(&spec, comm);
        failed = trainer_ckpt_resume(comm, c->resume, have ? id : NULL, &c->cfg, m, NULL, 0, &at,
                                     c->path, sizeof(c->path), err, sizeof(err)) != 0;
        trainer_model_free(m);
        if (comm_any_failed(comm, failed, err, sizeof(err))) comm_exit_error(comm, err);
        end = c->cfg.stop_after > at ? c->cfg.stop_after : c->cfg.steps;
    }
    if (at < end) return 0;
    if (comm_rank(comm) == 0) {
        char shown[2200];
        printf("memtrain: nothing to do: the run is at step %lld of %lld (%s); raise --steps to "
               "train on\n", (long long)at, (long long)c->cfg.steps,
               comm_escape(shown, sizeof(shown), c->path));
        fflush(stdout);
    }
    return 1;
}

/* Whether this rank's text (lines) is rank 0's; where it is not, err names the first line that
 * differs. Every rank must see the same command line and config file: a rank started with
 * other ones (a node-local copy, an MPMD launch) would build another model and crash or hang
 * in the first exchange. Collective. */
#ifndef MEMTRAIN_SOURCE_ID
#define MEMTRAIN_SOURCE_ID "unknown"
#endif
/* The source this program was built from (the Makefile's SOURCE_ID: the commit, and a digest
 * of changes not committed). */
static const char source_id[] = "memtrain source " MEMTRAIN_SOURCE_ID;

static int same_as_rank0(comm_ctx *comm, const char *what, const char *text, char *err,
                         size_t n) {
    int64_t len = (int64_t)strlen(text) + 1;
    comm_broadcast(comm, &len, sizeof len, 0);
    char *r0 = layer_xmalloc((size_t)len);
    if (comm_rank(comm) == 0) memcpy(r0, text, (size_t)len);
    comm_broadcast(comm, r0, (size_t)len, 0);
    int rc = 0;
    if (strcmp(r0, text) != 0) {
        const char *a = text, *b = r0;
        size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
        while (la == lb && memcmp(a, b, la) == 0 && a[la] && b[lb]) { /* the same line */
            a += la + 1;
            b += lb + 1;
            la = strcspn(a, "\n");
            lb = strcspn(b, "\n");
        }
        if (la == lb && memcmp(a, b, la) == 0) { /* one ended there: the other's next line */
            if (a[la]) a += la + 1, b = "(nothing)";
            else b += lb + 1, a = "(nothing)";
            la = strcspn(a, "\n");
            lb = strcspn(b, "\n");
        }
        /* long lines are shown from a little before where they part */
        size_t d = 0;
        while (d < la && d < lb && a[d] == b[d]) d++;
        size_t from = d > 60 ? d - 40 : 0;
        const char *cut = from ? "..." : "";
        la -= from < la ? from : la;
        lb -= from < lb ? from : lb;
        int build = strcmp(what, "memtrain build") == 0;
        snprintf(err, n, "rank %d was started with other %s than rank 0: '%s%.*s' where rank 0 "
                 "has '%s%.*s' (every rank must %s)",
                 comm_rank(comm), what, cut, (int)(la < 120 ? la : 120), a + from, cut,
                 (int)(lb < 120 ? lb : 120), b + from,
                 build ? "run memtrain built from the same source"
                       : "see the same command line, config file and data");
        rc = -1;
    }
    free(r0);
    return rc;
}

static int same_arguments(comm_ctx *comm, int argc, char **argv, char *err, size_t n) {
    size_t len = 1;
    for (int i = 1; i < argc; i++) len += strlen(argv[i]) + 1;
    char *text = layer_xcalloc(len, 1);
    for (int i = 1; i < argc; i++) {
        strcat(text, argv[i]);
        if (i + 1 < argc) strcat(text, "\n");
    }
    int rc = same_as_rank0(comm, "arguments", text, err, n);
    free(text);
    return rc;
}

static int same_config(comm_ctx *comm, const cli *c, char *err, size_t n) {
    size_t len = trainer_config_to_text(&c->cfg, NULL, 0) + 1;
    char *text = layer_xmalloc(len);
    trainer_config_to_text(&c->cfg, text, len);
    int rc = same_as_rank0(comm, "settings", text, err, n);
    free(text);
    return rc;
}

static int run_command(cli *c, comm_ctx *comm) {
    if (strcmp(c->cmd, "plan") == 0) {
        int csv = 0;
        for (int i = 1; i < c->argc; i++) csv |= strcmp(c->argv[i], "--csv") == 0;
        return trainer_plan_report(comm, &c->cfg, c->ranks, c->nranks, c->per_rank, csv);
    }
    if (strcmp(c->cmd, "eval") == 0) return trainer_eval_checkpoint(comm, &c->cfg, c->ckpt);
    if (strcmp(c->cmd, "inspect") == 0) return trainer_inspect_checkpoint(comm, &c->cfg, c->ckpt);
    if (strcmp(c->cmd, "sample") == 0)
        return trainer_sample_checkpoint(comm, &c->cfg, c->ckpt, &c->so);
    return trainer_train(comm, &c->cfg, c->resume, c->changed);
}

/* Whether what this command printed reached its standard output (a full disk or /dev/full
 * behind it loses the output of eval, inspect, plan or sample, which is the command's product);
 * 1 with err set when it did not. Under mpirun the ranks write to the launcher, which writes
 * the file: its failures are its own. Collective. */
static int output_lost(comm_ctx *comm, char *err, size_t n) {
    int e = comm_rank(comm) == 0 ? comm_stdout_errno() : 0;
    if (e)
        snprintf(err, n, "standard output: cannot write (%s): the command's output is incomplete",
                 strerror(e));
    return comm_any_failed(comm, e != 0, err, n);
}

/* Reads the command line in phases, each of which may find a mistake; the ranks agree on the
 * first one (every rank parsed the same line, but no rank may run alone), then the command
 * runs on all of them. */
int main(int argc, char **argv) {
    trainer_blas_choose(argv); /* may re-execute this program: before anything starts */
    const char *word = command_word(argc, argv);
    if (strcmp(word, "train") == 0) trainer_catch_stop_signals();
    char early[300];
    if ((strcmp(word, "train") == 0 || strcmp(word, "eval") == 0 || strcmp(word, "sample") == 0) &&
        trainer_blas_warm(early, sizeof early) != 0) { /* before MPI: this rank's own line */
        fprintf(stderr, "memtrain: %s\n", early);
        return 2;
    }
    if (srun_without_pmi()) return 2;
    trainer_watchdog_start(); /* before MPI: it reads the launcher's environment */
    launched_as_rank = getenv("OMPI_COMM_WORLD_SIZE") != NULL || getenv("PMIX_RANK") != NULL;
    comm_ctx *comm = comm_init(&argc, &argv);
    static cli c;
    c.argc = argc;
    c.argv = argv;
    char err[512] = "";
    /* ranks of different builds would part in their first collectives and wait for ever */
    int train = 0, rc = same_as_rank0(comm, "memtrain build", source_id, err, sizeof(err));
    if (comm_any_failed(comm, rc != 0, err, sizeof(err))) comm_exit_error(comm, err);
    rc = same_arguments(comm, argc, argv, err, sizeof(err));
    if (comm_any_failed(comm, rc != 0, err, sizeof(err))) comm_exit_error(comm, err);
    if (print_help(argc, argv, comm_rank(comm))) {
        if (output_lost(comm, err, sizeof(err))) comm_exit_error(comm, err);
        comm_finalize(comm);
        return 0;
    }
    rc = read_flags(&c, err, sizeof(err));
    if (rc == 0) rc = read_config(&c, comm, err, sizeof(err));
    /* the same line may still read other files on other ranks */
    if (comm_any_failed(comm, rc != 0, err, sizeof(err))) comm_exit_error(comm, err);
    rc = same_config(comm, &c, err, sizeof(err));
    /* agreed before the checks below, some of which are collective (init_from, --resume) */
    if (comm_any_failed(comm, rc != 0, err, sizeof(err))) comm_exit_error(comm, err);
    if (rc == 0) train = strcmp(c.cmd, "train") == 0;
    if (rc == 0 && strcmp(c.cmd, "plan") == 0) rc = read_ranks(&c, err, sizeof(err));
    if (rc == 0) rc = trainer_sample_options_read(&c.so, c.cmd, &c.sa, err, sizeof(err));
    if (rc == 0 && !train && strcmp(c.cmd, "plan") != 0)
        rc = check_ckpt_command(&c, err, sizeof(err));
    if (rc == 0 && strcmp(c.cmd, "sample") == 0) rc = check_sample(&c, err, sizeof(err));
    if (rc == 0 && c.resume) rc = check_resume(&c, comm, err, sizeof(err));
    if (rc == 0 && train && !c.resume && strcmp(c.cfg.init_from, "none") != 0)
        rc = trainer_init_from_check(comm, &c.cfg, err, sizeof(err));
    /* plan and inspect compute nothing in parallel: one process is right inside an allocation
       (jobs/scaling.sbatch's comm_model.py runs plan there) */
    if (rc == 0 && strcmp(c.cmd, "plan") != 0 && strcmp(c.cmd, "inspect") != 0)
        rc = check_one_job(comm, err, sizeof(err));
    if (comm_any_failed(comm, rc != 0, err, sizeof(err))) comm_exit_error(comm, err);
    if (c.resume && train && nothing_to_do(&c, comm)) {
        comm_finalize(comm);
        return 0;
    }
    rc = run_command(&c, comm);
    /* training keeps what it prints in train.log too, and its files are its product */
    if (!train && output_lost(comm, err, sizeof(err))) comm_exit_error(comm, err);
    comm_finalize(comm);
    return rc;
}
