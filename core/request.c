/*
 * request.c: the request object handed to a handler. Everything is copied into Lua strings, so the table outlives
 * the h2o request (a handler that runs on detached after a disconnect or the deadline still reads it).
 */
#include <lauxlib.h>
#include <string.h>
#include "request.h"
#include "url.h"

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

void sk_request_push(lua_State *L, h2o_req_t *req, size_t path_len, const sk_route_match_t *m)
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
