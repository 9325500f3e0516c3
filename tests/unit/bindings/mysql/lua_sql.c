/* tests bindings/mysql/lua_sql.c: `?` placeholders, value literals, misuse, and escaping on a real connection
 * (against the harness's mariadbd when SECKILLD_MYSQL is set; skipped, and said so, otherwise) */
#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>
#include "../../../../bindings/mysql/lua_sql.h"
#include "../../../../bindings/mysql/schema.h"
#include "../../test.h"

static sk_mysql_conn_t *conn; /* NULL: no value needs escaping */
static char rendered[1024];
static size_t rendered_len;

/* renders the statement and values on L's stack, as lua_stmt.c does; raises on misuse */
static int l_render(lua_State *L)
{
    size_t bytes = sk_mysql_sql_check(L, 1);
    void *buf = malloc(bytes + 1);
    sk_mysql_sql_t sql;
    sk_mysql_sql_copy(L, 1, &sql, buf);
    sk_mysql_sql_render(&sql, conn);
    rendered_len = sql.len < sizeof(rendered) - 1 ? sql.len : sizeof(rendered) - 1;
    memcpy(rendered, sql.text, rendered_len);
    rendered[rendered_len] = '\0';
    sk_mysql_sql_dispose(&sql);
    free(buf);
    return 0;
}

