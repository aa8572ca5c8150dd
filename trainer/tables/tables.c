/* Table store: groups, sharded ownership and the plan, natural-id row stores, chunks for checkpoints (the optimizer's passes: tables_optim.c). */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include "trainer/tables/tables.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "layers/common.h"
#include "trainer/base/optim.h"
#include "trainer/base/params.h"
#include "trainer/config/config.h"
#include "trainer/tables/tables_internal.h"

static size_t store_bytes(const group_state *s, size_t elem) {
    return layer_hash_store_floats(s->R, s->g.OC) * elem;
}

/* Huge-page advice for store bytes [a, b) held whole: the 2 MiB pages inside it. */
static void advise_held(char *store, size_t a, size_t b) {
    const size_t hp = LAYER_HUGE_PAGE;
    a = (a + hp - 1) & ~(hp - 1);
    b &= ~(hp - 1);
    if (b > a) (void)madvise(store + a, b - a, MADV_HUGEPAGE); /* refused: small pages */
}

/* Stores are anonymous mappings: zero, aligned to huge pages, and resident only where
 * written, so the shards another rank owns cost address space, not memory, until their rows
 * are fetched. Those stay in small pages (MADV_NOHUGEPAGE, so also where transparent huge
 * pages are "always"): a fetched row makes a 4 KiB page of each tile resident, as the memory
 * estimate counts it, not 2 MiB. The runs of rows this rank holds (every chunk of a group
 * at P = 1, or a replicated one; at P > 1 a rank's shards lie in pieces of 16 x 2^tau x 128
 * bytes per tile, 2 MiB from tau = 10) are resident for the run and streamed by the kernels
 * and Adam: in huge pages where they span whole ones, which miss the TLB a 512th as often
 * (the Memformer's step at P = 1 1.05x faster, the decoder's 1.02x). */
static void *store_map(const trainer_tables *t, const group_state *s, size_t elem) {
    size_t bytes = store_bytes(s, elem);
    char *p = layer_xmap(bytes);
    if (bytes < LAYER_HUGE_PAGE) return p;
    (void)madvise(p, layer_map_span(bytes), MADV_NOHUGEPAGE);
    size_t piece = ((size_t)TILE << s->g.tau) * elem, a = 0, b = 0; /* the run [a, b) */
    for (int c = 0; c < (s->g.OC + TILE - 1) / TILE; c++)
        for (int k = 0; k < s->g.K; k++) {
            if (!tables_holds(t, s, k)) continue;
            size_t at = layer_hash_store_at(s->R, k << s->g.tau, c * TILE) * elem;
            if (at != b) {
                advise_held(p, a, b);
                a = at;
            }
            b = at + piece;
        }
    advise_held(p, a, b);
    return p;
}

/* Makes chunk k's pages of a float store resident and writable at once (see
 * tables_populate_held). A kernel without MADV_POPULATE_WRITE (before Linux 5.14) leaves
 * them to fault as before. */
static void store_populate(const group_state *s, float *store, int k) {
#ifdef MADV_POPULATE_WRITE
    size_t rows = (size_t)1 << s->g.tau, tiles = (size_t)(s->g.OC + TILE - 1) / TILE;
    for (size_t c = 0; c < tiles; c++) {
        /* tile c's rows of chunk k: 2^tau rows of TILE floats, a multiple of 2^tau * 128
           bytes from the store's start, so page-aligned from tau = 5 on; madvise refuses
           smaller chunks, which then fault as before */
        float *at = store + (c * (size_t)s->R + ((size_t)k << s->g.tau)) * TILE;
        (void)madvise(at, rows * TILE * sizeof(float), MADV_POPULATE_WRITE);
    }
#else
    (void)s, (void)store, (void)k;
#endif
}

void tables_populate_held(const trainer_tables *t, group_state *s) {
    if (s->populated) return;
    s->populated = 1;
    for (int j = 0; j < s->g.nout; j++)
        for (int k = 0; k < s->g.K; k++) {
            if (!tables_holds(t, s, k)) continue;
            store_populate(s, s->drows[j], k);
            store_populate(s, s->m[j], k);
            store_populate(s, s->v[j], k);
        }
}

