/* Training loop: streams of documents, MRBP rollouts, all-reduced gradients, AdamW + lazy Adam, evaluation, logs. */
#include "trainer/train.h"

#include <errno.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/data.h"
#include "layers/common.h"
#include "trainer/optim.h"
#include "trainer/checkpoint.h"
#include "trainer/preflight.h"
#include "trainer/rollout.h"
#include "trainer/schedule.h"
#include "trainer/step.h"
#include "trainer/timers.h"
#include "trainer/watchdog.h"

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
        .streams = cfg->streams, .block = cfg->stream_block, .horizon = cfg->horizon,
        .budget = (double)cfg->row_cache_mb * 1048576.0,
        .latency = cfg->net_latency_us * 1e-6, .bandwidth = cfg->net_gbps * 1e9 / 8,
        .wire_bytes = cfg->row_format == TRAINER_ROWS_BF16 ? 2 : 4,
        .force = (int)cfg->table_strategy - 1, /* auto (0) is -1 */
    };
}

/* Where one stream is in its documents, plus what the next segment needs of the last one. */
typedef struct stream_state {
    io_stream io;
    int32_t *prev; /* (L) tokens of the previous segment, -1 padding */
    int32_t last;  /* last token of the previous segment */
} stream_state;

typedef struct run {
    comm_ctx *comm;
    const trainer_config *cfg;
    io_dataset *train, *val;
    trainer_model *model;
    trainer_rollout *rollout;
    trainer_schedule sched;
    int B, first_stream, L, bos;
    stream_state *streams;
    float *M; /* (B, S*C) carried memory */
    FILE *csv;
    trainer_rundir *rd;
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
    for (int b = 0; b < r->B; b++)
        for (int t = 0; t < ro->T; t++) {
            size_t off = ((size_t)b * ro->T + t) * r->L;
            fill_segment(&r->streams[b], r->train, r->L, r->bos, ro->enc + off, ro->dec + off,
                         ro->tgt + off, ro->reset + (size_t)b * ro->T + t);
        }
}

/* Every rank runs the same number of segments, since each lookup of a hashed projection is an
 * exchange. */
double trainer_validation_ppl(comm_ctx *comm, const trainer_config *cfg, trainer_model *model,
                              const io_dataset *val) {
    int P = comm_size(comm), rank = comm_rank(comm), L = cfg->seg_len, bos = cfg->vocab;
    int first = (int)((int64_t)cfg->streams * rank / P);
    int B = (int)((int64_t)cfg->streams * (rank + 1) / P) - first;
    stream_state *vs = layer_xcalloc(B + 1, sizeof(stream_state));
    stream_states_init(vs, B, first, cfg->streams, L);
    int64_t *quota = layer_xcalloc(B + 1, sizeof(int64_t));
    uint8_t *done = layer_xcalloc(B + 1, 1);
    for (int b = 0; b < B; b++) {
        int64_t j = first + b;
        quota[b] = j < val->ndocs ? (val->ndocs - j + cfg->streams - 1) / cfg->streams : 0;
    }
    trainer_segments *sg = trainer_segments_create(model, B);
    double sums[2] = {0, 0};
    for (int t = 0;; t++) {
        if (cfg->eval_segments > 0 && t >= cfg->eval_segments) break;
        int64_t active = 0;
        for (int b = 0; b < B; b++) {
            int32_t *e = sg->enc + (size_t)b * L, *d = sg->dec + (size_t)b * L;
            int32_t *g = sg->tgt + (size_t)b * L;
            if (!done[b]) {
                fill_segment(&vs[b], val, L, bos, e, d, g, sg->reset + b);
                /* a stream reads its share of the documents once, whatever eval_segments asks */
                if (vs[b].io.doc_count > quota[b]) done[b] = 1;
            }
            if (done[b]) { /* an idle stream: nothing scored */
                for (int i = 0; i < L; i++) {
                    e[i] = d[i] = bos;
                    g[i] = -1;
                }
                sg->reset[b] = 1;
            }
            active += !done[b];
        }
        if (!trainer_schedule_any_active(comm, active > 0)) break;
        int cnt = 0;
        sums[0] += trainer_segments_forward(model, sg, &cnt, NULL);
        sums[1] += cnt;
        trainer_segments_advance(model, sg, 1);
    }
    comm_sum_doubles(comm, sums, 2);
    trainer_tables_clear_cache(trainer_model_tables(model));
    trainer_segments_free(sg);
    stream_states_free(vs, B);
    free(quota);
    free(done);
    return sums[1] > 0 ? exp(sums[0] / sums[1]) : NAN;
}

