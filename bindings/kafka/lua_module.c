/*
 * lua_module.c: the `kafka` Lua module and the binding: its life cycle (mock cluster, producer, per-loop routes),
 * the consumer as its service (role "consumer") and its command-line modes (--kafka-mock FILE, --redrive-dlq).
 *
 *   kafka.produce(topic, value [, {key = "...", headers = {name = "value"}, partition = N}]) -> partition, offset | nil, err
 *       yields until the delivery report; topic nil means kafka.topic. Without `partition` the partitioner picks one
 *       from the key; with it (an integer >= 0) the message goes to that partition ("unknown partition" when the
 *       topic has fewer). "queue full" is answered at once.
 *   kafka.partitions([topic])  -> the partition count of topic (default kafka.topic) | nil, err
 *       from the producer's metadata (fetched at start-up, refreshed every 30 s off the loops); never waits: a topic
 *       not seen yet is nil, "unknown topic" and is looked up within a second.
 *   kafka.consumer_status()    -> {state=, error=, pending=, lag=, oldest_seconds=} | nil when this process runs no
 *       consumer. Any worker. state: "idle" | "ok" | "retrying" | "stalled"; error only while retrying or stalled;
 *       lag (all assigned partitions) absent when unknown.
 *   kafka.topic()              -> the configured orders topic
 *   kafka.dead_letter_topic()  -> the configured dead-letter topic
 *   kafka.mock_broker_down(id) / kafka.mock_broker_up(id)  (embedded mode only: a test hook)
 */
#include <lauxlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/op.h"
#include "../../core/log.h"
#include "../../core/binding.h"
#include "consumer.h"
#include "err.h"
#include "metadata.h"
#include "mock.h"
#include "producer.h"
#include "redrive.h"

typedef struct st_produce_op_t {
    sk_op_t super; /* super.err: the completion's errstr */
    int cancelled; /* the coroutine was abandoned: the op lives on until its report, which frees it */
    int woken;     /* the report arrived and the resume is scheduled: push_result owns and frees the op */
    sk_kafka_dr_t dr;
} produce_op_t;

static int push_result(lua_State *L, void *arg)
{
    produce_op_t *op = arg;
    int n;
    if (op->super.err != NULL) {
        lua_pushnil(L);
        lua_pushstring(L, op->super.err);
        n = 2;
    } else {
        lua_pushinteger(L, op->dr.partition);
        lua_pushinteger(L, op->dr.offset >= 0 ? op->dr.offset : -1);
        n = 2;
    }
    free(op);
    return n;
}

static void on_delivered(sk_op_t *super, const sk_kafka_dr_t *dr, const char *errstr)
{
    produce_op_t *op = (produce_op_t *)super;
    if (op->cancelled || !dr->on_loop) {
        free(op);
        return;
    }
    op->dr = *dr;
    op->super.err = errstr;
    op->woken = 1;
    sk_op_wake(&op->super, push_result);
}

static void on_cancel(void *arg)
{
    produce_op_t *op = arg;
    if (op->woken)
        free(op); /* push_result will never run */
    else
        op->cancelled = 1;
}

static rd_kafka_headers_t *check_headers(lua_State *L, int idx)
{
    if (lua_isnil(L, idx))
        return NULL;
    luaL_argcheck(L, lua_istable(L, idx), 3, "headers must be a table");
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t len;
        if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)) {
            rd_kafka_headers_destroy(hdrs);
            luaL_error(L, "kafka.produce: header names and values must be strings");
        }
        const char *value = lua_tolstring(L, -1, &len); /* numbers convert in place: fine, the key is a string */
        rd_kafka_header_add(hdrs, lua_tostring(L, -2), -1, value, (ssize_t)len);
        lua_pop(L, 1);
    }
    return hdrs;
}

