/*
 * http.c: the h2o handler. Built-in routes (/healthz, /metrics) are answered in C; every other request is matched
 * against the routes of the serving thread's current VM (http.h) and runs as a coroutine. The response is sent
 * when the coroutine ends; if the client went away meanwhile, the coroutine still completes (a purchase is not
 * aborted by a disconnect) and only the response is dropped. A handler that has not answered by http.deadline_ms is answered
 * 503 by the core at once, and then runs on detached exactly like a handler whose client went away.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "co.h"
#include "url.h"
#include "config.h"
#include "health.h"
#include "http.h"
#include "log.h"
#include "metrics.h"

typedef struct st_http_req_t {
    h2o_req_t *req; /* NULL once h2o disposed the request */
    struct st_http_req_t **guard;
    sk_http_thread_t *thread;
    sk_route_t *route;
    struct timespec started;
    sk_timer_t deadline;
    int timed_out; /* answered 503 by the deadline; the handler runs on detached */
} http_req_t;

static struct {
    sk_counter_t *unmatched[6]; /* by status class */
    sk_histogram_t *latency_builtin;
    sk_counter_t *lua_errors, *deadline_exceeded;
} metrics;

static const char json_type[] = "application/json; charset=utf-8";

static __thread sk_http_thread_t *current_thread;

void sk_http_thread_init(sk_http_thread_t *thread)
{
    current_thread = thread;
}

static const char *reason_of(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

static void start_response(h2o_req_t *req, int status, const char *content_type)
{
    req->res.status = status;
    req->res.reason = reason_of(status);
    if (content_type != NULL)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
    if (current_thread != NULL && current_thread->draining)
        req->http1_is_persistent = 0;
}

/* h2o 2.2.5 falls back to chunked encoding unless the length is known before the first send */
static void send_body(h2o_req_t *req, const char *body, size_t len)
{
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

/* appends s to buf as a JSON string body (quotes and escapes) */
static size_t json_escape(char *dst, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s != '\0' && o + 7 < cap; ++s) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = c;
        } else if (c < 0x20) {
            o += snprintf(dst + o, cap - o, "\\u%04x", c);
        } else {
            dst[o++] = c;
        }
    }
    dst[o] = '\0';
    return o;
}

void sk_http_send_error(h2o_req_t *req, int status, const char *code, const char *message)
{
    char esc[512], body[700];
    json_escape(esc, sizeof(esc), message);
    int n = snprintf(body, sizeof(body), "{\"ok\":false,\"error\":\"%s\",\"message\":\"%s\"}", code, esc);
    start_response(req, status, json_type);
    send_body(req, body, n);
}

static double elapsed_s(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) + (now.tv_nsec - since->tv_nsec) / 1e9;
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

static void count_builtin(const char *name, int status, const struct timespec *started)
{
    char labels[128];
    snprintf(labels, sizeof(labels), "route=\"%s\",status=\"%d\"", name, status);
    /* built-in routes are few and cold: the registry lookup under its mutex is fine here */
    sk_counter_inc(sk_metrics_counter("seckilld_http_requests_total", "HTTP requests by route and status", labels));
    sk_histogram_observe(metrics.latency_builtin, elapsed_s(started));
}

/* ===== building the request object ===== */

/* pushes the percent-decoded string; '+' is a space only in query strings */
static void push_decoded(lua_State *L, const char *s, size_t len, int plus_is_space)
{
    luaL_Buffer b;
    char *dst = luaL_buffinitsize(L, &b, len);
    luaL_pushresultsize(&b, sk_url_decode(dst, s, len, plus_is_space));
}

static void push_query(lua_State *L, const char *q, size_t len)
{
    lua_createtable(L, 0, 4);
    const char *end = q + len;
    while (q < end) {
        const char *amp = memchr(q, '&', end - q);
        const char *pend = amp != NULL ? amp : end;
        const char *eq = memchr(q, '=', pend - q);
        if (pend > q) {
            push_decoded(L, q, (eq != NULL ? eq : pend) - q, 1);
            if (eq != NULL)
                push_decoded(L, eq + 1, pend - eq - 1, 1);
            else
                lua_pushliteral(L, "");
            lua_rawset(L, -3);
        }
        q = pend + 1;
    }
}

