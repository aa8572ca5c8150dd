/* Tests of trainer/config: defaults, file and command-line parsing, error messages, validation, round trip, diffs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/testutil.h"
#include "trainer/config/config.h"

/* Writes text to a fresh temporary file; returns its path (static storage, one at a time). */
static const char *write_temp(const char *text) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/check_config.XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    size_t len = strlen(text);
    ck_assert_int_eq((long)write(fd, text, len), (long)len);
    close(fd);
    return path;
}

/* Loads text as a config file on top of defaults; returns load's result, error in err. */
static int load_text(trainer_config *c, const char *text, char *err, size_t n, char *path_out) {
    trainer_config_defaults(c);
    const char *path = write_temp(text);
    if (path_out) strcpy(path_out, path);
    int rc = trainer_config_load_file(c, path, err, n);
    unlink(path);
    return rc;
}

START_TEST(test_defaults) {
    trainer_config c;
    char err[256];
    trainer_config_defaults(&c);
    ck_assert_int_eq(c.arch, TRAINER_ARCH_MEMFORMER);
    ck_assert_int_eq(c.proj, TRAINER_PROJ_HASH);
    ck_assert_int_eq(c.score, TRAINER_SCORE_L1PROB);
    ck_assert_int_eq(c.pos, TRAINER_POS_ROPE);
    ck_assert_int_eq(c.bptt, TRAINER_BPTT_MRBP);
    ck_assert_int_eq(c.d_model, 128);
    ck_assert_int_eq(c.n_heads, 4);
    ck_assert_int_eq(c.n_layers, 2);
    ck_assert_int_eq(c.enc_layers, 1);
    ck_assert_int_eq(c.dec_layers, 2);
    ck_assert_int_eq(c.seg_len, 64);
    ck_assert_int_eq(c.mem_slots, 8);
    ck_assert_int_eq(c.tau, 8);
    ck_assert_int_eq(c.expand_bits, 2);
    ck_assert_int_eq(c.horizon, 4);
    ck_assert_int_eq(c.streams, 8);
    ck_assert_int_eq(c.warmup, 50);
    ck_assert_int_eq(c.vocab, 256);
    ck_assert(c.steps == 200);
    ck_assert(c.seed == 1);
    ck_assert(c.memory && c.forgetting);
    ck_assert_float_eq(c.write_temp, 0.25f);
    ck_assert_float_eq(c.lr, 1e-3f);
    ck_assert_float_eq(c.min_lr, 1e-4f);
    ck_assert_float_eq(c.beta2, 0.95f);
    ck_assert_float_eq(c.rope_frac, 0.5f);
    ck_assert_float_eq(c.table_lr_scale, 1.0f);
    ck_assert_str_eq(c.data, "fashion-mnist");
    ck_assert_str_eq(c.run_dir, "runs/default");
    ck_assert_int_eq(c.keep_ckpts, 3);
    ck_assert_int_eq(trainer_config_validate(&c, err, sizeof err), 0);
    ck_assert_int_eq(trainer_config_rope_dim(&c), 16); /* half of the 32-dim heads */
}
END_TEST

START_TEST(test_load_comments_whitespace) {
    trainer_config c;
    char err[256] = "";
    const char *text = "# a run\n"
                       "\n"
                       "   d_model   =   64    # trailing comment\n"
                       "n_heads=2\n"
                       "\t arch\t= decoder\r\n"
                       "data_dir = my data#1\n"
                       "lr = 3e-4\n"
                       "forgetting = off\n"
                       "   # indented comment = not a key\n"
                       "seed = 12345678901\n";
    ck_assert_msg(load_text(&c, text, err, sizeof err, NULL) == 0, "%s", err);
    ck_assert_int_eq(c.d_model, 64);
    ck_assert_int_eq(c.n_heads, 2);
    ck_assert_int_eq(c.arch, TRAINER_ARCH_DECODER);
    ck_assert_str_eq(c.data_dir, "my data#1"); /* '#' inside a word is not a comment */
    ck_assert_float_eq(c.lr, 3e-4f);
    ck_assert(!c.forgetting);
    ck_assert(c.seed == 12345678901LL);
    ck_assert_int_eq(c.tau, 8); /* untouched keys keep their defaults */
    ck_assert_str_eq(c.run_dir, "runs/default");
}
END_TEST

