/*
 * tests the rows of every setting this build has (bindings/all.c's list: the core's, each binding's and the shipped
 * scripts') and what comes from them (core/config_check.c): every declared default passes its own row, the defaults
 * fill in only what is unset, the environment's values, path lookups, and README.md's table of settings, which must
 * be the rows' (sk_config_markdown). When a row changed, `build/unit_bindings_all --write` rewrites README's
 * table from the rows.
 */
#define _GNU_SOURCE
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../../bindings/all.h"
#include "../../../core/config.h"
#include "../test.h"

#define README SK_SOURCE_DIR "/README.md"
#define BEGIN "<!-- settings: generated from the rows (core/config_check.h), checked by tests/unit/bindings/all.c -->\n"
#define END "<!-- /settings -->\n"

static char *markdown(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    sk_config_markdown(fp, sk_bindings_config_keys());
    fclose(fp);
    return text;
}

/* walks rows: each with a default, a variable or none, counted; the variables' names checked */
static void walk(const sk_config_key_t *keys, const char *prefix, size_t *defaults, size_t *envs)
{
    for (const sk_config_key_t *k = keys; k->name != NULL; ++k) {
        char path[300];
        snprintf(path, sizeof(path), "%s%s", prefix, k->name);
        if ((k->types & SK_CONF_TABLE) && k->keys != NULL) {
            snprintf(path + strlen(path), sizeof(path) - strlen(path), ".");
            walk(k->keys, path, defaults, envs);
            continue;
        }
        ok(k->help != NULL && *k->help != '\0' && strchr(k->help, '|') == NULL && strchr(k->help, '\n') == NULL,
           "%s: one line of help, no '|'", path);
        *defaults += k->def != NULL;
        if (k->env != NULL) {
            ++*envs;
            ok(strncmp(k->env, "SECKILLD_", 9) == 0, "%s: the variable is SECKILLD_*: %s", path, k->env);
        }
        if (k->elem != NULL && (k->elem->types & SK_CONF_TABLE) && k->elem->keys != NULL)
            for (const sk_config_key_t *e = k->elem->keys; e->name != NULL; ++e)
                ok(e->def == NULL && e->env == NULL, "%s[].%s: nothing is filled inside a list", path, e->name);
    }
}

