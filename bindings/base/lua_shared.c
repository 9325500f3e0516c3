/*
 * lua_shared.c: `shared`, the Lua face of the process-wide store (see shared_store.h). None of these yield.
 *   shared.get(key)                      -> value or nil
 *   shared.set(key, value[, ttl_ms])     -> true, or nil, "no memory"  (value nil deletes)
 *   shared.incr(key, delta[, init[, ttl_ms]]) -> new integer, or nil, "not an integer" / "no memory"
 *   shared.delete(key)                   -> true
 *   shared.counters(name, n)             -> the counter array `name` of n cells (made, zeroed, on first use), or nil,
 *                                           "no memory"; shared.counters(name) -> the array if it exists, else nil
 *   c:add(i[, d = 1]) -> new value; c:get(i) -> value; c:size() -> n   (i is 1..n; one atomic operation, no lock)
 */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/config.h"
#include "../../core/binding.h"
#include "shared_store.h"

static void push_value(lua_State *L, sk_shared_value_t *v)
{
    switch (v->type) {
    case SK_SHARED_NIL:
        lua_pushnil(L);
        break;
    case SK_SHARED_BOOL:
        lua_pushboolean(L, v->b);
        break;
    case SK_SHARED_INT:
        lua_pushinteger(L, v->i);
        break;
    case SK_SHARED_NUM:
        lua_pushnumber(L, v->n);
        break;
    case SK_SHARED_STR:
        lua_pushlstring(L, v->s.base, v->s.len);
        free(v->s.base);
        break;
    }
}

static uint64_t opt_ttl(lua_State *L, int idx)
{
    lua_Integer ttl = luaL_optinteger(L, idx, 0);
    luaL_argcheck(L, ttl >= 0, idx, "ttl must not be negative");
    return (uint64_t)ttl;
}

static int l_get(lua_State *L)
{
    size_t len;
    const char *key = luaL_checklstring(L, 1, &len);
    sk_shared_value_t v;
    sk_shared_get(key, len, &v);
    push_value(L, &v);
    return 1;
}

static int l_set(lua_State *L)
{
    size_t len;
    const char *key = luaL_checklstring(L, 1, &len);
    sk_shared_value_t v = {.type = SK_SHARED_NIL};
    switch (lua_type(L, 2)) {
    case LUA_TNIL:
    case LUA_TNONE:
        break;
    case LUA_TBOOLEAN:
        v.type = SK_SHARED_BOOL;
        v.b = lua_toboolean(L, 2);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, 2)) {
            v.type = SK_SHARED_INT;
            v.i = lua_tointeger(L, 2);
        } else {
            v.type = SK_SHARED_NUM;
            v.n = lua_tonumber(L, 2);
        }
        break;
    case LUA_TSTRING:
        v.type = SK_SHARED_STR;
        v.s.base = (char *)lua_tolstring(L, 2, &v.s.len);
        break;
    default:
        return luaL_argerror(L, 2, "nil, boolean, number or string expected");
    }
    if (sk_shared_set(key, len, &v, opt_ttl(L, 3)) != 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "no memory");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_incr(lua_State *L)
{
    size_t len;
    const char *key = luaL_checklstring(L, 1, &len);
    lua_Integer delta = luaL_checkinteger(L, 2), init = luaL_optinteger(L, 3, 0);
    int64_t result;
    switch (sk_shared_incr(key, len, delta, init, opt_ttl(L, 4), &result)) {
    case 0:
        lua_pushinteger(L, result);
        return 1;
    case -1:
        lua_pushnil(L);
        lua_pushliteral(L, "not an integer");
        return 2;
    default:
        lua_pushnil(L);
        lua_pushliteral(L, "no memory");
        return 2;
    }
}

static int l_delete(lua_State *L)
{
    size_t len;
    const char *key = luaL_checklstring(L, 1, &len);
    sk_shared_value_t v = {.type = SK_SHARED_NIL};
    sk_shared_set(key, len, &v, 0);
    lua_pushboolean(L, 1);
    return 1;
}

/* ===== counter arrays ===== */

#define COUNTERS_MT "sk.shared.counters"

static int l_counters(lua_State *L)
{
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    int create = !lua_isnoneornil(L, 2);
    lua_Integer n = create ? luaL_checkinteger(L, 2) : 0;
    luaL_argcheck(L, !create || (n >= 1 && n <= SK_SHARED_MAX_CELLS), 2, "1..256 cells");
    const char *err;
    sk_shared_counters_t *c = sk_shared_counters(name, len, (size_t)n, create, &err);
    if (c == NULL) {
        if (err != NULL && strcmp(err, "size mismatch") == 0)
            return luaL_error(L, "shared.counters: %s exists with another number of cells", name);
        lua_pushnil(L);
        if (err == NULL)
            return 1;
        lua_pushstring(L, err);
        return 2;
    }
    sk_shared_counters_t **ud = lua_newuserdatauv(L, sizeof(*ud), 0);
    *ud = c;
    luaL_setmetatable(L, COUNTERS_MT);
    return 1;
}

/* the array at argument 1 and the 0-based cell of argument 2 (1-based in Lua; raises when out of range) */
static sk_shared_counters_t *check_cell(lua_State *L, size_t *cell)
{
    sk_shared_counters_t *c = *(sk_shared_counters_t **)luaL_checkudata(L, 1, COUNTERS_MT);
    lua_Integer i = luaL_checkinteger(L, 2);
    luaL_argcheck(L, i >= 1 && (lua_Unsigned)i <= sk_shared_counters_size(c), 2, "no such cell");
    *cell = (size_t)(i - 1);
    return c;
}

static int l_counters_add(lua_State *L)
{
    size_t cell;
    sk_shared_counters_t *c = check_cell(L, &cell);
    lua_pushinteger(L, sk_shared_counters_add(c, cell, luaL_optinteger(L, 3, 1)));
    return 1;
}

static int l_counters_get(lua_State *L)
{
    size_t cell;
    sk_shared_counters_t *c = check_cell(L, &cell);
    lua_pushinteger(L, sk_shared_counters_get(c, cell));
    return 1;
}

static int l_counters_size(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sk_shared_counters_size(*(sk_shared_counters_t **)luaL_checkudata(L, 1, COUNTERS_MT)));
    return 1;
}

static int init(sk_config_t *cfg, unsigned nthreads)
{
    sk_shared_init((size_t)sk_config_int(cfg, "shared.max_entries"));
    return 0;
}

static void open_shared(lua_State *L)
{
    static const luaL_Reg methods[] = {{"add", l_counters_add}, {"get", l_counters_get}, {"size", l_counters_size}, {NULL, NULL}};
    luaL_newmetatable(L, COUNTERS_MT);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {{"get", l_get},       {"set", l_set},           {"incr", l_incr},
                                   {"delete", l_delete}, {"counters", l_counters}, {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_setglobal(L, "shared");
}

static const sk_config_key_t shared_keys[] = {
    SK_CONF_RANGED("max_entries", SK_CONF_INT, 1, 100000000, .def = "65536", .help = "entries the shared store holds, all workers"),
    {NULL}};
static const sk_config_key_t config_keys[] = {{.name = "shared", .types = SK_CONF_TABLE, .keys = shared_keys}, {NULL}};

const sk_binding_t sk_binding_shared = {.name = "shared", .init = init, .open = open_shared, .config_keys = config_keys};
