/* Training loop: streams of documents, MRBP rollouts, all-reduced gradients, AdamW + lazy Adam, evaluation, logs. */
#include "trainer/run/train.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "io/data.h"
#include "io/files.h"
#include "layers/common.h"
#include "layers/layers.h"
#include "trainer/base/optim.h"
#include "trainer/run/blas.h"
#include "trainer/run/checkpoint.h"
#include "trainer/run/preflight.h"
#include "trainer/engine/rollout.h"
#include "trainer/engine/schedule.h"
#include "trainer/engine/step.h"
#include "trainer/base/timers.h"
#include "trainer/run/watchdog.h"

long long trainer_tokens_per_step(const trainer_config *cfg) {
    return (long long)cfg->streams * cfg->horizon * cfg->seg_len;
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
    int by_class; /* the streams' shuffled order is by class (io_stream) */
    trainer_model *model;
    trainer_rollout *rollout;
    trainer_schedule sched;
    int B, first_stream, L, bos;
    stream_state *streams;
    float *M; /* (B, S*C) carried memory */
    FILE *csv;
    FILE *log; /* rank 0: run_dir/train.log, a copy of what the run prints */
    char dir[2200]; /* run_dir as printed (comm_escape) */
    trainer_rundir *rd;
} run;

/* Rank 0 prints a line to stdout and appends it to run_dir/train.log. */
static void say(const run *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    comm_vprint0(r->comm, fmt, ap); /* and train.log, the transcript once it is open */
    va_end(ap);
}

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

int64_t trainer_eval_docs(const trainer_config *cfg, const io_dataset *val) {
    return cfg->eval_docs > 0 && cfg->eval_docs < val->ndocs ? cfg->eval_docs : val->ndocs;
}

/* stream_block as set, or with auto the block bitwise runs use: the same on every rank count */
static int eval_block(const trainer_config *cfg) {
    trainer_config fixed = *cfg;
    fixed.deterministic = TRAINER_DET_BITWISE;
    int blk = trainer_config_stream_block(&fixed, 1);
    return blk < cfg->streams ? blk : cfg->streams;
}

int trainer_eval_lanes(const trainer_config *cfg, int64_t ndocs) {
    int S = cfg->streams, blk = eval_block(cfg);
    if (ndocs >= S) return S;
    int64_t need = (ndocs + blk - 1) / blk * blk;
    return (int)(need > blk ? need : blk);
}

/* Set by SIGUSR1/SIGUSR2/SIGTERM/SIGINT/SIGHUP; the ranks agree on it at the next step boundary
 * (and in a validation pass, at its next segment). */
static volatile sig_atomic_t stop_signal = 0;

/* The documents are dealt to trainer_eval_lanes lanes (lane j scores documents j, j + lanes,
 * ... of the first trainer_eval_docs), the lanes cut into blocks of stream_block as in training
 * and the blocks dealt over the ranks. A block is computed as one batch whatever the rank
 * count, so a lane's figures are too (a batch of other rows could round differently); every
 * rank makes the same calls (a rank out of blocks computes an idle one), since each lookup of
 * a hashed projection is an exchange. A document starts from fresh memory and its own first
 * token; its loss is summed per lane in double, and the lanes' sums in lane order, so every
 * rank count gives the same figure. */