static void fmt_eta(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, n, "?"); return; }
    int h = (int)(s / 3600), m = (int)(s / 60) % 60, sec = (int)s % 60;
    if (h) snprintf(buf, n, "%dh%02dm", h, m);
    else snprintf(buf, n, "%dm%02ds", m, sec);
}

/* Figures summed over the steps since the last log line. */
typedef struct log_window {
    int steps;
    double loss, tokens;
    trainer_timers time;
    double bytes, lookups, misses;
} log_window;

static void window_add(log_window *w, const trainer_step_info *si) {
    w->steps++;
    w->loss += si->loss_sum;
    w->tokens += si->tokens;
    trainer_timers_add(&w->time, &si->time);
    w->bytes += (double)si->bytes_sent;
    w->lookups += (double)si->lookups;
    w->misses += (double)si->misses;
}

/* The metrics columns: the step's figures, then ms_<timer> per step for every trainer_timer
 * (no newline). */
static void csv_header(char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "step,train_loss,train_ppl,lr,grad_norm,tokens_per_s");
    for (int i = 0; i < TRAINER_TIMER_COUNT && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, ",ms_%s", trainer_timer_name(i));
    if (k < n) snprintf(buf + k, n - k, ",bytes_sent_per_rank,cache_hit_rate,val_ppl");
}

/* Rank 0 prints one line and appends the same figures to metrics.csv. Collective (the byte
 * and cache counters are averaged over ranks). Throughput counts training time only:
 * evaluation and checkpoints are reported but not charged to the tokens. */
static void log_line(run *r, log_window *w, int64_t step, const trainer_step_info *si,
                     double val_ppl, double elapsed) {
    double avg[3] = {w->bytes, w->lookups, w->misses};
    comm_sum_doubles(r->comm, avg, 3);
    if (comm_rank(r->comm) != 0 || w->steps == 0) return;
    const trainer_config *cfg = r->cfg;
    int P = comm_size(r->comm);
    double k = 1000.0 / w->steps;
    double loss = w->tokens > 0 ? w->loss / w->tokens : 0.0;
    double train = trainer_timers_total(&w->time) - w->time.sec[TRAINER_TIMER_EVAL] -
                   w->time.sec[TRAINER_TIMER_CKPT];
    double tps = w->tokens / (train > 0 ? train : 1e-9);
    double bytes = avg[0] / P / w->steps, hit = avg[1] > 0 ? 1.0 - avg[2] / avg[1] : 1.0;
    char eta[32];
    fmt_eta(eta, sizeof(eta), elapsed / (double)(step + 1) * (double)(cfg->steps - step - 1));
    printf("step %lld/%lld | loss %.4f ppl %.3f | lr %.2e | gnorm %.3f | %.0f tok/s | ms/step",
           (long long)step + 1, (long long)cfg->steps, loss, exp(loss), si->lr, si->grad_norm, tps);
    for (int i = 0; i < TRAINER_TIMER_COUNT; i++)
        if (w->time.sec[i] > 0 || i <= TRAINER_TIMER_OPTIMIZER)
            printf(" %s %.1f", trainer_timer_name(i), w->time.sec[i] * k);
    if (avg[1] > 0) printf(" | sent %.1f KiB/rank/step, rows fetched for %.1f%% of lookups", bytes / 1024, 100 * (1 - hit));
    if (!isnan(val_ppl)) printf(" | val ppl %.3f", val_ppl);
    printf(" | eta %s\n", eta);
    fflush(stdout);
    if (r->csv) {
        /* the loss in full: runs can be compared bit for bit */
        fprintf(r->csv, "%lld,%.17g,%.6f,%.6e,%.6f,%.1f", (long long)step + 1, loss, exp(loss),
                si->lr, si->grad_norm, tps);
        for (int i = 0; i < TRAINER_TIMER_COUNT; i++) fprintf(r->csv, ",%.3f", w->time.sec[i] * k);
        fprintf(r->csv, ",%.0f,%.4f,", bytes, hit);
        if (!isnan(val_ppl)) fprintf(r->csv, "%.6f", val_ppl);
        fprintf(r->csv, "\n");
        /* a failed write is noticed by the caller (trainer_rundir_metrics_flush) */
    }
}

