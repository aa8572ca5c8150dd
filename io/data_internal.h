/* Helpers shared by the dataset readers of io/ (io/data_build.c) and the readers io/data.c
 * dispatches to (not part of the public API). */
#ifndef MEMTRAIN_IO_DATA_INTERNAL_H
#define MEMTRAIN_IO_DATA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "io/data.h"

/* Growing token and document-offset arrays that become an io_dataset. */
typedef struct io_data_builder {
    uint16_t *tok;
    int64_t ntok, tokcap;
    int64_t *off; /* (ndocs+1), off[0] = 0 */
    int64_t ndocs, offcap;
} io_data_builder;

void io_data_builder_init(io_data_builder *b);
/* Releases what the builder holds (after io_data_builder_finish it holds nothing). */
void io_data_builder_free(io_data_builder *b);
void io_data_builder_push(io_data_builder *b, uint16_t t);
void io_data_builder_push_bytes(io_data_builder *b, const unsigned char *p, size_t n);
/* Ends the current document; an empty one is not recorded, so no document is ever empty. */
void io_data_builder_end_doc(io_data_builder *b);
/* Moves the arrays into a new dataset (tokens not yet ended into a document are dropped). */
io_dataset *io_data_builder_finish(io_data_builder *b, const char *name, int vocab);

/* Writes one formatted message into err. Always returns -1. A user value in it (a path) may
 * hold any byte: whoever prints the message escapes it (comm_escape). */
int io_data_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reads a whole file into a fresh buffer (free() it). Returns 0, or -1 with err set. */
int io_data_read_file(const char *path, unsigned char **buf, size_t *len, char *err,
                      size_t errlen);

/* Keeps only the documents of `split` (rule in io/data.h), in order. `what` names the source
 * in the error. Returns 0, or -1 with err set when the split would be empty. */
int io_data_keep_split(io_dataset *d, io_split split, const char *what, char *err,
                       size_t errlen);

/* The readers. Each returns 0 and a dataset of the requested split, or -1 with err set. */
int io_data_load_fashion_mnist(io_dataset **out, io_split split, char *err, size_t errlen);
int io_data_load_brown(io_dataset **out, io_split split, const char *data_dir, char *err,
                       size_t errlen);
int io_data_load_text(io_dataset **out, const char *path, io_split split, char *err,
                      size_t errlen);
/* width 1 or 2 bytes per token; vocab 0 means 256 for width 1, largest token + 1 for width 2. */
int io_data_load_tokens(io_dataset **out, const char *path, int width, int vocab,
                        io_split split, char *err, size_t errlen);

#endif
