/* Dense parameter registry, allocation and deterministic initialisation. */
#include "trainer/base/params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/common.h"

void trainer_params_init(trainer_params *p) { memset(p, 0, sizeof(*p)); }

size_t trainer_params_add(trainer_params *p, const char *name, size_t size, trainer_init init,
                          float std, int decay) {
    LAYER_ASSERT(p->data == NULL);
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 64;
        p->t = layer_xrealloc(p->t, (size_t)p->cap * sizeof(*p->t));
    }
    trainer_tensor *t = &p->t[p->n++];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    /* 16-float alignment keeps every tensor on its own 64-byte line for the vector kernels */
    t->off = p->total;
    t->size = size;
    t->init = init;
    t->std = std;
    t->decay = decay;
    p->total += (size + 15) & ~(size_t)15;
    return t->off;
}

uint64_t trainer_seed_for(uint64_t seed, const char *name, uint64_t extra) {
    uint64_t h = 1469598103934665603ull ^ (seed * 0x9e3779b97f4a7c15ull);
    for (const char *c = name; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
    return h ^ (extra * 0xd1b54a32d192ed03ull);
}

void trainer_params_alloc(trainer_params *p, uint64_t seed) {
    size_t bytes = (p->total ? p->total : 16) * sizeof(float);
    p->data = layer_xaligned(bytes);
    p->grad = layer_xaligned(bytes);
    p->m = layer_xaligned(bytes);
    p->v = layer_xaligned(bytes);
    p->grad64 = layer_xcalloc(p->total ? p->total : 1, sizeof(double));
    memset(p->data, 0, bytes);
    memset(p->grad, 0, bytes);
    memset(p->m, 0, bytes);
    memset(p->v, 0, bytes);
    for (int i = 0; i < p->n; i++) {
        trainer_tensor *t = &p->t[i];
        float *x = p->data + t->off;
        if (t->init == TRAINER_INIT_ONES) {
            for (size_t j = 0; j < t->size; j++) x[j] = 1.0f;
        } else if (t->init == TRAINER_INIT_NORMAL) {
            layer_rng r;
            layer_rng_seed(&r, trainer_seed_for(seed, t->name, 0));
            layer_fill_normal(x, t->size, t->std, &r);
        }
    }
}

void trainer_params_release(trainer_params *p) {
    free(p->t);
    free(p->data);
    free(p->grad);
    free(p->grad64);
    free(p->m);
    free(p->v);
    memset(p, 0, sizeof(*p));
}

void trainer_params_fold(trainer_params *p) {
    for (size_t i = 0; i < p->total; i++) {
        p->grad64[i] += p->grad[i];
        p->grad[i] = 0.0f;
    }
}

void trainer_params_unfold(trainer_params *p) {
    for (size_t i = 0; i < p->total; i++) {
        p->grad[i] = (float)p->grad64[i];
        p->grad64[i] = 0.0;
    }
}