io_dataset *trainer_load_split(comm_ctx *comm, const trainer_config *cfg, io_split split) {
    char err[512] = "";
    io_dataset *d = NULL;
    int failed = io_dataset_load(&d, cfg->data, split, cfg->data_dir, err, sizeof(err)) != 0;
    if (!failed && d->vocab > cfg->vocab) {
        snprintf(err, sizeof(err), "vocab = %d is smaller than the %d token values of %s: set vocab = %d",
                 cfg->vocab, d->vocab, cfg->data, d->vocab);
        failed = 1;
    }
    if (comm_any_failed(comm, failed, err, sizeof(err))) comm_exit_error(comm, err);
    return d;
}

static void load_data(run *r) {
    r->train = trainer_load_split(r->comm, r->cfg, IO_SPLIT_TRAIN);
    r->val = trainer_load_split(r->comm, r->cfg, IO_SPLIT_VAL);
}

/* Steps after which the table plan is revised with measured distinct keys. */
enum { TRAINER_REPLAN_AFTER = 5 };

/* Set by SIGUSR1/SIGTERM/SIGINT; the ranks agree on it at the next step boundary. */
static volatile sig_atomic_t stop_signal = 0;

static void on_signal(int sig) { stop_signal = sig; }

static void install_signal_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

/* The streams' state in the flat form of a checkpoint, and back. */
static void streams_export(const run *r, trainer_stream_state *st) {
    for (int b = 0; b < r->B; b++) {
        st->cursor[2 * b] = r->streams[b].io.doc_count;
        st->cursor[2 * b + 1] = r->streams[b].io.pos;
        memcpy(st->prev + (size_t)b * r->L, r->streams[b].prev, (size_t)r->L * sizeof(int32_t));
        st->last[b] = r->streams[b].last;
    }
}

static void streams_import(run *r, const trainer_stream_state *st) {
    for (int b = 0; b < r->B; b++) {
        r->streams[b].io.doc_count = st->cursor[2 * b];
        r->streams[b].io.pos = st->cursor[2 * b + 1];
        memcpy(r->streams[b].prev, st->prev + (size_t)b * r->L, (size_t)r->L * sizeof(int32_t));
        r->streams[b].last = st->last[b];
    }
}

static trainer_stream_state stream_state_alloc(const run *r) {
    trainer_stream_state st = {
        .nstreams = r->cfg->streams, .first = r->first_stream, .B = r->B, .L = r->L,
        .msize = trainer_model_memory_size(r->model), .M = r->M, .data = r->train,
    };
    st.cursor = layer_xcalloc(2 * (size_t)r->B + 1, sizeof(int64_t));
    st.prev = layer_xcalloc((size_t)r->B * r->L + 1, sizeof(int32_t));
    st.last = layer_xcalloc((size_t)r->B + 1, sizeof(int32_t));
    return st;
}

static void stream_state_release(trainer_stream_state *st) {
    free(st->cursor);
    free(st->prev);
    free(st->last);
}

/* Collective checkpoint of the state after `step` optimizer steps. Returns 0, or -1 with a
 * message in err on every rank. */
static int write_checkpoint(run *r, int64_t step, char *err, size_t n) {
    double t = comm_time();
    trainer_stream_state st = stream_state_alloc(r);
    streams_export(r, &st);
    int rc = trainer_ckpt_save(r->comm, r->cfg, trainer_rundir_id(r->rd), r->model, &st, step,
                               err, n);
    stream_state_release(&st);
    if (rc == 0 && comm_rank(r->comm) == 0) {
        printf("checkpoint: %s/ckpt/ckpt-%08lld.h5 written in %.2f s\n", r->cfg->run_dir,
               (long long)step, comm_time() - t);
        fflush(stdout);
    }
    return rc;
}

/* As write_checkpoint; failures end the job. */
static void save_checkpoint(run *r, int64_t step) {
    char err[512];
    if (write_checkpoint(r, step, err, sizeof(err)) != 0) comm_exit_error(r->comm, err);
}