START_TEST(test_load_errors) {
    trainer_config c;
    char err[512], path[64], want[600];

    ck_assert_int_eq(load_text(&c, "d_model = 64\nn_heads = 2\nfoo = 1\n", err, sizeof err, path), -1);
    snprintf(want, sizeof want, "%s:3: unknown config key 'foo' (see memtrain --help)", path);
    ck_assert_str_eq(err, want);

    /* a retired key is refused naming what replaced it, not read as unknown or in a new sense */
    ck_assert_int_eq(load_text(&c, "d_model = 64\neval_segments = 32\n", err, sizeof err, path), -1);
    snprintf(want, sizeof want, "%s:2: eval_segments was replaced by eval_docs", path);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);

    ck_assert_int_eq(load_text(&c, "# x\nd_model = abc\n", err, sizeof err, path), -1);
    snprintf(want, sizeof want, "%s:2: d_model = abc: expected a positive integer", path);
    ck_assert_str_eq(err, want);

    ck_assert_int_eq(load_text(&c, "d_model 64\n", err, sizeof err, path), -1);
    snprintf(want, sizeof want, "%s:1: expected 'key = value', got 'd_model 64'", path);
    ck_assert_str_eq(err, want);

    ck_assert_int_eq(load_text(&c, "tau = 4\nlr = 0.1\n\nlr = 0.2\n", err, sizeof err, path), -1);
    snprintf(want, sizeof want, "%s:4: key 'lr' is already set on line 2", path);
    ck_assert_str_eq(err, want);

    ck_assert_int_eq(load_text(&c, " = 3\n", err, sizeof err, path), -1);
    snprintf(want, sizeof want, "%s:1: no key before '='", path);
    ck_assert_str_eq(err, want);

    ck_assert_int_eq(load_text(&c, "score = max\n", err, sizeof err, path), -1);
    snprintf(want, sizeof want, "%s:1: score = max: expected one of prob|l1prob", path);
    ck_assert_str_eq(err, want);

    trainer_config_defaults(&c);
    ck_assert_int_eq(trainer_config_load_file(&c, "/nonexistent/run.conf", err, sizeof err), -1);
    ck_assert_str_eq(err, "config file /nonexistent/run.conf: cannot open (No such file or directory)");
}
END_TEST

/* Expects set(key, value) to fail with exactly msg and leave the struct unchanged. */
static void expect_set_error(const char *key, const char *value, const char *msg) {
    trainer_config c, before;
    char err[256] = "";
    trainer_config_defaults(&c);
    before = c;
    ck_assert_int_eq(trainer_config_set(&c, key, value, err, sizeof err), -1);
    ck_assert_str_eq(err, msg);
    ck_assert_mem_eq(&c, &before, sizeof c);
}

