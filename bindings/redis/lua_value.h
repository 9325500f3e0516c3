/*
 * lua_value.h: Lua values to Redis commands and Redis replies to Lua values, the one contract every Lua-facing file of
 * the family shares (lua_call.c, lua_tx.c). A leaf: it includes no other lua_*.h.
 *
 * Arguments are strings or numbers (an integer as such, a float as %.17g so 3.0 is "3"); anything else is misuse and
 * raises. A reply pushes as redis.call returns it: status, bulk -> string, integer -> integer, nil -> nil (false
 * inside arrays), array -> table, an error reply -> `false, msg` (inside an array: {err = msg}); no reply -> `nil,
 * err`.
 */
#ifndef SK_REDIS_LUA_VALUE_H
#define SK_REDIS_LUA_VALUE_H

#include <hiredis/hiredis.h>
#include <lua.h>
#include "cmd.h"

/** turns stack slots [first, last] into strings in place (integers as such, floats as %.17g so 3.0 is "3"); any
 * other type raises "<what>: argument N must be a string or a number" */
void sk_redis_value_normalize_args(lua_State *L, int first, int last, const char *what);
/** pushes the elements of the array at idx, normalized; returns how many */
int sk_redis_value_push_array_args(lua_State *L, int idx, const char *what);
/** a command of nprefix literal words followed by stack slots [first, first + n) (already normalized) */
sk_redis_cmd_t *sk_redis_value_to_cmd(lua_State *L, int nprefix, const char *const *prefix, int first, int n);
/** a command of nprefix literal words followed by the elements of the array at idx (normalized here); the stack is
 * left as it was */
sk_redis_cmd_t *sk_redis_value_table_to_cmd(lua_State *L, int idx, int nprefix, const char *const *prefix, const char *what);

/** pushes one reply as one value: nil -> nil at the top level (nested: false, keeping arrays sequences), an error
 * inside an array -> {err = msg} */
void sk_redis_value_push(lua_State *L, const redisReply *r, int nested);
/** the redis.call contract, pushed: value | false, msg (error reply) | nil, err (reply NULL; err is errstr, or
 * sk_redis_err_closed if NULL). Frees reply; returns the number of values pushed. */
int sk_redis_value_push_result(lua_State *L, redisReply *reply, const char *errstr);

#endif