trainer_tables *trainer_tables_create(comm_ctx *comm) {
    trainer_tables *t = layer_xcalloc(1, sizeof(*t));
    t->comm = comm;
    t->P = 1;
    t->blocks = 2;
    if (!comm) return t; /* describes only */
    t->me = comm_rank(comm);
    t->P = comm_size(comm);
    t->x = comm_exchange_create(comm);
    t->words = comm_words_create(t->x);
    t->pushes = comm_words_create(t->x);
    t->scratch = trainer_arena_create((size_t)1 << 20);
    return t;
}

void trainer_tables_free(trainer_tables *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++) {
        group_state *s = &t->gs[i];
        if (t->allocated)
            for (int j = 0; j < s->g.nout; j++) {
                layer_unmap(s->rows[j], store_bytes(s, sizeof(float)));
                layer_unmap(s->master[j], store_bytes(s, sizeof(float)));
                layer_unmap(s->drows[j], store_bytes(s, sizeof(float)));
                layer_unmap(s->m[j], store_bytes(s, sizeof(float)));
                layer_unmap(s->v[j], store_bytes(s, sizeof(float)));
                layer_unmap(s->acc[j], store_bytes(s, sizeof(double)));
            }
        comm_words_free(s->push);
        layer_unmap(s->push_buf, s->push_cap * sizeof(uint32_t));
        free(s->owner);
        free(s->state);
        free(s->blk);
        free(s->fetched);
    }
    comm_words_free(t->words);
    comm_words_free(t->pushes);
    trainer_arena_free(t->scratch);
    comm_exchange_free(t->x);
    free(t->gs);
    free(t->keys);
    free(t->owners);
    free(t->same_node);
    free(t->buf);
    free(t);
}

int trainer_tables_add(trainer_tables *t, const char *name, int nout, int K, int tau, int OC,
                       int rows) {
    LAYER_ASSERT(!t->allocated && nout >= 1 && nout <= 3 && tau >= 1 && tau <= 16 && K >= 1);
    LAYER_ASSERT(rows >= 1);
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 16;
        t->gs = layer_xrealloc(t->gs, (size_t)t->cap * sizeof(*t->gs));
    }
    group_state *s = &t->gs[t->n];
    memset(s, 0, sizeof(*s));
    snprintf(s->g.name, sizeof(s->g.name), "%s", name);
    s->g.nout = nout;
    s->g.K = K;
    s->g.tau = tau;
    s->g.OC = OC;
    s->in_rows = rows;
    s->R = K << tau;
    s->S = (K + LAYER_HASH_SHARD - 1) / LAYER_HASH_SHARD;
    s->strategy = TRAINER_STRATEGY_FETCH;
    s->keep = 1;
    return t->n++;
}

static size_t unit_floats(const trainer_table_group *g, int chunks) {
    return (size_t)g->nout * ((size_t)1 << g->tau) * g->OC * (size_t)chunks;
}

static int shard_chunks(const group_state *s, int sh) {
    int k0 = sh * LAYER_HASH_SHARD;
    return s->g.K - k0 < LAYER_HASH_SHARD ? s->g.K - k0 : LAYER_HASH_SHARD;
}


/* rows = the master rounded to bf16, for chunk k of output j (padding stays zero). */
static void round_chunk(group_state *s, int j, int k) {
    for (int o = 0; o < s->g.OC; o += TILE) {
        size_t off = layer_hash_store_at(s->R, k << s->g.tau, o);
        size_t n = (size_t)TILE << s->g.tau;
        for (size_t i = 0; i < n; i++)
            s->rows[j][off + i] = tables_from_bf16(tables_to_bf16(s->master[j][off + i]));
    }
}

/* ---- the plan ---- */

static trainer_plan_group plan_group(const group_state *s, double distinct) {
    trainer_plan_group pg = {s->g.nout, s->g.K, s->g.tau, s->g.OC, s->in_rows, distinct,
                             s->replayed};
    return pg;
}

