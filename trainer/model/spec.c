/* The model spec a validated run config describes. */
#include <string.h>

#include "trainer/model/model.h"

/* The planner's forced strategy for the table_strategy key; -1 lets it choose per group. */
static int forced_strategy(trainer_strategy_key k) {
    switch (k) {
    case TRAINER_STRATEGY_KEY_FETCH: return TRAINER_STRATEGY_FETCH;
    case TRAINER_STRATEGY_KEY_OWNER: return TRAINER_STRATEGY_OWNER;
    case TRAINER_STRATEGY_KEY_REPLICATE: return TRAINER_STRATEGY_REPLICATE;
    default: return -1;
    }
}

void trainer_spec_from_config(trainer_model_spec *spec, const trainer_config *cfg) {
    memset(spec, 0, sizeof(*spec));
    spec->memformer = cfg->arch == TRAINER_ARCH_MEMFORMER;
    spec->hash = cfg->proj == TRAINER_PROJ_HASH;
    spec->C = cfg->d_model;
    spec->NH = cfg->n_heads;
    spec->n_layers = cfg->n_layers;
    spec->enc_layers = cfg->enc_layers;
    spec->dec_layers = cfg->dec_layers;
    spec->L = cfg->seg_len;
    spec->S = cfg->mem_slots;
    spec->memory = cfg->memory;
    spec->forgetting = cfg->forgetting;
    spec->write_temp = cfg->write_temp;
    spec->rope_dims = trainer_config_rope_dim(cfg);
    spec->tau = cfg->tau;
    spec->expand_bits = cfg->expand_bits;
    spec->score = cfg->score == TRAINER_SCORE_PROB ? LAYER_SCORE_PROB : LAYER_SCORE_L1PROB;
    spec->hash_temp = cfg->hash_temp;
    spec->vocab = cfg->vocab;
    spec->seed = (uint64_t)cfg->seed;
    spec->tables = (trainer_plan_run){
        .streams = cfg->streams, .block = trainer_config_stream_block(cfg, 1),
        .horizon = cfg->horizon,
        .budget = (double)cfg->row_cache_mb * 1048576.0,
        .latency = cfg->net_latency_us * 1e-6, .bandwidth = cfg->net_gbps * 1e9 / 8,
        .wire_bytes = cfg->row_format == TRAINER_ROWS_BF16 ? 2 : 4,
        .force = forced_strategy(cfg->table_strategy),
        .fast = cfg->deterministic == TRAINER_DET_FAST,
        .replay = cfg->bptt == TRAINER_BPTT_MRBP,
        .share_rows = cfg->share_rows,
        .share_exchange = cfg->share_exchange,
    };
}
