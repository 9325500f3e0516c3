/*
 * worker.c: starting, reloading and draining the HTTP worker threads.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <lauxlib.h>
#include "binding.h"
#include "co.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "task.h"
#include "worker.h"

sk_worker_t *sk_workers;
unsigned sk_nworkers;

static h2o_globalconf_t globalconf;
static __thread sk_worker_t *current_worker;
static h2o_barrier_t startup_barrier;

enum { MSG_INSTALL_VM, MSG_SHUTDOWN };

typedef struct st_control_msg_t {
    h2o_multithread_message_t super;
    int type;
    sk_vm_t *vm;
} control_msg_t;

sk_worker_t *sk_worker_current(void)
{
    return current_worker;
}

/* ===== accepting ===== */

static void on_socket_close(void *data)
{
    sk_worker_t *w = data;
    atomic_fetch_sub_explicit(&w->connections, 1, memory_order_relaxed);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    sk_worker_t *w = listener->data;
    if (err != NULL)
        return;
    /* a bounded batch per readiness so one busy listener cannot starve established connections */
    for (int i = 0; i < 32; ++i) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            break;
        atomic_fetch_add_explicit(&w->connections, 1, memory_order_relaxed);
        sock->on_close.cb = on_socket_close;
        sock->on_close.data = w;
        h2o_accept(&w->accept_ctx, sock);
    }
}

/* ===== control messages from the main thread ===== */

static void begin_drain(sk_worker_t *w);

static void on_control(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    sk_worker_t *w = H2O_STRUCT_FROM_MEMBER(sk_worker_t, control, receiver);
    while (!h2o_linklist_is_empty(messages)) {
        control_msg_t *msg = H2O_STRUCT_FROM_MEMBER(control_msg_t, super.link, messages->next);
        h2o_linklist_unlink(&msg->super.link);
        switch (msg->type) {
        case MSG_INSTALL_VM: {
            /* new requests go to the new VM; coroutines still running hold references on the old one, which
             * closes when the last of them ends */
            sk_vm_t *old = w->http.vm;
            w->http.vm = msg->vm;
            sk_vm_release(old);
            if (w->index == 0 && !w->http.draining)
                sk_tasks_install(&w->loop, w->http.vm);
            sk_debug("now serving Lua VM generation %u", w->http.vm->generation);
            break;
        }
        case MSG_SHUTDOWN:
            begin_drain(w);
            break;
        }
        free(msg);
    }
}

static void send_control(sk_worker_t *w, int type, sk_vm_t *vm)
{
    control_msg_t *msg = h2o_mem_alloc(sizeof(*msg));
    *msg = (control_msg_t){.type = type, .vm = vm};
    h2o_multithread_send_message(&w->control, &msg->super);
}

/* ===== draining ===== */

static void on_drain_timeout(sk_timer_t *timer)
{
    sk_worker_t *w = H2O_STRUCT_FROM_MEMBER(sk_worker_t, drain_timer, timer);
    sk_warn("drain timed out with %zu requests and %zu coroutines in flight", w->http.inflight, sk_co_alive());
}

static void begin_drain(sk_worker_t *w)
{
    if (w->http.draining)
        return;
    w->http.draining = 1;
    if (w->listener != NULL) {
        h2o_socket_read_stop(w->listener);
        h2o_socket_close(w->listener);
        w->listener = NULL;
    }
    h2o_context_request_shutdown(&w->ctx);
    sk_tasks_stop(); /* no new runs; one in progress counts as a coroutine to wait for */
    sk_timer_start(&w->loop, &w->drain_timer, sk_config->shutdown_timeout_ms, on_drain_timeout);
}

static int drained(sk_worker_t *w)
{
    return w->http.draining &&
           ((w->http.inflight == 0 && sk_co_alive() == (size_t)w->init_running) || !sk_timer_is_active(&w->drain_timer));
}

/* ===== app.init ===== */

static void on_init_done(sk_co_t *co, int ok, int nres)
{
    (void)nres;
    ((sk_worker_t *)co->data)->init_running = 0;
    if (co->abandoned)
        sk_warn("app.init abandoned at shutdown");
    else if (!ok)
        sk_error("app.init failed: %s", lua_tostring(co->L, -1));
    else
        sk_info("app.init done");
}

/* start-up work declared by app.lua (e.g. items from the config); runs once, on worker 0, while serving */
static void run_app_init(sk_worker_t *w)
{
    if (w->index != 0 || w->http.vm == NULL || w->http.vm->init_ref == LUA_NOREF)
        return;
    sk_co_t *co = sk_co_new(w->http.vm, &w->loop);
    lua_rawgeti(co->L, LUA_REGISTRYINDEX, w->http.vm->init_ref);
    w->init_running = 1;
    sk_co_start(co, 0, on_init_done, w);
}

/* ===== the thread ===== */