START_TEST(test_set_errors) {
    expect_set_error("foo", "1", "unknown config key 'foo' (see memtrain --help)");
    expect_set_error("eval-segments", "4",
                     "eval_segments was replaced by eval_docs: validation now scores whole "
                     "documents, the same ones for every model (eval_docs = N: the first N "
                     "validation documents; 0: all)");
    expect_set_error("d_model", "abc", "d_model = abc: expected a positive integer");
    expect_set_error("d_model", "0", "d_model = 0: expected a positive integer");
    expect_set_error("d_model", "12x", "d_model = 12x: expected a positive integer");
    expect_set_error("d_model", "1.5", "d_model = 1.5: expected a positive integer");
    expect_set_error("d_model", "99999999999", "d_model = 99999999999: too large (at most 2147483647)");
    expect_set_error("seed", "99999999999999999999",
                     "seed = 99999999999999999999: too large (at most 9223372036854775807)");
    expect_set_error("seed", "-99999999999999999999",
                     "seed = -99999999999999999999: expected a non-negative integer");
    expect_set_error("d_model", "  ", "d_model has no value: expected a positive integer");
    expect_set_error("warmup", "-1", "warmup = -1: expected a non-negative integer");
    expect_set_error("seg_len", "1", "seg_len = 1: expected an integer >= 2");
    expect_set_error("tau", "17", "tau = 17: expected an integer in 1..16");
    expect_set_error("expand_bits", "9", "expand_bits = 9: expected an integer in 0..8");
    expect_set_error("vocab", "70000", "vocab = 70000: expected an integer in 2..65536");
    expect_set_error("steps", "0", "steps = 0: expected a positive integer");
    expect_set_error("lr", "0", "lr = 0: expected a number > 0");
    expect_set_error("lr", "fast", "lr = fast: expected a number > 0");
    expect_set_error("lr", "nan", "lr = nan: expected a number > 0");
    expect_set_error("lr", "inf", "lr = inf: expected a number > 0");
    expect_set_error("min_lr", "-1e-5", "min_lr = -1e-5: expected a number >= 0");
    expect_set_error("beta1", "1", "beta1 = 1: expected a number in [0, 1)");
    expect_set_error("rope_frac", "0", "rope_frac = 0: expected a number in (0, 1]");
    expect_set_error("rope_frac", "1.5", "rope_frac = 1.5: expected a number in (0, 1]");
    expect_set_error("write_temp", "0", "write_temp = 0: expected a number > 0");
    expect_set_error("score", "max", "score = max: expected one of prob|l1prob");
    expect_set_error("arch", "Decoder", "arch = Decoder: expected one of decoder|memformer");
    expect_set_error("bptt", "tbptt", "bptt = tbptt: expected one of mrbp|full");
    expect_set_error("memory", "maybe", "memory = maybe: expected one of off|on");
#define STR_EXPECTED                                                                           \
    "a non-empty value of at most 255 characters on one line, with no '#' at its start or "      \
    "after a space or tab (config files read one there as a comment)"
    expect_set_error("run_dir", "", "run_dir has no value: expected " STR_EXPECTED);
    expect_set_error("run_dir", "a\nb", "run_dir = a\nb: expected " STR_EXPECTED);
    /* a value a config file would cut at its comment; '#' elsewhere is the value's */
    expect_set_error("data", "text:/d/notes #1.txt",
                     "data = text:/d/notes #1.txt: expected " STR_EXPECTED);
    {
        trainer_config hc;
        char herr[256];
        trainer_config_defaults(&hc);
        ck_assert_int_eq(trainer_config_set(&hc, "data", "text:/d/notes#1.txt", herr, sizeof herr), 0);
        ck_assert_str_eq(hc.data, "text:/d/notes#1.txt");
    }
}
END_TEST

START_TEST(test_set_accepts) {
    trainer_config c;
    char err[256];
    trainer_config_defaults(&c);
    ck_assert_int_eq(trainer_config_set(&c, "d-model", " 96 ", err, sizeof err), 0);
    ck_assert_int_eq(c.d_model, 96);
    ck_assert_int_eq(trainer_config_set(&c, "memory", "false", err, sizeof err), 0);
    ck_assert(!c.memory);
    ck_assert_int_eq(trainer_config_set(&c, "memory", "1", err, sizeof err), 0);
    ck_assert(c.memory);
    ck_assert_int_eq(trainer_config_set(&c, "score", "prob", err, sizeof err), 0);
    ck_assert_int_eq(c.score, TRAINER_SCORE_PROB);
    ck_assert_int_eq(trainer_config_set(&c, "bptt", "full", err, sizeof err), 0);
    ck_assert_int_eq(c.bptt, TRAINER_BPTT_FULL);
    ck_assert_int_eq(trainer_config_set(&c, "beta1", "0", err, sizeof err), 0);
    ck_assert_float_eq(c.beta1, 0.0f);
    ck_assert_int_eq(trainer_config_set(&c, "vocab", "65536", err, sizeof err), 0);
    ck_assert_int_eq(c.vocab, 65536);
    /* A NULL error buffer is allowed. */
    ck_assert_int_eq(trainer_config_set(&c, "d_model", "x", NULL, 0), -1);
    ck_assert_int_eq(c.d_model, 96);
    ck_assert(trainer_config_is_shape_key("d_model"));
    ck_assert(trainer_config_is_shape_key("n_heads"));
    ck_assert(trainer_config_is_shape_key("tau"));
    ck_assert(!trainer_config_is_shape_key("lr"));
    ck_assert(!trainer_config_is_shape_key("horizon"));
    ck_assert(!trainer_config_is_shape_key("nope"));
    ck_assert(trainer_config_has_key("keep_ckpts"));
    ck_assert(!trainer_config_has_key("config"));
}
END_TEST