/* A fetched group's rows of run r: for the whole step (kept) and for one call (not kept). */
static void fetch_rows(const trainer_plan_run *r, const group_state *s, double *step,
                       double *call) {
    trainer_plan_run at = *r;
    trainer_plan_group pg = plan_group(s, -1);
    trainer_plan_cost c;
    at.budget = 1e300; /* the planner keeps the rows */
    trainer_plan_choose(&at, &pg, &c);
    *step = c.memory[TRAINER_STRATEGY_FETCH];
    at.budget = 0; /* it fetches them for each call */
    trainer_plan_choose(&at, &pg, &c);
    *call = c.memory[TRAINER_STRATEGY_FETCH];
}

/* Which fetched groups keep their rows for the step: step[i] >= 0 is fetched group i's rows
 * for the step, < 0 marks a group of another strategy. Smallest first (the lower index on a
 * tie), each kept while the kept ones fit the budget together; the others are fetched for
 * each call. keep[i] = 1 for the kept, 0 for the others. */
static void keep_smallest_first(int n, const double *step, double budget, unsigned char *keep) {
    unsigned char *decided = layer_xcalloc((size_t)n + 1, 1);
    double used = 0;
    for (;;) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if (step[i] >= 0 && !decided[i] && (best < 0 || step[i] < step[best])) best = i;
        if (best < 0) break;
        decided[best] = 1;
        keep[best] = used + step[best] <= budget;
        if (keep[best]) used += step[best];
    }
    free(decided);
}

/* The store's own choice of kept groups, by the rule the account uses. */
static void plan_keep(trainer_tables *t) {
    double *step = layer_xcalloc((size_t)t->n + 1, sizeof(double));
    unsigned char *keep = layer_xcalloc((size_t)t->n + 1, 1);
    for (int i = 0; i < t->n; i++) {
        double call;
        step[i] = -1;
        if (t->gs[i].strategy == TRAINER_STRATEGY_FETCH) fetch_rows(&t->run, &t->gs[i], &step[i], &call);
    }
    keep_smallest_first(t->n, step, t->run.budget, keep);
    for (int i = 0; i < t->n; i++) t->gs[i].keep = step[i] < 0 || keep[i];
    free(step);
    free(keep);
}

void trainer_tables_plan(trainer_tables *t, const trainer_plan_run *r) {
    LAYER_ASSERT(!t->allocated && r->P == t->P);
    t->run = *r;
    t->planned = 1;
    t->bf16 = r->wire_bytes == 2;
    for (int i = 0; i < t->n; i++) {
        group_state *s = &t->gs[i];
        trainer_plan_group pg = plan_group(s, -1);
        trainer_plan_choose(r, &pg, &s->cost);
        s->strategy = s->cost.choice;
        s->first_bytes = s->cost.bytes[s->strategy];
    }
    plan_keep(t);
}

int trainer_tables_check_plan(const trainer_tables *t, char *err, size_t n) {
    for (int i = 0; i < t->n; i++) {
        const group_state *s = &t->gs[i];
        if (t->planned && t->P > 1 && !s->cost.allowed[s->strategy]) {
            snprintf(err, n,
                     "row_cache_mb = %g is too small for table group %s: one block fetches "
                     "about %.2f MiB of its rows; raise row_cache_mb or lower stream_block",
                     t->run.budget / 1048576.0, s->g.name,
                     s->cost.memory[TRAINER_STRATEGY_FETCH] / 1048576.0);
            return -1;
        }
    }
    return 0;
}

