/*
 * vm.h: a Lua VM with the application loaded, and the snapshot of the scripts it was built from.
 *
 * Each worker owns one current VM. A reload builds new VMs from one snapshot (read once, so every worker runs
 * the same code even if files change mid-reload), validates them all, then swaps them in. A VM is refcounted:
 * the worker holds one reference while it is current and each live coroutine holds one, so in-flight requests
 * finish on the VM they started on, which closes when its last coroutine ends.
 */
#ifndef SK_VM_H
#define SK_VM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <lua.h>
#include "co.h"
#include "router.h"

typedef struct st_sk_config_t sk_config_t;
typedef struct st_sk_vm_t sk_vm_t;

/** an immutable, refcounted copy of the scripts folder: every *.lua file below it, by relative path */
typedef struct st_sk_scripts_t {
    _Atomic size_t refcnt;
    char *root;
    size_t count;
    struct {
        char *path; /* relative, e.g. "lib/util.lua" */
        char *source;
        size_t len;
    } * files;
} sk_scripts_t;

/** a background task declared by app.lua with app.every(name, interval_ms, fn); core/task.c runs it */
typedef struct st_sk_vm_task_t {
    char *name;
    uint64_t interval_ms;
    int ref; /* registry ref of fn */
} sk_vm_task_t;

/**
 * Which entry script a VM runs. The API role runs app.lua, which must declare routes. A binding that runs scripts on
 * a thread of its own declares its role (a name and an entry script; core/binding.h): that script must return
 * a function, kept in vm->entry_ref. Roles are compared by address.
 */
typedef struct st_sk_vm_role_t {
    /** for messages: "must return the <name> function" */
    const char *name;
    /** the entry script, a path relative to the scripts folder */
    const char *entry;
} sk_vm_role_t;

/** the HTTP application's role: app.lua */
extern const sk_vm_role_t sk_vm_role_api;
#define SK_VM_ROLE_API (&sk_vm_role_api)

/** how many finished coroutines' threads a VM keeps for reuse */
#define SK_VM_IDLE_THREADS 64

struct st_sk_vm_t {
    lua_State *L;
    const sk_vm_role_t *role;
    unsigned generation;
    /** routes declared by app.lua (API role) */
    sk_router_t router;
    /** the access log's note keys app.lua declared (app.access_log_fields), in order, malloc'd; a route parameter of
     * one of these names, or req:annotate, gives the request's value (sk_co_notes_t) */
    char *note_keys[SK_CO_MAX_NOTES];
    size_t nnote_keys;
    /** registry ref of the function app.lua passed to app.init (run once per process start), or LUA_NOREF */
    int init_ref;
    /** tasks declared by app.lua (API role), in declaration order; names are unique */
    sk_vm_task_t *tasks;
    size_t ntasks;
    /** registry ref of the function a binding role's entry script returned, or LUA_NOREF (API role) */
    int entry_ref;
    /** worker references + live coroutines; closed at zero. Only touched on the owning thread. */
    size_t refcnt;
    /** bytes the allocator holds for this VM's owner thread (shared by its VMs), for the Lua memory gauge */
    _Atomic size_t *mem_bytes;
    /** what the allocator took (or gave back) since it last added to mem_bytes (core/vm.c) */
    ptrdiff_t mem_unflushed;
    /** the thread (worker index, or a binding's service thread id) that owns the VM once installed */
    unsigned owner;
    /** threads of coroutines that returned, kept for the next ones (core/co.c): still anchored in the registry, with
     * the stack and call frames they grew, so a request does not create, grow and later collect a thread */
    struct {
        lua_State *L[SK_VM_IDLE_THREADS];
        int ref[SK_VM_IDLE_THREADS];
        size_t n;
    } idle;
};

/** reads the scripts folder into a snapshot; NULL and an error message (malloc'd) on failure */
sk_scripts_t *sk_scripts_read(const char *root, char **err);
void sk_scripts_retain(sk_scripts_t *scripts);
void sk_scripts_release(sk_scripts_t *scripts);
/** 1 if the snapshot has the file (relative path) */
int sk_scripts_has(sk_scripts_t *scripts, const char *path);
/** compiles every file of the snapshot without running it; returns 0 or -1 with "file:line: message" in err */
int sk_scripts_compile_all(sk_scripts_t *scripts, char *err, size_t errlen);

/** builds a VM: libraries, bindings, config, then runs the role's entry script. Returns NULL and writes the first
 * error ("file:line: message") to err on failure. Does not touch any loop, so it may run on any thread. */
sk_vm_t *sk_vm_create(sk_scripts_t *scripts, const sk_vm_role_t *role, unsigned generation, unsigned owner,
                      _Atomic size_t *mem_bytes, char *err, size_t errlen);
void sk_vm_retain(sk_vm_t *vm);
/** drops a reference; closes the VM at zero */
void sk_vm_release(sk_vm_t *vm);

/** the VM a lua_State (or one of its threads) belongs to */
sk_vm_t *sk_vm_of(lua_State *L);

#endif
