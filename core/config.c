/*
 * config.c: the Lua config file plus SECKILLD_* environment overrides (twelve-factor: any deployment or test
 * points the server elsewhere without editing the file), then the defaults, all from the rows (config_check.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <h2o/memory.h>
#include "config.h"
#include "log.h"

sk_config_t *sk_config;

char *sk_read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return NULL;
    size_t cap = 4096, n = 0, r;
    char *buf = h2o_mem_alloc(cap + 1);
    while ((r = fread(buf + n, 1, cap - n, fp)) > 0) {
        n += r;
        if (n == cap)
            buf = h2o_mem_realloc(buf, (cap *= 2) + 1);
    }
    fclose(fp);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* the rows the table is read by: cfg->keys, or the core's alone when the caller gave none (tools, unit tests) */
static const sk_config_key_t *const *sets_of(const sk_config_t *cfg)
{
    static const sk_config_key_t *const core_only[] = {sk_config_core_keys, NULL};
    return cfg->keys != NULL ? cfg->keys : core_only;
}

int sk_config_push(lua_State *L, const sk_config_t *cfg)
{
    char chunkname[1024], err[256];
    snprintf(chunkname, sizeof(chunkname), "@%s", cfg->path);
    if (luaL_loadbufferx(L, cfg->source, cfg->source_len, chunkname, "t") != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK)
        return -1;
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_pushfstring(L, "%s:1: the config file must return a table", cfg->path);
        return -1;
    }
    if (sk_config_apply_env(L, -1, sets_of(cfg), err, sizeof(err)) != 0) {
        lua_pop(L, 1);
        lua_pushstring(L, err);
        return -1;
    }
    /* before the check, which sees them too: every default passes its own row (tests/unit/bindings/all.c) */
    sk_config_fill_defaults(L, -1, sets_of(cfg));
    return 0;
}

/* pushes cfg value at dotted path, or nil */
void sk_config_push_value(sk_config_t *cfg, const char *path)
{
    lua_State *L = cfg->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, cfg->ref);
    const char *dot;
    while ((dot = strchr(path, '.')) != NULL) {
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            lua_pushnil(L);
            return;
        }
        lua_pushlstring(L, path, dot - path);
        lua_gettable(L, -2);
        lua_remove(L, -2);
        path = dot + 1;
    }
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_pushnil(L);
        return;
    }
    lua_getfield(L, -1, path);
    lua_remove(L, -2);
}

/* pushes the value at path (or nil); a path no row declares is the caller's bug, found the first time it runs */
static void push_declared(sk_config_t *cfg, const char *path)
{
    if (sk_config_key_find(sets_of(cfg), path) == NULL) {
        sk_error("config: %s is read but not declared (core/config_check.h)", path);
        abort();
    }
    sk_config_push_value(cfg, path);
}

int sk_config_isset(sk_config_t *cfg, const char *path)
{
    push_declared(cfg, path);
    int set = !lua_isnil(cfg->L, -1);
    lua_pop(cfg->L, 1);
    return set;
}

const char *sk_config_string(sk_config_t *cfg, const char *path)
{
    push_declared(cfg, path);
    /* the string stays alive: it is referenced by the config table, which is never modified after load */
    const char *s = lua_type(cfg->L, -1) == LUA_TSTRING ? lua_tostring(cfg->L, -1) : NULL;
    lua_pop(cfg->L, 1);
    return s;
}

long long sk_config_int(sk_config_t *cfg, const char *path)
{
    push_declared(cfg, path);
    int isnum;
    lua_Integer n = lua_tointegerx(cfg->L, -1, &isnum);
    lua_pop(cfg->L, 1);
    if (!isnum) {
        /* the check lets only integers through and fills the default in: this row has none */
        sk_error("config: %s is unset and its row has no default (read it after sk_config_isset)", path);
        abort();
    }
    return n;
}

int sk_config_bool(sk_config_t *cfg, const char *path)
{
    push_declared(cfg, path);
    int v = lua_toboolean(cfg->L, -1);
    lua_pop(cfg->L, 1);
    return v;
}

/* ===== the core's keys (the bindings' and the scripts' come from the caller) ===== */

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"text", "json", NULL};

