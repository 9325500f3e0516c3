/*
 * config_check.h: the configuration's schema, one row per setting, and what is built from it (the check:
 * config_check.c; the rest: config_rows.c). Every key the server, the bindings and the shipped scripts read is declared here or in
 * a binding (binding.h: config_keys) as an sk_config_key_t, nginx's ngx_command_t being the model: its type(s), its range, its
 * allowed words, its sub-keys, its default, its SECKILLD_* environment variable and a line of help. From the rows come:
 *
 *   - the SECKILLD_* overrides (sk_config_apply_env) and the defaults filled in where a key is unset
 *     (sk_config_fill_defaults), in the table the core reads and in every VM's `config` alike (config.c);
 *   - the strict check, which walks the config table (the overrides applied) and reports every problem, one line
 *     each with the key's path:
 *
 *         redis.pool_sze: unknown key; did you mean pool_size?
 *         http.deadline_ms: must be between 0 and 86400000, got -1
 *
 *   - `--help`'s list of environment variables and README's table of settings (sk_config_usage_env,
 *     sk_config_markdown; tests/unit/bindings/all.c fails when README's table and the rows differ).
 *
 * A table handed to a library as is (kafka.producer, kafka.consumer: librdkafka properties) is SK_CONF_MAP: its keys
 * are free, its values scalars.
 */
#ifndef SK_CONFIG_CHECK_H
#define SK_CONFIG_CHECK_H

#include <lua.h>
#include <stddef.h>
#include <stdio.h>

/** what a value may be (a bit set: SK_CONF_STRING | SK_CONF_BOOL for "true or a path") */
enum {
    SK_CONF_STRING = 1,
    /** a whole number (a float with no fraction is accepted as one) */
    SK_CONF_INT = 2,
    SK_CONF_NUMBER = 4,
    SK_CONF_BOOL = 8,
    /** a table of named keys: `keys` */
    SK_CONF_TABLE = 16,
    /** a free-form table of string keys and scalar values, passed to a library */
    SK_CONF_MAP = 32,
    /** an array (1..n), each element checked against `elem` */
    SK_CONF_LIST = 64,
    /** anything at all (a table of the operator's own, for scripts of their own) */
    SK_CONF_ANY = 128,
};

typedef struct st_sk_config_key_t {
    /** the key; NULL ends a list of keys */
    const char *name;
    unsigned types;
    /** when set, a number must lie in [min, max] and a string's length too */
    int ranged;
    double min, max;
    /** a string must be one of these words (NULL-terminated), compared without case */
    const char *const *choices;
    /** SK_CONF_TABLE: the keys it may hold, ended by a NULL name */
    const struct st_sk_config_key_t *keys;
    /** SK_CONF_LIST: what each element is (its name is unused; no default is filled inside a list's elements) */
    const struct st_sk_config_key_t *elem;
    /**
     * the default, written as an environment variable would give it ("10000", "watch", "true"), parsed by the row's
     * type; filled in where the key is unset, so that C and Lua read the same value. NULL: none, an unset key stays
     * unset (kafka.brokers: unset is "Kafka not configured"; a value computed from others, such as redis.lease_size,
     * is computed by its reader when unset).
     */
    const char *def;
    /** the SECKILLD_* environment variable that overrides the key when set and not empty, or NULL */
    const char *env;
    /** one short line for `--help` and README's table: what the value means, never a '|' */
    const char *help;
} sk_config_key_t;

/** no upper bound, for `max` */
#define SK_CONF_NO_MAX 9007199254740992.0 /* 2^53 */

/** table entries: a key of these types, and one whose number must lie in [lo, hi]; the rest of the row's fields
 * follow as designated initializers (.def = "4", .env = "SECKILLD_X", .help = "...") */
#define SK_CONF_KEY(n, t, ...)                                                                                                     \
    {                                                                                                                              \
        .name = n, .types = (t), __VA_ARGS__                                                                                       \
    }
#define SK_CONF_RANGED(n, t, lo, hi, ...)                                                                                          \
    {                                                                                                                              \
        .name = n, .types = (t), .ranged = 1, .min = (lo), .max = (hi), __VA_ARGS__                                                \
    }
/** a day in milliseconds: the usual upper bound of a timeout */
#define SK_CONF_MS_DAY 86400000

/** the problems found, one line each, in order */
typedef struct st_sk_config_problems_t {
    char *text; /* "line\nline\n", malloc'd; NULL when there are none */
    size_t len, count;
} sk_config_problems_t;

/** appends one problem, "prefix: path: message" (printf-style message) */
void sk_config_problem(sk_config_problems_t *p, const char *prefix, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/**
 * Checks the table at index idx of L against `sets`: NULL-terminated array of key lists (the core's, each binding's,
 * the scripts'), which together are the top level's keys. Every problem is appended to p, prefixed with `prefix`
 * (the file's name). Stack effect: 0.
 */
void sk_config_check(lua_State *L, int idx, const sk_config_key_t *const *sets, const char *prefix, sk_config_problems_t *p);

/** checks one value (at idx) against k, `path` naming it; the same problems as sk_config_check. Stack effect: 0. */
void sk_config_check_value(lua_State *L, int idx, const sk_config_key_t *k, const char *prefix, const char *path,
                           sk_config_problems_t *p);

/**
 * The row of a dotted path ("redis.pool_size") among `sets` (as sk_config_check's), descending into tables' keys;
 * NULL when no row declares it (a list's elements and a map's keys are not reachable by path).
 */
const sk_config_key_t *sk_config_key_find(const sk_config_key_t *const *sets, const char *path);

/**
 * Pushes `text` as k's value: a boolean for "true"/"false" when k may be one, an integer or a number when k is one
 * (the whole text must parse), else a string when k may be one. Returns 0, or -1 pushing nothing when the text is
 * none of k's types. Used for the defaults and the environment's values alike.
 */
int sk_config_push_text(lua_State *L, const sk_config_key_t *k, const char *text);

/**
 * Applies the SECKILLD_* overrides the rows of `sets` declare to the table at index idx (a variable that is unset or
 * empty is skipped; a table on the way that is missing is created). Returns 0, or -1 with "SECKILLD_X: not an
 * integer: v" in err. Stack effect: 0.
 */
int sk_config_apply_env(lua_State *L, int idx, const sk_config_key_t *const *sets, char *err, size_t errlen);

/**
 * Fills every declared default into the table at index idx where its key is unset (nil), creating a missing table
 * on the way only when a row below it has a default. A value of the wrong type is left as it is (the check reports
 * it); nothing is filled inside a list's elements. Stack effect: 0.
 */
void sk_config_fill_defaults(lua_State *L, int idx, const sk_config_key_t *const *sets);

/** `--help`: one line per row with an environment variable, "  SECKILLD_X  path  help", in the rows' order */
void sk_config_usage_env(FILE *fp, const sk_config_key_t *const *sets);

/**
 * README's table of settings: a header line, then one Markdown row per setting (tables' keys by their dotted path,
 * a list's element's keys as "items[].stock"): key, type and range, default, environment variable, help.
 */
void sk_config_markdown(FILE *fp, const sk_config_key_t *const *sets);

/** a range's bound as the check and the docs print it: whole numbers without a fraction */
void sk_config_fmt_bound(char *buf, size_t len, double v);

/** the edit distance (insertions, deletions, substitutions, adjacent transpositions) between a and b, both short */
size_t sk_config_distance(const char *a, const char *b);

#endif
