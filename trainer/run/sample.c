/* memtrain sample: images or text drawn from a checkpoint's model, and the sampler's options. */
#include "trainer/run/sample.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/data.h"
#include "io/png.h"
#include "layers/common.h"
#include "trainer/model/model.h"
#include "trainer/run/eval.h"
#include "trainer/run/preflight.h"
#include "trainer/run/sample_grid.h"

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
            /* decoder inputs up to position i are known; later ones cannot affect it. A
               decoder runs over those i + 1 only (rows of n), a Memformer's encoder over the
               whole previous segment, so its decoder over all L too */
            int n = s->memformer ? L : i + 1;
            for (int b = 0; b < B; b++)
                for (int j = 0; j < n; j++) {
                    int p = seg0 + j - 1;
                    sg->dec[b * n + j] = (p < 0 || j > i) ? bos : tok[(size_t)b * total + p];
                }
            if (seg0 + i < given) continue;
            trainer_step_act *act;
            int cnt;
            if (s->memformer)
                trainer_segments_forward(m, sg, &cnt, &act);
            else
                trainer_segments_forward_prefix(m, sg, n, &cnt, &act);
            wrote = 1;
            const float *logits = trainer_step_logits(act);
            for (int b = 0; b < B; b++)
                tok[(size_t)b * total + seg0 + i] =
                    trainer_sample_draw(logits + ((size_t)b * n + i) * V, V, o->temperature,
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
            if (t[0] && !opt[i].integer && end != t && !*end && errno == ERANGE)
                snprintf(err, n, "%s = %s: %s (expected %s)", opt[i].name, t,
                         trainer_float_range_problem((float)v), range);
            else if (t[0]) snprintf(err, n, "%s = %s: expected %s", opt[i].name, t, range);
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
    int side = io_dataset_image_side(cfg->data), image = side > 0;
    trainer_preflight_memory(comm, cfg, TRAINER_USE_SAMPLE, image ? opt->count : 1, 0);
    int64_t step = 0;
    trainer_model *m = trainer_model_from_checkpoint(comm, cfg, path, TRAINER_USE_SAMPLE, image ? opt->count : 1, &step);
    layer_rng rng;
    layer_rng_seed(&rng, (uint64_t)cfg->seed * 7919u + 17u);
    int fail = 0;
    if (image) {
        int B = opt->count, total = side * side, W, H;
        int32_t *tok = layer_xcalloc((size_t)B * total, sizeof(int32_t));
        generate(m, tok, B, total, 0, cfg->vocab, opt, &rng);
        char caption[160];
        snprintf(caption, sizeof(caption), "STEP %lld  T=%g  TOP-K=%d  TOP-P=%g", (long long)step,
                 opt->temperature, opt->top_k, opt->top_p);
        uint8_t *pix = trainer_grid_render(tok, B, side, opt->scale, caption, &W, &H);
        char out[1200];
        if (comm_rank(comm) == 0) {
            /* created only now, exclusively: another sampler's grid, or a file that
               appeared meanwhile, is never overwritten */
            int rc = 1;
            if (opt->out) {
                snprintf(out, sizeof(out), "%s", opt->out);
                rc = io_png_write_gray(out, pix, W, H, err, sizeof(err));
                if (rc == 1)
                    snprintf(err, sizeof(err), "--out %.300s appeared while sampling: not "
                             "overwritten, and the grid is not written", opt->out);
            } else {
                const char *dir = opt->out_dir ? opt->out_dir : cfg->run_dir;
                snprintf(out, sizeof(out), "%s/samples.png", dir);
                for (int k = 2; (rc = io_png_write_gray(out, pix, W, H, err, sizeof(err))) == 1 &&
                                k < 100000; k++)
                    snprintf(out, sizeof(out), "%s/samples-%d.png", dir, k);
            }
            fail = rc != 0;
            char shown[2200], shown_out[2400];
            if (!fail)
                printf("%s (step %lld): %d sample%s written to %s\n",
                       comm_escape(shown, sizeof(shown), path), (long long)step, B,
                       B == 1 ? "" : "s", comm_escape(shown_out, sizeof(shown_out), out));
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
    return 0;
}

