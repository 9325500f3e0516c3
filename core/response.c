/*
 * response.c: sending responses, and reading what a handler returned into one. h2o 2.2.5 falls back to chunked
 * encoding unless the length is known before the first send, so every body is sent whole, its length set first.
 */
#include <stdio.h>
#include <string.h>
#include "log.h"
#include "response.h"

const char sk_response_json_type[] = "application/json; charset=utf-8";

static const char *reason_of(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

static void start_response(h2o_req_t *req, int status, const char *content_type)
{
    req->res.status = status;
    req->res.reason = reason_of(status);
    if (content_type != NULL)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
}

static void send_body(h2o_req_t *req, const char *body, size_t len)
{
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

void sk_response_send(h2o_req_t *req, int status, const char *content_type, const char *body, size_t len)
{
    start_response(req, status, content_type);
    send_body(req, body, len);
}

/* appends s to buf as a JSON string body (quotes and escapes) */
static size_t json_escape(char *dst, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s != '\0' && o + 7 < cap; ++s) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = c;
        } else if (c < 0x20) {
            o += snprintf(dst + o, cap - o, "\\u%04x", c);
        } else {
            dst[o++] = c;
        }
    }
    dst[o] = '\0';
    return o;
}

void sk_response_send_error(h2o_req_t *req, int status, const char *code, const char *message)
{
    char esc[512], body[700];
    json_escape(esc, sizeof(esc), message);
    int n = snprintf(body, sizeof(body), "{\"ok\":false,\"error\":\"%s\",\"message\":\"%s\"}", code, esc);
    sk_response_send(req, status, sk_response_json_type, body, n);
}

/* ===== what a handler returned ===== */

static void add_headers(lua_State *L, int idx, h2o_req_t *req, int *has_type)
{
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) == LUA_TSTRING && (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)) {
            size_t nlen, vlen;
            const char *name = lua_tolstring(L, -2, &nlen);
            const char *value = lua_tolstring(L, -1, &vlen);
            char *lname = h2o_mem_alloc_pool(&req->pool, nlen);
            for (size_t i = 0; i < nlen; ++i)
                lname[i] = (name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i];
            if (nlen == 12 && memcmp(lname, "content-type", 12) == 0)
                *has_type = 1;
            char *v = h2o_mem_alloc_pool(&req->pool, vlen);
            memcpy(v, value, vlen);
            h2o_add_header_by_str(&req->pool, &req->res.headers, lname, nlen, 1, NULL, v, vlen);
        }
        lua_pop(L, 1);
    }
}

/* A string body that is a JSON object or array is JSON to the client as well: scripts return JSON text where the
 * encoder cannot say what they mean (lua-cjson 2.1.0 encodes every empty table as {}, so an empty list is returned as
 * '{"ok":true,"orders":[]}'). Only a body that starts like one is parsed; the stack is left as it was. */
static int is_json_text(lua_State *L, int idx, const char *body, size_t len)
{
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        ++i;
    if (i == len || (body[i] != '{' && body[i] != '['))
        return 0;
    if (lua_getglobal(L, "json") != LUA_TTABLE) {
        lua_pop(L, 1);
        return 0;
    }
    lua_getfield(L, -1, "decode");
    lua_pushvalue(L, idx);
    int ok = lua_pcall(L, 1, 1, 0) == LUA_OK;
    lua_pop(L, 2);
    return ok;
}

int sk_response_read_results(sk_response_t *res, const sk_route_t *route, lua_State *L, int nres)
{
    int base = lua_gettop(L) - nres + 1;
    int body_idx = base;
    *res = (sk_response_t){.status = 200, .body = ""};
    if (nres >= 1 && lua_type(L, base) == LUA_TNUMBER) {
        int isint;
        lua_Integer s = lua_tointegerx(L, base, &isint);
        if (!isint || s < 100 || s > 599) {
            sk_error("%s %s: handler returned an invalid status", route->method, route->pattern);
            return -1;
        }
        res->status = (int)s;
        body_idx = base + 1;
    } else if (nres == 0 || lua_type(L, base) != LUA_TTABLE) {
        sk_error("%s %s: handler must return status, body[, headers]", route->method, route->pattern);
        return -1;
    }
    if (body_idx + 1 <= lua_gettop(L) && lua_istable(L, body_idx + 1))
        res->headers_idx = body_idx + 1;

    if (body_idx <= lua_gettop(L)) {
        switch (lua_type(L, body_idx)) {
        case LUA_TTABLE:
            lua_getglobal(L, "json");
            lua_getfield(L, -1, "encode");
            lua_pushvalue(L, body_idx);
            if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
                sk_error("%s %s: cannot encode the response body: %s", route->method, route->pattern, lua_tostring(L, -1));
                return -1;
            }
            res->body = lua_tolstring(L, -1, &res->len);
            res->is_json = 1;
            break;
        case LUA_TSTRING:
            res->body = lua_tolstring(L, body_idx, &res->len);
            res->is_json = is_json_text(L, body_idx, res->body, res->len);
            break;
        case LUA_TNIL:
            break;
        default:
            sk_error("%s %s: response body must be a table, a string or nil", route->method, route->pattern);
            return -1;
        }
    }
    return 0;
}

void sk_response_send_results(h2o_req_t *req, lua_State *L, const sk_response_t *res)
{
    int has_type = 0;
    start_response(req, res->status, NULL);
    if (res->headers_idx != 0)
        add_headers(L, res->headers_idx, req, &has_type);
    if (!has_type)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       res->is_json || res->len == 0 ? sk_response_json_type : "text/plain; charset=utf-8",
                       res->is_json || res->len == 0 ? sizeof(sk_response_json_type) - 1 : 25);
    send_body(req, res->body, res->len);
}
