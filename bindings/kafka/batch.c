/*
 * kafka_batch.c: the consumer's batches, at least once: the FIFO of pending messages, running consumer.lua on the
 * head of it, retries, dead letters and offset storage. kafka_consumer.c owns the thread and fills the FIFO.
 *
 * Batches are the head of `pending`; they leave it only when done. What consumer.lua returns decides what happens:
 *
 *   return true          the batch is done: offset+1 of each of its messages is stored (auto-commit commits it).
 *   return nil, err      TRANSIENT (a backend is down): the same batch, the very same messages, is retried with
 *                        exponential backoff (kafka.retry_backoff_ms doubling up to kafka.retry_backoff_max_ms) for
 *                        as long as it takes. Never split, never dead-lettered, nothing stored. The consumer is
 *                        "stalled" meanwhile (/healthz, seckilld_kafka_consumer_stalled).
 *   return false, err    PERMANENT for something in the batch: the batch is split and its messages are processed
 *                        one at a time, in order, at once; a message that returns false, err on its own is produced
 *                        to the dead-letter topic at once. A single message that returns nil, err is transient.
 *   raises (or returns nothing)  a bug or an unforeseen failure: the batch is split the same way, after a backoff; a
 *                        single message that raises is retried with backoff and dead-lettered after
 *                        kafka.max_failures failures.
 *
 * A dead letter keeps the key, the value and the message's own headers, and gets the headers `error` (the first line
 * of the error), `original.topic`, `original.partition` and `original.offset`; the message's offset is stored only
 * once that delivery is confirmed. Nothing is ever skipped, and a partition's messages are handled in order.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/co.h"
#include "../../core/log.h"
#include "../../core/metrics.h"
#include "consumer_internal.h"

/* ===== pending ring ===== */

static rd_kafka_message_t *pending_at(size_t i)
{
    return sk_kafka_consumer.ring[(sk_kafka_consumer.head + i) % sk_kafka_consumer.ring_cap];
}

void sk_kafka_pending_push(rd_kafka_message_t *m)
{
    if (sk_kafka_consumer.count == sk_kafka_consumer.ring_cap) {
        size_t cap = sk_kafka_consumer.ring_cap * 2;
        rd_kafka_message_t **ring = malloc(cap * sizeof(*ring));
        for (size_t i = 0; i != sk_kafka_consumer.count; ++i)
            ring[i] = pending_at(i);
        free(sk_kafka_consumer.ring);
        sk_kafka_consumer.ring = ring;
        sk_kafka_consumer.ring_cap = cap;
        sk_kafka_consumer.head = 0;
    }
    sk_kafka_consumer.ring[(sk_kafka_consumer.head + sk_kafka_consumer.count++) % sk_kafka_consumer.ring_cap] = m;
    int64_t ts = rd_kafka_message_timestamp(m, NULL);
    if (ts > 0 && (sk_kafka_consumer.oldest_local == 0 || ts < sk_kafka_consumer.oldest_local))
        sk_kafka_consumer.oldest_local = ts;
}

void sk_kafka_pending_pop(size_t n, int destroy)
{
    for (size_t i = 0; i != n; ++i) {
        if (destroy)
            rd_kafka_message_destroy(pending_at(0));
        sk_kafka_consumer.head = (sk_kafka_consumer.head + 1) % sk_kafka_consumer.ring_cap;
        --sk_kafka_consumer.count;
    }
    if (n != 0)
        sk_kafka_consumer.oldest_dirty = 1;
}

/* keeps the first `keep` messages and those of partitions still assigned (for incremental revokes) */
void sk_kafka_pending_drop_revoked(size_t keep, const rd_kafka_topic_partition_list_t *revoked)
{
    size_t n = sk_kafka_consumer.count, kept = 0;
    rd_kafka_message_t **tmp = malloc((n + 1) * sizeof(*tmp));
    for (size_t i = 0; i != n; ++i) {
        rd_kafka_message_t *m = pending_at(i);
        int drop = i >= keep && (revoked == NULL ||
                                 rd_kafka_topic_partition_list_find(revoked, rd_kafka_topic_name(m->rkt), m->partition) != NULL);
        if (drop)
            rd_kafka_message_destroy(m);
        else
            tmp[kept++] = m;
    }
    for (size_t i = 0; i != kept; ++i)
        sk_kafka_consumer.ring[i] = tmp[i];
    free(tmp);
    sk_kafka_consumer.head = 0;
    sk_kafka_consumer.count = kept;
    sk_kafka_consumer.oldest_dirty = 1;
}

