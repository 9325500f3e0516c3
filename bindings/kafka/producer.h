/*
 * producer.h: the process-wide idempotent Kafka producer and the bridge that routes each delivery report
 * back to the loop thread that produced the message.
 *
 * librdkafka is thread-safe, so every worker (and the consumer thread, for dead letters) produces on one handle.
 * A dedicated poller thread blocks in rd_kafka_poll() and receives delivery reports; each report carries the
 * per-message opaque naming the sender's loop, and is handed to that loop through its h2o multithread queue, where
 * the completion callback runs. No Lua knowledge here: lua_module.c builds kafka.produce on top.
 */
#ifndef SK_KAFKA_PRODUCER_H
#define SK_KAFKA_PRODUCER_H

#include <librdkafka/rdkafka.h>
#include "../../core/config.h"
#include "../../core/loop.h"
#include "../../core/op.h"
#include "conf.h"
#include "err.h"

/** kafka.topic's default, declared once: the row's (lua_module.c) and the standalone mock's (mock.c, no config) */
#define SK_KAFKA_DEFAULT_TOPIC "seckill.orders"

/** the resolved Kafka settings shared by the producer, the consumer and the Lua module; filled by the binding's
 * init (lua_module.c) on the main thread before any other thread starts, read-only afterwards */
typedef struct st_sk_kafka_settings_t {
    /** bootstrap list actually used (the mock's when kafka.brokers is "embedded"); NULL when Kafka is not configured */
    char *bootstraps;
    /** kafka.topic, default SK_KAFKA_DEFAULT_TOPIC */
    char *topic;
    /** kafka.dead_letter_topic, default "<topic>.dlq" */
    char *dlq_topic;
    /** 1 when running against the in-process mock cluster */
    int embedded;
} sk_kafka_settings_t;

extern sk_kafka_settings_t sk_kafka_settings;

/** the result of one produce, as its completion callback sees it */
typedef struct st_sk_kafka_dr_t {
    /** RD_KAFKA_RESP_ERR_NO_ERROR on success */
    rd_kafka_resp_err_t err;
    int32_t partition;
    /** may be RD_KAFKA_OFFSET_INVALID under idempotence when the broker reported none (retried messages) */
    int64_t offset;
    /** 1 when the completion runs on the producing loop's thread (the normal case); 0 when that loop is gone
     * (shutdown) and it runs on the poller thread: it must then only free its op */
    int on_loop;
} sk_kafka_dr_t;

/** completion of sk_kafka_produce, in core/op.h's shape: op is the one the message was produced with; errstr is NULL
 * when delivered, else sk_kafka_strerror(dr->err) (one of the sk_kafka_err_* constants of err.h, compared by pointer,
 * or librdkafka's own static text for a code the family does not name) */
typedef void (*sk_kafka_dr_cb)(sk_op_t *op, const sk_kafka_dr_t *dr, const char *errstr);

/** creates the producer against `brokers` (a bootstrap list), applying the `kafka.producer` table as librdkafka
 * properties on top of enable.idempotence=true, acks=all, linger.ms=1. Main thread; may block (it waits up to 1 s for
 * the cluster's metadata: the health flag and the partition counts), and starts the poller and the metadata thread
 * (metadata.h). Returns 0 or -1 after logging. */
int sk_kafka_producer_init(sk_config_t *cfg, const char *brokers);
/** registers the calling loop as a delivery-report destination; called from thread_init on every loop thread */
void sk_kafka_producer_thread_init(sk_loop_t *loop);
/** unregisters the loop; reports arriving later are completed with on_loop=0 */
void sk_kafka_producer_thread_dispose(sk_loop_t *loop);
/** stops the poller and the metadata thread, flushes outstanding messages (up to kafka.flush_timeout_ms) and
 * destroys the producer. Main thread, after every loop thread ended. */
void sk_kafka_producer_shutdown(void);

/** 1 once sk_kafka_producer_init succeeded */
int sk_kafka_producer_enabled(void);

/**
 * Enqueues one message for op (payload, key and header values are copied) to `partition` of `topic`, or to the one
 * the partitioner picks from the key when it is RD_KAFKA_PARTITION_UA, in core/op.h's shape. Returns NULL when
 * enqueued: cb(op, dr, errstr) is called exactly once later, on the calling thread's loop (dr->on_loop = 0 if that
 * loop ended first), and `headers` (may be NULL) belongs to librdkafka. On failure (queue full, unknown topic, no
 * producer, calling thread has no loop...) returns the error at once, sk_kafka_err_of(*code): one of err.h's
 * constants (sk_kafka_err_refused for a code the family does not name); cb is never called and `headers` stays the
 * caller's. code (may be NULL) receives librdkafka's code: RD_KAFKA_RESP_ERR_NO_ERROR when enqueued, else the detail
 * behind the constant (for a log line, or sk_kafka_strerror(*code) as Lua shows it).
 */
const char *sk_kafka_produce(sk_op_t *op, const char *topic, int32_t partition, const void *value, size_t len, const void *key,
                             size_t keylen, rd_kafka_headers_t *headers, sk_kafka_dr_cb cb, rd_kafka_resp_err_t *code);

/** number of messages in librdkafka's queues not yet delivered (for the queue-depth gauge) */
int sk_kafka_producer_outq_len(void);

#endif