int trainer_tables_replan(trainer_tables *t) {
    if (!t->planned || t->P == 1) return 0;
    double *seen = layer_xcalloc((size_t)t->n + 1, sizeof(double));
    for (int i = 0; i < t->n; i++) seen[i] = t->gs[i].seen_avg;
    comm_sum_doubles(t->comm, seen, (size_t)t->n); /* every rank's remote keys... */
    int moved = 0;
    for (int i = 0; i < t->n; i++) {
        group_state *s = &t->gs[i];
        /* skipped on the sum, which every rank has: a rank that owns the whole group sees
         * no remote keys of it while the others do */
        if (s->strategy == TRAINER_STRATEGY_REPLICATE || seen[i] <= 0) continue;
        /* ... are (P-1)/P of its distinct keys: back to distinct keys per table per rank */
        double distinct = seen[i] / t->P / ((t->P - 1.0) / t->P) / s->g.K;
        trainer_plan_group pg = plan_group(s, distinct);
        trainer_plan_cost c;
        trainer_plan_run r = t->run;
        if (r.force == TRAINER_STRATEGY_REPLICATE) r.force = -1;
        trainer_plan_choose(&r, &pg, &c);
        trainer_strategy to = trainer_plan_revise(&c, s->strategy);
        trainer_plan_cost timed = c; /* the same costs without the memory condition */
        for (int k = 0; k < TRAINER_STRATEGY_COUNT; k++) timed.memory[k] = 0;
        trainer_strategy faster = trainer_plan_revise(&timed, s->strategy);
        if (to == s->strategy && faster != to)
            comm_print0(t->comm, "tables: %s stays %s: %s would take %.2f ms per rank and step against "
                       "%.2f with the measured %.0f distinct keys per table and step, but hold "
                       "%.1f MiB of rows against %.1f, beyond the run's memory estimate\n",
                       s->g.name, trainer_strategy_name(s->strategy),
                       trainer_strategy_name(faster), 1000 * c.seconds[faster],
                       1000 * c.seconds[s->strategy], distinct, c.memory[faster] / 1048576.0,
                       c.memory[s->strategy] / 1048576.0);
        if (to != s->strategy) {
            c.choice = to;
            comm_print0(t->comm, "tables: %s moves from %s to %s, which takes less time per step and no more memory with the "
                       "measured %.0f distinct keys per table and step (predicted per rank and step: "
                       "%s %.2f ms for %.1f KiB in %.0f exchanges, %s %.2f ms for %.1f KiB in %.0f)\n",
                       s->g.name, trainer_strategy_name(s->strategy),
                       trainer_strategy_name(c.choice), distinct,
                       trainer_strategy_name(c.choice), 1000 * c.seconds[c.choice],
                       c.bytes[c.choice] / 1024, c.messages[c.choice],
                       trainer_strategy_name(s->strategy), 1000 * c.seconds[s->strategy],
                       c.bytes[s->strategy] / 1024, c.messages[s->strategy]);
            s->strategy = c.choice;
            moved++;
        }
        s->cost = c;
        s->cost.choice = s->strategy;
    }
    free(seen);
    /* the plan's traffic with the measured keys, beside what the first plan assumed */
    double first = 0.0, now = 0.0;
    for (int i = 0; i < t->n; i++) {
        first += t->gs[i].first_bytes;
        now += t->gs[i].cost.bytes[t->gs[i].strategy];
    }
    comm_print0(t->comm, "tables: with the measured keys the plan predicts %.1f KiB per rank and "
                "step (the first plan, for uniform buckets: %.1f)\n", now / 1024, first / 1024);
    if (moved) { /* the fetched groups share the budget anew */
        plan_keep(t);
        if (t->me == 0) fflush(stdout);
    }
    return moved;
}


/* ---- ownership and allocation ---- */

typedef struct unit_ref {
    int g, sh;
    size_t bytes;
} unit_ref;

static int unit_cmp(const void *a, const void *b) {
    const unit_ref *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes > y->bytes ? -1 : 1;
    if (x->g != y->g) return x->g - y->g;
    return x->sh - y->sh;
}

/* Deals every group's shards to P ranks, largest first (unit_cmp's order), each to the rank
 * holding the fewest floats so far (the lower rank on a tie): owner[i][sh] is group i's shard
 * sh's rank. The one rule of ownership, for the store and for the account alike. */
