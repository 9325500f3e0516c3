/*
 * config_keys.c: the config keys the shipped scripts (scripts/) read, one row each with its default, variable and help
 * (core/config_check.h): for the strict check at start-up and `-t`, and for the defaults scripts find filled in
 * `config`; a binding with keys and no hooks (all.c lists it). The bindings declare their own
 * (sk_binding_t.config_keys); the core its (core/config.c).
 * A script that reads a new key declares it here; keys of an operator's own scripts go under `custom`, which is free.
 */
#include "../core/binding.h"

static const char *const strategies[] = {"watch", "eval", NULL};
static const char *const coalescing[] = {"process", "worker", NULL};
static const char *const limit_scopes[] = {"process", "redis", NULL};
static const char *const on_redis_errors[] = {"local", "open", "closed", NULL};

/* common.lua, sale/batches.lua: config.sale */
static const sk_config_key_t sale_keys[] = {
    SK_CONF_RANGED("batch_max", SK_CONF_INT, 1, 100000, .def = "256", .help = "buys of one item decided by one take"),
    SK_CONF_RANGED("queue_wait_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY, .def = "3000",
                   .help = "a buy not taken into a batch by then is answered 429 busy"),
    SK_CONF_RANGED("batch_window_ms", SK_CONF_INT, 0, 1000, .def = "0",
                   .help = "a take's leader waits this long for company before it claims its batch"),
    /* computed when unset: "process" for watch, "worker" for eval (sale/batches.lua) */
    {.name = "coalesce",
     .types = SK_CONF_STRING,
     .choices = coalescing,
     .help = "one take per item in flight per process or per worker; unset: process for watch, worker for eval"},
    SK_CONF_RANGED("order_ttl_s", SK_CONF_INT, 1, SK_CONF_NO_MAX, .def = "3600",
                   .help = "an order's Redis hash lives this long after it reached MySQL"),
    SK_CONF_RANGED("tombstone_ttl_s", SK_CONF_INT, 1, SK_CONF_NO_MAX, .def = "604800",
                   .help = "a compensated order is remembered this long (longer than the topic's retention)"),
    SK_CONF_RANGED("rebuild_grace_ms", SK_CONF_INT, 0, SK_CONF_MS_DAY, .def = "0",
                   .help = "after Redis lost data, buys in flight are waited for (at least message.timeout.ms + 2 s)"),
    SK_CONF_RANGED("sweep_after_ms", SK_CONF_INT, 0, SK_CONF_MS_DAY, .def = "30000",
                   .help = "an order still queued this long is settled by the sweeper (at least message.timeout.ms + 5 s)"),
    SK_CONF_RANGED("barrier_timeout_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY, .def = "60000",
                   .help = "how long a rebuild or a sweep waits for the consumer to pass a barrier"),
    SK_CONF_RANGED("watch_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY, .def = "500",
                   .help = "how often each process checks that Redis still holds the books"),
    SK_CONF_RANGED("sweep_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY, .def = "5000",
                   .help = "how often each process sweeps stale queued orders"),
    SK_CONF_RANGED("expire_ms", SK_CONF_INT, 1, 60000, .def = "500",
                   .help = "how often each process expires unpaid orders and releases ended ones (life/)"),
    {NULL},
};

/* common.lua: config.idempotency */
static const sk_config_key_t idempotency_keys[] = {
    SK_CONF_RANGED("ttl_s", SK_CONF_INT, 1, SK_CONF_NO_MAX, .def = "86400",
                   .help = "an Idempotency-Key's first answer is replayed this long"),
    SK_CONF_RANGED("lease_ms", SK_CONF_INT, 0, SK_CONF_MS_DAY, .def = "0",
                   .help = "a repeat within this long is in_progress (at least deadline_ms + message.timeout.ms + 2 s)"),
    {NULL},
};

/* admission/limits.lua: config.limits. A bucket (ip, user, item) and its rate have no default: one is on when set. */
static const sk_config_key_t bucket_keys[] = {
    SK_CONF_RANGED("rate", SK_CONF_NUMBER, 1e-9, 1e9, .help = "requests per second; the bucket is off unless set"),
    SK_CONF_RANGED("burst", SK_CONF_NUMBER, 1, 1e9, .help = "requests at once; unset: the rate (at least 1)"),
    {NULL},
};
static const sk_config_key_t address = SK_CONF_RANGED(NULL, SK_CONF_STRING, 1, 64);
static const sk_config_key_t limits_keys[] = {
    {.name = "scope",
     .types = SK_CONF_STRING,
     .choices = limit_scopes,
     .def = "process",
     .help = "buckets kept in each process, or in Redis and shared"},
    {.name = "on_redis_error",
     .types = SK_CONF_STRING,
     .choices = on_redis_errors,
     .def = "local",
     .help = "redis scope, Redis failing: a local bucket, let the request in, or refuse it"},
    {.name = "ip", .types = SK_CONF_TABLE, .keys = bucket_keys},
    {.name = "user", .types = SK_CONF_TABLE, .keys = bucket_keys},
    {.name = "item", .types = SK_CONF_TABLE, .keys = bucket_keys},
    {.name = "trusted_proxies", .types = SK_CONF_LIST, .elem = &address, .help = "peers whose X-Forwarded-For is believed"},
    {NULL},
};

