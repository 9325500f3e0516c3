/*
 * worker.h: the HTTP worker threads, users of the thread host (host.h): each host's sources of work are an h2o
 * context and its dup of the listening socket; the host gives it the thread, the loop, the VM hand-over, the drain and
 * (through the bindings' thread_init) its own connection pools. Nothing here is shared between workers but the listening socket
 * (each has a dup) and the read-only h2o configuration. The request handler (http.h) sees a worker only through
 * the sk_http_thread_t it embeds.
 */
#ifndef SK_WORKER_H
#define SK_WORKER_H

#include <stdatomic.h>
#include "host.h"
#include "http.h"

typedef struct st_sk_worker_t {
    /** the thread, its loop (host.loop), the VM new requests run on (host.vm: replaced by reloads; NULL when only
     * built-in routes are served) and the drain */
    sk_host_t host;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    unsigned index;
    int listen_fd;
    h2o_socket_t *listener;
    /** what the request handler reads: the loop, the VM, the requests in flight, and whether the worker drains (kept
     * equal to the host's) */
    sk_http_thread_t http;
    /** 1 while app.init's coroutine runs: a drain does not wait for it (it may be retrying a backend) */
    int init_running;
    /** published for /metrics, which may run on another thread */
    _Atomic size_t lua_bytes;
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

#endif
