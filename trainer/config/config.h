/* Run configuration: one typed field per key, read from a `key = value` file plus --key=value overrides. */
#ifndef MEMTRAIN_TRAINER_CONFIG_H
#define MEMTRAIN_TRAINER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Typical use (the order matters: the file first, then the command line, then the check):
 *
 *   trainer_config c;
 *   char err[512];
 *   int first;
 *   static const char *const mine[] = {"--resume", "--ckpt", "--help", "-h", NULL};
 *   trainer_config_defaults(&c);
 *   if (trainer_config_parse_args(&c, argc, argv, mine, &first, err, sizeof err) != 0 ||
 *       trainer_config_validate(&c, err, sizeof err) != 0) { report err on rank 0; abort; }
 *   for (int i = first; i < argc; i++) handle argv[i]: "train", "--resume", "runs/x", ...
 *
 * Every key is listed once, with its type, default and meaning, in the table in config.c;
 * `memtrain --help` prints that table (trainer_config_help).
 *
 * Shape keys. A key is a shape key when a checkpoint is only meaningful under the value it
 * was trained with: it changes the stored arrays (arch, proj, d_model, layer counts,
 * mem_slots, memory, forgetting, tau, expand_bits, vocab, pos; seg_len through the learned
 * position table and the per-stream data cursors; streams through the per-stream carried
 * memory; data, whose positions those cursors are), or it changes the function the arrays
 * compute (n_heads, score, hash_temp, write_temp, rope_frac). A resume with a differing
 * shape key is refused
 * (trainer_config_diff_shape); every other key (optimizer, schedule, logging, paths,
 * horizon, bptt) may change on resume and is only logged (trainer_config_diff_other).
 * A key that does not apply to the configuration (enc_layers of a decoder, tau of a dense
 * model, ...) never blocks a resume. */

#define TRAINER_CONFIG_STR 256 /* capacity of string values, including the NUL */

typedef enum trainer_arch {
    TRAINER_ARCH_DECODER = 0,
    TRAINER_ARCH_MEMFORMER,
    TRAINER_ARCH_COUNT
} trainer_arch;

typedef enum trainer_proj {
    TRAINER_PROJ_DENSE = 0,
    TRAINER_PROJ_HASH,
    TRAINER_PROJ_COUNT
} trainer_proj;

/* Same order as layer_score_mode, so the value converts with a cast. */
typedef enum trainer_score {
    TRAINER_SCORE_PROB = 0,
    TRAINER_SCORE_L1PROB,
    TRAINER_SCORE_COUNT
} trainer_score;

typedef enum trainer_pos {
    TRAINER_POS_LEARNED = 0,
    TRAINER_POS_ROPE,
    TRAINER_POS_COUNT
} trainer_pos;

typedef enum trainer_bptt {
    TRAINER_BPTT_MRBP = 0,
    TRAINER_BPTT_FULL,
    TRAINER_BPTT_COUNT
} trainer_bptt;

/* The table_strategy key: auto (the planner chooses per group) or one strategy for every group
 * (trainer_spec_from_config maps it onto the planner's trainer_strategy). */
typedef enum trainer_strategy_key {
    TRAINER_STRATEGY_KEY_AUTO = 0,
    TRAINER_STRATEGY_KEY_FETCH,
    TRAINER_STRATEGY_KEY_OWNER,
    TRAINER_STRATEGY_KEY_REPLICATE,
    TRAINER_STRATEGY_KEY_COUNT
} trainer_strategy_key;

typedef enum trainer_row_format {
    TRAINER_ROWS_F32 = 0,
    TRAINER_ROWS_BF16,
    TRAINER_ROWS_COUNT
} trainer_row_format;

/* How sums over blocks and ranks are formed (README "Distribution"). */
typedef enum trainer_determinism {
    TRAINER_DET_BITWISE = 0, /* double sums rounded once: the same bits for any rank count */
    TRAINER_DET_FAST,        /* float sums in an order fixed by the rank count */
    TRAINER_DET_COUNT
} trainer_determinism;

/* stream_block = auto: the block the run uses is trainer_config_stream_block's. */
#define TRAINER_STREAM_BLOCK_AUTO 0
/* The largest block auto chooses: larger blocks add activation memory for little speed. */
#define TRAINER_STREAM_BLOCK_CAP 16
/* What auto resolves to under deterministic = bitwise, on every rank count. */
#define TRAINER_STREAM_BLOCK_BITWISE 4
/* The largest layer counts and stream counts a config may set: far past any model this
 * trains, and small enough that a typo is refused by its range before the memory estimate
 * (which builds the model's description, per layer) or int arithmetic on them runs away. */