/* app.lua, admin.lua: an entry of config.items (the fields of PUT /admin/items/{id}; their defaults are the admin
 * API's, in the scripts: nothing is filled inside a list) */
static const sk_config_key_t item_keys[] = {
    SK_CONF_RANGED("id", SK_CONF_STRING, 1, 64, .help = "the item's id (or item_id): A-Za-z0-9_.:-"),
    SK_CONF_RANGED("item_id", SK_CONF_STRING, 1, 64, .help = "the same as id"),
    SK_CONF_RANGED("stock", SK_CONF_INT, 0, 1000000000, .help = "units for sale, set up at start unless already there"),
    SK_CONF_RANGED("limit_per_user", SK_CONF_INT, 1, 1000000000, .help = "units one user may buy; unset: 1"),
    SK_CONF_RANGED("starts_at", SK_CONF_INT, 0, SK_CONF_NO_MAX, .help = "the sale opens then (ms since the epoch)"),
    SK_CONF_RANGED("ends_at", SK_CONF_INT, 0, SK_CONF_NO_MAX, .help = "the sale closes then (ms since the epoch)"),
    SK_CONF_KEY("require_token", SK_CONF_BOOL, .help = "buys need a purchase token (and token_secret)"),
    SK_CONF_RANGED("token_ttl_ms", SK_CONF_INT, 1000, SK_CONF_MS_DAY, .help = "a purchase token's life; unset: 10000"),
    SK_CONF_RANGED("max_rps", SK_CONF_NUMBER, 1e-9, 1e9, .help = "the item's own rate limit, buys per second"),
    SK_CONF_RANGED("buckets", SK_CONF_INT, 1, 1, .help = "Redis keys the stock is spread over"),
    SK_CONF_RANGED("price", SK_CONF_INT, 0, SK_CONF_NO_MAX, .help = "minor units per unit; a payment's amount is checked"),
    SK_CONF_RANGED("pay_within_s", SK_CONF_INT, 0, 86400, .help = "an order unpaid this long expires; unset: no payment step"),
    {NULL},
};
static const sk_config_key_t item = {.types = SK_CONF_TABLE, .keys = item_keys};

static const sk_config_key_t script_keys[] = {
    SK_CONF_RANGED("admin_token", SK_CONF_STRING, 1, 4096, .env = "SECKILLD_ADMIN_TOKEN",
                   .help = "the bearer token of /admin/; change-me only on loopback"),
    {.name = "strategy",
     .types = SK_CONF_STRING,
     .choices = strategies,
     .def = "watch",
     .env = "SECKILLD_STRATEGY",
     .help = "how a buy takes stock: a WATCH/MULTI/EXEC retried by the core, or one Redis script"},
    /* admission/tokens.lua: at least 16 characters */
    SK_CONF_RANGED("token_secret", SK_CONF_STRING, 16, 4096, .env = "SECKILLD_TOKEN_SECRET",
                   .help = "signs purchase tokens; unset: no tokens"),
    SK_CONF_RANGED("token_secret_previous", SK_CONF_STRING, 16, 4096,
                   .help = "the secret before a rotation, still accepted until token_secret_previous_until"),
    SK_CONF_RANGED("token_secret_previous_until", SK_CONF_INT, 0, SK_CONF_NO_MAX,
                   .help = "the end of the rotation's overlap (ms since the epoch)"),
    /* life/payments.lua: at least 16 characters */
    SK_CONF_RANGED("payment_secret", SK_CONF_STRING, 16, 4096, .env = "SECKILLD_PAYMENT_SECRET",
                   .help = "verifies the payment webhook's signature; unset: the webhook answers 503"),
    SK_CONF_RANGED("payment_secret_previous", SK_CONF_STRING, 16, 4096,
                   .help = "the secret before a rotation, still accepted until payment_secret_previous_until"),
    SK_CONF_RANGED("payment_secret_previous_until", SK_CONF_INT, 0, SK_CONF_NO_MAX,
                   .help = "the end of the payment secret rotation's overlap (ms since the epoch)"),
    {.name = "sale", .types = SK_CONF_TABLE, .keys = sale_keys},
    {.name = "idempotency", .types = SK_CONF_TABLE, .keys = idempotency_keys},
    {.name = "limits", .types = SK_CONF_TABLE, .keys = limits_keys},
    {.name = "items", .types = SK_CONF_LIST, .elem = &item, .help = "items set up at start, as PUT /admin/items/{id} would"},
    SK_CONF_KEY("custom", SK_CONF_ANY, .help = "free: the keys of scripts of your own"),
    {NULL},
};

const sk_binding_t sk_binding_script_keys = {.name = "scripts", .config_keys = script_keys};
