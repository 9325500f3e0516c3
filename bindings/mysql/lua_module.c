/*
 * lua_module.c: the `mysql` Lua module (query, null; transaction comes from lua_tx.c), its config, metrics and
 * health, and the binding's life cycle (the schema at start-up, a pool per loop thread).
 *
 * A statement's run (lease, render, send, complete, wake) is lua_stmt.c; Lua values into SQL is lua_sql.c. The
 * driver and the pool underneath know nothing of Lua (conn.c, pool.c); the start-up work is schema.c.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/config.h"
#include "../../core/health.h"
#include "../../core/log.h"
#include "../../core/metrics.h"
#include "../../core/binding.h"
#include "lua_stmt.h"
#include "lua_tx.h"
#include "schema.h"

/* ===== process-wide state (set in init, read-only afterwards) ===== */

static struct {
    sk_mysql_target_t target;
    size_t pool_size;
    uint64_t wait_timeout_ms, idle_timeout_ms;
    char *schema_path;
    _Atomic int *health;
    struct {
        sk_counter_t *pool_waits, *pool_wait_timeouts, *connection_errors, *connections;
    } metrics;
} mysql;

static void on_pool_connect(sk_mysql_pool_t *pool)
{
    (void)pool;
    atomic_store(mysql.health, 1);
}
static void on_pool_connect_error(sk_mysql_pool_t *pool, const char *err)
{
    (void)pool;
    sk_counter_inc(mysql.metrics.connection_errors);
    if (atomic_exchange(mysql.health, 0))
        sk_warn("mysql: connection failed: %s", err);
}
static void on_pool_wait(sk_mysql_pool_t *pool)
{
    (void)pool;
    sk_counter_inc(mysql.metrics.pool_waits);
}
static void on_pool_wait_timeout(sk_mysql_pool_t *pool)
{
    (void)pool;
    sk_counter_inc(mysql.metrics.pool_wait_timeouts);
}
static void on_pool_open_delta(sk_mysql_pool_t *pool, int delta)
{
    (void)pool;
    sk_gauge_add(mysql.metrics.connections, delta);
}
static const sk_mysql_pool_hooks_t pool_hooks = {on_pool_connect, on_pool_connect_error, on_pool_wait, on_pool_wait_timeout,
                                                 on_pool_open_delta};

/* ===== mysql.query(sql, ...) ===== */

static int l_query(lua_State *L)
{
    sk_co_t *co = sk_co_check(L);
    sk_mysql_pool_t *pool = sk_mysql_stmt_check_pool(L);
    return sk_mysql_stmt_lease(L, sk_mysql_stmt_new(L, 1, NULL, co, pool));
}

/* ===== the module ===== */

static void open_mysql(lua_State *L)
{
    lua_createtable(L, 0, 4);
    lua_pushcfunction(L, l_query);
    lua_setfield(L, -2, "query");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    sk_mysql_tx_open(L);
    lua_setglobal(L, "mysql");
}

/* ===== life cycle ===== */

static void on_schema_applied(void)
{
    atomic_store(mysql.health, 1);
}

