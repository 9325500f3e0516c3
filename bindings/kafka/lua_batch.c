/*
 * lua_batch.c: runs consumer.lua's function on a batch (lua_batch.h) and classifies what it returned.
 */
#include <lauxlib.h>
#include "../../core/co.h"
#include "lua_batch.h"

void sk_kafka_lua_push_message(lua_State *L, const char *topic, int32_t partition, int64_t offset, const void *key, size_t key_len,
                               const void *value, size_t len, const rd_kafka_headers_t *hdrs)
{
    lua_createtable(L, 0, 6);
    lua_pushstring(L, topic);
    lua_setfield(L, -2, "topic");
    lua_pushinteger(L, partition);
    lua_setfield(L, -2, "partition");
    lua_pushinteger(L, offset);
    lua_setfield(L, -2, "offset");
    if (key != NULL) {
        lua_pushlstring(L, key, key_len);
        lua_setfield(L, -2, "key");
    }
    if (value != NULL) {
        lua_pushlstring(L, value, len);
        lua_setfield(L, -2, "value");
    }
    if (hdrs != NULL) {
        const char *name;
        const void *hvalue;
        size_t size;
        lua_newtable(L);
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &hvalue, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
            lua_pushlstring(L, hvalue != NULL ? hvalue : "", hvalue != NULL ? size : 0);
            lua_setfield(L, -2, name);
        }
        lua_setfield(L, -2, "headers");
    }
}

static void push_message(lua_State *L, rd_kafka_message_t *m)
{
    rd_kafka_headers_t *hdrs;
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        hdrs = NULL;
    sk_kafka_lua_push_message(L, rd_kafka_topic_name(m->rkt), m->partition, m->offset, m->key, m->key_len, m->payload, m->len,
                              hdrs);
}

/* reads what the function returned (or raised); *err points into the coroutine's stack, valid until it is released */
static sk_kafka_batch_outcome_t classify(lua_State *L, int ok, int nres, const char **err)
{
    sk_kafka_batch_outcome_t outcome;
    if (!ok) {
        outcome = SK_KAFKA_BATCH_RAISED;
        *err =
            lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : "error object is not a string";
    } else if (nres == 0) {
        outcome = SK_KAFKA_BATCH_RAISED;
        *err = "consumer function returned nothing (return true on success)";
    } else if (lua_toboolean(L, -nres)) {
        *err = NULL;
        return SK_KAFKA_BATCH_OK;
    } else {
        outcome = lua_isnil(L, -nres) ? SK_KAFKA_BATCH_TRANSIENT : SK_KAFKA_BATCH_PERMANENT;
        if (nres >= 2 && (lua_type(L, -nres + 1) == LUA_TSTRING || lua_type(L, -nres + 1) == LUA_TNUMBER))
            *err = lua_tostring(L, -nres + 1);
        else
            *err = outcome == SK_KAFKA_BATCH_TRANSIENT ? "consumer function returned nil" : "consumer function returned false";
    }
    return outcome;
}

static void on_done(sk_co_t *co, int ok, int nres)
{
    const char *err;
    sk_kafka_batch_outcome_t outcome = classify(co->L, ok, nres, &err);
    sk_kafka_batch_done(co->data, outcome, err); /* copies err: the coroutine is released after we return */
}

void sk_kafka_lua_batch_run(sk_kafka_batch_t *b, size_t n, sk_vm_t *vm, sk_loop_t *loop)
{
    sk_co_t *co = sk_co_new(vm, loop);
    lua_rawgeti(co->L, LUA_REGISTRYINDEX, vm->entry_ref);
    lua_createtable(co->L, (int)n, 0);
    for (size_t i = 0; i != n; ++i) {
        push_message(co->L, sk_kafka_batch_at(b, i));
        lua_rawseti(co->L, -2, (lua_Integer)i + 1);
    }
    sk_co_start(co, 1, on_done, b);
}
