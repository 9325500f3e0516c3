/* lua_eval.h: redis.evalsha (lua_eval.c) */
#ifndef SK_REDIS_LUA_EVAL_H
#define SK_REDIS_LUA_EVAL_H

#include <lua.h>

/** sets redis.evalsha in the table on top of the stack (and the VM's script -> sha cache) */
void sk_redis_eval_open(lua_State *L);

#endif
