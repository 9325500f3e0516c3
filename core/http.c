/*
 * http.c: the h2o handler. Built-in routes (/healthz, /metrics) are answered in C; every other request is matched
 * against the routes of the serving thread's current VM (http.h) and runs as a coroutine, given the request object
 * (request.h). What it returns is sent when the coroutine ends (response.h); if the client went away meanwhile, the
 * coroutine still completes (a purchase is not aborted by a disconnect) and only the response is dropped. A handler
 * that has not answered by http.deadline_ms is answered 503 by the core at once, and then runs on detached exactly
 * like a handler whose client went away. Above http.max_inflight requests in flight on the thread, a request for a
 * script's route (but those declared with `shed = false`) is answered 503 "overloaded" at once without entering Lua: shedding load
 * early keeps the answers of the admitted requests fast, instead of queueing everyone behind a backlog that ends in timeouts.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "co.h"
#include "config.h"
#include "health.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "request.h"
#include "response.h"

typedef struct st_http_req_t {
    h2o_req_t *req; /* NULL once h2o disposed the request */
    struct st_http_req_t **guard;
    sk_http_thread_t *thread;
    sk_route_t *route;
    struct timespec started;
    sk_timer_t deadline;
    int timed_out;  /* answered 503 by the deadline; the handler runs on detached */
    h2o_iovec_t id; /* the request id, in the request's pool: for the responses and the access log while req lives */
    sk_co_notes_t notes;
} http_req_t;

static struct {
    sk_counter_t *unmatched[6]; /* by status class */
    sk_histogram_t *latency_builtin;
    sk_counter_t *builtin[3]; /* by BUILTIN_* (below) */
    sk_counter_t *lua_errors, *deadline_exceeded, *shed;
} metrics;

static __thread sk_http_thread_t *current_thread;

void sk_http_thread_init(sk_http_thread_t *thread)
{
    current_thread = thread;
}

static double elapsed_s(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) + (now.tv_nsec - since->tv_nsec) / 1e9;
}

/* the access log's line for a response (only called when it is on): method, path (without the query, which may
 * carry what should not be logged), status, latency, and what the handler told of the request */
static void access_log(h2o_req_t *req, int status, const struct timespec *started, h2o_iovec_t id, const sk_co_notes_t *notes)
{
    char rid[SK_REQUEST_ID_MAX + 1], st[8], ms[32];
    size_t path_len = req->query_at != SIZE_MAX ? req->query_at : req->path.len, n = 4;
    snprintf(rid, sizeof(rid), "%.*s", (int)id.len, id.base);
    snprintf(st, sizeof(st), "%d", status);
    snprintf(ms, sizeof(ms), "%.3f", elapsed_s(started) * 1000);
    sk_log_field_t f[4 + SK_CO_MAX_NOTES] = {{"method", req->method.base, req->method.len, 0},
                                             {"path", req->path.base, path_len, 0},
                                             {"status", st, strlen(st), 1},
                                             {"latency_ms", ms, strlen(ms), 1}};
    for (size_t i = 0; notes != NULL && i != notes->nkeys; ++i)
        if (notes->values[i][0] != '\0')
            f[n++] = (sk_log_field_t){notes->keys[i], notes->values[i], strlen(notes->values[i]), 0};
    sk_log_access(rid, f, n);
}

/* every response goes out through here, just before it is sent: it carries the request id, a draining thread closes
 * its HTTP/1 connections, and the access log (when on) gets its line */
static h2o_req_t *answering(h2o_req_t *req, h2o_iovec_t id, int status, const struct timespec *started, const sk_co_notes_t *notes)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, id.base, id.len);
    if (current_thread != NULL && current_thread->draining)
        req->http1_is_persistent = 0;
    if (sk_log_access_on)
        access_log(req, status, started, id, notes);
    return req;
}

/* ===== metrics per route ===== */

