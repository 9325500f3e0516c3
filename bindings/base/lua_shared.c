/*
 * shared_lua.c: `shared`, the Lua face of the process-wide store (see shared_store.h). None of these yield.
 *   shared.get(key)                      -> value or nil
 *   shared.set(key, value[, ttl_ms])     -> true, or nil, "no memory"  (value nil deletes)
 *   shared.incr(key, delta[, init[, ttl_ms]]) -> new integer, or nil, "not an integer" / "no memory"
 *   shared.delete(key)                   -> true
 */
#include <lauxlib.h>
#include <stdlib.h>
#include "../../core/config.h"
#include "../bindings.h"
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

static int init(sk_config_t *cfg, unsigned nthreads)
{
    sk_shared_init((size_t)sk_config_get_int(cfg, "shared.max_entries", 65536));
    return 0;
}

static void open_shared(lua_State *L)
{
    static const luaL_Reg fns[] = {{"get", l_get}, {"set", l_set}, {"incr", l_incr}, {"delete", l_delete}, {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_setglobal(L, "shared");
}

static const sk_config_key_t shared_keys[] = {
    {.name = "max_entries", .types = SK_CONF_INT, .ranged = 1, .min = 1, .max = 100000000}, {NULL}};
static const sk_config_key_t config_keys[] = {{.name = "shared", .types = SK_CONF_TABLE, .keys = shared_keys}, {NULL}};

const sk_binding_t sk_binding_shared = {.name = "shared", .init = init, .open = open_shared, .config_keys = config_keys};
