/*
 * config_keys.c: the config keys the shipped scripts (scripts/) read, for the strict check at start-up and `-t`
 * (core/config_check.h), as a binding with keys and no hooks (all.c lists it). The bindings declare their own
 * (sk_binding_t.config_keys); the core its (core/config.c).
 * A script that reads a new key declares it here; keys of an operator's own scripts go under `custom`, which is free.
 */
#include "../core/binding.h"

static const char *const strategies[] = {"watch", "eval", NULL};
static const char *const coalescing[] = {"process", "worker", NULL};
static const char *const limit_scopes[] = {"process", "redis", NULL};
static const char *const on_redis_errors[] = {"local", "open", "closed", NULL};

/* common.lua, sale/stock.lua: config.sale */
static const sk_config_key_t sale_keys[] = {
    SK_CONF_RANGED("batch_max", SK_CONF_INT, 1, 100000),
    SK_CONF_RANGED("queue_wait_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY),
    SK_CONF_RANGED("batch_window_ms", SK_CONF_INT, 0, 1000),
    {.name = "coalesce", .types = SK_CONF_STRING, .choices = coalescing},
    SK_CONF_RANGED("order_ttl_s", SK_CONF_INT, 1, SK_CONF_NO_MAX),
    SK_CONF_RANGED("tombstone_ttl_s", SK_CONF_INT, 1, SK_CONF_NO_MAX),
    SK_CONF_RANGED("rebuild_grace_ms", SK_CONF_INT, 0, SK_CONF_MS_DAY),
    SK_CONF_RANGED("sweep_after_ms", SK_CONF_INT, 0, SK_CONF_MS_DAY),
    SK_CONF_RANGED("barrier_timeout_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY),
    SK_CONF_RANGED("watch_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY),
    SK_CONF_RANGED("sweep_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY),
    {NULL},
};

/* common.lua: config.idempotency */
static const sk_config_key_t idempotency_keys[] = {
    SK_CONF_RANGED("ttl_s", SK_CONF_INT, 1, SK_CONF_NO_MAX),
    SK_CONF_RANGED("lease_ms", SK_CONF_INT, 0, SK_CONF_MS_DAY),
    {NULL},
};

/* admission/limits.lua: config.limits */
static const sk_config_key_t bucket_keys[] = {
    SK_CONF_RANGED("rate", SK_CONF_NUMBER, 1e-9, 1e9),
    SK_CONF_RANGED("burst", SK_CONF_NUMBER, 1, 1e9),
    {NULL},
};
static const sk_config_key_t address = SK_CONF_RANGED(NULL, SK_CONF_STRING, 1, 64);
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
    SK_CONF_RANGED("id", SK_CONF_STRING, 1, 64),
    SK_CONF_RANGED("item_id", SK_CONF_STRING, 1, 64),
    SK_CONF_RANGED("stock", SK_CONF_INT, 0, 1000000000),
    SK_CONF_RANGED("limit_per_user", SK_CONF_INT, 1, 1000000000),
    SK_CONF_RANGED("starts_at", SK_CONF_INT, 0, SK_CONF_NO_MAX),
    SK_CONF_RANGED("ends_at", SK_CONF_INT, 0, SK_CONF_NO_MAX),
    SK_CONF_KEY("require_token", SK_CONF_BOOL),
    SK_CONF_RANGED("token_ttl_ms", SK_CONF_INT, 1000, SK_CONF_MS_DAY),
    SK_CONF_RANGED("max_rps", SK_CONF_NUMBER, 1e-9, 1e9),
    SK_CONF_RANGED("buckets", SK_CONF_INT, 1, 1),
    {NULL},
};
static const sk_config_key_t item = {.types = SK_CONF_TABLE, .keys = item_keys};

static const sk_config_key_t script_keys[] = {
    SK_CONF_RANGED("admin_token", SK_CONF_STRING, 1, 4096),
    {.name = "strategy", .types = SK_CONF_STRING, .choices = strategies},
    /* admission/tokens.lua: at least 16 characters */
    SK_CONF_RANGED("token_secret", SK_CONF_STRING, 16, 4096),
    SK_CONF_RANGED("token_secret_previous", SK_CONF_STRING, 16, 4096),
    SK_CONF_RANGED("token_secret_previous_until", SK_CONF_INT, 0, SK_CONF_NO_MAX),
    {.name = "sale", .types = SK_CONF_TABLE, .keys = sale_keys},
    {.name = "idempotency", .types = SK_CONF_TABLE, .keys = idempotency_keys},
    {.name = "limits", .types = SK_CONF_TABLE, .keys = limits_keys},
    {.name = "items", .types = SK_CONF_LIST, .elem = &item},
    SK_CONF_KEY("custom", SK_CONF_ANY),
    {NULL},
};

const sk_binding_t sk_binding_script_keys = {.name = "scripts", .config_keys = script_keys};
