/*
 * lua_core.c: the core services every script gets — app.route, app.init, app.every, spawn, json, log, now, uuid,
 * sleep — and the request object.
 * sleep is the smallest example of the binding shape in core/co.h.
 */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include "../../core/op.h"
#include "../../core/request.h"
#include "../../core/log.h"
#include "../../core/vm.h"
#include "../../core/binding.h"

int luaopen_cjson(lua_State *L);

/* ===== app.route(method, pattern, fn) ===== */

/* app.route(method, pattern, fn [, options]): options is a table of
 *   shed = false   the route is never answered 503 "overloaded" above http.max_inflight (default true) */
static int l_route(lua_State *L)
{
    const char *method = luaL_checkstring(L, 1), *pattern = luaL_checkstring(L, 2), *err;
    luaL_checktype(L, 3, LUA_TFUNCTION);
    int shed = 1;
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 4) != 0) {
            if (lua_type(L, -2) != LUA_TSTRING || strcmp(lua_tostring(L, -2), "shed") != 0)
                return luaL_error(L, "app.route(\"%s\", \"%s\"): unknown option %s", method, pattern, luaL_tolstring(L, -2, NULL));
            luaL_argexpected(L, lua_type(L, -1) == LUA_TBOOLEAN, 4, "shed must be a boolean");
            shed = lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
    }
    sk_vm_t *vm = sk_vm_of(L);
    if (vm->role != SK_VM_ROLE_API)
        return luaL_error(L, "app.route: routes can only be declared by app.lua");
    lua_pushvalue(L, 3);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (sk_router_add(&vm->router, method, pattern, ref, &err) != 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        return luaL_error(L, "app.route(\"%s\", \"%s\"): %s", method, pattern, err);
    }
    vm->router.routes[vm->router.count - 1].never_shed = !shed;
    return 0;
}

/* app.access_log_fields{"item_id", ...}: the access log's note keys (at most SK_CO_MAX_NOTES words), in the order its
 * lines show them: a route parameter of one of these names, or req:annotate{key = value}, gives a request's value */
static int l_access_log_fields(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    sk_vm_t *vm = sk_vm_of(L);
    if (vm->role != SK_VM_ROLE_API)
        return luaL_error(L, "app.access_log_fields: only app.lua declares them");
    size_t n = lua_rawlen(L, 1);
    luaL_argcheck(L, n <= SK_CO_MAX_NOTES, 1, "too many fields");
    for (size_t i = 0; i != vm->nnote_keys; ++i)
        free(vm->note_keys[i]);
    vm->nnote_keys = 0;
    for (size_t i = 1; i <= n; ++i) {
        lua_rawgeti(L, 1, (lua_Integer)i);
        size_t len;
        const char *key = lua_tolstring(L, -1, &len);
        luaL_argcheck(L,
                      lua_type(L, -1) == LUA_TSTRING && len != 0 && len <= 31 &&
                          strspn(key, "abcdefghijklmnopqrstuvwxyz0123456789_") == len,
                      1, "each field must be 1-31 of a-z, 0-9, _");
        vm->note_keys[vm->nnote_keys++] = strdup(key);
        lua_pop(L, 1);
    }
    return 0;
}

/* ===== app.file(path): the text of a file of the scripts snapshot this VM was built from ===== */

/* Redis-side scripts live in their own .lua files beside the application; reading them from the snapshot (not the
 * disk) keeps every worker on the same version across a reload, like the modules themselves. */
static int l_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, "sk.scripts");
    sk_scripts_t *scripts = lua_touserdata(L, -1);
    lua_pop(L, 1);
    for (size_t i = 0; scripts != NULL && i != scripts->count; ++i) {
        if (strcmp(scripts->files[i].path, path) == 0) {
            lua_pushlstring(L, scripts->files[i].source, scripts->files[i].len);
            return 1;
        }
    }
    return luaL_error(L, "app.file: no file '%s' in the scripts snapshot", path);
}