double trainer_validation_ppl(comm_ctx *comm, const trainer_config *cfg, trainer_model *model,
                              const io_dataset *val, int64_t *tokens, int may_stop) {
    int P = comm_size(comm), rank = comm_rank(comm), L = cfg->seg_len, bos = cfg->vocab;
    int V = cfg->vocab, blk = eval_block(cfg);
    int64_t ndocs = trainer_eval_docs(cfg, val);
    int S = trainer_eval_lanes(cfg, ndocs);
    trainer_schedule sc = trainer_schedule_make(S, blk, P, rank);
    int passes = sc.passes, nb = sc.nmine, first = sc.first_stream, B = sc.nstreams_mine;
    stream_state *vs = layer_xcalloc(B + 1, sizeof(stream_state));
    stream_states_init(vs, B, first, S, L);
    int64_t *quota = layer_xcalloc(B + 1, sizeof(int64_t));
    uint8_t *done = layer_xcalloc(B + 1, 1);
    for (int b = 0; b < B; b++) {
        int64_t j = first + b;
        quota[b] = j < ndocs ? (ndocs - j + S - 1) / S : 0;
        done[b] = quota[b] == 0;
    }
    double *lane = layer_xcalloc(2 * (size_t)S, sizeof(double)); /* loss, then count, per lane */
    /* this rank's blocks, then an idle block for the passes it has none */
    trainer_segments **sg = layer_xcalloc((size_t)passes, sizeof(trainer_segments *));
    int stopped = 0;
    for (int k = 0; k < passes; k++) {
        int n = k < nb ? (k * blk + blk < B ? blk : B - k * blk) : blk;
        sg[k] = k < nb || k == nb ? trainer_segments_create(model, n) : sg[nb];
    }
    for (;;) {
        int64_t active = 0;
        for (int b = 0; b < B; b++) {
            trainer_segments *g = sg[b / blk];
            int i = b % blk;
            int32_t *e = g->enc + (size_t)i * L, *d = g->dec + (size_t)i * L;
            int32_t *t = g->tgt + (size_t)i * L;
            /* a lane that has finished its last document is done */
            if (!done[b] && vs[b].io.pos == 0 && vs[b].io.doc_count == quota[b]) done[b] = 1;
            if (!done[b]) {
                fill_segment(&vs[b], val, L, bos, e, d, t, g->reset + i);
            } else { /* an idle lane: nothing scored */
                for (int k = 0; k < L; k++) {
                    e[k] = d[k] = bos;
                    t[k] = -1;
                }
                g->reset[i] = 1;
            }
            active += !done[b];
        }
        /* a stop signal (train catches them) ends the pass: the checkpoint waits for it */
        int64_t go[2] = {active > 0, may_stop && stop_signal != 0};
        comm_sum_i64(comm, go, 2);
        if (go[1]) stopped = 1;
        if (go[0] == 0 || stopped) break;
        for (int k = 0; k < passes; k++) {
            trainer_segments *g = sg[k];
            if (k >= nb) /* idle: every lane padding */
                for (int i = 0; i < g->B; i++) {
                    for (int x = 0; x < L; x++) {
                        g->enc[(size_t)i * L + x] = g->dec[(size_t)i * L + x] = bos;
                        g->tgt[(size_t)i * L + x] = -1;
                    }
                    g->reset[i] = 1;
                }
            int cnt = 0;
            trainer_step_act *act = NULL;
            trainer_segments_forward(model, g, &cnt, &act);
            const float *logits = trainer_step_logits(act);
            for (int i = 0; i < g->B && k < nb; i++) {
                int b = k * blk + i;
                if (done[b]) continue;
                int c = 0;
                lane[first + b] += layer_crossentropy(NULL, &c, logits + (size_t)i * L * V,
                                                      g->tgt + (size_t)i * L, L, V, 0.0f);
                lane[S + first + b] += c;
            }
            trainer_segments_advance(model, g, 1);
        }
    }
    /* each lane's figures are on one rank and zero elsewhere: the sum over ranks is exact */
    comm_sum_doubles(comm, lane, 2 * S);
    double loss = 0.0, count = 0.0;
    for (int j = 0; j < S && !stopped; j++) {
        loss += lane[j];
        count += lane[S + j];
    }
    /* every token of the documents is a target once, whatever the segment length */
    LAYER_ASSERT(stopped || count == (double)(val->doc_off[ndocs] - val->doc_off[0]));
    if (tokens) *tokens = (int64_t)count;
    trainer_tables_clear_cache(trainer_model_tables(model));
    for (int k = 0; k <= nb && k < passes; k++) trainer_segments_free(sg[k]);
    free(sg);
    stream_states_free(vs, B);
    free(quota);
    free(done);
    free(lane);
    return count > 0 ? exp(loss / count) : NAN;
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
    double bytes, lookups, misses, in_place;
} log_window;

static void window_add(log_window *w, const trainer_step_info *si) {
    w->steps++;
    w->loss += si->loss_sum;
    w->tokens += si->tokens;
    trainer_timers_add(&w->time, &si->time);
    w->bytes += (double)si->bytes_sent;
    w->lookups += (double)si->lookups;
    w->misses += (double)si->misses;
    w->in_place += (double)si->bytes_in_place;
}

/* The metrics columns: the step's figures, then ms_<timer> per step for every trainer_timer,
 * then the exchange figures, the validation perplexity and the tokens it scored (empty between
 * evaluations), and the passes over the training data so far (no newline). */
static void csv_header(char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "step,train_loss,train_ppl,lr,grad_norm,tokens_per_s");
    for (int i = 0; i < TRAINER_TIMER_COUNT && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, ",ms_%s", trainer_timer_name(i));
    if (k < n)
        snprintf(buf + k, n - k, ",bytes_sent_per_rank,cache_hit_rate,val_ppl,val_tokens,passes,"
                 "elapsed_s,tokens,val_loss");
}

/* Rank 0 prints one line and appends the same figures to metrics.csv. Collective (the byte
 * and cache counters are averaged over ranks). Throughput counts training time only:
 * evaluation and checkpoints are reported but not charged to the tokens. */
