/* Training loop: streams of documents, MRBP rollouts, all-reduced gradients, AdamW + lazy Adam, evaluation, logs. */
#include "trainer/train.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/data.h"
#include "layers/common.h"
#include "trainer/optim.h"
#include "trainer/rollout.h"

void trainer_spec_from_config(trainer_model_spec *spec, const trainer_config *cfg, int vocab) {
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
    if (cfg->pos == TRAINER_POS_ROPE) {
        int hs = cfg->d_model / cfg->n_heads;
        int rot = (int)(cfg->rope_frac * hs) & ~1;
        spec->rope_dims = rot < 2 ? 2 : rot;
    }
    spec->tau = cfg->tau;
    spec->expand_bits = cfg->expand_bits;
    spec->score = cfg->score == TRAINER_SCORE_PROB ? LAYER_SCORE_PROB : LAYER_SCORE_L1PROB;
    spec->hash_temp = cfg->hash_temp;
    spec->vocab = vocab;
    spec->seed = (uint64_t)cfg->seed;
}

/* Where one stream is in its documents, plus what the next segment needs of the last one. */
typedef struct stream_state {
    io_stream io;
    int32_t *prev; /* (L) tokens of the previous segment, -1 padding */
    int32_t last;  /* last token of the previous segment */
} stream_state;

typedef struct run_timers {
    double compute, comm, io;
} run_timers;

typedef struct run {
    comm_ctx *comm;
    const trainer_config *cfg;
    io_dataset *train, *val;
    trainer_model *model;
    trainer_rollout *rollout;
    int B, first_stream, L, bos;
    stream_state *streams;
    float *M; /* (B, S*C) carried memory */
    run_timers tm;
    FILE *csv;
} run;

static void stream_states_init(stream_state *s, int B, int first, int nglobal, int L) {
    for (int i = 0; i < B; i++) {
        io_stream_init(&s[i].io, first + i, nglobal);
        s[i].prev = layer_xmalloc((size_t)L * sizeof(int32_t));
        for (int j = 0; j < L; j++) s[i].prev[j] = -1;
        s[i].last = -1;
    }
}

static void stream_states_free(stream_state *s, int B) {
    if (!s) return;
    for (int i = 0; i < B; i++) free(s[i].prev);
    free(s);
}

/* Next segment of one stream into the model's input layout. */
static void fill_segment(stream_state *s, const io_dataset *d, int L, int bos, int32_t *enc,
                         int32_t *dec, int32_t *tgt, uint8_t *reset) {
    int32_t *seg = tgt;
    int start = io_stream_next(&s->io, d, seg, L) == IO_SEG_DOC_START;
    *reset = (uint8_t)start;
    for (int i = 0; i < L; i++) enc[i] = (start || s->prev[i] < 0) ? bos : s->prev[i];
    dec[0] = (start || s->last < 0) ? bos : s->last;
    for (int i = 1; i < L; i++) dec[i] = seg[i - 1] < 0 ? bos : seg[i - 1];
    memcpy(s->prev, seg, (size_t)L * sizeof(int32_t));
    s->last = seg[L - 1];
}

static void fill_rollout(run *r) {
    trainer_rollout *ro = r->rollout;
    for (int t = 0; t < ro->T; t++)
        for (int b = 0; b < r->B; b++) {
            size_t off = ((size_t)t * r->B + b) * r->L;
            fill_segment(&r->streams[b], r->train, r->L, r->bos, ro->enc + off, ro->dec + off,
                         ro->tgt + off, ro->reset + (size_t)t * r->B + b);
        }
}

/* Validation perplexity over eval_segments segments of every stream, from fresh streams. */
static double evaluate(run *r) {
    const trainer_config *cfg = r->cfg;
    int B = r->B, L = r->L;
    size_t ms = trainer_model_memory_size(r->model);
    stream_state *vs = layer_xcalloc(B, sizeof(stream_state));
    stream_states_init(vs, B, r->first_stream, cfg->streams, L);
    size_t n = (size_t)B * L;
    int32_t *enc = layer_xmalloc(n * sizeof(int32_t)), *dec = layer_xmalloc(n * sizeof(int32_t));
    int32_t *tgt = layer_xmalloc(n * sizeof(int32_t));
    uint8_t *reset = layer_xmalloc(B ? B : 1);
    float *M = layer_xcalloc(B * ms + 1, sizeof(float)), *Mn = layer_xcalloc(B * ms + 1, sizeof(float));
    trainer_arena *arena = trainer_arena_create((size_t)16 << 20);
    double sums[2] = {0, 0};
    for (int t = 0; t < cfg->eval_segments; t++) {
        for (int b = 0; b < B; b++)
            fill_segment(&vs[b], r->val, L, r->bos, enc + b * L, dec + b * L, tgt + b * L, reset + b);
        trainer_batch bt = {.B = B, .L = L, .enc_tok = enc, .dec_tok = dec, .tgt = tgt, .reset = reset};
        trainer_arena_reset(arena);
        int cnt = 0;
        if (B > 0) sums[0] += trainer_model_forward(r->model, arena, &bt, ms ? M : NULL, ms ? Mn : NULL, &cnt, NULL);
        sums[1] += cnt;
        float *tmp = M;
        M = Mn;
        Mn = tmp;
    }
    comm_sum_doubles(r->comm, sums, 2);
    trainer_arena_free(arena);
    stream_states_free(vs, B);
    free(enc);
    free(dec);
    free(tgt);
    free(reset);
    free(M);
    free(Mn);
    return sums[1] > 0 ? exp(sums[0] / sums[1]) : NAN;
}