/* ===== app.init(fn): fn runs once when the server starts (not on reloads), in a coroutine on worker 0 ===== */

static int l_init(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    sk_vm_t *vm = sk_vm_of(L);
    if (vm->role != SK_VM_ROLE_API || vm->init_ref != LUA_NOREF)
        return luaL_error(L, "app.init: only app.lua may declare it, once");
    lua_pushvalue(L, 1);
    vm->init_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* ===== app.every(name, interval_ms, fn): a background task, run by core/task.c on worker 0 ===== */

static int l_every(lua_State *L)
{
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    lua_Integer interval = luaL_checkinteger(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    /* the name is a metric label and a log word: keep it plain */
    static const char name_chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:";
    luaL_argcheck(L, len >= 1 && len <= 64 && strspn(name, name_chars) == len, 1,
                  "must be 1 to 64 letters, digits, '_', '-', '.' or ':'");
    luaL_argcheck(L, interval >= 1 && interval <= 86400000, 2, "must be between 1 and 86400000 ms");
    sk_vm_t *vm = sk_vm_of(L);
    int is_main = lua_pushthread(L);
    lua_pop(L, 1);
    if (vm->role != SK_VM_ROLE_API || !is_main)
        return luaL_error(L, "app.every: tasks can only be declared while app.lua loads");
    for (size_t i = 0; i < vm->ntasks; ++i)
        if (strcmp(vm->tasks[i].name, name) == 0)
            return luaL_error(L, "app.every(\"%s\"): a task of that name is already declared", name);
    vm->tasks = h2o_mem_realloc(vm->tasks, (vm->ntasks + 1) * sizeof(*vm->tasks));
    lua_pushvalue(L, 3);
    vm->tasks[vm->ntasks++] = (sk_vm_task_t){
        .name = h2o_strdup(NULL, name, len).base, .interval_ms = (uint64_t)interval, .ref = luaL_ref(L, LUA_REGISTRYINDEX)};
    return 0;
}

/* ===== spawn(fn, ...): fn(...) as a detached coroutine on this thread's loop, started after the caller yields ===== */

static void on_spawned_done(sk_co_t *co, int ok, int nres)
{
    (void)nres;
    char *where = co->data;
    if (!ok && !co->abandoned)
        sk_error("coroutine spawned at %s failed: %s", where, lua_tostring(co->L, -1));
    free(where);
}

static int l_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    sk_loop_t *loop = sk_loop_current();
    sk_vm_t *vm = sk_vm_of(L);
    if (loop == NULL || vm->role != SK_VM_ROLE_API)
        return luaL_error(L, "spawn: only on a worker (request handlers, app.init, tasks, spawned coroutines)");
    /* where it was spawned, for the error log of a coroutine that has no request to name it */
    char where[256] = "?";
    lua_Debug ar;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar))
        snprintf(where, sizeof(where), "%s:%d", ar.short_src, ar.currentline);
    int n = lua_gettop(L);
    sk_co_t *co = sk_co_new(vm, loop), *parent = sk_co_of(L);
    if (parent != NULL) /* its log lines name the request that spawned it */
        memcpy(co->request_id, parent->request_id, sizeof(co->request_id));
    luaL_checkstack(co->L, n, "spawn: too many arguments");
    lua_xmove(L, co->L, n); /* fn and its arguments */
    sk_co_start_later(co, n - 1, on_spawned_done, h2o_strdup(NULL, where, SIZE_MAX).base);
    lua_pushboolean(L, 1);
    return 1;
}

/* ===== log.debug/info/warn/error(...[, fields]) ===== */

#define MAX_FIELDS 32

static int cmp_fields(const void *a, const void *b)
{
    return strcmp(((const sk_log_field_t *)a)->key, ((const sk_log_field_t *)b)->key);
}

/* the fields table at idx into f, keys sorted (lines compare); the values' texts are anchored in a table pushed on
 * the stack (Lua strings never move, so the pointers hold while it is there). Stack effect: +1. */