static const sk_config_key_t http_keys[] = {
    SK_CONF_RANGED("max_body", SK_CONF_INT, 1, 1 << 30, .def = "16384", .help = "larger request bodies are answered 413"),
    SK_CONF_RANGED("request_timeout_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY, .def = "10000", .env = "SECKILLD_REQUEST_TIMEOUT_MS",
                   .help = "a client must send a whole request (and may idle) this long at most"),
    SK_CONF_RANGED("shutdown_timeout_ms", SK_CONF_INT, 0, SK_CONF_MS_DAY, .def = "10000",
                   .help = "how long SIGTERM waits for the requests in flight"),
    SK_CONF_RANGED("deadline_ms", SK_CONF_INT, 0, SK_CONF_MS_DAY, .def = "10000", .env = "SECKILLD_DEADLINE_MS",
                   .help = "a handler not done by then is answered 503; 0: no deadline"),
    /* 1024 a worker: four times what the benchmark's 256 connections put on it at full speed, so a healthy sale never
     * meets it, while a flood beyond it (whose last requests would only time out at http.deadline_ms after holding a
     * coroutine, a request pool and a place in every backend's queue) is told to come back at once instead */
    SK_CONF_RANGED("max_inflight", SK_CONF_INT, 0, 1000000, .def = "1024", .env = "SECKILLD_MAX_INFLIGHT",
                   .help = "per worker: above it a request is answered 503 overloaded; 0: unlimited"),
    SK_CONF_KEY("bench_routes", SK_CONF_BOOL, .def = "false",
                .help = "serve the benchmark's routes (or set SECKILLD_BENCH_ROUTES to anything)"),
    {NULL},
};

const sk_config_key_t sk_config_core_keys[] = {
    /* HOST:PORT, parsed by check_values */
    SK_CONF_KEY("listen", SK_CONF_STRING, .def = "127.0.0.1:8080", .env = "SECKILLD_LISTEN", .help = "HOST:PORT to serve HTTP on"),
    /* 0: one per core, computed by read_values */
    SK_CONF_RANGED("workers", SK_CONF_INT, 0, 64, .def = "0", .env = "SECKILLD_WORKERS", .help = "worker threads; 0: one per core"),
    SK_CONF_RANGED("scripts", SK_CONF_STRING, 1, 4096, .def = "scripts", .env = "SECKILLD_SCRIPTS",
                   .help = "the folder of the Lua application"),
    {.name = "log_level",
     .types = SK_CONF_STRING,
     .choices = log_levels,
     .def = "info",
     .env = "SECKILLD_LOG_LEVEL",
     .help = "the least level logged"},
    {.name = "log_format",
     .types = SK_CONF_STRING,
     .choices = log_formats,
     .def = "text",
     .env = "SECKILLD_LOG_FORMAT",
     .help = "one line per record, as text or as a JSON object"},
    SK_CONF_RANGED("access_log", SK_CONF_BOOL | SK_CONF_STRING, 1, 4096,
                   .help = "a line per response: true to stderr, a path appended to; unset: off"),
    {.name = "http", .types = SK_CONF_TABLE, .keys = http_keys},
    {NULL},
};

/* ===== loading ===== */

static int parse_listen(sk_config_t *cfg, const char *s)
{
    const char *colon = strrchr(s, ':');
    char *end;
    long port = colon != NULL ? strtol(colon + 1, &end, 10) : -1;
    if (colon == NULL || colon == s || colon[1] == '\0' || *end != '\0' || port <= 0 || port > 65535)
        return -1;
    cfg->listen_host = strndup(s, colon - s);
    cfg->listen_port = (unsigned short)port;
    return 0;
}

int sk_config_is_loopback(const char *host)
{
    struct in_addr a4;
    if (strcasecmp(host, "localhost") == 0 || strcmp(host, "::1") == 0 || strcmp(host, "[::1]") == 0)
        return 1;
    return inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

/* the checks that span keys, or parse a value: run after the schema's, so that a value of the wrong type was
 * already reported and the defaults are used here instead */
static void check_values(sk_config_t *cfg, sk_config_problems_t *p)
{
    lua_State *L = cfg->L;
    sk_config_push_value(cfg, "listen");
    const char *listen = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : sk_config_key_find(sets_of(cfg), "listen")->def;
    if (parse_listen(cfg, listen) != 0)
        sk_config_problem(p, cfg->path, "listen", "must be HOST:PORT with a port from 1 to 65535, got \"%s\"", listen);
    lua_pop(L, 1);
    /* the default token on a reachable address is an open admin API */
    sk_config_push_value(cfg, "admin_token");
    if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), SK_CONFIG_DEFAULT_ADMIN_TOKEN) == 0 &&
        cfg->listen_host != NULL && !sk_config_is_loopback(cfg->listen_host))
        sk_config_problem(p, cfg->path, "admin_token",
                          "the default token \"%s\" is refused unless listen is a loopback address (127.0.0.0/8, ::1, "
                          "localhost), and listen is \"%s\"; set admin_token (or SECKILLD_ADMIN_TOKEN)",
                          SK_CONFIG_DEFAULT_ADMIN_TOKEN, listen);
    lua_pop(L, 1);
}