/* AdamW over every dense tensor: weight decay only where the tensor asks for it. */
static void dense_step(trainer_params *p, const trainer_config *cfg, float lr, int64_t t,
                       float scale) {
    for (int i = 0; i < p->n; i++) {
        const trainer_tensor *x = &p->t[i];
        trainer_adamw_step(p->data + x->off, p->grad + x->off, p->m + x->off, p->v + x->off,
                           x->size, lr, cfg->beta1, cfg->beta2, 1e-8f,
                           x->decay ? cfg->weight_decay : 0.0f, t, scale);
    }
    memset(p->grad, 0, p->total * sizeof(float));
}

static int make_dir(const char *path) {
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *s = buf + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
        *s = '/';
    }
    return (mkdir(buf, 0755) != 0 && errno != EEXIST) ? -1 : 0;
}

static void fmt_eta(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, n, "?"); return; }
    int h = (int)(s / 3600), m = (int)(s / 60) % 60, sec = (int)s % 60;
    if (h) snprintf(buf, n, "%dh%02dm", h, m);
    else snprintf(buf, n, "%dm%02ds", m, sec);
}

static void load_data(run *r) {
    char err[512] = "";
    int failed = io_dataset_load(&r->train, r->cfg->data, IO_SPLIT_TRAIN, r->cfg->data_dir, err,
                                 sizeof(err)) != 0;
    if (!failed)
        failed = io_dataset_load(&r->val, r->cfg->data, IO_SPLIT_VAL, r->cfg->data_dir, err,
                                 sizeof(err)) != 0;
    if (comm_any_failed(r->comm, failed, err, sizeof(err))) comm_exit_error(r->comm, err);
}

