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
 * Pushes req as the handler's argument: {method, path, params, query, headers, body} with the registry's
 * "sk.request" metatable. path_len is the length of the path without its query string; params and query values are
 * percent-decoded ('+' is a space in the query only), and a repeated header's values are joined with ", ".
 * Stack effect: +1.
 */
void sk_request_push(lua_State *L, h2o_req_t *req, size_t path_len, const sk_route_match_t *m);

#endif
