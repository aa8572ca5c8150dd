/* The cost model of the table strategies: bytes, exchanges and memory per rank and step, and the planner's choice. */
#include "trainer/tables/plan.h"

#include <math.h>
#include <unistd.h>

#include "layers/common.h"
#include "layers/hash.h"
#include "trainer/config/config.h"

static const char *const names[TRAINER_STRATEGY_COUNT] = {"fetch", "owner", "replicate"};

const char *trainer_strategy_name(trainer_strategy s) {
    LAYER_ASSERT(s >= 0 && s < TRAINER_STRATEGY_COUNT);
    return names[s];
}

double trainer_plan_distinct(int tau, double m) {
    double R = ldexp(1.0, tau);
    return m <= 0 ? 0.0 : R * -expm1(m * log1p(-1.0 / R));
}

/* Bytes of a key on the wire: int64, as the exchanges send it. */
enum { KEY = 8, IDX_SCORE = 8, SCORE = 4, GRAD = 4, SUM = 8 };
/* Bytes lazy Adam moves per table entry: row, moments and gradient read, row and moments
   written. */
enum { ADAM = 7 * 4 };
/* Bytes of one row's slice in one tile of a store. */
#define TILE_BYTES (LAYER_HASH_TILE * 4.0)

/* The costs and the choice, rows fetched from every other rank; *rows_bytes and
 * *rows_messages get the forward's part of FETCH's figures (its exchanges' headers apart). */
