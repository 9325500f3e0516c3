/*
 * redis_lua.c: the `redis` Lua module (bindings/README.md's redis section documents it) on top of redis_pool.
 *
 *   redis.call(cmd, ...)                      one command pipelined over a shared connection
 *   redis.pipeline(function(p) p:call(...) end)  several commands, one yield
 *   redis.evalsha(script, keys, args)          EVALSHA with the script loaded on demand (NOSCRIPT retried)
 *   redis.optimistic{...}                      lives in redis_tx.c (the transaction state machine and its gate)
 *
 * Replies are copied out of hiredis in its callback and turned into Lua values when the coroutine resumes
 * (core/co.h), never inside hiredis.
 */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/co.h"
#include "../../core/config.h"
#include "../../core/health.h"
#include "../../core/log.h"
#include "../bindings.h"
#include "lua_value.h"

static sk_redis_pool_config_t pool_cfg;

#define MAX_STACK_ARGS 32

/* ===== Lua values <-> Redis ===== */

/* turns argument slots [first, last] into strings in place (numbers allowed, anything else is misuse) */
void sk_redis_lua_normalize_args(lua_State *L, int first, int last, const char *what)
{
    for (int i = first; i <= last; ++i) {
        switch (lua_type(L, i)) {
        case LUA_TSTRING:
            break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, i)) {
                lua_tolstring(L, i, NULL);
            } else {
                /* %.17g: 3.0 becomes "3", which INCRBY accepts; Lua's own tostring would give "3.0" */
                char buf[64];
                snprintf(buf, sizeof(buf), "%.17g", (double)lua_tonumber(L, i));
                lua_pushstring(L, buf);
                lua_replace(L, i);
            }
            break;
        default:
            luaL_error(L, "%s: argument %d must be a string or a number (got %s)", what, i - first + 1, luaL_typename(L, i));
        }
    }
}

/* pushes the elements of the array at idx, normalized; returns how many */
int sk_redis_lua_push_array_args(lua_State *L, int idx, const char *what)
{
    idx = lua_absindex(L, idx);
    int n = (int)luaL_len(L, idx);
    luaL_checkstack(L, n + 8, "too many redis arguments");
    int top = lua_gettop(L);
    for (int i = 1; i <= n; ++i)
        lua_rawgeti(L, idx, i);
    sk_redis_lua_normalize_args(L, top + 1, top + n, what);
    return n;
}

/* copies stack slots [first, first + n) (already normalized), after `nprefix` literal words */
sk_redis_cmdv_t *sk_redis_cmdv_new(lua_State *L, int nprefix, const char **prefix, int first, int n)
{
    size_t bytes = 0;
    for (int i = 0; i != n; ++i) {
        size_t len;
        lua_tolstring(L, first + i, &len);
        bytes += len + 1;
    }
    for (int i = 0; i != nprefix; ++i)
        bytes += strlen(prefix[i]) + 1;
    int argc = nprefix + n;
    sk_redis_cmdv_t *c = h2o_mem_alloc(sizeof(*c) + argc * (sizeof(char *) + sizeof(size_t)) + bytes);
    c->argc = argc;
    c->argv = (const char **)(c + 1);
    c->lens = (size_t *)(c->argv + argc);
    char *p = (char *)(c->lens + argc);
    for (int i = 0; i != argc; ++i) {
        size_t len;
        const char *s = i < nprefix ? prefix[i] : lua_tolstring(L, first + i - nprefix, &len);
        if (i < nprefix)
            len = strlen(s);
        memcpy(p, s, len);
        p[len] = '\0';
        c->argv[i] = p;
        c->lens[i] = len;
        p += len + 1;
    }
    return c;
}

sk_redis_cmdv_t *sk_redis_cmdv_from_table(lua_State *L, int idx, int nprefix, const char **prefix, const char *what)
{
    int base = lua_gettop(L), n = sk_redis_lua_push_array_args(L, idx, what);
    sk_redis_cmdv_t *c = sk_redis_cmdv_new(L, nprefix, prefix, base + 1, n);
    lua_settop(L, base);
    return c;
}

