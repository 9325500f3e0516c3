/*
 * http.h: the h2o request handler (http.c). It knows nothing of worker threads: a thread that serves HTTP (a
 * worker) embeds an sk_http_thread_t, keeps its fields current, and registers it with sk_http_thread_init; the
 * handler reads the calling thread's one. worker.c calls into this header, never the other way round.
 */
#ifndef SK_HTTP_H
#define SK_HTTP_H

#include "loop.h"
#include "vm.h"

/** what the handler needs from the thread serving requests; owned by that thread */
typedef struct st_sk_http_thread_t {
    /** the thread's loop (request deadlines) */
    sk_loop_t *loop;
    /** the VM new requests run on (replaced by reloads); NULL when only the built-in routes are served */
    sk_vm_t *vm;
    /** requests accepted and not yet disposed by h2o (their response may still be on the wire); the handler counts */
    size_t inflight;
    /** set when the thread drains: responses then close their HTTP/1 connection */
    int draining;
} sk_http_thread_t;

/** registers the handler (and its metrics) on globalconf's default host; once, on the main thread */
void sk_http_init(h2o_globalconf_t *globalconf);
/** makes thread the calling thread's: every request this thread's h2o context serves reads it */
void sk_http_thread_init(sk_http_thread_t *thread);

#endif
