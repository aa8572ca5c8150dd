/* memtrain sample: images or text drawn from a checkpoint's model, and the sampler's options. */
#ifndef MEMTRAIN_TRAINER_SAMPLE_H
#define MEMTRAIN_TRAINER_SAMPLE_H

#include "comm/comm.h"
#include "trainer/config/config.h"

typedef struct trainer_sample_options {
    const char *out;    /* PNG path for images, a new file (never overwritten); or NULL: */
    const char *out_dir; /* samples.png in out_dir (cfg->run_dir when NULL too), or the first
                            samples-N.png (N = 2, 3, ...) that does not exist when written */
    const char *prompt; /* text prompt (text data), may be NULL */
    int count;          /* images to generate, 1..TRAINER_SAMPLE_MAX_COUNT */
    int length;         /* bytes of text to generate, 1..TRAINER_SAMPLE_MAX_LENGTH */
    float temperature;  /* softmax temperature of the sampler, in [0, 1000]; 0: the most
                           likely token (argmax) */
    int top_k;          /* draw among the top_k most likely tokens only (0: all) */
    float top_p;        /* and among the fewest whose probability sums to top_p, in (0, 1] */
    int scale;          /* screen pixels per image pixel in the PNG grid, 1..32 */
} trainer_sample_options;

#define TRAINER_SAMPLE_MAX_COUNT 65536
#define TRAINER_SAMPLE_MAX_LENGTH 10000000

/* The sample options' command-line text, NULL for those not given. */
typedef struct trainer_sample_args {
    const char *count, *length, *temperature, *top_k, *top_p, *scale;
} trainer_sample_args;

/* Reads the sample options into o, defaults (--count 16, --length 400, --temperature 1,
 * --top-k 0, --top-p 1, --scale 4) for those not given; out and prompt are left alone. The
 * checks and messages are those of config keys: "--count = -5: expected an integer in
 * 1..65536", "--temperature = nan: expected a number in [0, 1000]", "--count has no value",
 * and an option given to another command than sample ("--count is an option of memtrain
 * sample, not of memtrain train"). Returns 0, or -1 with the message in err. */
int trainer_sample_options_read(trainer_sample_options *o, const char *cmd,
                                const trainer_sample_args *a, char *err, size_t n);

/* Draws a token from logits (V) at temperature t (0: the argmax, the lowest index among
 * ties), among the top_k most likely (0: all) and the fewest whose probability sums to
 * top_p; u in [0, 1) is the uniform draw. Exposed for tests. */
int32_t trainer_sample_draw(const float *logits, int V, float t, int top_k, float top_p, double u);

/* Samples from the checkpoint's model, token by token, segment by segment with the memory
 * carried as in training. Image data (io_dataset_image_side: fashion-mnist): opt->count images
 * written as one PNG grid, each pixel opt->scale screen pixels, each image numbered and the
 * grid headed by the step and the sampling settings; text: a continuation of opt->prompt
 * printed to stdout. Every rank computes the same samples (the table lookups are
 * collective, the random stream is seeded by the config's seed); rank 0 writes them.
 * Returns 0; user errors end the job on every rank. */
int trainer_sample_checkpoint(comm_ctx *comm, const trainer_config *cfg, const char *path,
                              const trainer_sample_options *opt);

#endif
