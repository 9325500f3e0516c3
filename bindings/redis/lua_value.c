/* lua_value.c: Lua values <-> Redis commands and replies (lua_value.h) */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/loop.h"
#include "err.h"
#include "lua_value.h"

#define MAX_STACK_ARGS 32

void sk_redis_value_normalize_args(lua_State *L, int first, int last, const char *what)
{
    for (int i = first; i <= last; ++i) {
        switch (lua_type(L, i)) {
        case LUA_TSTRING:
            break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, i)) {
                lua_tolstring(L, i, NULL);
            } else {
                /* %.17g: 3.0 becomes "3", which INCRBY accepts; Lua's own tostring would give "3.0" */
                char buf[64];
                snprintf(buf, sizeof(buf), "%.17g", (double)lua_tonumber(L, i));
                lua_pushstring(L, buf);
                lua_replace(L, i);
            }
            break;
        default:
            luaL_error(L, "%s: argument %d must be a string or a number (got %s)", what, i - first + 1, luaL_typename(L, i));
        }
    }
}

int sk_redis_value_push_array_args(lua_State *L, int idx, const char *what)
{
    idx = lua_absindex(L, idx);
    int n = (int)luaL_len(L, idx);
    luaL_checkstack(L, n + 8, "too many redis arguments");
    int top = lua_gettop(L);
    for (int i = 1; i <= n; ++i)
        lua_rawgeti(L, idx, i);
    sk_redis_value_normalize_args(L, top + 1, top + n, what);
    return n;
}

sk_redis_cmd_t *sk_redis_value_to_cmd(lua_State *L, int nprefix, const char *const *prefix, int first, int n)
{
    int argc = nprefix + n;
    const char *argv_s[MAX_STACK_ARGS], **argv = argc <= MAX_STACK_ARGS ? argv_s : h2o_mem_alloc(argc * sizeof(*argv));
    size_t lens_s[MAX_STACK_ARGS], *lens = argc <= MAX_STACK_ARGS ? lens_s : h2o_mem_alloc(argc * sizeof(*lens));
    for (int i = 0; i != nprefix; ++i) {
        argv[i] = prefix[i];
        lens[i] = strlen(prefix[i]);
    }
    /* the strings stay on the stack (so alive) while they are copied */
    for (int i = 0; i != n; ++i)
        argv[nprefix + i] = lua_tolstring(L, first + i, &lens[nprefix + i]);
    sk_redis_cmd_t *c = sk_redis_cmd_new(argc, argv, lens);
    if (argv != argv_s) {
        free(argv);
        free(lens);
    }
    return c;
}

sk_redis_cmd_t *sk_redis_value_table_to_cmd(lua_State *L, int idx, int nprefix, const char *const *prefix, const char *what)
{
    int base = lua_gettop(L), n = sk_redis_value_push_array_args(L, idx, what);
    sk_redis_cmd_t *c = sk_redis_value_to_cmd(L, nprefix, prefix, base + 1, n);
    lua_settop(L, base);
    return c;
}

/* nil -> nil at the top level, false inside arrays (keeps them sequences, as Redis's own Lua does) */
void sk_redis_value_push(lua_State *L, const redisReply *r, int nested)
{
    luaL_checkstack(L, 4, "redis reply too deep");
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(L, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        lua_pushinteger(L, r->integer);
        break;
    case REDIS_REPLY_ARRAY:
        lua_createtable(L, (int)r->elements, 0);
        for (size_t i = 0; i != r->elements; ++i) {
            sk_redis_value_push(L, r->element[i], 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    case REDIS_REPLY_ERROR:
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, r->str, r->len);
        lua_setfield(L, -2, "err");
        break;
    default: /* REDIS_REPLY_NIL */
        if (nested)
            lua_pushboolean(L, 0);
        else
            lua_pushnil(L);
        break;
    }
}

int sk_redis_value_push_result(lua_State *L, redisReply *reply, const char *errstr)
{
    int n = 1;
    if (reply == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, errstr != NULL ? errstr : sk_redis_err_closed);
        return 2;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        lua_pushboolean(L, 0);
        lua_pushlstring(L, reply->str, reply->len);
        n = 2;
    } else {
        sk_redis_value_push(L, reply, 0);
    }
    freeReplyObject(reply);
    return n;
}