/* runs `render(...)` written in Lua; returns NULL and the text in `rendered`, or the error message */
static const char *render(lua_State *L, const char *args)
{
    static char err[512];
    char chunk[1024];
    snprintf(chunk, sizeof(chunk), "render(%s)", args);
    rendered[0] = '\0';
    if (luaL_dostring(L, chunk) == LUA_OK)
        return NULL;
    snprintf(err, sizeof(err), "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return err;
}

#define RENDERS(args, expected)                                                                                                    \
    do {                                                                                                                           \
        const char *e_ = render(L, args);                                                                                          \
        ok(e_ == NULL && strcmp(rendered, expected) == 0, "%s -> %s (%s)", args, rendered, e_ != NULL ? e_ : "no error");          \
    } while (0)
#define RAISES(args, message)                                                                                                      \
    do {                                                                                                                           \
        const char *e_ = render(L, args);                                                                                          \
        ok(e_ != NULL && strstr(e_, message) != NULL, "%s raises \"%s\" (%s)", args, message, e_ != NULL ? e_ : "no error");       \
    } while (0)

static void test_placeholders(lua_State *L)
{
    RENDERS("'SELECT 1'", "SELECT 1");
    RENDERS("'SELECT ?, ?', 42, -7", "SELECT 42, -7");
    /* quoted strings, quoted identifiers and comments hide their `?` */
    RENDERS("\"SELECT '?', \\\"?\\\", `?`, ? -- ?\\n, ? # ?\\n /* ? */\", 1, 2",
            "SELECT '?', \"?\", `?`, 1 -- ?\n, 2 # ?\n /* ? */");
    RENDERS("\"SELECT 'it\\\\'s ?', ?\", 3", "SELECT 'it\\'s ?', 3");
    /* `--` without a space after it is not a comment, so its `?` counts */
    RAISES("'SELECT ?--?', 1", "the statement has 2 placeholder(s) but 1 value(s) were given");
    RAISES("'SELECT ?', 1, 2", "the statement has 1 placeholder(s) but 2 value(s) were given");
}

static void test_values(lua_State *L)
{
    RENDERS("'VALUES (?, ?, ?, ?)', true, false, nil, null", "VALUES (TRUE, FALSE, NULL, NULL)");
    RENDERS("'VALUES (?, ?)', 1.5, -0.25", "VALUES (1.5, -0.25)");
    RENDERS("'VALUES (?)', math.maxinteger", "VALUES (9223372036854775807)");
    /* bytes the utf8mb4 connection would refuse as text go as a hex literal (no connection needed) */
    RENDERS("'VALUES (?)', '\\xff\\x00\\x80'", "VALUES (X'FF0080')");
    RENDERS("'VALUES (?)', '\\xc0\\xaf'", "VALUES (X'C0AF')"); /* an overlong '/' is not UTF-8 */
    RAISES("'VALUES (?)', 1/0", "cannot send inf or nan to mysql");
    RAISES("'VALUES (?)', {}", "cannot send a table to mysql");
    RAISES("'VALUES (?)', print", "cannot send a function to mysql");
    RAISES("nil", "string expected");
}

/* renders `SELECT ? AS v` with the value on the real connection, runs it, and checks the value comes back */
static void round_trip(lua_State *L, MYSQL *m, const char *bytes, size_t len)
{
    lua_pushcfunction(L, l_render);
    lua_pushliteral(L, "SELECT ? AS v");
    lua_pushlstring(L, bytes, len);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        ok(0, "renders: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return;
    }
    MYSQL_RES *res;
    if (mysql_real_query(m, rendered, rendered_len) != 0 || (res = mysql_store_result(m)) == NULL) {
        ok(0, "%s: %s", rendered, mysql_error(m));
        return;
    }
    MYSQL_ROW row = mysql_fetch_row(res);
    unsigned long *got = mysql_fetch_lengths(res);
    ok(row != NULL && got[0] == len && memcmp(row[0], bytes, len) == 0, "%s comes back as sent", rendered);
    mysql_free_result(res);
}

/* escaping is the connection's (its character set, NO_BACKSLASH_ESCAPES): check it against the real server by
 * sending the rendered statement and reading the value back */
static void test_escaping(lua_State *L, const char *url)
{
    sk_mysql_target_t target;
    char err[256];
    ok(sk_mysql_target_init(&target, url, 2000, 5000, err, sizeof(err)) == 0, "target: %s", err);
    MYSQL *m = mysql_init(NULL);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (mysql_real_connect(m, target.host, target.user, target.password, target.db, target.port, NULL, 0) == NULL) {
        ok(0, "connect to %s: %s", url, mysql_error(m));
        mysql_close(m);
        sk_mysql_target_dispose(&target);
        return;
    }
    sk_mysql_conn_t c = {.mysql = m};
    conn = &c;
#define V(s)                                                                                                                       \
    {                                                                                                                              \
        s, sizeof(s) - 1                                                                                                           \
    }
    static const struct {
        const char *bytes;
        size_t len;
    } values[] = {V("it's"),          V("a \"quote\""),
                  V("back\\slash"),   V("nul \0 and \n newline \x1a"),
                  V("' OR 1=1 -- "),  V("caf\xc3\xa9 \xf0\x9f\x8d\xa3"),
                  V("\\' OR 1=1 -- ")};
#undef V
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); ++i)
        round_trip(L, m, values[i].bytes, values[i].len);
    /* in NO_BACKSLASH_ESCAPES mode a quote is doubled and a backslash is an ordinary byte: the escaping follows the
     * session's mode */
    ok(mysql_query(m, "SET sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')") == 0, "sql_mode: %s", mysql_error(m));
    round_trip(L, m, "it's a \\", 8);
    ok(strcmp(rendered, "SELECT 'it''s a \\' AS v") == 0, "NO_BACKSLASH_ESCAPES: %s", rendered);
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); ++i)
        round_trip(L, m, values[i].bytes, values[i].len);
    conn = NULL;
    mysql_close(m);
    sk_mysql_target_dispose(&target);
}

int main(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_pushlightuserdata(L, NULL);
    lua_setglobal(L, "null"); /* mysql.null */
    lua_pushcfunction(L, l_render);
    lua_setglobal(L, "render");

    test_placeholders(L);
    test_values(L);
    const char *url = getenv("SECKILLD_MYSQL");
    if (url != NULL && *url != '\0')
        test_escaping(L, url);
    else
        printf("# SECKILLD_MYSQL is not set: escaping on a real connection not tested\n");

    lua_close(L);
    return done();
}
