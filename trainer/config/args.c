/* The command line: config keys as --key=value or --key value, --config FILE, the caller's
 * own flags, and near-miss suggestions for unknown names. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/common.h"
#include "trainer/config/config.h"
#include "trainer/config/config_internal.h"

/* Whether the first len characters of a and b agree, reading '-' and '_' as one. */
static bool same_spelling(const char *a, const char *b, size_t len) {
    for (size_t i = 0; i < len; i++) {
        char x = a[i] == '_' ? '-' : a[i], y = b[i] == '_' ? '-' : b[i];
        if (x != y) return false;
        if (x == '\0') return true;
    }
    return true;
}

bool trainer_config_flag_matches(const char *arg, const char *flag) {
    size_t len = strlen(flag);
    return same_spelling(arg, flag, len) && (arg[len] == '\0' || arg[len] == '=');
}

/* Whether arg is one of the caller's flags: the entry itself or the entry followed by '='. */
static bool is_caller_flag(const char *arg, const char *const *flags) {
    for (int i = 0; flags && flags[i]; i++)
        if (trainer_config_flag_matches(arg, flags[i])) return true;
    return false;
}

/* Edit distance of a and b (both short), '-' and '_' counting as one. */
static int edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 63 || m > 63) return 99;
    int d[64][64];
    for (size_t i = 0; i <= n; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            int sub = d[i - 1][j - 1] + !same_spelling(a + i - 1, b + j - 1, 1);
            int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
    return d[n][m];
}

void trainer_config_suggest(const char *name, const char *const *flags, char *out, size_t n) {
    int best = 99;
    if (n > 0) out[0] = '\0';
    size_t len = strlen(name);
    /* a word cut short (--temp): the one key or flag it starts, before any near spelling */
    int starts = 0;
    for (int k = 0; len >= 3 && config_key_name(k); k++)
        if (strlen(config_key_name(k)) >= len && same_spelling(config_key_name(k), name, len) &&
            starts++ == 0)
            snprintf(out, n, "--%s", config_key_name(k));
    for (int i = 0; len >= 3 && flags && flags[i]; i++)
        if (strncmp(flags[i], "--", 2) == 0 && strlen(flags[i] + 2) >= len &&
            same_spelling(flags[i] + 2, name, len) && starts++ == 0)
            snprintf(out, n, "%s", flags[i]);
    if (starts == 1) return;
    if (n > 0) out[0] = '\0';
    int limit = len <= 3 ? 1 : 2;
    for (int k = 0; config_key_name(k); k++) {
        int dist = edit_distance(name, config_key_name(k));
        if (dist <= limit && dist < best) {
            best = dist;
            snprintf(out, n, "--%s", config_key_name(k));
        }
    }
    for (int i = 0; flags && flags[i]; i++) {
        if (strncmp(flags[i], "--", 2) != 0) continue;
        int dist = edit_distance(name, flags[i] + 2);
        if (dist <= limit && dist < best) {
            best = dist;
            snprintf(out, n, "%s", flags[i]);
        }
    }
}

/* " (did you mean --steps? see memtrain --help)", or " (see memtrain --help)". */
static void hint(const char *name, size_t len, const char *const *flags, char *out, size_t n) {
    char nm[64], near[80];
    snprintf(nm, sizeof nm, "%.*s", (int)(len < 63 ? len : 63), name);
    trainer_config_suggest(nm, flags, near, sizeof near);
    if (near[0]) snprintf(out, n, " (did you mean %s? see memtrain --help)", near);
    else snprintf(out, n, " (see memtrain --help)");
}

