/* Run configuration: the key table, setting keys from text and files, validation, canonical text, diffs. */
#include "trainer/config/config.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "io/files.h"
#include "layers/common.h"
#include "trainer/config/config_internal.h"

typedef enum key_type {
    KEY_INT,   /* int field */
    KEY_I64,   /* int64_t field */
    KEY_FLOAT, /* float field */
    KEY_BOOL,  /* bool field, words off|on */
    KEY_ENUM,  /* enum field (int-sized), value = index into words */
    KEY_STR,   /* char[TRAINER_CONFIG_STR] field */
} key_type;

/* Range flags. Ranges are inclusive unless marked open. */
enum {
    KF_SHAPE = 1u << 0,   /* see "Shape keys" in config.h */
    KF_LO_OPEN = 1u << 1, /* value > lo rather than >= lo */
    KF_HI_OPEN = 1u << 2, /* value < hi rather than <= hi */
    KF_NO_HI = 1u << 3,   /* no upper bound beyond the field type's */
    KF_AUTO = 1u << 4,    /* KEY_INT: the word auto stands for 0 */
    KF_TRAIN = 1u << 5,   /* of training only: eval and sample, which use the model as
                             stored, refuse it set other than the checkpoint's */
};

typedef bool (*key_applies_fn)(const trainer_config *c);

typedef struct key_def {
    const char *name;
    key_type type;
    size_t offset;
    const char *def; /* default, as text: parsed by trainer_config_set, printed by --help */
    const char *const *words; /* KEY_ENUM, KEY_BOOL: allowed words, indexed by value */
    double lo, hi;
    unsigned flags;
    key_applies_fn applies; /* NULL: the key applies to every configuration */
    const char *help;
} key_def;

static bool applies_decoder(const trainer_config *c) { return c->arch == TRAINER_ARCH_DECODER; }
static bool applies_memformer(const trainer_config *c) { return c->arch == TRAINER_ARCH_MEMFORMER; }
static bool applies_memory(const trainer_config *c) {
    return c->arch == TRAINER_ARCH_MEMFORMER && c->memory;
}
static bool applies_hash(const trainer_config *c) { return c->proj == TRAINER_PROJ_HASH; }
static bool applies_hash_prob(const trainer_config *c) {
    return c->proj == TRAINER_PROJ_HASH && c->score == TRAINER_SCORE_PROB;
}
static bool applies_rope(const trainer_config *c) { return c->pos == TRAINER_POS_ROPE; }

static const char *const arch_words[] = {"decoder", "memformer", NULL};
static const char *const proj_words[] = {"dense", "hash", NULL};
static const char *const score_words[] = {"prob", "l1prob", NULL};
static const char *const pos_words[] = {"learned", "rope", NULL};
static const char *const bptt_words[] = {"mrbp", "full", NULL};
static const char *const bool_words[] = {"off", "on", NULL};
static const char *const strategy_words[] = {"auto", "fetch", "owner", "replicate", NULL};
static const char *const rowfmt_words[] = {"f32", "bf16", NULL};
static const char *const det_words[] = {"bitwise", "fast", NULL};

#define NWORDS(w) (sizeof(w) / sizeof((w)[0]) - 1)
static_assert(NWORDS(arch_words) == TRAINER_ARCH_COUNT, "arch_words out of step with trainer_arch");
static_assert(NWORDS(proj_words) == TRAINER_PROJ_COUNT, "proj_words out of step with trainer_proj");
static_assert(NWORDS(score_words) == TRAINER_SCORE_COUNT, "score_words out of step");
static_assert(NWORDS(pos_words) == TRAINER_POS_COUNT, "pos_words out of step with trainer_pos");
static_assert(NWORDS(bptt_words) == TRAINER_BPTT_COUNT, "bptt_words out of step");
static_assert(NWORDS(strategy_words) == TRAINER_STRATEGY_KEY_COUNT, "strategy_words out of step");
static_assert(NWORDS(rowfmt_words) == TRAINER_ROWS_COUNT, "rowfmt_words out of step");
static_assert(NWORDS(det_words) == TRAINER_DET_COUNT, "det_words out of step");
/* Enum fields are read and written through an int. */
static_assert(sizeof(trainer_arch) == sizeof(int) && sizeof(trainer_proj) == sizeof(int) &&
                  sizeof(trainer_score) == sizeof(int) && sizeof(trainer_pos) == sizeof(int) &&
                  sizeof(trainer_bptt) == sizeof(int) && sizeof(trainer_strategy_key) == sizeof(int) &&
                  sizeof(trainer_row_format) == sizeof(int) &&
                  sizeof(trainer_determinism) == sizeof(int),
              "enum fields must be int-sized");