static int init_mysql(sk_config_t *cfg, unsigned nthreads)
{
    (void)nthreads;
    char err[512];
    const char *url = sk_config_string(cfg, "mysql.url");
    uint64_t connect_ms = (uint64_t)sk_config_int(cfg, "mysql.connect_timeout_ms");
    uint64_t query_ms = (uint64_t)sk_config_int(cfg, "mysql.query_timeout_ms");
    if (sk_mysql_target_init(&mysql.target, url, connect_ms, query_ms, err, sizeof(err)) != 0) {
        sk_error("%s", err);
        return -1;
    }
    long long pool_size = sk_config_int(cfg, "mysql.pool_size");
    mysql.pool_size = pool_size > 0 ? (size_t)pool_size : 1;
    mysql.wait_timeout_ms = (uint64_t)sk_config_int(cfg, "mysql.wait_timeout_ms");
    mysql.idle_timeout_ms = (uint64_t)sk_config_int(cfg, "mysql.idle_timeout_ms");

    sk_mysql_stmt_init_metrics();
    mysql.metrics.pool_waits =
        sk_metrics_counter("seckilld_mysql_pool_waits_total", "statements that waited for a pooled connection", "");
    mysql.metrics.pool_wait_timeouts =
        sk_metrics_counter("seckilld_mysql_pool_wait_timeouts_total", "pool waits that ran past mysql.wait_timeout_ms", "");
    mysql.metrics.connection_errors =
        sk_metrics_counter("seckilld_mysql_connection_errors_total", "failed attempts to connect to MySQL", "");
    mysql.metrics.connections = sk_metrics_gauge("seckilld_mysql_connections", "open MySQL connections, all threads", "");
    mysql.health = sk_health_register("mysql");

    /* the schema file sits next to the config file unless mysql.schema says otherwise */
    const char *schema = sk_config_string(cfg, "mysql.schema");
    if (schema != NULL) {
        mysql.schema_path = h2o_strdup(NULL, schema, SIZE_MAX).base;
    } else {
        const char *slash = cfg->path != NULL ? strrchr(cfg->path, '/') : NULL;
        int dirlen = slash != NULL ? (int)(slash - cfg->path) : 1;
        mysql.schema_path = h2o_mem_alloc(dirlen + sizeof("/schema.sql"));
        sprintf(mysql.schema_path, "%.*s/schema.sql", dirlen, slash != NULL ? cfg->path : ".");
    }
    if (sk_mysql_schema_apply(&mysql.target, mysql.schema_path, err, sizeof(err)) == 0) {
        atomic_store(mysql.health, 1);
    } else {
        sk_warn("mysql: cannot apply the schema now, serving anyway and retrying in the background: %s", err);
        atomic_store(mysql.health, 0);
        sk_mysql_schema_retry_start(&mysql.target, mysql.schema_path, on_schema_applied);
    }
    return 0;
}

static void thread_init_mysql(sk_loop_t *loop)
{
    sk_mysql_stmt_set_pool(
        sk_mysql_pool_new(loop, &mysql.target, mysql.pool_size, mysql.wait_timeout_ms, mysql.idle_timeout_ms, &pool_hooks));
}

static void thread_dispose_mysql(sk_loop_t *loop)
{
    (void)loop;
    sk_mysql_pool_t *pool = sk_mysql_stmt_pool();
    if (pool != NULL) {
        sk_mysql_pool_dispose(pool);
        sk_mysql_stmt_set_pool(NULL);
    }
}

static void shutdown_mysql(void)
{
    sk_mysql_schema_retry_stop();
    sk_mysql_target_dispose(&mysql.target);
    free(mysql.schema_path);
    mysql.schema_path = NULL;
}

static const sk_config_key_t mysql_keys[] = {
    SK_CONF_RANGED("url", SK_CONF_STRING, 1, 4096, .def = "mysql://seckill:seckill@127.0.0.1:3306/seckill", .env = "SECKILLD_MYSQL",
                   .help = "mysql://user:pass@host:port/db (MySQL or MariaDB)"),
    SK_CONF_RANGED("pool_size", SK_CONF_INT, 1, 1024, .def = "4", .help = "connections per thread"),
    SK_CONF_RANGED("connect_timeout_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY, .def = "2000", .help = "a connection attempt's limit"),
    SK_CONF_RANGED("query_timeout_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY, .def = "5000", .help = "a statement's limit"),
    SK_CONF_RANGED("wait_timeout_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY, .def = "2000",
                   .help = "how long a statement waits for a pooled connection"),
    SK_CONF_RANGED("idle_timeout_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY, .def = "60000",
                   .help = "an idle connection is closed after this long"),
    /* computed when unset: schema.sql beside the config file (init_mysql) */
    SK_CONF_RANGED("schema", SK_CONF_STRING, 1, 4096,
                   .help = "the schema file applied at start; unset: schema.sql beside the config"),
    {NULL},
};
static const sk_config_key_t config_keys[] = {{.name = "mysql", .types = SK_CONF_TABLE, .keys = mysql_keys}, {NULL}};

const sk_binding_t sk_binding_mysql = {
    .name = "mysql",
    .init = init_mysql,
    .thread_init = thread_init_mysql,
    .open = open_mysql,
    .thread_dispose = thread_dispose_mysql,
    .shutdown = shutdown_mysql,
    .config_keys = config_keys,
};
