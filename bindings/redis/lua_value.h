/*
 * redis_lua_internal.h: what redis_lua.c (the `redis` module) and redis_tx.c (redis.optimistic) share: turning Lua
 * arguments into Redis commands and replies into Lua values. Private to those two files.
 */
#ifndef SK_REDIS_LUA_INTERNAL_H
#define SK_REDIS_LUA_INTERNAL_H

#include <lua.h>
#include "../../core/config.h"
#include "pool.h"

/** a command copied into one block (argv/lens and the bytes follow the struct), for sending later: retries,
 * NOSCRIPT. Freed with free(). */
typedef struct st_sk_redis_cmdv_t {
    int argc;
    const char **argv;
    size_t *lens;
} sk_redis_cmdv_t;

/** turns stack slots [first, last] into strings in place (integers as such, floats as %.17g so 3.0 is "3"); any
 * other type raises "<what>: argument N must be a string or a number" */
void sk_redis_lua_normalize_args(lua_State *L, int first, int last, const char *what);
/** pushes the elements of the array at idx, normalized; returns how many */
int sk_redis_lua_push_array_args(lua_State *L, int idx, const char *what);
/** copies stack slots [first, first + n) (already normalized) after nprefix literal words */
sk_redis_cmdv_t *sk_redis_cmdv_new(lua_State *L, int nprefix, const char **prefix, int first, int n);
/** a command from the array at idx (normalized), after nprefix literal words; the stack is left as it was */
sk_redis_cmdv_t *sk_redis_cmdv_from_table(lua_State *L, int idx, int nprefix, const char **prefix, const char *what);

/** pushes one reply as one value: nil -> nil at the top level (nested: false, keeping arrays sequences), an error
 * inside an array -> {err = msg} */
void sk_redis_lua_push_value(lua_State *L, const redisReply *r, int nested);
/** the redis.call contract, pushed: value | false, msg (error reply) | nil, err (reply NULL). Frees reply; returns
 * the number of values pushed. */
int sk_redis_lua_push_result(lua_State *L, redisReply *reply, const char *errstr);
/** the calling thread's pool, or raises "redis is not available on this thread" */
sk_redis_pool_t *sk_redis_lua_check_pool(lua_State *L);

/** redis_tx.c: reads redis.tries, redis.backoff_max_ms and the gate settings, creates its metrics. From the
 * binding's init (main thread, once, after sk_redis_metrics_init). */
void sk_redis_tx_init(sk_config_t *cfg);
/** redis_tx.c: registers the tx metatable and sets `optimistic` and `CONFLICT` in the module table on top of L */
void sk_redis_tx_open(lua_State *L);

#endif
