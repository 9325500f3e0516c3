/*
 * mysql_tx.c: mysql.transaction. A BEGIN leases a connection and hands it to a `tx` userdata; tx:query, tx:commit
 * and tx:rollback run on that connection (statements through mysql_lua.c's op machinery); mysql.transaction itself
 * is a few lines of Lua over them. An abandoned tx goes back to the pool, which rolls it back.
 */
#include <lauxlib.h>
#include "lua_internal.h"

#define TX_MT "seckilld.mysql.tx"

/* ===== transactions: begin() -> tx; tx:query(), tx:commit(), tx:rollback() ===== */

static int l_begin(lua_State *L)
{
    sk_co_t *co = sk_co_check(L);
    sk_mysql_pool_t *pool = sk_mysql_lua_check_pool(L);
    lua_settop(L, 0);
    lua_pushliteral(L, "BEGIN");
    sk_mysql_op_t *op = sk_mysql_op_new(L, 1, SK_MYSQL_Q_BEGIN);
    op->super.co = co;
    op->pool = pool;
    return sk_mysql_op_start_leased(L, op);
}

int sk_mysql_tx_push(lua_State *L, sk_mysql_op_t *op)
{
    sk_mysql_tx_t *tx = lua_newuserdatauv(L, sizeof(*tx), 0);
    *tx = (sk_mysql_tx_t){.conn = op->conn, .pool = op->pool};
    op->conn = NULL; /* now the tx's */
    luaL_setmetatable(L, TX_MT);
    return 1;
}

static sk_mysql_tx_t *check_tx(lua_State *L)
{
    sk_mysql_tx_t *tx = luaL_checkudata(L, 1, TX_MT);
    if (tx->conn == NULL)
        luaL_error(L, "mysql: the transaction is finished");
    if (tx->busy)
        luaL_error(L, "mysql: the transaction is already running a statement");
    return tx;
}

static int tx_run(lua_State *L, sk_mysql_tx_t *tx, sk_mysql_op_t *op, sk_co_t *co)
{
    op->super.co = co;
    op->pool = tx->pool;
    op->tx = tx;
    if (!tx->conn->connected) {
        /* the link broke on an earlier statement: no statement of this transaction can succeed any more */
        if (op->kind != SK_MYSQL_Q_TX) {
            sk_mysql_pool_release(tx->pool, tx->conn);
            tx->conn = NULL;
            tx->outcome = "rolled back";
        }
        sk_mysql_op_free(op);
        lua_pushnil(L);
        lua_pushliteral(L, "connection lost");
        return 2;
    }
    tx->busy = 1;
    sk_mysql_op_run(op, tx->conn);
    return sk_op_yield(L, &op->super, sk_mysql_op_cancel);
}

static int l_tx_query(lua_State *L)
{
    sk_mysql_tx_t *tx = check_tx(L);
    sk_co_t *co = sk_co_check(L);
    return tx_run(L, tx, sk_mysql_op_new(L, 2, SK_MYSQL_Q_TX), co);
}

static int tx_finish(lua_State *L, const char *sql, int kind)
{
    sk_mysql_tx_t *tx = check_tx(L);
    sk_co_t *co = sk_co_check(L);
    lua_settop(L, 1);
    lua_pushstring(L, sql);
    return tx_run(L, tx, sk_mysql_op_new(L, 2, kind), co);
}

static int l_tx_commit(lua_State *L)
{
    return tx_finish(L, "COMMIT", SK_MYSQL_Q_COMMIT);
}

static int l_tx_rollback(lua_State *L)
{
    return tx_finish(L, "ROLLBACK", SK_MYSQL_Q_ROLLBACK);
}

static int l_tx_finished(lua_State *L)
{
    sk_mysql_tx_t *tx = luaL_checkudata(L, 1, TX_MT);
    if (tx->outcome != NULL)
        lua_pushstring(L, tx->outcome);
    else
        lua_pushboolean(L, tx->conn == NULL);
    return 1;
}

static int l_tx_gc(lua_State *L)
{
    sk_mysql_tx_t *tx = luaL_checkudata(L, 1, TX_MT);
    /* dropped unfinished (its coroutine was abandoned): the pool rolls back before anyone else gets the link */
    if (tx->conn != NULL && !tx->busy)
        sk_mysql_pool_release(tx->pool, tx->conn);
    tx->conn = NULL;
    return 0;
}

/* mysql.transaction(fn), in Lua over the primitives above: pcall may yield in Lua 5.4, so fn may call tx:query */
static const char transaction_lua[] =
    "local begin, pack, unpack, pcall, type, error = ...\n"
    "return function(fn)\n"
    "    if type(fn) ~= 'function' then\n"
    "        error(\"bad argument #1 to 'transaction' (function expected, got \" .. type(fn) .. ')', 2)\n"
    "    end\n"
    "    local tx, err, errno, sqlstate = begin()\n"
    "    if not tx then return nil, err, errno, sqlstate end\n"
    "    local r = pack(pcall(fn, tx))\n"
    "    if not r[1] then\n"
    "        if not tx:finished() then tx:rollback() end\n"
    "        return nil, r[2]\n"
    "    end\n"
    "    local done = tx:finished()\n"
    "    if done == 'committed' then return true, unpack(r, 2, r.n) end\n"
    "    if done then return nil, 'rolled back' end\n"
    "    if r.n >= 3 and not r[2] and r[3] ~= nil then\n"
    "        tx:rollback()\n"
    "        return nil, r[3], r[4], r[5]\n"
    "    end\n"
    "    local ok, cerr, cerrno, csqlstate = tx:commit()\n"
    "    if not ok then return nil, cerr, cerrno, csqlstate end\n"
    "    return true, unpack(r, 2, r.n)\n"
    "end\n";

/* ===== registration ===== */

void sk_mysql_tx_open(lua_State *L)
{
    static const luaL_Reg tx_methods[] = {
        {"query", l_tx_query}, {"commit", l_tx_commit}, {"rollback", l_tx_rollback}, {"finished", l_tx_finished}, {NULL, NULL}};
    if (luaL_newmetatable(L, TX_MT)) {
        luaL_newlib(L, tx_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_tx_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "mysql transaction");
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);

    if (luaL_loadbuffer(L, transaction_lua, sizeof(transaction_lua) - 1, "=mysql.transaction") != LUA_OK)
        lua_error(L);
    lua_pushcfunction(L, l_begin);
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "pack");
    lua_getfield(L, -2, "unpack");
    lua_remove(L, -3);
    lua_getglobal(L, "pcall");
    lua_getglobal(L, "type");
    lua_getglobal(L, "error");
    lua_call(L, 6, 1);
    lua_setfield(L, -2, "transaction");
}