/* the values of a config without problems, read once */
static void read_values(sk_config_t *cfg)
{
    long long workers = sk_config_int(cfg, "workers");
    if (workers <= 0)
        workers = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = (unsigned)(workers > 64 ? 64 : workers);
    cfg->scripts = strdup(sk_config_string(cfg, "scripts"));
    cfg->max_body = (size_t)sk_config_int(cfg, "http.max_body");
    cfg->req_timeout_ms = (unsigned)sk_config_int(cfg, "http.request_timeout_ms");
    cfg->shutdown_timeout_ms = (unsigned)sk_config_int(cfg, "http.shutdown_timeout_ms");
    cfg->deadline_ms = (unsigned)sk_config_int(cfg, "http.deadline_ms");
    cfg->max_inflight = (unsigned)sk_config_int(cfg, "http.max_inflight");
    cfg->bench_routes = sk_config_bool(cfg, "http.bench_routes") || getenv("SECKILLD_BENCH_ROUTES") != NULL;
    sk_log_level = sk_log_level_from_name(sk_config_string(cfg, "log_level"));
    sk_log_format = strcasecmp(sk_config_string(cfg, "log_format"), "json") == 0 ? SK_LOG_JSON : SK_LOG_TEXT;
    sk_config_push_value(cfg, "access_log");
    cfg->access_log = lua_type(cfg->L, -1) == LUA_TSTRING ? strdup(lua_tostring(cfg->L, -1)) : NULL;
    cfg->access_log_on = cfg->access_log != NULL || lua_toboolean(cfg->L, -1);
    lua_pop(cfg->L, 1);
}

static int cmp_lines(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* text's n lines ("a\nb\n") into out, sorted (a table's keys come in no order; sorted, one key's problems stand
 * together and two runs print the same), without the last newline */
static void sort_lines(char *text, size_t n, char *out, size_t outlen)
{
    char **lines = h2o_mem_alloc(n * sizeof(*lines));
    size_t i = 0;
    for (char *s = text, *nl; i < n && (nl = strchr(s, '\n')) != NULL; s = nl + 1) {
        *nl = '\0';
        lines[i++] = s;
    }
    qsort(lines, i, sizeof(*lines), cmp_lines);
    size_t o = 0;
    out[0] = '\0';
    for (size_t j = 0; j < i && o < outlen; ++j)
        o += snprintf(out + o, outlen - o, "%s%s", j ? "\n" : "", lines[j]);
    free(lines);
}

size_t sk_config_check_loaded(sk_config_t *cfg, char *err, size_t errlen)
{
    sk_config_problems_t problems = {NULL};
    /* every problem, not the first: the schema, then what spans keys */
    lua_rawgeti(cfg->L, LUA_REGISTRYINDEX, cfg->ref);
    if (cfg->keys != NULL) {
        sk_config_check(cfg->L, -1, cfg->keys, cfg->path, &problems);
    } else {
        for (const sk_config_key_t *k = sk_config_core_keys; k->name != NULL; ++k) {
            lua_getfield(cfg->L, -1, k->name);
            if (!lua_isnil(cfg->L, -1))
                sk_config_check_value(cfg->L, -1, k, cfg->path, k->name, &problems);
            lua_pop(cfg->L, 1);
        }
    }
    lua_pop(cfg->L, 1);
    check_values(cfg, &problems);
    if (problems.count != 0) {
        sort_lines(problems.text, problems.count, err, errlen);
        free(problems.text);
    }
    return problems.count;
}

sk_config_t *sk_config_load(const char *path, const sk_config_key_t *const *keys, char *err, size_t errlen)
{
    sk_config_t *cfg = h2o_mem_alloc(sizeof(*cfg));
    *cfg = (sk_config_t){.path = strdup(path), .ref = LUA_NOREF, .keys = keys};
    if ((cfg->source = sk_read_file(path, &cfg->source_len)) == NULL) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        goto Error;
    }
    cfg->L = luaL_newstate();
    luaL_openlibs(cfg->L);
    if (sk_config_push(cfg->L, cfg) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(cfg->L, -1));
        goto Error;
    }
    cfg->ref = luaL_ref(cfg->L, LUA_REGISTRYINDEX);
    if (sk_config_check_loaded(cfg, err, errlen) != 0)
        goto Error;
    read_values(cfg);
    return cfg;
Error:
    sk_config_free(cfg);
    return NULL;
}

void sk_config_free(sk_config_t *cfg)
{
    if (cfg->L != NULL)
        lua_close(cfg->L);
    free(cfg->path);
    free(cfg->source);
    free(cfg->listen_host);
    free(cfg->scripts);
    free(cfg->access_log);
    free(cfg);
}