static size_t read_fields(lua_State *L, int idx, sk_log_field_t *f)
{
    size_t n = 0;
    lua_createtable(L, MAX_FIELDS, 0);
    int anchor = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) { /* key, value */
        if (lua_type(L, -2) == LUA_TSTRING && n < MAX_FIELDS) {
            int vt = lua_type(L, -1);
            size_t len;
            const char *v = luaL_tolstring(L, -1, &len);
            f[n] = (sk_log_field_t){.key = lua_tostring(L, -3), /* a string key: no conversion, kept by the table */
                                    .value = v,
                                    .value_len = len,
                                    .raw = vt == LUA_TBOOLEAN || (vt == LUA_TNUMBER && isfinite(lua_tonumber(L, -2)))};
            lua_rawseti(L, anchor, (lua_Integer)++n);
        }
        lua_pop(L, 1);
    }
    qsort(f, n, sizeof(*f), cmp_fields);
    return n;
}

static int do_log(lua_State *L, int level)
{
    luaL_Buffer b;
    int n = lua_gettop(L), fields_idx = 0;
    if (n >= 2 && lua_type(L, n) == LUA_TTABLE) /* log.info("msg", {order_id = ...}) */
        fields_idx = n--;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; ++i) {
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
        if (i != n)
            luaL_addchar(&b, ' ');
    }
    luaL_pushresult(&b);
    lua_Debug ar;
    const char *where = "?";
    int line = 0;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar)) {
        where = ar.short_src;
        line = ar.currentline;
    }
    const char *msg = lua_tostring(L, -1);
    sk_log_field_t f[MAX_FIELDS];
    size_t nf = fields_idx != 0 ? read_fields(L, fields_idx, f) : 0;
    sk_log_fields(level, f, nf, "[lua] %s:%d: %s", where, line, msg);
    return 0;
}

static int l_log_debug(lua_State *L)
{
    return sk_log_level <= SK_LOG_DEBUG ? do_log(L, SK_LOG_DEBUG) : 0;
}
static int l_log_info(lua_State *L)
{
    return do_log(L, SK_LOG_INFO);
}
static int l_log_warn(lua_State *L)
{
    return do_log(L, SK_LOG_WARN);
}
static int l_log_error(lua_State *L)
{
    return do_log(L, SK_LOG_ERROR);
}

/* ===== now(): wall-clock milliseconds (float), for timestamps and sale windows ===== */

static int l_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6);
    return 1;
}

/* ===== uuid(): a random (version 4) UUID from the kernel's CSPRNG ===== */

