/*
 * payment.c: the payment provider's webhook (POST /payments/callback: scripts/payments.lua, the signature check of
 * life/payments.lua) and the buyer's cancel (POST /order/{order_id}/cancel: scripts/orders.lua), in a VM of the real
 * scripts (harness.h), driven by tests/fuzz/payment.lua, which asserts what the handlers promise: an unsigned
 * callback is a 401 (the fuzzer cannot sign); the same body signed by the harness is a 400 with a message exactly
 * when it is not a valid payment, else it reaches MySQL; the cancel is a 400, a 404 or a MySQL call.
 *
 * Input: the Seckill-Signature header's value on the first line (an empty line: no header), then the raw body.
 */
#include "harness.h"

static const sk_vm_role_t role = {.name = "fuzz payment", .entry = "fuzz/payment.lua"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sk_vm_t *vm;
    if (vm == NULL)
        vm = fuzz_vm(&role, "payment.lua");
    fuzz_post_with_header(vm, "/payments/callback", "seckill-signature", data, size);
    return 0;
}