START_TEST(test_parse_args_overrides_win) {
    trainer_config c;
    char err[512] = "";
    const char *path = write_temp("d_model = 64\nlr = 0.002\nn_heads = 2\n");
    char *argv[] = {"memtrain", "train", "--d_model=32", "--config", (char *)path,
                    "--resume", "runs/x", "--lr=5e-4", "--", "--weird", NULL};
    int argc = 10, first = -1;
    static const char *const mine[] = {"--resume", "--help", NULL};
    trainer_config_defaults(&c);
    int rc = trainer_config_parse_args(&c, argc, argv, mine, &first, err, sizeof err);
    unlink(path);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_int_eq(c.d_model, 32); /* the override wins although it comes before --config */
    ck_assert_float_eq(c.lr, 5e-4f);
    ck_assert_int_eq(c.n_heads, 2); /* from the file */
    ck_assert_int_eq(c.tau, 8);     /* default */
    ck_assert_int_eq(first, 6);
    ck_assert_str_eq(argv[0], "memtrain");
    ck_assert_str_eq(argv[6], "train");
    ck_assert_str_eq(argv[7], "--resume");
    ck_assert_str_eq(argv[8], "runs/x");
    ck_assert_str_eq(argv[9], "--weird");
}
END_TEST

/* --key value and --key=value alike, '-' or '_' in keys and caller flags */
START_TEST(test_parse_args_spellings) {
    trainer_config c;
    char err[512] = "";
    char *argv[] = {"memtrain", "sample", "--seed", "7", "--d-model=64", "--top_k=5",
                    "--n_heads", "2", "--top-p", "0.9", NULL};
    int argc = 10, first = -1;
    static const char *const mine[] = {"--top-k", "--top-p", NULL};
    trainer_config_defaults(&c);
    int rc = trainer_config_parse_args(&c, argc, argv, mine, &first, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_int_eq(c.seed, 7);
    ck_assert_int_eq(c.d_model, 64);
    ck_assert_int_eq(c.n_heads, 2);
    ck_assert_int_eq(first, 6);
    ck_assert_str_eq(argv[6], "sample");
    ck_assert_str_eq(argv[7], "--top_k=5");
    ck_assert_str_eq(argv[8], "--top-p");
    ck_assert_str_eq(argv[9], "0.9");
    ck_assert(trainer_config_flag_matches("--top_k=5", "--top-k"));
    ck_assert(!trainer_config_flag_matches("--top_kx", "--top-k"));
}
END_TEST

START_TEST(test_parse_args_config_equals) {
    trainer_config c;
    char err[512] = "";
    const char *path = write_temp("arch = decoder\n");
    char opt[128];
    snprintf(opt, sizeof opt, "--config=%s", path);
    char *argv[] = {"memtrain", opt, "--help=keys", "eval", NULL};
    int first = -1;
    static const char *const mine[] = {"--help", NULL};
    trainer_config_defaults(&c);
    int rc = trainer_config_parse_args(&c, 4, argv, mine, &first, err, sizeof err);
    unlink(path);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_int_eq(c.arch, TRAINER_ARCH_DECODER);
    ck_assert_int_eq(first, 2);
    ck_assert_str_eq(argv[2], "--help=keys");
    ck_assert_str_eq(argv[3], "eval");
}
END_TEST

/* Expects parse_args on the given arguments to fail with exactly msg and leave argv alone. */
static void expect_args_error(int argc, char **argv, const char *msg) {
    trainer_config c;
    char err[512] = "";
    char *copy[16];
    int first = -1;
    static const char *const mine[] = {"--resume", NULL};
    memcpy(copy, argv, sizeof(char *) * (size_t)argc);
    trainer_config_defaults(&c);
    ck_assert_int_eq(trainer_config_parse_args(&c, argc, argv, mine, &first, err, sizeof err), -1);
    ck_assert_str_eq(err, msg);
    ck_assert_int_eq(first, -1);
    ck_assert_mem_eq(copy, argv, sizeof(char *) * (size_t)argc);
}

START_TEST(test_parse_args_errors) {
    char *a1[] = {"memtrain", "train", "--foo=1"};
    expect_args_error(3, a1, "unknown config key 'foo' (see memtrain --help)");
    char *a0[] = {"memtrain", "train", "--eval_segments=2"};
    expect_args_error(3, a0,
                      "command line: eval_segments was replaced by eval_docs: validation now "
                      "scores whole documents, the same ones for every model (eval_docs = N: the "
                      "first N validation documents; 0: all)");
    char *a2[] = {"memtrain", "--bogus", "train"};
    expect_args_error(3, a2, "unknown option '--bogus' (see memtrain --help)");
    char *a3[] = {"memtrain", "train", "--d_model"};
    expect_args_error(3, a3, "--d_model needs a value: write --d_model VALUE or --d_model=VALUE");
    char *a9[] = {"memtrain", "--step=100"};
    expect_args_error(2, a9, "unknown config key 'step' (did you mean --steps? see memtrain --help)");
    char *a10[] = {"memtrain", "--lrr", "1"};
    expect_args_error(3, a10, "unknown option '--lrr' (did you mean --lr? see memtrain --help)");
    char *a11[] = {"memtrain", "--resumee", "x"};
    expect_args_error(3, a11, "unknown option '--resumee' (did you mean --resume? see memtrain --help)");
    char *a4[] = {"memtrain", "train", "--lr=1e-3", "--d_model=abc"};
    expect_args_error(4, a4, "command line: d_model = abc: expected a positive integer");
    char *a5[] = {"memtrain", "--config"};
    expect_args_error(2, a5, "--config needs a file: --config FILE");
    char *a6[] = {"memtrain", "--config=a.conf", "--config", "b.conf"};
    expect_args_error(4, a6, "--config given twice ('a.conf' and 'b.conf')");
    char *a7[] = {"memtrain", "-x"};
    expect_args_error(2, a7, "unknown option '-x' (see memtrain --help)");
    char *a8[] = {"memtrain", "--config=/nonexistent.conf"};
    expect_args_error(2, a8, "config file /nonexistent.conf: cannot open (No such file or directory)");
}
END_TEST

/* Expects validate to fail with exactly msg. */
static void expect_invalid(const trainer_config *c, const char *msg) {
    char err[512] = "";
    ck_assert_int_eq(trainer_config_validate(c, err, sizeof err), -1);
    ck_assert_str_eq(err, msg);
}

START_TEST(test_validate) {
    trainer_config c;
    char err[512];

    trainer_config_defaults(&c);
    c.n_heads = 3;
    expect_invalid(&c, "n_heads = 3: d_model (128) must be a multiple of n_heads");

    trainer_config_defaults(&c);
    c.tau = 6;
    expect_invalid(&c, "tau = 6: d_model (128) must be a multiple of tau when proj = hash");
    c.proj = TRAINER_PROJ_DENSE; /* tau means nothing to a dense model */
    ck_assert_int_eq(trainer_config_validate(&c, err, sizeof err), 0);

    trainer_config_defaults(&c);
    c.tau = 16;
    c.expand_bits = 1;
    expect_invalid(&c, "tau + expand_bits = 16 + 1: must be at most 16 (the memory block's "
                       "tables have 2^(tau+expand_bits) rows)");
    c.expand_bits = 0;
    ck_assert_int_eq(trainer_config_validate(&c, err, sizeof err), 0);

    trainer_config_defaults(&c); /* head size 32 */
    c.rope_frac = 0.3f;
    expect_invalid(&c, "rope_frac = 0.3: rope_frac * head size (d_model/n_heads = 32) = 9.6 must "
                       "be an even whole number >= 2");
    c.rope_frac = 0.03125f; /* one dim: odd */
    expect_invalid(&c, "rope_frac = 0.03125: rope_frac * head size (d_model/n_heads = 32) = 1 must "
                       "be an even whole number >= 2");
    c.rope_frac = 0.0625f;
    ck_assert_int_eq(trainer_config_validate(&c, err, sizeof err), 0);
    ck_assert_int_eq(trainer_config_rope_dim(&c), 2);
    c.rope_frac = 0.3f;
    c.pos = TRAINER_POS_LEARNED; /* no rotary dims at all */
    ck_assert_int_eq(trainer_config_validate(&c, err, sizeof err), 0);
    ck_assert_int_eq(trainer_config_rope_dim(&c), 0);

    trainer_config_defaults(&c);
    c.min_lr = 0.01f;
    expect_invalid(&c, "min_lr = 0.01: must not exceed lr (0.001)");

    trainer_config_defaults(&c);
    c.warmup = 300;
    expect_invalid(&c, "warmup = 300: must not exceed steps (200)");
    c.steps = 300;
    ck_assert_int_eq(trainer_config_validate(&c, err, sizeof err), 0);

    trainer_config_defaults(&c);
    c.stop_after = 201;
    expect_invalid(&c, "stop_after = 201: must not exceed steps (200)");
    c.stop_after = 200;
    ck_assert_int_eq(trainer_config_validate(&c, err, sizeof err), 0);

    /* Fields set directly, bypassing trainer_config_set, get the same range checks. */
    trainer_config_defaults(&c);
    c.mem_slots = 0;
    expect_invalid(&c, "mem_slots = 0: expected a positive integer");
    trainer_config_defaults(&c);
    c.lr = -1.0f;
    expect_invalid(&c, "lr = -1: expected a number > 0");
    trainer_config_defaults(&c);
    c.streams = 0;
    expect_invalid(&c, "streams = 0: expected an integer in 1..1048576");
    trainer_config_defaults(&c);
    c.horizon = 0;
    expect_invalid(&c, "horizon = 0: expected a positive integer");
    trainer_config_defaults(&c);
    c.seg_len = 1;
    expect_invalid(&c, "seg_len = 1: expected an integer >= 2");
    trainer_config_defaults(&c);
    c.arch = (trainer_arch)5;
    expect_invalid(&c, "arch = 5: expected one of decoder|memformer");
    trainer_config_defaults(&c);
    c.run_dir[0] = '\0';
    expect_invalid(&c, "run_dir has no value: expected " STR_EXPECTED);
}
END_TEST

START_TEST(test_round_trip) {
    trainer_config a, b;
    char err[512] = "";
    trainer_config_defaults(&a);
    a.arch = TRAINER_ARCH_DECODER;
    a.proj = TRAINER_PROJ_DENSE;
    a.d_model = 96;
    a.n_layers = 5;
    a.memory = false;
    a.score = TRAINER_SCORE_PROB;
    a.hash_temp = 0.7f;
    a.lr = 3e-4f;
    a.min_lr = 1.234567e-5f;
    a.beta2 = 0.999f;
    a.write_temp = 0.1f;
    a.rope_frac = 0.25f;
    a.adam_eps = 1e-6f;
    a.steps = 5000000000LL;
    a.seed = 42;
    a.bptt = TRAINER_BPTT_FULL;
    a.keep_ckpts = 0;
    ck_assert_int_eq(trainer_config_set(&a, "run_dir", "runs/with space", err, sizeof err), 0);
    ck_assert_int_eq(trainer_config_set(&a, "data", "corpus#2.txt", err, sizeof err), 0);

    size_t len = trainer_config_to_text(&a, NULL, 0);
    char *text = malloc(len + 1);
    ck_assert_uint_eq(trainer_config_to_text(&a, text, len + 1), len);
    ck_assert_uint_eq(strlen(text), len);
    ck_assert_ptr_nonnull(strstr(text, "arch = decoder\n"));
    ck_assert_ptr_nonnull(strstr(text, "lr = 0.0003\n")); /* shortest text that reads back */
    ck_assert_ptr_nonnull(strstr(text, "memory = off\n"));
    ck_assert_ptr_nonnull(strstr(text, "steps = 5000000000\n"));
    ck_assert_ptr_nonnull(strstr(text, "run_dir = runs/with space\n"));
    /* Every line is `known_key = value`. */
    int lines = 0;
    for (char *s = text; *s; lines++) {
        char *nl = strchr(s, '\n');
        ck_assert_ptr_nonnull(nl);
        char key[64];
        ck_assert_int_eq(sscanf(s, "%63s =", key), 1);
        ck_assert_msg(trainer_config_has_key(key), "unknown key %s", key);
        s = nl + 1;
    }
    ck_assert_int_ge(lines, 40);

    trainer_config_defaults(&b);
    ck_assert_msg(load_text(&b, text, err, sizeof err, NULL) == 0, "%s", err);
    ck_assert_mem_eq(&a, &b, sizeof a);

    {
        trainer_config k;
        /* a checkpoint's stored text: a retired key is skipped, and without a shuffle line the
         * run read its data in file order */
        trainer_config_defaults(&k);
        ck_assert(k.shuffle);
        ck_assert_int_eq(trainer_config_load_text(&k, "eval_segments = 32\nd_model = 48\n", "ck",
                                                  err, sizeof err), 0);
        ck_assert_int_eq(k.d_model, 48);
        ck_assert(!k.shuffle);
        trainer_config_defaults(&k);
        ck_assert_int_eq(trainer_config_load_text(&k, "shuffle = on\n", "ck", err, sizeof err), 0);
        ck_assert(k.shuffle);
    }
    ck_assert_int_eq(trainer_config_diff_shape(&a, &b, err, sizeof err), 0);
    ck_assert_int_eq(trainer_config_diff_other(&a, &b, err, sizeof err), 0);

    /* A short buffer: snprintf-like length, truncated and terminated. */
    char small[16];
    ck_assert_uint_eq(trainer_config_to_text(&a, small, sizeof small), len);
    ck_assert_uint_eq(strlen(small), sizeof small - 1);
    ck_assert_int_eq(strncmp(small, text, sizeof small - 1), 0);
    free(text);
}
END_TEST

START_TEST(test_diff) {
    trainer_config a, b;
    char keys[256];
    trainer_config_defaults(&a);
    trainer_config_defaults(&b);
    ck_assert_int_eq(trainer_config_diff_shape(&a, &b, keys, sizeof keys), 0);
    ck_assert_str_eq(keys, "");

    b.d_model = 64;
    b.tau = 4;
    b.lr = 0.01f;
    b.n_layers = 3; /* a decoder-only key: does not matter to two Memformers */
    ck_assert_int_eq(trainer_config_diff_shape(&a, &b, keys, sizeof keys), 2);
    ck_assert_str_eq(keys, "d_model (128 -> 64), tau (8 -> 4)");
    ck_assert_int_eq(trainer_config_diff_other(&a, &b, keys, sizeof keys), 2);
    ck_assert_str_eq(keys, "n_layers (2 -> 3), lr (0.001 -> 0.01)");

    /* Truncated list, full count. */
    char tiny[12];
    ck_assert_int_eq(trainer_config_diff_shape(&a, &b, tiny, sizeof tiny), 2);
    ck_assert_uint_eq(strlen(tiny), sizeof tiny - 1);
    ck_assert_int_eq(strncmp(tiny, "d_model (12", sizeof tiny - 1), 0);
    ck_assert_int_eq(trainer_config_diff_shape(&a, &b, NULL, 0), 2);

    /* Dense models ignore hash keys; a differing score then is harmless. */
    trainer_config_defaults(&a);
    trainer_config_defaults(&b);
    a.proj = b.proj = TRAINER_PROJ_DENSE;
    b.score = TRAINER_SCORE_PROB;
    b.hash_temp = 2.0f;
    b.horizon = 8;
    ck_assert_int_eq(trainer_config_diff_shape(&a, &b, keys, sizeof keys), 0);
    ck_assert_int_eq(trainer_config_diff_other(&a, &b, keys, sizeof keys), 3);
    ck_assert_str_eq(keys, "score (l1prob -> prob), hash_temp (1 -> 2), horizon (4 -> 8)");

    /* hash_temp matters when both score with prob; memory off hides mem_slots. */
    a.proj = b.proj = TRAINER_PROJ_HASH;
    a.score = TRAINER_SCORE_PROB;
    b.horizon = 4;
    ck_assert_int_eq(trainer_config_diff_shape(&a, &b, keys, sizeof keys), 1);
    ck_assert_str_eq(keys, "hash_temp (1 -> 2)");
    trainer_config_defaults(&a);
    trainer_config_defaults(&b);
    a.memory = b.memory = false;
    b.mem_slots = 16;
    b.streams = 4;
    ck_assert_int_eq(trainer_config_diff_shape(&a, &b, keys, sizeof keys), 1);
    ck_assert_str_eq(keys, "streams (8 -> 4)");

    /* Different architectures: arch is the difference, the other family's keys are not. */
    trainer_config_defaults(&a);
    trainer_config_defaults(&b);
    b.arch = TRAINER_ARCH_DECODER;
    b.enc_layers = 3;
    ck_assert_int_eq(trainer_config_diff_shape(&a, &b, keys, sizeof keys), 1);
    ck_assert_str_eq(keys, "arch (memformer -> decoder)");
}
END_TEST

/* stream_block = auto: one block per rank under fast (at most 16 streams, every rank with a
 * block), a P-independent block under bitwise; a number is kept; "auto" reads and prints. */
START_TEST(test_stream_block_auto) {
    trainer_config c;
    char err[256];
    trainer_config_defaults(&c);
    ck_assert_int_eq(c.stream_block, TRAINER_STREAM_BLOCK_AUTO);
    ck_assert_int_eq(c.deterministic, TRAINER_DET_FAST);
    c.streams = 16;
    ck_assert_int_eq(trainer_config_stream_block(&c, 1), 16);
    ck_assert_int_eq(trainer_config_stream_block(&c, 2), 8);
    ck_assert_int_eq(trainer_config_stream_block(&c, 3), 6);  /* 6+6+4 */
    ck_assert_int_eq(trainer_config_stream_block(&c, 16), 1);
    c.streams = 40;
    ck_assert_int_eq(trainer_config_stream_block(&c, 1), 14); /* 40 in 3 blocks of at most 16 */
    ck_assert_int_eq(trainer_config_stream_block(&c, 2), 10); /* 20 per rank in 2 blocks */
    c.streams = 10;
    ck_assert_int_eq(trainer_config_stream_block(&c, 4), 3);  /* 3+3+3+1: a block each */
    c.streams = 5;
    ck_assert_int_eq(trainer_config_stream_block(&c, 4), 1);  /* ceil gives 2: 3 blocks only */
    for (int P = 1; P <= 5; P++) { /* every rank has a block whenever streams >= P */
        int b = trainer_config_stream_block(&c, P);
        ck_assert_int_ge((c.streams + b - 1) / b, P);
    }
    ck_assert_int_eq(trainer_config_set(&c, "deterministic", "bitwise", err, sizeof err), 0);
    c.streams = 16;
    for (int P = 1; P <= 8; P++) ck_assert_int_eq(trainer_config_stream_block(&c, P), 4);
    c.streams = 3;
    ck_assert_int_eq(trainer_config_stream_block(&c, 2), 3);
    ck_assert_int_eq(trainer_config_set(&c, "stream_block", "6", err, sizeof err), 0);
    ck_assert_int_eq(trainer_config_stream_block(&c, 2), 3); /* past streams: one block of all */
    c.streams = 8;
    ck_assert_int_eq(trainer_config_stream_block(&c, 2), 6);
    c.streams = 3;
    ck_assert_int_eq(trainer_config_set(&c, "stream_block", "auto", err, sizeof err), 0);
    ck_assert_int_eq(c.stream_block, TRAINER_STREAM_BLOCK_AUTO);
    char text[8192];
    trainer_config_to_text(&c, text, sizeof text);
    ck_assert_ptr_nonnull(strstr(text, "stream_block = auto\n"));
    ck_assert_ptr_nonnull(strstr(text, "deterministic = bitwise\n"));
    ck_assert_int_ne(trainer_config_set(&c, "stream_block", "0", err, sizeof err), 0);
    ck_assert_str_eq(err, "stream_block = 0: expected an integer in 1..1048576 or auto");
    ck_assert_int_ne(trainer_config_set(&c, "deterministic", "exact", err, sizeof err), 0);
    ck_assert_str_eq(err, "deterministic = exact: expected one of bitwise|fast");
}
END_TEST

START_TEST(test_help) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(f);
    trainer_config_help(f);
    fclose(f);
    /* Every key of the canonical text has a help line, shape keys starred. */
    trainer_config c;
    trainer_config_defaults(&c);
    char text[8192];
    trainer_config_to_text(&c, text, sizeof text);
    for (char *s = text; *s;) {
        char key[64], pat[80];
        ck_assert_int_eq(sscanf(s, "%63s =", key), 1);
        snprintf(pat, sizeof pat, "\n  %s%s ", key, trainer_config_is_shape_key(key) ? "*" : "");
        ck_assert_msg(strstr(buf, pat) != NULL, "no help line for %s", key);
        s = strchr(s, '\n') + 1;
    }
    ck_assert_ptr_nonnull(strstr(buf, "decoder|memformer: "));
    ck_assert_ptr_nonnull(strstr(buf, "\n  d_model*         128 "));
    ck_assert_ptr_nonnull(strstr(buf, "\n  lr               0.001 "));
    free(buf);
}
END_TEST

static Suite *config_suite(void) {
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_load_comments_whitespace);
    tcase_add_test(tc, test_load_errors);
    tcase_add_test(tc, test_set_errors);
    tcase_add_test(tc, test_set_accepts);
    tcase_add_test(tc, test_parse_args_overrides_win);
    tcase_add_test(tc, test_parse_args_config_equals);
    tcase_add_test(tc, test_parse_args_spellings);
    tcase_add_test(tc, test_parse_args_errors);
    tcase_add_test(tc, test_validate);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_diff);
    tcase_add_test(tc, test_stream_block_auto);
    tcase_add_test(tc, test_help);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(config_suite()); }
