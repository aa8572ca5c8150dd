/* The sampler's draw: temperature 0 and top-k 1 give the argmax, top-k and top-p cut the tail, draws follow the probabilities. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/png.h"
#include "tests/testutil.h"
#include "trainer/run/sample.h"
#include "trainer/run/sample_grid.h"

START_TEST(test_argmax) {
    const float l[5] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f};
    for (double u = 0; u < 1; u += 0.1) {
        ck_assert_int_eq(trainer_sample_draw(l, 5, 0.0f, 0, 1.0f, u), 1); /* the first of ties */
        ck_assert_int_eq(trainer_sample_draw(l, 5, 1.0f, 1, 1.0f, u), 1);
        ck_assert_int_eq(trainer_sample_draw(l, 5, 1.0f, 0, 1e-6f, u), 1); /* a tiny nucleus */
    }
}
END_TEST

/* With u spread evenly over [0, 1), the draws' frequencies are the (cut, renormalised)
 * probabilities. */
static void frequencies(const float *l, int V, float t, int k, float p, double *f, int n) {
    for (int v = 0; v < V; v++) f[v] = 0;
    for (int i = 0; i < n; i++) f[trainer_sample_draw(l, V, t, k, p, (i + 0.5) / n)] += 1.0 / n;
}

START_TEST(test_distribution) {
    const float l[4] = {logf(0.1f), logf(0.2f), logf(0.3f), logf(0.4f)};
    double f[4];
    frequencies(l, 4, 1.0f, 0, 1.0f, f, 10000);
    for (int v = 0; v < 4; v++) ck_assert_double_eq_tol(f[v], 0.1 * (v + 1), 1e-3);
    /* temperature 0.5 squares the probabilities before renormalising: 1, 4, 9, 16 of 30 */
    frequencies(l, 4, 0.5f, 0, 1.0f, f, 10000);
    for (int v = 0; v < 4; v++) ck_assert_double_eq_tol(f[v], (v + 1) * (v + 1) / 30.0, 1e-3);
    /* top-k 2: 0.3 and 0.4 renormalised */
    frequencies(l, 4, 1.0f, 2, 1.0f, f, 10000);
    ck_assert_double_eq(f[0] + f[1], 0.0);
    ck_assert_double_eq_tol(f[3], 0.4 / 0.7, 1e-3);
    /* top-p 0.65: 0.4 + 0.3 is the fewest reaching it */
    frequencies(l, 4, 1.0f, 0, 0.65f, f, 10000);
    ck_assert_double_eq(f[0] + f[1], 0.0);
    ck_assert_double_eq_tol(f[2], 0.3 / 0.7, 1e-3);
}
END_TEST

START_TEST(test_options) {
    trainer_sample_options o;
    char err[256];
    trainer_sample_args a = {.temperature = "0", .top_k = "20", .top_p = "0.9", .scale = "6"};
    ck_assert_int_eq(trainer_sample_options_read(&o, "sample", &a, err, sizeof err), 0);
    ck_assert(o.temperature == 0.0f && o.top_k == 20 && fabsf(o.top_p - 0.9f) < 1e-6f && o.scale == 6);
    ck_assert(o.count == 16 && o.length == 400);
    const char *bad[][2] = {{"top_p", "0"}, {"top_p", "1.5"}, {"top_k", "-1"}, {"scale", "0"},
                            {"temperature", "-0.5"}, {"top_k", "x"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        trainer_sample_args b = {0};
        if (bad[i][0][4] == 'p') b.top_p = bad[i][1];
        else if (bad[i][0][4] == 'k') b.top_k = bad[i][1];
        else if (bad[i][0][0] == 's') b.scale = bad[i][1];
        else b.temperature = bad[i][1];
        ck_assert_int_eq(trainer_sample_options_read(&o, "sample", &b, err, sizeof err), -1);
        ck_assert_msg(strstr(err, bad[i][1]) && strstr(err, "expected"), "%s", err);
    }
    trainer_sample_args u = {.top_p = "1e-320"}; /* in (0, 1] as written, zero as a float */
    ck_assert_int_eq(trainer_sample_options_read(&o, "sample", &u, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "--top-p = 1e-320: too small for a float"), "%s", err);
    trainer_sample_args w = {.temperature = "1e400"}; /* past float's range, not the option's */
    ck_assert_int_eq(trainer_sample_options_read(&o, "sample", &w, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "--temperature = 1e400: too large for a float"), "%s", err);
    trainer_sample_args c = {.top_k = "3"};
    ck_assert_int_eq(trainer_sample_options_read(&o, "train", &c, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "--top-k is an option of memtrain sample"), "%s", err);
}
END_TEST

/* A caption wider than a narrow grid goes on more lines, part by part, never clipped: the
 * image grows by whole lines, and every caption pixel lands inside it. */
START_TEST(test_grid_caption) {
    int32_t tok[28 * 28] = {0};
    int w1, h1, w2, h2;
    uint8_t *a = trainer_grid_render(tok, 1, 28, 4, "STEP 1", &w1, &h1);
    uint8_t *b = trainer_grid_render(tok, 1, 28, 4, "STEP 1500  T=1  TOP-K=0  TOP-P=1", &w2, &h2);
    ck_assert_int_eq(w1, w2);
    ck_assert_int_eq(h2 - h1, 2 * 12); /* two more lines: 5 font pixels of 2, and a gap of 2 */
    /* the last line's text is drawn: white pixels below the first line's band */
    int lit = 0;
    for (int y = 16; y < 16 + 24; y++)
        for (int x = 0; x < w2; x++) lit += b[(size_t)y * w2 + x] == 255;
    ck_assert_int_gt(lit, 0);
    free(a);
    free(b);
}
END_TEST

/* A grid is written to a new file only: an existing one is left as it was. */
START_TEST(test_png_never_overwrites) {
    char path[] = "/tmp/memtrain-png-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "keep", 4), 4);
    close(fd);
    uint8_t pix[4] = {0, 64, 128, 255};
    char err[256];
    ck_assert_int_eq(io_png_write_gray(path, pix, 2, 2, err, sizeof err), 1);
    ck_assert_ptr_nonnull(strstr(err, "exists"));
    char got[8] = "";
    FILE *f = fopen(path, "rb");
    ck_assert_int_eq((int)fread(got, 1, sizeof got, f), 4);
    fclose(f);
    ck_assert_int_eq(memcmp(got, "keep", 4), 0);
    unlink(path);
    ck_assert_int_eq(io_png_write_gray(path, pix, 2, 2, err, sizeof err), 0);
    f = fopen(path, "rb");
    ck_assert_int_eq((int)fread(got, 1, 8, f), 8);
    fclose(f);
    ck_assert_int_eq(memcmp(got, "\x89PNG", 4), 0);
    unlink(path);
}
END_TEST

static Suite *sample_suite(void) {
    Suite *s = suite_create("sample");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_argmax);
    tcase_add_test(tc, test_distribution);
    tcase_add_test(tc, test_options);
    tcase_add_test(tc, test_grid_caption);
    tcase_add_test(tc, test_png_never_overwrites);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(sample_suite()); }
