/* A thread that ends the rank when its parent, the launcher's process on this node, is gone. */
#include "trainer/run/watchdog.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int started, writing, watching;
static pid_t parent;

static void nap(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

void trainer_watchdog_exit(void) {
    char msg[160];
    int len = getppid() != parent
                  ? snprintf(msg, sizeof msg,
                             "memtrain: pid %ld: the launcher (pid %ld) is gone; stopping\n",
                             (long)getpid(), (long)parent)
                  : snprintf(msg, sizeof msg,
                             "memtrain: pid %ld: another rank's launcher is gone; stopping\n",
                             (long)getpid());
    /* stderr went to the launcher: this write may fail or raise SIGPIPE, which ends the
       process as well */
    if (write(STDERR_FILENO, msg, (size_t)len) < 0) {
    }
    _exit(1);
}

int trainer_watchdog_orphaned(void) { return atomic_load(&watching) && getppid() != parent; }

static void *watch(void *arg) {
    (void)arg;
    for (;;) {
        nap(100);
        if (getppid() == parent) continue;
        /* a checkpoint being written is finished first: it is the run's newest state */
        for (int i = 0; i < 6000 && atomic_load(&writing); i++) nap(10);
        trainer_watchdog_exit();
    }
    return NULL;
}

void trainer_watchdog_start(void) {
    if (atomic_exchange(&started, 1)) return;
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK") && !getenv("SLURM_STEP_ID"))
        return;
    parent = getppid();
    if (parent <= 1) return; /* already orphaned, or a container's init: nothing to watch */
    /* signals go to the main thread, whose handlers the training loop reads */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    atomic_store(&watching, 1);
    if (pthread_create(&t, &attr, watch, NULL) != 0)
        fprintf(stderr, "memtrain: warning: cannot start the launcher watchdog\n");
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void trainer_watchdog_hold(int on) { atomic_store(&writing, on ? 1 : 0); }
