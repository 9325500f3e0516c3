/*
 * config.h: the configuration. The file is Lua returning a table; SECKILLD_* environment variables override it.
 *
 * Every key is declared once, as a row (config_check.h): its type, range, default, variable and help. The table
 * lives in a private lua_State owned by the main thread, the overrides applied and the defaults filled in. Start-up
 * code reads values with sk_config_int/string/bool (dotted paths such as "redis.pool_size"); scripts see the same
 * table, built the same way, as the global `config`, so that C and Lua read the same values. After start-up the
 * table is read-only.
 */
#ifndef SK_CONFIG_H
#define SK_CONFIG_H

#include <lua.h>
#include <stddef.h>
#include "config_check.h"

/** the admin token of the shipped config: refused unless the server listens on loopback only */
#define SK_CONFIG_DEFAULT_ADMIN_TOKEN "change-me"

struct st_sk_config_t {
    char *path;
    char *source; /* the file's text, re-run in every VM to give scripts `config` */
    size_t source_len;
    lua_State *L; /* holds the table at registry ref `ref` */
    int ref;
    /** the rows the table is checked, completed and read by (sk_config_load's keys); NULL: the core's alone, and
     * other keys pass unchecked */
    const sk_config_key_t *const *keys;
    /* the values the core itself needs, read once */
    char *listen_host;
    unsigned short listen_port;
    unsigned workers;
    char *scripts;
    size_t max_body;
    unsigned req_timeout_ms;
    unsigned shutdown_timeout_ms;
    /** http.deadline_ms: a handler that has not answered by then is answered 503 by the core; 0: no deadline */
    unsigned deadline_ms;
    /** http.max_inflight: per worker, the requests in flight above which a new one is answered 503 "overloaded" at
     * once; 0: unlimited */
    unsigned max_inflight;
    int bench_routes;
    /** access_log: on (true or a path), and the path (NULL: stderr) */
    int access_log_on;
    char *access_log;
};
typedef struct st_sk_config_t sk_config_t;

/** the process-wide configuration, set once by main before any thread starts */
extern sk_config_t *sk_config;

/** the keys the core reads (listen, workers, scripts, log_level, http.*) */
extern const sk_config_key_t sk_config_core_keys[];

/**
 * Loads the file, applies the SECKILLD_* overrides, fills in the defaults and checks the result (sk_config_push, then
 * sk_config_check_loaded). keys: every top-level key there is (a NULL-terminated array of key lists:
 * sk_config_core_keys, the bindings', the scripts'); an unknown key is a problem. keys NULL checks the core's keys
 * only and lets any other pass (tools, unit tests); only the core's variables and defaults apply then. keys must
 * outlive the config. Returns NULL on failure with err holding "file:line: message" (the file does not run) or every
 * problem found, one line each ("file: key.path: message").
 */
sk_config_t *sk_config_load(const char *path, const sk_config_key_t *const *keys, char *err, size_t errlen);

/**
 * The check sk_config_load runs on a loaded table (cfg->L holding it at registry ref cfg->ref, built by
 * sk_config_push): the schema against cfg->keys (as sk_config_load's keys), then what spans keys (listen parsed into
 * cfg->listen_host and listen_port; the default admin token). Returns the number of problems; when there are any, err holds them
 * sorted, one a line. Exposed for tests/fuzz/config.c, which loads a config's text in a sandbox of its own.
 */
size_t sk_config_check_loaded(sk_config_t *cfg, char *err, size_t errlen);

/** whether host (the part of listen before the port) is a loopback address: 127.0.0.0/8, ::1 or localhost */
int sk_config_is_loopback(const char *host);
void sk_config_free(sk_config_t *cfg);

/** runs the config file in L, applies the environment overrides and fills in the defaults of cfg->keys' rows, leaving
 * the table on L's stack (every VM's `config` is built so); returns 0 or -1 with the error message on the stack */
int sk_config_push(lua_State *L, const sk_config_t *cfg);

/*
 * Dotted-path lookups of a loaded config, defaults filled in. The path must be a declared row's (an undeclared path is
 * a programming error: the process logs it and aborts); a value of the wrong type cannot reach them (the check).
 */
/** whether the key has a value: a row without a default may be unset (redis.lease_size: computed when unset) */
int sk_config_isset(sk_config_t *cfg, const char *path);
/** the string, or NULL when the key is unset (only a row without a default can be) */
const char *sk_config_string(sk_config_t *cfg, const char *path);
/** the integer; an unset key (a row without a default: test sk_config_isset first) aborts */
long long sk_config_int(sk_config_t *cfg, const char *path);
/** the boolean; unset is false */
int sk_config_bool(sk_config_t *cfg, const char *path);
/** pushes the value at path (or nil) onto cfg->L, whether declared or not; for tables such as kafka.producer. Pop it
 * when done. */
void sk_config_push_value(sk_config_t *cfg, const char *path);

/** reads a whole file into a NUL-terminated malloc'd buffer; NULL with errno set on failure */
char *sk_read_file(const char *path, size_t *len);

#endif
