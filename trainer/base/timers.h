/* Where a step's time goes: one timer per phase, named in one enum that the log line and the metrics columns come from. */
#ifndef MEMTRAIN_TRAINER_TIMERS_H
#define MEMTRAIN_TRAINER_TIMERS_H

/* The phases of training time, in the order of the log line and of the metrics.csv columns
 * (ms_<name> per step). trainer_step times COMPUTE (its blocks, minus the time inside row
 * exchanges, which the exchange counts itself as ALLTOALL), ALLREDUCE and OPTIMIZER; the
 * training loop times DATA, EVAL and CKPT around its own calls. */
typedef enum trainer_timer {
    TRAINER_TIMER_DATA = 0,  /* filling the rollout from the data streams */
    TRAINER_TIMER_COMPUTE,   /* forward and backward of the blocks */
    TRAINER_TIMER_ALLTOALL,  /* row fetches and gradient pushes between ranks */
    TRAINER_TIMER_ALLREDUCE, /* loss, token and dense-gradient sums over ranks */
    TRAINER_TIMER_OPTIMIZER, /* gradient norm, AdamW, lazy Adam over touched rows */
    TRAINER_TIMER_EVAL,      /* validation */
    TRAINER_TIMER_CKPT,      /* checkpoint writes */
    TRAINER_TIMER_COUNT
} trainer_timer;

typedef struct trainer_timers {
    double sec[TRAINER_TIMER_COUNT];   /* accumulated seconds */
    double since[TRAINER_TIMER_COUNT]; /* start of the running interval */
} trainer_timers;

/* Short name: "data", "compute", "alltoall", "allreduce", "optimizer", "eval", "ckpt". */
const char *trainer_timer_name(trainer_timer i);
void trainer_timer_start(trainer_timers *t, trainer_timer i);
/* Adds the seconds since the matching start. */
void trainer_timer_stop(trainer_timers *t, trainer_timer i);
/* a += b, every phase. */
void trainer_timers_add(trainer_timers *a, const trainer_timers *b);
/* Seconds of every phase together. */
double trainer_timers_total(const trainer_timers *t);

#endif