int64_t sk_kafka_pending_oldest(void)
{
    if (sk_kafka_consumer.oldest_dirty) {
        int64_t oldest = 0;
        for (size_t i = 0; i != sk_kafka_consumer.count; ++i) {
            int64_t ts = rd_kafka_message_timestamp(pending_at(i), NULL);
            if (ts > 0 && (oldest == 0 || ts < oldest))
                oldest = ts;
        }
        sk_kafka_consumer.oldest_local = oldest;
        sk_kafka_consumer.oldest_dirty = 0;
    }
    return sk_kafka_consumer.oldest_local;
}

/* ===== offsets ===== */

/* stores offset+1 of the first n pending messages (highest per partition wins since they are in order) */
static void store_offsets(size_t n)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i != n; ++i) {
        rd_kafka_message_t *m = pending_at(i);
        const char *topic = rd_kafka_topic_name(m->rkt);
        rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(list, topic, m->partition);
        if (p == NULL)
            p = rd_kafka_topic_partition_list_add(list, topic, m->partition);
        p->offset = m->offset + 1;
        sk_kafka_status_set_next_offset(m->partition, m->offset + 1);
    }
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(sk_kafka_consumer.rk, list);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) /* e.g. __STATE: the partition was revoked meanwhile; its new owner redoes it */
        sk_info("kafka consumer: offsets not stored (%s); the messages will be processed again", rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(list);
}

/* ===== batches ===== */

static void push_message(lua_State *L, rd_kafka_message_t *m)
{
    rd_kafka_headers_t *hdrs;
    lua_createtable(L, 0, 6);
    lua_pushstring(L, rd_kafka_topic_name(m->rkt));
    lua_setfield(L, -2, "topic");
    lua_pushinteger(L, m->partition);
    lua_setfield(L, -2, "partition");
    lua_pushinteger(L, m->offset);
    lua_setfield(L, -2, "offset");
    if (m->key != NULL) {
        lua_pushlstring(L, m->key, m->key_len);
        lua_setfield(L, -2, "key");
    }
    if (m->payload != NULL) {
        lua_pushlstring(L, m->payload, m->len);
        lua_setfield(L, -2, "value");
    }
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *value;
        size_t size;
        lua_newtable(L);
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
            lua_pushlstring(L, value != NULL ? value : "", value != NULL ? size : 0);
            lua_setfield(L, -2, name);
        }
        lua_setfield(L, -2, "headers");
    }
}

static void retry_later(void)
{
    sk_counter_inc(sk_kafka_consumer.metrics.retries);
    unsigned shift = sk_kafka_consumer.consecutive_failures < 16 ? sk_kafka_consumer.consecutive_failures : 16;
    uint64_t delay = (uint64_t)sk_kafka_consumer.backoff_ms << (shift > 0 ? shift - 1 : 0);
    if (delay > sk_kafka_consumer.backoff_max_ms)
        delay = sk_kafka_consumer.backoff_max_ms;
    sk_timer_start(&sk_kafka_consumer.loop, &sk_kafka_consumer.backoff, delay, (sk_timer_cb)sk_kafka_consumer_kick);
    sk_kafka_consumer_update();
}

typedef enum { BATCH_OK, BATCH_TRANSIENT, BATCH_PERMANENT, BATCH_RAISED } batch_outcome_t;

/* reads what consumer.lua returned (or raised) and keeps the error in last_error */
static batch_outcome_t classify(lua_State *L, int ok, int nres)
{
    batch_outcome_t outcome;
    const char *err = NULL;
    if (!ok) {
        outcome = BATCH_RAISED;
        err =
            lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : "error object is not a string";
    } else if (nres == 0) {
        outcome = BATCH_RAISED;
        err = "consumer function returned nothing (return true on success)";
    } else if (lua_toboolean(L, -nres)) {
        return BATCH_OK;
    } else {
        outcome = lua_isnil(L, -nres) ? BATCH_TRANSIENT : BATCH_PERMANENT;
        if (nres >= 2 && (lua_type(L, -nres + 1) == LUA_TSTRING || lua_type(L, -nres + 1) == LUA_TNUMBER))
            err = lua_tostring(L, -nres + 1);
        else
            err = outcome == BATCH_TRANSIENT ? "consumer function returned nil" : "consumer function returned false";
    }
    snprintf(sk_kafka_consumer.last_error, sizeof(sk_kafka_consumer.last_error), "%s", err);
    return outcome;
}

static const char *outcome_name(batch_outcome_t outcome)
{
    return outcome == BATCH_TRANSIENT ? "transient" : outcome == BATCH_PERMANENT ? "permanent" : "raised";
}

