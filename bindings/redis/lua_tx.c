/*
 * lua_tx.c: redis.optimistic{watch, read, tries, gate, gate_width, fn} and the `tx` object fn gets (tx:call,
 * tx:queue), on top of the state machine in optimistic.h (bindings/redis/README.md documents the Lua contract).
 *
 * The request coroutine parks once for the whole transaction. fn runs on a nested Lua thread, a fresh one per
 * attempt, resumed from the loop by the machine's on_fn/on_call; it may yield, but only through tx:call (any other
 * binding refuses: the nested thread is not a request coroutine). An error raised in fn ends the transaction and is
 * raised again in the caller by a small Lua wrapper (a C function cannot raise after it yielded).
 *
 * On a Redis Cluster the watched keys and the reads must be in one slot, and so must what fn reads and queues: a
 * transaction runs on one connection to one master. Anything else raises CROSSSLOT.
 */
#include <lauxlib.h>
#include <stdlib.h>
#include "../../core/op.h"
#include "err.h"
#include "lua_tx.h"
#include "lua_value.h"
#include "optimistic.h"
#include "slot.h"

typedef struct st_tx_op_t {
    sk_redis_optimistic_t tx; /* first; tx.super is the op the request coroutine parks on (core/op.h) */
    int fn_ref, tx_ref, thread_ref;
    lua_State *T; /* this attempt's thread */
    int nvalues;  /* what fn returned, on T */
    int yielded;
} tx_op_t;

static char lua_error_marker; /* first value pushed for a Lua error in fn; the Lua wrapper re-raises it */

static tx_op_t **check_tx(lua_State *L)
{
    return luaL_checkudata(L, 1, "sk.redis.tx");
}

/* drops the Lua anchors; only while the VM is alive (not after a cancel) */
static void tx_unref(tx_op_t *op, lua_State *L)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, op->tx_ref);
    *(tx_op_t **)lua_touserdata(L, -1) = NULL; /* a tx kept beyond fn raises instead of touching freed memory */
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, op->tx_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, op->fn_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, op->thread_ref);
    op->thread_ref = LUA_NOREF;
    op->T = NULL;
}

/* ===== fn on a nested thread ===== */

/* after a resume of fn: it yielded in tx:call (wait), raised, yielded otherwise (an error), or returned */
static void fn_status(tx_op_t *op, int status, int nres)
{
    lua_State *T = op->T;
    if (status == LUA_YIELD && op->tx.state == SK_REDIS_OPTIMISTIC_CALLING)
        return; /* tx:call sent its command; on_call resumes fn */
    if (status == LUA_YIELD) {
        lua_pop(T, nres);
        lua_pushliteral(T, "redis.optimistic: fn may only yield through tx:call (no other I/O inside fn)");
        status = LUA_ERRRUN;
    }
    if (status != LUA_OK) {
        const char *msg = lua_tostring(T, -1);
        luaL_traceback(T, T, msg != NULL ? msg : "(error object is not a string)", 0);
        sk_redis_optimistic_fn_failed(&op->tx, lua_tostring(T, -1));
        return;
    }
    op->nvalues = nres;
    sk_redis_optimistic_fn_done(&op->tx);
}

static void on_fn(sk_redis_optimistic_t *tx)
{
    tx_op_t *op = (tx_op_t *)tx;
    lua_State *L = op->tx.super.co->L;
    /* a fresh thread per attempt: one that raised is dead and cannot be reused */
    luaL_unref(L, LUA_REGISTRYINDEX, op->thread_ref);
    op->T = lua_newthread(L);
    op->thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    /* new threads copy the main thread's extra space, where core/co.c keeps "which request coroutine"; clear it so
     * bindings other than tx:call refuse to yield here instead of parking the wrong coroutine */
    *(void **)lua_getextraspace(op->T) = NULL;
    lua_rawgeti(op->T, LUA_REGISTRYINDEX, op->fn_ref);
    lua_rawgeti(op->T, LUA_REGISTRYINDEX, op->tx_ref);
    lua_createtable(op->T, (int)tx->nreads, 0);
    for (size_t i = 0; i != tx->nreads; ++i) {
        /* a sequence of the reads' values: nil holes stay holes (index by position), an error reply is false */
        redisReply *r = tx->read_replies[i];
        if (r->type == REDIS_REPLY_ERROR)
            lua_pushboolean(op->T, 0);
        else
            sk_redis_value_push(op->T, r, 0);
        lua_rawseti(op->T, -2, (lua_Integer)i + 1);
    }
    int nres = 0, status = lua_resume(op->T, NULL, 2, &nres);
    fn_status(op, status, nres);
}

