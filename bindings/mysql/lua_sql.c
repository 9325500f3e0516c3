/*
 * lua_sql.c: Lua values into SQL and result sets into Lua values, for the statements of lua_stmt.c.
 *
 * Values bound to `?` placeholders are rendered into the statement after a connection is leased, with
 * mysql_real_escape_string on that connection (so its character set and NO_BACKSLASH_ESCAPES mode are honoured).
 * Strings that are not valid UTF-8 (binary data) go as hex literals X'..', which the utf8mb4 connection would
 * otherwise reject. Rows come back as tables keyed by column name, integers as integers, NULL as mysql.null.
 */
#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lua_sql.h"

/* ===== placeholders ===== */

/* the offset of the next `?` placeholder at or after i, skipping quoted strings, quoted identifiers and comments;
 * len if there is none */
static size_t next_placeholder(const char *s, size_t len, size_t i)
{
    while (i < len) {
        char c = s[i];
        if (c == '?')
            return i;
        if (c == '\'' || c == '"' || c == '`') {
            for (++i; i < len && s[i] != c; ++i)
                if (s[i] == '\\' && c != '`')
                    ++i;
            ++i; /* past the closing quote ('' and "" doubling is two adjacent strings to this scanner) */
        } else if (c == '#' || (c == '-' && i + 2 < len && s[i + 1] == '-' && (s[i + 2] == ' ' || s[i + 2] == '\t'))) {
            while (i < len && s[i] != '\n')
                ++i;
        } else if (c == '/' && i + 1 < len && s[i + 1] == '*') {
            for (i += 2; i + 1 < len && !(s[i] == '*' && s[i + 1] == '/'); ++i)
                ;
            i += 2;
        } else {
            ++i;
        }
    }
    return len;
}

static int is_utf8(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned c = s[i], n;
        uint32_t cp;
        if (c < 0x80) {
            ++i;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1, cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2, cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3, cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + n >= len)
            return 0;
        for (unsigned k = 1; k <= n; ++k) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

enum { P_NULL, P_BOOL, P_INT, P_FLOAT, P_STRING };

typedef struct st_sk_mysql_param_t {
    int type;
    union {
        long long i;
        double d;
        struct {
            const char *p;
            size_t len;
        } s;
    };
} param_t;

/* ===== rendering a statement ===== */

static size_t rendered_size(const sk_mysql_sql_t *sql)
{
    size_t n = sql->tmpl_len + 1;
    for (size_t i = 0; i < sql->nparams; ++i) {
        const param_t *p = sql->params + i;
        n += p->type == P_STRING ? 2 * p->s.len + 3 : 32;
    }
    return n;
}

static char *render_param(sk_mysql_conn_t *conn, char *dst, const param_t *p)
{
    static const char hex[] = "0123456789ABCDEF";
    switch (p->type) {
    case P_NULL:
        return dst + sprintf(dst, "NULL");
    case P_BOOL:
        return dst + sprintf(dst, p->i ? "TRUE" : "FALSE");
    case P_INT:
        return dst + sprintf(dst, "%lld", p->i);
    case P_FLOAT:
        return dst + sprintf(dst, "%.17g", p->d);
    }
    if (is_utf8((const unsigned char *)p->s.p, p->s.len)) {
        *dst++ = '\'';
        dst += sk_mysql_conn_escape(conn, dst, p->s.p, p->s.len);
        *dst++ = '\'';
    } else {
        /* bytes the utf8mb4 connection would refuse as text: a hex literal is a binary string, stored as is */
        *dst++ = 'X';
        *dst++ = '\'';
        for (size_t i = 0; i < p->s.len; ++i) {
            *dst++ = hex[(unsigned char)p->s.p[i] >> 4];
            *dst++ = hex[(unsigned char)p->s.p[i] & 15];
        }
        *dst++ = '\'';
    }
    return dst;
}

void sk_mysql_sql_render(sk_mysql_sql_t *sql, sk_mysql_conn_t *conn)
{
    char *dst = sql->text = h2o_mem_alloc(rendered_size(sql));
    size_t from = 0;
    for (size_t i = 0; i < sql->nparams; ++i) {
        size_t at = next_placeholder(sql->tmpl, sql->tmpl_len, from);
        memcpy(dst, sql->tmpl + from, at - from);
        dst = render_param(conn, dst + (at - from), sql->params + i);
        from = at + 1;
    }
    memcpy(dst, sql->tmpl + from, sql->tmpl_len - from);
    dst += sql->tmpl_len - from;
    sql->len = dst - sql->text;
}

void sk_mysql_sql_dispose(sk_mysql_sql_t *sql)
{
    free(sql->text);
    sql->text = NULL;
}

/* ===== copying the statement out of Lua ===== */

size_t sk_mysql_sql_check(lua_State *L, int first)
{
    size_t tmpl_len, nph = 0, strings = 0;
    const char *tmpl = luaL_checklstring(L, first, &tmpl_len);
    int nargs = lua_gettop(L) - first;
    for (size_t at = 0; (at = next_placeholder(tmpl, tmpl_len, at)) < tmpl_len; ++at)
        ++nph;
    if ((size_t)nargs != nph)
        luaL_error(L, "mysql: the statement has %d placeholder(s) but %d value(s) were given", (int)nph, nargs);
    for (int i = first + 1; i <= first + nargs; ++i) {
        switch (lua_type(L, i)) {
        case LUA_TNIL:
        case LUA_TBOOLEAN:
            break;
        case LUA_TNUMBER:
            if (!lua_isinteger(L, i) && !isfinite(lua_tonumber(L, i)))
                luaL_argerror(L, i, "cannot send inf or nan to mysql");
            break;
        case LUA_TSTRING:
            strings += lua_rawlen(L, i);
            break;
        case LUA_TLIGHTUSERDATA:
            if (lua_touserdata(L, i) == NULL)
                break; /* mysql.null */
            /* fallthrough */
        default:
            luaL_argerror(L, i, lua_pushfstring(L, "cannot send a %s to mysql", luaL_typename(L, i)));
        }
    }
    return nph * sizeof(param_t) + tmpl_len + strings;
}

void sk_mysql_sql_copy(lua_State *L, int first, sk_mysql_sql_t *sql, void *to)
{
    size_t tmpl_len;
    const char *tmpl = lua_tolstring(L, first, &tmpl_len);
    size_t nph = (size_t)(lua_gettop(L) - first);
    *sql = (sk_mysql_sql_t){.nparams = nph, .tmpl_len = tmpl_len, .params = to};
    char *buf = (char *)(sql->params + nph);
    memcpy(buf, tmpl, tmpl_len);
    sql->tmpl = buf;
    buf += tmpl_len;
    for (size_t k = 0; k < nph; ++k) {
        int i = first + 1 + (int)k;
        param_t *p = sql->params + k;
        switch (lua_type(L, i)) {
        case LUA_TBOOLEAN:
            *p = (param_t){.type = P_BOOL, .i = lua_toboolean(L, i)};
            break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, i))
                *p = (param_t){.type = P_INT, .i = lua_tointeger(L, i)};
            else
                *p = (param_t){.type = P_FLOAT, .d = lua_tonumber(L, i)};
            break;
        case LUA_TSTRING: {
            size_t len;
            const char *s = lua_tolstring(L, i, &len);
            memcpy(buf, s, len);
            *p = (param_t){.type = P_STRING, .s = {buf, len}};
            buf += len;
            break;
        }
        default:
            *p = (param_t){.type = P_NULL};
            break;
        }
    }
}

