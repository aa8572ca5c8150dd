/* Evaluation and sampling from checkpoints. */
#include "trainer/run/generate.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/ckpt.h"
#include "io/data.h"
#include "io/png.h"
#include "layers/common.h"
#include "trainer/run/checkpoint.h"
#include "trainer/model/model.h"
#include "trainer/run/preflight.h"
#include "trainer/run/sample_grid.h"
#include "trainer/run/train.h"

/* Model of cfg with the checkpoint's parameters and tables, after checking the memory of its
 * use (`batch` sequences at once when sampling). */
static trainer_model *load_model(comm_ctx *comm, const trainer_config *cfg, const char *path,
                                 trainer_footprint_use use, int batch, int64_t *step) {
    char err[512];
    trainer_preflight_memory(comm, cfg, use, batch, 0);
    trainer_model_spec spec;
    trainer_spec_from_config(&spec, cfg);
    trainer_model *m = trainer_model_create(&spec, comm);
    if (trainer_ckpt_load(comm, path, m, NULL, step, err, sizeof(err)) != 0)
        comm_exit_error(comm, err);
    return m;
}

int trainer_eval_checkpoint(comm_ctx *comm, const trainer_config *cfg, const char *path) {
    io_dataset *val = trainer_load_split(comm, cfg, IO_SPLIT_VAL);
    long long ndocs = trainer_preflight_eval(comm, cfg, val);
    int64_t step = 0;
    trainer_model *m = load_model(comm, cfg, path, TRAINER_USE_EVAL, 0, &step);
    double t = comm_time();
    int64_t tokens = 0;
    double ppl = trainer_validation_ppl(comm, cfg, m, val, &tokens);
    if (comm_rank(comm) == 0) {
        char shown[2200];
        printf("%s (step %lld): validation perplexity %.6f on %s, the first %lld documents whole "
               "(%lld tokens) (%.1f s)\n",
               comm_escape(shown, sizeof(shown), path), (long long)step, ppl, cfg->data, ndocs,
               (long long)tokens, comm_time() - t);
        fflush(stdout);
    }
    trainer_model_free(m);
    io_dataset_free(val);
    return 0;
}

typedef struct ranked {
    double p;
    int v;
} ranked;

static int by_prob(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->v - y->v;
}

int32_t trainer_sample_draw(const float *logits, int V, float t, int top_k, float top_p, double u) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > logits[best]) best = v;
    if (t <= 0.0f || top_k == 1) return best;
    ranked *r = layer_xmalloc((size_t)V * sizeof(ranked));
    double mx = logits[best], sum = 0.0;
    for (int v = 0; v < V; v++) {
        r[v].p = exp(((double)logits[v] - mx) / t);
        r[v].v = v;
        sum += r[v].p;
    }
    qsort(r, (size_t)V, sizeof(ranked), by_prob);
    int keep = top_k > 0 && top_k < V ? top_k : V;
    double mass = 0.0;
    for (int i = 0; i < keep; i++) { /* the nucleus: the fewest reaching top_p of the mass */
        mass += r[i].p;
        if (mass >= top_p * sum) {
            keep = i + 1;
            break;
        }
    }
    double kept = 0.0;
    for (int i = 0; i < keep; i++) kept += r[i].p;
    double x = u * kept, acc = 0.0;
    int32_t pick = r[keep - 1].v;
    for (int i = 0; i < keep; i++) {
        acc += r[i].p;
        if (x < acc) {
            pick = r[i].v;
            break;
        }
    }
    free(r);
    return pick;
}

/* Generates B sequences of total tokens: tok (B, total) holds the given prefix (first `given`
 * tokens of each row) and receives the rest. Segments follow training: the encoder reads the
 * previous segment, the memory is carried, the decoder sees the segment shifted right. */
