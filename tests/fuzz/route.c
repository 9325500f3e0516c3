/*
 * route.c: a request's bytes through what seckilld does with them before a handler runs: the request id
 * (core/request.c), the route match against the real app.lua's routes (core/router.c), and the request object's
 * params, query string and headers (core/request.c, core/url.c's percent-decoding), then req:json() on the body.
 * The path is also declared as a route of a router of its own (sk_router_add), which must then match it.
 *
 * Input: "METHOD /path?query\n", header lines "name: value\n", an empty line, then the body.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/request.h"
#include "../../core/router.h"
#include "harness.h"

/* what a handler relies on: every param, query value and header is a string, req:header agrees with req.headers, and
 * the id is one seckilld accepts */
static const char check_lua[] = "local req, id = ...\n"
                                "assert(req.id == id and #id >= 1 and #id <= 64 and id:find('^[A-Za-z0-9._:-]+$'))\n"
                                "for k, v in pairs(req.params) do assert(type(k) == 'string' and type(v) == 'string') end\n"
                                "for k, v in pairs(req.query) do assert(type(k) == 'string' and type(v) == 'string') end\n"
                                "local folded = {}\n"
                                "for k, v in pairs(req.headers) do\n"
                                "    assert(type(k) == 'string' and type(v) == 'string')\n"
                                "    folded[k:lower()] = (folded[k:lower()] or 0) + 1\n"
                                "end\n"
                                /* req:header reads the same copy without the table, a name matched in any case */
                                "for k, v in pairs(req.headers) do\n"
                                "    if folded[k:lower()] == 1 then assert(req:header(k:upper()) == v) end\n"
                                "end\n"
                                "assert(req:header('x-not-sent-' .. #req.path) == nil or folded['x-not-sent-' .. #req.path])\n"
                                "local body = req:json()\n"
                                "assert(body == nil or type(body) ~= 'function')\n";

static int check_ref = LUA_NOREF;

/* sk_router_add takes NUL-terminated strings: a path with a NUL byte, a brace or an empty segment is no pattern whose
 * own match we can predict */
static int plain_pattern(const char *path, size_t len)
{
    if (len == 0 || path[0] != '/' || memchr(path, '\0', len) || memchr(path, '{', len) || memchr(path, '}', len))
        return 0;
    for (size_t i = 1; i < len; ++i)
        if (path[i] == '/' && path[i - 1] == '/')
            return 0;
    return len == 1 || path[len - 1] != '/';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sk_vm_t *vm;
    if (vm == NULL) {
        vm = fuzz_vm(SK_VM_ROLE_API, NULL);
        if (luaL_loadbuffer(vm->L, check_lua, sizeof(check_lua) - 1, "=route_check") != LUA_OK)
            abort();
        check_ref = luaL_ref(vm->L, LUA_REGISTRYINDEX);
    }
    const char *p = (const char *)data, *end = p + size, *line;
    size_t len;
    if ((line = fuzz_next_line(&p, end, &len)) == NULL)
        return 0;
    const char *sp = memchr(line, ' ', len);
    if (sp == NULL)
        return 0;
    fuzz_req_t r;
    const char *target = sp + 1;
    size_t target_len = len - (size_t)(target - line);
    fuzz_req_init(&r, line, (size_t)(sp - line), target, target_len, NULL, 0);
    while ((line = fuzz_next_line(&p, end, &len)) != NULL && len != 0) {
        const char *colon = memchr(line, ':', len);
        if (colon == NULL || colon == line)
            continue;
        const char *v = colon + 1, *vend = line + len;
        while (v != vend && *v == ' ')
            ++v;
        fuzz_req_add_header(&r, line, (size_t)(colon - line), v, (size_t)(vend - v));
    }
    r.req.entity = h2o_iovec_init(p, (size_t)(end - p));

    h2o_iovec_t id = sk_request_id(&r.req);
    size_t path_len = r.req.query_at != SIZE_MAX ? r.req.query_at : r.req.path.len;
    sk_route_match_t m;
    char allow[256];
    int found =
        sk_router_match(&vm->router, r.req.method.base, r.req.method.len, r.req.path.base, path_len, &m, allow, sizeof(allow));
    if (found == SK_ROUTER_METHOD_NOT_ALLOWED && strlen(allow) == 0) {
        fprintf(stderr, "fuzz: 405 with an empty Allow\n");
        abort();
    }
    if (found != SK_ROUTER_FOUND)
        m = (sk_route_match_t){.nparams = 0};
    lua_State *L = vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
    sk_request_push(L, &r.req, id, path_len, &m);
    lua_pushlstring(L, id.base, id.len);
    fuzz_call(L, 2);

    /* the path as a pattern of its own router must match itself */
    char method[16], *pattern = NULL;
    if (r.req.method.len < sizeof(method) && plain_pattern(r.req.path.base, path_len)) {
        memcpy(method, r.req.method.base, r.req.method.len);
        method[r.req.method.len] = '\0';
        pattern = strndup(r.req.path.base, path_len);
        sk_router_t own = {NULL};
        const char *err;
        if (sk_router_add(&own, method, pattern, 1, &err) == 0 &&
            sk_router_match(&own, method, strlen(method), pattern, path_len, &m, NULL, 0) != SK_ROUTER_FOUND) {
            fprintf(stderr, "fuzz: the route \"%s %s\" does not match its own path\n", method, pattern);
            abort();
        }
        sk_router_dispose(&own);
        free(pattern);
    }
    fuzz_req_dispose(&r);
    return 0;
}