/* the head batch of n messages succeeded (or was dead-lettered, n = 1): store, pop, leave any retry state */
static void batch_succeeded(size_t n)
{
    if (sk_kafka_consumer.stalled)
        sk_info("kafka consumer: resumed after a stall of %.1f s (%u attempts)",
                (sk_now_ms() - sk_kafka_consumer.stalled_since) / 1000.0, sk_kafka_consumer.consecutive_failures);
    store_offsets(n);
    sk_kafka_pending_pop(n, 1);
    sk_kafka_consumer.head_failures = 0;
    sk_kafka_consumer.dead_letter_now = 0;
    sk_kafka_consumer.consecutive_failures = 0;
    sk_kafka_consumer.stalled = 0;
    sk_kafka_consumer.retry_n = 0;
    sk_kafka_consumer.split_remaining = sk_kafka_consumer.split_remaining > n ? sk_kafka_consumer.split_remaining - n : 0;
}

static void on_batch_done(sk_co_t *co, int ok, int nres)
{
    size_t n = sk_kafka_consumer.in_flight;
    sk_kafka_consumer.in_flight = 0;
    batch_outcome_t outcome = classify(co->L, ok, nres);
    if (sk_kafka_consumer.batch_gen != sk_kafka_consumer.assign_gen) {
        /* partitions were revoked while the script ran: keep what succeeded, drop the rest (the new owner redoes it) */
        if (outcome == BATCH_OK)
            store_offsets(n);
        sk_kafka_pending_pop(n, 1);
        sk_kafka_consumer.retry_n = 0;
        sk_kafka_consumer.stalled = 0;
        sk_kafka_consumer_kick();
        return;
    }
    if (outcome == BATCH_OK) {
        sk_counter_inc(sk_kafka_consumer.metrics.batches_ok);
        sk_counter_add(sk_kafka_consumer.metrics.messages, n);
        batch_succeeded(n);
        sk_kafka_consumer_kick();
        return;
    }
    sk_counter_inc(sk_kafka_consumer.metrics.batches_failed);
    ++sk_kafka_consumer.consecutive_failures;
    rd_kafka_message_t *m = pending_at(0);
    if (outcome == BATCH_TRANSIENT) {
        if (!sk_kafka_consumer.stalled) {
            sk_kafka_consumer.stalled = 1;
            sk_kafka_consumer.stalled_since = sk_now_ms();
        }
        sk_kafka_consumer.retry_n = n;
        /* every one of the first 10 attempts, then one in 10: an outage of minutes must not flood the log */
        if (sk_kafka_consumer.consecutive_failures <= 10 || sk_kafka_consumer.consecutive_failures % 10 == 0)
            sk_warn("kafka consumer: batch of %zu from %s[%d]@%lld failed transiently (attempt %u, stalled %.1f s), "
                    "retrying the same batch: %s",
                    n, rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset, sk_kafka_consumer.consecutive_failures,
                    (sk_now_ms() - sk_kafka_consumer.stalled_since) / 1000.0, sk_kafka_consumer.last_error);
        retry_later();
        return;
    }
    sk_kafka_consumer.stalled = 0;
    sk_kafka_consumer.retry_n = 0;
    sk_warn("kafka consumer: batch of %zu from %s[%d]@%lld failed (%s, %u consecutive): %s", n, rd_kafka_topic_name(m->rkt),
            (int)m->partition, (long long)m->offset, outcome_name(outcome), sk_kafka_consumer.consecutive_failures,
            sk_kafka_consumer.last_error);
    if (n > 1)
        sk_kafka_consumer.split_remaining = n;
    if (outcome == BATCH_PERMANENT) {
        /* a batch is split at once; a single message is dead-lettered at once */
        if (n == 1)
            sk_kafka_consumer.dead_letter_now = 1;
        sk_kafka_consumer_kick();
        return;
    }
    if (n == 1)
        ++sk_kafka_consumer.head_failures;
    retry_later();
}