#define OFF(f) offsetof(trainer_config, f)
#define INT_KEY(nm, def, lo, hi, fl, ap, help) \
    {#nm, KEY_INT, OFF(nm), def, NULL, lo, hi, fl, ap, help}
#define I64_KEY(nm, def, lo, fl, help) \
    {#nm, KEY_I64, OFF(nm), def, NULL, lo, 0, (fl) | KF_NO_HI, NULL, help}
#define FLT_KEY(nm, def, lo, hi, fl, ap, help) \
    {#nm, KEY_FLOAT, OFF(nm), def, NULL, lo, hi, fl, ap, help}
#define ENUM_KEY(nm, def, words, fl, ap, help) \
    {#nm, KEY_ENUM, OFF(nm), def, words, 0, 0, fl, ap, help}
#define BOOL_KEY(nm, def, fl, ap, help) \
    {#nm, KEY_BOOL, OFF(nm), def, bool_words, 0, 0, fl, ap, help}
#define STR_KEY(nm, def, fl, help) \
    {#nm, KEY_STR, OFF(nm), def, NULL, 0, 0, fl, NULL, help}

#define S KF_SHAPE
#define NOHI KF_NO_HI
#define T KF_TRAIN

/* Every key of the configuration, in the order of --help and of the canonical text. */
static const key_def keys[] = {
    /* model */
    ENUM_KEY(arch, "memformer", arch_words, S, NULL,
             "model family: decoder-only transformer, or Memformer (encoder, memory, decoder)"),
    ENUM_KEY(proj, "hash", proj_words, S, NULL,
             "dense GEMM projections, or MemoryFormer hash-addressed lookup tables"),
    INT_KEY(d_model, "128", 1, 0, S | NOHI, NULL, "model width"),
    INT_KEY(n_heads, "4", 1, 0, S | NOHI, NULL, "attention heads; d_model must be a multiple"),
    INT_KEY(n_layers, "2", 1, TRAINER_MAX_LAYERS, S, applies_decoder,
            "transformer blocks (arch = decoder)"),
    INT_KEY(enc_layers, "1", 1, TRAINER_MAX_LAYERS, S, applies_memformer,
            "Memformer encoder layers; the last one writes the memory"),
    INT_KEY(dec_layers, "2", 1, TRAINER_MAX_LAYERS, S, applies_memformer,
            "Memformer decoder layers"),
    INT_KEY(seg_len, "64", 2, 0, S | NOHI, NULL, "tokens per segment"),
    INT_KEY(vocab, "256", 2, 65536, S, NULL,
            "vocabulary: 256 for bytes and pixels, up to 65536 for uint16 token files"),
    INT_KEY(mem_slots, "8", 1, 0, S | NOHI, applies_memory,
            "external memory slots, each a d_model vector"),
    FLT_KEY(write_temp, "0.25", 0, 0, S | NOHI | KF_LO_OPEN, applies_memory,
            "temperature dividing the memory writer's attention logits"),
    BOOL_KEY(forgetting, "on", S, applies_memory,
             "memory normalisation biased by a learnable vector per slot"),
    BOOL_KEY(memory, "on", S, applies_memformer,
             "external memory between segments (off: ablation without it)"),
    INT_KEY(tau, "8", 1, 16, S, applies_hash,
            "bits per hash chunk: d_model/tau tables of 2^tau rows per projection"),
    INT_KEY(expand_bits, "2", 0, 8, S, applies_hash,
            "extra bits per chunk inside the memory block (width d_model/tau*(tau+expand_bits))"),
    ENUM_KEY(score, "l1prob", score_words, S, applies_hash,
             "row weight: product of bit probabilities (prob), or that times the chunk's L1 "
             "norm (l1prob)"),
    FLT_KEY(hash_temp, "1", 0, 0, S | NOHI | KF_LO_OPEN, applies_hash_prob,
            "temperature of score = prob"),
    ENUM_KEY(pos, "rope", pos_words, S, NULL,
             "learned position table of seg_len rows, or rotary on part of every head"),
    FLT_KEY(rope_frac, "0.5", 0, 1, S | KF_LO_OPEN, applies_rope,
            "fraction of each head's dims that rotate (must give an even count)"),
    /* rollout */
    INT_KEY(horizon, "4", 1, 0, NOHI | T, NULL,
            "segments per rollout; one optimizer step per rollout (MRBP time horizon)"),
    ENUM_KEY(bptt, "mrbp", bptt_words, T, NULL,
             "memory replay back-propagation (one step's activations kept) or full BPTT (all "
             "kept); same gradients"),
    INT_KEY(streams, "8", 1, TRAINER_MAX_STREAMS, S, NULL,
            "sequences in flight over all ranks, each with its own memory and data cursor"),
    INT_KEY(stream_block, "auto", 1, TRAINER_MAX_STREAMS, KF_AUTO, NULL,
            "streams computed together as one batch; ranks own whole blocks. auto: streams/ranks "
            "(at most 16) under deterministic = fast, 4 under bitwise"),
    ENUM_KEY(deterministic, "fast", det_words, 0, NULL,
             "bitwise: the same bits on any rank count with the same stream_block (double "
             "sums); fast: float sums, the same bits run to run on the same rank count"),
    /* table parallelism */
    ENUM_KEY(table_strategy, "auto", strategy_words, 0, applies_hash,
             "how table groups are served across ranks: the planner's choice per group, or one "
             "for all (fetch rows, owner-side lookup, replicate); the same result (replicate under "
             "fast on 3+ ranks: to float rounding)"),
    FLT_KEY(row_cache_mb, "256", 0, 0, NOHI | KF_LO_OPEN, applies_hash,
            "MiB of fetched table rows a rank may hold; groups beyond it fetch for each call"),
    ENUM_KEY(row_format, "f32", rowfmt_words, S, applies_hash,
             "how hashed projections read table rows: f32, or rounded to bf16 (half the bytes "
             "read and fetched; master rows and Adam state stay f32)"),
    BOOL_KEY(share_rows, "on", 0, applies_hash,
             "ranks of one node read the table rows of each other's shards in place, from "
             "shared memory, rather than fetch them (same results)"),
    BOOL_KEY(share_exchange, "on", 0, applies_hash,
             "ranks of one node read the lookups, partials and gradients they exchange in place, "
             "from shared memory, rather than copy them through MPI (same results)"),
    FLT_KEY(net_gbps, "100", 0, 0, NOHI | KF_LO_OPEN, applies_hash,
            "network bandwidth per rank the table planner assumes, Gb/s"),
    FLT_KEY(net_latency_us, "20", 0, 0, NOHI, applies_hash,
            "time per exchange the table planner assumes, microseconds"),
    /* optimizer and schedule */
    FLT_KEY(lr, "0.001", 0, 0, NOHI | KF_LO_OPEN | T, NULL,
            "peak learning rate, reached after warmup"),
    INT_KEY(warmup, "50", 0, 0, NOHI | T, NULL, "steps of linear learning-rate warmup"),
    FLT_KEY(min_lr, "0.0001", 0, 0, NOHI | T, NULL, "learning rate at the end of the cosine decay"),
    FLT_KEY(weight_decay, "0.01", 0, 0, NOHI | T, NULL,
            "decoupled AdamW weight decay of dense matrices (none on table rows)"),
    FLT_KEY(grad_clip, "1", 0, 0, NOHI | T, NULL, "global gradient-norm limit (0: no clipping)"),
    FLT_KEY(beta1, "0.9", 0, 1, KF_HI_OPEN | T, NULL, "Adam first-moment decay"),
    FLT_KEY(beta2, "0.95", 0, 1, KF_HI_OPEN | T, NULL, "Adam second-moment decay"),
    FLT_KEY(adam_eps, "1e-08", 0, 0, NOHI | KF_LO_OPEN | T, NULL, "Adam denominator epsilon"),
    FLT_KEY(table_lr_scale, "1", 0, 0, NOHI | T, NULL,
            "learning-rate multiplier for hash-table rows (0 freezes them)"),
    I64_KEY(steps, "200", 1, T, "optimizer steps (rollouts) of the whole run"),
    I64_KEY(stop_after, "0", 0, T,
            "end this sitting with a checkpoint after this step, the schedule still spanning "
            "steps (0: run to steps; a resume starts from 0, and refuses a step already done)"),
    I64_KEY(seed, "1", 0, T, "seed of parameter and table initialisation (and of sampling)"),
    /* data, evaluation, files */
    STR_KEY(data, "fashion-mnist", S,
            "training data: fashion-mnist, brown, text:PATH, u8:PATH or u16:PATH[:VOCAB]"),
    STR_KEY(data_dir, "data", 0, "directory of the downloaded datasets"),
    BOOL_KEY(shuffle, "on", T, NULL,
             "training documents in a seeded order drawn afresh for every pass over the data "
             "(off: file order)"),
    I64_KEY(data_seed, "1", 0, T, "seed of the shuffled document order"),
    STR_KEY(val_data, "split", 0,
            "validation data: split (every 10th document of data, fashion-mnist's t10k file), "
            "or a spec as for data (text:PATH, ...) read whole"),
    INT_KEY(eval_every, "50", 0, 0, NOHI | T, NULL, "steps between validation passes (0: never)"),
    INT_KEY(eval_docs, "64", 0, 0, NOHI, NULL,
            "validation documents scored in each pass: the first eval_docs of the split, whole, "
            "the same for every model (0: all)"),
    INT_KEY(log_every, "10", 1, 0, NOHI | T, NULL, "steps between training-metric lines"),
    STR_KEY(run_dir, "runs/default", T, "directory of metrics, logs and checkpoints"),
    INT_KEY(ckpt_every, "100", 0, 0, NOHI | T, NULL,
            "steps between checkpoints (0: only at the end)"),
    FLT_KEY(ckpt_minutes, "0", 0, 0, NOHI | T, NULL,
            "also checkpoint when this many minutes have passed since the last one (0: never)"),
    INT_KEY(keep_ckpts, "3", 0, 0, NOHI | T, NULL,
            "newest checkpoints kept, older ones deleted (0: keep all)"),
    STR_KEY(init_from, "none", T,
            "a new run starts from this checkpoint's weights and tables, with fresh optimizer "
            "state, data cursors and memory (none: from the seed)"),
};
#define NKEYS ((int)(sizeof(keys) / sizeof(keys[0])))

#undef S
#undef NOHI
#undef T

/* Writes a formatted message into err (if any room); always returns -1 so callers can
 * `return config_fail(...)`. */
int config_fail(char *err, size_t n, const char *fmt, ...) {
    if (err && n > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Index of the key, reading '-' as '_'; -1 if unknown. */
static int find_key(const char *name) {
    char norm[64];
    size_t len = strlen(name);
    if (len == 0 || len >= sizeof norm) return -1;
    for (size_t i = 0; i <= len; i++) norm[i] = name[i] == '-' ? '_' : name[i];
    for (int k = 0; k < NKEYS; k++)
        if (strcmp(keys[k].name, norm) == 0) return k;
    return -1;
}

/* Keys that no longer exist, with what replaces them: a config file or command line that sets
 * one is refused with this message rather than read in another meaning; a checkpoint's stored
 * config may still hold one, and is read without it. */
static const struct {
    const char *name, *why;
} retired[] = {
    {"eval_segments",
     "eval_segments was replaced by eval_docs: validation now scores whole documents, the "
     "same ones for every model (eval_docs = N: the first N validation documents; 0: all)"},
};

/* The message for a retired key (with '-' read as '_'), or NULL. */
const char *config_retired_key(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof retired / sizeof retired[0]; i++) {
        const char *r = retired[i].name;
        size_t k = 0;
        while (k < len && r[k] && (name[k] == '-' ? '_' : name[k]) == r[k]) k++;
        if (k == len && r[k] == '\0') return retired[i].why;
    }
    return NULL;
}

bool trainer_config_has_key(const char *name) { return find_key(name) >= 0; }

const char *config_key_name(int k) { return k >= 0 && k < NKEYS ? keys[k].name : NULL; }

bool trainer_config_is_shape_key(const char *name) {
    int k = find_key(name);
    return k >= 0 && (keys[k].flags & KF_SHAPE);
}

static void *field(trainer_config *c, const key_def *d) { return (char *)c + d->offset; }
static const void *cfield(const trainer_config *c, const key_def *d) {
    return (const char *)c + d->offset;
}

static int get_int(const trainer_config *c, const key_def *d) {
    int v;
    memcpy(&v, cfield(c, d), sizeof v);
    return v;
}

static bool key_applies(const key_def *d, const trainer_config *c) {
    return d->applies == NULL || d->applies(c);
}

/* Integer bounds of a key, with the field type's limits standing in for "no bound". */
static void int_bounds(const key_def *d, int64_t *lo, int64_t *hi) {
    *lo = (int64_t)d->lo;
    if (d->flags & KF_NO_HI)
        *hi = d->type == KEY_INT ? INT_MAX : INT64_MAX;
    else
        *hi = (int64_t)d->hi;
}

/* "a positive integer", "an integer in 1..16", "a number in (0, 1]", "one of prob|l1prob". */
static void describe_expected(const key_def *d, char *buf, size_t n) {
    switch (d->type) {
    case KEY_INT:
    case KEY_I64: {
        int64_t lo, hi;
        int_bounds(d, &lo, &hi);
        if (d->flags & KF_NO_HI) {
            if (lo == 1 && (d->flags & KF_AUTO)) snprintf(buf, n, "a positive integer or auto");
            else if (lo == 1) snprintf(buf, n, "a positive integer");
            else if (lo == 0) snprintf(buf, n, "a non-negative integer");
            else snprintf(buf, n, "an integer >= %" PRId64, lo);
        } else {
            snprintf(buf, n, "an integer in %" PRId64 "..%" PRId64 "%s", lo, hi,
                     (d->flags & KF_AUTO) ? " or auto" : "");
        }
        break;
    }
    case KEY_FLOAT:
        if (d->flags & KF_NO_HI)
            snprintf(buf, n, "a number %s %g", (d->flags & KF_LO_OPEN) ? ">" : ">=", d->lo);
        else
            snprintf(buf, n, "a number in %c%g, %g%c", (d->flags & KF_LO_OPEN) ? '(' : '[', d->lo,
                     d->hi, (d->flags & KF_HI_OPEN) ? ')' : ']');
        break;
    case KEY_BOOL:
    case KEY_ENUM: {
        size_t used = (size_t)snprintf(buf, n, "one of ");
        for (int i = 0; d->words[i] && used < n; i++)
            used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? "|" : "", d->words[i]);
        break;
    }
    case KEY_STR:
        snprintf(buf, n, "a non-empty value of at most %d characters on one line, with no '#' "
                 "at its start or after a space or tab (config files read one there as a comment)",
                 TRAINER_CONFIG_STR - 1);
        break;
    }
}

static int bad_value(const key_def *d, const char *value, char *err, size_t n) {
    char want[256];
    describe_expected(d, want, sizeof want);
    if (value[0] == '\0') return config_fail(err, n, "%s has no value: expected %s", d->name, want);
    size_t len = strlen(value);
    if (len > 80) /* its start, so the message keeps room for what was expected */
        return config_fail(err, n, "%s = %.60s... (%zu characters): expected %s", d->name, value,
                           len, want);
    return config_fail(err, n, "%s = %s: expected %s", d->name, value, want);
}

static bool float_in_range(const key_def *d, double v) {
    if (!isfinite(v)) return false;
    if ((d->flags & KF_LO_OPEN) ? !(v > d->lo) : !(v >= d->lo)) return false;
    if (d->flags & KF_NO_HI) return true;
    return (d->flags & KF_HI_OPEN) ? v < d->hi : v <= d->hi;
}

/* A string value must survive a trip through a config file: no line breaks, and no '#'
 * after whitespace (the file reader would take it for a comment). */
static bool str_ok(const char *s, size_t len) {
    if (len == 0 || len >= TRAINER_CONFIG_STR) return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\n' || s[i] == '\r') return false;
        if (s[i] == '#' && i > 0 && (s[i - 1] == ' ' || s[i - 1] == '\t')) return false;
    }
    return s[0] != '#';
}

static bool is_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'; }

/* Trims s in place; returns the first non-space character. */
static char *trim(char *s) {
    while (is_space(*s)) s++;
    size_t len = strlen(s);
    while (len > 0 && is_space(s[len - 1])) s[--len] = '\0';
    return s;
}

/* Parses value for key d into the field of c; c is untouched on failure. */
static int set_key(trainer_config *c, const key_def *d, const char *value, char *err, size_t n) {
    switch (d->type) {
    case KEY_INT:
    case KEY_I64: {
        int64_t lo, hi;
        int_bounds(d, &lo, &hi);
        if ((d->flags & KF_AUTO) && strcmp(value, "auto") == 0) {
            int iv = 0;
            memcpy(field(c, d), &iv, sizeof iv);
            return 0;
        }
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (end != value && *end == '\0' && v > 0 && (errno == ERANGE || v > hi) &&
            (d->flags & KF_NO_HI))
            /* a number past the type's limit: the limit named, since the range names none */
            return config_fail(err, n, "%s = %.60s: too large (at most %" PRId64 ")", d->name,
                               value, hi);
        if (end == value || *end != '\0' || errno == ERANGE || v < lo || v > hi)
            return bad_value(d, value, err, n);
        if (d->type == KEY_INT) {
            int iv = (int)v;
            memcpy(field(c, d), &iv, sizeof iv);
        } else {
            int64_t lv = (int64_t)v;
            memcpy(field(c, d), &lv, sizeof lv);
        }
        return 0;
    }
    case KEY_FLOAT: {
        char *end;
        errno = 0;
        float v = strtof(value, &end);
        if (end != value && *end == '\0' && errno == ERANGE) /* the range is not what failed */
            return config_fail(err, n, "%s = %.60s: %s", d->name, value,
                               trainer_float_range_problem(v));
        if (end == value || *end != '\0' || errno == ERANGE || !float_in_range(d, v))
            return bad_value(d, value, err, n);
        memcpy(field(c, d), &v, sizeof v);
        return 0;
    }
    case KEY_BOOL: {
        static const char *const yes[] = {"on", "true", "yes", "1", NULL};
        static const char *const no[] = {"off", "false", "no", "0", NULL};
        for (int i = 0; yes[i]; i++) {
            if (strcmp(value, yes[i]) == 0) { *(bool *)field(c, d) = true; return 0; }
            if (strcmp(value, no[i]) == 0) { *(bool *)field(c, d) = false; return 0; }
        }
        return bad_value(d, value, err, n);
    }
    case KEY_ENUM:
        for (int i = 0; d->words[i]; i++) {
            if (strcmp(value, d->words[i]) == 0) {
                memcpy(field(c, d), &i, sizeof i);
                return 0;
            }
        }
        return bad_value(d, value, err, n);
    case KEY_STR: {
        size_t len = strlen(value);
        if (!str_ok(value, len)) return bad_value(d, value, err, n);
        /* Zero the whole buffer so equal configurations are equal byte for byte. */
        char *dst = field(c, d);
        memset(dst, 0, TRAINER_CONFIG_STR);
        memcpy(dst, value, len);
        return 0;
    }
    }
    return config_fail(err, n, "%s: unhandled key type", d->name);
}

void trainer_config_defaults(trainer_config *c) {
    memset(c, 0, sizeof *c);
    for (int k = 0; k < NKEYS; k++) {
        char err[256];
        int rc = set_key(c, &keys[k], keys[k].def, err, sizeof err);
        LAYER_ASSERT(rc == 0 && "default of a config key does not parse");
    }
}

int trainer_config_set(trainer_config *c, const char *key, const char *value, char *err,
                       size_t n) {
    int k = find_key(key);
    const char *why = k < 0 ? config_retired_key(key, strlen(key)) : NULL;
    if (why) return config_fail(err, n, "%s", why);
    if (k < 0) return config_fail(err, n, "unknown config key '%s' (see memtrain --help)", key);
    size_t len = strlen(value);
    char *copy = layer_xmalloc(len + 1);
    memcpy(copy, value, len + 1);
    int rc = set_key(c, &keys[k], trim(copy), err, n);
    free(copy);
    return rc;
}

/* The start of a comment: '#' at the start of the line or after whitespace; NULL if none. */
static char *find_comment(char *line) {
    for (char *p = line; *p; p++)
        if (*p == '#' && (p == line || p[-1] == ' ' || p[-1] == '\t')) return p;
    return NULL;
}

/* The `key = value` lines of f, named `path` in messages; `stored`: a checkpoint's config,
 * whose retired keys are skipped. */
static int load_stream(trainer_config *c, FILE *f, const char *path, int stored, char *err,
                       size_t n) {
    int seen[sizeof(keys) / sizeof(keys[0])] = {0}; /* line where each key was set, 0 = not */
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    char msg[512];
    ssize_t got;
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        /* a NUL byte would end the line's text early, and what follows it would be lost */
        if (memchr(line, '\0', (size_t)got)) {
            rc = config_fail(err, n, "%s:%d: a NUL byte in the line (not a text file?)", path,
                             lineno);
            break;
        }
        /* a UTF-8 byte-order mark, as some Windows editors write at the start of a file */
        if (lineno == 1 && strncmp(line, "\xef\xbb\xbf", 3) == 0)
            memmove(line, line + 3, strlen(line + 3) + 1);
        char *hash = find_comment(line);
        if (hash) *hash = '\0';
        char *s = trim(line);
        if (*s == '\0') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = config_fail(err, n, "%s:%d: expected 'key = value', got '%s'", path, lineno, s);
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        if (*key == '\0') {
            rc = config_fail(err, n, "%s:%d: no key before '='", path, lineno);
            break;
        }
        int k = find_key(key);
        const char *why = k < 0 ? config_retired_key(key, strlen(key)) : NULL;
        if (why && stored) continue;
        if (why) {
            rc = config_fail(err, n, "%s:%d: %s", path, lineno, why);
            break;
        }
        if (k < 0) {
            char near[80];
            trainer_config_suggest(key, NULL, near, sizeof near);
            rc = config_fail(err, n, "%s:%d: unknown config key '%s' (%s%s%ssee memtrain --help)",
                             path, lineno, key, near[0] ? "did you mean " : "",
                             near[0] ? near + 2 : "", near[0] ? "? " : "");
            break;
        }
        if (seen[k]) {
            rc = config_fail(err, n, "%s:%d: key '%s' is already set on line %d", path, lineno,
                      keys[k].name, seen[k]);
            break;
        }
        seen[k] = lineno;
        if (set_key(c, &keys[k], value, msg, sizeof msg) != 0) {
            rc = config_fail(err, n, "%s:%d: %s", path, lineno, msg);
            break;
        }
    }
    if (rc == 0 && ferror(f))
        rc = config_fail(err, n, "error reading config file '%s': %s", path, strerror(errno));
    free(line);
    return rc;
}

int trainer_config_load_file(trainer_config *c, const char *path, char *err, size_t n) {
    char why[512];
    FILE *f = io_fopen_regular(path, "r", why, sizeof why);
    if (!f) return config_fail(err, n, "config file %s", why);
    int rc = load_stream(c, f, path, 0, err, n);
    fclose(f);
    return rc;
}

int trainer_config_load_text(trainer_config *c, const char *text, const char *name, char *err,
                             size_t n) {
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    if (!f) return config_fail(err, n, "%s: cannot read the config text", name);
    /* a checkpoint written before shuffling existed read its documents in file order */
    c->shuffle = false;
    int rc = load_stream(c, f, name, 1, err, n);
    fclose(f);
    return rc;
}

/* Shortest decimal text that reads back (strtof) as exactly v. */
static void format_float(float v, char *buf, size_t n) {
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) return;
    }
}

/* The value of key d in c, as the text trainer_config_set reads back. */
static void format_value(const trainer_config *c, const key_def *d, char *buf, size_t n) {
    switch (d->type) {
    case KEY_INT:
        if ((d->flags & KF_AUTO) && get_int(c, d) == 0)
            snprintf(buf, n, "auto");
        else
            snprintf(buf, n, "%d", get_int(c, d));
        break;
    case KEY_I64: {
        int64_t v;
        memcpy(&v, cfield(c, d), sizeof v);
        snprintf(buf, n, "%" PRId64, v);
        break;
    }
    case KEY_FLOAT: {
        float v;
        memcpy(&v, cfield(c, d), sizeof v);
        format_float(v, buf, n);
        break;
    }
    case KEY_BOOL:
        snprintf(buf, n, "%s", *(const bool *)cfield(c, d) ? "on" : "off");
        break;
    case KEY_ENUM: {
        int v = get_int(c, d);
        int count = 0;
        while (d->words[count]) count++;
        snprintf(buf, n, "%s", v >= 0 && v < count ? d->words[v] : "?");
        break;
    }
    case KEY_STR:
        snprintf(buf, n, "%.*s", TRAINER_CONFIG_STR - 1, (const char *)cfield(c, d));
        break;
    }
}

/* Checks the current value of one key against its own type and range. */
static int check_key(const trainer_config *c, const key_def *d, char *err, size_t n) {
    char text[TRAINER_CONFIG_STR + 32];
    format_value(c, d, text, sizeof text);
    switch (d->type) {
    case KEY_INT:
    case KEY_I64: {
        int64_t lo, hi, v;
        int_bounds(d, &lo, &hi);
        if (d->type == KEY_INT) v = get_int(c, d);
        else memcpy(&v, cfield(c, d), sizeof v);
        if ((d->flags & KF_AUTO) && v == 0) return 0;
        if (v < lo || v > hi) return bad_value(d, text, err, n);
        return 0;
    }
    case KEY_FLOAT: {
        float v;
        memcpy(&v, cfield(c, d), sizeof v);
        return float_in_range(d, v) ? 0 : bad_value(d, text, err, n);
    }
    case KEY_BOOL:
        return 0;
    case KEY_ENUM: {
        int v = get_int(c, d), count = 0;
        while (d->words[count]) count++;
        if (v >= 0 && v < count) return 0;
        char num[16];
        snprintf(num, sizeof num, "%d", v);
        return bad_value(d, num, err, n);
    }
    case KEY_STR: {
        const char *s = cfield(c, d);
        size_t len = strnlen(s, TRAINER_CONFIG_STR);
        return str_ok(s, len) ? 0 : bad_value(d, text, err, n);
    }
    }
    return 0;
}

const char *trainer_float_range_problem(float v) {
    return fabsf(v) < 1.0f ? "too small for a float" : "too large for a float";
}

int trainer_config_rope_dim(const trainer_config *c) {
    if (c->pos != TRAINER_POS_ROPE || c->n_heads <= 0) return 0;
    double rot = (double)c->rope_frac * (c->d_model / c->n_heads);
    return (int)lround(rot);
}

int trainer_config_stream_block(const trainer_config *c, int P) {
    int S = c->streams > 0 ? c->streams : 1;
    /* a block past the streams is one block of them all: the same batch */
    if (c->stream_block != TRAINER_STREAM_BLOCK_AUTO)
        return c->stream_block < S ? c->stream_block : S;
    if (c->deterministic == TRAINER_DET_BITWISE)
        return S < TRAINER_STREAM_BLOCK_BITWISE ? S : TRAINER_STREAM_BLOCK_BITWISE;
    if (P < 1) P = 1;
    int b = (S + P - 1) / P;
    if ((S + b - 1) / b < P) b = S / P > 0 ? S / P : 1; /* every rank needs a block */
    int parts = (b + TRAINER_STREAM_BLOCK_CAP - 1) / TRAINER_STREAM_BLOCK_CAP;
    return (b + parts - 1) / parts;
}

int trainer_config_validate(const trainer_config *c, char *err, size_t n) {
    for (int k = 0; k < NKEYS; k++)
        if (check_key(c, &keys[k], err, n) != 0) return -1;
    if (c->d_model % c->n_heads != 0)
        return config_fail(err, n, "n_heads = %d: d_model (%d) must be a multiple of n_heads", c->n_heads,
                    c->d_model);
    if (c->proj == TRAINER_PROJ_HASH) {
        if (c->d_model % c->tau != 0)
            return config_fail(err, n, "tau = %d: d_model (%d) must be a multiple of tau when proj = hash",
                        c->tau, c->d_model);
        if (c->tau + c->expand_bits > 16)
            return config_fail(err, n,
                        "tau + expand_bits = %d + %d: must be at most 16 (the memory block's "
                        "tables have 2^(tau+expand_bits) rows)",
                        c->tau, c->expand_bits);
    }
    if (c->pos == TRAINER_POS_ROPE) {
        int hs = c->d_model / c->n_heads;
        double rot = (double)c->rope_frac * hs;
        long r = lround(rot);
        /* Tolerance for a decimal rope_frac such as 0.3 stored as the nearest float. */
        if (fabs(rot - (double)r) > 1e-4 * hs || r < 2 || r % 2 != 0) {
            char frac[32];
            format_float(c->rope_frac, frac, sizeof frac);
            return config_fail(err, n,
                        "rope_frac = %s: rope_frac * head size (d_model/n_heads = %d) = %g must be "
                        "an even whole number >= 2",
                        frac, hs, rot);
        }
    }
    if (c->min_lr > c->lr) {
        char a[32], b[32];
        format_float(c->min_lr, a, sizeof a);
        format_float(c->lr, b, sizeof b);
        return config_fail(err, n, "min_lr = %s: must not exceed lr (%s)", a, b);
    }
    if ((int64_t)c->warmup > c->steps)
        return config_fail(err, n, "warmup = %d: must not exceed steps (%" PRId64 ")", c->warmup,
                    c->steps);
    if (c->stop_after > c->steps)
        return config_fail(err, n, "stop_after = %" PRId64 ": must not exceed steps (%" PRId64 ")",
                    c->stop_after, c->steps);
    return 0;
}

void trainer_config_help(FILE *f) {
    fprintf(f,
            "Configuration keys. A run reads `key = value` lines from --config FILE ('#' starts a\n"
            "comment); --key=value on the command line overrides the file. Keys marked * are shape\n"
            "keys: a resumed run must keep the checkpoint's value.\n\n");
    fprintf(f, "  %-16s %-14s %s\n", "key", "default", "meaning");
    for (int k = 0; k < NKEYS; k++) {
        const key_def *d = &keys[k];
        char name[40], words[96] = "";
        snprintf(name, sizeof name, "%s%s", d->name, (d->flags & KF_SHAPE) ? "*" : "");
        if (d->type == KEY_ENUM || d->type == KEY_BOOL) {
            size_t used = 0;
            for (int i = 0; d->words[i] && used < sizeof words; i++)
                used += (size_t)snprintf(words + used, sizeof words - used, "%s%s", i ? "|" : "",
                                         d->words[i]);
            if (used < sizeof words) snprintf(words + used, sizeof words - used, ": ");
        }
        fprintf(f, "  %-16s %-14s %s%s\n", name, d->def, words, d->help);
    }
}

size_t trainer_config_to_text(const trainer_config *c, char *buf, size_t n) {
    size_t total = 0;
    for (int k = 0; k < NKEYS; k++) {
        char value[TRAINER_CONFIG_STR + 32];
        format_value(c, &keys[k], value, sizeof value);
        int len = snprintf(total < n ? buf + total : NULL, total < n ? n - total : 0, "%s = %s\n",
                           keys[k].name, value);
        total += (size_t)len;
    }
    if (n > 0 && total >= n) buf[n - 1] = '\0';
    return total;
}

static bool same_value(const trainer_config *a, const trainer_config *b, const key_def *d) {
    switch (d->type) {
    case KEY_INT:
    case KEY_ENUM:
        return get_int(a, d) == get_int(b, d);
    case KEY_I64:
        return memcmp(cfield(a, d), cfield(b, d), sizeof(int64_t)) == 0;
    case KEY_FLOAT: {
        float x, y;
        memcpy(&x, cfield(a, d), sizeof x);
        memcpy(&y, cfield(b, d), sizeof y);
        return x == y;
    }
    case KEY_BOOL:
        return *(const bool *)cfield(a, d) == *(const bool *)cfield(b, d);
    case KEY_STR:
        return strncmp(cfield(a, d), cfield(b, d), TRAINER_CONFIG_STR) == 0;
    }
    return false;
}

/* Counts and lists the keys that differ and fall in the wanted class (shape or not). */
static int diff_keys(const trainer_config *a, const trainer_config *b, bool want_shape, char *out,
                     size_t n) {
    int count = 0;
    size_t used = 0;
    if (n > 0) out[0] = '\0';
    for (int k = 0; k < NKEYS; k++) {
        const key_def *d = &keys[k];
        if (same_value(a, b, d)) continue;
        bool shape = (d->flags & KF_SHAPE) && key_applies(d, a) && key_applies(d, b);
        if (shape != want_shape) continue;
        count++;
        if (used + 1 >= n) continue;
        char va[TRAINER_CONFIG_STR + 32], vb[TRAINER_CONFIG_STR + 32];
        format_value(a, d, va, sizeof va);
        format_value(b, d, vb, sizeof vb);
        int len = snprintf(out + used, n - used, "%s%s (%s -> %s)", count > 1 ? ", " : "", d->name,
                           va, vb);
        used = used + (size_t)len < n ? used + (size_t)len : n - 1;
    }
    return count;
}

int trainer_config_diff_shape(const trainer_config *a, const trainer_config *b, char *keys_out,
                              size_t n) {
    return diff_keys(a, b, true, keys_out, n);
}

int trainer_config_diff_other(const trainer_config *a, const trainer_config *b, char *keys_out,
                              size_t n) {
    return diff_keys(a, b, false, keys_out, n);
}

const char *trainer_config_training_differs(const trainer_config *a, const trainer_config *b,
                                           const char *except) {
    for (int k = 0; k < NKEYS; k++)
        if ((keys[k].flags & KF_TRAIN) && !(except && strcmp(keys[k].name, except) == 0) &&
            !same_value(a, b, &keys[k]))
            return keys[k].name;
    return NULL;
}

int trainer_config_unused(const trainer_config *c, char *keys_out, size_t n) {
    trainer_config d;
    trainer_config_defaults(&d);
    int count = 0;
    size_t used = 0;
    if (n > 0) keys_out[0] = '\0';
    for (int k = 0; k < NKEYS; k++) {
        const key_def *kd = &keys[k];
        if (key_applies(kd, c) || same_value(c, &d, kd)) continue;
        count++;
        if (used + 1 >= n) continue;
        int len = snprintf(keys_out + used, n - used, "%s%s", count > 1 ? ", " : "", kd->name);
        used = used + (size_t)len < n ? used + (size_t)len : n - 1;
    }
    return count;
}
