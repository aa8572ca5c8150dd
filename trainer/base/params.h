/* Registry of the dense parameters: one block each for values, gradients and Adam moments, tensors by offset. */
#ifndef MEMTRAIN_TRAINER_PARAMS_H
#define MEMTRAIN_TRAINER_PARAMS_H

#include <stddef.h>
#include <stdint.h>

typedef enum trainer_init {
    TRAINER_INIT_NORMAL = 0, /* N(0, std^2) */
    TRAINER_INIT_ONES,
    TRAINER_INIT_ZEROS,
} trainer_init;

typedef struct trainer_tensor {
    char name[64];
    size_t off, size; /* in floats, within the block */
    trainer_init init;
    float std;
    int decay; /* AdamW weight decay applies (matrices yes; norms, biases, embeddings' positions no) */
} trainer_tensor;

/* All dense parameters of a model. data/grad/m/v are one allocation each of `total` floats;
 * the gradient block is contiguous so one all-reduce covers it. */
typedef struct trainer_params {
    int n, cap;
    trainer_tensor *t;
    size_t total;
    float *data, *grad, *m, *v;
    double *grad64; /* sum of the folded per-stream gradients */
} trainer_params;

void trainer_params_init(trainer_params *p);
/* Registers a tensor of `size` floats and returns its offset. Only before trainer_params_alloc. */
size_t trainer_params_add(trainer_params *p, const char *name, size_t size, trainer_init init,
                          float std, int decay);
/* Allocates the four blocks and initialises values: each tensor from its own stream seeded by
 * (seed, name), so values do not depend on registration order or on the rank count. */
void trainer_params_alloc(trainer_params *p, uint64_t seed);
void trainer_params_release(trainer_params *p);
/* grad64 += grad, grad = 0: one stream's gradient joins the step's sum in double, so the sum
 * does not depend on how streams are split over ranks (to float rounding, almost always). */
void trainer_params_fold(trainer_params *p);
/* grad = (float)grad64, grad64 = 0: after the sum over ranks. */
void trainer_params_unfold(trainer_params *p);
/* Seed for the stream of a named tensor. */
uint64_t trainer_seed_for(uint64_t seed, const char *name, uint64_t extra);

#endif
