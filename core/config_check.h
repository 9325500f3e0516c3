/*
 * config_check.h: the configuration's schema and its strict check (config_check.c). Every key the server, the
 * bindings and the shipped scripts read is declared here or in a binding (binding.h: config_keys) as an
 * sk_config_key_t: its type(s), its range, its allowed words, its sub-keys. The check walks the config table (the
 * SECKILLD_* overrides already applied) and reports every problem, one line each with the key's path:
 *
 *     redis.pool_sze: unknown key; did you mean pool_size?
 *     http.deadline_ms: must be between 0 and 86400000, got -1
 *
 * A table handed to a library as is (kafka.producer, kafka.consumer: librdkafka properties) is SK_CONF_MAP: its keys
 * are free, its values scalars.
 */
#ifndef SK_CONFIG_CHECK_H
#define SK_CONFIG_CHECK_H

#include <lua.h>
#include <stddef.h>

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
    /** SK_CONF_LIST: what each element is (its name is unused) */
    const struct st_sk_config_key_t *elem;
} sk_config_key_t;

/** no upper bound, for `max` */
#define SK_CONF_NO_MAX 9007199254740992.0 /* 2^53 */

/** table entries: a key of these types, and one whose number must lie in [lo, hi] */
#define SK_CONF_KEY(n, t)                                                                                                          \
    {                                                                                                                              \
        .name = n, .types = (t)                                                                                                    \
    }
#define SK_CONF_RANGED(n, t, lo, hi)                                                                                               \
    {                                                                                                                              \
        .name = n, .types = (t), .ranged = 1, .min = (lo), .max = (hi)                                                             \
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

/** the edit distance (insertions, deletions, substitutions, adjacent transpositions) between a and b, both short */
size_t sk_config_distance(const char *a, const char *b);

#endif
