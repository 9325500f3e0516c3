/*
 * request.h: the request object a handler receives (request.c): an h2o request and its route match as a Lua table.
 * No HTTP handling and no thread knowledge: http.c calls into this header, never the other way round.
 */
#ifndef SK_REQUEST_H
#define SK_REQUEST_H

#include <stddef.h>
#include <h2o.h>
#include <lua.h>
#include "router.h"

/** the longest request id: an X-Request-Id of 1 to 64 characters of [A-Za-z0-9._:-] is taken as it is */
#define SK_REQUEST_ID_MAX 64

/**
 * The request's id: its X-Request-Id when valid, else 16 hex characters from a per-thread generator (seeded once per
 * thread from getrandom, so no system call per request) written into the request's pool. Points into the request's
 * memory: valid while req is.
 */
h2o_iovec_t sk_request_id(h2o_req_t *req);

/**
 * Pushes req as the handler's argument: {id, method, path, params, query, headers, body, peer} with the registry's
 * "sk.request" metatable. path_len is the length of the path without its query string; params and query values are
 * percent-decoded ('+' is a space in the query only), and a repeated header's values are joined with ", ".
 * peer is the client's IP address as text (IPv4 dotted, an IPv4-mapped IPv6 address as IPv4, else IPv6 text; nil
 * only for a connection without one): the TCP peer, so behind a proxy it is the proxy's, whatever X-Forwarded-For
 * says. id is the request's id (sk_request_id). params, query, headers and peer are built on their first read, from a
 * copy taken now (the table outlives req). Stack effect: +1.
 */
void sk_request_push(lua_State *L, h2o_req_t *req, h2o_iovec_t id, size_t path_len, const sk_route_match_t *m);

/** the request object's __index, a closure over the methods' table: a method, or a field built on its first read */
int sk_request_index(lua_State *L);

/**
 * req:header(name): the header's value (a repeated header's values joined with ", "), or nil (also for a table that
 * is not a request object); the name is matched case-insensitively. Reads the request's copy without building
 * req.headers: what a handler that needs one header calls.
 */
int sk_request_header(lua_State *L);

#endif