static void test_rows(void)
{
    const sk_config_key_t *const *sets = sk_bindings_config_keys();
    size_t defaults = 0, envs = 0;
    for (const sk_config_key_t *const *s = sets; *s != NULL; ++s)
        walk(*s, "", &defaults, &envs);
    ok(defaults >= 50 && envs == 16, "rows with a default (%zu) and a variable (16: %zu)", defaults, envs);

    /* every default, filled into an empty table, passes the check: a row cannot declare what it refuses */
    lua_State *L = luaL_newstate();
    lua_newtable(L);
    sk_config_fill_defaults(L, -1, sets);
    sk_config_problems_t p = {NULL};
    sk_config_check(L, -1, sets, "defaults", &p);
    ok(p.count == 0, "every default passes its row: %s", p.text != NULL ? p.text : "");
    free(p.text);

    /* what has no default stays unset, and a table without defaults below it stays absent */
    lua_getfield(L, -1, "kafka");
    lua_getfield(L, -1, "brokers");
    ok(lua_isnil(L, -1), "kafka.brokers stays unset: unset is Kafka not configured");
    lua_getfield(L, -2, "topic");
    ok(lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "seckill.orders") == 0, "kafka.topic filled");
    lua_pop(L, 3);
    lua_getfield(L, -1, "limits");
    lua_getfield(L, -1, "ip");
    ok(lua_isnil(L, -1), "limits.ip stays absent: a bucket is on when set");
    lua_pop(L, 2);
    lua_getfield(L, -1, "items");
    ok(lua_isnil(L, -1), "items stays absent");
    lua_pop(L, 1);
    lua_getfield(L, -1, "http");
    lua_getfield(L, -1, "deadline_ms");
    ok(lua_isinteger(L, -1) && lua_tointeger(L, -1) == 10000, "http.deadline_ms: 10000, an integer");
    lua_pop(L, 2);
    lua_pop(L, 1);

    /* a value set is kept, whatever its type (the check reports a wrong one) */
    luaL_dostring(L, "return { http = { deadline_ms = 5 }, sale = 'x', strategy = 'eval' }");
    sk_config_fill_defaults(L, -1, sets);
    lua_getfield(L, -1, "http");
    lua_getfield(L, -1, "deadline_ms");
    lua_getfield(L, -2, "max_body");
    ok(lua_tointeger(L, -2) == 5 && lua_tointeger(L, -1) == 16384, "a set key kept, its unset sibling filled");
    lua_pop(L, 3);
    lua_getfield(L, -1, "sale");
    ok(lua_type(L, -1) == LUA_TSTRING, "a value of the wrong type is left to the check");
    lua_getfield(L, -2, "strategy");
    ok(strcmp(lua_tostring(L, -1), "eval") == 0, "a set string kept");
    lua_pop(L, 3);

    /* the environment's values, parsed by the row's type */
    char err[256];
    lua_newtable(L);
    setenv("SECKILLD_DEADLINE_MS", "250", 1);
    setenv("SECKILLD_TOPIC", "t", 1);
    setenv("SECKILLD_KAFKA", "", 1);
    ok(sk_config_apply_env(L, -1, sets, err, sizeof(err)) == 0, "variables applied: %s", err);
    lua_getfield(L, -1, "http");
    lua_getfield(L, -1, "deadline_ms");
    ok(lua_isinteger(L, -1) && lua_tointeger(L, -1) == 250, "an integer's variable is an integer");
    lua_pop(L, 2);
    lua_getfield(L, -1, "kafka");
    lua_getfield(L, -1, "brokers");
    lua_getfield(L, -2, "topic");
    ok(lua_isnil(L, -2) && strcmp(lua_tostring(L, -1), "t") == 0, "an empty variable is skipped, a string's kept");
    lua_pop(L, 3);
    lua_getfield(L, -1, "redis");
    ok(lua_isnil(L, -1), "a table none of whose variables is set stays absent");
    lua_pop(L, 1);
    setenv("SECKILLD_DEADLINE_MS", "soon", 1);
    ok(sk_config_apply_env(L, -1, sets, err, sizeof(err)) != 0 && strcmp(err, "SECKILLD_DEADLINE_MS: not an integer: soon") == 0,
       "a bad integer named: %s", err);
    unsetenv("SECKILLD_DEADLINE_MS");
    unsetenv("SECKILLD_TOPIC");
    unsetenv("SECKILLD_KAFKA");
    lua_close(L);

    ok(sk_config_key_find(sets, "redis.pool_size") != NULL && sk_config_key_find(sets, "http") != NULL &&
           sk_config_key_find(sets, "http.nope") == NULL && sk_config_key_find(sets, "nope") == NULL &&
           sk_config_key_find(sets, "kafka.producer.acks") == NULL && sk_config_key_find(sets, "listen.x") == NULL,
       "paths found, and only declared ones");
    ok(strcmp(sk_config_key_find(sets, "kafka.topic")->def, "seckill.orders") == 0, "kafka.topic's default");
}

/* README's table between the markers: compared to the rows', or with write rewritten from them */
static void test_readme(int write)
{
    size_t len;
    char *readme = sk_read_file(README, &len), *rows = markdown();
    ok(readme != NULL, "%s read", README);
    if (readme == NULL)
        return;
    char *begin = strstr(readme, BEGIN), *end = begin != NULL ? strstr(begin, END) : NULL;
    ok(begin != NULL && end != NULL, "README.md has the markers of the table of settings");
    if (end == NULL)
        return;
    begin += strlen(BEGIN);
    if (write) {
        FILE *fp = fopen(README, "w");
        fprintf(fp, "%.*s%s%s", (int)(begin - readme), readme, rows, end);
        fclose(fp);
        printf("%s: the table of settings rewritten from the rows\n", README);
    } else {
        int same = (size_t)(end - begin) == strlen(rows) && memcmp(begin, rows, end - begin) == 0;
        ok(same,
           "README.md's table of settings is the rows' (build/unit_bindings_all --write rewrites it); the rows "
           "give:\n%s",
           rows);
    }
    free(rows);
    free(readme);
}

extern char **environ;

int main(int argc, char **argv)
{
    /* the test harness exports the services' addresses (SECKILLD_REDIS...): the rows' variables start unset here */
    for (char **e = environ; *e != NULL;) {
        char name[128];
        if (strncmp(*e, "SECKILLD_", 9) == 0 && strchr(*e, '=') != NULL && (size_t)(strchr(*e, '=') - *e) < sizeof(name)) {
            snprintf(name, sizeof(name), "%.*s", (int)(strchr(*e, '=') - *e), *e);
            unsetenv(name); /* environ shifted: look at the same place again */
        } else {
            ++e;
        }
    }
    sk_bindings_use(sk_bindings_all);
    test_rows();
    test_readme(argc > 1 && strcmp(argv[1], "--write") == 0);
    return done();
}
