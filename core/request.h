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

/**
 * Pushes req as the handler's argument: {method, path, params, query, headers, body, peer} with the registry's
 * "sk.request" metatable. path_len is the length of the path without its query string; params and query values are
 * percent-decoded ('+' is a space in the query only), and a repeated header's values are joined with ", ".
 * peer is the client's IP address as text (IPv4 dotted, an IPv4-mapped IPv6 address as IPv4, else IPv6 text; nil
 * only for a connection without one): the TCP peer, so behind a proxy it is the proxy's, whatever X-Forwarded-For
 * says. Stack effect: +1.
 */
void sk_request_push(lua_State *L, h2o_req_t *req, size_t path_len, const sk_route_match_t *m);

#endif
