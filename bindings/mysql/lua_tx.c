/*
 * lua_tx.c: mysql.transaction. A BEGIN leases a connection and hands it to a `tx` userdata; tx:query, tx:commit
 * and tx:rollback run on that connection (statements through lua_stmt.c, whose kinds below say where the
 * connection goes when each ends); mysql.transaction itself is a few lines of Lua over them. An abandoned tx goes
 * back to the pool, which rolls it back.
 */
#include <lauxlib.h>
#include "lua_stmt.h"
#include "lua_tx.h"

#define TX_MT "seckilld.mysql.tx"

const char sk_mysql_err_connection_lost[] = "connection lost";

/** a transaction's lease: the userdata `tx` passed to the function given to mysql.transaction */
typedef struct st_tx_t {
    sk_mysql_conn_t *conn; /* NULL once finished (or abandoned) */
    sk_mysql_pool_t *pool;
    int busy;
    const char *outcome; /* NULL while open, then "committed" or "rolled back" */
} tx_t;

/* ===== the statement kinds: where the connection goes when each ends ===== */

/* BEGIN: a failure gives the connection back; a success keeps it for push, which hands it to a new tx */
static void on_begin_done(sk_mysql_stmt_t *stmt, sk_mysql_conn_t *conn, const char *err)
{
    if (err != NULL) {
        sk_mysql_pool_release(stmt->pool, conn);
        stmt->conn = NULL;
    }
}

static int push_begin(lua_State *L, sk_mysql_stmt_t *stmt)
{
    tx_t *tx = lua_newuserdatauv(L, sizeof(*tx), 0);
    *tx = (tx_t){.conn = stmt->conn, .pool = stmt->pool};
    stmt->conn = NULL; /* now the tx's */
    luaL_setmetatable(L, TX_MT);
    return 1;
}

/* tx:query: the connection stays with the tx */
static void on_query_done(sk_mysql_stmt_t *stmt, sk_mysql_conn_t *conn, const char *err)
{
    tx_t *tx = stmt->data;
    (void)conn, (void)err;
    tx->busy = 0;
    stmt->conn = NULL;
}

/* COMMIT, ROLLBACK: the tx ends and its connection goes back; the pool rolls back whatever a failed COMMIT left
 * open, or closes a lost link */
static void on_end_done(sk_mysql_stmt_t *stmt, sk_mysql_conn_t *conn, const char *err);

static int push_end(lua_State *L, sk_mysql_stmt_t *stmt)
{
    (void)stmt;
    lua_pushboolean(L, 1);
    return 1;
}

/* abandoned while a statement of the tx ran: the pool discards the link, and the server rolls back */
static void on_abandon(sk_mysql_stmt_t *stmt)
{
    tx_t *tx = stmt->data;
    tx->conn = NULL;
    tx->busy = 0;
    tx->outcome = "rolled back";
}

static const sk_mysql_stmt_kind_t kind_begin = {on_begin_done, push_begin, NULL};
static const sk_mysql_stmt_kind_t kind_query = {on_query_done, NULL, on_abandon};
static const sk_mysql_stmt_kind_t kind_commit = {on_end_done, push_end, on_abandon};
static const sk_mysql_stmt_kind_t kind_rollback = {on_end_done, push_end, on_abandon};

static void on_end_done(sk_mysql_stmt_t *stmt, sk_mysql_conn_t *conn, const char *err)
{
    tx_t *tx = stmt->data;
    tx->conn = NULL;
    tx->busy = 0;
    tx->outcome = stmt->kind == &kind_commit && err == NULL ? "committed" : "rolled back";
    sk_mysql_pool_release(stmt->pool, conn);
    stmt->conn = NULL;
}

/* ===== transactions: begin() -> tx; tx:query(), tx:commit(), tx:rollback() ===== */

static int l_begin(lua_State *L)
{
    sk_co_t *co = sk_co_check(L);
    sk_mysql_pool_t *pool = sk_mysql_stmt_check_pool(L);
    lua_settop(L, 0);
    lua_pushliteral(L, "BEGIN");
    return sk_mysql_stmt_lease(L, sk_mysql_stmt_new(L, 1, &kind_begin, co, pool));
}

static tx_t *check_tx(lua_State *L)
{
    tx_t *tx = luaL_checkudata(L, 1, TX_MT);
    if (tx->conn == NULL)
        luaL_error(L, "mysql: the transaction is finished");
    if (tx->busy)
        luaL_error(L, "mysql: the transaction is already running a statement");
    return tx;
}

static int tx_run(lua_State *L, tx_t *tx, const sk_mysql_stmt_kind_t *kind, sk_co_t *co)
{
    sk_mysql_stmt_t *stmt = sk_mysql_stmt_new(L, 2, kind, co, tx->pool);
    stmt->data = tx;
    if (!tx->conn->connected) {
        /* the link broke on an earlier statement: no statement of this transaction can succeed any more */
        if (kind != &kind_query) {
            sk_mysql_pool_release(tx->pool, tx->conn);
            tx->conn = NULL;
            tx->outcome = "rolled back";
        }
        sk_mysql_stmt_free(stmt);
        lua_pushnil(L);
        lua_pushstring(L, sk_mysql_err_connection_lost);
        return 2;
    }
    tx->busy = 1;
    return sk_mysql_stmt_send(L, stmt, tx->conn);
}

static int l_tx_query(lua_State *L)
{
    tx_t *tx = check_tx(L);
    sk_co_t *co = sk_co_check(L);
    return tx_run(L, tx, &kind_query, co);
}

static int tx_finish(lua_State *L, const char *sql, const sk_mysql_stmt_kind_t *kind)
{
    tx_t *tx = check_tx(L);
    sk_co_t *co = sk_co_check(L);
    lua_settop(L, 1);
    lua_pushstring(L, sql);
    return tx_run(L, tx, kind, co);
}

static int l_tx_commit(lua_State *L)
{
    return tx_finish(L, "COMMIT", &kind_commit);
}

static int l_tx_rollback(lua_State *L)
{
    return tx_finish(L, "ROLLBACK", &kind_rollback);
}

static int l_tx_finished(lua_State *L)
{
    tx_t *tx = luaL_checkudata(L, 1, TX_MT);
    if (tx->outcome != NULL)
        lua_pushstring(L, tx->outcome);
    else
        lua_pushboolean(L, tx->conn == NULL);
    return 1;
}

static int l_tx_gc(lua_State *L)
{
    tx_t *tx = luaL_checkudata(L, 1, TX_MT);
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