static int l_produce(lua_State *L)
{
    sk_co_t *co = sk_co_check(L); /* first: it raises, and nothing must be allocated yet */
    const char *topic = luaL_optstring(L, 1, sk_kafka_settings.topic);
    size_t len, keylen = 0;
    const char *value = luaL_checklstring(L, 2, &len), *key = NULL;
    rd_kafka_headers_t *hdrs = NULL;
    int32_t partition = RD_KAFKA_PARTITION_UA;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        if (lua_getfield(L, 3, "partition") != LUA_TNIL) {
            int isint;
            lua_Integer p = lua_tointegerx(L, -1, &isint);
            luaL_argcheck(L, isint && p >= 0 && p <= INT32_MAX, 3, "partition must be an integer >= 0");
            partition = (int32_t)p;
        }
        lua_pop(L, 1);
        lua_getfield(L, 3, "key");
        if (!lua_isnil(L, -1))
            key = luaL_checklstring(L, -1, &keylen); /* anchored by the opts table while we run */
        lua_getfield(L, 3, "headers");
        hdrs = check_headers(L, lua_gettop(L));
        lua_pop(L, 2);
    }
    if (topic == NULL) {
        if (hdrs != NULL)
            rd_kafka_headers_destroy(hdrs);
        lua_pushnil(L);
        lua_pushstring(L, sk_kafka_err_not_configured);
        return 2;
    }
    produce_op_t *op = calloc(1, sizeof(*op));
    op->super.co = co;
    rd_kafka_resp_err_t code;
    const char *err;
    if ((err = sk_kafka_produce(&op->super, topic, partition, value, len, key, keylen, hdrs, on_delivered, &code)) != NULL) {
        if (hdrs != NULL)
            rd_kafka_headers_destroy(hdrs);
        free(op);
        lua_pushnil(L);
        /* err itself, or librdkafka's own text where err is sk_kafka_err_refused (a code the family does not name) */
        lua_pushstring(L, sk_kafka_strerror(code));
        return 2;
    }
    return sk_op_yield(L, &op->super, on_cancel);
}

static int l_partitions(lua_State *L)
{
    const char *topic = luaL_optstring(L, 1, sk_kafka_settings.topic);
    int n = topic != NULL && sk_kafka_producer_enabled() ? sk_kafka_metadata_partition_count(topic) : -1;
    if (n < 0) {
        lua_pushnil(L);
        lua_pushstring(L, topic != NULL && sk_kafka_producer_enabled() ? sk_kafka_err_unknown_topic : sk_kafka_err_not_configured);
        return 2;
    }
    lua_pushinteger(L, n);
    return 1;
}

static int l_consumer_status(lua_State *L)
{
    sk_kafka_consumer_status_t st;
    if (sk_kafka_consumer_status(&st) != 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 5);
    lua_pushstring(L, st.state);
    lua_setfield(L, -2, "state");
    if (st.error[0] != '\0') {
        lua_pushstring(L, st.error);
        lua_setfield(L, -2, "error");
    }
    lua_pushinteger(L, (lua_Integer)st.pending);
    lua_setfield(L, -2, "pending");
    if (st.lag >= 0) {
        lua_pushinteger(L, st.lag);
        lua_setfield(L, -2, "lag");
    }
    lua_pushnumber(L, st.oldest_seconds);
    lua_setfield(L, -2, "oldest_seconds");
    return 1;
}

static int l_topic(lua_State *L)
{
    lua_pushstring(L, sk_kafka_settings.topic);
    return 1;
}

static int l_dead_letter_topic(lua_State *L)
{
    lua_pushstring(L, sk_kafka_settings.dlq_topic);
    return 1;
}

/* kafka.mock_broker_down/up(id): the switch runs on a thread of its own (mock.h); the coroutine waits on a loop
 * timer that looks every millisecond whether it has ended (a test's hook: a few milliseconds, rarely) */
typedef struct st_switch_op_t {
    sk_op_t super;
    sk_timer_t timer;
    sk_kafka_mock_switch_t *sw;
    int id, down, ok;
} switch_op_t;

