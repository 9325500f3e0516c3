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

/*
 * Most handlers read none of params, query, headers and peer (a refused buy reads one header), yet building them was
 * four tables and a dozen strings per request, a sixth of what a refusal cost. So the request's table holds id,
 * method, path and body, and one string (the "raw" record, under a private key) with everything else as it came:
 * the peer's address bytes, the query text, the params and the headers, each length-prefixed. A field is built from
 * it on its first read and stored in the table, so a second read is a plain table hit. The record is a copy: the
 * table outlives the h2o request, and a handler (or a coroutine it spawned) that reads req.headers after its client
 * went away reads the same thing it would have read at once.
 *
 * The record: u8 family (0: no peer, 4, 6) and the address (0, 4 or 16 bytes); u32 length and the query (undecoded);
 * u16 count and the params; u16 count and the headers; a param or header is u16 name length, name, u32 value
 * length, value (params undecoded).
 */
static const char raw_key; /* its address: the private key of the record */

static void add_u16(luaL_Buffer *b, size_t v)
{
    uint16_t x = (uint16_t)v;
    luaL_addlstring(b, (const char *)&x, sizeof(x));
}

static void add_u32(luaL_Buffer *b, size_t v)
{
    uint32_t x = (uint32_t)v;
    luaL_addlstring(b, (const char *)&x, sizeof(x));
}

static void add_pair(luaL_Buffer *b, const char *name, size_t name_len, const char *value, size_t value_len)
{
    add_u16(b, name_len);
    luaL_addlstring(b, name, name_len);
    add_u32(b, value_len);
    luaL_addlstring(b, value, value_len);
}

static void push_raw(lua_State *L, h2o_req_t *req, size_t path_len, const sk_route_match_t *m)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);

    struct sockaddr_storage ss;
    unsigned char family = 0;
    const void *addr = NULL;
    if (req->conn != NULL && req->conn->callbacks->get_peername != NULL &&
        req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss) != 0) {
        if (ss.ss_family == AF_INET) {
            family = 4, addr = &((struct sockaddr_in *)&ss)->sin_addr;
        } else if (ss.ss_family == AF_INET6) {
            const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
            if (IN6_IS_ADDR_V4MAPPED(a)) /* an IPv4 client of an IPv6 socket is shown as IPv4: one client, one string */
                family = 4, addr = a->s6_addr + 12;
            else
                family = 6, addr = a;
        }
    }
    luaL_addchar(&b, (char)family);
    if (family != 0)
        luaL_addlstring(&b, addr, family == 4 ? 4 : 16);

    size_t query_len = path_len < req->path.len ? req->path.len - path_len - 1 : 0;
    add_u32(&b, query_len);
    luaL_addlstring(&b, req->path.base + req->path.len - query_len, query_len);

    add_u16(&b, m->nparams);
    for (size_t i = 0; i < m->nparams; ++i)
        add_pair(&b, m->params[i].name, m->params[i].name_len, m->params[i].value, m->params[i].value_len);

    size_t nheaders = req->headers.size < UINT16_MAX ? req->headers.size : UINT16_MAX;
    add_u16(&b, nheaders);
    for (size_t i = 0; i < nheaders; ++i) {
        h2o_header_t *h = req->headers.entries + i;
        add_pair(&b, h->name->base, h->name->len, h->value.base, h->value.len);
    }
    luaL_pushresult(&b);
}

/* a reader of the record: push_raw wrote it, so its lengths are trusted */
typedef struct st_raw_t {
    const char *p;
} raw_t;

static size_t get_u16(raw_t *r)
{
    uint16_t x;
    memcpy(&x, r->p, sizeof(x));
    r->p += sizeof(x);
    return x;
}

static size_t get_u32(raw_t *r)
{
    uint32_t x;
    memcpy(&x, r->p, sizeof(x));
    r->p += sizeof(x);
    return x;
}

static void get_pair(raw_t *r, h2o_iovec_t *name, h2o_iovec_t *value)
{
    name->len = get_u16(r);
    name->base = (char *)r->p;
    r->p += name->len;
    value->len = get_u32(r);
    value->base = (char *)r->p;
    r->p += value->len;
}

enum { RAW_PEER, RAW_QUERY, RAW_PARAMS, RAW_HEADERS };

/* positions the reader at a part of the record: past the parts before it */
static void raw_seek(raw_t *r, int part)
{
    if (part == RAW_PEER)
        return;
    unsigned char family = (unsigned char)*r->p++;
    r->p += family == 4 ? 4 : family == 6 ? 16 : 0;
    if (part == RAW_QUERY)
        return;
    size_t query_len = get_u32(r);
    r->p += query_len;
    if (part == RAW_PARAMS)
        return;
    for (size_t n = get_u16(r); n != 0; --n) {
        h2o_iovec_t name, value;
        get_pair(r, &name, &value);
    }
}

