/*
 * err.h: the Kafka family's error values, the strings Lua sees after `nil` (stable), exported so that C compares them
 * by pointer (core/op.h).
 */
#ifndef SK_KAFKA_ERR_H
#define SK_KAFKA_ERR_H

#include <librdkafka/rdkafka.h>

extern const char sk_kafka_err_queue_full[];        /* "queue full": librdkafka's queue is full, answered at once */
extern const char sk_kafka_err_timed_out[];         /* "timed out": not delivered within message.timeout.ms */
extern const char sk_kafka_err_unknown_topic[];     /* "unknown topic" */
extern const char sk_kafka_err_unknown_partition[]; /* "unknown partition": the topic has fewer partitions */
extern const char sk_kafka_err_message_too_large[]; /* "message too large" */
extern const char sk_kafka_err_producer_failed[];   /* "producer failed": purged, or a fatal producer error */
extern const char sk_kafka_err_not_configured[];    /* "kafka not configured" */
extern const char sk_kafka_err_no_loop[];           /* "no event loop on this thread" */
extern const char sk_kafka_err_no_such_broker[];    /* "no such broker": kafka.mock_broker_down/up, an unknown id */
/* "produce refused": what a start (sk_kafka_produce) returns when librdkafka refused the message at once with a code
 * none of the above names; the start's code out-field says which, and Lua sees sk_kafka_strerror(code) */
extern const char sk_kafka_err_refused[];

/** the family's error value for a produce error: one of the sk_kafka_err_* above, or librdkafka's own text for any
 * other code (a static string either way) */
const char *sk_kafka_strerror(rd_kafka_resp_err_t err);
/** the same, but always one of the constants above: sk_kafka_err_refused for a code the family does not name (what a
 * start returns, core/op.h) */
const char *sk_kafka_err_of(rd_kafka_resp_err_t err);

#endif