static int push_switch(lua_State *L, void *arg)
{
    switch_op_t *op = arg;
    int ok = op->ok;
    if (ok)
        sk_warn("kafka mock: broker %d set %s by a script", op->id, op->down ? "down" : "up");
    free(op);
    if (!ok) {
        lua_pushnil(L);
        lua_pushstring(L, sk_kafka_err_no_such_broker);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static void on_switch_timer(sk_timer_t *timer)
{
    switch_op_t *op = H2O_STRUCT_FROM_MEMBER(switch_op_t, timer, timer);
    if (!sk_kafka_mock_switch_done(op->sw, &op->ok)) {
        sk_timer_start(op->super.co->loop, &op->timer, 1, on_switch_timer);
        return;
    }
    sk_kafka_mock_switch_release(op->sw);
    sk_op_wake(&op->super, push_switch);
}

static void cancel_switch(void *arg)
{
    switch_op_t *op = arg;
    sk_timer_stop(op->super.co->loop, &op->timer);
    sk_kafka_mock_switch_release(op->sw); /* the switch still ends; its thread frees it */
    free(op);
}

static int set_broker(lua_State *L, int down)
{
    int id = (int)luaL_checkinteger(L, 1);
    sk_co_t *co = sk_co_check(L);
    sk_kafka_mock_switch_t *sw = sk_kafka_mock_switch_start(id, down);
    if (sw == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, sk_kafka_err_no_such_broker);
        return 2;
    }
    switch_op_t *op = h2o_mem_alloc(sizeof(*op));
    *op = (switch_op_t){.super.co = co, .sw = sw, .id = id, .down = down};
    sk_timer_start(co->loop, &op->timer, 1, on_switch_timer);
    return sk_op_yield(L, &op->super, cancel_switch);
}

static int l_mock_broker_down(lua_State *L)
{
    return set_broker(L, 1);
}

static int l_mock_broker_up(lua_State *L)
{
    return set_broker(L, 0);
}

/* ===== binding life cycle ===== */

static int init(sk_config_t *cfg, unsigned nthreads)
{
    (void)nthreads;
    const char *brokers = sk_config_string(cfg, "kafka.brokers");
    char dlq[512];
    sk_kafka_settings.topic = strdup(sk_config_string(cfg, "kafka.topic"));
    snprintf(dlq, sizeof(dlq), "%s.dlq", sk_kafka_settings.topic);
    sk_kafka_settings.dlq_topic =
        strdup(sk_config_isset(cfg, "kafka.dead_letter_topic") ? sk_config_string(cfg, "kafka.dead_letter_topic") : dlq);
    if (brokers == NULL || *brokers == '\0') {
        sk_info("kafka: kafka.brokers not set; kafka.produce answers nil, \"kafka not configured\"");
        return 0;
    }
    if (strcmp(brokers, "embedded") == 0) {
        int partitions = (int)sk_config_int(cfg, "kafka.partitions");
        brokers = sk_kafka_mock_start((int)sk_config_int(cfg, "kafka.mock_brokers"), sk_kafka_settings.topic, partitions,
                                      sk_kafka_settings.dlq_topic);
        if (brokers == NULL)
            return -1;
        sk_kafka_settings.embedded = 1;
        sk_warn("**********************************************************************************");
        sk_warn("kafka: EMBEDDED MOCK CLUSTER on %s", brokers);
        sk_warn("kafka: messages live in this process's memory only: NOT DURABLE, lost on exit.");
        sk_warn("kafka: set kafka.brokers (SECKILLD_KAFKA) to a real cluster in production.");
        sk_warn("**********************************************************************************");
    }
    sk_kafka_settings.bootstraps = strdup(brokers);
    return sk_kafka_producer_init(cfg, sk_kafka_settings.bootstraps);
}

static void thread_init(sk_loop_t *loop)
{
    sk_kafka_producer_thread_init(loop);
}

static void thread_dispose(sk_loop_t *loop)
{
    sk_kafka_producer_thread_dispose(loop);
}

static void open_module(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"produce", l_produce},
                                     {"partitions", l_partitions},
                                     {"consumer_status", l_consumer_status},
                                     {"topic", l_topic},
                                     {"dead_letter_topic", l_dead_letter_topic},
                                     {NULL, NULL}};
    luaL_newlib(L, funcs);
    if (sk_kafka_settings.embedded) {
        lua_pushcfunction(L, l_mock_broker_down);
        lua_setfield(L, -2, "mock_broker_down");
        lua_pushcfunction(L, l_mock_broker_up);
        lua_setfield(L, -2, "mock_broker_up");
    }
    lua_setglobal(L, "kafka");
}

static void shutdown_binding(void)
{
    /* normally stopped already by main; the consumer produces dead letters, so it must end before the producer */
    sk_kafka_consumer_stop();
    sk_kafka_producer_shutdown();
    /* The embedded cluster is not destroyed: its memory ends with the process, which exits next. librdkafka 2.0.2's
     * rd_kafka_mock_cluster_destroy joins the mock's internal broker thread, which notices only at its next 1 s
     * wake-up (no terminate op is queued to it), so a graceful stop took up to a second longer every fourth time. */
    sk_kafka_mock_abandon();
}

static int mock_mode(sk_config_t *cfg, const char *file)
{
    (void)cfg;
    return sk_kafka_mock_main(file);
}