/* Collective, after metrics.csv failed to take a row (message in what, the same on every
 * rank): the state of `step` is checkpointed, then the job ends (status 2, never returns)
 * with one line naming the file, or, when the checkpoint cannot be written either (a full
 * disk), naming both. */
static void metrics_lost(run *r, int64_t step, const char *what) {
    char err[1024], ck[512];
    if (write_checkpoint(r, step, ck, sizeof(ck)) == 0)
        snprintf(err, sizeof(err), "%.600s after step %lld: stopped after writing checkpoint "
                 "ckpt-%08lld.h5; once the file can be written, continue with --resume %.200s", what,
                 (long long)step, (long long)step, r->cfg->run_dir);
    else
        snprintf(err, sizeof(err), "%.400s after step %lld, and no checkpoint could be written "
                 "either: %.500s", what, (long long)step, ck);
    comm_exit_error(r->comm, err);
}

/* Restores the newest valid checkpoint of resume_dir; returns the steps it had done. */
static int64_t resume_run(run *r, const char *resume_dir) {
    char err[512], path[1100];
    int64_t step = 0;
    double t = comm_time();
    trainer_stream_state st = stream_state_alloc(r);
    int rc = trainer_ckpt_resume(r->comm, resume_dir, trainer_rundir_id(r->rd), r->cfg, r->model,
                                 &st, &step, path, sizeof(path), err, sizeof(err));
    if (rc == 0) streams_import(r, &st);
    stream_state_release(&st);
    if (rc != 0) comm_exit_error(r->comm, err);
    if (comm_rank(r->comm) == 0) {
        char shown[2200];
        printf("resumed from %s at step %lld (read in %.2f s)\n",
               comm_escape(shown, sizeof(shown), path), (long long)step, comm_time() - t);
        fflush(stdout);
    }
    return step;
}

