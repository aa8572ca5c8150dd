/* The per-rank memory estimate of a run, its largest part's driving keys, and the config products the engine keeps in an int. */
#include "trainer/engine/footprint.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "io/data.h"
#include "layers/hash.h"
#include "trainer/model/model.h"
#include "trainer/tables/tables.h"

/* The shape of a config in doubles, so that no product below can overflow. */
typedef struct shape {
    double C, NH, L, V, S, T, K, H, tau, E;
    double n_dec, n_enc;
    double streams, block;
    int hash, memformer, memory, rope, full;
} shape;

static shape shape_of(const trainer_config *cfg, int P) {
    shape s;
    memset(&s, 0, sizeof s);
    s.hash = cfg->proj == TRAINER_PROJ_HASH;
    s.memformer = cfg->arch == TRAINER_ARCH_MEMFORMER;
    s.memory = s.memformer && cfg->memory;
    s.rope = cfg->pos == TRAINER_POS_ROPE;
    s.full = cfg->bptt == TRAINER_BPTT_FULL;
    s.C = cfg->d_model;
    s.NH = cfg->n_heads;
    s.L = cfg->seg_len;
    s.V = cfg->vocab;
    s.S = s.memory ? cfg->mem_slots : 0;
    s.T = cfg->horizon;
    s.tau = s.hash ? cfg->tau : 0;
    s.E = s.hash ? cfg->expand_bits : 0;
    s.K = s.hash ? floor(s.C / s.tau) : 0;
    s.H = s.hash ? s.K * (s.tau + s.E) : 4 * s.C; /* the FFN's hidden width */
    s.n_dec = s.memformer ? cfg->dec_layers : cfg->n_layers;
    s.n_enc = s.memformer ? cfg->enc_layers : 0;
    s.streams = cfg->streams;
    s.block = trainer_config_stream_block(cfg, P > 0 ? P : 1);
    return s;
}

/* ---- parameters and tables: the model's own definition ---- */

/* The dense floats and the table account of cfg on P ranks, from the model trainer_model_create
 * would build (define_only: described, nothing allocated) and the store's account of it. */
static double model_account(const trainer_config *cfg, const shape *s, int P,
                            trainer_tables_account *a) {
    trainer_model_spec spec;
    trainer_spec_from_config(&spec, cfg);
    spec.define_only = 1;
    trainer_model *m = trainer_model_create(&spec, NULL);
    trainer_plan_run r = spec.tables;
    r.block = (int)s->block;
    r.P = P;
    r.batched = !s->memory;
    trainer_tables_account_of(trainer_model_tables(m), &r, a);
    double dense = (double)trainer_model_params(m)->total;
    trainer_model_free(m);
    return dense;
}

/* ---- activations (trainer/model/model.c forward_impl, trainer_model_backward, blocks.c) ---- */

/* Floats one segment of B sequences holds: its forward in its arena and, when backward, the
 * backward's residual gradients (and the Memformer's dE and memory gradients) beside it plus
 * the model's scratch arena, which holds one sublayer's backward temporaries at a time (the
 * largest of them). */
static double segment_floats(const shape *s, double B, int backward) {
    double C = s->C, L = s->L, N = B * L, K = s->K, NH = s->NH, S = s->S, V = s->V, H = s->H;
    double f = 0, b = 2 * N * C, x = N * V + N * C; /* residual pair; dlogits, dh */
    /* an attention sublayer of N queries over B*Tk keys */
    double Tks[3] = {L, L, S}; /* self, decoder cross (over E), encoder reader (over memory) */
    double n_att[3] = {s->n_dec + s->n_enc, s->memformer ? s->n_dec : 0, s->memory ? s->n_enc : 0};
    for (int a = 0; a < 3; a++) {
        double Tk = Tks[a], nk = B * Tk;
        /* q, x1 (which also holds h and, without an output projection, y) and rstd over the
           queries, y with one; k, v over the keys; the scores */
        double af = (s->hash ? 2 : 3) * N * C + N + 2 * nk * C + B * NH * L * Tk;
        if (s->hash) af += 3 * N * K + (a ? 3 * nk * K : 0);
        /* dy (with an output projection), dq, dk, dv, the scores' scratch, dh, h recomputed */
        double ab = (s->hash ? 0 : N * C) + N * C + 2 * nk * C + L * Tk + 2 * N * C;
        if (a == 0 && s->rope) ab += 2 * N * C;
        if (s->hash) ab += N * K + (a ? nk * K : 0);
        f += n_att[a] * af;
        if (n_att[a] > 0) x = fmax(x, ab);
    }
    /* FFN sublayers */
    double nffn = s->n_dec + s->n_enc;
    /* x1 (which also holds h and F's output), rstd, u; dh, h and gl recomputed, dgl, du */
    double ff = N * C + N + (s->hash ? 6 * N * K + N * H + 2 * N : N * H);
    double fb = 2 * N * C + (s->hash ? N * K + 3 * N * H : 3 * N * H);
    f += nffn * ff;
    x = fmax(x, fb);
    /* embeddings, final norms, logits; the memory and its writer */
    f += N * C + N * C + N + N * V;
    if (s->memformer) {
        f += 2 * N * C + N;
        b += N * C; /* dE */
    }
    if (s->memory) {
        double Tw = S + L, nm = B * S * C, nc = B * Tw * C;
        f += nm + S * C + nc + nm + 2 * nc + B * NH * S * Tw + 3 * nm + B * S;
        if (s->hash) f += 3 * B * S * K + 3 * B * Tw * K;
        b += nm + S * C; /* dM_in, dM0 */
        x = fmax(x, 2 * nm + 2 * nc + S * Tw + nc + (s->hash ? B * S * K + B * Tw * K : 0));
    }
    /* each allocation is aligned to 64 bytes, and records of pointers come from the arena */
    double records = 4096 + 2048 * (s->n_dec + s->n_enc);
    /* a forward's FFN keeps its hidden output in the scratch arena until the FFN returns */
    return (backward ? f + b + x : f + (nffn > 0 ? N * H : 0)) + records / 4;
}

