/*
 * queue.c: the waiting room's two routes (API-v1.2.md "Waiting room"): POST /queue/join's body and GET
 * /queue/status's query string, with its ticket, through the real handlers (scripts/waiting.lua,
 * scripts/admission/queue.lua) in a VM of the real scripts (harness.h), driven by tests/fuzz/queue.lua, which asserts
 * what the handlers promise: a join is a 400 with a message or goes on to Redis; a status without a ticket is a 400,
 * with a ticket the server did not sign a 403 bad_ticket before any backend; the same ticket's fields signed by the
 * harness are accepted exactly when they are a ticket's; and, against a stand-in for Redis and MySQL whose answers the
 * query string's fz_* parameters choose, every answer is one of the contract's.
 *
 * Input: the status request's query string on the first line (what follows "?"), then the join's raw body. An input
 * without a first line is skipped.
 */
#include <stdlib.h>
#include <string.h>
#include "../../core/request.h"
#include "harness.h"

static const sk_vm_role_t role = {.name = "fuzz queue", .entry = "fuzz/queue.lua"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sk_vm_t *vm;
    if (vm == NULL)
        vm = fuzz_vm(&role, "queue.lua");
    const char *p = (const char *)data, *end = p + size, *query;
    size_t query_len;
    if ((query = fuzz_next_line(&p, end, &query_len)) == NULL)
        return 0;
    /* the status request's path: the route's, then "?" and the fuzzed query string (h2o hands it over undecoded) */
    static const char route[] = "/queue/status?";
    char *path = malloc(sizeof(route) - 1 + query_len);
    memcpy(path, route, sizeof(route) - 1);
    memcpy(path + sizeof(route) - 1, query, query_len);
    fuzz_req_t join, status;
    fuzz_req_init(&join, "POST", 4, "/queue/join", 11, p, (size_t)(end - p));
    fuzz_req_add_header(&join, "content-type", 12, "application/json", 16);
    fuzz_req_init(&status, "GET", 3, path, sizeof(route) - 1 + query_len, NULL, 0);
    sk_route_match_t m = {.nparams = 0};
    lua_State *L = vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->entry_ref);
    sk_request_push(L, &join.req, sk_request_id(&join.req), join.req.path.len, &m);
    sk_request_push(L, &status.req, sk_request_id(&status.req), sizeof(route) - 2, &m);
    fuzz_call(L, 2);
    fuzz_req_dispose(&status);
    fuzz_req_dispose(&join);
    free(path);
    return 0;
}
