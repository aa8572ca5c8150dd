/* Shared helpers of the math layers: checked allocation, always-on assertions, a seeded RNG. */
#ifndef MEMTRAIN_LAYERS_COMMON_H
#define MEMTRAIN_LAYERS_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Shape legend used in every comment of layers/:
 *   N  rows (tokens), B batch (streams), T sequence length, Tq/Tk query/key lengths,
 *   C  channels (d_model), OC output channels, NH heads, HS head size (C / NH),
 *   V  vocabulary, K hash chunks (tables) of a projection, TAU bits per chunk,
 *   R  rows of a row store (K * 2^TAU for a local table set). */

/* Stays on in release builds; prints file:line and the condition, then aborts. */
#define LAYER_ASSERT(cond) \
    do { if (!(cond)) layer_fail(__FILE__, __LINE__, #cond); } while (0)

void layer_fail(const char *file, int line, const char *what);

/* Allocation that never returns NULL: on failure it reports size and site and aborts.
 * The one idiom for ordinary memory; everything they return is released with free().
 *   layer_xmalloc(n)       n bytes
 *   layer_xcalloc(n, sz)   n * sz zeroed bytes (untouched zero pages stay unbacked)
 *   layer_xrealloc(p, n)   p grown or shrunk to n bytes (p may be NULL)
 *   layer_xaligned(n)      n bytes on a 64-byte (cache line, AVX-512) boundary, for tensors
 * Pages that must go back to the system while the process runs come from mmap (the table
 * store's gradient pages), not from these. */
#define layer_xmalloc(n) layer_xmalloc_at((n), __FILE__, __LINE__)
#define layer_xcalloc(n, sz) layer_xcalloc_at((n), (sz), __FILE__, __LINE__)
#define layer_xrealloc(p, n) layer_xrealloc_at((p), (n), __FILE__, __LINE__)
#define layer_xaligned(n) layer_xaligned_at((n), __FILE__, __LINE__)
void *layer_xmalloc_at(size_t n, const char *file, int line);
void *layer_xcalloc_at(size_t n, size_t size, const char *file, int line);
void *layer_xrealloc_at(void *p, size_t n, const char *file, int line);
void *layer_xaligned_at(size_t n, const char *file, int line);

/* What an allocation failure does after its message: abort() unless a launcher's layer set
 * another end (comm ends the whole MPI job with status 2, rather than leaving the other ranks
 * waiting in a collective and a core dump's report behind). */
void layer_on_out_of_memory(void (*end)(void));

/* Large buffers reused for the whole run (activation arenas, exchange buffers): a mapping of
 * their own, zero pages until written, released with layer_unmap(p, n) and the same n. From
 * LAYER_HUGE_PAGE bytes on, the mapping starts on a huge-page boundary and spans whole huge
 * pages, and asks the kernel for transparent huge pages (MADV_HUGEPAGE; a kernel that does
 * not give them serves small pages). Buffers that MPI's shared-memory transport reads from
 * another process then cost one page-table entry per 2 MiB to pin instead of 512, and the
 * kernels that stream through them miss the TLB a 512th as often. Never returns NULL. */
enum { LAYER_HUGE_PAGE = 2 << 20 };
#define layer_xmap(n) layer_xmap_at((n), __FILE__, __LINE__)
void *layer_xmap_at(size_t n, const char *file, int line);
void layer_unmap(void *p, size_t n); /* NULL is fine */
/* The bytes a mapping of n spans: n, rounded up to whole huge pages from LAYER_HUGE_PAGE on
 * (a user may use all of them). */
size_t layer_map_span(size_t n);

/* xoshiro256** generator: the same seed gives the same stream on every machine. */
typedef struct layer_rng {
    uint64_t s[4];
} layer_rng;

void layer_rng_seed(layer_rng *r, uint64_t seed);
uint64_t layer_rng_next(layer_rng *r);
/* Uniform in [0, 1). */
float layer_rng_uniform(layer_rng *r);
/* Standard normal (Box-Muller, both values drawn each call, one returned). */
float layer_rng_normal(layer_rng *r);
/* x[i] = std * normal, i < n. */
void layer_fill_normal(float *x, size_t n, float std, layer_rng *r);

#endif
