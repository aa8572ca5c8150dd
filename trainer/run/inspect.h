/* memtrain inspect: what a checkpoint holds, and a few of its values as stored. */
#ifndef MEMTRAIN_TRAINER_INSPECT_H
#define MEMTRAIN_TRAINER_INSPECT_H

#include "comm/comm.h"
#include "trainer/config/config.h"

/* Prints (rank 0) the step of checkpoint `path`, the first values of bucket 0 of the first
 * table, and of stream 0's carried memory, as stored: a reference for other readers (h5py).
 * Collective. Returns 0; user errors end the job on every rank. */
int trainer_inspect_checkpoint(comm_ctx *comm, const trainer_config *cfg, const char *path);

#endif
