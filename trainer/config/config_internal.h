/* What config.c shares with args.c, the command line's reader. */
#ifndef MEMTRAIN_TRAINER_CONFIG_INTERNAL_H
#define MEMTRAIN_TRAINER_CONFIG_INTERNAL_H

#include <stddef.h>

/* Writes a formatted message into err (if any room); always returns -1 so callers can
 * `return config_fail(...)`. */
int config_fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The message for a retired key (the first len characters of name, '-' read as '_'), or NULL. */
const char *config_retired_key(const char *name, size_t len);
/* The name of key k of the key table, NULL past its end. */
const char *config_key_name(int k);

#endif
