/*
 * worker.c: the HTTP workers as users of the thread host (host.h): an h2o context and a listener each, app.init and
 * the tasks on worker 0, and what a worker's drain waits for (the requests in flight, the coroutines but app.init's).
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <lauxlib.h>
#include "co.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "task.h"
#include "worker.h"

sk_worker_t *sk_workers;
unsigned sk_nworkers;

static h2o_globalconf_t globalconf;
static h2o_barrier_t startup_barrier;

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

/* ===== the host's callbacks ===== */

static h2o_multithread_queue_t *on_attach(sk_host_t *host, h2o_evloop_t *evloop)
{
    sk_worker_t *w = host->data;
    h2o_context_init(&w->ctx, evloop, &globalconf);
    return w->ctx.queue;
}

static void on_serve(sk_host_t *host)
{
    sk_worker_t *w = host->data;
    w->http.loop = &host->loop;
    w->http.vm = host->vm;
    sk_http_thread_init(&w->http);
    w->accept_ctx = (h2o_accept_ctx_t){.ctx = &w->ctx, .hosts = globalconf.hosts};
    w->listener = h2o_evloop_socket_create(host->loop.evloop, w->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    w->listener->data = w;
    h2o_socket_read_start(w->listener, on_accept);
}

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

/* start-up work declared by app.lua (e.g. items from the config); runs once, on worker 0, while serving; then the
 * tasks of app.every */
static void on_started(sk_host_t *host)
{
    sk_worker_t *w = host->data;
    if (w->index != 0 || host->vm == NULL)
        return;
    if (host->vm->init_ref != LUA_NOREF) {
        sk_co_t *co = sk_co_new(host->vm, &host->loop);
        lua_rawgeti(co->L, LUA_REGISTRYINDEX, host->vm->init_ref);
        w->init_running = 1;
        sk_co_start(co, 0, on_init_done, w);
    }
    sk_tasks_install(&host->loop, host->vm);
}

static void on_installed(sk_host_t *host)
{
    sk_worker_t *w = host->data;
    w->http.vm = host->vm;
    if (w->index == 0 && !host->draining)
        sk_tasks_install(&host->loop, host->vm);
}

static void on_drain(sk_host_t *host)
{
    sk_worker_t *w = host->data;
    w->http.draining = 1;
    if (w->listener != NULL) {
        h2o_socket_read_stop(w->listener);
        h2o_socket_close(w->listener);
        w->listener = NULL;
    }
    h2o_context_request_shutdown(&w->ctx);
    sk_tasks_stop(); /* no new runs; one in progress counts as a coroutine to wait for */
}

static int is_idle(sk_host_t *host)
{
    sk_worker_t *w = host->data;
    return w->http.inflight == 0 && sk_co_alive() == (size_t)w->init_running;
}

static void on_timed_out(sk_host_t *host)
{
    sk_worker_t *w = host->data;
    sk_warn("drain timed out with %zu requests and %zu coroutines in flight", w->http.inflight, sk_co_alive());
}

static void on_close(sk_host_t *host)
{
    sk_worker_t *w = host->data;
    w->http.vm = NULL; /* the host releases it next */
    sk_info("stopped (%zu requests still in flight)", w->http.inflight);
}

static const sk_host_callbacks_t worker_callbacks = {.attach = on_attach,
                                                     .serve = on_serve,
                                                     .started = on_started,
                                                     .installed = on_installed,
                                                     .drain = on_drain,
                                                     .idle = is_idle,
                                                     .timed_out = on_timed_out,
                                                     .close = on_close};

/* ===== metrics computed at scrape time ===== */

static void render_lua_memory(sk_metrics_buf_t *buf, const char *name)
{
    for (unsigned i = 0; i < sk_nworkers; ++i)
        sk_metrics_buf_printf(buf, "%s{worker=\"%u\"} %zu\n", name, i, atomic_load(&sk_workers[i].lua_bytes));
}

static void render_coroutines(sk_metrics_buf_t *buf, const char *name)
{
    for (unsigned i = 0; i < sk_nworkers; ++i)
        sk_metrics_buf_printf(buf, "%s{worker=\"%u\"} %zu\n", name, i, atomic_load(&sk_workers[i].host.coroutines));
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
        char name[24];
        snprintf(name, sizeof(name), "worker-%u", i);
        w->index = i;
        w->listen_fd = dup(listen_fd);
        sk_host_init(&w->host, i, name, &worker_callbacks, w, vms[i], sk_config->shutdown_timeout_ms);
        if (sk_host_start(&w->host, &startup_barrier) != 0) {
            snprintf(err, errlen, "cannot start the thread of worker %u", i);
            return -1;
        }
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
        sk_host_install(&sk_workers[i].host, vms[i]);
    return 0;
}

void sk_workers_stop(void)
{
    for (unsigned i = 0; i < sk_nworkers; ++i)
        sk_host_stop(&sk_workers[i].host);
    for (unsigned i = 0; i < sk_nworkers; ++i)
        sk_host_join(&sk_workers[i].host);
}
