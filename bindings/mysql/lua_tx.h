/*
 * lua_tx.h: mysql.transaction and the `tx` object (lua_tx.c), over the statements of lua_stmt.h.
 */
#ifndef SK_MYSQL_LUA_TX_H
#define SK_MYSQL_LUA_TX_H

#include <lua.h>

/** a statement of a transaction whose connection broke on an earlier one ("connection lost") */
extern const char sk_mysql_err_connection_lost[];

/** registers the tx metatable and sets `transaction` in the module table on top of L */
void sk_mysql_tx_open(lua_State *L);

#endif
