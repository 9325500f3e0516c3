/*
 * lua_call.c: the plain commands of the `redis` module, over the pool's shared pipelined connections:
 *
 *   redis.call(cmd, ...)                         one command
 *   redis.pipeline(function(p) p:call(...) end)  several commands on one connection, one yield
 *   redis.evalsha(script, keys, args)            EVALSHA with the script loaded on demand (NOSCRIPT retried once)
 *
 * Each is an op in core/op.h's shape: send with the op, sk_op_yield, and from the completion cb(op, reply, errstr)
 * copy the reply (hiredis frees it when the callback returns) and sk_op_wake; the Lua values are pushed when the
 * coroutine resumes, from the loop, never inside hiredis.
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

#define MAX_STACK_ARGS 32

/* the calling thread's pool, or raises */
static sk_redis_pool_t *check_pool(lua_State *L)
{
    sk_redis_pool_t *pool = sk_redis_pool_default();
    if (pool == NULL)
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

static int l_call(lua_State *L)
{
    int argc = lua_gettop(L);
    luaL_checkstring(L, 1);
    sk_redis_value_normalize_args(L, 1, argc, "redis.call");
    sk_co_t *co = sk_co_check(L);
    sk_redis_pool_t *pool = check_pool(L);
    const char *argv_s[MAX_STACK_ARGS], **argv = argc <= MAX_STACK_ARGS ? argv_s : h2o_mem_alloc(argc * sizeof(*argv));
    size_t lens_s[MAX_STACK_ARGS], *lens = argc <= MAX_STACK_ARGS ? lens_s : h2o_mem_alloc(argc * sizeof(*lens));
    for (int i = 0; i != argc; ++i)
        argv[i] = lua_tolstring(L, i + 1, &lens[i]);
    call_op_t *op = h2o_mem_alloc(sizeof(*op));
    *op = (call_op_t){.super.co = co};
    /* hiredis copies the arguments into its output buffer before returning */
    const char *err = sk_redis_pool_command(pool, &op->super, argc, argv, lens, on_call_reply);
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

static int l_pipeline(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    sk_co_t *co = sk_co_check(L);
    sk_redis_pool_t *pool = check_pool(L);
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
        int ret = sk_redis_conn_command(conn, &op->slots[i].super, c->argc, c->argv, c->lens, on_pipe_reply);
        free(c);
        if (ret != 0) {
            op->super.err = sk_redis_err_closed;
            op->n = i; /* the ones sent still answer (with an error, the connection is closing) */
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

/* ===== redis.evalsha ===== */

typedef struct st_eval_op_t {
    sk_op_t super; /* super.err: the completion's errstr */
    sk_redis_pool_t *pool;
    sk_redis_cmd_t *cmd;  /* EVALSHA sha nkeys keys... args... (argv[1] is the sha, or empty while unknown) */
    sk_redis_cmd_t *load; /* SCRIPT LOAD script */
    char sha[48];         /* learnt from SCRIPT LOAD, stored in the VM's cache at resume */
    int retried, awaiting, cancelled;
    redisReply *reply;
} eval_op_t;

static void free_eval(eval_op_t *op)
{
    if (op->reply != NULL)
        freeReplyObject(op->reply);
    free(op->cmd);
    free(op->load);
    free(op);
}

static int push_eval(lua_State *L, void *arg)
{
    eval_op_t *op = arg;
    if (op->sha[0] != '\0') {
        /* the per-VM cache script -> sha (upvalue-free: a registry table) */
        lua_getfield(L, LUA_REGISTRYINDEX, "sk.redis.sha");
        lua_pushlstring(L, op->load->argv[2], op->load->lens[2]);
        lua_pushstring(L, op->sha);
        lua_rawset(L, -3);
        lua_pop(L, 1);
    }
    int n = sk_redis_value_push_result(L, op->reply, op->super.err);
    op->reply = NULL;
    free_eval(op);
    return n;
}

static void on_eval_reply(sk_op_t *_op, redisReply *reply, const char *errstr);

static void finish_eval(eval_op_t *op)
{
    if (op->cancelled)
        free_eval(op);
    else
        sk_op_wake(&op->super, push_eval);
}

static void on_load_reply(sk_op_t *_op, redisReply *reply, const char *errstr)
{
    eval_op_t *op = (eval_op_t *)_op;
    (void)errstr;
    if (reply != NULL && reply->type == REDIS_REPLY_STRING && reply->len < sizeof(op->sha))
        memcpy(op->sha, reply->str, reply->len + 1);
    /* normally the EVAL(SHA) reply, pipelined right behind, completes the op; unless it could not be sent */
    if (--op->awaiting == 0) {
        op->super.err = sk_redis_err_closed;
        finish_eval(op);
    }
}

/* SCRIPT LOAD then EVALSHA, pipelined on one connection (the sha is computed by the server, so EVALSHA uses the
 * one it will return: we send EVAL-by-text only for the first use, see send_eval) */
static const char *send_eval(eval_op_t *op, sk_redis_conn_t *conn, int with_load)
{
    if (conn == NULL)
        return sk_redis_err_unavailable;
    if (with_load) {
        if (sk_redis_conn_command(conn, &op->super, op->load->argc, op->load->argv, op->load->lens, on_load_reply) != 0)
            return sk_redis_err_unavailable;
        ++op->awaiting;
    }
    if (sk_redis_conn_command(conn, &op->super, op->cmd->argc, op->cmd->argv, op->cmd->lens, on_eval_reply) != 0)
        return op->awaiting != 0 ? NULL : sk_redis_err_unavailable; /* the LOAD reply will fail too: see on_load_reply */
    ++op->awaiting;
    return NULL;
}

static void on_eval_reply(sk_op_t *_op, redisReply *reply, const char *errstr)
{
    eval_op_t *op = (eval_op_t *)_op;
    if (--op->awaiting != 0)
        return; /* cannot happen: the LOAD reply precedes this one on the same connection */
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0 && !op->retried &&
        !op->cancelled) {
        /* SCRIPT FLUSH, a restarted or a different server: load it again and retry once, transparently */
        op->retried = 1;
        if (send_eval(op, sk_redis_pool_shared(op->pool), 1) == NULL)
            return;
    }
    op->reply = reply != NULL ? sk_redis_reply_dup(reply) : NULL;
    op->super.err = errstr != NULL ? errstr : reply == NULL ? sk_redis_err_closed : NULL;
    finish_eval(op);
}

static void cancel_eval(void *arg)
{
    ((eval_op_t *)arg)->cancelled = 1;
}

static int l_evalsha(lua_State *L)
{
    size_t slen;
    luaL_checklstring(L, 1, &slen);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    sk_co_t *co = sk_co_check(L);
    sk_redis_pool_t *pool = check_pool(L);
    int nkeys = lua_isnil(L, 2) ? 0 : sk_redis_value_push_array_args(L, 2, "redis.evalsha keys");
    int nargs = lua_isnil(L, 3) ? 0 : sk_redis_value_push_array_args(L, 3, "redis.evalsha args");
    char nkeys_s[16];
    snprintf(nkeys_s, sizeof(nkeys_s), "%d", nkeys);

    lua_getfield(L, LUA_REGISTRYINDEX, "sk.redis.sha");
    lua_pushvalue(L, 1);
    lua_rawget(L, -2);
    const char *sha = lua_tostring(L, -1);
    eval_op_t *op = h2o_mem_alloc(sizeof(*op));
    *op = (eval_op_t){.super.co = co, .pool = pool};
    const char *load_words[] = {"SCRIPT", "LOAD"};
    op->load = sk_redis_value_to_cmd(L, 2, load_words, 1, 1);
    /* first use on this VM: EVAL by text (one round trip) behind a SCRIPT LOAD that teaches us the sha */
    const char *words[] = {sha != NULL ? "EVALSHA" : "EVAL", sha != NULL ? sha : lua_tostring(L, 1), nkeys_s};
    op->cmd = sk_redis_value_to_cmd(L, 3, words, 4, nkeys + nargs);
    lua_pop(L, 2);
    /* EVAL by text never answers NOSCRIPT; a cached sha may (SCRIPT FLUSH, restarted server) and is retried */
    op->retried = sha == NULL;
    const char *err = send_eval(op, sk_redis_pool_shared(pool), sha == NULL);
    if (err != NULL && op->awaiting == 0) {
        free_eval(op);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    return sk_op_yield(L, &op->super, cancel_eval);
}

/* ===== opening ===== */

void sk_redis_call_open(lua_State *L)
{
    static const luaL_Reg pipe_methods[] = {{"call", l_pipe_call}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"call", l_call}, {"pipeline", l_pipeline}, {"evalsha", l_evalsha}, {NULL, NULL}};

    luaL_newmetatable(L, "sk.redis.pipeline");
    luaL_newlib(L, pipe_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "sk.redis.sha");

    luaL_setfuncs(L, funcs, 0);
}
