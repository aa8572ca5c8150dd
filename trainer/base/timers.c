/* Phase timers of training: start/stop by enum, names for the log and the metrics columns. */
#include "trainer/base/timers.h"

#include <assert.h>

#include "comm/comm.h"

static const char *const names[] = {"data", "compute", "alltoall", "allreduce", "optimizer",
                                    "eval", "ckpt"};
static_assert(sizeof(names) / sizeof(names[0]) == TRAINER_TIMER_COUNT,
              "a name for every trainer_timer");

const char *trainer_timer_name(trainer_timer i) { return names[i]; }

void trainer_timer_start(trainer_timers *t, trainer_timer i) { t->since[i] = comm_time(); }

void trainer_timer_stop(trainer_timers *t, trainer_timer i) { t->sec[i] += comm_time() - t->since[i]; }

void trainer_timers_add(trainer_timers *a, const trainer_timers *b) {
    for (int i = 0; i < TRAINER_TIMER_COUNT; i++) a->sec[i] += b->sec[i];
}

double trainer_timers_total(const trainer_timers *t) {
    double s = 0.0;
    for (int i = 0; i < TRAINER_TIMER_COUNT; i++) s += t->sec[i];
    return s;
}
