/*
 * lua_call.h: redis.call and redis.pipeline (lua_call.c), opened by lua_module.c into the `redis`
 * table.
 */
#ifndef SK_REDIS_LUA_CALL_H
#define SK_REDIS_LUA_CALL_H

#include <lua.h>

/** registers the pipeline metatable and sets `call` and `pipeline` in the table on top of L (stack effect: none) */
void sk_redis_call_open(lua_State *L);

#endif
