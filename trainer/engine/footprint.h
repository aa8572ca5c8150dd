/* Memory a run needs per rank, estimated from its config before anything is allocated. */
#ifndef MEMTRAIN_TRAINER_FOOTPRINT_H
#define MEMTRAIN_TRAINER_FOOTPRINT_H

#include <stddef.h>

#include "trainer/config/config.h"

/* Parameters and tables come from the model's own definition (a define_only model: what
 * trainer_model_create would register, nothing allocated) and the table store's account of it
 * (trainer_tables_account_of: the planner's choices, bytes per entry, the kept fetched rows),
 * so they cannot disagree with the engine. Activations and buffers are this file's arithmetic
 * over what rollout.c and blocks.c allocate: when those change, change segment_floats with
 * them. The test check_footprint compares the estimate with what a built model and a trained
 * rollout report (parameter and table bytes exactly, activation arenas within a factor). */

typedef enum trainer_footprint_use {
    TRAINER_USE_TRAIN,  /* rollouts of one stream at a time, plus evaluation */
    TRAINER_USE_EVAL,   /* forward passes of this rank's streams at once */
    TRAINER_USE_SAMPLE, /* forward passes of `batch` sequences at once */
} trainer_footprint_use;

/* Bytes per rank, by what holds them. */
typedef struct trainer_footprint {
    double data;        /* both data splits as loaded (uint16 tokens, document offsets) */
    double data_load;   /* the most held while a split loads (file, growing token array) */
    double dense;       /* dense parameters: values, gradient (float and double), Adam m, v */
    double tables;      /* this rank's table units: rows, Adam m, v, gradient (float, double) */
    double caches;      /* every group's row cache (rows, row gradients, double sums, index)
                           and the exchange buffers: on every rank, whatever it owns */
    double activations; /* the activation arenas: one segment of one stream (MRBP), horizon
                           segments (full BPTT), or one segment of all streams at once
                           (evaluation, sampling), whichever is largest for the use */
    double buffers;     /* rollout inputs, replay buffer (horizon + 1 memories per stream),
                           carried memories, sampled tokens */
    double base;        /* MPI, HDF5, OpenBLAS and the program itself */
    double segment;     /* what one segment's forward and backward of one stream put in its
                           arena (train), or one forward of all sequences (eval, sample),
                           before the arena rounds up to its blocks */
    double total;       /* what the rank needs at its peak */
    int batch;          /* sequences the largest activation arena holds at once: 1 for a
                           training segment, a rank's streams for evaluation, or --count */
    trainer_footprint_use act_use; /* which use that arena is for */
} trainer_footprint;

/* Estimates the footprint of cfg on P ranks for `use`; `batch` is the number of sequences
 * sampled at once (TRAINER_USE_SAMPLE only). data_resident and data_loading come from
 * io_dataset_size_hint (0 when unknown). The config must pass trainer_footprint_check_ranges
 * (a table group's rows in an int); then any config, however large, gives finite numbers,
 * computed in double, and nothing is allocated beyond the model's description. */
void trainer_footprint_estimate(const trainer_config *cfg, int P, trainer_footprint_use use,
                                int batch, double data_resident, double data_loading,
                                trainer_footprint *f);

/* The data's bytes for trainer_footprint_estimate from io_dataset_size_hint: in training a
 * rank keeps only its streams' classes of the training split (io_dataset_keep_streams; the
 * busiest rank's share), in evaluation both splits whole, and sampling none (it reads only
 * the checkpoint). */
void trainer_footprint_data(const trainer_config *cfg, int P, trainer_footprint_use use,
                            double *resident, double *loading);

/* One line for the start of a run: "about 1.23 GiB per rank: tables 0.80, caches 0.20, ...". */
void trainer_footprint_describe(const trainer_footprint *f, char *buf, size_t n);

/* The largest part of f and the config keys that drive it, with their values, e.g.
 * "tables and their Adam state 40.0 GiB, driven by d_model = 65536, tau = 8, expand_bits = 2,
 * dec_layers = 2, enc_layers = 1 (fewer per rank on more ranks)". */
void trainer_footprint_drivers(const trainer_config *cfg, const trainer_footprint *f, char *buf,
                               size_t n);

/* Products of config values the engine holds in an int (tokens of a batch, rows of a table
 * group, the cells of an attention matrix, the floats of a memory): returns 0, or -1 with a
 * message naming the keys and the product when one exceeds 2^31 - 1. `batch` as above (0
 * otherwise). */
int trainer_footprint_check_ranges(const trainer_config *cfg, int P, int batch, char *err,
                                   size_t n);

/* "1.23 GiB", "456.7 MiB", "12.0 KiB" into buf. */
void trainer_footprint_bytes(double bytes, char *buf, size_t n);

#endif