static void generate(trainer_model *m, int32_t *tok, int B, int total, int given, int bos,
                     const trainer_sample_options *o, layer_rng *rng) {
    const trainer_model_spec *s = trainer_model_get_spec(m);
    int L = s->L, V = s->vocab;
    trainer_segments *sg = trainer_segments_create(m, B);
    for (int i = 0; i < B * L; i++) sg->tgt[i] = -1;
    for (int seg0 = 0; seg0 < total; seg0 += L) {
        for (int b = 0; b < B; b++) {
            sg->reset[b] = seg0 == 0;
            for (int i = 0; i < L; i++) {
                int p = seg0 - L + i; /* the previous segment */
                sg->enc[b * L + i] = (seg0 == 0 || p >= total) ? bos : tok[(size_t)b * total + p];
            }
        }
        int wrote = 0; /* a forward of this segment has written its memory already */
        for (int i = 0; i < L && seg0 + i < total; i++) {
            /* decoder inputs up to position i are known; later ones cannot affect it */
            for (int b = 0; b < B; b++)
                for (int j = 0; j < L; j++) {
                    int p = seg0 + j - 1;
                    sg->dec[b * L + j] = (p < 0 || j > i) ? bos : tok[(size_t)b * total + p];
                }
            if (seg0 + i < given) continue;
            trainer_step_act *act;
            int cnt;
            trainer_segments_forward(m, sg, &cnt, &act);
            wrote = 1;
            const float *logits = trainer_step_logits(act);
            for (int b = 0; b < B; b++)
                tok[(size_t)b * total + seg0 + i] =
                    trainer_sample_draw(logits + ((size_t)b * L + i) * V, V, o->temperature,
                                        o->top_k, o->top_p, layer_rng_uniform(rng));
        }
        /* the memory after this segment: written from the encoder's view of the previous one,
           so any forward of the segment wrote it; a prompt-only segment needs the writer run */
        trainer_segments_advance(m, sg, wrote);
    }
    trainer_tables_clear_cache(trainer_model_tables(m));
    trainer_segments_free(sg);
}

int trainer_sample_options_read(trainer_sample_options *o, const char *cmd,
                                const trainer_sample_args *a, char *err, size_t n) {
    /* name, text, integer?, lowest, highest, lowest open */
    struct {
        const char *name, *text;
        int integer;
        double lo, hi;
        int lo_open;
    } opt[6] = {{"--count", a->count, 1, 1, TRAINER_SAMPLE_MAX_COUNT, 0},
                {"--length", a->length, 1, 1, TRAINER_SAMPLE_MAX_LENGTH, 0},
                {"--temperature", a->temperature, 0, 0, 1000, 0},
                {"--top-k", a->top_k, 1, 0, 65536, 0},
                {"--top-p", a->top_p, 0, 0, 1, 1},
                {"--scale", a->scale, 1, 1, 32, 0}};
    double val[6] = {16, 400, 1, 0, 1, 4};
    for (int i = 0; i < 6; i++) {
        const char *t = opt[i].text;
        if (!t) continue;
        if (strcmp(cmd, "sample") != 0) {
            snprintf(err, n, "%s is an option of memtrain sample, not of memtrain %s", opt[i].name, cmd);
            return -1;
        }
        char *end, range[64];
        if (opt[i].integer)
            snprintf(range, sizeof(range), "an integer in %.0f..%.0f", opt[i].lo, opt[i].hi);
        else
            snprintf(range, sizeof(range), "a number in %c%g, %g]", opt[i].lo_open ? '(' : '[',
                     opt[i].lo, opt[i].hi);
        errno = 0;
        double v = opt[i].integer ? (double)strtoll(t, &end, 10) : (double)strtof(t, &end);
        int bad = end == t || *end || errno == ERANGE || !(v >= opt[i].lo) || !(v <= opt[i].hi) ||
                  (opt[i].lo_open && v == opt[i].lo);
        if (bad) {
            if (t[0]) snprintf(err, n, "%s = %s: expected %s", opt[i].name, t, range);
            else snprintf(err, n, "%s has no value: expected %s", opt[i].name, range);
            return -1;
        }
        val[i] = v;
    }
    o->count = (int)val[0];
    o->length = (int)val[1];
    o->temperature = (float)val[2];
    o->top_k = (int)val[3];
    o->top_p = (float)val[4];
    o->scale = (int)val[5];
    return 0;
}

