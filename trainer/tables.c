/* Hash-table store kept whole in this process: rows, gradients and lazy-Adam moments per group. */
#include "trainer/tables.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/common.h"
#include "trainer/optim.h"
#include "trainer/params.h"

typedef struct group_store {
    trainer_table_group g;
    size_t rows;                 /* K * 2^tau */
    float *data[3], *grad[3], *m[3], *v[3];
    uint8_t *touched;            /* (rows) */
    int32_t *uniq;               /* (rows) scratch */
    float *gcompact;             /* (rows, OC) scratch */
} group_store;

struct trainer_tables {
    int n, cap;
    group_store *gs;
    int allocated;
};

trainer_tables *trainer_tables_create(void) { return layer_xcalloc(1, sizeof(trainer_tables)); }

void trainer_tables_free(trainer_tables *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++) {
        group_store *s = &t->gs[i];
        for (int j = 0; j < s->g.nout; j++) {
            free(s->data[j]);
            free(s->grad[j]);
            free(s->m[j]);
            free(s->v[j]);
        }
        free(s->touched);
        free(s->uniq);
        free(s->gcompact);
    }
    free(t->gs);
    free(t);
}

int trainer_tables_add(trainer_tables *t, const char *name, int nout, int K, int tau, int OC) {
    LAYER_ASSERT(!t->allocated && nout >= 1 && nout <= 3 && tau >= 1 && tau <= 16);
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 16;
        t->gs = realloc(t->gs, (size_t)t->cap * sizeof(*t->gs));
        LAYER_ASSERT(t->gs != NULL);
    }
    group_store *s = &t->gs[t->n];
    memset(s, 0, sizeof(*s));
    snprintf(s->g.name, sizeof(s->g.name), "%s", name);
    s->g.nout = nout;
    s->g.K = K;
    s->g.tau = tau;
    s->g.OC = OC;
    s->rows = (size_t)K << tau;
    return t->n++;
}

static float *falloc0(size_t n) {
    float *p = aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
    LAYER_ASSERT(p != NULL);
    memset(p, 0, n * sizeof(float));
    return p;
}

void trainer_tables_alloc(trainer_tables *t, uint64_t seed) {
    for (int i = 0; i < t->n; i++) {
        group_store *s = &t->gs[i];
        size_t per_table = ((size_t)1 << s->g.tau) * (size_t)s->g.OC;
        for (int j = 0; j < s->g.nout; j++) {
            s->data[j] = falloc0(s->rows * s->g.OC);
            s->grad[j] = falloc0(s->rows * s->g.OC);
            s->m[j] = falloc0(s->rows * s->g.OC);
            s->v[j] = falloc0(s->rows * s->g.OC);
            for (int k = 0; k < s->g.K; k++) {
                layer_rng r;
                layer_rng_seed(&r, trainer_seed_for(seed, s->g.name, (uint64_t)(j * 65536 + k)));
                layer_fill_normal(s->data[j] + (size_t)k * per_table, per_table, 0.02f, &r);
            }
        }
        s->touched = layer_xcalloc(s->rows, 1);
        s->uniq = layer_xmalloc(s->rows * sizeof(int32_t));
        s->gcompact = falloc0(s->rows * s->g.OC);
    }
    t->allocated = 1;
}

int trainer_tables_ngroups(const trainer_tables *t) { return t->n; }

const trainer_table_group *trainer_tables_group(const trainer_tables *t, int g) {
    LAYER_ASSERT(g >= 0 && g < t->n);
    return &t->gs[g].g;
}

size_t trainer_tables_numel(const trainer_tables *t) {
    size_t n = 0;
    for (int i = 0; i < t->n; i++) n += t->gs[i].rows * t->gs[i].g.OC * t->gs[i].g.nout;
    return n;
}

void trainer_tables_resolve(trainer_tables *t, int g, const int32_t *idx, int N, int32_t *rowid,
                            layer_hash_rows *rows) {
    group_store *s = &t->gs[g];
    layer_hash_rowid_local(rowid, idx, N, s->g.K, s->g.tau);
    for (size_t i = 0; i < (size_t)N * s->g.K; i++) s->touched[rowid[i]] = 1;
    for (int j = 0; j < s->g.nout; j++) {
        rows[j].rows = s->data[j];
        rows[j].drows = s->grad[j];
        rows[j].R = (int)s->rows;
    }
}

/* Row ids marked since the last step, ascending. */
static int touched_rows(group_store *s) {
    int nu = 0;
    for (size_t r = 0; r < s->rows; r++)
        if (s->touched[r]) s->uniq[nu++] = (int32_t)r;
    return nu;
}

double trainer_tables_grad_sumsq(const trainer_tables *t) {
    double sum = 0.0;
    for (int i = 0; i < t->n; i++) {
        const group_store *s = &t->gs[i];
        int OC = s->g.OC;
        for (size_t r = 0; r < s->rows; r++) {
            if (!s->touched[r]) continue;
            for (int j = 0; j < s->g.nout; j++) sum += trainer_sumsq(s->grad[j] + r * OC, OC);
        }
    }
    return sum;
}

int64_t trainer_tables_touched(const trainer_tables *t) {
    int64_t n = 0;
    for (int i = 0; i < t->n; i++) {
        const group_store *s = &t->gs[i];
        for (size_t r = 0; r < s->rows; r++) n += s->touched[r] ? s->g.nout : 0;
    }
    return n;
}

void trainer_tables_step(trainer_tables *t, float lr, float beta1, float beta2, float eps,
                         int64_t step, float grad_scale) {
    for (int i = 0; i < t->n; i++) {
        group_store *s = &t->gs[i];
        int OC = s->g.OC;
        int nu = touched_rows(s);
        for (int j = 0; j < s->g.nout; j++) {
            for (int u = 0; u < nu; u++) {
                float *g = s->grad[j] + (size_t)s->uniq[u] * OC;
                memcpy(s->gcompact + (size_t)u * OC, g, OC * sizeof(float));
                memset(g, 0, OC * sizeof(float));
            }
            trainer_sparse_adam_step(s->data[j], s->m[j], s->v[j], s->gcompact, s->uniq, nu, OC, lr,
                                     beta1, beta2, eps, step, grad_scale);
        }
        for (int u = 0; u < nu; u++) s->touched[s->uniq[u]] = 0;
    }
}

float *trainer_tables_data(trainer_tables *t, int g, int out, float **m, float **v) {
    group_store *s = &t->gs[g];
    LAYER_ASSERT(out >= 0 && out < s->g.nout);
    if (m) *m = s->m[out];
    if (v) *v = s->v[out];
    return s->data[out];
}

float *trainer_tables_grad(trainer_tables *t, int g, int out) {
    group_store *s = &t->gs[g];
    LAYER_ASSERT(out >= 0 && out < s->g.nout);
    return s->grad[out];
}