/* pushes the field of that part, built from the record */
static void push_part(lua_State *L, const char *rec, int part)
{
    raw_t r = {rec};
    raw_seek(&r, part);
    switch (part) {
    case RAW_PEER: {
        unsigned char family = (unsigned char)*r.p++;
        const char *p = family == 0 ? NULL : peer_text(family == 4 ? AF_INET : AF_INET6, r.p, family == 4 ? 4 : 16);
        if (p != NULL)
            lua_pushstring(L, p);
        else
            lua_pushnil(L);
    } break;
    case RAW_QUERY: {
        size_t query_len = get_u32(&r);
        if (query_len != 0)
            push_query(L, r.p, query_len);
        else
            lua_createtable(L, 0, 0);
    } break;
    case RAW_PARAMS:
    case RAW_HEADERS: {
        /* name → value: a param's value percent-decoded, a repeated header's values joined with ", " as HTTP does */
        size_t n = get_u16(&r);
        lua_createtable(L, 0, (int)n);
        for (; n != 0; --n) {
            h2o_iovec_t name, value;
            get_pair(&r, &name, &value);
            lua_pushlstring(L, name.base, name.len);
            if (part == RAW_PARAMS) {
                push_decoded(L, value.base, value.len, 0);
            } else {
                lua_pushvalue(L, -1);
                int repeated = lua_rawget(L, -3) == LUA_TSTRING;
                if (repeated)
                    lua_pushliteral(L, ", ");
                else
                    lua_pop(L, 1);
                lua_pushlstring(L, value.base, value.len);
                if (repeated)
                    lua_concat(L, 3);
            }
            lua_rawset(L, -3);
        }
    } break;
    }
}

static int part_of(const char *k, size_t len)
{
#define IS(lit) (len == sizeof(lit) - 1 && memcmp(k, lit, len) == 0)
    if (IS("headers"))
        return RAW_HEADERS;
    if (IS("query"))
        return RAW_QUERY;
    if (IS("params"))
        return RAW_PARAMS;
    if (IS("peer"))
        return RAW_PEER;
#undef IS
    return -1;
}

int sk_request_index(lua_State *L)
{
    /* a method first (upvalue 1: the methods' table) */
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL || lua_type(L, 2) != LUA_TSTRING)
        return 1;
    size_t klen;
    const char *k = lua_tolstring(L, 2, &klen);
    int part = part_of(k, klen);
    if (part < 0 || lua_rawgetp(L, 1, &raw_key) != LUA_TSTRING)
        return 1; /* nil */
    push_part(L, lua_tostring(L, -1), part);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1); /* read once: the next read is a table hit (a nil peer is read again, cheaply) */
    return 1;
}

/* ASCII case-insensitive equality of a header name (not strncasecmp: it stops at a NUL, and a name is bytes) */
static int name_is(h2o_iovec_t name, const char *s, size_t len)
{
    if (name.len != len)
        return 0;
    for (size_t i = 0; i != len; ++i)
        if (h2o_tolower(name.base[i]) != h2o_tolower(s[i]))
            return 0;
    return 1;
}

int sk_request_header(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t len;
    const char *want = luaL_checklstring(L, 2, &len);
    if (lua_rawgetp(L, 1, &raw_key) != LUA_TSTRING)
        return 0; /* not a request object */
    raw_t r = {lua_tostring(L, -1)};
    raw_seek(&r, RAW_HEADERS);
    luaL_Buffer b; /* one stack slot however often the header is repeated */
    int found = 0;
    for (size_t n = get_u16(&r); n != 0; --n) {
        h2o_iovec_t name, value;
        get_pair(&r, &name, &value);
        if (!name_is(name, want, len))
            continue;
        if (found++ == 0)
            luaL_buffinit(L, &b);
        else
            luaL_addlstring(&b, ", ", 2);
        luaL_addlstring(&b, value.base, value.len);
    }
    if (found == 0)
        return 0;
    luaL_pushresult(&b);
    return 1;
}

void sk_request_push(lua_State *L, h2o_req_t *req, h2o_iovec_t id, size_t path_len, const sk_route_match_t *m)
{
    lua_createtable(L, 0, 8); /* room for the record, the four fields, a decoded body and one lazy field */
    lua_pushlstring(L, id.base, id.len);
    lua_setfield(L, -2, "id");
    lua_pushlstring(L, req->method.base, req->method.len);
    lua_setfield(L, -2, "method");
    lua_pushlstring(L, req->path.base, path_len);
    lua_setfield(L, -2, "path");
    lua_pushlstring(L, req->entity.base != NULL ? req->entity.base : "", req->entity.len);
    lua_setfield(L, -2, "body");
    push_raw(L, req, path_len, m);
    lua_rawsetp(L, -2, &raw_key);

    lua_getfield(L, LUA_REGISTRYINDEX, "sk.request");
    lua_setmetatable(L, -2);
}
