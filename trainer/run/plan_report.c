/* memtrain plan: the table plan and its predicted traffic and memory for a config at any rank count, without training. */
#include "trainer/run/plan_report.h"

#include <stdio.h>
#include <string.h>

#include "io/data.h"
#include "layers/common.h"
#include "trainer/engine/footprint.h"
#include "trainer/model/model.h"
#include "trainer/tables/tables.h"

/* Figures of one rank count. */
typedef struct plan_figures {
    int P, streams, block, groups[TRAINER_STRATEGY_COUNT];
    double tokens, bytes, exchanges, seconds;
    double state;  /* bytes of table state a rank owns: rows, Adam moments, gradient sums */
    double extra;  /* bytes held beyond it: replicated groups, fetched rows, owner-side partials */
    double total;  /* the whole training footprint per rank (trainer_footprint_estimate) */
} plan_figures;

static plan_figures figures(const trainer_config *cfg, trainer_model *m, int P, int per_rank) {
    plan_figures f = {.P = P};
    trainer_model_spec spec;
    trainer_spec_from_config(&spec, cfg);
    trainer_plan_run r = spec.tables;
    r.P = P;
    r.block = trainer_config_stream_block(cfg, P);
    if (per_rank > 0) {
        r.streams = per_rank * P;
        r.block = per_rank;
    }
    r.batched = !(spec.memformer && spec.memory);
    f.streams = r.streams;
    f.block = r.block;
    f.tokens = (double)r.horizon * cfg->seg_len * r.streams / P;
    trainer_tables_account a;
    trainer_tables_account_of(trainer_model_tables(m), &r, &a);
    for (int k = 0; k < TRAINER_STRATEGY_COUNT; k++) f.groups[k] = a.groups[k];
    f.bytes = a.bytes;
    f.exchanges = a.exchanges;
    f.seconds = a.seconds;
    f.state = a.owned_max;
    f.extra = a.held + a.fetch_keep + a.fetch_block + a.partials;
    trainer_config at = *cfg;
    at.streams = r.streams;
    at.stream_block = r.block;
    double resident = 0, loading = 0;
    trainer_footprint_data(&at, P, TRAINER_USE_TRAIN, &resident, &loading);
    trainer_footprint fp;
    trainer_footprint_estimate(&at, P, TRAINER_USE_TRAIN, 0, resident, loading, &fp);
    f.total = fp.total;
    return f;
}

int trainer_plan_report(comm_ctx *comm, const trainer_config *cfg, const int *ranks, int nranks,
                        int per_rank, int csv) {
    if (comm_rank(comm) != 0) return 0;
    char err[300];
    if (trainer_footprint_check_ranges(cfg, 1, 0, err, sizeof(err)) != 0) {
        fprintf(stderr, "memtrain plan: %s\n", err);
        return 2;
    }
    trainer_model_spec spec;
    trainer_spec_from_config(&spec, cfg);
    spec.define_only = 1;
    trainer_model *m = trainer_model_create(&spec, NULL);
    for (int i = 0; i < nranks; i++) { /* every rank count first: no table cut short */
        int blk = trainer_config_stream_block(cfg, ranks[i] > 0 ? ranks[i] : 1);
        if (ranks[i] < 1 || (per_rank <= 0 && trainer_nblocks(cfg->streams, blk) < ranks[i])) {
            fprintf(stderr, "memtrain plan: %d ranks need at least %d blocks of streams; give "
                            "--per-rank-streams or more streams\n", ranks[i], ranks[i]);
            trainer_model_free(m);
            return 2;
        }
    }
    if (csv)
        printf("P,streams,stream_block,tokens_per_rank,bytes_per_rank,exchanges,comm_seconds,"
               "state_mib_per_rank,held_beyond_mib,fetch_groups,owner_groups,replicate_groups,"
               "total_mib_per_rank\n");
    else
        printf("table plan of %s/%s d_model %d (%zu table parameters), %.0f Gb/s, %.0f us per "
               "exchange, row budget %g MiB; per rank and step:\n"
               "%6s %7s %6s %9s %12s %9s %10s %12s %12s %12s  %s\n",
               spec.memformer ? "memformer" : "decoder", spec.hash ? "hash" : "dense", spec.C,
               trainer_tables_numel(trainer_model_tables(m)), cfg->net_gbps, cfg->net_latency_us,
               cfg->row_cache_mb, "P", "streams", "block", "tokens", "MiB sent", "exchanges",
               "comm ms", "state MiB", "+held MiB", "total MiB", "groups fetch/owner/replicate");
    for (int i = 0; i < nranks; i++) {
        plan_figures f = figures(cfg, m, ranks[i], per_rank);
        if (csv)
            printf("%d,%d,%d,%.0f,%.0f,%.0f,%.6f,%.1f,%.1f,%d,%d,%d,%.1f\n", f.P, f.streams,
                   f.block, f.tokens, f.bytes, f.exchanges, f.seconds, f.state / 1048576.0,
                   f.extra / 1048576.0, f.groups[0], f.groups[1], f.groups[2],
                   f.total / 1048576.0);
        else
            printf("%6d %7d %6d %9.0f %12.2f %9.0f %10.3f %12.1f %12.1f %12.1f  %d/%d/%d\n", f.P,
                   f.streams, f.block, f.tokens, f.bytes / 1048576.0, f.exchanges,
                   1000 * f.seconds, f.state / 1048576.0, f.extra / 1048576.0,
                   f.total / 1048576.0, f.groups[0], f.groups[1], f.groups[2]);
    }
    trainer_model_free(m);
    return 0;
}
