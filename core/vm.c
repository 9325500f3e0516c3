#define _GNU_SOURCE
/*
 * vm.c: building, refcounting and closing the Lua VMs that run the application.
 */
#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <h2o/memory.h>
#include "binding.h"
#include "config.h"
#include "log.h"
#include "vm.h"

/* ===== scripts snapshot ===== */

static int add_dir(sk_scripts_t *s, const char *rel, int depth, char **err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s%s%s", s->root, *rel ? "/" : "", rel);
    DIR *dir = opendir(path);
    if (dir == NULL) {
        if (asprintf(err, "%s: cannot open scripts folder: %s", path, strerror(errno)) < 0)
            *err = NULL;
        return -1;
    }
    struct dirent *e;
    int ret = 0;
    while (ret == 0 && (e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char sub[4096], full[8192];
        snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        snprintf(full, sizeof(full), "%s/%s", s->root, sub);
        struct stat st;
        if (stat(full, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (depth < 4)
                ret = add_dir(s, sub, depth + 1, err);
            continue;
        }
        size_t nlen = strlen(e->d_name);
        if (!S_ISREG(st.st_mode) || nlen < 5 || strcmp(e->d_name + nlen - 4, ".lua") != 0)
            continue;
        size_t len;
        char *src = sk_read_file(full, &len);
        if (src == NULL) {
            if (asprintf(err, "%s: cannot read: %s", full, strerror(errno)) < 0)
                *err = NULL;
            ret = -1;
            break;
        }
        s->files = h2o_mem_realloc(s->files, (s->count + 1) * sizeof(*s->files));
        s->files[s->count].path = strdup(sub);
        s->files[s->count].source = src;
        s->files[s->count].len = len;
        ++s->count;
    }
    closedir(dir);
    return ret;
}

sk_scripts_t *sk_scripts_read(const char *root, char **err)
{
    sk_scripts_t *s = h2o_mem_alloc(sizeof(*s));
    *s = (sk_scripts_t){.refcnt = 1, .root = strdup(root)};
    size_t rl = strlen(s->root);
    while (rl > 1 && s->root[rl - 1] == '/')
        s->root[--rl] = '\0';
    if (add_dir(s, "", 0, err) != 0) {
        sk_scripts_release(s);
        return NULL;
    }
    return s;
}

void sk_scripts_retain(sk_scripts_t *s)
{
    atomic_fetch_add(&s->refcnt, 1);
}

void sk_scripts_release(sk_scripts_t *s)
{
    if (atomic_fetch_sub(&s->refcnt, 1) != 1)
        return;
    for (size_t i = 0; i < s->count; ++i) {
        free(s->files[i].path);
        free(s->files[i].source);
    }
    free(s->files);
    free(s->root);
    free(s);
}

static ssize_t find_file(sk_scripts_t *s, const char *path)
{
    for (size_t i = 0; i < s->count; ++i)
        if (strcmp(s->files[i].path, path) == 0)
            return (ssize_t)i;
    return -1;
}

int sk_scripts_has(sk_scripts_t *s, const char *path)
{
    return find_file(s, path) >= 0;
}

static int load_file(lua_State *L, sk_scripts_t *s, size_t i)
{
    char chunkname[4200];
    snprintf(chunkname, sizeof(chunkname), "@%s/%s", s->root, s->files[i].path);
    /* "t": text only, bytecode is not safe to load */
    return luaL_loadbufferx(L, s->files[i].source, s->files[i].len, chunkname, "t");
}

int sk_scripts_compile_all(sk_scripts_t *s, char *err, size_t errlen)
{
    lua_State *L = luaL_newstate();
    int ret = 0;
    for (size_t i = 0; i < s->count && ret == 0; ++i) {
        if (load_file(L, s, i) != LUA_OK) {
            snprintf(err, errlen, "%s", lua_tostring(L, -1));
            ret = -1;
        }
        lua_settop(L, 0);
    }
    lua_close(L);
    return ret;
}

/* package.searchers entry: modules come from the snapshot only ("a.b" -> "a/b.lua" or "a/b/init.lua") */
static int search_snapshot(lua_State *L)
{
    sk_scripts_t *s = lua_touserdata(L, lua_upvalueindex(1));
    const char *name = luaL_checkstring(L, 1);
    char path[1024];
    size_t n = strlen(name);
    if (n + 10 > sizeof(path))
        return luaL_error(L, "module name too long");
    for (size_t i = 0; i <= n; ++i)
        path[i] = name[i] == '.' ? '/' : name[i];
    strcat(path, ".lua");
    ssize_t idx = find_file(s, path);
    if (idx < 0) {
        path[n] = '\0';
        strcat(path, "/init.lua");
        idx = find_file(s, path);
    }
    if (idx < 0) {
        lua_pushfstring(L, "no file '%s/%s.lua' in the scripts snapshot", s->root, name);
        return 1;
    }
    if (load_file(L, s, (size_t)idx) != LUA_OK)
        return lua_error(L);
    lua_pushfstring(L, "%s/%s", s->root, s->files[idx].path);
    return 2;
}

/* ===== VMs ===== */

const sk_vm_role_t sk_vm_role_api = {.name = "api", .entry = "app.lua"};

/* The gauge moves in steps of at least this many bytes: a request allocates and frees some fifty blocks, and an atomic
 * add for each (a locked instruction) cost more than the allocations' bookkeeping. The VM's allocator runs on one
 * thread at a time, so the running sum is a plain field. */
#define MEM_FLUSH_BYTES 65536

static void flush_mem(sk_vm_t *vm)
{
    atomic_fetch_add_explicit(vm->mem_bytes, (size_t)vm->mem_unflushed, memory_order_relaxed);
    vm->mem_unflushed = 0;
}

static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    sk_vm_t *vm = ud;
    /* when ptr is NULL, osize is a type tag, not a size */
    size_t old = ptr != NULL ? osize : 0;
    void *p = NULL;
    if (nsize == 0) {
        free(ptr);
        vm->mem_unflushed -= (ptrdiff_t)old;
    } else if ((p = realloc(ptr, nsize)) != NULL) {
        vm->mem_unflushed += (ptrdiff_t)nsize - (ptrdiff_t)old;
    }
    if (vm->mem_unflushed >= MEM_FLUSH_BYTES || vm->mem_unflushed <= -MEM_FLUSH_BYTES)
        flush_mem(vm);
    return p;
}

static void on_warning(void *ud, const char *msg, int tocont)
{
    (void)ud, (void)tocont;
    sk_warn("lua warning: %s", msg);
}

sk_vm_t *sk_vm_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    /* keep the first line (file:line: message) unchanged so -t can print it as is */
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static void first_line(char *err, size_t errlen, const char *msg)
{
    const char *nl = strchr(msg, '\n');
    snprintf(err, errlen, "%.*s", nl != NULL ? (int)(nl - msg) : (int)strlen(msg), msg);
}

sk_vm_t *sk_vm_create(sk_scripts_t *scripts, const sk_vm_role_t *role, unsigned generation, unsigned owner,
                      _Atomic size_t *mem_bytes, char *err, size_t errlen)
{
    static _Atomic size_t unaccounted;
    sk_vm_t *vm = h2o_mem_alloc(sizeof(*vm));
    *vm = (sk_vm_t){.role = role,
                    .generation = generation,
                    .entry_ref = LUA_NOREF,
                    .init_ref = LUA_NOREF,
                    .refcnt = 1,
                    .mem_bytes = mem_bytes != NULL ? mem_bytes : &unaccounted,
                    .owner = owner};
    if ((vm->L = lua_newstate(vm_alloc, vm)) == NULL) {
        snprintf(err, errlen, "out of memory creating a Lua VM");
        free(vm);
        return NULL;
    }
    lua_State *L = vm->L;
    /* core/co.c keeps "which request coroutine" in the extra space, which new threads copy from the main thread:
     * it must start as NULL, and lua_newstate does not promise that */
    memset(lua_getextraspace(L), 0, LUA_EXTRASPACE);
    lua_setwarnf(L, on_warning, NULL);
    luaL_openlibs(L);
    /* incremental, Lua's default: its heap stays within a bounded factor of what is live. Generational mode let a
     * worker hold 4x its live memory after a flood of requests (old coroutines promoted before they died wait for a
     * major collection that the heap's growth rule postponed), which 70_books' flood test caught now and then. */
    lua_gc(L, LUA_GCINC, 0, 0, 0);

    /* modules load from the snapshot only: package.searchers = { preload, snapshot } */
    sk_scripts_retain(scripts);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchers");
    lua_pushlightuserdata(L, scripts);
    lua_pushcclosure(L, search_snapshot, 1);
    lua_rawseti(L, -2, 2);
    for (lua_Integer i = luaL_len(L, -1); i > 2; --i) {
        lua_pushnil(L);
        lua_rawseti(L, -2, i);
    }
    lua_pop(L, 2);
    /* the snapshot is released when the VM closes: anchor it in the registry */
    lua_pushlightuserdata(L, scripts);
    lua_setfield(L, LUA_REGISTRYINDEX, "sk.scripts");

    sk_bindings_open(L);

    if (sk_config_push(L, sk_config) != 0) {
        first_line(err, errlen, lua_tostring(L, -1));
        goto Error;
    }
    lua_setglobal(L, "config");

    const char *entry = role->entry;
    ssize_t idx = find_file(scripts, entry);
    if (idx < 0) {
        snprintf(err, errlen, "%s/%s: not found", scripts->root, entry);
        goto Error;
    }
    lua_pushcfunction(L, msghandler);
    if (load_file(L, scripts, (size_t)idx) != LUA_OK) {
        first_line(err, errlen, lua_tostring(L, -1));
        goto Error;
    }
    if (lua_pcall(L, 0, 1, -2) != LUA_OK) {
        first_line(err, errlen, lua_tostring(L, -1));
        sk_debug("%s", lua_tostring(L, -1));
        goto Error;
    }
    if (role != SK_VM_ROLE_API) {
        if (!lua_isfunction(L, -1)) {
            snprintf(err, errlen, "%s/%s:1: must return the %s function", scripts->root, entry, role->name);
            goto Error;
        }
        vm->entry_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else if (vm->router.count == 0) {
        snprintf(err, errlen, "%s/%s:1: declares no routes (use app.route)", scripts->root, entry);
        goto Error;
    }
    lua_settop(L, 0);
    flush_mem(vm); /* the gauge shows a new VM whole */
    return vm;
Error:
    sk_vm_release(vm);
    return NULL;
}

void sk_vm_retain(sk_vm_t *vm)
{
    ++vm->refcnt;
}

void sk_vm_release(sk_vm_t *vm)
{
    if (--vm->refcnt != 0)
        return;
    lua_getfield(vm->L, LUA_REGISTRYINDEX, "sk.scripts");
    sk_scripts_t *scripts = lua_touserdata(vm->L, -1);
    lua_close(vm->L);
    flush_mem(vm); /* everything freed: what it added to the gauge is taken back whole */
    if (scripts != NULL)
        sk_scripts_release(scripts);
    sk_router_dispose(&vm->router);
    for (size_t i = 0; i < vm->nnote_keys; ++i)
        free(vm->note_keys[i]);
    for (size_t i = 0; i < vm->ntasks; ++i)
        free(vm->tasks[i].name);
    free(vm->tasks);
    sk_debug("closed Lua VM generation %u", vm->generation);
    free(vm);
}
