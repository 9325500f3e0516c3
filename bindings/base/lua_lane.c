/*
 * lua_lane.c: `lane`, process-wide coalescing per key (lane.h) for scripts. Payloads and results are strings.
 *   local r, err = lane.submit(key, payload[, wait_ms[, bound_ms]])
 *     a string: the result the batch that took this payload handed it (its leader ran in any worker's VM)
 *     a batch:  the caller leads (no batch was led for key, or the previous leader handed the lane on):
 *               b:claim(max) -> { payload, ... } the payloads queued so far (at most max, FIFO; may be {})
 *               b:finish({ result, ... }) one result per claimed payload, in claim order (a missing one: the
 *               submitter gets nil, "batch failed"); then the lane passes to the next queued caller, or is freed.
 *               A batch is to-be-closed: `local b <close> = r` finishes it with failures if the leader errors or
 *               returns without finishing (so does its __gc, as a last resort); finish twice raises.
 *     nil, "busy"         not taken into a batch within wait_ms (default 3000): nothing was done for it
 *     nil, "unavailable"  taken, but no result within bound_ms (default 10000) more: it may have been done
 * Yields; only in a request (or spawned, task, consumer) coroutine. Keys and lanes are process-wide and C-owned:
 * they survive reloads, and a batch led on an old VM still answers callers on the new ones.
 */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/op.h"
#include "../../core/binding.h"
#include "lane.h"

#define BATCH_MT "sk.lane.batch"

typedef struct st_submit_op_t {
    sk_op_t super;
    sk_lane_entry_t *entry;
    sk_lane_outcome_t outcome;
} submit_op_t;

typedef struct st_batch_t {
    sk_lane_batch_t batch;
    int finished;
} batch_t;

static void push_batch(lua_State *L, sk_lane_t *lane)
{
    batch_t *b = lua_newuserdatauv(L, sizeof(*b), 0);
    *b = (batch_t){.batch = {.lane = lane}};
    luaL_setmetatable(L, BATCH_MT);
}

static int push_outcome(lua_State *L, void *arg)
{
    submit_op_t *op = arg;
    int n = 1;
    if (op->super.err != NULL) {
        lua_pushnil(L);
        lua_pushstring(L, op->super.err);
        n = 2;
    } else if (op->outcome.lead != NULL) {
        push_batch(L, op->outcome.lead);
    } else if (op->outcome.result != NULL) {
        lua_pushlstring(L, op->outcome.result, op->outcome.len);
        free(op->outcome.result);
    } else {
        lua_pushnil(L);
        lua_pushstring(L, op->outcome.err);
        n = 2;
    }
    free(op);
    return n;
}

static void on_outcome(sk_op_t *super, sk_lane_outcome_t *outcome, const char *errstr)
{
    submit_op_t *op = (submit_op_t *)super;
    op->super.err = errstr;
    if (outcome != NULL)
        op->outcome = *outcome; /* the result string is ours now */
    sk_op_wake(&op->super, push_outcome);
}

static void cancel_submit(void *arg)
{
    submit_op_t *op = arg;
    sk_lane_withdraw(op->entry);
    free(op);
}

static int l_submit(lua_State *L)
{
    size_t keylen, len;
    const char *key = luaL_checklstring(L, 1, &keylen);
    const char *payload = luaL_checklstring(L, 2, &len);
    lua_Integer wait_ms = luaL_optinteger(L, 3, 3000), bound_ms = luaL_optinteger(L, 4, 10000);
    luaL_argcheck(L, wait_ms >= 1 && wait_ms <= 86400000, 3, "must be between 1 and 86400000");
    luaL_argcheck(L, bound_ms >= 1 && bound_ms <= 86400000, 4, "must be between 1 and 86400000");
    sk_co_t *co = sk_co_check(L);
    submit_op_t *op = malloc(sizeof(*op));
    *op = (submit_op_t){.super = {.co = co}};
    sk_lane_t *lane;
    const char *err;
    if ((err = sk_lane_submit(co->loop, key, keylen, payload, len, (uint64_t)wait_ms, (uint64_t)bound_ms, &op->super, on_outcome,
                              &op->entry, &lane)) != NULL) {
        /* cannot happen (lane.h: submit never fails at once); the one shape of every start */
        free(op);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    if (lane != NULL) {
        free(op); /* the caller leads at once: on_outcome will not run */
        push_batch(L, lane);
        return 1;
    }
    return sk_op_yield(L, &op->super, cancel_submit);
}

static batch_t *check_batch(lua_State *L)
{
    batch_t *b = luaL_checkudata(L, 1, BATCH_MT);
    if (b->finished)
        luaL_error(L, "lane batch already finished");
    return b;
}

static int l_claim(lua_State *L)
{
    batch_t *b = check_batch(L);
    lua_Integer max = luaL_checkinteger(L, 2);
    luaL_argcheck(L, max >= 0 && max <= 1000000, 2, "must be between 0 and 1000000");
    size_t first = b->batch.n, added = sk_lane_claim(b->batch.lane, &b->batch, (size_t)max);
    lua_createtable(L, (int)added, 0);
    for (size_t i = 0; i != added; ++i) {
        size_t len;
        const char *p = sk_lane_payload(&b->batch, first + i, &len);
        lua_pushlstring(L, p, len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static void finish(batch_t *b, const char *const *results, const size_t *lens)
{
    b->finished = 1;
    sk_lane_finish(&b->batch, results, lens, NULL);
}

static int l_finish(lua_State *L)
{
    batch_t *b = check_batch(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    size_t n = b->batch.n;
    const char **results = n != 0 ? calloc(n, sizeof(*results)) : NULL;
    size_t *lens = n != 0 ? calloc(n, sizeof(*lens)) : NULL;
    for (size_t i = 0; i != n; ++i) {
        /* the strings stay on the table (argument 2) until finish copied them */
        if (lua_rawgeti(L, 2, (lua_Integer)i + 1) == LUA_TSTRING)
            results[i] = lua_tolstring(L, -1, &lens[i]);
        lua_pop(L, 1);
    }
    finish(b, results, lens);
    free(results);
    free(lens);
    return 0;
}

/* __close and __gc: a batch the leader did not finish answers every claimed caller with a failure and passes on */
static int l_close(lua_State *L)
{
    batch_t *b = luaL_checkudata(L, 1, BATCH_MT);
    if (!b->finished)
        finish(b, NULL, NULL);
    return 0;
}

static int l_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sk_lane_count());
    return 1;
}

static void open_lane(lua_State *L)
{
    static const luaL_Reg methods[] = {{"claim", l_claim}, {"finish", l_finish}, {NULL, NULL}};
    luaL_newmetatable(L, BATCH_MT);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    /* lane.count(): keys with a batch led right now, process-wide (tests, and a look at a hot sale) */
    static const luaL_Reg fns[] = {{"submit", l_submit}, {"count", l_count}, {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_setglobal(L, "lane");
}

const sk_binding_t sk_binding_lane = {.name = "lane",
                                      .thread_init = sk_lane_thread_init,
                                      .open = open_lane,
                                      .thread_dispose = sk_lane_thread_dispose,
                                      .shutdown = sk_lane_shutdown};
