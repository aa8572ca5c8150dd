/* Checked allocation, assertion reporting and the xoshiro256** RNG for all modules. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MADV_HUGEPAGE */
#include "layers/common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

void layer_fail(const char *file, int line, const char *what) {
    fprintf(stderr, "memtrain: internal check failed at %s:%d: %s\n", file, line, what);
    fflush(stderr);
    abort();
}

static void (*oom_end)(void);

void layer_on_out_of_memory(void (*end)(void)) { oom_end = end; }

static _Noreturn void end_out_of_memory(void) {
    fflush(stderr);
    if (oom_end) oom_end();
    abort();
}

static _Noreturn void out_of_memory(size_t n, const char *file, int line) {
    fprintf(stderr, "memtrain: out of memory allocating %zu bytes at %s:%d (the machine's memory, "
            "a memory cgroup or the address-space limit, ulimit -v, is used up)\n", n, file, line);
    end_out_of_memory();
}

void *layer_xmalloc_at(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) out_of_memory(n, file, line);
    return p;
}

void *layer_xrealloc_at(void *p, size_t n, const char *file, int line) {
    void *q = realloc(p, n ? n : 1);
    if (!q) out_of_memory(n, file, line);
    return q;
}

void *layer_xaligned_at(size_t n, const char *file, int line) {
    size_t bytes = n ? (n + 63) & ~(size_t)63 : 64; /* aligned_alloc wants a multiple */
    void *p = aligned_alloc(64, bytes);
    if (!p) out_of_memory(n, file, line);
    return p;
}

size_t layer_map_span(size_t n) {
    if (n == 0) n = 1;
    return n >= LAYER_HUGE_PAGE ? (n + LAYER_HUGE_PAGE - 1) & ~(size_t)(LAYER_HUGE_PAGE - 1) : n;
}

void *layer_xmap_at(size_t n, const char *file, int line) {
    size_t span = layer_map_span(n), slack = span >= LAYER_HUGE_PAGE ? LAYER_HUGE_PAGE : 0;
    char *p = mmap(NULL, span + slack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) out_of_memory(n, file, line);
    if (!slack) return p;
    /* the huge-page boundary inside the mapping; the slack around it goes back */
    char *a = (char *)(((uintptr_t)p + LAYER_HUGE_PAGE - 1) & ~(uintptr_t)(LAYER_HUGE_PAGE - 1));
    if (a > p) munmap(p, (size_t)(a - p));
    if (a + span < p + span + slack) munmap(a + span, (size_t)(p + span + slack - (a + span)));
    (void)madvise(a, span, MADV_HUGEPAGE); /* advice: refused, the pages stay small */
    return a;
}

void layer_unmap(void *p, size_t n) {
    if (p) munmap(p, layer_map_span(n));
}

void *layer_xcalloc_at(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        size_t bytes;
        if (!__builtin_mul_overflow(n, size, &bytes)) out_of_memory(bytes, file, line);
        fprintf(stderr, "memtrain: an allocation of %zu x %zu bytes at %s:%d: more than the address "
                "space\n", n, size, file, line);
        end_out_of_memory();
    }
    return p;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void layer_rng_seed(layer_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t layer_rng_next(layer_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float layer_rng_uniform(layer_rng *r) {
    return (float)(layer_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

float layer_rng_normal(layer_rng *r) {
    /* 1 - u keeps the log argument in (0, 1]. */
    double u1 = 1.0 - (double)(layer_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    double u2 = (double)(layer_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void layer_fill_normal(float *x, size_t n, float std, layer_rng *r) {
    for (size_t i = 0; i < n; i++) x[i] = std * layer_rng_normal(r);
}
