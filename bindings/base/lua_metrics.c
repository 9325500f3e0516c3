/*
 * lua_metrics.c: the `metrics` Lua module: scripts export their own Prometheus series on GET /metrics.
 *
 *   metrics.gauge(name, value [, labels])   sets a gauge series (an integer; may be negative)
 *   metrics.add(name, n [, labels])          adds n >= 0 to a counter series
 *   metrics.counter(name [, labels])         → add([n = 1]): the series resolved once, for hot paths
 *
 * `name` is a Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`); `labels` a table of string keys and string or
 * number values, rendered in key order so that the same table always names the same series. A name keeps the type
 * of its first use. Series are process-wide (core/metrics.c), so every worker of a process updates the same one.
 *
 *   health.note(name, state [, detail])      an informational status in GET /healthz: "<name>": "<state>" (and
 *                                            "<name>_error": "<detail>" while a detail is given); never decides the
 *                                            status code (core/health.h). At most 3 names per process.
 */
#include <lauxlib.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "../../core/health.h"
#include "../../core/metrics.h"
#include "../../core/binding.h"

static int valid_name(const char *s)
{
    if (*s == '\0' || !(*s == '_' || *s == ':' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
        return 0;
    for (; *s != '\0'; ++s)
        if (!(*s == '_' || *s == ':' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
            return 0;
    return 1;
}

/* pushes the label list (`k="v",k2="v2"`, keys sorted) built from the table at idx, or "" when it is nil */
static void push_labels(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx)) {
        lua_pushliteral(L, "");
        return;
    }
    luaL_checktype(L, idx, LUA_TTABLE);
    /* collect the keys, sorted by insertion: label sets are tiny */
    const char *keys[16];
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING || !valid_name(lua_tostring(L, -2)))
            luaL_error(L, "metrics: label names must be strings like a metric name");
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "metrics: label values must be strings or numbers");
        if (n == 16)
            luaL_error(L, "metrics: at most 16 labels");
        const char *k = lua_tostring(L, -2); /* anchored by the table */
        int i = n++;
        while (i > 0 && strcmp(keys[i - 1], k) > 0) {
            keys[i] = keys[i - 1];
            --i;
        }
        keys[i] = k;
        lua_pop(L, 1);
    }
    char out[1024];
    size_t len = 0;
    for (int i = 0; i != n; ++i) {
        lua_getfield(L, idx, keys[i]);
        const char *v = lua_tostring(L, -1); /* stays on the stack (anchored) while we copy it */
        if (len + strlen(keys[i]) + 2 * strlen(v) + 5 >= sizeof(out))
            luaL_error(L, "metrics: labels too long");
        len += (size_t)sprintf(out + len, "%s%s=\"", i != 0 ? "," : "", keys[i]);
        for (; *v != '\0'; ++v) {
            if (*v == '\n') {
                out[len++] = '\\';
                out[len++] = 'n';
                continue;
            }
            if (*v == '\\' || *v == '"')
                out[len++] = '\\';
            out[len++] = *v;
        }
        out[len++] = '"';
        lua_pop(L, 1);
    }
    lua_pushlstring(L, out, len);
}

static const char *check_name(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    luaL_argcheck(L, valid_name(name), 1, "not a Prometheus metric name");
    return name;
}

static int l_gauge(lua_State *L)
{
    const char *name = check_name(L);
    lua_Integer v = luaL_checkinteger(L, 2);
    push_labels(L, 3);
    sk_gauge_set(sk_metrics_gauge(name, "set by a script", lua_tostring(L, -1)), v);
    return 0;
}

static int l_add(lua_State *L)
{
    const char *name = check_name(L);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 0, 2, "a counter only goes up");
    push_labels(L, 3);
    sk_counter_add(sk_metrics_counter(name, "counted by a script", lua_tostring(L, -1)), (uint64_t)n);
    return 0;
}

/* the counter a metrics.counter function adds to (its upvalue) */
static int l_counter_add(lua_State *L)
{
    lua_Integer n = luaL_optinteger(L, 1, 1);
    luaL_argcheck(L, n >= 0, 1, "a counter only goes up");
    sk_counter_add(lua_touserdata(L, lua_upvalueindex(1)), (uint64_t)n);
    return 0;
}

/* metrics.counter(name [, labels]) → add([n = 1]): the series is looked up once, here, so a hot path pays an atomic
 * add per call instead of metrics.add's registry lookup under the registry's mutex. Series live as long as the
 * process, so the pointer outlives any VM that holds the function. */
static int l_counter(lua_State *L)
{
    const char *name = check_name(L);
    push_labels(L, 2);
    lua_pushlightuserdata(L, sk_metrics_counter(name, "counted by a script", lua_tostring(L, -1)));
    lua_pushcclosure(L, l_counter_add, 1);
    return 1;
}

/* ===== health.note: a script's informational status in /healthz ===== */

/* the names scripts registered, copied here: core/health.c keeps the pointer (process-wide, never freed) */
#define MAX_NOTES 3
static pthread_mutex_t notes_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char name[32];
    sk_health_info_t *info;
} notes[MAX_NOTES];
static size_t nnotes;

/* a JSON-safe word: 1..max-1 of a-z, 0-9, '_' (and '-' where dashes is set) */
static int is_word(const char *s, size_t len, size_t max, int dashes)
{
    if (len == 0 || len >= max)
        return 0;
    for (size_t i = 0; i != len; ++i)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || (dashes && s[i] == '-')))
            return 0;
    return 1;
}

static int l_health_note(lua_State *L)
{
    size_t len, slen;
    const char *name = luaL_checklstring(L, 1, &len), *state = luaL_checklstring(L, 2, &slen);
    const char *detail = luaL_optstring(L, 3, NULL);
    luaL_argcheck(L, is_word(name, len, sizeof(notes[0].name), 0), 1, "1-31 of a-z, 0-9, _");
    luaL_argcheck(L, is_word(state, slen, 24, 1), 2, "1-23 of a-z, 0-9, _, -");
    sk_health_info_t *info = NULL;
    pthread_mutex_lock(&notes_mutex);
    for (size_t i = 0; i != nnotes && info == NULL; ++i)
        if (strcmp(notes[i].name, name) == 0)
            info = notes[i].info;
    if (info == NULL && nnotes < MAX_NOTES) {
        memcpy(notes[nnotes].name, name, len + 1);
        if ((info = sk_health_register_info(notes[nnotes].name, state)) != NULL)
            notes[nnotes++].info = info;
    }
    pthread_mutex_unlock(&notes_mutex);
    if (info == NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, "no room for another health note");
        return 2;
    }
    sk_health_info_set(info, state, detail);
    lua_pushboolean(L, 1);
    return 1;
}

static void open_metrics(lua_State *L)
{
    static const luaL_Reg fns[] = {{"gauge", l_gauge}, {"add", l_add}, {"counter", l_counter}, {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_setglobal(L, "metrics");
    static const luaL_Reg health[] = {{"note", l_health_note}, {NULL, NULL}};
    luaL_newlib(L, health);
    lua_setglobal(L, "health");
}

const sk_binding_t sk_binding_metrics = {.name = "metrics", .open = open_metrics};