#define TRAINER_MAX_LAYERS 1024
#define TRAINER_MAX_STREAMS (1 << 20)

typedef struct trainer_config {
    /* model */
    trainer_arch arch;
    trainer_proj proj;
    int d_model;
    int n_heads;
    int n_layers;   /* decoder blocks (arch = decoder) */
    int enc_layers; /* Memformer encoder layers */
    int dec_layers; /* Memformer decoder layers */
    int seg_len;    /* tokens per segment */
    int vocab;
    int mem_slots;
    float write_temp;
    bool forgetting;
    bool memory;
    int tau;
    int expand_bits;
    trainer_score score;
    float hash_temp;
    trainer_pos pos;
    float rope_frac;
    /* rollout */
    int horizon; /* segments per rollout, one optimizer step each */
    trainer_bptt bptt;
    int streams; /* global number of sequences in flight */
    int stream_block; /* streams computed together; ranks own whole blocks; 0: auto */
    trainer_determinism deterministic;
    /* table parallelism */
    trainer_strategy_key table_strategy;
    float row_cache_mb;
    trainer_row_format row_format;
    bool share_rows; /* the ranks of a node read each other's rows in place */
    bool share_exchange; /* ... and each other's exchanged words */
    float net_gbps, net_latency_us;
    /* optimizer and schedule */
    float lr;
    int warmup;
    float min_lr;
    float weight_decay;
    float grad_clip;
    float beta1;
    float beta2;
    float adam_eps;
    float table_lr_scale;
    int64_t steps;
    int64_t stop_after;
    int64_t seed;
    /* data, evaluation, files */
    char data[TRAINER_CONFIG_STR];
    char data_dir[TRAINER_CONFIG_STR];
    bool shuffle;      /* training documents in a seeded order per pass */
    int64_t data_seed; /* that order's seed */
    char val_data[TRAINER_CONFIG_STR]; /* "split": the data's own split; else a spec read whole */
    int eval_every;
    int eval_docs;     /* validation: the first eval_docs documents, whole (0: all) */
    int log_every;
    char run_dir[TRAINER_CONFIG_STR];
    int ckpt_every;
    float ckpt_minutes; /* also checkpoint when this long has passed since the last (0: never) */
    int keep_ckpts;
    char init_from[TRAINER_CONFIG_STR]; /* "none", or a checkpoint whose weights a new run starts from */
} trainer_config;

/* Fills every field with its default from the key table. Never fails. */
void trainer_config_defaults(trainer_config *c);

/* Applies the `key = value` lines of the file at path to c. Blank lines and comments are
 * skipped; a comment starts with '#' at the start of a line or after whitespace (so a path
 * such as a#b survives). Whitespace around key and value is ignored; a key may appear once.
 * Returns 0, or -1 with a one-line message in err (file, line number, key, what is wrong);
 * on failure the keys of earlier lines have already been applied. err may be NULL. */
int trainer_config_load_file(trainer_config *c, const char *path, char *err, size_t n);

/* The same for the lines of `text` (a checkpoint's stored config); `name` stands for the file
 * in messages. Retired keys are skipped, and shuffle is off unless the text sets it (a
 * checkpoint from before the key read its data in file order). */
int trainer_config_load_text(trainer_config *c, const char *text, const char *name, char *err,
                             size_t n);

/* Sets one key from its text value (surrounding whitespace ignored; '-' in the key is read
 * as '_', so --d-model works). Returns 0, or -1 with c unchanged and a message in err:
 *   unknown config key 'foo' (see memtrain --help)
 *   d_model = abc: expected a positive integer
 *   score = max: expected one of prob|l1prob
 * Only the key's own range is checked here; relations between keys are checked by
 * trainer_config_validate. */
int trainer_config_set(trainer_config *c, const char *key, const char *value, char *err, size_t n);

/* Reads the command line argv[1..argc). Arguments it owns: `--config FILE`, `--config=FILE`,
 * `--key=value` and `--key value` for every config key ('-' and '_' alike in the key); an
 * unknown key's message suggests the nearest key or caller flag ("did you mean --steps?").
 * The file is loaded first and the --key=value
 * overrides are applied after it in command-line order, whatever their position, so the
 * command line wins. Everything else is left to the caller: positional arguments, every
 * argument after a bare `--`, and the flags named in caller_flags (a NULL-terminated list
 * of spellings such as "--resume" or "-h"; an argument matches an entry when it is the
 * entry or the entry followed by '=', '-' and '_' alike; NULL means none). A value following a caller flag, as
 * in `--resume DIR`, is an ordinary positional argument and so stays with it.
 * argv is reordered in place: argv[1..*first_positional) holds the arguments consumed here
 * and argv[*first_positional..argc) the caller's, in their original order.
 * c should already hold defaults (or a checkpoint's configuration, which the overrides then
 * modify). Does not validate. Returns 0, or -1 with a message in err for an unknown option
 * or key, a bad value, a missing FILE, or --config given twice; c may then be partly
 * updated and argv is left as it was. */
