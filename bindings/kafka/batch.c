/*
 * batch.c: the consumer's batches as a state machine (batch.h says what each outcome does). No Lua, no thread and no
 * broker here: the owner's callbacks run the script, produce dead letters, store offsets and schedule the next step,
 * so this file is tested on its own (tests/unit/bindings/kafka/batch.c). It only reads the public fields of the
 * messages (partition, offset, key, payload), never calls librdkafka on them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/log.h"
#include "../../core/loop.h"
#include "batch.h"

static void count(sk_counter_t *c, uint64_t n)
{
    if (c != NULL)
        sk_counter_add(c, n);
}

void sk_kafka_batch_init(sk_kafka_batch_t *b, const sk_kafka_batch_callbacks_t *cb, const sk_kafka_batch_settings_t *settings,
                         void *data)
{
    *b = (sk_kafka_batch_t){.cb = cb, .settings = *settings, .data = data, .ring_cap = 16};
    if (b->settings.batch_size == 0)
        b->settings.batch_size = 1;
    b->ring = malloc(b->ring_cap * sizeof(*b->ring));
}

/* ===== pending ring ===== */

rd_kafka_message_t *sk_kafka_batch_at(const sk_kafka_batch_t *b, size_t i)
{
    return b->ring[(b->head + i) % b->ring_cap].m;
}

void sk_kafka_batch_push(sk_kafka_batch_t *b, rd_kafka_message_t *m, int64_t timestamp)
{
    if (b->count == b->ring_cap) {
        size_t cap = b->ring_cap * 2;
        struct st_sk_kafka_batch_entry_t *ring = malloc(cap * sizeof(*ring));
        for (size_t i = 0; i != b->count; ++i)
            ring[i] = b->ring[(b->head + i) % b->ring_cap];
        free(b->ring);
        b->ring = ring;
        b->ring_cap = cap;
        b->head = 0;
    }
    b->ring[(b->head + b->count++) % b->ring_cap] = (struct st_sk_kafka_batch_entry_t){m, timestamp};
    if (timestamp > 0 && (b->oldest == 0 || timestamp < b->oldest))
        b->oldest = timestamp;
}

/* destroys the first n pending messages */
static void pop(sk_kafka_batch_t *b, size_t n)
{
    for (size_t i = 0; i != n; ++i) {
        b->cb->destroy(sk_kafka_batch_at(b, 0));
        b->head = (b->head + 1) % b->ring_cap;
        --b->count;
    }
    if (n != 0)
        b->oldest_dirty = 1;
}

static int is_revoked(const sk_kafka_batch_t *b, const rd_kafka_message_t *m, const rd_kafka_topic_partition_list_t *revoked)
{
    if (revoked == NULL)
        return 1;
    for (int i = 0; i != revoked->cnt; ++i)
        if (revoked->elems[i].partition == m->partition && strcmp(revoked->elems[i].topic, b->settings.topic) == 0)
            return 1;
    return 0;
}

/* keeps the first `keep` messages and those of partitions not revoked (for incremental revokes) */
static void drop_revoked(sk_kafka_batch_t *b, size_t keep, const rd_kafka_topic_partition_list_t *revoked)
{
    size_t n = b->count, kept = 0;
    struct st_sk_kafka_batch_entry_t *tmp = malloc((n + 1) * sizeof(*tmp));
    for (size_t i = 0; i != n; ++i) {
        struct st_sk_kafka_batch_entry_t e = b->ring[(b->head + i) % b->ring_cap];
        if (i >= keep && is_revoked(b, e.m, revoked))
            b->cb->destroy(e.m);
        else
            tmp[kept++] = e;
    }
    memcpy(b->ring, tmp, kept * sizeof(*tmp));
    free(tmp);
    b->head = 0;
    b->count = kept;
    b->oldest_dirty = 1;
}

int64_t sk_kafka_batch_oldest(sk_kafka_batch_t *b)
{
    if (b->oldest_dirty) {
        int64_t oldest = 0;
        for (size_t i = 0; i != b->count; ++i) {
            int64_t ts = b->ring[(b->head + i) % b->ring_cap].timestamp;
            if (ts > 0 && (oldest == 0 || ts < oldest))
                oldest = ts;
        }
        b->oldest = oldest;
        b->oldest_dirty = 0;
    }
    return b->oldest;
}