static void log_line(run *r, log_window *w, int64_t step, const trainer_step_info *si,
                     double val_ppl, int64_t val_tokens, double eta_s, double elapsed) {
    double started = 0.0;
    for (int b = 0; b < r->B; b++) started += (double)r->streams[b].io.doc_count;
    double avg[5] = {w->bytes, w->lookups, w->misses, started, w->in_place};
    comm_sum_doubles(r->comm, avg, 5);
    double passes = io_stream_passes((int64_t)avg[3], r->train);
    if (comm_rank(r->comm) != 0 || w->steps == 0) return;
    const trainer_config *cfg = r->cfg;
    int P = comm_size(r->comm);
    double k = 1000.0 / w->steps;
    double loss = w->tokens > 0 ? w->loss / w->tokens : 0.0;
    double train = trainer_timers_total(&w->time) - w->time.sec[TRAINER_TIMER_EVAL] -
                   w->time.sec[TRAINER_TIMER_CKPT];
    double tps = w->tokens / (train > 0 ? train : 1e-9);
    double bytes = avg[0] / P / w->steps, hit = avg[1] > 0 ? 1.0 - avg[2] / avg[1] : 1.0;
    char eta[32], line[512], part[160];
    fmt_eta(eta, sizeof(eta), eta_s);
    /* one short line: the step's figures, the time per step and its two largest parts */
    int a = -1, b = -1;
    for (int i = 0; i < TRAINER_TIMER_COUNT; i++) {
        if (a < 0 || w->time.sec[i] > w->time.sec[a]) { b = a; a = i; }
        else if (b < 0 || w->time.sec[i] > w->time.sec[b]) b = i;
    }
    size_t used = (size_t)snprintf(line, sizeof line,
                                   "step %lld/%lld | loss %.4f ppl %.3f | lr %.2e | gnorm %.3f | "
                                   "%.0f tok/s | %.0f ms/step (%s %.0f, %s %.0f)",
                                   (long long)step + 1, (long long)cfg->steps, loss, exp(loss),
                                   si->lr, si->grad_norm, tps, trainer_timers_total(&w->time) * k,
                                   trainer_timer_name(a), w->time.sec[a] * k,
                                   trainer_timer_name(b), w->time.sec[b] * k);
    if (avg[1] > 0) {
        /* with the share read in place on the node (share_exchange), when there is one */
        char inplace[48] = "";
        if (avg[4] > 0)
            snprintf(inplace, sizeof inplace, " (%.0f%% read in place)", 100 * avg[4] / avg[0]);
        snprintf(part, sizeof part, " | sent %.1f MiB%s, fetched %.1f%%", bytes / 1048576, inplace,
                 100 * (1 - hit));
        used += (size_t)snprintf(line + used, used < sizeof line ? sizeof line - used : 0, "%s", part);
    }
    if (used < sizeof line)
        used += (size_t)snprintf(line + used, sizeof line - used, " | pass %.3f", passes);
    if (!isnan(val_ppl) && used < sizeof line)
        used += (size_t)snprintf(line + used, sizeof line - used, " | val ppl %.3f (%lld tokens)",
                                 val_ppl, (long long)val_tokens);
    say(r, "%s | eta %s\n", line, eta);
    if (r->csv) {
        /* the loss in full: runs can be compared bit for bit */
        fprintf(r->csv, "%lld,%.17g,%.6f,%.6e,%.6f,%.1f", (long long)step + 1, loss, exp(loss),
                si->lr, si->grad_norm, tps);
        for (int i = 0; i < TRAINER_TIMER_COUNT; i++) fprintf(r->csv, ",%.3f", w->time.sec[i] * k);
        fprintf(r->csv, ",%.0f,%.4f,", bytes, hit);
        if (!isnan(val_ppl)) fprintf(r->csv, "%.6f,%lld", val_ppl, (long long)val_tokens);
        else fprintf(r->csv, ",");
        fprintf(r->csv, ",%.4f,%.1f,%lld,", passes, elapsed,
                (long long)(step + 1) * trainer_tokens_per_step(cfg));
        if (!isnan(val_ppl)) fprintf(r->csv, "%.6f", log(val_ppl));
        fprintf(r->csv, "\n");
        /* a failed write is noticed by the caller (trainer_rundir_metrics_flush) */
    }
}

/* Whether this rank read the data rank 0 read: the same documents, tokens and values (a CRC
 * of them). The same spec can name other files on other ranks (node-local copies, another
 * working directory, MEMTRAIN_FASHION_MNIST_DIR set on some), and the streams would then read
 * other documents per rank, or past a rank's own. Collective; err says how they differ. */
static int same_data(comm_ctx *comm, const io_dataset *d, const char *spec, char *err,
                     size_t n) {
    int64_t mine[4] = {d->ndocs, d->doc_off[d->ndocs], d->vocab, (int64_t)d->crc};
    int64_t first[4];
    memcpy(first, mine, sizeof first);
    comm_broadcast(comm, first, sizeof first, 0);
    if (memcmp(first, mine, sizeof mine) == 0) return 1;
    char shown[200];
    snprintf(err, n, "rank %d read other data than rank 0 for %s: %lld documents, %lld tokens "
             "(rank 0: %lld, %lld)%s; every rank must read the same files (data_dir, the working "
             "directory and MEMTRAIN_FASHION_MNIST_DIR alike)", comm_rank(comm),
             comm_escape(shown, sizeof shown, spec), (long long)mine[0], (long long)mine[1],
             (long long)first[0], (long long)first[1],
             mine[0] == first[0] && mine[1] == first[1] ? ", other values" : "");
    return 0;
}

