/*
 * lua_tx.h: redis.optimistic and its `tx` object (lua_tx.c), opened by lua_module.c into the `redis` table. The state
 * machine underneath is optimistic.h.
 */
#ifndef SK_REDIS_LUA_TX_H
#define SK_REDIS_LUA_TX_H

#include <lua.h>
#include "../../core/config.h"

/** reads redis.tries, redis.backoff_max_ms and the gate settings into sk_redis_optimistic_config. From the binding's
 * init (main thread, once). */
void sk_redis_tx_init(sk_config_t *cfg);
/** registers the tx metatable and sets `optimistic` and `CONFLICT` in the table on top of L (stack effect: none) */
void sk_redis_tx_open(lua_State *L);

#endif