void sk_kafka_batch_dispose(sk_kafka_batch_t *b)
{
    pop(b, b->count);
    free(b->ring);
    b->ring = NULL;
}

/* ===== offsets and retries ===== */

/* stores offset+1 of the first n pending messages (highest per partition wins since they are in order) */
static void store_offsets(sk_kafka_batch_t *b, size_t n)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i != n; ++i) {
        rd_kafka_message_t *m = sk_kafka_batch_at(b, i);
        rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(list, b->settings.topic, m->partition);
        if (p == NULL)
            p = rd_kafka_topic_partition_list_add(list, b->settings.topic, m->partition);
        p->offset = m->offset + 1;
    }
    b->cb->store(b, list);
    rd_kafka_topic_partition_list_destroy(list);
}

/* the next attempt after a backoff: backoff_ms doubling per consecutive failure, capped */
static void retry_later(sk_kafka_batch_t *b)
{
    count(b->metrics.retries, 1);
    unsigned shift = b->consecutive_failures < 16 ? b->consecutive_failures : 16;
    uint64_t delay = (uint64_t)b->settings.backoff_ms << (shift > 0 ? shift - 1 : 0);
    if (delay > b->settings.backoff_max_ms)
        delay = b->settings.backoff_max_ms;
    b->cb->schedule(b, delay);
}

/* the head batch of n messages succeeded (or was dead-lettered, n = 1): store, pop, leave any retry state */
static void succeeded(sk_kafka_batch_t *b, size_t n)
{
    if (b->stalled)
        sk_info("kafka consumer: resumed after a stall of %.1f s (%u attempts)", (sk_now_ms() - b->stalled_since) / 1000.0,
                b->consecutive_failures);
    store_offsets(b, n);
    pop(b, n);
    b->head_failures = 0;
    b->dead_letter_now = 0;
    b->consecutive_failures = 0;
    b->stalled = 0;
    b->retry_n = 0;
    b->split_remaining = b->split_remaining > n ? b->split_remaining - n : 0;
}

/* ===== batches ===== */

static const char *outcome_name(sk_kafka_batch_outcome_t outcome)
{
    return outcome == SK_KAFKA_BATCH_TRANSIENT ? "transient" : outcome == SK_KAFKA_BATCH_PERMANENT ? "permanent" : "raised";
}

void sk_kafka_batch_done(sk_kafka_batch_t *b, sk_kafka_batch_outcome_t outcome, const char *error)
{
    size_t n = b->in_flight;
    b->in_flight = 0;
    if (outcome != SK_KAFKA_BATCH_OK)
        snprintf(b->last_error, sizeof(b->last_error), "%s", error != NULL ? error : "");
    if (b->batch_gen != b->assign_gen) {
        /* partitions were revoked while the script ran: keep what succeeded, drop the rest (the new owner redoes it) */
        if (outcome == SK_KAFKA_BATCH_OK)
            store_offsets(b, n);
        pop(b, n);
        b->retry_n = 0;
        b->stalled = 0;
        b->cb->schedule(b, 0);
        return;
    }
    if (outcome == SK_KAFKA_BATCH_OK) {
        count(b->metrics.batches_ok, 1);
        count(b->metrics.messages, n);
        succeeded(b, n);
        b->cb->schedule(b, 0);
        return;
    }
    count(b->metrics.batches_failed, 1);
    ++b->consecutive_failures;
    rd_kafka_message_t *m = sk_kafka_batch_at(b, 0);
    if (outcome == SK_KAFKA_BATCH_TRANSIENT) {
        if (!b->stalled) {
            b->stalled = 1;
            b->stalled_since = sk_now_ms();
        }
        b->retry_n = n;
        /* every one of the first 10 attempts, then one in 10: an outage of minutes must not flood the log */
        if (b->consecutive_failures <= 10 || b->consecutive_failures % 10 == 0)
            sk_warn("kafka consumer: batch of %zu from %s[%d]@%lld failed transiently (attempt %u, stalled %.1f s), "
                    "retrying the same batch: %s",
                    n, b->settings.topic, (int)m->partition, (long long)m->offset, b->consecutive_failures,
                    (sk_now_ms() - b->stalled_since) / 1000.0, b->last_error);
        retry_later(b);
        return;
    }
    b->stalled = 0;
    b->retry_n = 0;
    sk_warn("kafka consumer: batch of %zu from %s[%d]@%lld failed (%s, %u consecutive): %s", n, b->settings.topic,
            (int)m->partition, (long long)m->offset, outcome_name(outcome), b->consecutive_failures, b->last_error);
    if (n > 1)
        b->split_remaining = n;
    if (outcome == SK_KAFKA_BATCH_PERMANENT) {
        /* a batch is split at once; a single message is dead-lettered at once */
        if (n == 1)
            b->dead_letter_now = 1;
        b->cb->schedule(b, 0);
        return;
    }
    if (n == 1)
        ++b->head_failures;
    retry_later(b);
}

