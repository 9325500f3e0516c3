/* tests core/vm.c: the scripts snapshot (what it reads, that it is read once, compile errors as file:line:), building a
 * VM for a role of a binding's kind with no binding registered (its entry function, `config`, require from the
 * snapshot only), the errors a build reports, and refcounting (the VM closes, and gives its memory and snapshot back, at
 * zero) */
#include "fixture.h"
#include <lauxlib.h>
#include "../../../core/vm.h"
#include "../test.h"

static const sk_vm_role_t test_role = {.name = "test", .entry = "entry.lua"};

/* the entry returns a function that uses a module of the snapshot and the config */
static const char entry_lua[] = "local util = require('lib.util')\n"
                                "local pkg = require('lib.pkg')\n"
                                "return function(x) return util.double(x) + pkg.one + config.answer end\n";

/* pairs of path and text */
/* clang-format off */
static const char *const files[] = {
    "entry.lua",        entry_lua,
    "lib/util.lua",     "return { double = function(x) return 2 * x end }\n",
    "lib/pkg/init.lua", "return { one = 1 }\n",
    "app.lua",          "-- declares nothing: the `app` module is a binding's\nreturn nil\n",
    "table.lua",        "return { 'not a function' }\n",
    "raise.lua",        "local x = 1\nerror('raised at load')\n",
    "requires.lua",     "require('missing.mod')\nreturn function() end\n",
    ".hidden.lua",      "this is not Lua",
    "notes.txt",        "nor this",
    NULL};
/* clang-format on */

static char *root;

static sk_scripts_t *read_snapshot(void)
{
    char *err = NULL;
    sk_scripts_t *s = sk_scripts_read(root, &err);
    if (s == NULL) {
        printf("not ok: cannot read %s: %s\n", root, err);
        exit(1);
    }
    return s;
}

static void test_snapshot(void)
{
    sk_scripts_t *s = read_snapshot();
    ok(s->count == 7, "every *.lua file below the folder (%zu)", s->count);
    ok(sk_scripts_has(s, "lib/util.lua") && sk_scripts_has(s, "lib/pkg/init.lua") && sk_scripts_has(s, "entry.lua"),
       "by relative path");
    ok(!sk_scripts_has(s, ".hidden.lua") && !sk_scripts_has(s, "notes.txt") && !sk_scripts_has(s, "util.lua"),
       "no hidden file, no other file");

    char err[1024] = "";
    ok(sk_scripts_compile_all(s, err, sizeof(err)) == 0, "every file compiles: %s", err);
    sk_scripts_release(s);

    /* a trailing slash is dropped: chunk names read root/file */
    char slashed[4200];
    snprintf(slashed, sizeof(slashed), "%s//", root);
    char *rerr = NULL;
    s = sk_scripts_read(slashed, &rerr);
    ok(s != NULL && strcmp(s->root, root) == 0, "the root without its trailing slashes: %s", s != NULL ? s->root : rerr);
    if (s != NULL)
        sk_scripts_release(s);

    char missing[4200];
    snprintf(missing, sizeof(missing), "%s/nowhere", root);
    s = sk_scripts_read(missing, &rerr);
    ok(s == NULL && rerr != NULL && strstr(rerr, "nowhere: cannot open scripts folder") != NULL, "a missing folder: %s",
       rerr != NULL ? rerr : "");
    free(rerr);
}

static void test_compile_error(void)
{
    fixture_write(root, "lib/broken.lua", "local a = 1\n\nlocal b = = 2\n");
    sk_scripts_t *s = read_snapshot();
    char err[1024] = "", want[4200];
    snprintf(want, sizeof(want), "%s/lib/broken.lua:3:", root);
    ok(sk_scripts_compile_all(s, err, sizeof(err)) == -1, "a syntax error fails the compile");
    ok(strncmp(err, want, strlen(want)) == 0, "reported as file:line: %s", err);
    sk_scripts_release(s);
    char path[4200];
    snprintf(path, sizeof(path), "%s/lib/broken.lua", root);
    unlink(path);
}

