/* What the comm/ sources share beyond comm.h: the MPI communicator inside a comm_ctx. Only comm/ includes it, and io/ckpt.c, which hands the communicator to HDF5's MPI-IO driver. */
#ifndef MEMTRAIN_COMM_INTERNAL_H
#define MEMTRAIN_COMM_INTERNAL_H

#include <mpi.h>

#include "comm/comm.h"

/* The context's communicator (a duplicate of the world's, owned by the context: do not free). */
MPI_Comm comm_mpi(const comm_ctx *c);

#endif
