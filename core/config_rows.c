/*
 * config_rows.c: what the rows of the schema (config_check.h) give besides the check: a path's row, a default's or a
 * variable's text as a value of the row's type, the SECKILLD_* overrides, the defaults filled in where a key is unset,
 * and the docs (`--help`'s variables, README's table of settings). The check itself is config_check.c.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config_check.h"

#define MAX_PATH 256

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
    sk_config_fmt_bound(lo, sizeof(lo), k->min);
    sk_config_fmt_bound(hi, sizeof(hi), k->max);
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