static int redrive_mode(sk_config_t *cfg, const char *arg)
{
    (void)arg;
    return sk_kafka_redrive_main(cfg);
}

static const sk_binding_mode_t modes[] = {
    {.option = "kafka-mock",
     .arg = "FILE",
     .help = "run a standalone Kafka mock cluster (tests), writing its bootstrap servers to FILE",
     .main = mock_mode},
    {.option = "redrive-dlq",
     .help = "move the dead letters not yet redriven back to the orders topic, print\n\"redriven N\" and exit",
     .needs_config = 1,
     .main = redrive_mode},
    {NULL}};

/* every key the producer, the consumer, the mock and --redrive-dlq read; producer and consumer are librdkafka's
 * properties, passed through as they are (librdkafka checks them when the client is created) */
static const sk_config_key_t kafka_keys[] = {
    /* no default: "" or unset is "Kafka not configured" */
    SK_CONF_RANGED("brokers", SK_CONF_STRING, 0, 4096, .env = "SECKILLD_KAFKA",
                   .help = "host:port,... or embedded (the in-process mock); unset: Kafka not configured"),
    SK_CONF_RANGED("topic", SK_CONF_STRING, 1, 249, .def = SK_KAFKA_DEFAULT_TOPIC, .env = "SECKILLD_TOPIC",
                   .help = "the orders topic"),
    /* computed when unset: "<topic>.dlq" (init, sk_kafka_redrive_main) */
    SK_CONF_RANGED("dead_letter_topic", SK_CONF_STRING, 1, 249, .help = "where failed orders go; unset: the topic's name + .dlq"),
    SK_CONF_RANGED("group", SK_CONF_STRING, 1, 255, .def = "seckilld",
                   .help = "the order consumer's group (--redrive-dlq's: + .redrive)"),
    SK_CONF_RANGED("partitions", SK_CONF_INT, 1, 10000, .def = "6", .help = "partitions of the topic the embedded mock creates"),
    SK_CONF_RANGED("mock_brokers", SK_CONF_INT, 1, 64, .def = "3", .help = "brokers of the embedded mock"),
    SK_CONF_RANGED("batch_size", SK_CONF_INT, 1, 1000000, .def = "500", .help = "messages handed to consumer.lua at once at most"),
    SK_CONF_RANGED("max_failures", SK_CONF_INT, 1, 1000000, .def = "5",
                   .help = "failed tries of a message before it is dead-lettered"),
    SK_CONF_RANGED("retry_backoff_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY, .def = "200",
                   .help = "the first pause before a failed batch is retried"),
    SK_CONF_RANGED("retry_backoff_max_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY, .def = "5000", .help = "the longest such pause"),
    SK_CONF_RANGED("shutdown_timeout_ms", SK_CONF_INT, 0, SK_CONF_MS_DAY, .def = "10000",
                   .help = "how long a stopping consumer waits for its batch"),
    SK_CONF_RANGED("flush_timeout_ms", SK_CONF_INT, 0, SK_CONF_MS_DAY, .def = "10000",
                   .help = "how long a stopping producer waits for its deliveries"),
    SK_CONF_RANGED("redrive_timeout_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY, .def = "30000",
                   .help = "--redrive-dlq gives up after this long"),
    {.name = "producer", .types = SK_CONF_MAP, .help = "librdkafka properties of the producer, passed as they are"},
    {.name = "consumer", .types = SK_CONF_MAP, .help = "librdkafka properties of the order consumer, passed as they are"},
    {NULL},
};
static const sk_config_key_t config_keys[] = {{.name = "kafka", .types = SK_CONF_TABLE, .keys = kafka_keys}, {NULL}};

const sk_binding_t sk_binding_kafka = {
    .name = "kafka",
    .init = init,
    .thread_init = thread_init,
    .open = open_module,
    .thread_dispose = thread_dispose,
    .shutdown = shutdown_binding,
    /* the order consumer: a service with its own thread and VM */
    .vm_role = &sk_kafka_consumer_role,
    .role = "consumer",
    .role_help = "the Kafka order consumer (HTTP serves only /healthz and /metrics)",
    .start = sk_kafka_consumer_start,
    .reload = sk_kafka_consumer_reload,
    .stop = sk_kafka_consumer_stop,
    .modes = modes,
    .config_keys = config_keys,
};
