/*
 * conf.h: librdkafka properties from the configuration (kafka.producer, kafka.consumer tables), shared by the
 * producer, the consumer and --redrive-dlq.
 */
#ifndef SK_KAFKA_CONF_H
#define SK_KAFKA_CONF_H

#include <librdkafka/rdkafka.h>
#include "../../core/config.h"

/** sets one librdkafka property; `who` names the client in the log line ("kafka producer"). Returns 0, or -1 after
 * logging librdkafka's reason. */
int sk_kafka_conf_set(rd_kafka_conf_t *conf, const char *who, const char *key, const char *val);

/** applies the table at config `path` (e.g. "kafka.consumer") as librdkafka properties; values may be strings,
 * numbers or booleans. Main thread. Returns 0, or -1 after logging each bad entry. */
int sk_kafka_conf_apply(rd_kafka_conf_t *conf, sk_config_t *cfg, const char *path);

#endif
