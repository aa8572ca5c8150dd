/* Using a checkpoint: validation perplexity, and sampling images or text from the model. */
#ifndef MEMTRAIN_TRAINER_GENERATE_H
#define MEMTRAIN_TRAINER_GENERATE_H

#include "comm/comm.h"
#include "trainer/config.h"

typedef struct trainer_sample_options {
    const char *out;    /* PNG path for images (default <run_dir>/samples.png) */
    const char *prompt; /* text prompt (text data), may be NULL */
    int count;          /* images to generate, 1..TRAINER_SAMPLE_MAX_COUNT */
    int length;         /* bytes of text to generate, 1..TRAINER_SAMPLE_MAX_LENGTH */
    float temperature;  /* softmax temperature of the sampler, in (0, 1000] */
} trainer_sample_options;

#define TRAINER_SAMPLE_MAX_COUNT 65536
#define TRAINER_SAMPLE_MAX_LENGTH 10000000

/* Reads --count, --length and --temperature from their command-line text (NULL when not
 * given) into o, defaults (16, 400, 1) for those not given; out and prompt are left alone.
 * The checks and messages are those of config keys: "--count = -5: expected an integer in
 * 1..65536", "--temperature = nan: expected a number in (0, 1000]", "--count has no value",
 * and an option given to another command than sample ("--count is an option of memtrain
 * sample, not of memtrain train"). Returns 0, or -1 with the message in err. */
int trainer_sample_options_read(trainer_sample_options *o, const char *cmd, const char *count,
                                const char *length, const char *temperature, char *err,
                                size_t n);

/* Loads the checkpoint `path` into a model built from cfg and prints (rank 0) the validation
 * perplexity of cfg's data. Collective. Returns 0; user errors end the job on every rank. */
int trainer_eval_checkpoint(comm_ctx *comm, const trainer_config *cfg, const char *path);

/* Samples from the checkpoint's model, token by token, segment by segment with the memory
 * carried as in training. Image data (fashion-mnist): opt->count images of 28x28 pixels
 * written as one PNG grid; text: a continuation of opt->prompt printed to stdout. Every rank
 * computes the same samples (the table lookups are collective); rank 0 writes them.
 * Returns 0; user errors end the job on every rank. */
int trainer_sample_checkpoint(comm_ctx *comm, const trainer_config *cfg, const char *path,
                              const trainer_sample_options *opt);

/* Prints (rank 0) the step of checkpoint `path`, the first values of bucket 0 of the first
 * table, and of stream 0's carried memory, as stored: a reference for other readers (h5py).
 * Collective. Returns 0; user errors end the job on every rank. */
int trainer_inspect_checkpoint(comm_ctx *comm, const trainer_config *cfg, const char *path);

#endif
