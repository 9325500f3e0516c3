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

static void fmt_bound(char *buf, size_t len, double v)
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
    fmt_bound(lo, sizeof(lo), k->min);
    fmt_bound(hi, sizeof(hi), k->max);
    fmt_bound(got, sizeof(got), v);
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

/* ===== what the rows give besides the check: lookups, defaults, the environment, the docs ===== */

const sk_config_key_t *sk_config_key_find(const sk_config_key_t *const *sets, const char *path)
{
    const sk_config_key_t *found = NULL;
    const sk_config_key_t *level[2] = {NULL, NULL};
    for (;;) {
        const char *dot = strchr(path, '.');
        size_t len = dot != NULL ? (size_t)(dot - path) : strlen(path);
        found = NULL;
        for (const sk_config_key_t *const *set = sets; *set != NULL && found == NULL; ++set)
            for (const sk_config_key_t *k = *set; k->name != NULL; ++k)
                if (strncmp(k->name, path, len) == 0 && k->name[len] == '\0') {
                    found = k;
                    break;
                }
        if (found == NULL || dot == NULL)
            return found;
        if ((found->types & SK_CONF_TABLE) == 0 || found->keys == NULL)
            return NULL;
        level[0] = found->keys;
        sets = level;
        path = dot + 1;
    }
}

int sk_config_push_text(lua_State *L, const sk_config_key_t *k, const char *text)
{
    char *end;
    if ((k->types & SK_CONF_BOOL) && (strcmp(text, "true") == 0 || strcmp(text, "false") == 0)) {
        lua_pushboolean(L, text[0] == 't');
        return 0;
    }
    if (k->types & SK_CONF_INT) {
        long long n = strtoll(text, &end, 10);
        if (*text != '\0' && *end == '\0') {
            lua_pushinteger(L, n);
            return 0;
        }
    }
    if (k->types & SK_CONF_NUMBER) {
        double v = strtod(text, &end);
        if (*text != '\0' && *end == '\0') {
            lua_pushnumber(L, v);
            return 0;
        }
    }
    if (k->types & SK_CONF_STRING) {
        lua_pushstring(L, text);
        return 0;
    }
    return -1;
}

/* whether a row of keys, or of a table below them, has a default */
static int default_below(const sk_config_key_t *keys)
{
    for (const sk_config_key_t *k = keys; k->name != NULL; ++k)
        if (k->def != NULL || ((k->types & SK_CONF_TABLE) && k->keys != NULL && default_below(k->keys)))
            return 1;
    return 0;
}

/* pushes t[name] when it is a table, else a new table stored there (whatever it held: the caller's rows need one) */
static void push_subtable(lua_State *L, int t, const char *name)
{
    lua_getfield(L, t, name);
    if (lua_istable(L, -1))
        return;
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, t, name);
}

/* whether a variable of these rows, or of a table below them, is set and not empty */
static int env_set_below(const sk_config_key_t *keys)
{
    for (const sk_config_key_t *k = keys; k->name != NULL; ++k) {
        const char *v = k->env != NULL ? getenv(k->env) : NULL;
        if ((v != NULL && *v != '\0') || ((k->types & SK_CONF_TABLE) && k->keys != NULL && env_set_below(k->keys)))
            return 1;
    }
    return 0;
}

static int apply_env(lua_State *L, int t, const sk_config_key_t *keys, char *err, size_t errlen)
{
    for (const sk_config_key_t *k = keys; k->name != NULL; ++k) {
        const char *v = k->env != NULL ? getenv(k->env) : NULL;
        if (v != NULL && *v != '\0') {
            if (sk_config_push_text(L, k, v) != 0) {
                snprintf(err, errlen, "%s: not %s: %s", k->env, (k->types & SK_CONF_INT) ? "an integer" : "a number", v);
                return -1;
            }
            lua_setfield(L, t, k->name);
        }
        if ((k->types & SK_CONF_TABLE) && k->keys != NULL) {
            /* the table is created only when one of its variables is set: an absent table stays absent */
            lua_getfield(L, t, k->name);
            int set = lua_istable(L, -1) || env_set_below(k->keys);
            lua_pop(L, 1);
            if (set) {
                push_subtable(L, t, k->name);
                int r = apply_env(L, lua_gettop(L), k->keys, err, errlen);
                lua_pop(L, 1);
                if (r != 0)
                    return -1;
            }
        }
    }
    return 0;
}

int sk_config_apply_env(lua_State *L, int idx, const sk_config_key_t *const *sets, char *err, size_t errlen)
{
    idx = lua_absindex(L, idx);
    for (; *sets != NULL; ++sets)
        if (apply_env(L, idx, *sets, err, errlen) != 0)
            return -1;
    return 0;
}

static void fill(lua_State *L, int t, const sk_config_key_t *keys)
{
    for (const sk_config_key_t *k = keys; k->name != NULL; ++k) {
        if (k->def != NULL) {
            lua_getfield(L, t, k->name);
            int unset = lua_isnil(L, -1);
            lua_pop(L, 1);
            if (unset && sk_config_push_text(L, k, k->def) == 0)
                lua_setfield(L, t, k->name);
        }
        if ((k->types & SK_CONF_TABLE) && k->keys != NULL && default_below(k->keys)) {
            lua_getfield(L, t, k->name);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_newtable(L);
                lua_pushvalue(L, -1);
                lua_setfield(L, t, k->name);
            }
            if (lua_istable(L, -1))
                fill(L, lua_gettop(L), k->keys);
            lua_pop(L, 1);
        }
    }
}