int trainer_train(comm_ctx *comm, const trainer_config *cfg) {
    run R;
    memset(&R, 0, sizeof(R));
    run *r = &R;
    r->comm = comm;
    r->cfg = cfg;
    int P = comm_size(comm), rank = comm_rank(comm);
    char err[512];
    if (cfg->streams < P) {
        snprintf(err, sizeof(err), "streams = %d is fewer than the %d ranks: every rank needs a stream",
                 cfg->streams, P);
        comm_exit_error(comm, err);
    }
    double t0 = comm_time();
    load_data(r);
    r->tm.io += comm_time() - t0;
    trainer_model_spec spec;
    trainer_spec_from_config(&spec, cfg, r->train->vocab);
    r->model = trainer_model_create(&spec);
    r->L = cfg->seg_len;
    r->bos = r->train->vocab;
    /* streams are dealt in contiguous blocks, as evenly as the count allows */
    r->first_stream = (int)((int64_t)cfg->streams * rank / P);
    r->B = (int)((int64_t)cfg->streams * (rank + 1) / P) - r->first_stream;
    r->streams = layer_xcalloc(r->B, sizeof(stream_state));
    stream_states_init(r->streams, r->B, r->first_stream, cfg->streams, r->L);
    trainer_bptt_mode mode = cfg->bptt == TRAINER_BPTT_FULL ? TRAINER_BPTT_FULL_MODE : TRAINER_BPTT_MRBP_MODE;
    r->rollout = trainer_rollout_create(r->model, cfg->horizon, r->B, mode);
    size_t ms = trainer_model_memory_size(r->model);
    r->M = layer_xcalloc((size_t)r->B * ms + 1, sizeof(float));
    trainer_params *params = trainer_model_params(r->model);
    trainer_tables *tables = trainer_model_tables(r->model);

    if (rank == 0) {
        char d1[256], d2[256];
        io_dataset_describe(r->train, d1, sizeof(d1));
        io_dataset_describe(r->val, d2, sizeof(d2));
        printf("memtrain: %d rank%s, %d streams, horizon %d x %d tokens per stream\n", P,
               P > 1 ? "s" : "", cfg->streams, cfg->horizon, cfg->seg_len);
        printf("data: train %s | val %s\n", d1, d2);
        printf("model: %s/%s d_model %d, dense params %zu, table params %zu, %.3g MFLOP/token\n",
               spec.memformer ? "memformer" : "decoder", spec.hash ? "hash" : "dense", spec.C,
               params->total, trainer_tables_numel(tables),
               2e-6 * trainer_model_flops_per_token(r->model));
        if (make_dir(cfg->run_dir) == 0) {
            char path[1200];
            snprintf(path, sizeof(path), "%s/metrics.csv", cfg->run_dir);
            r->csv = fopen(path, "a");
            if (r->csv && ftell(r->csv) == 0)
                fprintf(r->csv, "step,train_loss,train_ppl,lr,grad_norm,tokens_per_s,ms_compute,"
                                "ms_comm,ms_io,val_ppl\n");
        }
        if (!r->csv) fprintf(stderr, "memtrain: warning: cannot write %s/metrics.csv\n", cfg->run_dir);
        fflush(stdout);
    }

    double run_start = comm_time();
    double win_loss = 0, win_tokens = 0, win_time = 0;
    int win_steps = 0;
    run_timers win = {0, 0, 0};
    int fail = 0;
    for (int64_t step = 0; step < cfg->steps; step++) {
        double ts = comm_time();
        run_timers before = r->tm;
        double t = comm_time();
        fill_rollout(r);
        r->tm.io += comm_time() - t;

        t = comm_time();
        int64_t count = 0;
        double loss = r->B ? trainer_rollout_forward(r->rollout, r->model, r->M, &count) : 0.0;
        r->tm.compute += comm_time() - t;
        t = comm_time();
        double red[2] = {loss, (double)count};
        comm_sum_doubles(comm, red, 2);
        r->tm.comm += comm_time() - t;
        double mean_loss = red[1] > 0 ? red[0] / red[1] : 0.0;
        if (!isfinite(mean_loss)) {
            snprintf(err, sizeof(err), "training loss is %s at step %lld; lower lr (now %g) or grad_clip",
                     isnan(mean_loss) ? "NaN" : "infinite", (long long)step + 1, cfg->lr);
            fail = 1;
            break;
        }
        t = comm_time();
        if (r->B) trainer_rollout_backward(r->rollout, r->model, red[1] > 0 ? (float)(1.0 / red[1]) : 0.0f);
        r->tm.compute += comm_time() - t;

        t = comm_time();
        comm_sum_floats(comm, params->grad, params->total);
        r->tm.comm += comm_time() - t;
        t = comm_time();
        double sq = trainer_sumsq(params->grad, params->total) + trainer_tables_grad_sumsq(tables);
        double gnorm = sqrt(sq);
        float scale = trainer_clip_scale(gnorm, cfg->grad_clip);
        float lr = trainer_lr_at(step, cfg);
        dense_step(params, cfg, lr, step + 1, scale);
        trainer_tables_step(tables, lr * cfg->table_lr_scale, cfg->beta1, cfg->beta2, 1e-8f,
                            step + 1, scale);
        r->tm.compute += comm_time() - t;

        double dt = comm_time() - ts;
        win_loss += red[0];
        win_tokens += red[1];
        win_time += dt;
        win.compute += r->tm.compute - before.compute;
        win.comm += r->tm.comm - before.comm;
        win.io += r->tm.io - before.io;
        int last = step + 1 == cfg->steps;
        double val_ppl = NAN;
        if (cfg->eval_every > 0 && ((step + 1) % cfg->eval_every == 0 || last)) {
            t = comm_time();
            val_ppl = evaluate(r);
            r->tm.compute += comm_time() - t;
        }
        win_steps++;
        if ((cfg->log_every > 0 && (step + 1) % cfg->log_every == 0) || last || !isnan(val_ppl)) {
            if (rank == 0 && win_tokens > 0) {
                double wl = win_loss / win_tokens, elapsed = comm_time() - run_start;
                char eta[32];
                fmt_eta(eta, sizeof(eta), elapsed / (double)(step + 1) * (double)(cfg->steps - step - 1));
                /* averages over the steps since the previous line */
                double k = 1000.0 / win_steps, tps = win_tokens / (win_time > 0 ? win_time : 1e-9);
                printf("step %lld/%lld | loss %.4f | ppl %.3f | lr %.2e | gnorm %.3f | %.0f tok/s | "
                       "ms/step compute %.1f comm %.1f io %.1f | eta %s",
                       (long long)step + 1, (long long)cfg->steps, wl, exp(wl), lr, gnorm, tps,
                       win.compute * k, win.comm * k, win.io * k, eta);
                if (!isnan(val_ppl)) printf(" | val ppl %.3f", val_ppl);
                printf("\n");
                fflush(stdout);
                if (r->csv) {
                    fprintf(r->csv, "%lld,%.6f,%.6f,%.6e,%.6f,%.1f,%.3f,%.3f,%.3f,", (long long)step + 1,
                            wl, exp(wl), lr, gnorm, tps, win.compute * k, win.comm * k, win.io * k);
                    if (!isnan(val_ppl)) fprintf(r->csv, "%.6f", val_ppl);
                    fprintf(r->csv, "\n");
                    fflush(r->csv);
                }
            }
            win_loss = win_tokens = win_time = 0;
            win_steps = 0;
            win = (run_timers){0, 0, 0};
        }
    }
    if (comm_any_failed(comm, fail, err, sizeof(err))) comm_exit_error(comm, err);
    if (r->csv) fclose(r->csv);
    stream_states_free(r->streams, r->B);
    trainer_rollout_free(r->rollout);
    trainer_model_free(r->model);
    io_dataset_free(r->train);
    io_dataset_free(r->val);
    free(r->M);
    return 0;
}
