/*
 * response.h: sending a response (response.c): the status line, the API's error shape, and what a handler returned.
 * No routing, no metrics and no thread knowledge: whether the connection must close (a draining thread) is the
 * caller's to set on the request (req->http1_is_persistent = 0) before calling in. http.c calls into this header,
 * never the other way round.
 */
#ifndef SK_RESPONSE_H
#define SK_RESPONSE_H

#include <stddef.h>
#include <h2o.h>
#include <lua.h>
#include "router.h"

/** the Content-Type of JSON bodies */
extern const char sk_response_json_type[];

/** answers req with status, content_type (no Content-Type header when NULL) and body[0..len) */
void sk_response_send(h2o_req_t *req, int status, const char *content_type, const char *body, size_t len);
/** answers req with status and the API's error shape {"ok":false,"error":code,"message":message} */
void sk_response_send_error(h2o_req_t *req, int status, const char *code, const char *message);

/** what a handler returned, read off its coroutine's stack by sk_response_read_results */
typedef struct st_sk_response_t {
    /** 200 unless the handler returned one */
    int status;
    /** points into a Lua string on the stack (or a literal ""): valid while the results stay there */
    const char *body;
    size_t len;
    /** 1 when body is an encoded table */
    int is_json;
    /** the stack index of the headers table, or 0 */
    int headers_idx;
} sk_response_t;

/**
 * Reads what route's handler returned: the nres values on top of L's stack, either (status, body[, headers]) or
 * (table), meaning 200 with that table as the JSON body. A table body is encoded with the VM's json.encode; a string
 * body is sent as is; nil is an empty body. Returns 0, or -1 after logging when the results are not a response (the
 * caller answers 500). It may leave values on L's stack (the encoded body).
 */
int sk_response_read_results(sk_response_t *res, const sk_route_t *route, lua_State *L, int nres);
/** answers req with res (read by sk_response_read_results from the same stack, left as it was): its headers, then a
 * Content-Type unless they named one (JSON for an encoded table or an empty body, else text/plain) */
void sk_response_send_results(h2o_req_t *req, lua_State *L, const sk_response_t *res);

#endif