void sk_config_fill_defaults(lua_State *L, int idx, const sk_config_key_t *const *sets)
{
    idx = lua_absindex(L, idx);
    for (; *sets != NULL; ++sets)
        fill(L, idx, *sets);
}

static void usage_env(FILE *fp, const sk_config_key_t *keys, const char *prefix)
{
    for (const sk_config_key_t *k = keys; k->name != NULL; ++k) {
        char path[MAX_PATH];
        snprintf(path, sizeof(path), "%s%s", prefix, k->name);
        if (k->env != NULL)
            fprintf(fp, "  %-27s %-24s %s\n", k->env, path, k->help != NULL ? k->help : "");
        if ((k->types & SK_CONF_TABLE) && k->keys != NULL) {
            char sub[MAX_PATH + 4];
            snprintf(sub, sizeof(sub), "%s.", path);
            usage_env(fp, k->keys, sub);
        }
    }
}

void sk_config_usage_env(FILE *fp, const sk_config_key_t *const *sets)
{
    for (; *sets != NULL; ++sets)
        usage_env(fp, *sets, "");
}

/* README's type column: the words a value may be, with its range */
static const char *type_column(const sk_config_key_t *k, char *buf, size_t len)
{
    char lo[32], hi[32];
    size_t o = 0;
    if (k->choices != NULL) {
        size_t n = 0;
        while (k->choices[n] != NULL)
            ++n;
        for (size_t i = 0; i != n; ++i)
            o += snprintf(buf + o, o < len ? len - o : 0, "%s`%s`", i == 0 ? "" : i + 1 == n ? " or " : ", ", k->choices[i]);
        return buf;
    }
    if (k->types & SK_CONF_ANY)
        return "anything";
    if (k->types & SK_CONF_MAP)
        return "table of properties";
    if (k->types & SK_CONF_LIST)
        return k->elem != NULL && (k->elem->types & SK_CONF_TABLE) ? "list of tables" : "list of strings";
    static const struct {
        unsigned bit;
        const char *word;
    } words[] = {{SK_CONF_STRING, "string"}, {SK_CONF_INT, "integer"}, {SK_CONF_NUMBER, "number"}, {SK_CONF_BOOL, "boolean"}};
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); ++i)
        if (k->types & words[i].bit)
            o += snprintf(buf + o, o < len ? len - o : 0, "%s%s", o ? " or " : "", words[i].word);
    o = strlen(buf);
    if (!k->ranged)
        return buf;
    fmt_bound(lo, sizeof(lo), k->min);
    fmt_bound(hi, sizeof(hi), k->max);
    if (k->types & (SK_CONF_INT | SK_CONF_NUMBER)) {
        if (k->min > 0 && k->min < 1e-6)
            snprintf(lo, sizeof(lo), "> 0");
        if (k->max >= SK_CONF_NO_MAX)
            snprintf(buf + o, len - o, ", %s%s", k->min > 0 && k->min < 1e-6 ? "" : "≥ ", lo);
        else if (k->min > 0 && k->min < 1e-6)
            snprintf(buf + o, len - o, ", > 0, ≤ %s", hi);
        else
            snprintf(buf + o, len - o, ", %s to %s", lo, hi);
    } else if (k->types & SK_CONF_STRING) {
        snprintf(buf + o, len - o, ", %s to %s characters", lo, hi);
    }
    return buf;
}

static void markdown(FILE *fp, const sk_config_key_t *keys, const char *prefix)
{
    for (const sk_config_key_t *k = keys; k->name != NULL; ++k) {
        char path[MAX_PATH], type[256];
        snprintf(path, sizeof(path), "%s%s", prefix, k->name);
        if ((k->types & SK_CONF_TABLE) && k->keys != NULL && (k->types & ~SK_CONF_TABLE) == 0) {
            char sub[MAX_PATH + 4];
            snprintf(sub, sizeof(sub), "%s.", path);
            markdown(fp, k->keys, sub);
            continue;
        }
        fprintf(fp, "| `%s` | %s | ", path, type_column(k, type, sizeof(type)));
        if (k->def != NULL)
            fprintf(fp, "`%s`", k->def);
        fprintf(fp, " | ");
        if (k->env != NULL)
            fprintf(fp, "`%s`", k->env);
        fprintf(fp, " | %s |\n", k->help != NULL ? k->help : "");
        if ((k->types & SK_CONF_LIST) && k->elem != NULL && (k->elem->types & SK_CONF_TABLE) && k->elem->keys != NULL) {
            char sub[MAX_PATH + 4];
            snprintf(sub, sizeof(sub), "%s[].", path);
            markdown(fp, k->elem->keys, sub);
        }
    }
}

void sk_config_markdown(FILE *fp, const sk_config_key_t *const *sets)
{
    fprintf(fp, "| key | type | default | environment | meaning |\n|---|---|---|---|---|\n");
    for (; *sets != NULL; ++sets)
        markdown(fp, *sets, "");
}