/* pushes one reply as a single value: nil -> nil at the top level, false inside arrays (keeps them sequences, as
 * Redis's own Lua does), error -> {err = msg} inside arrays */
void sk_redis_lua_push_value(lua_State *L, const redisReply *r, int nested)
{
    luaL_checkstack(L, 4, "redis reply too deep");
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(L, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        lua_pushinteger(L, r->integer);
        break;
    case REDIS_REPLY_ARRAY:
        lua_createtable(L, (int)r->elements, 0);
        for (size_t i = 0; i != r->elements; ++i) {
            sk_redis_lua_push_value(L, r->element[i], 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    case REDIS_REPLY_ERROR:
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, r->str, r->len);
        lua_setfield(L, -2, "err");
        break;
    default: /* REDIS_REPLY_NIL */
        if (nested)
            lua_pushboolean(L, 0);
        else
            lua_pushnil(L);
        break;
    }
}

/* the redis.call contract: value | false, msg (error reply) | nil, err (no reply). Frees reply. */
int sk_redis_lua_push_result(lua_State *L, redisReply *reply, const char *errstr)
{
    int n = 1;
    if (reply == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, errstr != NULL ? errstr : sk_redis_err_closed);
        return 2;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        lua_pushboolean(L, 0);
        lua_pushlstring(L, reply->str, reply->len);
        n = 2;
    } else {
        sk_redis_lua_push_value(L, reply, 0);
    }
    freeReplyObject(reply);
    return n;
}

sk_redis_pool_t *sk_redis_lua_check_pool(lua_State *L)
{
    sk_redis_pool_t *pool = sk_redis_pool_default();
    if (pool == NULL)
        luaL_error(L, "redis is not available on this thread");
    return pool;
}

/* ===== redis.call ===== */

typedef struct st_call_op_t {
    sk_co_t *co;
    redisReply *reply;
    const char *errstr;
    int cancelled;
} call_op_t;

static int push_call(lua_State *L, void *arg)
{
    call_op_t *op = arg;
    int n = sk_redis_lua_push_result(L, op->reply, op->errstr);
    free(op);
    return n;
}

static void on_call_reply(redisReply *reply, const char *errstr, void *data)
{
    call_op_t *op = data;
    if (op->cancelled) {
        free(op);
        return;
    }
    op->reply = reply != NULL ? sk_redis_reply_dup(reply) : NULL;
    op->errstr = errstr;
    sk_co_wake(op->co, push_call, op);
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
    sk_redis_lua_normalize_args(L, 1, argc, "redis.call");
    sk_co_t *co = sk_co_check(L);
    sk_redis_pool_t *pool = sk_redis_lua_check_pool(L);
    const char *argv_s[MAX_STACK_ARGS], **argv = argc <= MAX_STACK_ARGS ? argv_s : h2o_mem_alloc(argc * sizeof(*argv));
    size_t lens_s[MAX_STACK_ARGS], *lens = argc <= MAX_STACK_ARGS ? lens_s : h2o_mem_alloc(argc * sizeof(*lens));
    for (int i = 0; i != argc; ++i)
        argv[i] = lua_tolstring(L, i + 1, &lens[i]);
    call_op_t *op = h2o_mem_alloc(sizeof(*op));
    *op = (call_op_t){.co = co};
    /* hiredis copies the arguments into its output buffer before returning */
    const char *err = sk_redis_pool_command(pool, argc, argv, lens, on_call_reply, op);
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
    return sk_co_yield(L, co, cancel_call, op);
}

/* ===== redis.pipeline ===== */

