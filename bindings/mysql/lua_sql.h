/*
 * lua_sql.h: a statement's text and its `?` values copied out of Lua, rendered into SQL for one connection, and
 * result sets pushed back as Lua rows (lua_sql.c). Knows Lua and the connection's escaping; nothing of coroutines.
 */
#ifndef SK_MYSQL_LUA_SQL_H
#define SK_MYSQL_LUA_SQL_H

#include <lua.h>
#include "conn.h"

/** a statement's template and its `?` values (copied out of Lua into the caller's buffer), then the statement
 * rendered for one connection */
typedef struct st_sk_mysql_sql_t {
    const char *tmpl;
    size_t tmpl_len;
    size_t nparams;
    struct st_sk_mysql_param_t *params; /* defined in lua_sql.c */
    /** the rendered statement (sk_mysql_sql_render), freed by sk_mysql_sql_dispose */
    char *text;
    size_t len;
} sk_mysql_sql_t;

/** checks the statement at index `first` of L and its `?` values after it, and returns how many bytes
 * sk_mysql_sql_copy needs for its copies. Misuse raises: a count of values that does not match the placeholders
 * (placeholders inside quotes, quoted identifiers and comments do not count), or a value that has no SQL form. */
size_t sk_mysql_sql_check(lua_State *L, int first);
/** copies the statement and values sk_mysql_sql_check accepted into sql, their bytes into `to` (which must hold
 * what sk_mysql_sql_check returned, be aligned like a pointer, and outlive sql) */
void sk_mysql_sql_copy(lua_State *L, int first, sk_mysql_sql_t *sql, void *to);
/** renders sql->text: values escaped with conn (its character set and NO_BACKSLASH_ESCAPES mode), strings that are
 * not valid UTF-8 as hex literals X'..', NULL/booleans/numbers as literals. conn is used only for strings. */
void sk_mysql_sql_render(sk_mysql_sql_t *sql, sk_mysql_conn_t *conn);
/** frees the rendered text (the copies belong to the caller's buffer) */
void sk_mysql_sql_dispose(sk_mysql_sql_t *sql);

/** pushes a result set as an array of rows, each a table keyed by column name (integers as integers, NULL as
 * mysql.null) */
void sk_mysql_sql_push_rows(lua_State *L, MYSQL_RES *res);

#endif