static void on_call(sk_redis_optimistic_t *tx)
{
    tx_op_t *op = (tx_op_t *)tx;
    int n = sk_redis_value_push_result(op->T, tx->call_reply, tx->call_err);
    tx->call_reply = NULL;
    int nres = 0, status = lua_resume(op->T, NULL, n, &nres);
    fn_status(op, status, nres);
}

/* ===== tx methods, called by fn on the nested thread ===== */

static tx_op_t *check_tx_running(lua_State *L, const char *method)
{
    tx_op_t *op = *check_tx(L);
    if (op == NULL || op->T != L || op->tx.state != SK_REDIS_OPTIMISTIC_FN)
        luaL_error(L, "tx:%s: only inside the transaction's fn, while it runs", method);
    return op;
}

/* on a cluster, a command of fn must be in the transaction's slot: frees c and raises if not */
static void check_same_slot(lua_State *L, tx_op_t *op, sk_redis_cmd_t *c, const char *what)
{
    if (op->tx._cluster == NULL)
        return;
    int slot = sk_redis_slot_merge(op->tx._slot, sk_redis_slot_of_command(c->argc, c->argv, c->lens));
    if (slot == SK_REDIS_SLOT_CROSS || (op->tx._slot == SK_REDIS_SLOT_NONE && slot != SK_REDIS_SLOT_NONE)) {
        free(c);
        luaL_error(L, "%s: %s", what, sk_redis_slot_err_cross);
    }
}

static int l_tx_call(lua_State *L)
{
    tx_op_t *op = check_tx_running(L, "call");
    int top = lua_gettop(L);
    luaL_checkstring(L, 2);
    sk_redis_value_normalize_args(L, 2, top, "tx:call");
    if (!lua_isyieldable(L))
        return luaL_error(L, "tx:call: cannot yield here (inside a metamethod, table.sort or pcall'd C function)");
    sk_redis_cmd_t *c = sk_redis_value_to_cmd(L, 0, NULL, 2, top - 1);
    check_same_slot(L, op, c, "tx:call");
    int ret = sk_redis_optimistic_call(&op->tx, c);
    free(c);
    if (ret != 0) {
        lua_pushnil(L);
        lua_pushstring(L, sk_redis_err_closed);
        return 2;
    }
    return lua_yield(L, 0);
}

