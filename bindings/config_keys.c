/*
 * config_keys.c: the config keys the shipped scripts (scripts/) read, for the strict check at start-up and `-t`
 * (core/config_check.h). The bindings declare their own (sk_binding_t.config_keys); the core its (core/config.c).
 * A script that reads a new key declares it here; keys of an operator's own scripts go under `custom`, which is free.
 */
#include "bindings.h"

#define KEY(n, t)                                                                                                                  \
    {                                                                                                                              \
        .name = n, .types = (t)                                                                                                    \
    }
#define RANGED(n, t, lo, hi)                                                                                                       \
    {                                                                                                                              \
        .name = n, .types = (t), .ranged = 1, .min = (lo), .max = (hi)                                                             \
    }
#define MS_DAY 86400000

static const char *const strategies[] = {"watch", "eval", NULL};
static const char *const limit_scopes[] = {"process", "redis", NULL};
static const char *const on_redis_errors[] = {"local", "open", "closed", NULL};

/* common.lua, sale/stock.lua: config.sale */
static const sk_config_key_t sale_keys[] = {
    RANGED("batch_max", SK_CONF_INT, 1, 100000),
    RANGED("queue_wait_ms", SK_CONF_INT, 1, MS_DAY),
    RANGED("batch_window_ms", SK_CONF_INT, 0, 1000),
    RANGED("order_ttl_s", SK_CONF_INT, 1, SK_CONF_NO_MAX),
    RANGED("tombstone_ttl_s", SK_CONF_INT, 1, SK_CONF_NO_MAX),
    RANGED("rebuild_grace_ms", SK_CONF_INT, 0, MS_DAY),
    RANGED("sweep_after_ms", SK_CONF_INT, 0, MS_DAY),
    RANGED("barrier_timeout_ms", SK_CONF_INT, 1, MS_DAY),
    RANGED("watch_ms", SK_CONF_INT, 1, MS_DAY),
    RANGED("sweep_ms", SK_CONF_INT, 1, MS_DAY),
    {NULL},
};

/* common.lua: config.idempotency */
static const sk_config_key_t idempotency_keys[] = {
    RANGED("ttl_s", SK_CONF_INT, 1, SK_CONF_NO_MAX),
    RANGED("lease_ms", SK_CONF_INT, 0, MS_DAY),
    {NULL},
};

/* admission/limits.lua: config.limits */
static const sk_config_key_t bucket_keys[] = {
    RANGED("rate", SK_CONF_NUMBER, 1e-9, 1e9),
    RANGED("burst", SK_CONF_NUMBER, 1, 1e9),
    {NULL},
};
static const sk_config_key_t address = RANGED(NULL, SK_CONF_STRING, 1, 64);
static const sk_config_key_t limits_keys[] = {
    {.name = "scope", .types = SK_CONF_STRING, .choices = limit_scopes},
    {.name = "on_redis_error", .types = SK_CONF_STRING, .choices = on_redis_errors},
    {.name = "ip", .types = SK_CONF_TABLE, .keys = bucket_keys},
    {.name = "user", .types = SK_CONF_TABLE, .keys = bucket_keys},
    {.name = "item", .types = SK_CONF_TABLE, .keys = bucket_keys},
    {.name = "trusted_proxies", .types = SK_CONF_LIST, .elem = &address},
    {NULL},
};

/* app.lua, admin.lua: an entry of config.items (the fields of PUT /admin/items/{id}) */
static const sk_config_key_t item_keys[] = {
    RANGED("id", SK_CONF_STRING, 1, 64),
    RANGED("item_id", SK_CONF_STRING, 1, 64),
    RANGED("stock", SK_CONF_INT, 0, 1000000000),
    RANGED("limit_per_user", SK_CONF_INT, 1, 1000000000),
    RANGED("starts_at", SK_CONF_INT, 0, SK_CONF_NO_MAX),
    RANGED("ends_at", SK_CONF_INT, 0, SK_CONF_NO_MAX),
    KEY("require_token", SK_CONF_BOOL),
    RANGED("token_ttl_ms", SK_CONF_INT, 1000, MS_DAY),
    RANGED("max_rps", SK_CONF_NUMBER, 1e-9, 1e9),
    RANGED("buckets", SK_CONF_INT, 1, 1),
    {NULL},
};
static const sk_config_key_t item = {.types = SK_CONF_TABLE, .keys = item_keys};

const sk_config_key_t sk_config_script_keys[] = {
    RANGED("admin_token", SK_CONF_STRING, 1, 4096),
    {.name = "strategy", .types = SK_CONF_STRING, .choices = strategies},
    /* admission/tokens.lua: at least 16 characters */
    RANGED("token_secret", SK_CONF_STRING, 16, 4096),
    RANGED("token_secret_previous", SK_CONF_STRING, 16, 4096),
    RANGED("token_secret_previous_until", SK_CONF_INT, 0, SK_CONF_NO_MAX),
    {.name = "sale", .types = SK_CONF_TABLE, .keys = sale_keys},
    {.name = "idempotency", .types = SK_CONF_TABLE, .keys = idempotency_keys},
    {.name = "limits", .types = SK_CONF_TABLE, .keys = limits_keys},
    {.name = "items", .types = SK_CONF_LIST, .elem = &item},
    KEY("custom", SK_CONF_ANY),
    {NULL},
};
