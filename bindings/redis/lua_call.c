/*
 * lua_call.c: the plain commands of the `redis` module, over the pool's shared pipelined connections:
 *
 *   redis.call(cmd, ...)                         one command
 *   redis.call_at(key, cmd, ...)                 one command on the master of key's slot (INFO, ROLE... of a node)
 *   redis.pipeline(function(p) p:call(...) end)  several commands on one connection, one yield
 *
 * (redis.evalsha is lua_eval.c.)
 * Each is an op in core/op.h's shape: send with the op, sk_op_yield, and from the completion cb(op, reply, errstr)
 * copy the reply (hiredis frees it when the callback returns) and sk_op_wake; the Lua values are pushed when the
 * coroutine resumes, from the loop, never inside hiredis.
 *
 * With redis+cluster:// each goes through route.h to the master of its slot (slot.h): a call's keys, a pipeline's
 * must all be in one slot, else the call raises (CROSSSLOT) without sending anything. A pipeline
 * leaves on one connection of that master; a command of it that is redirected follows on its own. evalsha computes
 */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/op.h"
#include "err.h"
#include "lua_call.h"
#include "lua_value.h"
#include "pool.h"
#include "reply.h"
#include "route.h"
#include "slot.h"

#define MAX_STACK_ARGS 32

/* the calling thread's pool (NULL with *cluster set in cluster mode), or raises */
static sk_redis_pool_t *check_pool(lua_State *L, sk_redis_cluster_t **cluster)
{
    *cluster = sk_redis_cluster_default();
    sk_redis_pool_t *pool = sk_redis_pool_default();
    if (pool == NULL && *cluster == NULL)
        luaL_error(L, "redis is not available on this thread");
    return pool;
}

/* ===== redis.call ===== */

typedef struct st_call_op_t {
    sk_op_t super; /* super.err: the completion's errstr */
    redisReply *reply;
    int cancelled;
} call_op_t;

static int push_call(lua_State *L, void *arg)
{
    call_op_t *op = arg;
    int n = sk_redis_value_push_result(L, op->reply, op->super.err);
    free(op);
    return n;
}

static void on_call_reply(sk_op_t *_op, redisReply *reply, const char *errstr)
{
    call_op_t *op = (call_op_t *)_op;
    if (op->cancelled) {
        free(op);
        return;
    }
    op->reply = reply != NULL ? sk_redis_reply_dup(reply) : NULL;
    op->super.err = errstr;
    sk_op_wake(&op->super, push_call);
}

static void cancel_call(void *arg)
{
    call_op_t *op = arg;
    op->cancelled = 1; /* the reply callback frees it; it always comes, at worst after the command timeout */
}

/* the command is the Lua arguments first..top; at_slot: the slot whose master it goes to (redis.call_at), or
 * SK_REDIS_SLOT_NONE for the slot of its own keys (redis.call) */