static void on_dead_lettered(void *data, const sk_kafka_dr_t *dr, int on_loop)
{
    if (!on_loop)
        return; /* the consumer loop ended; the message was not stored and will be consumed again */
    sk_kafka_consumer.dlq_in_flight = 0;
    rd_kafka_message_t *m = sk_kafka_consumer.count != 0 ? pending_at(0) : NULL;
    if (m == NULL || data != m) {
        sk_kafka_consumer_kick(); /* revoked meanwhile */
        return;
    }
    if (dr->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        sk_error("kafka consumer: cannot dead-letter %s[%d]@%lld to %s: %s; retrying", rd_kafka_topic_name(m->rkt),
                 (int)m->partition, (long long)m->offset, sk_kafka_settings.dlq_topic, rd_kafka_err2str(dr->err));
        ++sk_kafka_consumer.consecutive_failures;
        retry_later();
        return;
    }
    sk_counter_inc(sk_kafka_consumer.metrics.dead_lettered);
    if (sk_kafka_consumer.dead_letter_now)
        sk_error("kafka consumer: %s[%d]@%lld rejected by consumer.lua, moved to %s[%d]@%lld: %s", rd_kafka_topic_name(m->rkt),
                 (int)m->partition, (long long)m->offset, sk_kafka_settings.dlq_topic, (int)dr->partition, (long long)dr->offset,
                 sk_kafka_consumer.last_error);
    else
        sk_error("kafka consumer: %s[%d]@%lld failed %u times, moved to %s[%d]@%lld: %s", rd_kafka_topic_name(m->rkt),
                 (int)m->partition, (long long)m->offset, sk_kafka_consumer.head_failures, sk_kafka_settings.dlq_topic,
                 (int)dr->partition, (long long)dr->offset, sk_kafka_consumer.last_error);
    batch_succeeded(1);
    sk_kafka_consumer_kick();
}

static int is_reserved_header(const char *name)
{
    return strcmp(name, "error") == 0 || strncmp(name, "original.", 9) == 0;
}

static void dead_letter(rd_kafka_message_t *m)
{
    char buf[32];
    rd_kafka_headers_t *own, *hdrs = rd_kafka_headers_new(8);
    /* the message's own headers travel with it (a redrive gives them back), ours are added after */
    if (rd_kafka_message_headers(m, &own) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *value;
        size_t size;
        for (size_t i = 0; rd_kafka_header_get_all(own, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i)
            if (!is_reserved_header(name))
                rd_kafka_header_add(hdrs, name, -1, value, value != NULL ? (ssize_t)size : 0);
    }
    /* the first line: the message, without the traceback (which is in the log) */
    rd_kafka_header_add(hdrs, "error", -1, sk_kafka_consumer.last_error, (ssize_t)strcspn(sk_kafka_consumer.last_error, "\n"));
    rd_kafka_header_add(hdrs, "original.topic", -1, rd_kafka_topic_name(m->rkt), -1);
    snprintf(buf, sizeof(buf), "%d", (int)m->partition);
    rd_kafka_header_add(hdrs, "original.partition", -1, buf, -1);
    snprintf(buf, sizeof(buf), "%lld", (long long)m->offset);
    rd_kafka_header_add(hdrs, "original.offset", -1, buf, -1);
    rd_kafka_resp_err_t err = sk_kafka_produce(sk_kafka_settings.dlq_topic, RD_KAFKA_PARTITION_UA, m->payload, m->len, m->key,
                                               m->key_len, hdrs, on_dead_lettered, m);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_headers_destroy(hdrs);
        sk_error("kafka consumer: cannot dead-letter to %s: %s; retrying", sk_kafka_settings.dlq_topic, rd_kafka_err2str(err));
        ++sk_kafka_consumer.consecutive_failures;
        retry_later();
        return;
    }
    sk_kafka_consumer.dlq_in_flight = 1;
}

void sk_kafka_batch_start(void)
{
    if (sk_kafka_consumer.in_flight != 0 || sk_kafka_consumer.dlq_in_flight || sk_timer_is_active(&sk_kafka_consumer.backoff) ||
        sk_kafka_consumer.count == 0 || atomic_load(&sk_kafka_consumer.stopping))
        return;
    sk_kafka_consumer_apply_reload();
    if (sk_kafka_consumer.dead_letter_now || sk_kafka_consumer.head_failures >= sk_kafka_consumer.max_failures) {
        dead_letter(pending_at(0));
        return;
    }
    size_t n = sk_kafka_consumer.retry_n != 0                           ? sk_kafka_consumer.retry_n
               : sk_kafka_consumer.split_remaining != 0                 ? 1
               : sk_kafka_consumer.count < sk_kafka_consumer.batch_size ? sk_kafka_consumer.count
                                                                        : sk_kafka_consumer.batch_size;
    if (n > sk_kafka_consumer.count)
        n = sk_kafka_consumer.count;
    sk_co_t *co = sk_co_new(sk_kafka_consumer.vm, &sk_kafka_consumer.loop);
    lua_rawgeti(co->L, LUA_REGISTRYINDEX, sk_kafka_consumer.vm->entry_ref);
    lua_createtable(co->L, (int)n, 0);
    for (size_t i = 0; i != n; ++i) {
        push_message(co->L, pending_at(i));
        lua_rawseti(co->L, -2, (lua_Integer)i + 1);
    }
    sk_kafka_consumer.in_flight = n;
    sk_kafka_consumer.batch_gen = sk_kafka_consumer.assign_gen;
    sk_co_start(co, 1, on_batch_done, NULL);
}