static void deal_shards(const trainer_tables *t, int P, int **owner) {
    size_t nunits = 0;
    for (int i = 0; i < t->n; i++) nunits += t->gs[i].S;
    unit_ref *list = layer_xcalloc(nunits ? nunits : 1, sizeof(unit_ref));
    size_t u = 0;
    for (int i = 0; i < t->n; i++)
        for (int sh = 0; sh < t->gs[i].S; sh++)
            list[u++] = (unit_ref){i, sh, unit_floats(&t->gs[i].g, shard_chunks(&t->gs[i], sh))};
    qsort(list, nunits, sizeof(unit_ref), unit_cmp);
    size_t *load = layer_xcalloc(P, sizeof(size_t));
    for (size_t i = 0; i < nunits; i++) {
        int best = 0;
        for (int r = 1; r < P; r++)
            if (load[r] < load[best]) best = r;
        load[best] += list[i].bytes;
        owner[list[i].g][list[i].sh] = best;
    }
    free(load);
    free(list);
}

void trainer_tables_alloc(trainer_tables *t, uint64_t seed) {
    int **owner = layer_xcalloc((size_t)t->n + 1, sizeof(int *));
    for (int i = 0; i < t->n; i++) owner[i] = t->gs[i].owner = layer_xcalloc(t->gs[i].S, sizeof(int));
    deal_shards(t, t->P, owner);
    free(owner);
    size_t maxkeys = 1;
    for (int i = 0; i < t->n; i++) {
        group_state *s = &t->gs[i];
        s->state = layer_xcalloc((size_t)s->R, 1);
        s->blk = layer_xmalloc((size_t)s->R * sizeof(int32_t));
        s->fetched = layer_xmalloc(2 * (size_t)s->R * sizeof(int32_t));
        for (int j = 0; j < s->g.nout; j++) {
            s->rows[j] = store_map(t, s, sizeof(float));
            if (t->bf16) s->master[j] = store_map(t, s, sizeof(float));
            s->drows[j] = store_map(t, s, sizeof(float));
            s->m[j] = store_map(t, s, sizeof(float));
            s->v[j] = store_map(t, s, sizeof(float));
            if (!t->fast) s->acc[j] = store_map(t, s, sizeof(double));
        }
    }
    tables_share_rows(t);
    if (t->P > 1) comm_exchange_share_node(t->x, t->run.share_exchange);
    for (int i = 0; i < t->n; i++) {
        group_state *s = &t->gs[i];
        int rows = 1 << s->g.tau, OC = s->g.OC;
        float *init = layer_xmalloc((size_t)rows * OC * sizeof(float)); /* (2^tau, OC) */
        for (int j = 0; j < s->g.nout; j++) {
            for (int k = 0; k < s->g.K; k++) {
                if (!tables_holds(t, s, k)) continue;
                layer_rng r;
                layer_rng_seed(&r, trainer_seed_for(seed, s->g.name, (uint64_t)(j * 65536 + k)));
                layer_fill_normal(init, (size_t)rows * OC, 0.02f, &r);
                for (int b = 0; b < rows; b++)
                    layer_hash_store_put(tables_master(s, j), s->R, OC, (k << s->g.tau) | b,
                                         init + (size_t)b * OC);
                if (t->bf16) round_chunk(s, j, k);
            }
        }
        free(init);
        if ((size_t)s->R > maxkeys) maxkeys = (size_t)s->R;
    }
    t->keys = layer_xmalloc(maxkeys * sizeof(int64_t));
    t->owners = layer_xmalloc(maxkeys * sizeof(int));
    t->allocated = 1;
    tables_share_sync(t);
}

void tables_trim(trainer_tables *t) {
    comm_exchange_trim(t->x, TABLES_TRIM_BYTES);
    if (t->buf_cap * sizeof(float) > TABLES_TRIM_BYTES) {
        free(t->buf);
        t->buf = NULL;
        t->buf_cap = 0;
    }
}

float *tables_scratch(trainer_tables *t, size_t n) {
    if (n > t->buf_cap || !t->buf) {
        free(t->buf);
        t->buf_cap = n > 2 * t->buf_cap ? n : 2 * t->buf_cap;
        t->buf = layer_xmalloc((t->buf_cap ? t->buf_cap : 1) * sizeof(float));
    }
    return t->buf;
}

