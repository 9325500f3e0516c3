/*
 * bindings.h: the list of C modules Lua can reach, and their life cycle.
 *
 * Every binding is one sk_binding_t in bindings.c's table. Hooks may be NULL.
 *   init:           main thread, once, before any loop thread starts (pools' shared state, Kafka producer,
 *                   schema). May block. Returns 0, or -1 after logging why (start-up then fails).
 *   thread_init:    on each loop thread (workers and the consumer) before it serves (per-thread pools).
 *   open:           in every new VM (any thread, no loop access): registers the Lua module(s) as globals.
 *   thread_dispose: on each loop thread after it stopped serving and its coroutines ended.
 *   shutdown:       main thread, once, after every loop thread ended (Kafka flush). May block.
 */
#ifndef SK_BINDINGS_H
#define SK_BINDINGS_H

#include <lua.h>
#include "../core/config.h"
#include "../core/loop.h"

typedef struct st_sk_binding_t {
    const char *name;
    int (*init)(sk_config_t *cfg, unsigned nthreads);
    void (*thread_init)(sk_loop_t *loop);
    void (*open)(lua_State *L);
    void (*thread_dispose)(sk_loop_t *loop);
    void (*shutdown)(void);
} sk_binding_t;

int sk_bindings_init(sk_config_t *cfg, unsigned nthreads);
void sk_bindings_thread_init(sk_loop_t *loop);
void sk_bindings_open(lua_State *L);
void sk_bindings_thread_dispose(sk_loop_t *loop);
void sk_bindings_shutdown(void);

#endif