static void push_request(lua_State *L, h2o_req_t *req, size_t path_len, sk_route_match_t *m)
{
    lua_createtable(L, 0, 8);
    lua_pushlstring(L, req->method.base, req->method.len);
    lua_setfield(L, -2, "method");
    lua_pushlstring(L, req->path.base, path_len);
    lua_setfield(L, -2, "path");

    lua_createtable(L, 0, (int)m->nparams);
    for (size_t i = 0; i < m->nparams; ++i) {
        lua_pushlstring(L, m->params[i].name, m->params[i].name_len);
        push_decoded(L, m->params[i].value, m->params[i].value_len, 0);
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "params");

    if (path_len < req->path.len)
        push_query(L, req->path.base + path_len + 1, req->path.len - path_len - 1);
    else
        lua_createtable(L, 0, 0);
    lua_setfield(L, -2, "query");

    lua_createtable(L, 0, (int)req->headers.size);
    for (size_t i = 0; i < req->headers.size; ++i) {
        h2o_header_t *h = req->headers.entries + i;
        lua_pushlstring(L, h->name->base, h->name->len);
        if (lua_rawget(L, -2) == LUA_TSTRING) {
            /* a repeated header: join the values as HTTP does */
            lua_pushlstring(L, h->name->base, h->name->len);
            lua_insert(L, -2);
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, h->value.base, h->value.len);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, h->name->base, h->name->len);
            lua_pushlstring(L, h->value.base, h->value.len);
        }
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");

    lua_pushlstring(L, req->entity.base != NULL ? req->entity.base : "", req->entity.len);
    lua_setfield(L, -2, "body");

    lua_getfield(L, LUA_REGISTRYINDEX, "sk.request");
    lua_setmetatable(L, -2);
}

/* ===== sending what the handler returned ===== */

static void add_headers(lua_State *L, int idx, h2o_req_t *req, int *has_type)
{
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) == LUA_TSTRING && (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)) {
            size_t nlen, vlen;
            const char *name = lua_tolstring(L, -2, &nlen);
            const char *value = lua_tolstring(L, -1, &vlen);
            char *lname = h2o_mem_alloc_pool(&req->pool, nlen);
            for (size_t i = 0; i < nlen; ++i)
                lname[i] = (name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i];
            if (nlen == 12 && memcmp(lname, "content-type", 12) == 0)
                *has_type = 1;
            char *v = h2o_mem_alloc_pool(&req->pool, vlen);
            memcpy(v, value, vlen);
            h2o_add_header_by_str(&req->pool, &req->res.headers, lname, nlen, 1, NULL, v, vlen);
        }
        lua_pop(L, 1);
    }
}

/* sends the coroutine's results: (status, body, headers), or (table) meaning 200 with a JSON body */
static int send_results(http_req_t *hr, lua_State *L, int nres)
{
    h2o_req_t *req = hr->req;
    int base = lua_gettop(L) - nres + 1;
    int status = 200, body_idx = base, headers_idx = 0;
    if (nres >= 1 && lua_type(L, base) == LUA_TNUMBER) {
        int isint;
        lua_Integer s = lua_tointegerx(L, base, &isint);
        if (!isint || s < 100 || s > 599) {
            sk_error("%s %s: handler returned an invalid status", hr->route->method, hr->route->pattern);
            return -1;
        }
        status = (int)s;
        body_idx = base + 1;
    } else if (nres == 0 || lua_type(L, base) != LUA_TTABLE) {
        sk_error("%s %s: handler must return status, body[, headers]", hr->route->method, hr->route->pattern);
        return -1;
    }
    if (body_idx + 1 <= lua_gettop(L) && lua_istable(L, body_idx + 1))
        headers_idx = body_idx + 1;

    size_t len = 0;
    const char *body = "";
    int is_json = 0;
    if (body_idx <= lua_gettop(L)) {
        switch (lua_type(L, body_idx)) {
        case LUA_TTABLE:
            lua_getglobal(L, "json");
            lua_getfield(L, -1, "encode");
            lua_pushvalue(L, body_idx);
            if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
                sk_error("%s %s: cannot encode the response body: %s", hr->route->method, hr->route->pattern, lua_tostring(L, -1));
                return -1;
            }
            body = lua_tolstring(L, -1, &len);
            is_json = 1;
            break;
        case LUA_TSTRING:
            body = lua_tolstring(L, body_idx, &len);
            break;
        case LUA_TNIL:
            break;
        default:
            sk_error("%s %s: response body must be a table, a string or nil", hr->route->method, hr->route->pattern);
            return -1;
        }
    }
    if (req == NULL)
        return 0; /* the client went away: the handler ran to completion, the response has nowhere to go */
    int has_type = 0;
    start_response(req, status, NULL);
    if (headers_idx != 0)
        add_headers(L, headers_idx, req, &has_type);
    if (!has_type)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       is_json || len == 0 ? json_type : "text/plain; charset=utf-8",
                       is_json || len == 0 ? sizeof(json_type) - 1 : 25);
    sk_counter_inc(route_counter(hr->route, status));
    send_body(req, body, len);
    return 0;
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
    sk_http_send_error(req, 503, "unavailable", "deadline exceeded");
}