/* ===== dead letters ===== */

void sk_kafka_batch_dead_lettered(sk_kafka_batch_t *b, rd_kafka_message_t *m, rd_kafka_resp_err_t err, int32_t partition,
                                  int64_t offset)
{
    b->dlq_in_flight = 0;
    if (b->count == 0 || sk_kafka_batch_at(b, 0) != m) {
        b->cb->schedule(b, 0); /* revoked meanwhile */
        return;
    }
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        sk_error("kafka consumer: cannot dead-letter %s[%d]@%lld to %s: %s; retrying", b->settings.topic, (int)m->partition,
                 (long long)m->offset, b->settings.dlq_topic, rd_kafka_err2str(err));
        ++b->consecutive_failures;
        retry_later(b);
        return;
    }
    count(b->metrics.dead_lettered, 1);
    if (b->dead_letter_now)
        sk_error("kafka consumer: %s[%d]@%lld rejected by consumer.lua, moved to %s[%d]@%lld: %s", b->settings.topic,
                 (int)m->partition, (long long)m->offset, b->settings.dlq_topic, (int)partition, (long long)offset, b->last_error);
    else
        sk_error("kafka consumer: %s[%d]@%lld failed %u times, moved to %s[%d]@%lld: %s", b->settings.topic, (int)m->partition,
                 (long long)m->offset, b->head_failures, b->settings.dlq_topic, (int)partition, (long long)offset, b->last_error);
    succeeded(b, 1);
    b->cb->schedule(b, 0);
}

static void dead_letter(sk_kafka_batch_t *b)
{
    b->dlq_in_flight = 1;
    rd_kafka_resp_err_t err = b->cb->dead_letter(b, sk_kafka_batch_at(b, 0), b->last_error);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        b->dlq_in_flight = 0;
        sk_error("kafka consumer: cannot dead-letter to %s: %s; retrying", b->settings.dlq_topic, rd_kafka_err2str(err));
        ++b->consecutive_failures;
        retry_later(b);
    }
}

/* ===== the next step ===== */

void sk_kafka_batch_next(sk_kafka_batch_t *b)
{
    if (b->in_flight != 0 || b->dlq_in_flight || b->count == 0)
        return;
    if (b->dead_letter_now || b->head_failures >= b->settings.max_failures) {
        dead_letter(b);
        return;
    }
    size_t n = b->retry_n != 0                     ? b->retry_n
               : b->split_remaining != 0           ? 1
               : b->count < b->settings.batch_size ? b->count
                                                   : b->settings.batch_size;
    if (n > b->count)
        n = b->count;
    b->in_flight = n;
    b->batch_gen = b->assign_gen;
    b->cb->run(b, n);
}

void sk_kafka_batch_revoke(sk_kafka_batch_t *b, const rd_kafka_topic_partition_list_t *revoked)
{
    ++b->assign_gen;
    /* the batch in flight (or the message being dead-lettered) stays until its completion */
    drop_revoked(b, b->in_flight + (b->dlq_in_flight ? 1 : 0), revoked);
    b->split_remaining = 0;
    b->retry_n = 0;
    b->head_failures = 0;
    b->dead_letter_now = 0;
    b->stalled = 0;
    if (b->count == 0)
        b->consecutive_failures = 0;
}

const char *sk_kafka_batch_state(const sk_kafka_batch_t *b)
{
    if (b->count == 0 && !sk_kafka_batch_busy(b))
        return "idle";
    if (b->stalled)
        return "stalled";
    if (b->consecutive_failures != 0 || b->split_remaining != 0 || b->head_failures != 0 || b->dead_letter_now)
        return "retrying";
    return "ok";
}