static void choose(const trainer_plan_run *r, const trainer_plan_group *g, trainer_plan_cost *c,
                   double *rows_bytes, double *rows_messages) {
    LAYER_ASSERT(r->P >= 1 && r->streams >= 1 && r->block >= 1 && r->horizon >= 1);
    double P = r->P, frac = (P - 1.0) / P, T = r->horizon;
    double nblocks = (double)trainer_nblocks(r->streams, r->block);
    double nbr = nblocks / P;                        /* blocks per rank, on average */
    double spr = (double)r->streams / P;             /* streams per rank */
    double W = (double)g->nout * g->OC, K = g->K, R = K * ldexp(1.0, g->tau);
    double S = ceil(K / LAYER_HASH_SHARD);
    /* distinct keys per table: over a rank's step, and over one block's step */
    double u_step = trainer_plan_distinct(g->tau, T * spr * g->rows);
    double u_blk = trainer_plan_distinct(g->tau, T * fmin(r->block, spr) * g->rows);
    if (g->distinct >= 0 && u_step > 0) { /* measured: keep the model's block/step ratio */
        u_blk *= g->distinct / u_step;
        u_step = g->distinct;
    }
    for (int s = 0; s < TRAINER_STRATEGY_COUNT; s++) c->allowed[s] = 1, c->local[s] = 0;

    /* FETCH: rows kept for the step when they fit the budget, else fetched for each call and
       released after it. Resident memory comes in pages: a page of a store holds 32 rows of
       a tile, so u distinct rows of a table make that many pages resident. */
    double per_page = 4096.0 / (TILE_BYTES), rows_t = ldexp(1.0, g->tau);
    double res_blk = per_page >= rows_t ? rows_t : rows_t * -expm1(u_blk * log1p(-per_page / rows_t));
    double res_step = per_page >= rows_t ? rows_t : rows_t * -expm1(u_step * log1p(-per_page / rows_t));
    /* a call's rows: in the store and in transit; their gradients (held across a block's
       calls when a memory makes segments sequential) */
    double ws_block = frac * K * res_blk * W * sizeof(float) * (r->batched ? 2 : 3);
    double ws_step = frac * K * res_step * W * sizeof(float);
    int keep = ws_step <= r->budget;
    /* forward and backward of each call, and the memory pass's forward of a replayed group
       (its recompute finds the rows only when they are kept) but for the last segment's,
       whose forward is the pass's and the recompute's at once */
    int replayed = r->replay && g->replayed && !r->batched;
    double calls = r->batched ? 2 : (2 + replayed) * T - replayed;
    double fetch = keep ? frac * K * u_step * (KEY + W * r->wire_bytes)
                        : nbr * calls * frac * K * u_blk * (KEY + W * r->wire_bytes);
    double push = nbr * frac * K * u_blk * (KEY + W * GRAD);
    c->bytes[TRAINER_STRATEGY_FETCH] = fetch + push;
    c->messages[TRAINER_STRATEGY_FETCH] = nbr * ((keep ? (r->batched ? 1 : T) : calls) + 1);
    *rows_bytes = P > 1 ? fetch : 0;
    *rows_messages = P > 1 ? nbr * (keep ? (r->batched ? 1 : T) : calls) : 0;
    c->memory[TRAINER_STRATEGY_FETCH] = keep ? ws_step : ws_block;
    c->allowed[TRAINER_STRATEGY_FETCH] = ws_block <= r->budget;

    /* OWNER: per block, buckets and scores out and the shards' partials back; in the
       backward buckets, scores and the output gradient out (once per owner) and the score
       gradients back */
    double n = r->block * (double)g->rows * T; /* tokens of one block's single call */
    double owners = fmin(S, P) * frac;         /* other ranks owning a shard of the group */
    double fwd = n * K * frac * IDX_SCORE + n * W * sizeof(float) * S * frac;
    double bwd = n * K * frac * IDX_SCORE + n * W * GRAD * owners + n * K * frac * SCORE;
    c->bytes[TRAINER_STRATEGY_OWNER] = nbr * (fwd + bwd);
    /* the forward's partials and the backward's output gradients go in rounds of ranks, so
       that an owner holds about S shards' worth of one rank's tokens (owner_rounds in
       tables_owner.c, here with the shards dealt evenly) */
    double most = ceil(S / P), step = ceil(S / most), lookers = S > 1 ? P : P - 1;
    double rounds = fmax(1.0, ceil(lookers / step));
    c->messages[TRAINER_STRATEGY_OWNER] = nbr * (2 + 2 * rounds);
    c->memory[TRAINER_STRATEGY_OWNER] = n * W * sizeof(float) * S * frac; /* partials */
    c->allowed[TRAINER_STRATEGY_OWNER] = r->batched;

    /* REPLICATE: one ring all-reduce of the group's gradient sums (double, or float under
       deterministic = fast) and touch marks */
    double sum = r->fast ? sizeof(float) : SUM;
    double state = R * W * (3 * sizeof(float) + sum); /* rows, m, v, gradient sum */
    c->bytes[TRAINER_STRATEGY_REPLICATE] = 2 * frac * (R * W + R) * sum;
    /* and what the others leave to the owners or do not do at all: every rank runs lazy Adam
       over the whole group, a share frac of it beyond its own (row, two moments and the
       gradient read, three written: ADAM bytes per entry), and the all-reduce's sum reads two
       and writes one value of every entry */
    c->local[TRAINER_STRATEGY_REPLICATE] = P > 1 ? R * W * (frac * ADAM + 3 * sum) : 0;
    c->messages[TRAINER_STRATEGY_REPLICATE] = P > 1 ? 1 : 0;
    c->memory[TRAINER_STRATEGY_REPLICATE] = state * frac;
    c->allowed[TRAINER_STRATEGY_REPLICATE] = state <= r->budget / 4;

    if (P == 1) { /* nothing moves: every strategy is the local computation */
        for (int s = 0; s < TRAINER_STRATEGY_COUNT; s++) {
            c->bytes[s] = c->messages[s] = c->memory[s] = c->local[s] = 0;
            c->allowed[s] = s != TRAINER_STRATEGY_OWNER || r->batched;
        }
    }
    /* every exchange begins with a header to every peer, 12 bytes (the row exchanges' count,
       width and kind; the owners' and batched pushes' count, mode and offset); an
       all-reduce has none */
    c->bytes[TRAINER_STRATEGY_FETCH] += c->messages[TRAINER_STRATEGY_FETCH] * 12 * (P - 1);
    c->bytes[TRAINER_STRATEGY_OWNER] += c->messages[TRAINER_STRATEGY_OWNER] * 12 * (P - 1);
    for (int s = 0; s < TRAINER_STRATEGY_COUNT; s++)
        c->seconds[s] = c->messages[s] * r->latency + c->bytes[s] / r->bandwidth;

    if (r->force >= 0 && c->allowed[r->force]) {
        c->choice = (trainer_strategy)r->force;
        c->why = "forced";
        return;
    }
    c->choice = TRAINER_STRATEGY_FETCH;
    c->why = P == 1 ? "one rank" : "fewest seconds";
    int any = 0;
    for (int s = 0; s < TRAINER_STRATEGY_COUNT; s++) {
        if (!c->allowed[s] || s == TRAINER_STRATEGY_REPLICATE) continue;
        if (!any || c->seconds[s] < c->seconds[c->choice]) c->choice = (trainer_strategy)s;
        any = 1;
    }
    /* replicate only where its seconds and its local traffic (c->local, at
       TRAINER_PLAN_LOCAL_RATE) take a tenth less time than the others' seconds (or nothing
       else is allowed): the plan never revises it (its lookups are local, so no remote keys
       are measured), its all-reduce carries every row's gradient where the others move the
       rows a step touches (on real data a fraction of what the uniform first plan assumes),
       and every rank runs Adam over the whole group. On the d_model 256 Memformer at P = 2 its
       three query groups cost 8,224 KiB against 8,253 for fetch, and by the seconds alone
       stayed replicated: their all-reduces took 21 ms of a 290 ms step and Adam 3 ms more,
       where fetching them took 2 ms more exchanging (the step ran 1.08-1.15x faster). */
    int rep = TRAINER_STRATEGY_REPLICATE;
    double rep_time = c->seconds[rep] + c->local[rep] / TRAINER_PLAN_LOCAL_RATE;
    if (c->allowed[rep] &&
        (!any || (P > 1 && rep_time < (1.0 - TRAINER_PLAN_MOVE_GAIN) * c->seconds[c->choice]))) {
        c->choice = (trainer_strategy)rep;
        any = 1;
    }
    if (!any) c->why = "over budget";
    else if (r->force >= 0) c->why = "forced one not allowed";
}

