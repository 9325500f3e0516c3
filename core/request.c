/*
 * request.c: the request object handed to a handler. Everything is copied into Lua strings, so the table outlives
 * the h2o request (a handler that runs on detached after a disconnect or the deadline still reads it).
 */
#include <arpa/inet.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <string.h>
#include <stdint.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
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

/* The client's address as text, formatted once per address: a small per-thread table of the addresses seen last,
 * looked up by the address itself (so a stale entry can only miss). A keep-alive client's requests, or every request
 * behind a load balancer, find their text there instead of formatting it again (inet_ntop is a tenth of what a
 * refusal costs the worker). */
#define PEER_CACHE_SIZE 64

typedef struct st_peer_text_t {
    unsigned char addr[16]; /* an IPv4 address in its first 4 bytes */
    sa_family_t family;     /* 0: an empty entry */
    char text[INET6_ADDRSTRLEN];
} peer_text_t;

static __thread peer_text_t peer_cache[PEER_CACHE_SIZE];

static const char *peer_text(int family, const void *addr, size_t len)
{
    const unsigned char *b = addr;
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; ++i)
        h = (h ^ b[i]) * 16777619u;
    peer_text_t *e = peer_cache + h % PEER_CACHE_SIZE;
    if (e->family == family && memcmp(e->addr, addr, len) == 0)
        return e->text;
    e->family = 0;
    if (inet_ntop(family, addr, e->text, sizeof(e->text)) == NULL)
        return NULL;
    memcpy(e->addr, addr, len);
    e->family = family;
    return e->text;
}

/* pushes the client's address as text, or nil when the connection has none (never for TCP). An IPv4 client of an
 * IPv6 socket (::ffff:a.b.c.d) is shown as a.b.c.d, so that one client is one string whatever the listener. */
static void push_peer(lua_State *L, h2o_req_t *req)
{
    struct sockaddr_storage ss;
    const char *p = NULL;
    if (req->conn->callbacks->get_peername != NULL && req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss) != 0) {
        if (ss.ss_family == AF_INET) {
            p = peer_text(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        } else if (ss.ss_family == AF_INET6) {
            const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
            p = IN6_IS_ADDR_V4MAPPED(a) ? peer_text(AF_INET, a->s6_addr + 12, 4) : peer_text(AF_INET6, a, 16);
        }
    }
    if (p != NULL)
        lua_pushstring(L, p);
    else
        lua_pushnil(L);
}

/* ===== the request id ===== */

static int valid_id(const char *s, size_t len)
{
    if (len < 1 || len > SK_REQUEST_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; ++i) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
              c == '-'))
            return 0;
    }
    return 1;
}

/* splitmix64: ids need to be unique, not secret; seeded from the kernel once per thread */
static uint64_t next_random(void)
{
    static __thread uint64_t state;
    static __thread int seeded;
    if (!seeded) {
        if (getrandom(&state, sizeof(state), 0) != sizeof(state))
            state = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&state;
        seeded = 1;
    }
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

h2o_iovec_t sk_request_id(h2o_req_t *req)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1);
    if (i != -1 && valid_id(req->headers.entries[i].value.base, req->headers.entries[i].value.len))
        return req->headers.entries[i].value;
    static const char hex[] = "0123456789abcdef";
    uint64_t r = next_random();
    char *id = h2o_mem_alloc_pool(&req->pool, 16);
    for (int j = 0; j < 16; ++j, r >>= 4)
        id[j] = hex[r & 15];
    return h2o_iovec_init(id, 16);
}

/* ===== the request object ===== */

void sk_request_push(lua_State *L, h2o_req_t *req, h2o_iovec_t id, size_t path_len, const sk_route_match_t *m)
{
    lua_createtable(L, 0, 10);
    lua_pushlstring(L, id.base, id.len);
    lua_setfield(L, -2, "id");
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
