/*
 * redis_lua.c: the `redis` Lua module (bindings/README-redis.md documents it) on top of redis_pool.
 *
 *   redis.call(cmd, ...)                      one command pipelined over a shared connection
 *   redis.pipeline(function(p) p:call(...) end)  several commands, one yield
 *   redis.evalsha(script, keys, args)          EVALSHA with the script loaded on demand (NOSCRIPT retried)
 *   redis.optimistic{watch=, read=, tries=, fn=}  WATCH/read -> fn -> MULTI/writes/EXEC, retried in C on conflict
 *
 * Replies are copied out of hiredis in its callback and turned into Lua values when the coroutine resumes
 * (core/co.h), never inside hiredis.
 */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include "../core/co.h"
#include "../core/config.h"
#include "../core/health.h"
#include "../core/log.h"
#include "bindings.h"
#include "redis_pool.h"

static sk_redis_pool_config_t pool_cfg;
static unsigned default_tries = 16;
/* the cap of the jittered backoff between optimistic attempts (redis.backoff_max_ms). Measured on a hot key at 256
 * connections: 8 ms tripled the conflicts and halved the sale's throughput; 64 ms spreads the herd. */
static unsigned backoff_max_ms = 64;

#define MAX_STACK_ARGS 32

/* ===== Lua values <-> Redis ===== */

/* turns argument slots [first, last] into strings in place (numbers allowed, anything else is misuse) */
static void normalize_args(lua_State *L, int first, int last, const char *what)
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
static int push_array_args(lua_State *L, int idx, const char *what)
{
    idx = lua_absindex(L, idx);
    int n = (int)luaL_len(L, idx);
    luaL_checkstack(L, n + 8, "too many redis arguments");
    int top = lua_gettop(L);
    for (int i = 1; i <= n; ++i)
        lua_rawgeti(L, idx, i);
    normalize_args(L, top + 1, top + n, what);
    return n;
}

/* a command copied into one block, for sending later (retries, NOSCRIPT) */
typedef struct st_cmdv_t {
    int argc;
    const char **argv;
    size_t *lens;
} cmdv_t;

/* copies stack slots [first, first + n) (already normalized), after `nprefix` literal words */
static cmdv_t *cmdv_new(lua_State *L, int nprefix, const char **prefix, int first, int n)
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
    cmdv_t *c = h2o_mem_alloc(sizeof(*c) + argc * (sizeof(char *) + sizeof(size_t)) + bytes);
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

/* pushes one reply as a single value: nil -> nil at the top level, false inside arrays (keeps them sequences, as
 * Redis's own Lua does), error -> {err = msg} inside arrays */
static void push_value(lua_State *L, const redisReply *r, int nested)
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
            push_value(L, r->element[i], 1);
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
static int push_result(lua_State *L, redisReply *reply, const char *errstr)
{
    int n = 1;
    if (reply == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, errstr != NULL ? errstr : sk_redis_error_closed);
        return 2;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        lua_pushboolean(L, 0);
        lua_pushlstring(L, reply->str, reply->len);
        n = 2;
    } else {
        push_value(L, reply, 0);
    }
    freeReplyObject(reply);
    return n;
}