/* An arena reserves blocks of 4 MiB (trainer_rollout_create) and aligns each allocation. */
static double arena_bytes(double floats) {
    return ceil((floats * 4 * 1.02 + 1) / 4194304.0) * 4194304.0;
}

void trainer_footprint_estimate(const trainer_config *cfg, int P, trainer_footprint_use use,
                                int batch, double data_resident, double data_loading,
                                trainer_footprint *f) {
    memset(f, 0, sizeof *f);
    shape s = shape_of(cfg, P);
    double Bmax = ceil((double)cfg->streams / (P > 0 ? P : 1));
    f->data = data_resident;
    f->data_load = data_loading;
    int Pn = P > 0 ? P : 1;
    trainer_tables_account t;
    /* data, grad, m, v in float, the folded sum in double */
    f->dense = 24 * model_account(cfg, &s, Pn, &t);
    /* owned shards: the share of the rank dealt the most */
    f->tables = t.owned_max + t.held;
    f->caches = t.fetch_keep + t.fetch_block + t.scratch + t.partials;
    /* a block: nb streams, and as one batch all their segments when nothing is carried */
    double nb = fmin(s.block, Bmax), seqs = s.memory ? nb : nb * s.T;
    double seq = use == TRAINER_USE_SAMPLE ? (batch > 0 ? batch : 1) : Bmax;
    if (use == TRAINER_USE_TRAIN) {
        f->segment = 4 * segment_floats(&s, seqs, 1);
        double one = arena_bytes(segment_floats(&s, seqs, 1));
        f->activations = s.full && s.memory ? s.T * one : one;
        f->batch = (int)seqs;
        f->act_use = TRAINER_USE_TRAIN;
        if (cfg->eval_every > 0) {
            double ev = arena_bytes(segment_floats(&s, Bmax, 0));
            if (ev > f->activations) {
                f->activations = ev;
                f->batch = (int)Bmax;
                f->act_use = TRAINER_USE_EVAL;
            }
        }
        f->buffers = (3 * 4 * s.L + 1) * s.T * (Bmax + nb) +          /* inputs, a block's */
                     4 * nb * (s.T + 3) * s.S * s.C +                  /* replay, dM */
                     4 * Bmax * s.S * s.C * 4 + 4 * Bmax * s.L * 4;    /* memories, streams */
    } else {
        f->segment = 4 * segment_floats(&s, seq, 0);
        f->activations = arena_bytes(segment_floats(&s, seq, 0));
        f->batch = (int)seq;
        f->act_use = use;
        f->buffers = 4 * 3 * seq * s.L + 4 * 2 * seq * s.S * s.C;
        if (use == TRAINER_USE_SAMPLE) f->buffers += seq * 784 * 5 + 4 * 65536;
        /* a model to read a checkpoint into holds no optimizer state in use, but it is
           allocated all the same (trainer_model_create) */
    }
    f->base = 32.0 * 1048576.0; /* measured: about 25 MiB for a tiny run on Open MPI 4.1 */
    double run = f->data + f->dense + f->tables + f->caches + f->activations + f->buffers;
    f->total = f->base + (f->data_load > run ? f->data_load : run);
}

