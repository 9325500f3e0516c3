/*
 * binding.h: the plug-in interface of the core: what a binding (a C module Lua can reach) provides, and the registry
 * that runs the bindings' hooks. The core calls bindings only through it and names none: the composition root
 * (main.c) hands the registry its list (sk_bindings_use; bindings/all.c is the list this build has), and nothing else
 * in core/ includes anything from bindings/.
 *
 * Every binding is one sk_binding_t. Hooks may be NULL.
 *   init:           main thread, once, before any loop thread starts (pools' shared state, Kafka producer,
 *                   schema). May block. Returns 0, or -1 after logging why (start-up then fails).
 *   thread_init:    on each loop thread (workers and the services' threads) before it serves (per-thread pools).
 *   open:           in every new VM (any thread, no loop access): registers the Lua module(s) as globals.
 *   thread_dispose: on each loop thread after it stopped serving and its coroutines ended.
 *   shutdown:       main thread, once, after every loop thread ended (Kafka flush). May block.
 *
 * A binding may also run a service: a loop thread of its own beside the HTTP workers, with its own VM built for the
 * binding's VM role (the Kafka consumer runs consumer.lua). core/main.c starts, reloads and stops the services
 * through the sk_bindings_start/reload/stop below and never names one. `--role all` runs the HTTP API and every
 * service; `--role api` the API alone; `--role NAME` the service of that role alone (HTTP then serves only the
 * built-in routes).
 *   start:  main thread, after the workers started; may block until the service's VM loaded. `required` is 0 under
 *           `--role all`: a service that has nothing to do (not configured, no entry script) logs why and returns 0;
 *           under its own role that is an error. Returns 0, or -1 after logging (start-up then fails).
 *   reload: main thread, after a reload was accepted: hands the new snapshot over (the service retains it and swaps
 *           VMs when it suits it, keeping the old one if the new fails to load). Harmless when not running.
 *   stop:   main thread, after the workers drained: finishes the work in flight and joins the thread. May block.
 *
 * And it may claim command-line modes (`--kafka-mock FILE`): main runs the mode instead of the server.
 */
#ifndef SK_BINDING_H
#define SK_BINDING_H

#include <stdio.h>
#include <lua.h>
#include "config.h"
#include "loop.h"
#include "vm.h"

/** a command-line mode a binding claims: `seckilld [-c FILE] --<option> [ARG]` runs `main` and exits with its status */
typedef struct st_sk_binding_mode_t {
    /** the long option without its dashes, e.g. "kafka-mock" */
    const char *option;
    /** the argument's name in the usage ("FILE"), or NULL when the option takes none */
    const char *arg;
    /** the usage text; "\n" starts a continuation line */
    const char *help;
    /** 1: the configuration is loaded first (and -t wins); 0: the mode runs before it, with cfg NULL */
    int needs_config;
    /** main thread, no loop, no other binding hook called; returns the process exit status */
    int (*main)(sk_config_t *cfg, const char *arg);
} sk_binding_mode_t;

typedef struct st_sk_binding_t {
    const char *name;
    int (*init)(sk_config_t *cfg, unsigned nthreads);
    void (*thread_init)(sk_loop_t *loop);
    void (*open)(lua_State *L);
    void (*thread_dispose)(sk_loop_t *loop);
    void (*shutdown)(void);

    /* ----- a service (all NULL for most bindings) ----- */
    /** the VM role the service's thread runs (its entry script); `-t` loads it too when the snapshot has the script */
    const sk_vm_role_t *vm_role;
    /** the `--role` value that runs this service alone (e.g. "consumer"), and its usage text */
    const char *role;
    const char *role_help;
    /** starts the service's thread; loop_id names its loop in metrics (workers are 0..N-1, services N, N+1, ...) */
    int (*start)(sk_config_t *cfg, sk_scripts_t *scripts, unsigned loop_id, int required);
    void (*reload)(sk_scripts_t *scripts);
    void (*stop)(void);

    /** command-line modes, ended by an entry whose option is NULL; or NULL */
    const sk_binding_mode_t *modes;

    /** the top-level config keys the binding reads (core/config_check.h), ended by a NULL name; or NULL */
    const sk_config_key_t *config_keys;
} sk_binding_t;

/** the bindings every sk_bindings_* call below runs, in order (init order matters: e.g. the consumer needs the
 * producer's cluster): a NULL-terminated list that lives as long as the process. Main thread, once, before any other
 * sk_bindings_* call. */
void sk_bindings_use(const sk_binding_t *const *list);

/** every top-level config key there is, for sk_config_load: the core's and each binding's (the shipped scripts' keys
 * come as a binding of their own); NULL-terminated */
const sk_config_key_t *const *sk_bindings_config_keys(void);

/** nthreads: every loop thread that will call thread_init (the workers and the services) */
int sk_bindings_init(sk_config_t *cfg, unsigned nthreads);
void sk_bindings_thread_init(sk_loop_t *loop);
void sk_bindings_open(lua_State *L);
void sk_bindings_thread_dispose(sk_loop_t *loop);
void sk_bindings_shutdown(void);

/** the number of services (loop threads beside the workers) */
unsigned sk_bindings_services(void);
/** 1 if `role` is "all" or the role of a service */
int sk_bindings_has_role(const char *role);
/** starts the services `role` asks for ("all": every one, not required; a service's role: that one, required;
 * anything else: none). The first service's loop is first_loop_id. Returns 0, or -1 after logging. */
int sk_bindings_start(sk_config_t *cfg, sk_scripts_t *scripts, const char *role, unsigned first_loop_id);
/** hands a newly accepted snapshot to every running service */
void sk_bindings_reload(sk_scripts_t *scripts);
/** stops the running services, in reverse order */
void sk_bindings_stop(void);
/** the i-th VM role the services run (in table order), NULL past the last: `-t` builds a VM for each whose entry script
 * the snapshot has */
const sk_vm_role_t *sk_bindings_vm_role(size_t i);

/** the i-th mode of all bindings (in table order), NULL past the last */
const sk_binding_mode_t *sk_bindings_mode(size_t i);
/** usage: the services' roles, each after `sep` ("|consumer") */
void sk_bindings_usage_roles(FILE *fp, const char *sep);
/** usage: one synopsis line per mode ("       seckilld --kafka-mock FILE") */
void sk_bindings_usage_synopsis(FILE *fp);
/** usage: the services' role lines, then one entry per mode, aligned to the core's options */
void sk_bindings_usage_options(FILE *fp);

#endif