/* ===== results ===== */

static void push_value(lua_State *L, const MYSQL_FIELD *f, const char *v, unsigned long len)
{
    if (v == NULL) {
        lua_pushlightuserdata(L, NULL); /* mysql.null, which is also json.null */
        return;
    }
    switch (f->type) {
    case MYSQL_TYPE_TINY:
    case MYSQL_TYPE_SHORT:
    case MYSQL_TYPE_LONG:
    case MYSQL_TYPE_INT24:
    case MYSQL_TYPE_LONGLONG:
    case MYSQL_TYPE_YEAR: {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno == 0 && end == v + len) {
            lua_pushinteger(L, (lua_Integer)n);
            return;
        }
        break; /* BIGINT UNSIGNED above 2^63-1: kept exact, as a string */
    }
    case MYSQL_TYPE_FLOAT:
    case MYSQL_TYPE_DOUBLE:
        lua_pushnumber(L, strtod(v, NULL));
        return;
    default:
        break;
    }
    lua_pushlstring(L, v, len);
}

void sk_mysql_sql_push_rows(lua_State *L, MYSQL_RES *res)
{
    unsigned nfields = mysql_num_fields(res);
    MYSQL_FIELD *fields = mysql_fetch_fields(res);
    lua_createtable(L, (int)mysql_num_rows(res), 0);
    MYSQL_ROW row;
    for (lua_Integer r = 1; (row = mysql_fetch_row(res)) != NULL; ++r) {
        unsigned long *lengths = mysql_fetch_lengths(res);
        lua_createtable(L, 0, (int)nfields);
        for (unsigned i = 0; i < nfields; ++i) {
            lua_pushlstring(L, fields[i].name, fields[i].name_length);
            push_value(L, fields + i, row[i], lengths[i]);
            lua_rawset(L, -3);
        }
        lua_rawseti(L, -2, r);
    }
}