int trainer_config_parse_args(trainer_config *c, int argc, char **argv,
                              const char *const *caller_flags, int *first_positional,
                              char *err, size_t n);

/* Checks every key's range and the rules between keys (d_model % n_heads, d_model % tau for
 * hashed projections, tau + expand_bits <= 16, an even rotary width, min_lr <= lr,
 * warmup <= steps, ...). Returns 0, or -1 with a message naming the key(s) and the rule. */
int trainer_config_validate(const trainer_config *c, char *err, size_t n);

/* Prints every key: name, default, allowed words, meaning, and whether it is a shape key. */
void trainer_config_help(FILE *f);

/* Writes the canonical form, one `key = value` line per key in table order, which
 * trainer_config_load_file reads back to the identical struct. Follows snprintf: returns the
 * length of the full text (excluding the NUL) and writes at most n bytes, NUL-terminated
 * when n > 0; buf may be NULL when n == 0, to ask for the size. */
size_t trainer_config_to_text(const trainer_config *c, char *buf, size_t n);

/* Number of shape keys that differ between a (conventionally the checkpoint's) and b (the
 * new run's), counting only keys that apply to both configurations. The differences are
 * written to keys (if n > 0) as "d_model (128 -> 64), tau (8 -> 4)", truncated to fit;
 * "" when there are none. */
int trainer_config_diff_shape(const trainer_config *a, const trainer_config *b, char *keys,
                              size_t n);

/* The first key of training only (the optimizer, the schedule, the rollout, the run's files:
 * what eval and sample, using the model as stored, have no use for) whose value differs
 * between a and b, except the key named except (if not NULL); NULL if none does. */
const char *trainer_config_training_differs(const trainer_config *a, const trainer_config *b,
                                           const char *except);

/* Keys set away from their defaults that do not apply to c (mem_slots with arch = decoder,
 * tau with proj = dense, ...): counted, and listed in keys as "mem_slots, tau". */
int trainer_config_unused(const trainer_config *c, char *keys, size_t n);

/* The complement of trainer_config_diff_shape: differing keys that may change on resume
 * (non-shape keys, and shape keys that do not apply to a or b), in the same format. */
int trainer_config_diff_other(const trainer_config *a, const trainer_config *b, char *keys,
                              size_t n);

/* Rotated dims per attention head: rope_frac * (d_model / n_heads), which validate requires
 * to be an even whole number >= 2 when pos = rope; 0 when pos = learned. */
int trainer_config_rope_dim(const trainer_config *c);

/* What is wrong with a number strtof read whole but set ERANGE for (v: what it returned):
 * "too small for a float" (underflow) or "too large for a float". Used wherever a float is
 * read from text, so a range error is never reported as the key's own range. */
const char *trainer_float_range_problem(float v);

/* Whether arg is flag (e.g. "--top-k") or flag followed by '=', reading '-' and '_' as one
 * after the first two characters as well ("--top_k=5" matches "--top-k"). */
bool trainer_config_flag_matches(const char *arg, const char *flag);

/* The config key (as "--steps") or caller flag (from the NULL-terminated flags, may be NULL)
 * nearest to name, within an edit distance of 2 (1 for names of up to 3 characters); "" when
 * none is that near. */
void trainer_config_suggest(const char *name, const char *const *flags, char *out, size_t n);

/* The stream block a run of c on P ranks uses: stream_block when set; auto under
 * deterministic = fast is ceil(streams / P) (one block per rank), or streams / P when that
 * leaves a rank without a block, split into equal blocks of at most TRAINER_STREAM_BLOCK_CAP;
 * auto under bitwise is min(streams, TRAINER_STREAM_BLOCK_BITWISE) whatever P is, so runs on
 * different rank counts cut the same blocks. A stream_block set past streams gives streams
 * (one block of them all). */
int trainer_config_stream_block(const trainer_config *c, int P);
/* Blocks of `block` streams that `streams` streams make (the last may be shorter): the one
 * count the schedule, the planner, the store and the memory estimate use. In 64 bits, since
 * streams + block - 1 overflows an int near INT_MAX. */
static inline int64_t trainer_nblocks(int64_t streams, int64_t block) {
    return (streams + block - 1) / block;
}

/* Whether name (with '-' read as '_') is a config key, and whether it is a shape key.
 * Both return false for an unknown name. */
bool trainer_config_has_key(const char *name);
bool trainer_config_is_shape_key(const char *name);

#endif