static sk_counter_t *route_counter(sk_route_t *route, int status)
{
    size_t i;
    for (i = 0; i < sizeof(route->status_cache) / sizeof(route->status_cache[0]); ++i) {
        if (route->status_cache[i].status == status)
            return route->status_cache[i].series;
        if (route->status_cache[i].status == 0)
            break;
    }
    char labels[512];
    snprintf(labels, sizeof(labels), "route=\"%s %s\",status=\"%d\"", route->method, route->pattern, status);
    sk_counter_t *c = sk_metrics_counter("seckilld_http_requests_total", "HTTP requests by route and status", labels);
    if (i < sizeof(route->status_cache) / sizeof(route->status_cache[0])) {
        route->status_cache[i].status = status;
        route->status_cache[i].series = c;
    }
    return c;
}

/* the built-in routes' series, registered once (sk_http_init): a registry lookup per answer took a mutex and
 * compared every series' name, a fifth of what /healthz cost */
enum { BUILTIN_HEALTHZ_OK, BUILTIN_HEALTHZ_DOWN, BUILTIN_METRICS, BUILTIN_COUNT };

static void count_builtin(int which, const struct timespec *started)
{
    sk_counter_inc(metrics.builtin[which]);
    sk_histogram_observe(metrics.latency_builtin, elapsed_s(started));
}

/* the request is no longer the handler's to answer: whatever it returns later is dropped */
static h2o_req_t *detach(http_req_t *hr)
{
    h2o_req_t *req = hr->req;
    if (hr->guard != NULL)
        *hr->guard = NULL;
    hr->guard = NULL;
    hr->req = NULL;
    return req;
}

static void on_deadline(sk_timer_t *timer)
{
    http_req_t *hr = H2O_STRUCT_FROM_MEMBER(http_req_t, deadline, timer);
    if (hr->req == NULL)
        return; /* the client went away first */
    hr->timed_out = 1;
    /* detach before answering: the answer may dispose the request, and its guard with it */
    h2o_req_t *req = detach(hr);
    sk_counter_inc(metrics.deadline_exceeded);
    sk_counter_inc(route_counter(hr->route, 503));
    if (hr->route->latency != NULL)
        sk_histogram_observe(hr->route->latency, elapsed_s(&hr->started));
    sk_response_send_error(answering(req, hr->id, 503, &hr->started, &hr->notes), 503, "unavailable", "deadline exceeded");
}

static void on_handler_done(sk_co_t *co, int ok, int nres)
{
    http_req_t *hr = co->data;
    sk_timer_stop(hr->thread->loop, &hr->deadline);
    if (co->abandoned) {
        /* shutdown gave up on it: the buyer gets a definite "try again" rather than a dropped connection */
        if (hr->req != NULL) {
            sk_counter_inc(route_counter(hr->route, 503));
            h2o_req_t *req = detach(hr);
            sk_response_send_error(answering(req, hr->id, 503, &hr->started, &hr->notes), 503, "unavailable", "server stopping");
        }
        free(hr);
        return;
    }
    if (!ok) {
        sk_counter_inc(metrics.lua_errors);
        sk_error("%s %s: lua error: %s", hr->route->method, hr->route->pattern, lua_tostring(co->L, -1));
    }
    if (hr->timed_out) {
        sk_warn("%s %s: the handler ended after %.0f ms, past the deadline (%u ms) it was answered 503 at; its response "
                "is dropped",
                hr->route->method, hr->route->pattern, elapsed_s(&hr->started) * 1000, sk_config->deadline_ms);
        free(hr);
        return;
    }
    sk_response_t res;
    if (ok && sk_response_read_results(&res, hr->route, co->L, nres) == 0) {
        /* read even when the client went away (a bad return is logged all the same); sent only if it is still there */
        if (hr->req != NULL) {
            sk_counter_inc(route_counter(hr->route, res.status));
            sk_response_send_results(answering(hr->req, hr->id, res.status, &hr->started, &hr->notes), co->L, &res);
        }
    } else if (hr->req != NULL) {
        sk_counter_inc(route_counter(hr->route, 500));
        sk_response_send_error(answering(hr->req, hr->id, 500, &hr->started, &hr->notes), 500, "internal", "internal server error");
    }
    if (hr->route->latency != NULL)
        sk_histogram_observe(hr->route->latency, elapsed_s(&hr->started));
    detach(hr);
    free(hr);
}

