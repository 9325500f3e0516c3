/*
 * config_check.c: walks the config table against the schema (config_check.h) and reports every problem, not just
 * the first: an operator fixing a config file wants the whole list at once from `seckilld -t`.
 */
#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <h2o/memory.h>
#include "config_check.h"

#define MAX_PATH 256
#define MAX_NAME 64

void sk_config_problem(sk_config_problems_t *p, const char *prefix, const char *path, const char *fmt, ...)
{
    char line[1024];
    int n = snprintf(line, sizeof(line), "%s: %s: ", prefix, path);
    if (n < 0 || (size_t)n >= sizeof(line))
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    size_t len = n + (m < 0 ? 0 : (size_t)m >= sizeof(line) - n ? sizeof(line) - n - 1 : (size_t)m);
    p->text = h2o_mem_realloc(p->text, p->len + len + 2);
    memcpy(p->text + p->len, line, len);
    p->len += len;
    p->text[p->len++] = '\n';
    p->text[p->len] = '\0';
    ++p->count;
}

size_t sk_config_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > MAX_NAME || lb > MAX_NAME)
        return SIZE_MAX;
    size_t d[MAX_NAME + 1][MAX_NAME + 1];
    for (size_t i = 0; i <= la; ++i)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; ++j)
        d[0][j] = j;
    for (size_t i = 1; i <= la; ++i) {
        for (size_t j = 1; j <= lb; ++j) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v)
                v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v)
                v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    }
    return d[la][lb];
}

/* the declared key of that name among sets, or NULL; *best gets the closest name when none matches */
static const sk_config_key_t *find_key(const sk_config_key_t *const *sets, const char *name, const char **best)
{
    size_t best_d = SIZE_MAX;
    *best = NULL;
    for (; *sets != NULL; ++sets) {
        for (const sk_config_key_t *k = *sets; k->name != NULL; ++k) {
            if (strcmp(k->name, name) == 0)
                return k;
            size_t d = sk_config_distance(name, k->name);
            if (d < best_d) {
                best_d = d;
                *best = k->name;
            }
        }
    }
    /* a suggestion only when it is plausibly a typo: at most a third of the name wrong (one edit for short names) */
    size_t allowed = strlen(name) / 3;
    if (best_d > (allowed < 1 ? 1 : allowed))
        *best = NULL;
    return NULL;
}

static const char *type_words(unsigned types, char *buf, size_t len)
{
    static const struct {
        unsigned bit;
        const char *word;
    } words[] = {{SK_CONF_STRING, "a string"},      {SK_CONF_INT, "an integer"}, {SK_CONF_NUMBER, "a number"},
                 {SK_CONF_BOOL, "a boolean"},       {SK_CONF_TABLE, "a table"},  {SK_CONF_MAP, "a table"},
                 {SK_CONF_LIST, "a list (a table)"}};
    size_t o = 0, n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); ++i) {
        if ((types & words[i].bit) == 0 || (words[i].bit == SK_CONF_MAP && (types & SK_CONF_TABLE)))
            continue;
        o += snprintf(buf + o, o < len ? len - o : 0, "%s%s", n++ ? " or " : "", words[i].word);
    }
    return buf;
}

static const char *value_word(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TNUMBER)
        return lua_isinteger(L, idx) ? "an integer" : "a number";
    return luaL_typename(L, idx);
}

void sk_config_fmt_bound(char *buf, size_t len, double v)
{
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, len, "%.0f", v);
    else
        snprintf(buf, len, "%g", v);
}

static void check_range(const sk_config_key_t *k, double v, const char *what, const char *prefix, const char *path,
                        sk_config_problems_t *p)
{
    if (!k->ranged || (v >= k->min && v <= k->max))
        return;
    char lo[32], hi[32], got[32];
    sk_config_fmt_bound(lo, sizeof(lo), k->min);
    sk_config_fmt_bound(hi, sizeof(hi), k->max);
    sk_config_fmt_bound(got, sizeof(got), v);
    if (k->max >= SK_CONF_NO_MAX)
        sk_config_problem(p, prefix, path, "%s at least %s, got %s", what, lo, got);
    else
        sk_config_problem(p, prefix, path, "%s between %s and %s, got %s", what, lo, hi, got);
}

/* a table's keys against `sets`; each name must be a string */
static void check_table(lua_State *L, int idx, const sk_config_key_t *const *sets, const char *prefix, const char *path,
                        sk_config_problems_t *p)
{
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        char sub[MAX_PATH];
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pushvalue(L, -2);
            snprintf(sub, sizeof(sub), "%s[%s]", path, luaL_tolstring(L, -1, NULL));
            lua_pop(L, 2);
            sk_config_problem(p, prefix, sub, "unexpected entry: keys must be names (key = value)");
        } else {
            const char *name = lua_tostring(L, -2), *best;
            snprintf(sub, sizeof(sub), "%s%s%s", path, *path ? "." : "", name);
            const sk_config_key_t *k = find_key(sets, name, &best);
            if (k == NULL) {
                if (best != NULL)
                    sk_config_problem(p, prefix, sub, "unknown key; did you mean %s?", best);
                else
                    sk_config_problem(p, prefix, sub, "unknown key");
            } else {
                sk_config_check_value(L, -1, k, prefix, sub, p);
            }
        }
        lua_pop(L, 1);
    }
}

