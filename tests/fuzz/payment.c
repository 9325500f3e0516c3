/*
 * payment.c: the payment provider's webhook (POST /payments/callback: scripts/payments.lua, the signature check of
 * life/payments.lua) and the buyer's cancel (POST /order/{order_id}/cancel: scripts/orders.lua), in a VM of the real
 * scripts (harness.h), driven by tests/fuzz/payment.lua, which asserts what the handlers promise: an unsigned
 * callback is a 401 (the fuzzer cannot sign); the same body signed by the harness is a 400 with a message exactly
 * when it is not a valid payment, else it reaches MySQL; the cancel is a 400, a 404 or a MySQL call.
 *
 * Input: the Seckill-Signature header's value on the first line (an empty line: no header), then the raw body.
 */
#include <lauxlib.h>
#include <stdlib.h>
#include "../../core/request.h"
#include "harness.h"

static const sk_vm_role_t role = {.name = "fuzz payment", .entry = "fuzz/payment.lua"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sk_vm_t *vm;
    if (vm == NULL)
        vm = fuzz_vm(&role, "payment.lua");
    const char *p = (const char *)data, *end = p + size, *sig;
    size_t sig_len;
    if ((sig = fuzz_next_line(&p, end, &sig_len)) == NULL)
        return 0;
    fuzz_req_t r;
    static const char path[] = "/payments/callback";
    fuzz_req_init(&r, "POST", 4, path, sizeof(path) - 1, p, (size_t)(end - p));
    fuzz_req_add_header(&r, "content-type", 12, "application/json", 16);
    if (sig_len != 0)
        fuzz_req_add_header(&r, "seckill-signature", 17, sig, sig_len);
    sk_route_match_t m = {.nparams = 0};
    lua_State *L = vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->entry_ref);
    sk_request_push(L, &r.req, sk_request_id(&r.req), r.req.path.len, &m);
    fuzz_call(L, 1);
    fuzz_req_dispose(&r);
    return 0;
}
