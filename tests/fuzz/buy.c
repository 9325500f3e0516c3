/*
 * buy.c: request bodies and Idempotency-Keys through the buy (scripts/buy.lua, sale/request.lua, admission/): the
 * real scripts in a VM (harness.h), driven by tests/fuzz/buy.lua, which asserts what the handler promises (a 400
 * with a message, or the order taken further; tokens refused for the right reason; a key checked before Redis).
 * The request object is the one seckilld builds (core/request.c), the body decoded by lua-cjson as req:json().
 *
 * Input: the Idempotency-Key's value on the first line (an empty line: no header), then the body.
 */
#include "harness.h"

static const sk_vm_role_t role = {.name = "fuzz buy", .entry = "fuzz/buy.lua"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sk_vm_t *vm;
    if (vm == NULL)
        vm = fuzz_vm(&role, "buy.lua");
    fuzz_post_with_header(vm, "/seckill/add", "idempotency-key", data, size);
    return 0;
}