static int l_uuid(lua_State *L)
{
    /* per-thread buffer: one getrandom(2) per 256 ids instead of one per id */
    static __thread unsigned char pool[4096];
    static __thread size_t used = sizeof(pool);
    if (used == sizeof(pool)) {
        size_t got = 0;
        while (got < sizeof(pool)) {
            ssize_t r = getrandom(pool + got, sizeof(pool) - got, 0);
            if (r < 0)
                return luaL_error(L, "uuid: getrandom failed");
            got += (size_t)r;
        }
        used = 0;
    }
    unsigned char *b = pool + used;
    used += 16;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    static const char hex[] = "0123456789abcdef";
    char out[36];
    for (int i = 0, o = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    lua_pushlstring(L, out, sizeof(out));
    return 1;
}

/* ===== sleep(ms): parks the coroutine on a loop timer ===== */

typedef struct st_sleep_op_t {
    sk_op_t super;
    sk_timer_t timer;
} sleep_op_t;

static int push_sleep(lua_State *L, void *arg)
{
    (void)L;
    free(arg);
    return 0;
}

static void on_sleep_timeout(sk_timer_t *timer)
{
    sleep_op_t *op = H2O_STRUCT_FROM_MEMBER(sleep_op_t, timer, timer);
    sk_op_wake(&op->super, push_sleep);
}

static void cancel_sleep(void *arg)
{
    sleep_op_t *op = arg;
    sk_timer_stop(op->super.co->loop, &op->timer);
    free(op);
}

static int l_sleep(lua_State *L)
{
    lua_Number ms = luaL_checknumber(L, 1);
    luaL_argcheck(L, ms >= 0 && ms <= 86400000, 1, "must be between 0 and 86400000 ms");
    sk_co_t *co = sk_co_check(L);
    sleep_op_t *op = h2o_mem_alloc(sizeof(*op));
    *op = (sleep_op_t){.super.co = co};
    sk_timer_start(co->loop, &op->timer, (uint64_t)ms, on_sleep_timeout);
    return sk_op_yield(L, &op->super, cancel_sleep);
}

/* ===== the request object's methods (the object itself is built by core/http.c) ===== */

static const char request_lua[] = "local json = ...\n"
                                  "local request = {}\n"
                                  "function request:json()\n"
                                  "    if self._json == nil then\n"
                                  "        local ok, v = pcall(json.decode, self.body or '')\n"
                                  "        if not ok then return nil, 'invalid json' end\n"
                                  "        self._json = v\n"
                                  "    end\n"
                                  "    return self._json\n"
                                  "end\n"
                                  "return request\n";

/* req:annotate{key = value, ...}: what the access log shows of this request, for the keys app.access_log_fields
 * declared (others are ignored). Cheap and harmless anywhere: a no-op when the access log is off or outside a
 * request's handler (a spawned coroutine). */
static int l_annotate(lua_State *L)
{
    luaL_checktype(L, 2, LUA_TTABLE);
    sk_co_t *co = sk_co_of(L);
    if (!sk_log_access_on || co == NULL || co->notes == NULL)
        return 0;
    for (size_t i = 0; i != co->notes->nkeys; ++i) {
        int t = lua_getfield(L, 2, co->notes->keys[i]);
        if (t == LUA_TSTRING || t == LUA_TNUMBER) {
            size_t len;
            const char *v = lua_tolstring(L, -1, &len);
            snprintf(co->notes->values[i], sizeof(co->notes->values[i]), "%.*s", (int)len, v);
        }
        lua_pop(L, 1);
    }
    return 0;
}

static void open_core(lua_State *L)
{
    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    lua_setglobal(L, "json");

    static const luaL_Reg app[] = {{"route", l_route}, {"access_log_fields", l_access_log_fields},
                                   {"init", l_init},   {"every", l_every},
                                   {"file", l_file},   {NULL, NULL}};
    luaL_newlib(L, app);
    lua_setglobal(L, "app");

    static const luaL_Reg log[] = {
        {"debug", l_log_debug}, {"info", l_log_info}, {"warn", l_log_warn}, {"error", l_log_error}, {NULL, NULL}};
    luaL_newlib(L, log);
    lua_setglobal(L, "log");

    lua_register(L, "now", l_now);
    lua_register(L, "sleep", l_sleep);
    lua_register(L, "spawn", l_spawn);
    lua_register(L, "uuid", l_uuid);

    /* registry["sk.request"] = the metatable of request objects: its __index finds a method, or builds a field on its
     * first read (core/request.c) */
    if (luaL_loadbufferx(L, request_lua, sizeof(request_lua) - 1, "=request", "t") != LUA_OK)
        lua_error(L);
    lua_getglobal(L, "json");
    lua_call(L, 1, 1);
    lua_pushcfunction(L, l_annotate);
    lua_setfield(L, -2, "annotate");
    lua_pushcfunction(L, sk_request_header);
    lua_setfield(L, -2, "header");
    lua_createtable(L, 0, 1);
    lua_insert(L, -2);
    lua_pushcclosure(L, sk_request_index, 1);
    lua_setfield(L, -2, "__index");
    lua_setfield(L, LUA_REGISTRYINDEX, "sk.request");
}

const sk_binding_t sk_binding_core = {.name = "core", .open = open_core};