int trainer_sample_checkpoint(comm_ctx *comm, const trainer_config *cfg, const char *path,
                              const trainer_sample_options *opt) {
    char err[512];
    int image = strcmp(cfg->data, "fashion-mnist") == 0;
    trainer_preflight_memory(comm, cfg, TRAINER_USE_SAMPLE, image ? opt->count : 1, 0);
    io_dataset *train = trainer_load_split(comm, cfg, IO_SPLIT_TRAIN);
    int64_t step = 0;
    trainer_model *m = load_model(comm, cfg, path, TRAINER_USE_SAMPLE, image ? opt->count : 1, &step);
    layer_rng rng;
    layer_rng_seed(&rng, (uint64_t)cfg->seed * 7919u + 17u);
    int fail = 0;
    if (image) {
        int B = opt->count, side = 28, total = side * side, W, H;
        int32_t *tok = layer_xcalloc((size_t)B * total, sizeof(int32_t));
        generate(m, tok, B, total, 0, cfg->vocab, opt, &rng);
        char caption[160];
        snprintf(caption, sizeof(caption), "STEP %lld  T=%g  TOP-K=%d  TOP-P=%g", (long long)step,
                 opt->temperature, opt->top_k, opt->top_p);
        uint8_t *pix = trainer_grid_render(tok, B, side, opt->scale, caption, &W, &H);
        char out[1200];
        if (opt->out) snprintf(out, sizeof(out), "%s", opt->out);
        else snprintf(out, sizeof(out), "%s/samples.png", cfg->run_dir);
        if (comm_rank(comm) == 0) {
            fail = io_png_write_gray(out, pix, W, H, err, sizeof(err)) != 0;
            char shown[2200], shown_out[2400];
            if (!fail)
                printf("%s (step %lld): %d samples written to %s\n",
                       comm_escape(shown, sizeof(shown), path), (long long)step, B,
                       comm_escape(shown_out, sizeof(shown_out), out));
        }
        free(pix);
        free(tok);
    } else {
        const char *prompt = opt->prompt ? opt->prompt : "The ";
        int given = (int)strlen(prompt), total = given + (opt->length > 0 ? opt->length : 400);
        int32_t *tok = layer_xcalloc((size_t)total, sizeof(int32_t));
        for (int i = 0; i < given; i++) tok[i] = (unsigned char)prompt[i] % cfg->vocab;
        generate(m, tok, 1, total, given, cfg->vocab, opt, &rng);
        if (comm_rank(comm) == 0) {
            /* the header echoes the prompt escaped; the continuation below is the model's */
            char shown[2200], shown_prompt[2200];
            printf("%s (step %lld), prompt '%s':\n", comm_escape(shown, sizeof(shown), path),
                   (long long)step, comm_escape(shown_prompt, sizeof(shown_prompt), prompt));
            for (int i = 0; i < total; i++) putchar(tok[i] < 256 ? tok[i] : '?');
            printf("\n");
        }
        free(tok);
    }
    fflush(stdout);
    if (comm_any_failed(comm, fail, err, sizeof(err))) comm_exit_error(comm, err);
    trainer_model_free(m);
    io_dataset_free(train);
    return 0;
}

