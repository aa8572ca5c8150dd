/* Bump allocator for one step's activations: MRBP resets one arena per segment, full BPTT keeps one per segment. */
#ifndef MEMTRAIN_TRAINER_ARENA_H
#define MEMTRAIN_TRAINER_ARENA_H

#include <stddef.h>
#include <stdint.h>

/* Blocks are chained so an arena grows without moving what it handed out; reset folds a
 * chain into one block as large as the most ever handed out at once (and half again), so a
 * steady-state step bumps through one block and allocates nothing from the system. */
typedef struct trainer_arena trainer_arena;

trainer_arena *trainer_arena_create(size_t block_bytes);
void trainer_arena_free(trainer_arena *a); /* NULL is fine */
/* n floats (or n int32), 64-byte aligned, contents undefined. Never returns NULL. */
float *trainer_arena_floats(trainer_arena *a, size_t n);
float *trainer_arena_zeros(trainer_arena *a, size_t n);
int32_t *trainer_arena_ints(trainer_arena *a, size_t n);
/* n zeroed bytes, 64-byte aligned: for records of activation pointers. */
void *trainer_arena_struct(trainer_arena *a, size_t n);
/* Forgets everything handed out; the memory stays reserved for the next use. */
void trainer_arena_reset(trainer_arena *a);
/* The most bytes ever handed out at once. */
size_t trainer_arena_peak(const trainer_arena *a);
/* The bytes of its blocks: what it holds from the system. */
size_t trainer_arena_reserved(const trainer_arena *a);

#endif