static void on_req_dispose(void *p)
{
    http_req_t **guard = p;
    if (*guard != NULL) {
        /* the guard itself is freed with the request: the handler must neither respond nor clear it later */
        (*guard)->req = NULL;
        (*guard)->guard = NULL;
        sk_timer_stop((*guard)->thread->loop, &(*guard)->deadline);
    }
    --current_thread->inflight;
}

/* ===== built-in routes ===== */

static int serve_builtin(h2o_req_t *req, size_t path_len, const struct timespec *started, h2o_iovec_t id)
{
#define IS(lit) (path_len == sizeof(lit) - 1 && memcmp(req->path.base, lit, path_len) == 0)
    int is_get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    if (IS("/healthz") && is_get) {
        char body[1024];
        int up = sk_health_render(body, sizeof(body));
        sk_response_send(answering(req, id, up ? 200 : 503, started, NULL), up ? 200 : 503, sk_response_json_type, body,
                         strlen(body));
        count_builtin(up ? BUILTIN_HEALTHZ_OK : BUILTIN_HEALTHZ_DOWN, started);
        return 1;
    }
    if (IS("/metrics") && is_get) {
        size_t len;
        char *text = sk_metrics_render(&len);
        sk_response_send(answering(req, id, 200, started, NULL), 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
        free(text);
        count_builtin(BUILTIN_METRICS, started);
        return 1;
    }
    if (IS("/_c/hello") && is_get && sk_config->bench_routes) {
        /* the C-only twin of the benchmark's Lua route: same answer, no VM */
        static const char body[] = "{\"ok\":true,\"hello\":\"world\"}";
        sk_response_send(answering(req, id, 200, started, NULL), 200, sk_response_json_type, body, sizeof(body) - 1);
        return 1;
    }
#undef IS
    return 0;
}

/* whether the thread is too busy to start this request: answers it 503 "overloaded" if so. The shed request is not
 * counted in inflight (it holds nothing a drain must wait for), and a route the application declared with
 * `shed = false` (the shipped app: /admin/, how one looks at and fixes an overloaded server) is never shed. */
static int shed(sk_http_thread_t *t, h2o_req_t *req, sk_route_t *route, h2o_iovec_t id, const struct timespec *started)
{
    if (sk_config->max_inflight == 0 || t->inflight < sk_config->max_inflight || route->never_shed)
        return 0;
    sk_counter_inc(metrics.shed);
    sk_counter_inc(route_counter(route, 503));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
    sk_response_send_error(answering(req, id, 503, started, NULL), 503, "overloaded",
                           "too many requests in flight; retry after a second");
    return 1;
}

static int status_class(int status)
{
    return status / 100;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    sk_http_thread_t *t = current_thread;
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    size_t path_len = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    h2o_iovec_t id = sk_request_id(req);

    if (serve_builtin(req, path_len, &started, id))
        return 0;

    if (req->entity.len > sk_config->max_body) {
        sk_counter_inc(metrics.unmatched[status_class(413)]);
        sk_response_send_error(answering(req, id, 413, &started, NULL), 413, "too_large", "request body over the limit");
        return 0;
    }

    sk_route_match_t m;
    char allow[128];
    int r = t->vm == NULL ? SK_ROUTER_NOT_FOUND
                          : sk_router_match(&t->vm->router, req->method.base, req->method.len, req->path.base, path_len, &m, allow,
                                            sizeof(allow));
    if (r != SK_ROUTER_FOUND) {
        int status = r == SK_ROUTER_NOT_FOUND ? 404 : 405;
        sk_counter_inc(metrics.unmatched[status_class(status)]);
        if (status == 405)
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, h2o_strdup(&req->pool, allow, SIZE_MAX).base,
                           strlen(allow));
        sk_response_send_error(answering(req, id, status, &started, NULL), status,
                               status == 404 ? "not_found" : "method_not_allowed",
                               status == 404 ? "no route for this path" : "method not allowed for this path");
        return 0;
    }
    if (shed(t, req, m.route, id, &started))
        return 0;
    if (m.route->latency == NULL) {
        char labels[300];
        snprintf(labels, sizeof(labels), "route=\"%s %s\"", m.route->method, m.route->pattern);
        m.route->latency = sk_metrics_histogram("seckilld_http_request_duration_seconds", "HTTP request latency by route", labels,
                                                sk_metrics_latency_bounds, sk_metrics_latency_nbounds);
    }

    http_req_t *hr = h2o_mem_alloc(sizeof(*hr));
    *hr = (http_req_t){.req = req, .thread = t, .route = m.route, .started = started, .id = id};
    if (sk_log_access_on) { /* the route's parameters named as the application's note keys, unless the handler says otherwise */
        hr->notes.keys = t->vm->note_keys;
        hr->notes.nkeys = t->vm->nnote_keys;
        for (size_t i = 0; i < m.nparams; ++i)
            sk_co_note(&hr->notes, m.params[i].name, m.params[i].name_len, m.params[i].value, m.params[i].value_len);
    }
    hr->guard = h2o_mem_alloc_shared(&req->pool, sizeof(*hr->guard), on_req_dispose);
    *hr->guard = hr;
    ++t->inflight;

    sk_co_t *co = sk_co_new(t->vm, t->loop);
    memcpy(co->request_id, id.base, id.len); /* at most SK_REQUEST_ID_MAX, and the coroutine was zeroed */
    co->notes = &hr->notes;
    lua_rawgeti(co->L, LUA_REGISTRYINDEX, m.route->handler_ref);
    sk_request_push(co->L, req, id, path_len, &m);
    /* armed first: the handler may end inside sk_co_start, and on_handler_done disarms it */
    if (sk_config->deadline_ms != 0)
        sk_timer_start(t->loop, &hr->deadline, sk_config->deadline_ms, on_deadline);
    sk_co_start(co, 1, on_handler_done, hr);
    return 0;
}

