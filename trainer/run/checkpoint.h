/* What a run stores in and restores from an HDF5 checkpoint: parameters, tables, optimizer state, replay state, data cursors. */
#ifndef MEMTRAIN_TRAINER_CHECKPOINT_H
#define MEMTRAIN_TRAINER_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "io/data.h"
#include "trainer/config/config.h"
#include "trainer/model/model.h"

/* The per-stream state of this rank's streams first..first+B-1 of nstreams, in the flat form
 * the checkpoint stores. Arrays are owned by the caller. */
typedef struct trainer_stream_state {
    int nstreams, first, B, L;
    size_t msize;    /* S*C floats of carried memory per stream, 0 when none */
    int64_t *cursor; /* (B, 2): documents started, token offset in the current document */
    int32_t *prev;   /* (B, L): tokens of the previous segment, -1 padding */
    int32_t *last;   /* (B): last token of the previous segment */
    float *M;        /* (B, msize): the carried memory (the replay state) */
    const io_dataset *data; /* the training data the cursors point into, to check them on
                               load (a file could hold anything); NULL: not checked */
    int shuffle;            /* the order the cursors count in (io_stream) */
    int by_class;           /* shuffled by class (streams/order 2), or over all documents (1,
                               and checkpoints without streams/order) */
    uint64_t data_seed;
    /* read from a checkpoint: the training data its cursors count in (documents, and the
       io_dataset crc); -1 where the file does not say (written before they were kept) */
    int64_t data_docs, data_crc;
} trainer_stream_state;

/* ---- which run a checkpoint belongs to ----
 *
 * A run is named by a run id, 32 hex digits drawn at its start and kept across resumes: in
 * run_dir/ckpt/RUN_ID and in every checkpoint (root attribute run_id, format version 2).
 * --resume takes only checkpoints of the run (same run id, or none for a version 1 file),
 * whose file name's step is the step they hold, and whose config has the run's shape. */
#define TRAINER_RUN_ID_LEN 32

/* Reads run_dir/ckpt/RUN_ID into id (TRAINER_RUN_ID_LEN + 1 bytes). Local. Returns 0, or -1
 * (id = "") when it is missing or malformed. */
int trainer_run_id_read(const char *run_dir, char *id);

/* Collective. Writes id to run_dir/ckpt/RUN_ID (rank 0; durably, replacing the file). Returns
 * 0, or -1 with a message on every rank. */
int trainer_run_id_write(comm_ctx *c, const char *run_dir, const char *id, char *err, size_t n);

/* Collective. Draws a new run id (rank 0, broadcast) into id and writes run_dir/ckpt/RUN_ID.
 * Returns 0, or -1 with a message on every rank. */
int trainer_run_id_create(comm_ctx *c, const char *run_dir, char *id, char *err, size_t n);

/* Collective. The run id of the run being resumed from run_dir: RUN_ID's, or when the
 * directory has none (checkpoints copied in by hand, or written before run ids), that of the
 * checkpoint trainer_ckpt_peek_config takes (a new one for a version 1 file), then written to
 * RUN_ID. Returns 0, or -1 with a message on every rank. */
int trainer_run_id_for_resume(comm_ctx *c, const char *run_dir, char *id, char *err, size_t n);

/* Writes <cfg->run_dir>/ckpt/ckpt-<step>.h5 collectively: dense parameters and their Adam
 * moments (rank 0), every table as a global (K, 2^tau, OC) array with its moments (each owner
 * its chunks), the streams' state (each rank its streams), the config text, the run id and the
 * step, then commits it atomically and keeps the newest cfg->keep_ckpts. `step` is the number
 * of optimizer steps done. Returns 0, or -1 with a message on every rank (the previous
 * checkpoints are then untouched). */
int trainer_ckpt_save(comm_ctx *c, const trainer_config *cfg, const char *run_id,
                      trainer_model *m, const trainer_stream_state *st, int64_t step, char *err,
                      size_t n);

/* Reads the stored config of the newest checkpoint of run_dir/ckpt that belongs to the run
 * (see above; the run id from RUN_ID when there is one) and holds a valid config, into *cfg
 * (which should hold defaults), and its path into path. Refused files are skipped silently
 * here; trainer_ckpt_resume reports them. Collective. Returns 0, or -1 with a message when
 * there is none. */
int trainer_ckpt_peek_config(comm_ctx *c, const char *run_dir, trainer_config *cfg, char *path,
                             size_t pathlen, char *err, size_t n);

/* Reads the config stored in the checkpoint `path` into *cfg. Collective. Returns 0, or -1
 * with a message. */
int trainer_ckpt_read_config(comm_ctx *c, const char *path, trainer_config *cfg, char *err,
                             size_t n);

/* Restores model and streams (st may be NULL: the model alone) from `path`, whose arrays may have been written by any number
 * of ranks (tables and streams are re-dealt by index). The model must have the checkpoint's
 * shape (the caller compares configs first). A file whose name ("ckpt-00000012.h5") claims
 * another step than it holds is refused, as on resume. Returns 0 and the step in *step, or -1
 * with a message naming the file and dataset on every rank. The state may be partly overwritten on
 * failure. */
int trainer_ckpt_load(comm_ctx *c, const char *path, trainer_model *m, trainer_stream_state *st,
                      int64_t *step, char *err, size_t n);

/* Finds and loads the newest valid checkpoint of run_dir/ckpt that belongs to the run of
 * run_id and has cfg's shape: a file that fails (truncated, corrupt, foreign, another run's,
 * named for another step) is reported on rank 0 ("memtrain: <why>; falling back to an older
 * checkpoint") and the next older one is tried. With aside (a run that goes on from the file
 * found), the skipped files are renamed to "<name>.skipped" first, so that the run's own
 * checkpoints of their steps never replace them. Returns 0 with its path and step, or -1 with
 * a message when none loads (or a skipped file could not be set aside). */
int trainer_ckpt_resume(comm_ctx *c, const char *run_dir, const char *run_id,
                        const trainer_config *cfg, trainer_model *m, trainer_stream_state *st,
                        int aside, int64_t *step, char *path, size_t pathlen, char *err,
                        size_t n);

#endif
