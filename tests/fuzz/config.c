/*
 * config.c: a config file's text through the config check (core/config.c, core/config_check.c): the file runs as
 * seckilld runs it (sk_config_push, the SECKILLD_* overrides applied), then the schema of every key the core, the
 * bindings and the scripts declare (sk_bindings_config_keys) and the checks that span keys (sk_config_check_loaded);
 * a config without problems is then read as the bindings read it (sk_config_int/string/bool on every declared key, its
 * default filled in).
 *
 * The file is Lua, and a fuzzer's Lua must not reach the machine: it runs in a state of its own with only the string,
 * table, math and utf8 libraries (no os, io, load or require), at most 200,000 instructions and 64 MiB.
 */
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../bindings/all.h"
#include "../../core/config.h"
#include "../../core/log.h"

#define MAX_BYTES (64u << 20)
#define MAX_INSTRUCTIONS 200000
#define HOOK_EVERY 1000

static size_t used;
static int instructions;

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    size_t old = ptr != NULL ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        used -= old;
        return NULL;
    }
    if (nsize > old && used + (nsize - old) > MAX_BYTES)
        return NULL; /* Lua raises "not enough memory" */
    void *p = realloc(ptr, nsize);
    if (p != NULL)
        used += nsize - old;
    return p;
}

static void on_count(lua_State *L, lua_Debug *ar)
{
    if ((instructions += HOOK_EVERY) > MAX_INSTRUCTIONS)
        luaL_error(L, "too many instructions");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* keys of every kind, each read as the C readers do: strings, integers (a default filled in, or set), booleans */
    static const char *const strings[] = {"listen",      "redis.url", "mysql.url", "kafka.brokers",
                                          "kafka.topic", "strategy",  "log_level", "mysql.schema"};
    static const char *const ints[] = {"workers",        "redis.pool_size",  "http.max_body",
                                       "sale.batch_max", "kafka.batch_size", "redis.lease_size"};
    char err[16384];
    sk_log_level = SK_LOG_ERROR + 1;
    sk_bindings_use(sk_bindings_all);
    sk_config_t cfg = {
        .path = "fuzz.conf", .source = malloc(size + 1), .source_len = size, .ref = LUA_NOREF, .keys = sk_bindings_config_keys()};
    memcpy(cfg.source, data, size);
    cfg.source[size] = '\0';
    used = 0;
    instructions = 0;
    cfg.L = lua_newstate(limited_alloc, NULL);
    luaL_requiref(cfg.L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(cfg.L, LUA_TABLIBNAME, luaopen_table, 1);
    luaL_requiref(cfg.L, LUA_MATHLIBNAME, luaopen_math, 1);
    luaL_requiref(cfg.L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
    lua_settop(cfg.L, 0);
    lua_sethook(cfg.L, on_count, LUA_MASKCOUNT, HOOK_EVERY);
    if (sk_config_push(cfg.L, &cfg) == 0) {
        lua_sethook(cfg.L, NULL, 0, 0); /* the check is ours: it runs to its end whatever the table */
        cfg.ref = luaL_ref(cfg.L, LUA_REGISTRYINDEX);
        size_t n = sk_config_check_loaded(&cfg, err, sizeof(err));
        if (n != 0 && (strncmp(err, "fuzz.conf: ", 11) != 0 || strlen(err) == 0)) {
            fprintf(stderr, "fuzz: %zu problems, not reported as such: %s\n", n, err);
            abort();
        }
        if (n == 0) {
            if (cfg.listen_host == NULL) {
                fprintf(stderr, "fuzz: a config without problems has no listen address\n");
                abort();
            }
            for (size_t i = 0; i != sizeof(strings) / sizeof(strings[0]); ++i)
                sk_config_string(&cfg, strings[i]);
            for (size_t i = 0; i != sizeof(ints) / sizeof(ints[0]); ++i)
                if (sk_config_isset(&cfg, ints[i]))
                    sk_config_int(&cfg, ints[i]);
            sk_config_bool(&cfg, "http.bench_routes");
        }
    }
    lua_close(cfg.L);
    free(cfg.listen_host);
    free(cfg.source);
    return 0;
}
