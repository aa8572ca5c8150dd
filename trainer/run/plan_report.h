/* memtrain plan: the table plan and its predicted traffic and memory for a config at any rank count, without training. */
#ifndef MEMTRAIN_TRAINER_PLAN_REPORT_H
#define MEMTRAIN_TRAINER_PLAN_REPORT_H

#include "comm/comm.h"
#include "trainer/config/config.h"

/* Rank 0 prints, for each rank count in ranks (n), the strategies the planner picks for the
 * model of cfg and its predicted bytes sent, exchanges and communication time per rank and
 * step (at net_gbps and net_latency_us), and the table memory per rank: the owned share of
 * rows, Adam moments and gradient sums, and what is held beyond it (fetched rows up to
 * row_cache_mb, replicated groups). per_rank > 0 scales the streams with the ranks (weak
 * scaling: streams = per_rank * P, stream_block = per_rank). csv: one CSV row per rank
 * count. Nothing is allocated or trained. Returns 0, or 2 (with a message) when a rank count
 * has fewer blocks of streams than ranks. */
int trainer_plan_report(comm_ctx *comm, const trainer_config *cfg, const int *ranks, int n,
                        int per_rank, int csv);

#endif