io_dataset *trainer_load_split(comm_ctx *comm, const trainer_config *cfg, io_split split) {
    char err[512] = "";
    io_dataset *d = NULL;
    /* a separate validation file is read whole */
    int own = split == IO_SPLIT_VAL && strcmp(cfg->val_data, "split") != 0;
    const char *spec = own ? cfg->val_data : cfg->data;
    int failed = io_dataset_load(&d, spec, own ? IO_SPLIT_ALL : split, cfg->data_dir, err,
                                 sizeof(err)) != 0;
    if (failed && split == IO_SPLIT_VAL && !own && strstr(err, "validation split is empty")) {
        size_t len = strlen(err);
        const char *kind = strncmp(spec, "u16:", 4) == 0 ? "u16" : strncmp(spec, "u8:", 3) == 0 ? "u8" : "text";
        snprintf(err + len, sizeof(err) - len, "; give a validation file with val_data=%s:FILE", kind);
    }
    if (failed) { /* name the key, and where a relative file was looked for */
        char why[512], cwd[PATH_MAX];
        snprintf(why, sizeof(why), "%s", err);
        const char *colon = strchr(spec, ':');
        int relative = colon && colon[1] != '/' && colon[1] != '\0' &&
                       strstr(why, "No such file or directory") && getcwd(cwd, sizeof cwd);
        snprintf(err, sizeof(err), "%s: %.*s%s%.*s", own ? "val_data" : "data",
                 relative ? 200 : 490, why, relative ? "; a relative path, read from the working "
                 "directory " : "", relative ? 200 : 0, relative ? cwd : "");
    }
    if (!failed && d->vocab > cfg->vocab) {
        snprintf(err, sizeof(err), "vocab = %d is smaller than the %d token values of %s: set "
                 "vocab = %d (for a new run: a checkpoint's model keeps its vocab)", cfg->vocab,
                 d->vocab, spec, d->vocab);
        failed = 1;
    }
    if (comm_any_failed(comm, failed, err, sizeof(err))) comm_exit_error(comm, err);
    failed = comm_size(comm) > 1 && !same_data(comm, d, spec, err, sizeof(err));
    if (comm_any_failed(comm, failed, err, sizeof(err))) comm_exit_error(comm, err);
    return d;
}

static void load_data(run *r) {
    r->train = trainer_load_split(r->comm, r->cfg, IO_SPLIT_TRAIN);
    r->val = trainer_load_split(r->comm, r->cfg, IO_SPLIT_VAL);
    /* the two splits of one file are two readings of it: a file still being written would
       give splits of different contents (Fashion-MNIST's validation images are a file of
       their own) */
    const char *spec = r->cfg->data;
    char err[512], shown[300];
    int changed = strcmp(r->cfg->val_data, "split") == 0 && io_dataset_image_side(spec) == 0 &&
                  r->train->source_crc != r->val->source_crc;
    if (changed)
        snprintf(err, sizeof err, "data: %s changed while it was read (its training and "
                 "validation splits came from different contents): read it once it is written",
                 comm_escape(shown, sizeof shown, spec));
    /* a rank knows its own two readings only */
    if (comm_any_failed(r->comm, changed, err, sizeof err)) comm_exit_error(r->comm, err);
}

/* Once the streams' order is known (a resume may bring the older one): read in file order or
 * shuffled by class, a rank keeps only the training documents its streams read; shuffled
 * over all documents, every stream reads every document in time. Of the validation split it
 * keeps what validation scores. */
static void keep_data(run *r) {
    /* validation scores its first documents only, and only with eval_every */
    io_dataset_keep_first(r->val, r->cfg->eval_every > 0 ? trainer_eval_docs(r->cfg, r->val) : 0);
    if (!r->cfg->shuffle || r->by_class) {
        io_dataset_keep_streams(r->train, r->sched.first_stream, r->sched.nstreams_mine,
                                r->cfg->streams);
        int64_t kept = 0, n = r->train->ndocs;
        for (int64_t d = 0; d < n; d++) kept += r->train->doc_off[d + 1] > r->train->doc_off[d];
        if (kept < n)
            say(r, "data: a rank keeps the training documents of its streams' classes (rank 0: "
                "%lld of %lld, %.1f MiB)\n", (long long)kept, (long long)n,
                (double)r->train->doc_off[n] * sizeof(uint16_t) / 1048576.0);
    } else
        say(r, "data: the checkpoint's streams read documents shuffled over all of them (the "
            "order before stream classes), so every rank keeps the whole training split\n");
}


static void on_signal(int sig) { stop_signal = sig; }

