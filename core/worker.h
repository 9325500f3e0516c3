/*
 * worker.h: the HTTP worker threads. Each owns a loop, an h2o context, its current Lua VM and (through the
 * bindings' thread_init) its own connection pools. Nothing here is shared between workers but the listening socket
 * (each has a dup) and the read-only h2o configuration.
 */
#ifndef SK_WORKER_H
#define SK_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include "loop.h"
#include "vm.h"

typedef struct st_sk_worker_t {
    sk_loop_t loop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    unsigned index;
    char name[24];
    pthread_t tid;
    int listen_fd;
    h2o_socket_t *listener;
    /** the VM new requests run on; replaced by reloads; NULL when only built-in routes are served */
    sk_vm_t *vm;
    h2o_multithread_receiver_t control;
    /** requests accepted and not yet disposed by h2o (their response may still be on the wire) */
    size_t inflight;
    int draining;
    /** 1 while app.init's coroutine runs: a drain does not wait for it (it may be retrying a backend) */
    int init_running;
    sk_timer_t drain_timer;
    /** published for /metrics, which may run on another thread */
    _Atomic size_t lua_bytes;
    _Atomic size_t coroutines;
    _Atomic size_t connections;
} sk_worker_t;

extern sk_worker_t *sk_workers;
extern unsigned sk_nworkers;

/** creates the workers' VMs from the snapshot (on the calling thread) and starts the threads serving listen_fd.
 * With no snapshot (role consumer) the workers serve only the built-in routes. Returns 0, or -1 with err set if a
 * VM cannot be built. */
int sk_workers_start(int listen_fd, sk_scripts_t *scripts, char *err, size_t errlen);
/** builds and validates new VMs for every worker from the snapshot; if all load, hands each worker its new VM and
 * returns 0; otherwise changes nothing and returns -1 with err set. */
int sk_workers_reload(sk_scripts_t *scripts, char *err, size_t errlen);
/** asks every worker to stop accepting and drain, then joins them */
void sk_workers_stop(void);

/** the worker running on the calling thread, or NULL */
sk_worker_t *sk_worker_current(void);

/** the h2o request handler (core/http.c) and the error responder shared with it */
void sk_http_init(h2o_globalconf_t *globalconf);
void sk_http_send_error(h2o_req_t *req, int status, const char *code, const char *message);

#endif
