/*
 * request.c: the request object handed to a handler. Everything is copied into Lua strings, so the table outlives
 * the h2o request (a handler that runs on detached after a disconnect or the deadline still reads it).
 */
#include <arpa/inet.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
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

/* pushes the client's address as text, or nil when the connection has none (never for TCP). An IPv4 client of an
 * IPv6 socket (::ffff:a.b.c.d) is shown as a.b.c.d, so that one client is one string whatever the listener. */
static void push_peer(lua_State *L, h2o_req_t *req)
{
    struct sockaddr_storage ss;
    char text[INET6_ADDRSTRLEN];
    const char *p = NULL;
    if (req->conn->callbacks->get_peername != NULL && req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss) != 0) {
        if (ss.ss_family == AF_INET) {
            p = inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, text, sizeof(text));
        } else if (ss.ss_family == AF_INET6) {
            const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
            p = IN6_IS_ADDR_V4MAPPED(a) ? inet_ntop(AF_INET, a->s6_addr + 12, text, sizeof(text))
                                        : inet_ntop(AF_INET6, a, text, sizeof(text));
        }
    }
    if (p != NULL)
        lua_pushstring(L, p);
    else
        lua_pushnil(L);
}

void sk_request_push(lua_State *L, h2o_req_t *req, size_t path_len, const sk_route_match_t *m)
{
    lua_createtable(L, 0, 9);
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

    push_peer(L, req);
    lua_setfield(L, -2, "peer");

    lua_getfield(L, LUA_REGISTRYINDEX, "sk.request");
    lua_setmetatable(L, -2);
}