typedef struct st_pipe_op_t pipe_op_t;
typedef struct st_pipe_slot_t {
    pipe_op_t *op;
    redisReply *reply;
} pipe_slot_t;
struct st_pipe_op_t {
    sk_co_t *co;
    size_t n, remaining;
    const char *errstr;
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
    if (op->errstr != NULL) {
        lua_pushnil(L);
        lua_pushstring(L, op->errstr);
        free_pipe(op);
        return 2;
    }
    lua_createtable(L, (int)op->n, 1);
    for (size_t i = 0; i != op->n; ++i) {
        /* each entry is {value} or {false, msg} for an error reply: the redis.call contract packed in a table */
        lua_createtable(L, 2, 0);
        int nv = sk_redis_lua_push_result(L, op->slots[i].reply, NULL);
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

static void on_pipe_reply(redisReply *reply, const char *errstr, void *data)
{
    pipe_slot_t *slot = data;
    pipe_op_t *op = slot->op;
    if (reply != NULL)
        slot->reply = sk_redis_reply_dup(reply);
    else if (op->errstr == NULL)
        op->errstr = errstr;
    if (--op->remaining != 0)
        return;
    if (op->cancelled)
        free_pipe(op);
    else
        sk_co_wake(op->co, push_pipe, op);
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
    sk_redis_lua_normalize_args(L, 2, top, "p:call");
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
    sk_redis_pool_t *pool = sk_redis_lua_check_pool(L);
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
    *op = (pipe_op_t){.co = co, .n = n};
    for (size_t i = 0; i != n; ++i) {
        op->slots[i] = (pipe_slot_t){.op = op};
        lua_rawgeti(L, p, (lua_Integer)i + 1);
        int base = lua_gettop(L), argc = sk_redis_lua_push_array_args(L, -1, "p:call");
        sk_redis_cmdv_t *c = sk_redis_cmdv_new(L, 0, NULL, base + 1, argc);
        lua_settop(L, p);
        int ret = sk_redis_conn_command(conn, c->argc, c->argv, c->lens, on_pipe_reply, &op->slots[i]);
        free(c);
        if (ret != 0) {
            op->errstr = sk_redis_err_closed;
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
    return sk_co_yield(L, co, cancel_pipe, op);
}

/* ===== redis.evalsha ===== */

typedef struct st_eval_op_t {
    sk_co_t *co;
    sk_redis_pool_t *pool;
    sk_redis_cmdv_t *cmd;  /* EVALSHA sha nkeys keys... args... (argv[1] is the sha, or empty while unknown) */
    sk_redis_cmdv_t *load; /* SCRIPT LOAD script */
    char sha[48];          /* learnt from SCRIPT LOAD, stored in the VM's cache at resume */
    int retried, awaiting, cancelled;
    redisReply *reply;
    const char *errstr;
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
    int n = sk_redis_lua_push_result(L, op->reply, op->errstr);
    op->reply = NULL;
    free_eval(op);
    return n;
}

static void on_eval_reply(redisReply *reply, const char *errstr, void *data);

static void finish_eval(eval_op_t *op)
{
    if (op->cancelled)
        free_eval(op);
    else
        sk_co_wake(op->co, push_eval, op);
}

static void on_load_reply(redisReply *reply, const char *errstr, void *data)
{
    eval_op_t *op = data;
    (void)errstr;
    if (reply != NULL && reply->type == REDIS_REPLY_STRING && reply->len < sizeof(op->sha))
        memcpy(op->sha, reply->str, reply->len + 1);
    /* normally the EVAL(SHA) reply, pipelined right behind, completes the op; unless it could not be sent */
    if (--op->awaiting == 0) {
        op->errstr = sk_redis_err_closed;
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
        if (sk_redis_conn_command(conn, op->load->argc, op->load->argv, op->load->lens, on_load_reply, op) != 0)
            return sk_redis_err_unavailable;
        ++op->awaiting;
    }
    if (sk_redis_conn_command(conn, op->cmd->argc, op->cmd->argv, op->cmd->lens, on_eval_reply, op) != 0)
        return op->awaiting != 0 ? NULL : sk_redis_err_unavailable; /* the LOAD reply will fail too: see on_load_reply */
    ++op->awaiting;
    return NULL;
}

static void on_eval_reply(redisReply *reply, const char *errstr, void *data)
{
    eval_op_t *op = data;
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
    op->errstr = errstr != NULL ? errstr : reply == NULL ? sk_redis_err_closed : NULL;
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
    sk_redis_pool_t *pool = sk_redis_lua_check_pool(L);
    int nkeys = lua_isnil(L, 2) ? 0 : sk_redis_lua_push_array_args(L, 2, "redis.evalsha keys");
    int nargs = lua_isnil(L, 3) ? 0 : sk_redis_lua_push_array_args(L, 3, "redis.evalsha args");
    char nkeys_s[16];
    snprintf(nkeys_s, sizeof(nkeys_s), "%d", nkeys);

    lua_getfield(L, LUA_REGISTRYINDEX, "sk.redis.sha");
    lua_pushvalue(L, 1);
    lua_rawget(L, -2);
    const char *sha = lua_tostring(L, -1);
    eval_op_t *op = h2o_mem_alloc(sizeof(*op));
    *op = (eval_op_t){.co = co, .pool = pool};
    const char *load_words[] = {"SCRIPT", "LOAD"};
    op->load = sk_redis_cmdv_new(L, 2, load_words, 1, 1);
    /* first use on this VM: EVAL by text (one round trip) behind a SCRIPT LOAD that teaches us the sha */
    const char *words[] = {sha != NULL ? "EVALSHA" : "EVAL", sha != NULL ? sha : lua_tostring(L, 1), nkeys_s};
    op->cmd = sk_redis_cmdv_new(L, 3, words, 4, nkeys + nargs);
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
    return sk_co_yield(L, co, cancel_eval, op);
}

/* ===== the binding ===== */

static int init(sk_config_t *cfg, unsigned nthreads)
{
    (void)nthreads;
    char err[256];
    const char *url = sk_config_get_string(cfg, "redis.url", "redis://127.0.0.1:6379/0");
    if (sk_redis_pool_parse_url(&pool_cfg, url, err, sizeof(err)) != 0) {
        sk_error("%s", err);
        return -1;
    }
    long long pool_size = sk_config_get_int(cfg, "redis.pool_size", 4);
    pool_cfg.pool_size = pool_size < 1 ? 1 : pool_size > 64 ? 64 : (unsigned)pool_size;
    pool_cfg.lease_max = (unsigned)sk_config_get_int(cfg, "redis.lease_size", pool_cfg.pool_size * 4);
    if (pool_cfg.lease_max < 1)
        pool_cfg.lease_max = 1;
    pool_cfg.lease_queue = (unsigned)sk_config_get_int(cfg, "redis.lease_queue", 1024);
    pool_cfg.connect_timeout_ms = (uint64_t)sk_config_get_int(cfg, "redis.connect_timeout_ms", 1000);
    pool_cfg.command_timeout_ms = (uint64_t)sk_config_get_int(cfg, "redis.command_timeout_ms", 1000);
    pool_cfg.lease_wait_ms = (uint64_t)sk_config_get_int(cfg, "redis.lease_wait_ms", 1000);
    sk_redis_metrics_init();
    sk_redis_tx_init(cfg);
    sk_redis_metrics.health = sk_health_register("redis");
    sk_info("redis: %s:%d db %d, %u shared + up to %u leased connections per thread", pool_cfg.ip, pool_cfg.port, pool_cfg.db,
            pool_cfg.pool_size, pool_cfg.lease_max);
    return 0;
}

static void thread_init(sk_loop_t *loop)
{
    sk_redis_pool_create(loop, &pool_cfg);
}

static void thread_dispose(sk_loop_t *loop)
{
    (void)loop;
    sk_redis_pool_t *pool = sk_redis_pool_default();
    if (pool != NULL)
        sk_redis_pool_destroy(pool);
}

static void open_module(lua_State *L)
{
    static const luaL_Reg pipe_methods[] = {{"call", l_pipe_call}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"call", l_call}, {"pipeline", l_pipeline}, {"evalsha", l_evalsha}, {NULL, NULL}};

    luaL_newmetatable(L, "sk.redis.pipeline");
    luaL_newlib(L, pipe_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "sk.redis.sha");

    luaL_newlib(L, funcs);
    sk_redis_tx_open(L);
    lua_setglobal(L, "redis");
}

const sk_binding_t sk_binding_redis = {
    .name = "redis",
    .init = init,
    .thread_init = thread_init,
    .open = open_module,
    .thread_dispose = thread_dispose,
};
