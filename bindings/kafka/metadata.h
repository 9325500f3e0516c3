/*
 * metadata.h: the partition count of every topic (kafka.partitions), kept from the producer's last metadata and
 * refreshed by a thread of its own (metadata.c). It knows no producer: its owner (producer.c) hands it the metadata it
 * fetched, and gives the thread the function that fetches. No Lua.
 */
#ifndef SK_KAFKA_METADATA_H
#define SK_KAFKA_METADATA_H

#include <librdkafka/rdkafka.h>

/** fetches the cluster's metadata, blocking up to timeout_ms, and hands it to sk_kafka_metadata_keep */
typedef void (*sk_kafka_metadata_fetch_cb)(int timeout_ms);

/** keeps the partition counts of md's topics (those without an error), replacing every count kept; any thread */
void sk_kafka_metadata_keep(const struct rd_kafka_metadata *md);
/** the partition count of `topic` from the last metadata kept (the producer's at start-up, then the thread's every
 * 30 s and within a second of a miss), or -1 when unknown (no such topic yet, Kafka not configured). Any thread;
 * never blocks on the network. */
int sk_kafka_metadata_partition_count(const char *topic);
/** starts the thread that calls fetch every 30 s, and within a second of a miss (at most once a second). Main thread,
 * once, before any lookup. Returns 0 or -1 after logging. */
int sk_kafka_metadata_start(sk_kafka_metadata_fetch_cb fetch);
/** stops the thread (waiting out the fetch in progress) if it was started, and forgets the counts. Main thread. */
void sk_kafka_metadata_stop(void);

#endif
