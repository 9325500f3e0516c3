/*
 * kafka_message.c: an order message off the Kafka topic through the consumer: the message as Lua sees it
 * (bindings/kafka/lua_batch.c, sk_kafka_lua_push_message: key, value, headers) and the real consumer.lua on a batch
 * of it, in the consumer's VM (harness.h). Nothing reaches a backend: a well-formed order (or barrier) goes on to
 * Redis, whose first call raises here ("redis is not available on this thread", or "cannot yield here": this is no
 * consumer coroutine); a malformed one must be answered false, err (the
 * core then dead-letters exactly that message). Any other outcome (another error, true, nil) is a finding.
 *
 * Input: the key on the first line (an empty line: no key), header lines "name: value", an empty line, then the
 * value (none at all: no value).
 */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../bindings/kafka/consumer.h"
#include "../../bindings/kafka/lua_batch.h"
#include "harness.h"

static void finding(const char *what, lua_State *co)
{
    fprintf(stderr, "fuzz: consumer.lua %s: %s\n", what, lua_gettop(co) > 0 ? luaL_tolstring(co, -1, NULL) : "");
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sk_vm_t *vm;
    if (vm == NULL)
        vm = fuzz_vm(&sk_kafka_consumer_role, NULL);
    const char *p = (const char *)data, *end = p + size, *key, *line;
    size_t key_len, len;
    if ((key = fuzz_next_line(&p, end, &key_len)) == NULL)
        return 0;
    rd_kafka_headers_t *hdrs = NULL;
    while ((line = fuzz_next_line(&p, end, &len)) != NULL && len != 0) {
        const char *colon = memchr(line, ':', len);
        if (colon == NULL)
            continue;
        const char *v = colon + 1, *vend = line + len;
        while (v != vend && *v == ' ')
            ++v;
        if (hdrs == NULL)
            hdrs = rd_kafka_headers_new(4);
        rd_kafka_header_add(hdrs, line, (ssize_t)(colon - line), v, (ssize_t)(vend - v));
    }

    lua_State *L = vm->L;
    lua_State *co = lua_newthread(L);
    lua_rawgeti(co, LUA_REGISTRYINDEX, vm->entry_ref);
    lua_createtable(co, 1, 0);
    sk_kafka_lua_push_message(co, "seckill.orders", 3, 42, key_len != 0 ? key : NULL, key_len, p != end ? p : NULL,
                              (size_t)(end - p), hdrs);
    lua_rawseti(co, -2, 1);
    int nres, status = lua_resume(co, L, 1, &nres);
    if (status == LUA_OK) {
        /* false, "malformed order message at 3:42" */
        if (nres < 2 || lua_type(co, -nres) != LUA_TBOOLEAN || lua_toboolean(co, -nres) || lua_type(co, -nres + 1) != LUA_TSTRING ||
            strstr(lua_tostring(co, -nres + 1), "malformed order message at 3:42") == NULL)
            finding("returned something else than false, \"malformed ...\"", co);
    } else if (status == LUA_YIELD) {
        finding("yielded (nothing here should)", co);
    } else if (lua_type(co, -1) != LUA_TSTRING || (strstr(lua_tostring(co, -1), "redis is not available on this thread") == NULL &&
                                                   strstr(lua_tostring(co, -1), "cannot yield here") == NULL)) {
        finding("raised", co);
    }
    lua_pop(L, 1); /* the thread */
    if (hdrs != NULL)
        rd_kafka_headers_destroy(hdrs);
    return 0;
}