static void check_map(lua_State *L, int idx, const char *prefix, const char *path, sk_config_problems_t *p)
{
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        char sub[MAX_PATH];
        int vt = lua_type(L, -1);
        if (lua_type(L, -2) != LUA_TSTRING) {
            snprintf(sub, sizeof(sub), "%s", path);
            sk_config_problem(p, prefix, sub, "keys must be property names (strings)");
        } else if (vt != LUA_TSTRING && vt != LUA_TNUMBER && vt != LUA_TBOOLEAN) {
            snprintf(sub, sizeof(sub), "%s[\"%s\"]", path, lua_tostring(L, -2));
            sk_config_problem(p, prefix, sub, "must be a string, a number or a boolean, got %s", value_word(L, -1));
        }
        lua_pop(L, 1);
    }
}

static void check_list(lua_State *L, int idx, const sk_config_key_t *k, const char *prefix, const char *path,
                       sk_config_problems_t *p)
{
    idx = lua_absindex(L, idx);
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        char sub[MAX_PATH];
        int isint;
        lua_Integer i = lua_type(L, -2) == LUA_TNUMBER ? lua_tointegerx(L, -2, &isint) : (isint = 0);
        if (!isint || i < 1 || i > n) {
            lua_pushvalue(L, -2);
            snprintf(sub, sizeof(sub), "%s.%s", path, luaL_tolstring(L, -1, NULL));
            lua_pop(L, 2);
            sk_config_problem(p, prefix, sub, "unexpected key: a list holds only entries 1, 2, ...");
        } else {
            snprintf(sub, sizeof(sub), "%s[%lld]", path, (long long)i);
            sk_config_check_value(L, -1, k->elem, prefix, sub, p);
        }
        lua_pop(L, 1);
    }
}

void sk_config_check_value(lua_State *L, int idx, const sk_config_key_t *k, const char *prefix, const char *path,
                           sk_config_problems_t *p)
{
    char words[128];
    idx = lua_absindex(L, idx);
    if (k->types & SK_CONF_ANY)
        return;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        if (k->types & SK_CONF_STRING) {
            size_t len;
            const char *s = lua_tolstring(L, idx, &len);
            if (k->choices != NULL) {
                for (const char *const *c = k->choices; *c != NULL; ++c)
                    if (strcasecmp(*c, s) == 0)
                        return;
                char list[256];
                size_t o = 0;
                for (const char *const *c = k->choices; *c != NULL; ++c)
                    o += snprintf(list + o, o < sizeof(list) ? sizeof(list) - o : 0, "%s\"%s\"", o ? ", " : "", *c);
                sk_config_problem(p, prefix, path, "must be one of %s, got \"%s\"", list, s);
                return;
            }
            if (k->ranged && (len < k->min || len > k->max)) {
                if (k->max >= SK_CONF_NO_MAX)
                    sk_config_problem(p, prefix, path, "must be at least %.0f characters long", k->min);
                else
                    sk_config_problem(p, prefix, path, "must be %.0f to %.0f characters long", k->min, k->max);
            }
            return;
        }
        break;
    case LUA_TNUMBER:
        if (k->types & SK_CONF_NUMBER) {
            lua_Number v = lua_tonumber(L, idx);
            if (v != v)
                sk_config_problem(p, prefix, path, "must be a number, got NaN");
            else
                check_range(k, v, "must be", prefix, path, p);
            return;
        }
        if (k->types & SK_CONF_INT) {
            int isint;
            lua_Integer v = lua_tointegerx(L, idx, &isint);
            if (!isint) {
                sk_config_problem(p, prefix, path, "must be an integer, got %s", lua_tostring(L, idx));
                return;
            }
            check_range(k, (double)v, "must be", prefix, path, p);
            return;
        }
        break;
    case LUA_TBOOLEAN:
        if (k->types & SK_CONF_BOOL)
            return;
        break;
    case LUA_TTABLE:
        if (k->types & SK_CONF_TABLE) {
            const sk_config_key_t *sets[] = {k->keys, NULL};
            check_table(L, idx, sets, prefix, path, p);
            return;
        }
        if (k->types & SK_CONF_MAP) {
            check_map(L, idx, prefix, path, p);
            return;
        }
        if (k->types & SK_CONF_LIST) {
            check_list(L, idx, k, prefix, path, p);
            return;
        }
        break;
    default:
        break;
    }
    sk_config_problem(p, prefix, path, "must be %s, got %s", type_words(k->types, words, sizeof(words)), value_word(L, idx));
}

void sk_config_check(lua_State *L, int idx, const sk_config_key_t *const *sets, const char *prefix, sk_config_problems_t *p)
{
    check_table(L, idx, sets, prefix, "", p);
}