static sk_redis_pool_t *check_pool(lua_State *L)
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
    int n = push_result(L, op->reply, op->errstr);
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
    normalize_args(L, 1, argc, "redis.call");
    sk_co_t *co = sk_co_check(L);
    sk_redis_pool_t *pool = check_pool(L);
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
        int nv = push_result(L, op->slots[i].reply, NULL);
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
    normalize_args(L, 2, top, "p:call");
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
        lua_pushstring(L, sk_redis_error_unavailable);
        return 2;
    }
    pipe_op_t *op = h2o_mem_alloc(offsetof(pipe_op_t, slots) + n * sizeof(pipe_slot_t));
    *op = (pipe_op_t){.co = co, .n = n};
    for (size_t i = 0; i != n; ++i) {
        op->slots[i] = (pipe_slot_t){.op = op};
        lua_rawgeti(L, p, (lua_Integer)i + 1);
        int base = lua_gettop(L), argc = push_array_args(L, -1, "p:call");
        cmdv_t *c = cmdv_new(L, 0, NULL, base + 1, argc);
        lua_settop(L, p);
        int ret = sk_redis_conn_command(conn, c->argc, c->argv, c->lens, on_pipe_reply, &op->slots[i]);
        free(c);
        if (ret != 0) {
            op->errstr = sk_redis_error_closed;
            op->n = i; /* the ones sent still answer (with an error, the connection is closing) */
            break;
        }
        ++op->remaining;
    }
    if (op->remaining == 0) {
        free(op);
        lua_pushnil(L);
        lua_pushstring(L, sk_redis_error_closed);
        return 2;
    }
    return sk_co_yield(L, co, cancel_pipe, op);
}

/* ===== redis.evalsha ===== */

typedef struct st_eval_op_t {
    sk_co_t *co;
    sk_redis_pool_t *pool;
    cmdv_t *cmd;  /* EVALSHA sha nkeys keys... args... (argv[1] is the sha, or empty while unknown) */
    cmdv_t *load; /* SCRIPT LOAD script */
    char sha[48]; /* learnt from SCRIPT LOAD, stored in the VM's cache at resume */
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
    int n = push_result(L, op->reply, op->errstr);
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
        op->errstr = sk_redis_error_closed;
        finish_eval(op);
    }
}

/* SCRIPT LOAD then EVALSHA, pipelined on one connection (the sha is computed by the server, so EVALSHA uses the
 * one it will return: we send EVAL-by-text only for the first use, see send_eval) */