void trainer_footprint_data(const trainer_config *cfg, int P, trainer_footprint_use use,
                            double *resident, double *loading) {
    if (use == TRAINER_USE_SAMPLE) { /* sampling reads the checkpoint only */
        *resident = *loading = 0.0;
        return;
    }
    io_size_hint h;
    io_dataset_size_hint(cfg->data, cfg->data_dir, &h);
    *resident = h.resident;
    *loading = h.loading;
    if (use != TRAINER_USE_TRAIN || h.train_docs < 1 || cfg->streams < 1) return;
    int64_t c = io_stream_classes(cfg->streams, (int64_t)llround(h.train_docs));
    int64_t mine = (cfg->streams + (P > 0 ? P : 1) - 1) / (P > 0 ? P : 1);
    if (mine < c) *resident -= h.train * (1.0 - (double)mine / (double)c);
    /* validation keeps the documents it scores */
    double kept = cfg->eval_docs > 0 && cfg->eval_docs < h.val_docs ? cfg->eval_docs : h.val_docs;
    if (cfg->eval_every <= 0) kept = 0;
    if (h.val_docs > 0) *resident -= (h.resident - h.train) * (1.0 - kept / h.val_docs);
}

void trainer_footprint_bytes(double bytes, char *buf, size_t n) {
    if (bytes >= 1099511627776.0) snprintf(buf, n, "%.4g TiB", bytes / 1099511627776.0);
    else if (bytes >= 1073741824.0) snprintf(buf, n, "%.2f GiB", bytes / 1073741824.0);
    else if (bytes >= 1048576.0) snprintf(buf, n, "%.1f MiB", bytes / 1048576.0);
    else snprintf(buf, n, "%.1f KiB", bytes / 1024.0);
}

void trainer_footprint_describe(const trainer_footprint *f, char *buf, size_t n) {
    char t[8][32];
    double parts[8] = {f->total, f->tables, f->caches, f->activations, f->dense, f->buffers,
                       f->data, f->base};
    for (int i = 0; i < 8; i++) trainer_footprint_bytes(parts[i], t[i], sizeof t[i]);
    char load[64] = "", peak[32];
    if (f->data_load > f->data) { /* reading holds more than it keeps: the peak counts it */
        trainer_footprint_bytes(f->data_load, peak, sizeof peak);
        snprintf(load, sizeof load, " (%s while loading)", peak);
    }
    snprintf(buf, n, "about %s per rank: tables and Adam state %s, fetched rows and exchange "
             "buffers %s, activations "
             "%s, dense parameters %s, buffers %s, data %s%s, libraries %s",
             t[0], t[1], t[2], t[3], t[4], t[5], t[6], load, t[7]);
}

void trainer_footprint_drivers(const trainer_config *cfg, const trainer_footprint *f, char *buf,
                               size_t n) {
    const char *names[6] = {"tables and their Adam state", "fetched rows and exchange buffers", "activations",
                            "dense parameters", "rollout and replay buffers",
                            f->data_load > f->data ? "the data while loading" : "the data"};
    double parts[6] = {f->tables, f->caches, f->activations, f->dense, f->buffers,
                       f->data_load > f->data ? f->data_load : f->data};
    int big = 0;
    for (int i = 1; i < 6; i++)
        if (parts[i] > parts[big]) big = i;
    char size[32], layers[96], keys[400];
    trainer_footprint_bytes(parts[big], size, sizeof size);
    if (cfg->arch == TRAINER_ARCH_MEMFORMER)
        snprintf(layers, sizeof layers, "enc_layers = %d, dec_layers = %d", cfg->enc_layers,
                 cfg->dec_layers);
    else
        snprintf(layers, sizeof layers, "n_layers = %d", cfg->n_layers);
    int hash = cfg->proj == TRAINER_PROJ_HASH;
    switch (big) {
    case 0:
        snprintf(keys, sizeof keys, "d_model = %d, tau = %d, expand_bits = %d, %s (spread over the "
                 "ranks: more ranks hold less each)", cfg->d_model, cfg->tau, cfg->expand_bits, layers);
        break;
    case 1:
        snprintf(keys, sizeof keys, "row_cache_mb = %g, d_model = %d, tau = %d, expand_bits = %d, "
                 "%s, stream_block = %d", cfg->row_cache_mb, cfg->d_model, cfg->tau,
                 cfg->expand_bits, layers, cfg->stream_block);
        break;
    case 2:
        if (f->act_use == TRAINER_USE_SAMPLE)
            snprintf(keys, sizeof keys, "--count = %d sequences at once, seg_len = %d, n_heads = "
                     "%d, d_model = %d, vocab = %d", f->batch, cfg->seg_len, cfg->n_heads,
                     cfg->d_model, cfg->vocab);
        else if (f->act_use == TRAINER_USE_EVAL)
            snprintf(keys, sizeof keys, "streams = %d (a rank evaluates its %d at once), seg_len = "
                     "%d, n_heads = %d, d_model = %d, vocab = %d", cfg->streams, f->batch,
                     cfg->seg_len, cfg->n_heads, cfg->d_model, cfg->vocab);
        else if (cfg->arch != TRAINER_ARCH_MEMFORMER || !cfg->memory)
            /* a decoder (or memory off) runs a block's segments as one batch */
            snprintf(keys, sizeof keys, "stream_block = %d x horizon = %d segments at once (no "
                     "memory carries them one by one), seg_len = %d, n_heads = %d, d_model = %d, "
                     "vocab = %d", cfg->stream_block, cfg->horizon, cfg->seg_len, cfg->n_heads,
                     cfg->d_model, cfg->vocab);
        else if (cfg->bptt == TRAINER_BPTT_FULL)
            snprintf(keys, sizeof keys, "bptt = full, horizon = %d, seg_len = %d, n_heads = %d, "
                     "d_model = %d (bptt = mrbp keeps one segment)", cfg->horizon, cfg->seg_len,
                     cfg->n_heads, cfg->d_model);
        else
            snprintf(keys, sizeof keys, "stream_block = %d, seg_len = %d, n_heads = %d, d_model = "
                     "%d, vocab = %d", cfg->stream_block, cfg->seg_len, cfg->n_heads, cfg->d_model,
                     cfg->vocab);
        break;
    case 3:
        snprintf(keys, sizeof keys, "d_model = %d, vocab = %d, %s%s", cfg->d_model, cfg->vocab,
                 layers, hash ? "" : ", proj = dense");
        break;
    case 4:
        snprintf(keys, sizeof keys, "streams = %d, horizon = %d, seg_len = %d, mem_slots = %d, "
                 "d_model = %d", cfg->streams, cfg->horizon, cfg->seg_len, cfg->mem_slots,
                 cfg->d_model);
        break;
    default:
        snprintf(keys, sizeof keys, "data = %.200s", cfg->data);
        break;
    }
    snprintf(buf, n, "%s %s, driven by %s", names[big], size, keys);
}

