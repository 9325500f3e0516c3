/*
 * scripts.c: the Lua unit tests of the scripts (tests/unit/scripts/, mirroring scripts/: sale/decide.lua tests
 * scripts/sale/decide.lua). Each test file runs in a fresh, plain Lua 5.4 state: the standard libraries, no bindings
 * (a test stubs what a module reads, such as redis.slot), package.path at scripts/ so that `require "sale.decide"`
 * loads the real module. Beside the standard libraries a test file sees:
 *
 *   test(name, fn)           runs fn; an error in it fails that case (reported with its message), the file goes on
 *   eq(got, want[, what])    raises unless got equals want (tables compared deeply)
 *   SK_SCRIPTS               the scripts folder's path
 *   lua_files(dir)           the .lua files under dir (any depth), as sorted paths relative to it
 *
 * Usage: unit_scripts [FILE...]; without files, every .lua file under tests/unit/scripts/. The last line is "N passed, M
 * failed" (cases, over every file); the exit code is 0 only when none failed and some passed. A file that fails to
 * load or raises outside a case counts as one failed case.
 */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SK_SOURCE_DIR
#error "SK_SOURCE_DIR must name the source tree (tests/tests.cmake defines it)"
#endif

static int passed, failed;

/* ===== lua_files(dir) ===== */
static lua_State *walk_L;
static size_t walk_root_len;

static int on_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)ftw;
    size_t n = strlen(path);
    if (type == FTW_F && n > 4 && strcmp(path + n - 4, ".lua") == 0) {
        lua_pushstring(walk_L, path + walk_root_len + 1);
        lua_rawseti(walk_L, -2, (lua_Integer)lua_rawlen(walk_L, -2) + 1);
    }
    return 0;
}

static int lua_files(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    lua_newtable(L);
    walk_L = L, walk_root_len = strlen(dir);
    if (nftw(dir, on_entry, 16, FTW_PHYS) != 0)
        return luaL_error(L, "cannot read %s", dir);
    /* sorted: the same order on every machine */
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    return 1;
}

/* runs one test file in a state of its own; adds its cases to passed/failed */
static void run_file(const char *file)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_pushstring(L, SK_SOURCE_DIR "/scripts");
    lua_setglobal(L, "SK_SCRIPTS");
    lua_pushcfunction(L, lua_files);
    lua_setglobal(L, "lua_files");
    lua_getglobal(L, "package");
    lua_pushstring(L, SK_SOURCE_DIR "/scripts/?.lua;" SK_SOURCE_DIR "/scripts/?/init.lua");
    lua_setfield(L, -2, "path");
    lua_pushstring(L, "");
    lua_setfield(L, -2, "cpath"); /* the scripts load no C modules; neither do their tests */
    lua_pop(L, 1);
    if (luaL_loadfile(L, SK_SOURCE_DIR "/tests/unit/scripts.lua") != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
        printf("not ok %s: prelude: %s\n", file, lua_tostring(L, -1));
        ++failed;
        lua_close(L);
        return;
    }
    int counts = lua_gettop(L);
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    int handler = lua_gettop(L);
    int ok = luaL_loadfile(L, file) == LUA_OK && lua_pcall(L, 0, 0, handler) == LUA_OK;
    if (!ok) {
        printf("not ok %s: %s\n", file, lua_tostring(L, -1));
        ++failed;
    }
    lua_settop(L, counts);
    lua_call(L, 0, 2);
    int p = (int)lua_tointeger(L, -2), f = (int)lua_tointeger(L, -1);
    printf("%s %s: %d passed, %d failed\n", ok && f == 0 && p > 0 ? "ok" : "not ok", file, p, f);
    if (ok && p == 0) {
        printf("not ok %s: no case ran\n", file);
        ++failed;
    }
    passed += p, failed += f;
    lua_close(L);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        for (int i = 1; i < argc; ++i)
            run_file(argv[i]);
    } else {
        lua_State *L = luaL_newstate();
        luaL_openlibs(L);
        lua_pushcfunction(L, lua_files);
        lua_pushstring(L, SK_SOURCE_DIR "/tests/unit/scripts");
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
            printf("not ok: %s\n", lua_tostring(L, -1));
            return 1;
        }
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= n; ++i) {
            lua_rawgeti(L, -1, i);
            char path[4096];
            snprintf(path, sizeof(path), "%s/tests/unit/scripts/%s", SK_SOURCE_DIR, lua_tostring(L, -1));
            lua_pop(L, 1);
            run_file(path);
        }
        lua_close(L);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0 || passed == 0;
}