int trainer_tables_ngroups(const trainer_tables *t) { return t->n; }

trainer_plan_group trainer_tables_plan_group(const trainer_tables *t, int g) {
    LAYER_ASSERT(g >= 0 && g < t->n);
    return plan_group(&t->gs[g], -1);
}

const trainer_table_group *trainer_tables_group(const trainer_tables *t, int g) {
    LAYER_ASSERT(g >= 0 && g < t->n);
    return &t->gs[g].g;
}

size_t trainer_tables_numel(const trainer_tables *t) {
    size_t n = 0;
    for (int i = 0; i < t->n; i++) n += unit_floats(&t->gs[i].g, t->gs[i].g.K);
    return n;
}

int trainer_tables_owner(const trainer_tables *t, int g, int k) {
    return t->gs[g].owner[k / LAYER_HASH_SHARD];
}

int trainer_tables_holds(const trainer_tables *t, int g, int k) {
    return tables_holds(t, &t->gs[g], k);
}

int trainer_tables_owned_units(const trainer_tables *t) {
    int n = 0;
    for (int i = 0; i < t->n; i++)
        for (int sh = 0; sh < t->gs[i].S; sh++) n += t->gs[i].owner[sh] == t->me;
    return n;
}

size_t trainer_tables_entry_bytes(int fast, int64_t nblocks, int P) {
    return 4 * sizeof(float) + (!fast && (nblocks > 1 || P > 1) ? sizeof(double) : 0);
}

void trainer_tables_account_of(const trainer_tables *t, const trainer_plan_run *r,
                               trainer_tables_account *a) {
    memset(a, 0, sizeof(*a));
    double P = r->P;
    a->entry = (double)trainer_tables_entry_bytes(r->fast, trainer_nblocks(r->streams, r->block), r->P);
    double *step = layer_xcalloc((size_t)t->n + 1, sizeof(double));
    double *call = layer_xcalloc((size_t)t->n + 1, sizeof(double));
    unsigned char *keep = layer_xcalloc((size_t)t->n + 1, 1);
    unsigned char *whole = layer_xcalloc((size_t)t->n + 1, 1); /* replicated on every rank */
    for (int i = 0; i < t->n; i++) {
        const group_state *s = &t->gs[i];
        trainer_plan_group pg = plan_group(s, -1);
        trainer_plan_cost c;
        trainer_plan_choose(r, &pg, &c);
        trainer_strategy k = c.choice;
        a->groups[k]++;
        a->bytes += c.bytes[k];
        a->exchanges += c.messages[k];
        a->seconds += c.seconds[k];
        double elems = (double)unit_floats(&s->g, s->g.K);
        whole[i] = k == TRAINER_STRATEGY_REPLICATE && P > 1;
        if (whole[i]) a->held += elems * a->entry;
        else a->owned += elems * a->entry / P;
        step[i] = -1;
        if (k == TRAINER_STRATEGY_FETCH && P > 1) fetch_rows(r, s, &step[i], &call[i]);
        /* exchange scratch: the largest call's rows or partials, sent and received */
        double one = k == TRAINER_STRATEGY_OWNER ? c.memory[k] : elems * sizeof(float) / P;
        if (2 * one > a->scratch) a->scratch = 2 * one;
        /* an owner-side call's buffers live until it returns, in one scratch arena: the
           replies with this rank's shards' partials for every rank's tokens, its own among
           them (as many bytes over the ranks as the partials it receives), and the partials
           it receives; the backward's output gradients for and from the owners are
           smaller */
        if (k == TRAINER_STRATEGY_OWNER && P > 1 && 2 * c.memory[k] > a->partials)
            a->partials = 2 * c.memory[k];
    }
    /* the most entries a rank owns, as the shards will be dealt */
    int **owner = layer_xcalloc((size_t)t->n + 1, sizeof(int *));
    for (int i = 0; i < t->n; i++) owner[i] = layer_xcalloc(t->gs[i].S, sizeof(int));
    deal_shards(t, r->P, owner);
    double *mine = layer_xcalloc((size_t)r->P, sizeof(double));
    for (int i = 0; i < t->n; i++) {
        const group_state *s = &t->gs[i];
        for (int sh = 0; sh < s->S && !whole[i]; sh++)
            mine[owner[i][sh]] += (double)unit_floats(&s->g, shard_chunks(s, sh)) * a->entry;
        free(owner[i]);
    }
    for (int q = 0; q < r->P; q++)
        if (mine[q] > a->owned_max) a->owned_max = mine[q];
    free(mine);
    free(owner);
    free(whole);
    keep_smallest_first(t->n, step, r->budget, keep);
    for (int i = 0; i < t->n; i++) {
        if (step[i] < 0) continue;
        /* kept rows, and the gradients the calls write beside them: their pages stay
           resident until the step ends, whether pushed at the block end or at the end of the
           group's backward (the budget bounds the rows) */
        if (keep[i]) a->fetch_keep += 2 * step[i];
        else if (call[i] > a->fetch_block) a->fetch_block = call[i];
    }
    free(step);
    free(call);
    free(keep);
}