int trainer_inspect_checkpoint(comm_ctx *comm, const trainer_config *cfg, const char *path) {
    char err[512], name[256];
    /* the model's shape gives every array's dims */
    trainer_model_spec spec;
    trainer_spec_from_config(&spec, cfg);
    trainer_model *m = trainer_model_create(&spec, comm);
    io_ckpt *ck = io_ckpt_open(comm, path, err, sizeof(err));
    if (!ck) comm_exit_error(comm, err);
    int64_t step = 0, zero = 0;
    if (io_ckpt_get_attr_i64(ck, "step", &step, err, sizeof(err)) != 0) comm_exit_error(comm, err);
    char *run_id = NULL;
    if (io_ckpt_get_attr_str(ck, "run_id", &run_id, err, sizeof(err)) != 0)
        run_id = NULL; /* a version 1 file has none */
    char shown[2200];
    trainer_params *p = trainer_model_params(m);
    trainer_tables *tb = trainer_model_tables(m);
    if (comm_rank(comm) == 0) {
        printf("%s: step %lld\n", comm_escape(shown, sizeof(shown), path), (long long)step);
        printf("run id: %s\n", run_id ? run_id : "(none: a version 1 file)");
        printf("model: %s/%s d_model %d, dense params %zu in %d tensors, table params %zu in %d "
               "groups\n", spec.memformer ? "memformer" : "decoder", spec.hash ? "hash" : "dense",
               spec.C, p->total, p->n, trainer_tables_numel(tb), trainer_tables_ngroups(tb));
        size_t len = trainer_config_to_text(cfg, NULL, 0);
        char *text = layer_xmalloc(len + 1);
        trainer_config_to_text(cfg, text, len + 1);
        printf("config:\n");
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) printf("  %s\n", line);
        free(text);
        /* dense tensors are stored flat, as one dim-0 slice with its own checksum */
        printf("arrays (each also with Adam moments m and v beside data):\n");
        for (int i = 0; i < p->n; i++) {
            const trainer_tensor *t = &p->t[i];
            char rows[64] = "";
            if (t->size > (size_t)spec.C && t->size % (size_t)spec.C == 0)
                snprintf(rows, sizeof(rows), " = %zu x %d", t->size / (size_t)spec.C, spec.C);
            printf("  dense/%s/data (1, %zu)%s\n", t->name, t->size, rows);
        }
        for (int g = 0; g < trainer_tables_ngroups(tb); g++) {
            const trainer_table_group *gr = trainer_tables_group(tb, g);
            for (int o = 0; o < gr->nout; o++)
                printf("  tables/%s/out%d/data (%d, %d, %d)\n", gr->name, o, gr->K, 1 << gr->tau,
                       gr->OC);
        }
        size_t ms0 = trainer_model_memory_size(m);
        printf("  streams/cursor (%d, 2), streams/prev_segment (%d, %d), streams/last_token (%d, 1)",
               cfg->streams, cfg->streams, cfg->seg_len, cfg->streams);
        if (ms0) printf(", streams/memory (%d, %zu)", cfg->streams, ms0);
        printf("\n");
    }
    free(run_id);
    if (trainer_tables_ngroups(tb) > 0) {
        const trainer_table_group *g = trainer_tables_group(tb, 0);
        int64_t dims[3] = {g->K, (int64_t)1 << g->tau, g->OC};
        float *row = layer_xmalloc((size_t)dims[1] * g->OC * sizeof(float));
        snprintf(name, sizeof(name), "tables/%s/out0/data", g->name);
        if (io_ckpt_read(ck, name, IO_F32, 3, dims, 1, &zero, row, err, sizeof(err)) != 0)
            comm_exit_error(comm, err);
        comm_print0(comm, "%s[0][0][0:4] = %.9g %.9g %.9g %.9g\n", name, row[0], row[1], row[2], row[3]);
        free(row);
    }
    size_t ms = trainer_model_memory_size(m);
    if (ms) {
        int64_t dims[2] = {cfg->streams, (int64_t)ms};
        float *mem = layer_xmalloc(ms * sizeof(float));
        if (io_ckpt_read(ck, "streams/memory", IO_F32, 2, dims, 1, &zero, mem, err, sizeof(err)) != 0)
            comm_exit_error(comm, err);
        comm_print0(comm, "streams/memory[0][0:4] = %.9g %.9g %.9g %.9g\n", mem[0], mem[1], mem[2], mem[3]);
        free(mem);
    }
    fflush(stdout);
    io_ckpt_close(ck);
    trainer_model_free(m);
    return 0;
}