static int call(lua_State *L, int first, int at_slot, const char *name)
{
    int argc = lua_gettop(L) - first + 1;
    luaL_checkstring(L, first);
    sk_redis_value_normalize_args(L, first, lua_gettop(L), name);
    sk_co_t *co = sk_co_check(L);
    sk_redis_cluster_t *cluster;
    sk_redis_pool_t *pool = check_pool(L, &cluster);
    const char *argv_s[MAX_STACK_ARGS], **argv = argc <= MAX_STACK_ARGS ? argv_s : h2o_mem_alloc(argc * sizeof(*argv));
    size_t lens_s[MAX_STACK_ARGS], *lens = argc <= MAX_STACK_ARGS ? lens_s : h2o_mem_alloc(argc * sizeof(*lens));
    for (int i = 0; i != argc; ++i)
        argv[i] = lua_tolstring(L, first + i, &lens[i]);
    int slot = cluster != NULL ? sk_redis_slot_merge(at_slot, sk_redis_slot_of_command(argc, argv, lens)) : SK_REDIS_SLOT_NONE;
    if (slot == SK_REDIS_SLOT_CROSS) {
        if (argv != argv_s) {
            free(argv);
            free(lens);
        }
        return luaL_error(L, "%s: %s", name, sk_redis_slot_err_cross);
    }
    call_op_t *op = h2o_mem_alloc(sizeof(*op));
    *op = (call_op_t){.super.co = co};
    /* hiredis copies the arguments into its output buffer before returning (route.c copies them for its resends) */
    const char *err = cluster != NULL ? sk_redis_route_command(cluster, NULL, &op->super, slot, argc, argv, lens, on_call_reply)
                                      : sk_redis_pool_command(pool, &op->super, argc, argv, lens, on_call_reply);
    if (argv != argv_s) {
        free(argv);
        free(lens);
    }
    if (err != NULL) {
        free(op);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    return sk_op_yield(L, &op->super, cancel_call);
}

static int l_call(lua_State *L)
{
    return call(L, 1, SK_REDIS_SLOT_NONE, "redis.call");
}

/* redis.call_at(key, cmd, ...): cmd (keyless, or with keys in key's slot) to the master that owns key's slot */
static int l_call_at(lua_State *L)
{
    size_t len;
    const char *key = luaL_checklstring(L, 1, &len);
    return call(L, 2, sk_redis_slot_of_key(key, len), "redis.call_at");
}

/* ===== redis.pipeline ===== */

typedef struct st_pipe_op_t pipe_op_t;
/* one command of the pipeline: its own op (no coroutine waits on it), completed with its reply */
typedef struct st_pipe_slot_t {
    sk_op_t super;
    pipe_op_t *op;
    redisReply *reply;
} pipe_slot_t;
struct st_pipe_op_t {
    sk_op_t super; /* super.err: the first transport error */
    size_t n, remaining;
    int cancelled;
    pipe_slot_t slots[1];
};

static void free_pipe(pipe_op_t *op)
{
    for (size_t i = 0; i != op->n; ++i)
        if (op->slots[i].reply != NULL)
            freeReplyObject(op->slots[i].reply);
    free(op);
}

static int push_pipe(lua_State *L, void *arg)
{
    pipe_op_t *op = arg;
    if (op->super.err != NULL) {
        lua_pushnil(L);
        lua_pushstring(L, op->super.err);
        free_pipe(op);
        return 2;
    }
    lua_createtable(L, (int)op->n, 1);
    for (size_t i = 0; i != op->n; ++i) {
        /* each entry is {value} or {false, msg} for an error reply: the redis.call contract packed in a table */
        lua_createtable(L, 2, 0);
        int nv = sk_redis_value_push_result(L, op->slots[i].reply, NULL);
        op->slots[i].reply = NULL;
        for (int j = nv; j >= 1; --j)
            lua_rawseti(L, -1 - j, j);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_pushinteger(L, (lua_Integer)op->n);
    lua_setfield(L, -2, "n");
    free(op);
    return 1;
}

static void on_pipe_reply(sk_op_t *slot_op, redisReply *reply, const char *errstr)
{
    pipe_slot_t *slot = (pipe_slot_t *)slot_op;
    pipe_op_t *op = slot->op;
    if (reply != NULL)
        slot->reply = sk_redis_reply_dup(reply);
    else if (op->super.err == NULL)
        op->super.err = errstr;
    if (--op->remaining != 0)
        return;
    if (op->cancelled)
        free_pipe(op);
    else
        sk_op_wake(&op->super, push_pipe);
}

static void cancel_pipe(void *arg)
{
    ((pipe_op_t *)arg)->cancelled = 1;
}

static int l_pipe_call(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkstring(L, 2);
    int top = lua_gettop(L);
    sk_redis_value_normalize_args(L, 2, top, "p:call");
    lua_createtable(L, top - 1, 0);
    for (int i = 2; i <= top; ++i) {
        lua_pushvalue(L, i);
        lua_rawseti(L, -2, i - 1);
    }
    lua_rawseti(L, 1, luaL_len(L, 1) + 1);
    return 0;
}

/* the recorded commands of the pipeline table at p, as commands */
static sk_redis_cmd_t **pipeline_cmds(lua_State *L, int p, size_t n)
{
    sk_redis_cmd_t **cmds = h2o_mem_alloc(n * sizeof(*cmds));
    for (size_t i = 0; i != n; ++i) {
        lua_rawgeti(L, p, (lua_Integer)i + 1);
        int base = lua_gettop(L), argc = sk_redis_value_push_array_args(L, -1, "p:call");
        cmds[i] = sk_redis_value_to_cmd(L, 0, NULL, base + 1, argc);
        lua_settop(L, p);
    }
    return cmds;
}

/* a cluster's pipeline: one slot for all its keyed commands (keyless ones go along), sent on one connection of
 * that slot's master so they keep their order; a redirected command follows on its own (route.h) */
static int pipeline_cluster(lua_State *L, sk_co_t *co, sk_redis_cluster_t *cluster, int p, size_t n)
{
    sk_redis_cmd_t **cmds = pipeline_cmds(L, p, n);
    int slot = SK_REDIS_SLOT_NONE;
    for (size_t i = 0; i != n; ++i)
        slot = sk_redis_slot_merge(slot, sk_redis_slot_of_command(cmds[i]->argc, cmds[i]->argv, cmds[i]->lens));
    if (slot == SK_REDIS_SLOT_CROSS) {
        for (size_t i = 0; i != n; ++i)
            free(cmds[i]);
        free(cmds);
        return luaL_error(L, "redis.pipeline: %s", sk_redis_slot_err_cross);
    }
    sk_redis_pool_t *pool = sk_redis_cluster_pool(cluster, slot);
    sk_redis_conn_t *conn = pool != NULL ? sk_redis_pool_shared(pool) : NULL;
    pipe_op_t *op = h2o_mem_alloc(offsetof(pipe_op_t, slots) + n * sizeof(pipe_slot_t));
    *op = (pipe_op_t){.super.co = co, .n = n};
    for (size_t i = 0; i != n; ++i) {
        op->slots[i] = (pipe_slot_t){.op = op};
        const char *err;
        if (op->super.err == NULL) {
            /* route.h's start does not fail at once today (a send that cannot leave is retried); if it did, the
             * commands sent still answer and the rest are not sent, as on a closing connection */
            if ((err = sk_redis_route_command(cluster, conn, &op->slots[i].super, slot, cmds[i]->argc, cmds[i]->argv, cmds[i]->lens,
                                              on_pipe_reply)) != NULL) {
                op->super.err = err;
                op->n = i;
            } else {
                ++op->remaining;
            }
        }
        free(cmds[i]);
    }
    free(cmds);
    if (op->remaining == 0) {
        const char *err = op->super.err;
        free(op);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    return sk_op_yield(L, &op->super, cancel_pipe);
}

static int l_pipeline(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    sk_co_t *co = sk_co_check(L);
    sk_redis_cluster_t *cluster;
    sk_redis_pool_t *pool = check_pool(L, &cluster);
    /* collect: p:call only records, so the function runs without yielding */
    lua_newtable(L);
    luaL_setmetatable(L, "sk.redis.pipeline");
    int p = lua_gettop(L);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, p);
    lua_call(L, 1, 0);
    size_t n = (size_t)luaL_len(L, p);
    if (n == 0) {
        lua_createtable(L, 0, 1);
        lua_pushinteger(L, 0);
        lua_setfield(L, -2, "n");
        return 1;
    }
    if (cluster != NULL)
        return pipeline_cluster(L, co, cluster, p, n);
    sk_redis_conn_t *conn = sk_redis_pool_shared(pool); /* one connection: the commands leave in one write */
    if (conn == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, sk_redis_err_unavailable);
        return 2;
    }
    pipe_op_t *op = h2o_mem_alloc(offsetof(pipe_op_t, slots) + n * sizeof(pipe_slot_t));
    *op = (pipe_op_t){.super.co = co, .n = n};
    for (size_t i = 0; i != n; ++i) {
        op->slots[i] = (pipe_slot_t){.op = op};
        lua_rawgeti(L, p, (lua_Integer)i + 1);
        int base = lua_gettop(L), argc = sk_redis_value_push_array_args(L, -1, "p:call");
        sk_redis_cmd_t *c = sk_redis_value_to_cmd(L, 0, NULL, base + 1, argc);
        lua_settop(L, p);
        const char *err = sk_redis_conn_command(conn, &op->slots[i].super, c->argc, c->argv, c->lens, on_pipe_reply);
        free(c);
        if (err != NULL) {
            op->super.err = err; /* sk_redis_err_closed */
            op->n = i;           /* the ones sent still answer (with an error, the connection is closing) */
            break;
        }
        ++op->remaining;
    }
    if (op->remaining == 0) {
        free(op);
        lua_pushnil(L);
        lua_pushstring(L, sk_redis_err_closed);
        return 2;
    }
    return sk_op_yield(L, &op->super, cancel_pipe);
}

/* ===== opening ===== */

void sk_redis_call_open(lua_State *L)
{
    static const luaL_Reg pipe_methods[] = {{"call", l_pipe_call}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"call", l_call}, {"call_at", l_call_at}, {"pipeline", l_pipeline}, {NULL, NULL}};

    luaL_newmetatable(L, "sk.redis.pipeline");
    luaL_newlib(L, pipe_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_setfuncs(L, funcs, 0);
}