size_t trainer_tables_owned_bytes(const trainer_tables *t) {
    /* replicated groups count on every rank */
    size_t per = trainer_tables_entry_bytes(t->fast, t->blocks, t->P);
    size_t b = 0;
    for (int i = 0; i < t->n; i++) {
        const group_state *s = &t->gs[i];
        for (int k = 0; k < s->g.K; k++)
            if (tables_holds(t, s, k)) b += unit_floats(&s->g, 1) * per;
    }
    return b;
}

void trainer_tables_set_blocks(trainer_tables *t, int blocks) { t->blocks = blocks; }

void trainer_tables_set_replayed(trainer_tables *t, int g) {
    LAYER_ASSERT(!t->allocated && g >= 0 && g < t->n);
    t->gs[g].replayed = 1;
}

void trainer_tables_set_fast(trainer_tables *t, int fast) {
    LAYER_ASSERT(!t->allocated);
    t->fast = fast != 0;
}

int trainer_tables_fast(const trainer_tables *t) { return t->fast; }

void trainer_tables_print_plan(trainer_tables *t) {
    int P = t->P, me = t->me;
    double *mine = layer_xcalloc(2 * (size_t)P, sizeof(double));
    mine[me] = trainer_tables_owned_units(t);
    mine[P + me] = (double)trainer_tables_owned_bytes(t);
    comm_sum_doubles(t->comm, mine, 2 * P);
    if (me == 0) {
        double total = 0, mx = 0;
        for (int r = 0; r < P; r++) {
            total += mine[P + r];
            if (mine[P + r] > mx) mx = mine[P + r];
        }
        comm_print0(t->comm, "tables: %d groups, %.1f MiB with Adam state over %d rank%s "
                    "(imbalance %.3f):", t->n, total / 1048576.0, P, P > 1 ? "s" : "",
                    total > 0 ? mx / (total / P) : 1.0);
        for (int r = 0; r < P; r++)
            comm_print0(t->comm, " r%d %d shards %.1f MiB%s", r, (int)mine[r],
                        mine[P + r] / 1048576.0, r + 1 < P ? "," : "\n");
        if (t->planned && P > 1) {
            double bytes = 0, msgs = 0;
            comm_print0(t->comm, "table plan (predicted per rank and step; row budget %.0f MiB):\n",
                        t->run.budget / 1048576.0);
            for (int i = 0; i < t->n; i++) {
                const group_state *s = &t->gs[i];
                const trainer_plan_cost *c = &s->cost;
                char alt[3][24];
                for (int k = 0; k < TRAINER_STRATEGY_COUNT; k++)
                    snprintf(alt[k], sizeof(alt[k]), c->allowed[k] ? "%.0f" : "-", c->bytes[k] / 1024);
                comm_print0(t->comm, "  %-20s %-9s %-22s %9.1f KiB %4.0f exchanges (fetch %s, "
                            "owner %s, replicate %s KiB)%s\n",
                            s->g.name, trainer_strategy_name(s->strategy), c->why,
                            c->bytes[s->strategy] / 1024, c->messages[s->strategy], alt[0],
                            alt[1], alt[2],
                            s->strategy == TRAINER_STRATEGY_FETCH && !s->keep ? ", rows per block"
                                                                              : "");
                bytes += c->bytes[s->strategy];
                msgs += c->messages[s->strategy];
            }
            comm_print0(t->comm, "  total %.1f KiB and %.0f exchanges per rank and step\n",
                        bytes / 1024, msgs);
        }
    }
    free(mine);
}

