/*
 * err.c: the Kafka family's error values (err.h).
 */
#include "err.h"

const char sk_kafka_err_queue_full[] = "queue full";
const char sk_kafka_err_timed_out[] = "timed out";
const char sk_kafka_err_unknown_topic[] = "unknown topic";
const char sk_kafka_err_unknown_partition[] = "unknown partition";
const char sk_kafka_err_message_too_large[] = "message too large";
const char sk_kafka_err_producer_failed[] = "producer failed";
const char sk_kafka_err_not_configured[] = "kafka not configured";
const char sk_kafka_err_no_loop[] = "no event loop on this thread";
const char sk_kafka_err_no_such_broker[] = "no such broker";
const char sk_kafka_err_refused[] = "produce refused";

/* the constant for a code the family names, else NULL */
static const char *named(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
        return sk_kafka_err_queue_full;
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
        return sk_kafka_err_timed_out;
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
        return sk_kafka_err_unknown_topic;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
        return sk_kafka_err_message_too_large;
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
        return sk_kafka_err_unknown_partition;
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
    case RD_KAFKA_RESP_ERR__FATAL:
        return sk_kafka_err_producer_failed;
    case RD_KAFKA_RESP_ERR__STATE: /* sk_kafka_produce without a producer */
        return sk_kafka_err_not_configured;
    case RD_KAFKA_RESP_ERR__INVALID_ARG: /* sk_kafka_produce from a thread with no loop */
        return sk_kafka_err_no_loop;
    default:
        return NULL;
    }
}

const char *sk_kafka_strerror(rd_kafka_resp_err_t err)
{
    const char *s = named(err);
    return s != NULL ? s : rd_kafka_err2str(err);
}

const char *sk_kafka_err_of(rd_kafka_resp_err_t err)
{
    const char *s = named(err);
    return s != NULL ? s : sk_kafka_err_refused;
}