void sk_http_init(h2o_globalconf_t *globalconf)
{
    static const char *classes[] = {"0xx", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (int i = 1; i < 6; ++i) {
        char labels[64];
        snprintf(labels, sizeof(labels), "route=\"unmatched\",status=\"%s\"", classes[i]);
        metrics.unmatched[i] = sk_metrics_counter("seckilld_http_requests_total", "HTTP requests by route and status", labels);
    }
    static const struct {
        const char *labels;
    } builtin[BUILTIN_COUNT] = {[BUILTIN_HEALTHZ_OK] = {"route=\"/healthz\",status=\"200\""},
                                [BUILTIN_HEALTHZ_DOWN] = {"route=\"/healthz\",status=\"503\""},
                                [BUILTIN_METRICS] = {"route=\"/metrics\",status=\"200\""}};
    for (int i = 0; i < BUILTIN_COUNT; ++i)
        metrics.builtin[i] =
            sk_metrics_counter("seckilld_http_requests_total", "HTTP requests by route and status", builtin[i].labels);
    metrics.latency_builtin = sk_metrics_histogram("seckilld_http_request_duration_seconds", "HTTP request latency by route",
                                                   "route=\"builtin\"", sk_metrics_latency_bounds, sk_metrics_latency_nbounds);
    metrics.lua_errors = sk_metrics_counter("seckilld_lua_errors_total", "Lua errors raised by request handlers", "");
    metrics.deadline_exceeded =
        sk_metrics_counter("seckilld_http_deadline_exceeded_total",
                           "Requests answered 503 because their handler had not answered by http.deadline_ms", "");
    metrics.shed = sk_metrics_counter(
        "seckilld_http_shed_total", "Requests answered 503 overloaded without running their handler, above http.max_inflight", "");

    h2o_hostconf_t *host = h2o_config_register_host(globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));
    handler->on_req = on_req;
}