static const char *send_eval(eval_op_t *op, sk_redis_conn_t *conn, int with_load)
{
    if (conn == NULL)
        return sk_redis_error_unavailable;
    if (with_load) {
        if (sk_redis_conn_command(conn, op->load->argc, op->load->argv, op->load->lens, on_load_reply, op) != 0)
            return sk_redis_error_unavailable;
        ++op->awaiting;
    }
    if (sk_redis_conn_command(conn, op->cmd->argc, op->cmd->argv, op->cmd->lens, on_eval_reply, op) != 0)
        return op->awaiting != 0 ? NULL : sk_redis_error_unavailable; /* the LOAD reply will fail too: see on_load_reply */
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
    op->errstr = errstr != NULL ? errstr : reply == NULL ? sk_redis_error_closed : NULL;
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
    int nkeys = lua_isnil(L, 2) ? 0 : push_array_args(L, 2, "redis.evalsha keys");
    int nargs = lua_isnil(L, 3) ? 0 : push_array_args(L, 3, "redis.evalsha args");
    char nkeys_s[16];
    snprintf(nkeys_s, sizeof(nkeys_s), "%d", nkeys);

    lua_getfield(L, LUA_REGISTRYINDEX, "sk.redis.sha");
    lua_pushvalue(L, 1);
    lua_rawget(L, -2);
    const char *sha = lua_tostring(L, -1);
    eval_op_t *op = h2o_mem_alloc(sizeof(*op));
    *op = (eval_op_t){.co = co, .pool = pool};
    const char *load_words[] = {"SCRIPT", "LOAD"};
    op->load = cmdv_new(L, 2, load_words, 1, 1);
    /* first use on this VM: EVAL by text (one round trip) behind a SCRIPT LOAD that teaches us the sha */
    const char *words[] = {sha != NULL ? "EVALSHA" : "EVAL", sha != NULL ? sha : lua_tostring(L, 1), nkeys_s};
    op->cmd = cmdv_new(L, 3, words, 4, nkeys + nargs);
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

/* ===== redis.optimistic: WATCH + reads -> fn -> MULTI + writes + EXEC, retried in C ===== */

/*
 * The request coroutine parks once for the whole transaction; this state machine drives it from hiredis callbacks,
 * a backoff timer and loop-deferred steps. fn runs on a nested Lua thread resumed from the loop, so it may yield,
 * but only through tx:call (any other binding refuses: the nested thread is not a request coroutine). A broken
 * connection fails the attempt and is never continued on another connection: WATCH state lives in the
 * connection. Every exit path hands the connection back with what it may still hold (dirty flags), and the pool
 * UNWATCHes/DISCARDs it before anyone else gets it.
 */
typedef enum { TX_LEASING, TX_READING, TX_FN, TX_CALLING, TX_EXEC, TX_BACKOFF, TX_DONE } tx_state_t;
typedef enum { TX_R_EXEC, TX_R_VALUES, TX_R_CONFLICT, TX_R_ERROR, TX_R_EXEC_ERROR, TX_R_LUA_ERROR } tx_result_t;

typedef struct st_tx_op_t {
    sk_co_t *co;
    sk_redis_pool_t *pool;
    sk_redis_lease_t lease;
    sk_redis_conn_t *conn;
    int dirty;
    tx_state_t state;
    cmdv_t *watch; /* NULL without keys */
    cmdv_t **reads;
    size_t nreads;
    H2O_VECTOR(cmdv_t *) writes;
    redisReply **read_replies;
    redisReply *call_reply, *exec_reply;
    const char *call_err, *fail;
    size_t awaiting, got;
    unsigned tries, attempt;
    int fn_ref, tx_ref, thread_ref;
    lua_State *T;
    int nvalues;
    tx_result_t result;
    char *errmsg; /* Lua error or EXEC error text */
    int yielded, cancelled, inflight;
    sk_timer_t backoff;
    sk_deferred_t step;
} tx_op_t;

static char lua_error_marker; /* first value pushed for a Lua error in fn; the Lua wrapper re-raises it */
static __thread uint64_t rng_state;

static void tx_start_attempt(tx_op_t *op);

static tx_op_t **check_tx(lua_State *L)
{
    return luaL_checkudata(L, 1, "sk.redis.tx");
}

static void tx_clear_attempt(tx_op_t *op)
{
    for (size_t i = 0; i != op->nreads; ++i)
        if (op->read_replies[i] != NULL) {
            freeReplyObject(op->read_replies[i]);
            op->read_replies[i] = NULL;
        }
    for (size_t i = 0; i != op->writes.size; ++i)
        free(op->writes.entries[i]);
    op->writes.size = 0;
    if (op->call_reply != NULL) {
        freeReplyObject(op->call_reply);
        op->call_reply = NULL;
    }
}

static void tx_free(tx_op_t *op)
{
    tx_clear_attempt(op);
    free(op->writes.entries);
    if (op->exec_reply != NULL)
        freeReplyObject(op->exec_reply);
    free(op->watch);
    for (size_t i = 0; i != op->nreads; ++i)
        free(op->reads[i]);
    free(op->reads);
    free(op->read_replies);
    free(op->errmsg);
    free(op);
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

static void tx_maybe_free(tx_op_t *op)
{
    if (op->state == TX_DONE && op->inflight == 0 && op->cancelled)
        tx_free(op);
}

static int push_tx(lua_State *L, void *arg);

/* ends the transaction: the connection goes back (cleaned by the pool if dirty), then the coroutine resumes */
static void tx_finish(tx_op_t *op, tx_result_t result, const char *errstr)
{
    op->state = TX_DONE;
    op->result = result;
    if (errstr != NULL)
        op->fail = errstr;
    sk_timer_stop(op->co->loop, &op->backoff);
    sk_loop_cancel_defer(&op->step);
    sk_redis_pool_cancel_lease(&op->lease);
    if (op->conn != NULL) {
        sk_redis_pool_release(op->pool, op->conn, op->dirty);
        op->conn = NULL;
    }
    switch (result) {
    case TX_R_EXEC:
        sk_counter_inc(sk_redis_metrics.tx_ok);
        sk_histogram_observe(sk_redis_metrics.tx_retries, op->attempt - 1);
        break;
    case TX_R_VALUES:
        sk_counter_inc(sk_redis_metrics.tx_readonly);
        break;
    case TX_R_CONFLICT:
        sk_counter_inc(sk_redis_metrics.tx_conflict);
        break;
    default:
        sk_counter_inc(sk_redis_metrics.tx_error);
        break;
    }
    if (op->cancelled)
        tx_maybe_free(op);
    else if (op->yielded)
        sk_co_wake(op->co, push_tx, op);
    /* else: l_optimistic is still on the stack and pushes the result itself */
}

/* --- step 1: WATCH + declared reads, pipelined --- */

static void tx_run_fn(sk_deferred_t *d);

static void on_tx_read_reply(redisReply *reply, const char *errstr, void *data)
{
    tx_op_t *op = data;
    --op->inflight;
    if (op->state != TX_READING) {
        tx_maybe_free(op);
        return;
    }
    size_t idx = op->got++;
    if (reply == NULL) {
        if (op->fail == NULL)
            op->fail = errstr;
    } else if (op->watch != NULL && idx == 0) {
        if (reply->type == REDIS_REPLY_ERROR && op->fail == NULL)
            op->fail = "watch failed";
    } else {
        op->read_replies[idx - (op->watch != NULL)] = sk_redis_reply_dup(reply);
    }
    if (op->got != op->awaiting)
        return;
    if (op->fail != NULL) {
        tx_finish(op, TX_R_ERROR, NULL);
        return;
    }
    op->state = TX_FN;
    sk_loop_defer(op->co->loop, &op->step, tx_run_fn);
}

static int tx_send(tx_op_t *op, const cmdv_t *c, sk_redis_reply_cb cb)
{
    if (sk_redis_conn_command(op->conn, c->argc, c->argv, c->lens, cb, op) != 0)
        return -1;
    ++op->inflight;
    return 0;
}

static void tx_start_attempt(tx_op_t *op)
{
    ++op->attempt;
    sk_counter_inc(sk_redis_metrics.tx_attempts);
    tx_clear_attempt(op);
    op->state = TX_READING;
    op->got = 0;
    op->awaiting = (op->watch != NULL) + op->nreads;
    op->fail = NULL;
    if (op->awaiting == 0) {
        op->state = TX_FN;
        sk_loop_defer(op->co->loop, &op->step, tx_run_fn);
        return;
    }
    if (op->watch != NULL) {
        op->dirty |= SK_REDIS_DIRTY_WATCH; /* before sending: a reply lost to a broken connection still counts */
        if (tx_send(op, op->watch, on_tx_read_reply) != 0)
            goto Broken;
    }
    for (size_t i = 0; i != op->nreads; ++i)
        if (tx_send(op, op->reads[i], on_tx_read_reply) != 0)
            goto Broken;
    return;
Broken:
    /* the replies of what was sent fail too (the connection is closing); only then finish */
    if (op->inflight == 0)
        tx_finish(op, TX_R_ERROR, sk_redis_error_closed);
    else
        op->awaiting = op->got + op->inflight, op->fail = sk_redis_error_closed;
}

static void on_tx_leased(sk_redis_lease_t *lease, sk_redis_conn_t *conn, const char *errstr)
{
    tx_op_t *op = H2O_STRUCT_FROM_MEMBER(tx_op_t, lease, lease);
    if (conn == NULL) {
        tx_finish(op, TX_R_ERROR, errstr);
        return;
    }
    op->conn = conn;
    tx_start_attempt(op);
}

/* --- step 2: fn on a nested thread --- */

static void tx_fn_status(tx_op_t *op, int status, int nres);

static void push_read_replies(lua_State *T, tx_op_t *op)
{
    lua_createtable(T, (int)op->nreads, 0);
    for (size_t i = 0; i != op->nreads; ++i) {
        /* a sequence of the reads' values: nil holes stay holes (index by position), an error reply is false */
        redisReply *r = op->read_replies[i];
        if (r->type == REDIS_REPLY_ERROR)
            lua_pushboolean(T, 0);
        else
            push_value(T, r, 0);
        lua_rawseti(T, -2, (lua_Integer)i + 1);
    }
}

static void tx_run_fn(sk_deferred_t *d)
{
    tx_op_t *op = H2O_STRUCT_FROM_MEMBER(tx_op_t, step, d);
    lua_State *L = op->co->L;
    if (op->T == NULL) {
        /* a fresh thread per attempt: one that raised is dead and cannot be reused */
        op->T = lua_newthread(L);
        op->thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        /* new threads copy the main thread's extra space, where core/co.c keeps "which request coroutine";
         * clear it so bindings other than tx:call refuse to yield here instead of parking the wrong coroutine */
        *(void **)lua_getextraspace(op->T) = NULL;
        lua_rawgeti(op->T, LUA_REGISTRYINDEX, op->fn_ref);
        lua_rawgeti(op->T, LUA_REGISTRYINDEX, op->tx_ref);
        push_read_replies(op->T, op);
        int nres = 0, status = lua_resume(op->T, NULL, 2, &nres);
        tx_fn_status(op, status, nres);
    } else {
        /* resuming after tx:call */
        int n = push_result(op->T, op->call_reply, op->call_err);
        op->call_reply = NULL;
        int nres = 0, status = lua_resume(op->T, NULL, n, &nres);
        tx_fn_status(op, status, nres);
    }
}

static void on_tx_exec_reply(redisReply *reply, const char *errstr, void *data);

static void tx_fn_status(tx_op_t *op, int status, int nres)
{
    lua_State *T = op->T;
    if (status == LUA_YIELD && op->state == TX_CALLING)
        return; /* tx:call sent its command; on_tx_call_reply resumes fn */
    if (status == LUA_YIELD) {
        lua_pop(T, nres);
        lua_pushliteral(T, "redis.optimistic: fn may only yield through tx:call (no other I/O inside fn)");
        status = LUA_ERRRUN;
    }
    if (status != LUA_OK) {
        const char *msg = lua_tostring(T, -1);
        luaL_traceback(T, T, msg != NULL ? msg : "(error object is not a string)", 0);
        op->errmsg = h2o_strdup(NULL, lua_tostring(T, -1), SIZE_MAX).base;
        tx_finish(op, TX_R_LUA_ERROR, NULL);
        return;
    }
    op->nvalues = nres;
    if (op->writes.size == 0) {
        tx_finish(op, TX_R_VALUES, NULL); /* the pool UNWATCHes */
        return;
    }
    static const char *multi_argv[] = {"MULTI"}, *exec_argv[] = {"EXEC"};
    static size_t multi_len[] = {5}, exec_len[] = {4};
    static const cmdv_t multi = {1, multi_argv, multi_len}, exec = {1, exec_argv, exec_len};
    op->state = TX_EXEC;
    op->got = 0;
    op->awaiting = op->writes.size + 2;
    op->fail = NULL;
    op->dirty |= SK_REDIS_DIRTY_MULTI;
    if (tx_send(op, &multi, on_tx_exec_reply) != 0)
        goto Broken;
    for (size_t i = 0; i != op->writes.size; ++i)
        if (tx_send(op, op->writes.entries[i], on_tx_exec_reply) != 0)
            goto Broken;
    if (tx_send(op, &exec, on_tx_exec_reply) != 0)
        goto Broken;
    return;
Broken:
    if (op->inflight == 0)
        tx_finish(op, TX_R_ERROR, sk_redis_error_closed);
    else
        op->awaiting = op->got + op->inflight, op->fail = sk_redis_error_closed;
}

/* --- step 3: MULTI, writes, EXEC --- */

static uint64_t next_random(void)
{
    if (rng_state == 0)
        rng_state = sk_now_ms() * 0x9E3779B97F4A7C15ull + (uintptr_t)&rng_state;
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void on_tx_backoff(sk_timer_t *timer)
{
    tx_op_t *op = H2O_STRUCT_FROM_MEMBER(tx_op_t, backoff, timer);
    /* the last attempt's thread is done; drop it here, on the loop, not inside hiredis */
    luaL_unref(op->co->L, LUA_REGISTRYINDEX, op->thread_ref);
    op->thread_ref = LUA_NOREF;
    op->T = NULL;
    tx_start_attempt(op);
}

static void on_tx_exec_reply(redisReply *reply, const char *errstr, void *data)
{
    tx_op_t *op = data;
    --op->inflight;
    if (op->state != TX_EXEC) {
        tx_maybe_free(op);
        return;
    }
    int last = ++op->got == op->awaiting;
    if (reply == NULL) {
        if (op->fail == NULL)
            op->fail = errstr;
    } else if (last && op->fail == NULL) {
        op->exec_reply = sk_redis_reply_dup(reply);
    }
    if (!last)
        return;
    if (op->fail != NULL) {
        tx_finish(op, TX_R_ERROR, NULL);
        return;
    }
    /* EXEC ended both the MULTI and the WATCHes, whatever it answered */
    op->dirty = 0;
    redisReply *r = op->exec_reply;
    if (r->type == REDIS_REPLY_NIL) {
        /* a null multi-bulk: a WATCHed key changed. (EXECABORT, a queueing error, is an error reply instead and is
         * never retried.) */
        freeReplyObject(r);
        op->exec_reply = NULL;
        sk_counter_inc(sk_redis_metrics.tx_conflicts);
        if (op->attempt >= op->tries) {
            tx_finish(op, TX_R_CONFLICT, "conflict");
            return;
        }
        /* fn reruns on a new thread with fresh reads, after a jittered exponential pause (full jitter) */
        op->state = TX_BACKOFF;
        unsigned shift = op->attempt - 1 < 10 ? op->attempt - 1 : 10;
        uint64_t cap_us = 1000ull << shift;
        if (cap_us > backoff_max_ms * 1000ull)
            cap_us = backoff_max_ms * 1000ull;
        uint64_t delay_us = next_random() % (cap_us + 1);
        sk_timer_start(op->co->loop, &op->backoff, delay_us / 1000, on_tx_backoff);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        op->errmsg = h2o_strdup(NULL, r->str, r->len).base;
        tx_finish(op, TX_R_EXEC_ERROR, NULL);
        return;
    }
    tx_finish(op, TX_R_EXEC, NULL);
}

/* --- tx methods, called by fn on the nested thread --- */

static tx_op_t *check_tx_running(lua_State *L, const char *method)
{
    tx_op_t *op = *check_tx(L);
    if (op == NULL || op->T != L || op->state != TX_FN)
        luaL_error(L, "tx:%s: only inside the transaction's fn, while it runs", method);
    return op;
}

static void on_tx_call_reply(redisReply *reply, const char *errstr, void *data)
{
    tx_op_t *op = data;
    --op->inflight;
    if (op->state != TX_CALLING) {
        tx_maybe_free(op);
        return;
    }
    op->call_reply = reply != NULL ? sk_redis_reply_dup(reply) : NULL;
    op->call_err = errstr;
    op->state = TX_FN;
    sk_loop_defer(op->co->loop, &op->step, tx_run_fn);
}

static int l_tx_call(lua_State *L)
{
    tx_op_t *op = check_tx_running(L, "call");
    int top = lua_gettop(L);
    luaL_checkstring(L, 2);
    normalize_args(L, 2, top, "tx:call");
    if (!lua_isyieldable(L))
        return luaL_error(L, "tx:call: cannot yield here (inside a metamethod, table.sort or pcall'd C function)");
    cmdv_t *c = cmdv_new(L, 0, NULL, 2, top - 1);
    int ret = tx_send(op, c, on_tx_call_reply);
    free(c);
    if (ret != 0) {
        lua_pushnil(L);
        lua_pushstring(L, sk_redis_error_closed);
        return 2;
    }
    op->state = TX_CALLING;
    return lua_yield(L, 0);
}

static int l_tx_queue(lua_State *L)
{
    tx_op_t *op = check_tx_running(L, "queue");
    int top = lua_gettop(L);
    luaL_checkstring(L, 2);
    normalize_args(L, 2, top, "tx:queue");
    h2o_vector_reserve(NULL, &op->writes, op->writes.size + 1);
    op->writes.entries[op->writes.size++] = cmdv_new(L, 0, NULL, 2, top - 1);
    lua_pushinteger(L, (lua_Integer)op->writes.size);
    return 1;
}

/* --- the Lua entry --- */

static int push_tx(lua_State *L, void *arg)
{
    tx_op_t *op = arg;
    int n;
    switch (op->result) {
    case TX_R_EXEC:
        push_value(L, op->exec_reply, 0);
        lua_xmove(op->T, L, op->nvalues);
        n = 1 + op->nvalues;
        break;
    case TX_R_VALUES:
        lua_xmove(op->T, L, op->nvalues);
        n = op->nvalues;
        break;
    case TX_R_EXEC_ERROR:
        lua_pushboolean(L, 0);
        lua_pushstring(L, op->errmsg);
        n = 2;
        break;
    case TX_R_LUA_ERROR:
        lua_pushlightuserdata(L, &lua_error_marker);
        lua_pushstring(L, op->errmsg);
        n = 2;
        break;
    default:
        lua_pushnil(L);
        lua_pushstring(L, op->fail != NULL ? op->fail : sk_redis_error_closed);
        n = 2;
        break;
    }
    tx_unref(op, L);
    if (op->inflight == 0)
        tx_free(op);
    else
        op->cancelled = 1; /* nobody to wake any more: the last callback frees it */
    return n;
}

static void cancel_tx(void *arg)
{
    tx_op_t *op = arg;
    op->cancelled = 1;
    if (op->state != TX_DONE)
        tx_finish(op, TX_R_ERROR, sk_redis_error_closed);
    else
        tx_maybe_free(op);
}

static cmdv_t *cmd_from_table(lua_State *L, int idx, int nprefix, const char **prefix, const char *what)
{
    int base = lua_gettop(L), n = push_array_args(L, idx, what);
    cmdv_t *c = cmdv_new(L, nprefix, prefix, base + 1, n);
    lua_settop(L, base);
    return c;
}

static int l_optimistic(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    sk_co_t *co = sk_co_check(L);
    sk_redis_pool_t *pool = check_pool(L);
    lua_getfield(L, 1, "fn");
    luaL_argcheck(L, lua_isfunction(L, -1), 1, "fn must be a function");
    lua_getfield(L, 1, "tries");
    lua_Integer tries = luaL_optinteger(L, -1, default_tries);
    luaL_argcheck(L, tries >= 1 && tries <= 1000, 1, "tries must be between 1 and 1000");
    lua_getfield(L, 1, "watch");
    if (!lua_isnil(L, -1))
        luaL_argcheck(L, lua_istable(L, -1), 1, "watch must be a table of keys");
    lua_getfield(L, 1, "read");
    if (!lua_isnil(L, -1))
        luaL_argcheck(L, lua_istable(L, -1), 1, "read must be a table of commands");
    size_t nreads = lua_istable(L, 5) ? (size_t)luaL_len(L, 5) : 0;
    for (size_t i = 1; i <= nreads; ++i) {
        lua_rawgeti(L, 5, (lua_Integer)i);
        luaL_argcheck(L, lua_istable(L, -1) && luaL_len(L, -1) >= 1, 1, "each read must be a command table like {\"GET\", key}");
        lua_pop(L, 1);
    }

    tx_op_t *op = h2o_mem_alloc(sizeof(*op));
    *op = (tx_op_t){
        .co = co, .pool = pool, .tries = (unsigned)tries, .fn_ref = LUA_NOREF, .tx_ref = LUA_NOREF, .thread_ref = LUA_NOREF};
    if (lua_istable(L, 4) && luaL_len(L, 4) > 0) {
        static const char *watch_word[] = {"WATCH"};
        op->watch = cmd_from_table(L, 4, 1, watch_word, "redis.optimistic watch");
    }
    op->nreads = nreads;
    op->reads = h2o_mem_alloc((nreads + 1) * sizeof(*op->reads));
    op->read_replies = h2o_mem_alloc((nreads + 1) * sizeof(*op->read_replies));
    for (size_t i = 0; i != nreads; ++i) {
        lua_rawgeti(L, 5, (lua_Integer)i + 1);
        op->reads[i] = cmd_from_table(L, -1, 0, NULL, "redis.optimistic read");
        op->read_replies[i] = NULL;
        lua_pop(L, 1);
    }
    lua_pushvalue(L, 2);
    op->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    *(tx_op_t **)lua_newuserdatauv(L, sizeof(tx_op_t *), 0) = op;
    luaL_setmetatable(L, "sk.redis.tx");
    op->tx_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    const char *err;
    sk_redis_conn_t *conn = sk_redis_pool_lease(pool, &op->lease, on_tx_leased, &err);
    if (conn != NULL) {
        op->conn = conn;
        tx_start_attempt(op);
    } else if (err != NULL) {
        tx_finish(op, TX_R_ERROR, err);
    } else {
        op->state = TX_LEASING;
    }
    if (op->state == TX_DONE) /* failed before any reply: answer without yielding */
        return push_tx(L, op);
    op->yielded = 1;
    return sk_co_yield(L, co, cancel_tx, op);
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
    long long tries = sk_config_get_int(cfg, "redis.tries", 16);
    default_tries = tries < 1 ? 1 : tries > 1000 ? 1000 : (unsigned)tries;
    long long backoff = sk_config_get_int(cfg, "redis.backoff_max_ms", 64);
    backoff_max_ms = backoff < 1 ? 1 : backoff > 1000 ? 1000 : (unsigned)backoff;
    sk_redis_metrics_init();
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
    static const luaL_Reg tx_methods[] = {{"call", l_tx_call}, {"queue", l_tx_queue}, {NULL, NULL}};
    static const luaL_Reg pipe_methods[] = {{"call", l_pipe_call}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"call", l_call}, {"pipeline", l_pipeline}, {"evalsha", l_evalsha}, {NULL, NULL}};

    luaL_newmetatable(L, "sk.redis.tx");
    luaL_newlib(L, tx_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newmetatable(L, "sk.redis.pipeline");
    luaL_newlib(L, pipe_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "sk.redis.sha");

    luaL_newlib(L, funcs);
    if (luaL_loadbuffer(L, optimistic_lua, sizeof(optimistic_lua) - 1, "=redis.optimistic") != LUA_OK)
        lua_error(L);
    lua_pushcfunction(L, l_optimistic);
    lua_pushlightuserdata(L, &lua_error_marker);
    lua_call(L, 2, 1);
    lua_setfield(L, -2, "optimistic");
    lua_pushliteral(L, "conflict");
    lua_setfield(L, -2, "CONFLICT");
    lua_setglobal(L, "redis");
}

const sk_binding_t sk_binding_redis = {
    .name = "redis",
    .init = init,
    .thread_init = thread_init,
    .open = open_module,
    .thread_dispose = thread_dispose,
};