static int l_tx_queue(lua_State *L)
{
    tx_op_t *op = check_tx_running(L, "queue");
    int top = lua_gettop(L);
    luaL_checkstring(L, 2);
    sk_redis_value_normalize_args(L, 2, top, "tx:queue");
    sk_redis_cmd_t *c = sk_redis_value_to_cmd(L, 0, NULL, 2, top - 1);
    check_same_slot(L, op, c, "tx:queue");
    size_t n = sk_redis_optimistic_queue(&op->tx, c);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

/* ===== the end of the transaction ===== */

static int push_tx(lua_State *L, void *arg)
{
    tx_op_t *op = arg;
    sk_redis_optimistic_t *tx = &op->tx;
    int n;
    switch (tx->result) {
    case SK_REDIS_OPTIMISTIC_EXECUTED:
        sk_redis_value_push(L, tx->exec_reply, 0);
        lua_xmove(op->T, L, op->nvalues);
        n = 1 + op->nvalues;
        break;
    case SK_REDIS_OPTIMISTIC_READONLY:
        lua_xmove(op->T, L, op->nvalues);
        n = op->nvalues;
        break;
    case SK_REDIS_OPTIMISTIC_EXEC_ERROR:
        lua_pushboolean(L, 0);
        lua_pushstring(L, tx->errmsg);
        n = 2;
        break;
    case SK_REDIS_OPTIMISTIC_FN_ERROR:
        lua_pushlightuserdata(L, &lua_error_marker);
        lua_pushstring(L, tx->errmsg);
        n = 2;
        break;
    default: /* CONFLICT, BUSY, FAILED */
        lua_pushnil(L);
        lua_pushstring(L, tx->errstr != NULL ? tx->errstr : sk_redis_err_closed);
        n = 2;
        break;
    }
    tx_unref(op, L);
    sk_redis_optimistic_release(tx); /* frees op, now or once the last reply in flight is in */
    return n;
}

static void on_done(sk_op_t *super, sk_redis_optimistic_result_t result, const char *errstr)
{
    tx_op_t *op = (tx_op_t *)super;
    (void)result; /* push_tx reads it from the machine, as when it answers without yielding */
    super->err = errstr;
    if (op->yielded)
        sk_op_wake(super, push_tx);
    /* else: l_optimistic is still on the stack and pushes the result itself */
}

static void on_free(sk_redis_optimistic_t *tx)
{
    free(tx);
}

/* abandoned while parked (a drain that timed out): the VM may be gone, so no Lua; the machine hands back the
 * connection and the gate */
static void cancel_tx(void *arg)
{
    sk_redis_optimistic_release(&((tx_op_t *)arg)->tx);
}

static const sk_redis_optimistic_callbacks_t callbacks = {on_fn, on_call, on_done, on_free};

/* ===== redis.optimistic ===== */

static int l_optimistic(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    sk_co_t *co = sk_co_check(L);
    sk_redis_cluster_t *cluster = sk_redis_cluster_default();
    sk_redis_pool_t *pool = sk_redis_pool_default();
    if (pool == NULL && cluster == NULL)
        luaL_error(L, "redis is not available on this thread");
    lua_getfield(L, 1, "fn");
    luaL_argcheck(L, lua_isfunction(L, -1), 1, "fn must be a function");
    lua_getfield(L, 1, "tries");
    lua_Integer tries = luaL_optinteger(L, -1, sk_redis_optimistic_config.tries);
    luaL_argcheck(L, tries >= 1 && tries <= 1000, 1, "tries must be between 1 and 1000");
    lua_getfield(L, 1, "watch");
    if (!lua_isnil(L, -1))
        luaL_argcheck(L, lua_istable(L, -1), 1, "watch must be a table of keys");
    lua_getfield(L, 1, "read");
    if (!lua_isnil(L, -1))
        luaL_argcheck(L, lua_istable(L, -1), 1, "read must be a table of commands");
    lua_getfield(L, 1, "gate");
    int has_gate = lua_toboolean(L, 6);
    if (has_gate) {
        luaL_argcheck(L, lua_type(L, 6) == LUA_TSTRING || lua_isboolean(L, 6), 1, "gate must be a key (string) or true");
        luaL_argcheck(L, lua_type(L, 6) == LUA_TSTRING || (lua_istable(L, 4) && luaL_len(L, 4) > 0), 1,
                      "gate = true needs a watch key");
    }
    lua_getfield(L, 1, "gate_width");
    lua_Integer gate_width = luaL_optinteger(L, 7, 1);
    luaL_argcheck(L, gate_width >= 1 && gate_width <= 1000, 1, "gate_width must be between 1 and 1000");
    size_t nreads = lua_istable(L, 5) ? (size_t)luaL_len(L, 5) : 0;
    for (size_t i = 1; i <= nreads; ++i) {
        lua_rawgeti(L, 5, (lua_Integer)i);
        luaL_argcheck(L, lua_istable(L, -1) && luaL_len(L, -1) >= 1, 1, "each read must be a command table like {\"GET\", key}");
        lua_pop(L, 1);
    }

    sk_redis_cmd_t *watch = NULL, **reads = h2o_mem_alloc((nreads + 1) * sizeof(*reads));
    if (lua_istable(L, 4) && luaL_len(L, 4) > 0) {
        static const char *watch_word[] = {"WATCH"};
        watch = sk_redis_value_table_to_cmd(L, 4, 1, watch_word, "redis.optimistic watch");
    }
    for (size_t i = 0; i != nreads; ++i) {
        lua_rawgeti(L, 5, (lua_Integer)i + 1);
        reads[i] = sk_redis_value_table_to_cmd(L, -1, 0, NULL, "redis.optimistic read");
        lua_pop(L, 1);
    }
    int slot = SK_REDIS_SLOT_NONE;
    if (cluster != NULL) {
        if (watch != NULL)
            slot = sk_redis_slot_of_command(watch->argc, watch->argv, watch->lens);
        for (size_t i = 0; i != nreads; ++i)
            slot = sk_redis_slot_merge(slot, sk_redis_slot_of_command(reads[i]->argc, reads[i]->argv, reads[i]->lens));
        if (slot == SK_REDIS_SLOT_CROSS) {
            free(watch);
            for (size_t i = 0; i != nreads; ++i)
                free(reads[i]);
            free(reads);
            return luaL_error(L, "redis.optimistic: %s", sk_redis_slot_err_cross);
        }
    }
    tx_op_t *op = h2o_mem_alloc(sizeof(*op));
    *op = (tx_op_t){.fn_ref = LUA_NOREF, .tx_ref = LUA_NOREF, .thread_ref = LUA_NOREF};
    sk_redis_optimistic_init(&op->tx, co->loop, pool, &callbacks, (unsigned)tries, watch, reads, nreads);
    if (cluster != NULL)
        sk_redis_optimistic_set_cluster(&op->tx, cluster, slot);
    op->tx.super.co = co;
    lua_pushvalue(L, 2);
    op->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    *(tx_op_t **)lua_newuserdatauv(L, sizeof(tx_op_t *), 0) = op;
    luaL_setmetatable(L, "sk.redis.tx");
    op->tx_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    const char *gate_key = NULL;
    size_t gate_keylen = 0;
    if (has_gate) {
        /* gate = true: the first watch key, as WATCH will send it (normalized) */
        if (lua_type(L, 6) == LUA_TSTRING) {
            gate_key = lua_tolstring(L, 6, &gate_keylen);
        } else {
            gate_key = watch->argv[1];
            gate_keylen = watch->lens[1];
        }
    }
    sk_redis_optimistic_start(&op->tx, gate_key, gate_keylen, (unsigned)gate_width);
    if (op->tx.state == SK_REDIS_OPTIMISTIC_DONE) /* failed before any reply: answer without yielding */
        return push_tx(L, op);
    op->yielded = 1;
    return sk_op_yield(L, &op->tx.super, cancel_tx);
}

/* the Lua face of redis.optimistic: re-raises an error from fn in the caller (a C function cannot raise after it
 * yielded: its Lua caller resumes directly) */
static const char optimistic_lua[] = "local impl, marker = ...\n"
                                     "local pack, unpack = table.pack, table.unpack\n"
                                     "return function(opts)\n"
                                     "    local r = pack(impl(opts))\n"
                                     "    if r[1] == marker then error(r[2], 0) end\n"
                                     "    return unpack(r, 1, r.n)\n"
                                     "end\n";

/* ===== set-up ===== */

void sk_redis_tx_init(sk_config_t *cfg)
{
    sk_redis_optimistic_config_t *c = &sk_redis_optimistic_config;
    long long tries = sk_config_int(cfg, "redis.tries");
    c->tries = tries < 1 ? 1 : tries > 1000 ? 1000 : (unsigned)tries;
    long long backoff = sk_config_int(cfg, "redis.backoff_max_ms");
    c->backoff_max_ms = backoff < 1 ? 1 : backoff > 1000 ? 1000 : (unsigned)backoff;
    long long gate_backoff = sk_config_int(cfg, "redis.gate_backoff_max_ms");
    c->gate_backoff_max_ms = gate_backoff < 1 ? 1 : gate_backoff > 1000 ? 1000 : (unsigned)gate_backoff;
    long long wait = sk_config_int(cfg, "redis.gate_wait_ms");
    c->gate_wait_ms = wait < 1 ? 1 : (uint64_t)wait;
    long long queue = sk_config_int(cfg, "redis.gate_queue");
    c->gate_queue = queue < 0 ? 0 : (size_t)queue;
}

void sk_redis_tx_open(lua_State *L)
{
    static const luaL_Reg tx_methods[] = {{"call", l_tx_call}, {"queue", l_tx_queue}, {NULL, NULL}};
    luaL_newmetatable(L, "sk.redis.tx");
    luaL_newlib(L, tx_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    if (luaL_loadbuffer(L, optimistic_lua, sizeof(optimistic_lua) - 1, "=redis.optimistic") != LUA_OK)
        lua_error(L);
    lua_pushcfunction(L, l_optimistic);
    lua_pushlightuserdata(L, &lua_error_marker);
    lua_call(L, 2, 1);
    lua_setfield(L, -2, "optimistic");
    lua_pushstring(L, sk_redis_err_conflict);
    lua_setfield(L, -2, "CONFLICT");
}