static void test_build(void)
{
    sk_scripts_t *s = read_snapshot();
    /* the snapshot is read once: a file changed afterwards does not reach a VM built from it */
    fixture_write(root, "lib/util.lua", "return { double = function(x) return 1000 end }\n");
    fixture_write(root, "late.lua", "return {}\n");

    _Atomic size_t mem = 0;
    char err[1024] = "";
    sk_vm_t *vm = sk_vm_create(s, &test_role, 3, 5, &mem, err, sizeof(err));
    ok(vm != NULL, "a VM for the role: %s", err);
    if (vm == NULL) {
        sk_scripts_release(s);
        return;
    }
    ok(vm->role == &test_role && vm->generation == 3 && vm->owner == 5 && vm->refcnt == 1, "role, generation, owner, one ref");
    ok(vm->entry_ref != LUA_NOREF && vm->init_ref == LUA_NOREF, "the entry script's function is kept");
    ok(mem > 0, "its memory is counted (%zu)", (size_t)mem);
    ok(s->refcnt == 2, "the VM holds the snapshot (%zu)", (size_t)s->refcnt);
    ok(sk_vm_of(vm->L) == vm && sk_vm_of(lua_newthread(vm->L)) == vm, "sk_vm_of finds it from any of its threads");
    lua_settop(vm->L, 0);

    lua_State *L = vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->entry_ref);
    lua_pushinteger(L, 5);
    int rc = lua_pcall(L, 1, 1, 0);
    ok(rc == LUA_OK && lua_tointeger(L, -1) == 10 + 1 + 42,
       "the function runs with modules from the snapshot (as read) and config: %s", lua_tostring(L, -1));
    lua_settop(L, 0);

    ok(luaL_dostring(L, "return config.answer, type(app), type(string.format)") == LUA_OK && lua_tointeger(L, 1) == 42 &&
           strcmp(lua_tostring(L, 2), "nil") == 0 && strcmp(lua_tostring(L, 3), "function") == 0,
       "Lua's libraries and `config`, no binding's module");
    lua_settop(L, 0);
    ok(luaL_dostring(L, "return require('late')") != LUA_OK && strstr(lua_tostring(L, -1), "in the scripts snapshot") != NULL,
       "a file added after the read cannot be required: %.120s", lua_tostring(L, -1));
    lua_settop(L, 0);
    ok(luaL_dostring(L, "package.path = './?.lua' return require('lib.util') == require('lib.util')") == LUA_OK &&
           lua_toboolean(L, -1),
       "modules load once, and package.path plays no part");
    lua_settop(L, 0);

    /* refcounting: the VM lives while anyone holds it */
    sk_vm_retain(vm);
    sk_vm_release(vm);
    ok(vm->refcnt == 1 && luaL_dostring(L, "return 1") == LUA_OK, "retain then release: still open");
    lua_settop(L, 0);
    sk_vm_release(vm);
    ok(mem == 0, "the last release closes it: its memory given back (%zu bytes left)", (size_t)mem);
    ok(s->refcnt == 1, "and its hold on the snapshot (%zu)", (size_t)s->refcnt);
    sk_scripts_release(s);
    fixture_write(root, "lib/util.lua", "return { double = function(x) return 2 * x end }\n");
}

/* a build that fails returns NULL with the first line of the error, and leaks neither memory nor the snapshot */
static void expect_failure(sk_scripts_t *s, const sk_vm_role_t *role, const char *want_suffix, const char *name)
{
    _Atomic size_t mem = 0;
    char err[1024] = "", want[4200];
    snprintf(want, sizeof(want), "%s/%s", root, want_suffix);
    sk_vm_t *vm = sk_vm_create(s, role, 1, 0, &mem, err, sizeof(err));
    ok(vm == NULL && strcmp(err, want) == 0, "%s: %s", name, err);
    ok(mem == 0 && s->refcnt == 1, "%s: nothing held afterwards (%zu bytes, snapshot refcnt %zu)", name, (size_t)mem,
       (size_t)s->refcnt);
    if (vm != NULL)
        sk_vm_release(vm);
}

static void test_build_errors(void)
{
    sk_scripts_t *s = read_snapshot();
    static const sk_vm_role_t returns_table = {.name = "test", .entry = "table.lua"};
    static const sk_vm_role_t raises = {.name = "test", .entry = "raise.lua"};
    static const sk_vm_role_t requires = {.name = "test", .entry = "requires.lua"};
    static const sk_vm_role_t absent = {.name = "test", .entry = "absent.lua"};
    expect_failure(s, &returns_table, "table.lua:1: must return the test function", "an entry returning a table");
    expect_failure(s, &raises, "raise.lua:2: raised at load", "an entry raising");
    expect_failure(s, &absent, "absent.lua: not found", "a missing entry");
    expect_failure(s, SK_VM_ROLE_API, "app.lua:1: declares no routes (use app.route)", "the API role without routes");

    _Atomic size_t mem = 0;
    char err[1024] = "";
    ok(sk_vm_create(s, &requires, 1, 0, &mem, err, sizeof(err)) == NULL && strstr(err, "requires.lua:1:") != NULL &&
           strstr(err, "module 'missing.mod' not found") != NULL && strchr(err, '\n') == NULL,
       "a missing module: one line with the requiring file's line: %s", err);
    sk_scripts_release(s);
}

int main(void)
{
    fixture_begin("return { answer = 42 }", NULL);
    root = fixture_scripts(files);
    test_snapshot();
    test_compile_error();
    test_build();
    test_build_errors();
    fixture_remove(root);
    fixture_end();
    return done();
}
