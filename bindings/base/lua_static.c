/*
 * lua_static.c: `static`, files read off the disk while a VM loads, for routes that serve them (the Swagger UI
 * distribution, Chart.js, the dashboard's page). Reading is blocking I/O, so it is only allowed while the VM's entry
 * script (app.lua and the modules it requires) runs: VMs are built on the main thread, never on a loop, and a
 * request then serves the string the module kept. A reload reads the files again.
 *   static.read(path)   -- the file's bytes as a string, or nil, "message" (e.g. "no such file or directory")
 * A relative path names a file below the scripts folder the VM was built from (which the snapshot does not hold:
 * it has only *.lua files); an absolute path is read as is. Files over 16 MiB are refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <lauxlib.h>
#include "../../core/vm.h"
#include "../../core/binding.h"

#define MAX_BYTES (16u << 20)

/* "no such file or directory": strerror's text, lower-cased first letter (the Lua-facing error style) */
static int push_errno(lua_State *L, int err)
{
    char msg[128];
    snprintf(msg, sizeof(msg), "%s", strerror(err));
    if (msg[0] >= 'A' && msg[0] <= 'Z')
        msg[0] += 'a' - 'A';
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

static int l_read(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int is_main = lua_pushthread(L);
    lua_pop(L, 1);
    if (!is_main)
        return luaL_error(L, "static.read: files can only be read while the scripts load, not in a request");
    if (path[0] != '/') {
        lua_getfield(L, LUA_REGISTRYINDEX, "sk.scripts");
        sk_scripts_t *scripts = lua_touserdata(L, -1);
        lua_pop(L, 1);
        if (scripts == NULL)
            return luaL_error(L, "static.read: no scripts folder for a relative path");
        if (strstr(path, "..") != NULL)
            return luaL_error(L, "static.read: a relative path may not contain '..'");
        lua_pushfstring(L, "%s/%s", scripts->root, path);
        path = lua_tostring(L, -1);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return push_errno(L, errno);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return push_errno(L, err);
    }
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > MAX_BYTES) {
        close(fd);
        lua_pushnil(L);
        lua_pushstring(L, S_ISREG(st.st_mode) ? "file too large" : "not a regular file");
        return 2;
    }
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, (size_t)st.st_size);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, p + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int err = n < 0 ? errno : EIO; /* shrank under us */
            close(fd);
            return push_errno(L, err);
        }
        got += (size_t)n;
    }
    close(fd);
    luaL_pushresultsize(&b, got);
    return 1;
}

static void open_static(lua_State *L)
{
    static const luaL_Reg fns[] = {{"read", l_read}, {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_setglobal(L, "static");
}

const sk_binding_t sk_binding_static = {.name = "static", .open = open_static};
