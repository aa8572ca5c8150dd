/* Chained-block bump allocator behind trainer_arena. */
#include "trainer/base/arena.h"

#include <stdio.h>
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

/* Blocks are mappings of their own (layer_xmap: huge pages from 2 MiB on), so a freed block's
 * pages go back to the system at once (from the heap they would stay resident behind later
 * allocations). */
static void free_chain(arena_block *b) {
    for (arena_block *n; b; b = n) {
        n = b->next;
        layer_unmap(b->data, b->size);
        free(b);
    }
}

trainer_arena *trainer_arena_create(size_t block_bytes) {
    trainer_arena *a = layer_xcalloc(1, sizeof(*a));
    a->block_bytes = block_bytes < 4096 ? 4096 : block_bytes;
    return a;
}

void trainer_arena_free(trainer_arena *a) {
    if (!a) return;
    free_chain(a->head);
    free(a);
}

static arena_block *block_new(size_t size) {
    arena_block *b = layer_xcalloc(1, sizeof(*b));
    b->size = layer_map_span(size); /* whole huge pages from 2 MiB on: use all of them */
    b->data = layer_xmap(b->size);
    return b;
}

static void *arena_bytes(trainer_arena *a, size_t bytes) {
    bytes = (bytes + 63) & ~(size_t)63;
    if (bytes == 0) bytes = 64;
    if (!a->cur || a->cur->size - a->cur->used < bytes) { /* a block after the last */
        arena_block *b = block_new(bytes > a->block_bytes ? bytes : a->block_bytes);
        if (a->cur) a->cur->next = b;
        else a->head = b;
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
    /* a use that overflowed into more blocks: one block for the next, the most ever handed
       out at once and half again (a use that grows slowly, as a sampler's prefix does, comes
       back here rarely). The next use bumps through it whatever the order of its requests,
       and the pages of blocks laid out for an earlier mix of requests go back to the system */
    if (a->head && a->head->next) {
        size_t want = (a->peak + a->peak / 2 + 63) & ~(size_t)63;
        free_chain(a->head);
        a->head = block_new(want > a->block_bytes ? want : a->block_bytes);
    }
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
