/* Hash-table store of a model: groups of tables that share one bucket index, row lookup, sparse optimizer. */
#ifndef MEMTRAIN_TRAINER_TABLES_H
#define MEMTRAIN_TRAINER_TABLES_H

#include <stddef.h>
#include <stdint.h>

#include "layers/hash.h"

/* A group is one hashed projection site: nout (1..3) projections of the same input (Q/K/V share
 * the index), each with K tables of 2^tau rows of width OC. The model asks for rows through
 * trainer_tables_resolve only, so where a row lives (this process, or an owner rank) is the
 * store's business. Rows resolved in a step stay valid, with the same ids, until
 * trainer_tables_step: the recompute pass of MRBP gets the same rows back. */
typedef struct trainer_tables trainer_tables;

typedef struct trainer_table_group {
    char name[64];
    int nout, K, tau, OC;
} trainer_table_group;

trainer_tables *trainer_tables_create(void);
void trainer_tables_free(trainer_tables *t); /* NULL is fine */
/* Registers a group, returns its id. Only before trainer_tables_alloc. */
int trainer_tables_add(trainer_tables *t, const char *name, int nout, int K, int tau, int OC);
/* Allocates rows and optimizer state; table (group, out, k) is initialised N(0, 0.02^2) from a
 * stream seeded by (seed, group name, out, k), independent of where it is stored. */
void trainer_tables_alloc(trainer_tables *t, uint64_t seed);

int trainer_tables_ngroups(const trainer_tables *t);
const trainer_table_group *trainer_tables_group(const trainer_tables *t, int g);
/* Total parameter count of all tables. */
size_t trainer_tables_numel(const trainer_tables *t);

/* Maps buckets idx (N,K) of group g to row ids (N,K) and fills rows[0..nout) with the row and
 * gradient stores those ids index. Marks the rows as touched for the optimizer. */
void trainer_tables_resolve(trainer_tables *t, int g, const int32_t *idx, int N, int32_t *rowid,
                            layer_hash_rows *rows);
/* Sum of squares of the gradient of every touched row (double, fixed order). */
double trainer_tables_grad_sumsq(const trainer_tables *t);
/* Lazy Adam on touched rows (gradient multiplied by grad_scale), then clears their gradients
 * and the touched marks. */
void trainer_tables_step(trainer_tables *t, float lr, float beta1, float beta2, float eps,
                         int64_t step, float grad_scale);
/* Number of rows touched since the last step (over all groups and outputs). */
int64_t trainer_tables_touched(const trainer_tables *t);

/* Direct access to the full table (K, 2^tau, OC) of (group, out), with its Adam moments, for
 * checkpoints and tests. */
float *trainer_tables_data(trainer_tables *t, int g, int out, float **m, float **v);
/* Gradient store of (group, out), same layout as the data. */
float *trainer_tables_grad(trainer_tables *t, int g, int out);

#endif