/* Fails when a * b exceeds INT_MAX; `what` names the keys with their values. */
static int product_ok(double a, double b, const char *what, char *err, size_t n) {
    if (a * b <= (double)INT_MAX) return 0;
    snprintf(err, n, "%s = %.4g: too large (the engine counts it in an int, at most 2^31 - 1)",
             what, a * b);
    return -1;
}

int trainer_footprint_check_ranges(const trainer_config *cfg, int P, int batch, char *err,
                                   size_t n) {
    shape s = shape_of(cfg, P);
    double Bmax = ceil((double)cfg->streams / (P > 0 ? P : 1));
    double B = batch > Bmax ? batch : Bmax;
    char what[300], toks[160];
    const char *at_once = batch > Bmax ? "tokens sampled at once" : "tokens a rank evaluates at once";
    if (batch > Bmax)
        snprintf(toks, sizeof toks, "--count = %d x seg_len = %d", batch, cfg->seg_len);
    else
        snprintf(toks, sizeof toks, "streams = %d over %d rank%s x seg_len = %d", cfg->streams, P,
                 P > 1 ? "s" : "", cfg->seg_len);
    snprintf(what, sizeof what, "%s (%s)", toks, at_once);
    if (product_ok(B, s.L, what, err, n)) return -1;
    if (s.V > 4 * s.C)
        snprintf(what, sizeof what, "%s x vocab = %d (the logits of the %s)", toks, cfg->vocab,
                 at_once);
    else
        snprintf(what, sizeof what, "%s x 4 x d_model = %d (the FFN activations of the %s)", toks,
                 cfg->d_model, at_once);
    if (product_ok(B * s.L, s.V > 4 * s.C ? s.V : 4 * s.C, what, err, n)) return -1;
    snprintf(what, sizeof what, "n_heads = %d x seg_len = %d squared (one attention matrix)",
             cfg->n_heads, cfg->seg_len);
    if (product_ok(s.NH * s.L, s.L, what, err, n)) return -1;
    snprintf(what, sizeof what, "(mem_slots = %.0f + seg_len = %d) x d_model = %d (the memory "
             "writer's input)", s.S, cfg->seg_len, cfg->d_model);
    if (product_ok(s.S + s.L, s.C, what, err, n)) return -1;
    if (s.hash) {
        snprintf(what, sizeof what, "d_model = %d / tau = %d x 2^(tau + expand_bits = %d) (rows "
                 "of a table group)", cfg->d_model, cfg->tau, cfg->tau + cfg->expand_bits);
        if (product_ok(s.K, pow(2.0, s.tau + s.E), what, err, n)) return -1;
    }
    snprintf(what, sizeof what, "4 x d_model = %d (the dense FFN width)", cfg->d_model);
    return product_ok(4, s.C, what, err, n);
}
