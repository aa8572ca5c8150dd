/* Chained-block bump allocator behind trainer_arena. */
#include "trainer/base/arena.h"

#include <stdlib.h>
#include <string.h>

#include "layers/common.h"

typedef struct arena_block {
    struct arena_block *next;
    size_t size, used;
    unsigned char *data;
} arena_block;

struct trainer_arena {
    arena_block *head, *cur;
    size_t block_bytes, in_use, peak;
};

trainer_arena *trainer_arena_create(size_t block_bytes) {
    trainer_arena *a = layer_xcalloc(1, sizeof(*a));
    a->block_bytes = block_bytes < 4096 ? 4096 : block_bytes;
    return a;
}

void trainer_arena_free(trainer_arena *a) {
    if (!a) return;
    for (arena_block *b = a->head, *n; b; b = n) {
        n = b->next;
        free(b->data);
        free(b);
    }
    free(a);
}

static arena_block *block_new(size_t size) {
    arena_block *b = layer_xcalloc(1, sizeof(*b));
    b->size = size;
    b->data = layer_xaligned(size);
    return b;
}

static void *arena_bytes(trainer_arena *a, size_t bytes) {
    bytes = (bytes + 63) & ~(size_t)63;
    if (bytes == 0) bytes = 64;
    for (;;) {
        if (a->cur && a->cur->size - a->cur->used >= bytes) break;
        size_t size = bytes > a->block_bytes ? bytes : a->block_bytes;
        if (a->cur && a->cur->next) { /* reuse a kept block, or replace one too small for this:
                                         requests that grow call by call keep the chain short */
            arena_block *nx = a->cur->next;
            if (nx->size < bytes) { /* at least doubled, so a slow growth replaces rarely */
                arena_block *b = block_new(size > 2 * nx->size ? size : 2 * nx->size);
                b->next = nx->next;
                a->cur->next = b;
                free(nx->data);
                free(nx);
            }
            a->cur = a->cur->next;
            a->cur->used = 0;
            continue;
        }
        arena_block *b = block_new(size);
        if (!a->head) a->head = b;
        else if (a->cur) { /* keep later blocks of the chain behind the new one */
            b->next = a->cur->next;
            a->cur->next = b;
        }
        a->cur = b;
    }
    void *p = a->cur->data + a->cur->used;
    a->cur->used += bytes;
    a->in_use += bytes;
    if (a->in_use > a->peak) a->peak = a->in_use;
    return p;
}

float *trainer_arena_floats(trainer_arena *a, size_t n) { return arena_bytes(a, n * sizeof(float)); }

float *trainer_arena_zeros(trainer_arena *a, size_t n) {
    float *p = arena_bytes(a, n * sizeof(float));
    memset(p, 0, n * sizeof(float));
    return p;
}

int32_t *trainer_arena_ints(trainer_arena *a, size_t n) { return arena_bytes(a, n * sizeof(int32_t)); }

void *trainer_arena_struct(trainer_arena *a, size_t n) {
    void *p = arena_bytes(a, n);
    memset(p, 0, n);
    return p;
}

void trainer_arena_reset(trainer_arena *a) {
    a->cur = a->head;
    if (a->cur) a->cur->used = 0;
    a->in_use = 0;
}

size_t trainer_arena_peak(const trainer_arena *a) { return a->peak; }

size_t trainer_arena_reserved(const trainer_arena *a) {
    size_t n = 0;
    for (const arena_block *b = a->head; b; b = b->next) n += b->size;
    return n;
}
