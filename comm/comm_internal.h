/* What the comm/ sources share beyond comm.h: the MPI communicator inside a comm_ctx. Only comm/ includes it, and io/ckpt.c, which hands the communicator to HDF5's MPI-IO driver. */
#ifndef MEMTRAIN_COMM_INTERNAL_H
#define MEMTRAIN_COMM_INTERNAL_H

#include <mpi.h>
#include <stdio.h>

#include "comm/comm.h"

/* MPI errors are system or programming errors here: report the call site and stop every rank
 * of `comm` (the comms here use MPI_ERRORS_RETURN, so codes reach this check). */
#define MPI_CHECK(comm, call)                                                             \
    do {                                                                                  \
        int rc_ = (call);                                                                 \
        if (rc_ != MPI_SUCCESS) {                                                         \
            char es_[MPI_MAX_ERROR_STRING];                                               \
            int len_ = 0;                                                                 \
            MPI_Error_string(rc_, es_, &len_);                                            \
            fprintf(stderr, "memtrain: MPI error at %s:%d: %s\n", __FILE__, __LINE__, es_); \
            MPI_Abort((comm), 3);                                                         \
        }                                                                                 \
    } while (0)

/* The context's communicator (a duplicate of the world's, owned by the context: do not free). */
MPI_Comm comm_mpi(const comm_ctx *c);

#endif
