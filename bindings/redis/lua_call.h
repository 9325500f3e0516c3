/*
 * lua_call.h: redis.call, redis.pipeline and redis.evalsha (lua_call.c), opened by lua_module.c into the `redis`
 * table.
 */
#ifndef SK_REDIS_LUA_CALL_H
#define SK_REDIS_LUA_CALL_H

#include <lua.h>

/** registers the pipeline metatable and the per-VM script cache, and sets `call`, `pipeline` and `evalsha` in the
 * table on top of L (stack effect: none) */
void sk_redis_call_open(lua_State *L);

#endif
