/*
 * kafka_batch.c: the consumer's batches, at least once: the FIFO of pending messages, running consumer.lua on the
 * head of it, retries, dead letters and offset storage. kafka_consumer.c owns the thread and fills the FIFO.
 *
 * Batches are the head of `pending`; they leave it only when done. A failing batch is split: its messages are
 * retried one at a time (so the failing message is found and everything before it is stored), with exponential
 * backoff; a single message that fails kafka.max_failures times is produced to the dead-letter topic with the error
 * in a header, and only once that delivery is confirmed is its offset stored. Nothing is ever skipped.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../core/co.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "kafka_consumer_internal.h"

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
}

void sk_kafka_pending_pop(size_t n, int destroy)
{
    for (size_t i = 0; i != n; ++i) {
        if (destroy)
            rd_kafka_message_destroy(pending_at(0));
        sk_kafka_consumer.head = (sk_kafka_consumer.head + 1) % sk_kafka_consumer.ring_cap;
        --sk_kafka_consumer.count;
    }
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
        if (m->partition >= 0 && m->partition < SK_KAFKA_MAX_PARTITIONS) {
            pthread_mutex_lock(&sk_kafka_consumer.lag_mutex);
            sk_kafka_consumer.next_offset[m->partition] = m->offset + 1;
            pthread_mutex_unlock(&sk_kafka_consumer.lag_mutex);
        }
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
}

static void on_batch_done(sk_co_t *co, int ok, int nres)
{
    lua_State *L = co->L;
    size_t n = sk_kafka_consumer.in_flight;
    sk_kafka_consumer.in_flight = 0;
    int success = ok && nres >= 1 && lua_toboolean(L, -nres);
    if (!success) {
        const char *err = !ok                                                  ? lua_tostring(L, -1)
                          : nres >= 2 && lua_type(L, -nres + 1) == LUA_TSTRING ? lua_tostring(L, -nres + 1)
                          : nres == 0 ? "consumer function returned nothing (return true on success)"
                                      : "consumer function returned a false value";
        snprintf(sk_kafka_consumer.last_error, sizeof(sk_kafka_consumer.last_error), "%s",
                 err != NULL ? err : "error object is not a string");
    }
    if (sk_kafka_consumer.batch_gen != sk_kafka_consumer.assign_gen) {
        /* partitions were revoked while the script ran: keep what succeeded, drop the rest (the new owner redoes it) */
        if (success)
            store_offsets(n);
        sk_kafka_pending_pop(n, 1);
    } else if (success) {
        sk_counter_inc(sk_kafka_consumer.metrics.batches_ok);
        sk_counter_add(sk_kafka_consumer.metrics.messages, n);
        store_offsets(n);
        sk_kafka_pending_pop(n, 1);
        sk_kafka_consumer.head_failures = 0;
        sk_kafka_consumer.consecutive_failures = 0;
        sk_kafka_consumer.split_remaining = sk_kafka_consumer.split_remaining > n ? sk_kafka_consumer.split_remaining - n : 0;
    } else {
        sk_counter_inc(sk_kafka_consumer.metrics.batches_failed);
        ++sk_kafka_consumer.consecutive_failures;
        if (n > 1) {
            sk_kafka_consumer.split_remaining = n;
        } else {
            ++sk_kafka_consumer.head_failures;
        }
        rd_kafka_message_t *m = pending_at(0);
        sk_warn("kafka consumer: batch of %zu from %s[%d]@%lld failed (%u consecutive): %s", n, rd_kafka_topic_name(m->rkt),
                (int)m->partition, (long long)m->offset, sk_kafka_consumer.consecutive_failures, sk_kafka_consumer.last_error);
        retry_later();
        return;
    }
    sk_kafka_consumer_kick();
}

static void on_dead_lettered(void *data, const sk_kafka_dr_t *dr, int on_loop)
{
    (void)data;
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
    sk_error("kafka consumer: %s[%d]@%lld failed %u times, moved to %s[%d]@%lld: %s", rd_kafka_topic_name(m->rkt),
             (int)m->partition, (long long)m->offset, sk_kafka_consumer.head_failures, sk_kafka_settings.dlq_topic,
             (int)dr->partition, (long long)dr->offset, sk_kafka_consumer.last_error);
    store_offsets(1);
    sk_kafka_pending_pop(1, 1);
    sk_kafka_consumer.head_failures = 0;
    sk_kafka_consumer.consecutive_failures = 0;
    if (sk_kafka_consumer.split_remaining > 0)
        --sk_kafka_consumer.split_remaining;
    sk_kafka_consumer_kick();
}

static void dead_letter(rd_kafka_message_t *m)
{
    char buf[32];
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(4);
    /* the first line: the message, without the traceback (which is in the log) */
    rd_kafka_header_add(hdrs, "error", -1, sk_kafka_consumer.last_error, (ssize_t)strcspn(sk_kafka_consumer.last_error, "\n"));
    rd_kafka_header_add(hdrs, "original.topic", -1, rd_kafka_topic_name(m->rkt), -1);
    snprintf(buf, sizeof(buf), "%d", (int)m->partition);
    rd_kafka_header_add(hdrs, "original.partition", -1, buf, -1);
    snprintf(buf, sizeof(buf), "%lld", (long long)m->offset);
    rd_kafka_header_add(hdrs, "original.offset", -1, buf, -1);
    rd_kafka_resp_err_t err =
        sk_kafka_produce(sk_kafka_settings.dlq_topic, m->payload, m->len, m->key, m->key_len, hdrs, on_dead_lettered, m);
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
    if (sk_kafka_consumer.head_failures >= sk_kafka_consumer.max_failures) {
        dead_letter(pending_at(0));
        return;
    }
    size_t n = sk_kafka_consumer.split_remaining != 0                   ? 1
               : sk_kafka_consumer.count < sk_kafka_consumer.batch_size ? sk_kafka_consumer.count
                                                                        : sk_kafka_consumer.batch_size;
    sk_co_t *co = sk_co_new(sk_kafka_consumer.vm, &sk_kafka_consumer.loop);
    lua_rawgeti(co->L, LUA_REGISTRYINDEX, sk_kafka_consumer.vm->consumer_ref);
    lua_createtable(co->L, (int)n, 0);
    for (size_t i = 0; i != n; ++i) {
        push_message(co->L, pending_at(i));
        lua_rawseti(co->L, -2, (lua_Integer)i + 1);
    }
    sk_kafka_consumer.in_flight = n;
    sk_kafka_consumer.batch_gen = sk_kafka_consumer.assign_gen;
    sk_co_start(co, 1, on_batch_done, NULL);
}