int trainer_train(comm_ctx *comm, const trainer_config *cfg, const char *resume_dir) {
    run R;
    memset(&R, 0, sizeof(R));
    run *r = &R;
    r->comm = comm;
    r->cfg = cfg;
    int P = comm_size(comm), rank = comm_rank(comm);
    char err[512];
    if (trainer_schedule_check(cfg->streams, cfg->stream_block, P, err, sizeof(err)) != 0)
        comm_exit_error(comm, err);
    r->sched = trainer_schedule_make(cfg->streams, cfg->stream_block, P, rank);
    trainer_preflight_memory(comm, cfg, TRAINER_USE_TRAIN, 0, 1);
    char header[512];
    csv_header(header, sizeof(header));
    r->rd = trainer_rundir_open(comm, cfg, resume_dir, header);
    r->csv = trainer_rundir_metrics(r->rd);
    install_signal_handlers();
    load_data(r);
    if (cfg->eval_every > 0) trainer_preflight_eval(comm, cfg, r->val);
    trainer_model_spec spec;
    trainer_spec_from_config(&spec, cfg);
    r->model = trainer_model_create(&spec, comm);
    r->L = cfg->seg_len;
    r->bos = cfg->vocab;
    /* streams are dealt in whole blocks (trainer/schedule.h) */
    r->first_stream = r->sched.first_stream;
    r->B = r->sched.nstreams_mine;
    r->streams = layer_xcalloc(r->B, sizeof(stream_state));
    stream_states_init(r->streams, r->B, r->first_stream, cfg->streams, r->L);
    trainer_rollout_mode mode = cfg->bptt == TRAINER_BPTT_FULL ? TRAINER_ROLLOUT_FULL : TRAINER_ROLLOUT_MRBP;
    r->rollout = trainer_rollout_create(r->model, cfg->horizon, r->B, mode);
    trainer_rollout_set_block(r->rollout, cfg->stream_block);
    trainer_schedule_attach(&r->sched, r->model);
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
        fflush(stdout);
    }
    if (trainer_tables_check_plan(tables, err, sizeof(err)) != 0) comm_exit_error(comm, err);
    trainer_tables_print_plan(tables);
    int64_t first_step = resume_dir ? resume_run(r, resume_dir) : 0;

    double run_start = comm_time();
    log_window w;
    memset(&w, 0, sizeof(w));
    int fail = 0, interrupted = 0;
    int64_t done = first_step;
    /* a sitting's planned end; inherited by a resumed run that is already past it: ignored */
    int64_t stop = cfg->stop_after > first_step ? cfg->stop_after : cfg->steps;
    for (int64_t step = first_step; step < stop; step++) {
        /* no step without a launcher; a rank left waiting in this step's exchanges for one
           that stopped here is ended by its own watchdog, as it is not writing */
        if (trainer_watchdog_orphaned()) trainer_watchdog_exit();
        trainer_timer_start(&w.time, TRAINER_TIMER_DATA);
        fill_rollout(r);
        trainer_timer_stop(&w.time, TRAINER_TIMER_DATA);
        trainer_step_info si;
        if (trainer_step(r->model, r->rollout, &r->sched, r->M, comm, cfg, step, &si, err,
                         sizeof(err)) != 0) {
            fail = 1;
            break;
        }
        done = step + 1;
        window_add(&w, &si);
        /* the planner's first figures assume uniform buckets; after a few steps it knows */
        if (done == first_step + TRAINER_REPLAN_AFTER) trainer_tables_replan(tables);
        int last = done == stop;
        double val_ppl = NAN;
        if (cfg->eval_every > 0 && (done % cfg->eval_every == 0 || last)) {
            trainer_timer_start(&w.time, TRAINER_TIMER_EVAL);
            val_ppl = trainer_validation_ppl(comm, cfg, r->model, r->val);
            trainer_timer_stop(&w.time, TRAINER_TIMER_EVAL);
        }
        if ((cfg->log_every > 0 && done % cfg->log_every == 0) || last || !isnan(val_ppl)) {
            log_line(r, &w, step, &si, val_ppl, (comm_time() - run_start) * (double)cfg->steps /
                                                    (double)(cfg->steps - first_step));
            memset(&w, 0, sizeof(w));
        }
        /* a signal reaches the ranks at different moments, the launcher may be gone, a
           metrics row may not have been written: agree on all three at the step boundary */
        char what[512] = "";
        int lost = trainer_rundir_metrics_flush(r->rd, what, sizeof(what)) != 0;
        int64_t flags[3] = {stop_signal, trainer_watchdog_orphaned(), lost};
        comm_sum_i64(comm, flags, 3);
        /* no new step and no new checkpoint without a launcher (trainer/watchdog.h) */
        if (flags[1]) trainer_watchdog_exit();
        if (flags[2]) {
            comm_any_failed(comm, lost, what, sizeof(what));
            metrics_lost(r, done, what);
        }
        int64_t sig = flags[0];
        if (sig != 0 && !last) {
            interrupted = 1;
            break;
        }
        if (!last && cfg->ckpt_every > 0 && done % cfg->ckpt_every == 0) {
            trainer_timer_start(&w.time, TRAINER_TIMER_CKPT);
            save_checkpoint(r, done);
            trainer_timer_stop(&w.time, TRAINER_TIMER_CKPT);
        }
    }
    if (comm_any_failed(comm, fail, err, sizeof(err))) comm_exit_error(comm, err);
    /* the last rows are out: a write the file system reports only at close ends the run too */
    char what[512] = "";
    if (comm_any_failed(comm, trainer_rundir_metrics_close(r->rd, what, sizeof(what)) != 0, what,
                        sizeof(what)))
        metrics_lost(r, done, what);
    r->csv = NULL;
    if (done > first_step || !resume_dir) save_checkpoint(r, done);
    if (!interrupted && done < cfg->steps && rank == 0) {
        printf("memtrain: stopped after step %lld of %lld (stop_after); continue with --resume %s\n",
               (long long)done, (long long)cfg->steps, cfg->run_dir);
        fflush(stdout);
    }
    if (interrupted && rank == 0) {
        printf("memtrain: stopped by a signal after step %lld; resume with --resume %s\n",
               (long long)done, cfg->run_dir);
        fflush(stdout);
    }
    trainer_rundir_close(r->rd);
    stream_states_free(r->streams, r->B);
    trainer_rollout_free(r->rollout);
    trainer_model_free(r->model);
    io_dataset_free(r->train);
    io_dataset_free(r->val);
    free(r->M);
    return interrupted ? TRAINER_EXIT_INTERRUPTED : 0;
}