/* ---- chunks, for checkpoints and tests ---- */

static int holds(const trainer_tables *t, int g, int k, int out) {
    LAYER_ASSERT(g >= 0 && g < t->n);
    const group_state *s = &t->gs[g];
    LAYER_ASSERT(k >= 0 && k < s->g.K && out >= 0 && out < s->g.nout);
    return tables_holds(t, s, k);
}

int trainer_tables_unit_get(const trainer_tables *t, int g, int k, int out, float *data, float *m,
                            float *v, float *grad) {
    if (!holds(t, g, k, out)) return -1;
    const group_state *s = &t->gs[g];
    int rows = 1 << s->g.tau, OC = s->g.OC;
    for (int b = 0; b < rows; b++) {
        int key = (k << s->g.tau) | b;
        size_t o = (size_t)b * OC;
        if (data) layer_hash_store_get(data + o, tables_master(s, out), s->R, OC, key);
        if (m) layer_hash_store_get(m + o, s->m[out], s->R, OC, key);
        if (v) layer_hash_store_get(v + o, s->v[out], s->R, OC, key);
        if (grad) { /* the step's gradient as trainer_tables_step will read it */
            layer_hash_store_get(grad + o, s->drows[out], s->R, OC, key);
            if (s->state[key] & ST_ACC)
                for (int c = 0; c < OC; c++)
                    grad[o + c] = (float)(s->acc[out][layer_hash_store_at(s->R, key, c)] +
                                          (double)grad[o + c]);
        }
    }
    return 0;
}

void trainer_tables_rows_set(trainer_tables *t) { tables_share_sync(t); }

int trainer_tables_unit_set(trainer_tables *t, int g, int k, int out, const float *data,
                            const float *m, const float *v) {
    if (!holds(t, g, k, out)) return -1;
    group_state *s = &t->gs[g];
    int rows = 1 << s->g.tau, OC = s->g.OC;
    for (int b = 0; b < rows; b++) {
        int key = (k << s->g.tau) | b;
        size_t o = (size_t)b * OC;
        if (data) layer_hash_store_put(tables_master(s, out), s->R, OC, key, data + o);
        if (m) layer_hash_store_put(s->m[out], s->R, OC, key, m + o);
        if (v) layer_hash_store_put(s->v[out], s->R, OC, key, v + o);
    }
    if (data && s->master[out]) round_chunk(s, out, k);
    return 0;
}

float *trainer_tables_entry(trainer_tables *t, int g, int k, int out, int bucket, int col) {
    if (!holds(t, g, k, out)) return NULL;
    group_state *s = &t->gs[g];
    LAYER_ASSERT(bucket >= 0 && bucket < (1 << s->g.tau) && col >= 0 && col < s->g.OC);
    LAYER_ASSERT(!s->master[out] && "entries are perturbed in f32 row format only");
    return s->rows[out] + layer_hash_store_at(s->R, (k << s->g.tau) | bucket, col);
}

void trainer_tables_get_stats(const trainer_tables *t, trainer_tables_stats *st) {
    st->lookups = t->lookups;
    st->misses = t->misses;
    st->key_digest = t->digest;
    comm_exchange_stats(t->x, &st->bytes_sent, &st->exchange_seconds, &st->exchanges);
    st->bytes_in_place = comm_exchange_inplace_bytes(t->x);
}

void trainer_tables_reset_stats(trainer_tables *t) {
    t->lookups = t->misses = 0;
    t->digest = 0;
    comm_exchange_reset_stats(t->x);
}