static void *run_worker(void *arg)
{
    sk_worker_t *w = arg;
    current_worker = w;
    sk_log_set_thread_name(w->name);

    h2o_evloop_t *evloop = h2o_evloop_create();
    h2o_context_init(&w->ctx, evloop, &globalconf);
    sk_loop_init(&w->loop, w->index, evloop, w->ctx.queue);
    w->http.loop = &w->loop;
    sk_http_thread_init(&w->http);
    w->accept_ctx = (h2o_accept_ctx_t){.ctx = &w->ctx, .hosts = globalconf.hosts};
    h2o_multithread_register_receiver(w->ctx.queue, &w->control, on_control);
    sk_bindings_thread_init(&w->loop);

    w->listener = h2o_evloop_socket_create(evloop, w->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    w->listener->data = w;
    h2o_socket_read_start(w->listener, on_accept);
    h2o_barrier_wait(&startup_barrier);
    run_app_init(w);
    if (w->index == 0 && w->http.vm != NULL)
        sk_tasks_install(&w->loop, w->http.vm);

    while (!drained(w)) {
        sk_loop_run_once(&w->loop);
        atomic_store_explicit(&w->coroutines, sk_co_alive(), memory_order_relaxed);
    }
    sk_timer_stop(&w->loop, &w->drain_timer);
    /* The order matters. Coroutines still parked (the drain timed out, or app.init still runs) are abandoned first:
     * their bindings hand back leased connections, gate slots and queued waits into pools that are still alive.
     * Then the VMs close (a __gc may still use a pool), and only then do the pools go. */
    size_t abandoned = sk_co_abandon_all();
    if (abandoned != 0)
        sk_warn("abandoned %zu coroutines that had not ended", abandoned);
    atomic_store_explicit(&w->coroutines, 0, memory_order_relaxed);
    if (w->http.vm != NULL) {
        sk_vm_release(w->http.vm);
        w->http.vm = NULL;
    }
    sk_bindings_thread_dispose(&w->loop);
    sk_info("stopped (%zu requests still in flight)", w->http.inflight);
    return NULL;
}

/* ===== metrics computed at scrape time ===== */

static void render_lua_memory(sk_metrics_buf_t *buf, const char *name)
{
    for (unsigned i = 0; i < sk_nworkers; ++i)
        sk_metrics_buf_printf(buf, "%s{worker=\"%u\"} %zu\n", name, i, atomic_load(&sk_workers[i].lua_bytes));
}

static void render_coroutines(sk_metrics_buf_t *buf, const char *name)
{
    for (unsigned i = 0; i < sk_nworkers; ++i)
        sk_metrics_buf_printf(buf, "%s{worker=\"%u\"} %zu\n", name, i, atomic_load(&sk_workers[i].coroutines));
}

static void render_connections(sk_metrics_buf_t *buf, const char *name)
{
    for (unsigned i = 0; i < sk_nworkers; ++i)
        sk_metrics_buf_printf(buf, "%s{worker=\"%u\"} %zu\n", name, i, atomic_load(&sk_workers[i].connections));
}

/* ===== start, reload, stop (main thread) ===== */

static unsigned generation;

/* builds one VM per worker; all or nothing */
static int build_vms(sk_scripts_t *scripts, sk_vm_t **vms, char *err, size_t errlen)
{
    ++generation;
    for (unsigned i = 0; i < sk_nworkers; ++i) {
        if ((vms[i] = sk_vm_create(scripts, SK_VM_ROLE_API, generation, i, &sk_workers[i].lua_bytes, err, errlen)) == NULL) {
            while (i-- > 0)
                sk_vm_release(vms[i]);
            return -1;
        }
    }
    return 0;
}

int sk_workers_start(int listen_fd, sk_scripts_t *scripts, char *err, size_t errlen)
{
    sk_nworkers = sk_config->workers;
    sk_workers = calloc(sk_nworkers, sizeof(*sk_workers));

    h2o_config_init(&globalconf);
    globalconf.server_name = h2o_iovec_init(H2O_STRLIT("seckilld"));
    /* h2o answers larger bodies itself; we answer 413 in the API's JSON shape above sk_config->max_body */
    globalconf.max_request_entity_size = 1024 * 1024;
    globalconf.http1.req_timeout = sk_config->req_timeout_ms;
    globalconf.http2.idle_timeout = sk_config->req_timeout_ms;
    sk_http_init(&globalconf);

    sk_metrics_gauge_fn("seckilld_lua_memory_bytes", "Bytes held by the Lua VMs of each worker", render_lua_memory);
    sk_metrics_gauge_fn("seckilld_coroutines_inflight", "Lua coroutines alive on each worker", render_coroutines);
    sk_metrics_gauge_fn("seckilld_http_connections", "Open client connections on each worker", render_connections);

    sk_vm_t *vms[64] = {NULL};
    if (scripts != NULL && build_vms(scripts, vms, err, errlen) != 0)
        return -1;
    h2o_barrier_init(&startup_barrier, sk_nworkers + 1);
    for (unsigned i = 0; i < sk_nworkers; ++i) {
        sk_worker_t *w = sk_workers + i;
        w->index = i;
        snprintf(w->name, sizeof(w->name), "worker-%u", i);
        w->http.vm = vms[i];
        w->listen_fd = dup(listen_fd);
        h2o_multithread_create_thread(&w->tid, NULL, run_worker, w);
    }
    h2o_barrier_wait(&startup_barrier);
    return 0;
}

int sk_workers_reload(sk_scripts_t *scripts, char *err, size_t errlen)
{
    sk_vm_t *vms[64];
    if (build_vms(scripts, vms, err, errlen) != 0)
        return -1;
    for (unsigned i = 0; i < sk_nworkers; ++i)
        send_control(sk_workers + i, MSG_INSTALL_VM, vms[i]);
    return 0;
}

void sk_workers_stop(void)
{
    for (unsigned i = 0; i < sk_nworkers; ++i)
        send_control(sk_workers + i, MSG_SHUTDOWN, NULL);
    for (unsigned i = 0; i < sk_nworkers; ++i)
        pthread_join(sk_workers[i].tid, NULL);
}