static void on_handler_done(sk_co_t *co, int ok, int nres)
{
    http_req_t *hr = co->data;
    sk_timer_stop(hr->thread->loop, &hr->deadline);
    if (co->abandoned) {
        /* shutdown gave up on it: the buyer gets a definite "try again" rather than a dropped connection */
        if (hr->req != NULL) {
            sk_counter_inc(route_counter(hr->route, 503));
            sk_http_send_error(detach(hr), 503, "unavailable", "server stopping");
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
    if (!ok || send_results(hr, co->L, nres) != 0) {
        if (hr->req != NULL) {
            sk_counter_inc(route_counter(hr->route, 500));
            sk_http_send_error(hr->req, 500, "internal", "internal server error");
        }
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

static int serve_builtin(h2o_req_t *req, size_t path_len, const struct timespec *started)
{
#define IS(lit) (path_len == sizeof(lit) - 1 && memcmp(req->path.base, lit, path_len) == 0)
    int is_get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    if (IS("/healthz") && is_get) {
        char body[512];
        int up = sk_health_render(body, sizeof(body));
        start_response(req, up ? 200 : 503, json_type);
        send_body(req, body, strlen(body));
        count_builtin("/healthz", up ? 200 : 503, started);
        return 1;
    }
    if (IS("/metrics") && is_get) {
        size_t len;
        char *text = sk_metrics_render(&len);
        start_response(req, 200, "text/plain; version=0.0.4; charset=utf-8");
        send_body(req, text, len);
        free(text);
        count_builtin("/metrics", 200, started);
        return 1;
    }
    if (IS("/_c/hello") && is_get && sk_config->bench_routes) {
        /* the C-only twin of the benchmark's Lua route: same answer, no VM */
        static const char body[] = "{\"ok\":true,\"hello\":\"world\"}";
        start_response(req, 200, json_type);
        send_body(req, body, sizeof(body) - 1);
        return 1;
    }
#undef IS
    return 0;
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

    if (serve_builtin(req, path_len, &started))
        return 0;

    if (req->entity.len > sk_config->max_body) {
        sk_counter_inc(metrics.unmatched[status_class(413)]);
        sk_http_send_error(req, 413, "too_large", "request body over the limit");
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
        sk_http_send_error(req, status, status == 404 ? "not_found" : "method_not_allowed",
                           status == 404 ? "no route for this path" : "method not allowed for this path");
        return 0;
    }
    if (m.route->latency == NULL) {
        char labels[300];
        snprintf(labels, sizeof(labels), "route=\"%s %s\"", m.route->method, m.route->pattern);
        m.route->latency = sk_metrics_histogram("seckilld_http_request_duration_seconds", "HTTP request latency by route", labels,
                                                sk_metrics_latency_bounds, sk_metrics_latency_nbounds);
    }

    http_req_t *hr = h2o_mem_alloc(sizeof(*hr));
    *hr = (http_req_t){.req = req, .thread = t, .route = m.route, .started = started};
    hr->guard = h2o_mem_alloc_shared(&req->pool, sizeof(*hr->guard), on_req_dispose);
    *hr->guard = hr;
    ++t->inflight;

    sk_co_t *co = sk_co_new(t->vm, t->loop);
    lua_rawgeti(co->L, LUA_REGISTRYINDEX, m.route->handler_ref);
    push_request(co->L, req, path_len, &m);
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
    metrics.latency_builtin = sk_metrics_histogram("seckilld_http_request_duration_seconds", "HTTP request latency by route",
                                                   "route=\"builtin\"", sk_metrics_latency_bounds, sk_metrics_latency_nbounds);
    metrics.lua_errors = sk_metrics_counter("seckilld_lua_errors_total", "Lua errors raised by request handlers", "");
    metrics.deadline_exceeded =
        sk_metrics_counter("seckilld_http_deadline_exceeded_total",
                           "Requests answered 503 because their handler had not answered by http.deadline_ms", "");

    h2o_hostconf_t *host = h2o_config_register_host(globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));
    handler->on_req = on_req;
}