int trainer_plan_shareable_tau(int tau) {
    long page = sysconf(_SC_PAGESIZE);
    return page > 0 && (((size_t)LAYER_HASH_TILE << tau) * sizeof(float)) % (size_t)page == 0;
}

void trainer_plan_choose(const trainer_plan_run *r, const trainer_plan_group *g,
                         trainer_plan_cost *c) {
    double rows_bytes = 0, rows_messages = 0;
    choose(r, g, c, &rows_bytes, &rows_messages);
    /* share_rows (tables_share.c): where every piece of a shard is whole pages, the ranks of
       a node read each other's rows in place; the rows of other nodes still move, and while
       any rank is on another node every call still exchanges (an empty one on this node).
       The choice stays as made without it: on the d_model 256 decoder at P = 2 shared
       fetching runs the step a few percent shorter than the owner strategy but holds 1.4x
       the memory per rank, and the owner's memory is the one the memory targets are set on
       (README, "Rows shared on a node"). */
    double P = r->P, local = r->node_ranks > 0 ? r->node_ranks : P;
    if (!r->share_rows || P < 2 || local < 2 || !trainer_plan_shareable_tau(g->tau)) return;
    int f = TRAINER_STRATEGY_FETCH;
    double moved = (P - local) / (P - 1.0), gone = local < P ? 0 : rows_messages;
    c->bytes[f] -= rows_bytes * (1.0 - moved) + gone * 12 * (P - 1);
    c->messages[f] -= gone;
    c->seconds[f] = c->messages[f] * r->latency + c->bytes[f] / r->bandwidth;
}

trainer_strategy trainer_plan_revise(const trainer_plan_cost *c, trainer_strategy cur) {
    trainer_strategy to = c->choice;
    if (to == TRAINER_STRATEGY_REPLICATE)
        to = c->seconds[TRAINER_STRATEGY_OWNER] < c->seconds[TRAINER_STRATEGY_FETCH] &&
                     c->allowed[TRAINER_STRATEGY_OWNER]
                 ? TRAINER_STRATEGY_OWNER
                 : TRAINER_STRATEGY_FETCH;
    if (to == cur || !c->allowed[to] ||
        c->seconds[to] > (1.0 - TRAINER_PLAN_MOVE_GAIN) * c->seconds[cur] ||
        c->memory[to] > c->memory[cur])
        return cur;
    return to;
}
