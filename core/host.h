/*
 * host.h: the thread host every loop runs on. A host is a thread with a loop of its own (loop.h), the VM new work runs
 * on, and the life every loop thread shares:
 *
 *   start     the thread binds its loop, runs the bindings' thread_init (per-thread pools), opens its user's sources of
 *             work (a listener, a Kafka queue's pipe) and, when started with a barrier, waits there for the others;
 *   hand-over a VM built on the main thread (start-up, reload) is handed over with sk_host_install: new work runs on
 *             it, and the old one closes when its last coroutine ends;
 *   wake-ups  another thread may wake the host (sk_host_wake): its user's `woken` runs on the loop;
 *   drain     sk_host_stop: the user stops taking work, and the host runs until the user says the work in flight has
 *             ended or the drain deadline passes;
 *   end       the coroutines still parked are abandoned (their bindings give back what they hold into pools that are
 *             still alive), the user closes its sources, the VM closes (a __gc may still use a pool), and only then
 *             do the bindings dispose the thread's pools.
 *
 * The HTTP workers (worker.c) and the Kafka order consumer (bindings/kafka/consumer.c) are its users: each supplies
 * only its sources of work and what "idle" means, through sk_host_callbacks_t. Messages between threads go through
 * h2o's multithread queue of the loop; one sent before the thread serves waits for it, and one sent after the host
 * ended is dropped (its VM released), never lost in a receiver that is gone.
 */
#ifndef SK_HOST_H
#define SK_HOST_H

#include <pthread.h>
#include <stdatomic.h>
#include "loop.h"
#include "vm.h"

typedef struct st_sk_host_t sk_host_t;

/** what a user of the host supplies; every callback runs on the host's thread and may be NULL unless said */
typedef struct st_sk_host_callbacks_t {
    /** first, before the loop is bound: the cross-thread queue the loop uses (an h2o context's, made on `evloop`), or
     * NULL for one of the loop's own */
    h2o_multithread_queue_t *(*attach)(sk_host_t *host, h2o_evloop_t *evloop);
    /** after the bindings' thread_init: opens the sources of work */
    void (*serve)(sk_host_t *host);
    /** once every host started with the same barrier serves (the workers' app.init) */
    void (*started)(sk_host_t *host);
    /** host->vm was replaced by a hand-over */
    void (*installed)(sk_host_t *host);
    /** sk_host_wake was called (wake-ups sent close together may be merged into one call) */
    void (*woken)(sk_host_t *host);
    /** the drain begins: stop taking new work */
    void (*drain)(sk_host_t *host);
    /** required: while draining, after each iteration of the loop: whether the work in flight has ended */
    int (*idle)(sk_host_t *host);
    /** the drain deadline passed with work still in flight (the host ends after it; NULL: a generic warning) */
    void (*timed_out)(sk_host_t *host);
    /** after the loop ended and the coroutines left were abandoned, before the VM closes: closes the sources */
    void (*close)(sk_host_t *host);
} sk_host_callbacks_t;

struct st_sk_host_t {
    sk_loop_t loop;
    /** its loop's id in metrics (workers 0..N-1, the services after them) and the thread's name in the log */
    unsigned id;
    char name[24];
    const sk_host_callbacks_t *cb;
    /** the user's */
    void *data;
    /** the VM new work runs on (host thread; NULL when the host serves no scripts, e.g. HTTP with built-in routes only) */
    sk_vm_t *vm;
    /** 1 from the drain's start (host thread) */
    int draining;
    unsigned drain_timeout_ms;
    /** published after each iteration for /metrics, which renders on another thread */
    _Atomic size_t coroutines;
    /* ----- private ----- */
    pthread_t _tid;
    h2o_barrier_t *_barrier;
    sk_timer_t _drain_timer;
    h2o_multithread_receiver_t _control;
    /* sends happen under _control_mutex: before the thread registered its receiver they wait in _early (delivered
     * once it is), while it is open they go to the receiver, and once it closed they are dropped, so the host can close
     * its receiver and find every message that will ever reach it already linked (h2o asserts that a receiver it
     * unregisters has none pending) */
    pthread_mutex_t _control_mutex;
    enum { SK_HOST_CONTROL_EARLY, SK_HOST_CONTROL_OPEN, SK_HOST_CONTROL_CLOSED } _control_state;
    h2o_linklist_t _early;
};

/** prepares a host (main thread); `vm` (a reference the host takes over, or NULL) is what it will serve first */
void sk_host_init(sk_host_t *host, unsigned id, const char *name, const sk_host_callbacks_t *cb, void *data, sk_vm_t *vm,
                  unsigned drain_timeout_ms);
/** starts the thread. With a barrier, the thread waits on it once it serves (before `started`), so a caller that waits
 * on the same barrier knows every host of the start serves. Returns 0, or -1 if the thread cannot be created. */
int sk_host_start(sk_host_t *host, h2o_barrier_t *barrier);
/** hands `vm` (a reference the host takes over) to the host: new work runs on it. Any thread. */
void sk_host_install(sk_host_t *host, sk_vm_t *vm);
/** wakes the host: its `woken` runs on its loop. Any thread; harmless once the host ended. */
void sk_host_wake(sk_host_t *host);
/** asks the host to drain and end. Any thread. */
void sk_host_stop(sk_host_t *host);
/** waits for the host's thread to end (after sk_host_stop) */
void sk_host_join(sk_host_t *host);

/** the host running on the calling thread, or NULL */
sk_host_t *sk_host_current(void);

#endif