int trainer_config_parse_args(trainer_config *c, int argc, char **argv,
                              const char *const *caller_flags, int *first_positional,
                              char *err, size_t n) {
    /* Pass 1 sorts arguments into ours and the caller's without touching c, so the file
     * can be applied before every override whatever the order on the command line. */
    char **ours = layer_xcalloc((size_t)(argc > 0 ? argc : 1), sizeof *ours);
    char **theirs = layer_xcalloc((size_t)(argc > 0 ? argc : 1), sizeof *theirs);
    char **overrides = layer_xcalloc((size_t)(argc > 0 ? argc : 1), sizeof *overrides);
    const char **values = layer_xcalloc((size_t)(argc > 0 ? argc : 1), sizeof *values);
    char why[160];
    int nours = 0, ntheirs = 0, noverrides = 0, rc = 0;
    const char *config_path = NULL;
    bool rest_is_theirs = false;
    char msg[512];
    for (int i = 1; i < argc && rc == 0; i++) {
        char *a = argv[i];
        if (rest_is_theirs) {
            theirs[ntheirs++] = a;
        } else if (is_caller_flag(a, caller_flags)) {
            theirs[ntheirs++] = a;
            /* "--top-k -1", "--prompt -h": a word with one '-' after a flag that takes a
               value is that value, never an option (a switch takes none) */
            const char *v = i + 1 < argc ? argv[i + 1] : NULL;
            int is_switch = trainer_config_flag_matches(a, "--csv") ||
                            trainer_config_flag_matches(a, "--help");
            if (!strchr(a, '=') && !is_switch && v && v[0] == '-' && v[1] != '-')
                theirs[ntheirs++] = argv[++i];
        } else if (strcmp(a, "--") == 0) {
            ours[nours++] = a;
            rest_is_theirs = true;
        } else if (strcmp(a, "--config") == 0 || strncmp(a, "--config=", 9) == 0) {
            const char *p;
            ours[nours++] = a;
            if (a[8] == '=') {
                p = a + 9;
            } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
                p = argv[++i];
                ours[nours++] = argv[i];
            } else {
                p = "";
            }
            if (*p == '\0') rc = config_fail(err, n, "--config needs a file: --config FILE");
            else if (config_path)
                rc = config_fail(err, n, "--config given twice ('%s' and '%s')", config_path, p);
            else config_path = p;
        } else if (strncmp(a, "--", 2) == 0) {
            const char *eq = strchr(a, '=');
            size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
            char name[64];
            bool known = false;
            if (len < sizeof name) {
                memcpy(name, a + 2, len);
                name[len] = '\0';
                known = trainer_config_has_key(name);
            }
            if (known && eq) {
                ours[nours++] = a;
                values[noverrides] = eq + 1;
                overrides[noverrides++] = a;
            } else if (known && i + 1 < argc && strncmp(argv[i + 1], "--", 2) == 0) {
                /* "--run_dir --steps=2": the next word is an option, not this key's value */
                rc = config_fail(err, n, "%s has no value (the next word, '%s', is an option): "
                                 "write %s VALUE or %s=VALUE", a, argv[i + 1], a, a);
            } else if (known && i + 1 < argc) { /* --key value */
                ours[nours++] = a;
                values[noverrides] = argv[i + 1];
                overrides[noverrides++] = a;
                ours[nours++] = argv[++i];
            } else if (known) {
                rc = config_fail(err, n, "%s needs a value: write %s VALUE or %s=VALUE", a, a, a);
            } else if (config_retired_key(a + 2, len)) {
                rc = config_fail(err, n, "command line: %s", config_retired_key(a + 2, len));
            } else if (eq) {
                hint(a + 2, len, caller_flags, why, sizeof why);
                rc = config_fail(err, n, "unknown config key '%.*s'%s", (int)len, a + 2, why);
            } else {
                hint(a + 2, len, caller_flags, why, sizeof why);
                rc = config_fail(err, n, "unknown option '%s'%s", a, why);
            }
        } else if (a[0] == '-' && a[1] != '\0') {
            rc = config_fail(err, n, "unknown option '%s' (see memtrain --help)", a);
        } else {
            theirs[ntheirs++] = a;
        }
    }
    if (rc == 0 && config_path) rc = trainer_config_load_file(c, config_path, err, n);
    for (int i = 0; i < noverrides && rc == 0; i++) {
        const char *a = overrides[i];
        const char *eq = strchr(a, '=');
        char name[64];
        size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        memcpy(name, a + 2, len); /* len < 64: checked in pass 1 */
        name[len] = '\0';
        if (trainer_config_set(c, name, values[i], msg, sizeof msg) != 0)
            rc = config_fail(err, n, "command line: %s", msg);
    }
    if (rc == 0) {
        for (int i = 0; i < nours; i++) argv[1 + i] = ours[i];
        for (int i = 0; i < ntheirs; i++) argv[1 + nours + i] = theirs[i];
        if (first_positional) *first_positional = argc > 0 ? 1 + nours : 0;
    }
    free(ours);
    free(theirs);
    free(overrides);
    free(values);
    return rc;
}