void trainer_catch_stop_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL); /* mpirun forwards it too; its default ends a process */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* a hangup too (a closed terminal, a launcher's HUP), unless it is ignored: `nohup
       memtrain` goes on (under `nohup mpirun` the ranks never get the hangup) */
    struct sigaction was;
    if (sigaction(SIGHUP, NULL, &was) == 0 && was.sa_handler != SIG_IGN)
        sigaction(SIGHUP, &sa, NULL);
}

/* Whether a stop signal reached any rank before the first step (while the data or the
 * checkpoint loaded): the ranks agree, and then stop with nothing new to save. Collective. */
static int stopped_before_start(comm_ctx *comm) {
    int64_t sig = stop_signal;
    comm_sum_i64(comm, &sig, 1);
    return sig != 0;
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
    r->by_class = st->by_class;
    for (int b = 0; b < r->B; b++) {
        r->streams[b].io.by_class = st->by_class;
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
        .shuffle = r->cfg->shuffle, .data_seed = (uint64_t)r->cfg->data_seed,
        .by_class = r->by_class,
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
    if (rc == 0)
        say(r, "checkpoint: %s/ckpt/ckpt-%08lld.h5 written in %.2f s\n", r->dir,
            (long long)step, comm_time() - t);
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

/* Restores the newest valid checkpoint of resume_dir; returns the steps it had done. Files
 * skipped on the way are set aside when the run writes its checkpoints into that directory. */
static int64_t resume_run(run *r, const char *resume_dir, const char *changed) {
    char err[512], path[1100];
    int64_t step = 0;
    double t = comm_time();
    trainer_stream_state st = stream_state_alloc(r);
    int rc = trainer_ckpt_resume(r->comm, resume_dir, trainer_rundir_id(r->rd), r->cfg, r->model,
                                 &st, trainer_rundir_resume_in_place(r->rd), &step, path, sizeof(path), err, sizeof(err));
    if (rc == 0) streams_import(r, &st);
    stream_state_release(&st);
    if (rc != 0) comm_exit_error(r->comm, err);
    char shown[2200];
    say(r, "resumed from %s at step %lld (read in %.2f s)\n",
        comm_escape(shown, sizeof(shown), path), (long long)step, comm_time() - t);
    if (changed && changed[0]) say(r, "resume: changed settings: %s\n", changed);
    return step;
}

int trainer_init_from_check(comm_ctx *comm, const trainer_config *cfg, char *err, size_t n) {
    char diff[400];
    trainer_config theirs;
    trainer_config_defaults(&theirs);
    if (trainer_ckpt_read_config(comm, cfg->init_from, &theirs, err, n) != 0) {
        char why[512];
        snprintf(why, sizeof why, "%s", err);
        snprintf(err, n, "init_from: %.500s", why);
        return -1;
    }
    /* fresh streams: other data (within the vocab) and another stream count are fine */
    memcpy(theirs.data, cfg->data, sizeof(theirs.data));
    theirs.streams = cfg->streams;
    if (trainer_config_diff_shape(&theirs, cfg, diff, sizeof(diff)) > 0) {
        snprintf(err, n, "init_from = %.150s: the model's shape differs: %.300s", cfg->init_from,
                 diff);
        return -1;
    }
    return 0;
}

/* A new run starts from the weights and tables of cfg->init_from, with fresh optimizer state
 * (moments zero, the schedule from step 0), data cursors and memory. */
static void init_from_checkpoint(run *r) {
    const trainer_config *cfg = r->cfg;
    char err[512];
    if (trainer_init_from_check(r->comm, cfg, err, sizeof(err)) != 0) comm_exit_error(r->comm, err);
    int64_t step = 0;
    if (trainer_ckpt_load(r->comm, cfg->init_from, r->model, NULL, &step, err, sizeof(err)) != 0)
        comm_exit_error(r->comm, err);
    trainer_params *p = trainer_model_params(r->model);
    memset(p->m, 0, p->total * sizeof(float));
    memset(p->v, 0, p->total * sizeof(float));
    trainer_tables *tb = trainer_model_tables(r->model);
    for (int g = 0; g < trainer_tables_ngroups(tb); g++) {
        const trainer_table_group *gr = trainer_tables_group(tb, g);
        float *zero = layer_xcalloc(((size_t)1 << gr->tau) * gr->OC, sizeof(float));
        for (int k = 0; k < gr->K; k++)
            for (int o = 0; o < gr->nout; o++) trainer_tables_unit_set(tb, g, k, o, NULL, zero, zero);
        free(zero);
    }
    char shown[600];
    say(r, "initialised from %s (step %lld): weights and tables; optimizer state, data and "
        "memory start fresh\n", comm_escape(shown, sizeof(shown), cfg->init_from), (long long)step);
}

/* A copy of what rank 0 prints (run_dir/train.log), and the configuration the sitting resolved
 * (run_dir/config.conf, which --config reads back). Rank 0 only. */
static int write_run_files(run *r, char *err, size_t n) {
    const trainer_config *cfg = r->cfg;
    char path[TRAINER_CONFIG_STR + 32];
    snprintf(path, sizeof(path), "%s/train.log", cfg->run_dir);
    /* never a FIFO or a device in their place (an open could block forever) */
    r->log = io_fopen_regular(path, "a", err, n);
    if (!r->log) return -1;
    comm_transcript(r->comm, r->log); /* with what was printed before: memory, tables, plan */
    static const char head[] = TRAINER_RUN_CONFIG_HEAD " (memtrain --config reads it)\n";
    size_t len = trainer_config_to_text(cfg, NULL, 0);
    char *text = layer_xmalloc(sizeof head + len + 1);
    memcpy(text, head, sizeof head);
    trainer_config_to_text(cfg, text + sizeof head - 1, len + 1);
    int rc = io_write_atomic(cfg->run_dir, "config.conf", text, err, n);
    free(text);
    return rc;
}

/* Rank 0's account of the run at its start: ranks and blocks, data and its order, what
 * validation scores, the model. */
static void print_start(run *r, const trainer_config *eff, const trainer_model_spec *spec) {
    const trainer_config *cfg = r->cfg;
    int P = comm_size(r->comm);
    char d1[256], d2[256];
    io_dataset_describe(r->train, d1, sizeof(d1));
    io_dataset_describe(r->val, d2, sizeof(d2));
    say(r, "memtrain: %d rank%s, %d streams in blocks of %d (%s sums), horizon %d x %d "
        "tokens per stream: %lld tokens per step\n", P, P > 1 ? "s" : "", cfg->streams,
        eff->stream_block, cfg->deterministic == TRAINER_DET_FAST ? "fast" : "bitwise",
        cfg->horizon, cfg->seg_len, trainer_tokens_per_step(cfg));
    char blas[320];
    trainer_blas_describe(blas, sizeof(blas));
    say(r, "blas: %s\n", blas);
    say(r, "data: train %s | val %s\n", d1, d2);
    if (cfg->shuffle)
        say(r, "data: training documents in a shuffled order, drawn anew each pass (data_seed "
            "%lld)\n", (long long)cfg->data_seed);
    else
        say(r, "data: training documents in file order\n");
    if (cfg->eval_every > 0) {
        int64_t nd = trainer_eval_docs(cfg, r->val);
        say(r, "eval: every %d steps, the first %lld validation documents whole (%lld tokens)\n",
            cfg->eval_every, (long long)nd, (long long)(r->val->doc_off[nd] - r->val->doc_off[0]));
    }
    say(r, "model: %s/%s d_model %d, dense params %zu, table params %zu, %.3g MFLOP/token\n",
        spec->memformer ? "memformer" : "decoder", spec->hash ? "hash" : "dense", spec->C,
        trainer_model_params(r->model)->total, trainer_tables_numel(trainer_model_tables(r->model)),
        2e-6 * trainer_model_flops_per_token(r->model));
    char unused[300];
    if (trainer_config_unused(cfg, unused, sizeof unused) > 0)
        say(r, "model: set but of no use to this model (its arch, proj, pos, score or memory leave "
            "them out), so they change nothing: %s\n", unused);
}

/* Everything a run holds, from its checks to its first step: the schedule (stream_block =
 * auto resolved for this rank count in eff; r->cfg keeps the user's text for the run directory
 * and checkpoints, so a resume on another rank count resolves it anew), the memory check, the
 * run directory, the data, the model and its table plan, the streams and the rollout.
 * Collective; errors end the job. */
static void run_open(run *r, comm_ctx *comm, const trainer_config *cfg, const char *resume_dir) {
    memset(r, 0, sizeof(*r));
    r->comm = comm;
    r->cfg = cfg;
    /* from the start: a stop signal while the data or the checkpoint loads ends the run before
       its first step (stopped_before_start) with status 75, not the default death */
    trainer_catch_stop_signals(); /* again: main did, for train, before MPI started */
    comm_escape(r->dir, sizeof(r->dir), cfg->run_dir);
    int P = comm_size(comm), rank = comm_rank(comm);
    char err[512];
    trainer_config eff = *cfg;
    eff.stream_block = trainer_config_stream_block(cfg, P);
    if (resume_dir && eff.streams < P) { /* streams is fixed on a resume */
        snprintf(err, sizeof(err), "the run in %.400s has streams = %d, which a resume keeps: "
                 "resume it on at most %d ranks", resume_dir, eff.streams, eff.streams);
        comm_exit_error(comm, err);
    }
    if (trainer_schedule_check(eff.streams, eff.stream_block, P, err, sizeof(err)) != 0) {
        size_t len = strlen(err);
        if (cfg->stream_block == TRAINER_STREAM_BLOCK_AUTO)
            snprintf(err + len, sizeof(err) - len, " (stream_block = auto is %d under "
                     "deterministic = %s)", eff.stream_block,
                     cfg->deterministic == TRAINER_DET_BITWISE ? "bitwise" : "fast");
        comm_exit_error(comm, err);
    }
    r->sched = trainer_schedule_make(eff.streams, eff.stream_block, P, rank);
    trainer_preflight_memory(comm, &eff, TRAINER_USE_TRAIN, 0, 1);
    /* data that cannot be read leaves no run directory behind */
    load_data(r);
    if (cfg->eval_every > 0) trainer_preflight_eval(comm, cfg, r->val);
    if (stopped_before_start(comm)) { /* before the run directory is touched */
        char from[2200] = "";
        if (resume_dir) comm_escape(from, sizeof(from), resume_dir);
        comm_print0(comm, "memtrain: stopped by a signal while loading the data, before the "
                    "first step: nothing was written%s%s\n", resume_dir ? "; resume with --resume " : "",
                    from);
        fflush(stdout);
        comm_finalize(comm);
        exit(TRAINER_EXIT_INTERRUPTED);
    }
    char header[512];
    csv_header(header, sizeof(header));
    r->rd = trainer_rundir_open(comm, cfg, resume_dir, header);
    r->csv = trainer_rundir_metrics(r->rd);
    int failed = rank == 0 && write_run_files(r, err, sizeof(err)) != 0;
    if (comm_any_failed(comm, failed, err, sizeof(err))) comm_exit_error(comm, err);
    trainer_model_spec spec;
    trainer_spec_from_config(&spec, &eff);
    r->model = trainer_model_create(&spec, comm);
    r->L = cfg->seg_len;
    r->bos = cfg->vocab;
    /* streams are dealt in whole blocks (trainer/engine/schedule.h) */
    r->first_stream = r->sched.first_stream;
    r->B = r->sched.nstreams_mine;
    r->streams = layer_xcalloc(r->B, sizeof(stream_state));
    stream_states_init(r->streams, r->B, r->first_stream, cfg->streams, r->L);
    r->by_class = 1; /* a resume may bring the order of older checkpoints */
    if (cfg->shuffle)
        for (int b = 0; b < r->B; b++)
            io_stream_set_shuffle(&r->streams[b].io, (uint64_t)cfg->data_seed, r->by_class);
    trainer_rollout_mode mode =
        cfg->bptt == TRAINER_BPTT_FULL ? TRAINER_ROLLOUT_FULL : TRAINER_ROLLOUT_MRBP;
    r->rollout = trainer_rollout_create(r->model, cfg->horizon, r->B, mode);
    trainer_rollout_set_block(r->rollout, eff.stream_block);
    trainer_schedule_attach(&r->sched, r->model);
    r->M = layer_xcalloc((size_t)r->B * trainer_model_memory_size(r->model) + 1, sizeof(float));
    if (rank == 0) print_start(r, &eff, &spec);
    trainer_tables *tables = trainer_model_tables(r->model);
    if (trainer_tables_check_plan(tables, err, sizeof(err)) != 0) comm_exit_error(comm, err);
    trainer_tables_print_plan(tables);
}

static void run_close(run *r) {
    comm_transcript(r->comm, NULL);
    if (r->log) fclose(r->log);
    trainer_rundir_close(r->rd);
    stream_states_free(r->streams, r->B);
    trainer_rollout_free(r->rollout);
    trainer_model_free(r->model);
    io_dataset_free(r->train);
    io_dataset_free(r->val);
    free(r->M);
}

/* Where a sitting is: its steps, its clocks, its last figures, the log window. */
typedef struct sitting {
    int64_t first_step, done, stop;
    double start, last_ckpt, last_loss, last_val;
    log_window w;
    trainer_step_info last; /* the last step's figures (lr, gradient norm) */
    int interrupted;
} sitting;

/* The log line and metrics row of the window so far (if it has steps), ending at step
 * z->done. Collective. */
static void log_window_now(run *r, sitting *z, double val_ppl, int64_t val_tokens) {
    if (z->w.steps == 0) return;
    /* the time left: this sitting's pace over the steps it still has to do */
    double elapsed = comm_time() - z->start;
    z->last_loss = z->w.tokens > 0 ? z->w.loss / z->w.tokens : z->last_loss;
    log_line(r, &z->w, z->done - 1, &z->last, val_ppl, val_tokens,
             elapsed / (double)(z->done - z->first_step) * (double)(z->stop - z->done), elapsed);
    memset(&z->w, 0, sizeof(z->w));
}

/* The step boundary. A signal reaches the ranks at different moments, rank 0's clock decides
 * a timed checkpoint, the launcher may be gone, a metrics row may not have been written, the
 * run directory may have been removed: the ranks agree on all five. Without a launcher no new step or checkpoint starts
 * (trainer/run/watchdog.h); a lost metrics row ends the run after a checkpoint. Returns 1
 * when a signal stops the sitting here. Collective. */
static int step_boundary(run *r, sitting *z, int last) {
    const trainer_config *cfg = r->cfg;
    char what[1024] = "";
    int lost = trainer_rundir_metrics_flush(r->rd, what, sizeof(what)) != 0;
    int64_t sig[5] = {stop_signal,
                      comm_rank(r->comm) == 0 && cfg->ckpt_minutes > 0 &&
                          comm_time() - z->last_ckpt >= 60.0 * cfg->ckpt_minutes,
                      trainer_watchdog_orphaned(), lost,
                      comm_rank(r->comm) == 0 && trainer_rundir_gone(r->rd)};
    comm_sum_i64(r->comm, sig, 5);
    if (sig[2]) trainer_watchdog_exit();
    if (sig[4]) { /* its files went with it: a checkpoint now would make a new directory */
        char dir[400];
        snprintf(what, sizeof(what), "run_dir %s was removed or moved while the run went on (its "
                 "LOCK file is not there): stopping after step %lld, writing nothing more",
                 comm_escape(dir, sizeof dir, cfg->run_dir), (long long)z->done);
        comm_exit_error(r->comm, what);
    }
    if (sig[3]) {
        comm_any_failed(r->comm, lost, what, sizeof(what));
        metrics_lost(r, z->done, what);
    }
    if (sig[0] != 0 && !last) return 1;
    if (!last && ((cfg->ckpt_every > 0 && z->done % cfg->ckpt_every == 0) || sig[1] != 0)) {
        trainer_timer_start(&z->w.time, TRAINER_TIMER_CKPT);
        save_checkpoint(r, z->done);
        trainer_timer_stop(&z->w.time, TRAINER_TIMER_CKPT);
        z->last_ckpt = comm_time();
    }
    return 0;
}

/* One step of the sitting: the streams' next rollout, the optimizer step, the re-plan after
 * the first few, validation when due, the log line. Returns 0, or -1 with a message in err
 * (on every rank) when the loss or the gradient norm is not finite. */
static int train_step(run *r, sitting *z, int64_t step, char *err, size_t n) {
    const trainer_config *cfg = r->cfg;
    /* no step without a launcher; a rank left waiting in this step's exchanges for one that
       stopped here is ended by its own watchdog, as it is not writing */
    if (trainer_watchdog_orphaned()) trainer_watchdog_exit();
    trainer_timer_start(&z->w.time, TRAINER_TIMER_DATA);
    fill_rollout(r);
    trainer_timer_stop(&z->w.time, TRAINER_TIMER_DATA);
    if (trainer_step(r->model, r->rollout, &r->sched, r->M, r->comm, cfg, step, &z->last, err,
                     n) != 0)
        return -1;
    z->done = step + 1;
    window_add(&z->w, &z->last);
    int last = z->done == z->stop;
    double val_ppl = NAN;
    int64_t val_tokens = 0;
    if (cfg->eval_every > 0 && (z->done % cfg->eval_every == 0 || last)) {
        trainer_timer_start(&z->w.time, TRAINER_TIMER_EVAL);
        /* a stop ends the pass, but not the last step's: the run ends there anyway */
        val_ppl = trainer_validation_ppl(r->comm, cfg, r->model, r->val, &val_tokens, !last);
        trainer_timer_stop(&z->w.time, TRAINER_TIMER_EVAL);
    }
    if (!isnan(val_ppl)) z->last_val = val_ppl;
    if ((cfg->log_every > 0 && z->done % cfg->log_every == 0) || last || !isnan(val_ppl))
        log_window_now(r, z, val_ppl, val_tokens);
    return 0;
}

/* The end of a sitting: metrics closed (a failure there ends the run after a checkpoint), the
 * final checkpoint, why it stopped, and one summary line. Collective. */
static void end_sitting(run *r, sitting *z, int resumed) {
    const trainer_config *cfg = r->cfg;
    /* the last rows are out: a write the file system reports only at close ends the run too */
    char what[512] = "";
    if (comm_any_failed(r->comm, trainer_rundir_metrics_close(r->rd, what, sizeof(what)) != 0,
                        what, sizeof(what)))
        metrics_lost(r, z->done, what);
    r->csv = NULL;
    if (z->done > z->first_step || !resumed) save_checkpoint(r, z->done);
    if (!z->interrupted && z->done < cfg->steps)
        say(r, "memtrain: stopped after step %lld of %lld (stop_after); continue with --resume %s\n",
            (long long)z->done, (long long)cfg->steps, r->dir);
    if (z->interrupted)
        say(r, "memtrain: stopped by a signal after step %lld; resume with --resume %s\n",
            (long long)z->done, r->dir);
    double took = comm_time() - z->start;
    long long toks = (long long)(z->done - z->first_step) * trainer_tokens_per_step(cfg);
    char val[48] = "";
    if (!isnan(z->last_val)) snprintf(val, sizeof(val), ", val ppl %.3f", z->last_val);
    say(r, "summary: steps %lld-%lld of %lld in %.1f s, %lld tokens (%.0f tok/s), train ppl "
        "%.3f%s; checkpoint %s/ckpt/ckpt-%08lld.h5\n", (long long)z->first_step + 1,
        (long long)z->done, (long long)cfg->steps, took, toks, toks / (took > 0 ? took : 1e-9),
        exp(z->last_loss), val, r->dir, (long long)z->done);
}

int trainer_train(comm_ctx *comm, const trainer_config *cfg, const char *resume_dir,
                  const char *changed) {
    run R;
    run *r = &R;
    run_open(r, comm, cfg, resume_dir);
    sitting z;
    memset(&z, 0, sizeof(z));
    z.first_step = resume_dir ? resume_run(r, resume_dir, changed) : 0;
    if (resume_dir && stopped_before_start(comm)) { /* the checkpoint holds all there is */
        char from[2200];
        say(r, "memtrain: stopped by a signal while reading the checkpoint, before step %lld: "
            "nothing new to save; resume with --resume %s\n", (long long)z.first_step + 1,
            comm_escape(from, sizeof(from), resume_dir));
        run_close(r);
        return TRAINER_EXIT_INTERRUPTED;
    }
    if (!resume_dir && strcmp(cfg->init_from, "none") != 0) init_from_checkpoint(r);
    keep_data(r);
    z.start = z.last_ckpt = comm_time();
    z.last_loss = z.last_val = NAN;
    z.done = z.first_step;
    /* a sitting's planned end; inherited by a resumed run that is already past it: ignored */
    z.stop = cfg->stop_after > z.first_step ? cfg->stop_after : cfg->steps;
    char err[512] = "";
    int fail = 0;
    for (int64_t step = z.first_step; step < z.stop && !fail; step++) {
        fail = train_step(r, &z, step, err, sizeof(err)) != 0;
        if (!fail && step_boundary(r, &z, z.done == z.stop)) {
            z.interrupted = 1;
            log_window_now(r, &z, NAN, 0); /* the steps since the last line, as at the end */
            break;
        }
    }
    if (comm_any_failed(comm, fail, err, sizeof(err))) comm_exit_error(comm, err);
    end_sitting(r, &z, resume_dir != NULL);
    run_close(r);
    return z.interrupted ? TRAINER_EXIT_INTERRUPTED : 0;
}
