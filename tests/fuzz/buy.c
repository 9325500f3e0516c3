/*
 * buy.c: request bodies and Idempotency-Keys through the buy (scripts/buy.lua, sale/request.lua, admission/): the
 * real scripts in a VM (harness.h), driven by tests/fuzz/buy.lua, which asserts what the handler promises (a 400
 * with a message, or the order taken further; tokens refused for the right reason; a key checked before Redis).
 * The request object is the one seckilld builds (core/request.c), the body decoded by lua-cjson as req:json().
 *
 * Input: the Idempotency-Key's value on the first line (an empty line: no header), then the body.
 */
#include <lauxlib.h>
#include <stdlib.h>
#include "../../core/request.h"
#include "harness.h"

static const sk_vm_role_t role = {.name = "fuzz buy", .entry = "fuzz/buy.lua"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sk_vm_t *vm;
    if (vm == NULL)
        vm = fuzz_vm(&role, "buy.lua");
    const char *p = (const char *)data, *end = p + size, *key;
    size_t key_len;
    if ((key = fuzz_next_line(&p, end, &key_len)) == NULL)
        return 0;
    fuzz_req_t r;
    static const char path[] = "/seckill/add";
    fuzz_req_init(&r, "POST", 4, path, sizeof(path) - 1, p, (size_t)(end - p));
    fuzz_req_add_header(&r, "content-type", 12, "application/json", 16);
    if (key_len != 0)
        fuzz_req_add_header(&r, "idempotency-key", 15, key, key_len);
    sk_route_match_t m = {.nparams = 0};
    lua_State *L = vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->entry_ref);
    sk_request_push(L, &r.req, sk_request_id(&r.req), r.req.path.len, &m);
    fuzz_call(L, 1);
    fuzz_req_dispose(&r);
    return 0;
}
