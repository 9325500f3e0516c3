/*
 * lua_eval.c: redis.evalsha(script, keys, args), EVALSHA with the script loaded on demand.
 *
 * A single Redis: the first use on a VM pipelines SCRIPT LOAD + EVAL by text (one round trip) and caches the sha the
 * server returns; later calls send EVALSHA; a NOSCRIPT (SCRIPT FLUSH, a restarted server) is answered by SCRIPT
 * LOAD + EVALSHA again, once. A cluster (route.h): the keys must be in one slot (else the call raises CROSSSLOT
 * without sending); the sha is computed here (SHA-1 of the text, as Redis does), EVALSHA goes to the slot's master
 * and a NOSCRIPT from that node is answered by EVAL by text, once (which also caches the script there), so each node
 * learns the script on its first use. An op in core/op.h's shape, as lua_call.c's.
 */
#include <lauxlib.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/op.h"
#include "err.h"
#include "lua_eval.h"
#include "lua_value.h"
#include "pool.h"
#include "reply.h"
#include "route.h"
#include "slot.h"

/* ===== redis.evalsha ===== */

typedef struct st_eval_op_t {
    sk_op_t super; /* super.err: the completion's errstr */
    sk_redis_pool_t *pool;
    sk_redis_cluster_t *cluster; /* cluster mode: pool is NULL */
    int slot;
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
        if (sk_redis_conn_command(conn, &op->super, op->load->argc, op->load->argv, op->load->lens, on_load_reply) != NULL)
            return sk_redis_err_unavailable; /* closing: as good as none */
        ++op->awaiting;
    }
    if (sk_redis_conn_command(conn, &op->super, op->cmd->argc, op->cmd->argv, op->cmd->lens, on_eval_reply) != NULL)
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

/* a cluster node's answer (route.c followed the redirections): NOSCRIPT means this node has not seen the script */
static void on_cluster_eval_reply(sk_op_t *_op, redisReply *reply, const char *errstr)
{
    eval_op_t *op = (eval_op_t *)_op;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0 && !op->retried &&
        !op->cancelled) {
        op->retried = 1;
        /* EVAL <text> numkeys keys... args...: the same words with the text for the sha */
        sk_redis_cmd_t *c = op->cmd;
        const char **argv = h2o_mem_alloc(c->argc * sizeof(*argv));
        size_t *lens = h2o_mem_alloc(c->argc * sizeof(*lens));
        memcpy(argv, c->argv, c->argc * sizeof(*argv));
        memcpy(lens, c->lens, c->argc * sizeof(*lens));
        argv[0] = "EVAL", lens[0] = 4;
        argv[1] = op->load->argv[2], lens[1] = op->load->lens[2];
        const char *err =
            sk_redis_route_command(op->cluster, NULL, &op->super, op->slot, c->argc, argv, lens, on_cluster_eval_reply);
        free(argv);
        free(lens);
        if (err == NULL)
            return;
        reply = NULL; /* not sent: the op ends with err */
        errstr = err;
    }
    op->reply = reply != NULL ? sk_redis_reply_dup(reply) : NULL;
    op->super.err = errstr != NULL ? errstr : reply == NULL ? sk_redis_err_closed : NULL;
    finish_eval(op);
}

/* the sha Redis gives a script: SHA-1 of its text, in lowercase hex */
static void script_sha(const char *text, size_t len, char *out)
{
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)text, len, md);
    for (size_t i = 0; i != SHA_DIGEST_LENGTH; ++i)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
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
    sk_redis_cluster_t *cluster = sk_redis_cluster_default();
    sk_redis_pool_t *pool = sk_redis_pool_default();
    if (pool == NULL && cluster == NULL)
        luaL_error(L, "redis is not available on this thread");
    int nkeys = lua_isnil(L, 2) ? 0 : sk_redis_value_push_array_args(L, 2, "redis.evalsha keys");
    int nargs = lua_isnil(L, 3) ? 0 : sk_redis_value_push_array_args(L, 3, "redis.evalsha args");
    char nkeys_s[16];
    snprintf(nkeys_s, sizeof(nkeys_s), "%d", nkeys);

    lua_getfield(L, LUA_REGISTRYINDEX, "sk.redis.sha");
    lua_pushvalue(L, 1);
    lua_rawget(L, -2);
    const char *sha = lua_tostring(L, -1);
    char computed[2 * SHA_DIGEST_LENGTH + 1];
    if (sha == NULL && cluster != NULL) {
        script_sha(lua_tostring(L, 1), slen, computed);
        lua_pushvalue(L, 1);
        lua_pushstring(L, computed);
        lua_rawset(L, -4);
        sha = computed;
    }
    eval_op_t *op = h2o_mem_alloc(sizeof(*op));
    *op = (eval_op_t){.super.co = co, .pool = pool, .cluster = cluster};
    const char *load_words[] = {"SCRIPT", "LOAD"};
    op->load = sk_redis_value_to_cmd(L, 2, load_words, 1, 1);
    /* first use on this VM: EVAL by text (one round trip) behind a SCRIPT LOAD that teaches us the sha */
    const char *words[] = {sha != NULL ? "EVALSHA" : "EVAL", sha != NULL ? sha : lua_tostring(L, 1), nkeys_s};
    op->cmd = sk_redis_value_to_cmd(L, 3, words, 4, nkeys + nargs);
    lua_pop(L, 2);
    if (cluster != NULL) {
        op->slot = sk_redis_slot_of_command(op->cmd->argc, op->cmd->argv, op->cmd->lens);
        if (op->slot == SK_REDIS_SLOT_CROSS) {
            free_eval(op);
            return luaL_error(L, "redis.evalsha: %s", sk_redis_slot_err_cross);
        }
        const char *err;
        if ((err = sk_redis_route_command(cluster, NULL, &op->super, op->slot, op->cmd->argc, op->cmd->argv, op->cmd->lens,
                                          on_cluster_eval_reply)) != NULL) {
            free_eval(op);
            lua_pushnil(L);
            lua_pushstring(L, err);
            return 2;
        }
        return sk_op_yield(L, &op->super, cancel_eval);
    }
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

void sk_redis_eval_open(lua_State *L)
{
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "sk.redis.sha");
    lua_pushcfunction(L, l_evalsha);
    lua_setfield(L, -2, "evalsha");
}
