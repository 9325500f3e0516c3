/*
 * lua_batch.h: a batch as consumer.lua sees it: the messages as Lua tables, the coroutine that runs the function
 * the script returned, and what it returned turned into a batch outcome (batch.h).
 */
#ifndef SK_KAFKA_LUA_BATCH_H
#define SK_KAFKA_LUA_BATCH_H

#include "../../core/loop.h"
#include "../../core/vm.h"
#include "batch.h"

/**
 * Calls the function vm->entry_ref (what consumer.lua returned) in a new coroutine on `loop` with one argument: an
 * array of the first n pending messages of `b`, each {topic, partition, offset, key, value, headers = {name = value}}
 * (key, value and headers only when the message has them). The coroutine may yield (redis, mysql, sleep, produce).
 * When it ends, calls sk_kafka_batch_done(b, outcome, error): true is OK; nil, err TRANSIENT; false, err PERMANENT;
 * an error raised (with its traceback), or nothing returned, RAISED.
 */
void sk_kafka_lua_batch_run(sk_kafka_batch_t *b, size_t n, sk_vm_t *vm, sk_loop_t *loop);

/**
 * Pushes one message as consumer.lua sees it: {topic, partition, offset, key, value, headers = {name = value}}, key
 * and value only when not NULL, headers only when hdrs is not NULL (a header without a value is ""). Stack effect:
 * +1. sk_kafka_lua_batch_run pushes each message of a batch with it; tests/fuzz/kafka_message.c drives it with
 * messages made of a fuzzer's bytes.
 */
void sk_kafka_lua_push_message(lua_State *L, const char *topic, int32_t partition, int64_t offset, const void *key, size_t key_len,
                               const void *value, size_t len, const rd_kafka_headers_t *hdrs);

#endif
