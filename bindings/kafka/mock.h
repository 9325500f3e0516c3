/*
 * mock.h: librdkafka's in-process mock cluster, for `kafka.brokers = "embedded"` and for a standalone mock
 * process that several processes (seckilld instances, kcat) share in tests.
 *
 * The mock speaks the real Kafka protocol on loopback ports, so the producer and the consumer run unchanged against
 * it; but it keeps everything in memory: nothing survives the process. librdkafka 2.0.2 cannot choose the ports
 * (each broker binds 127.0.0.1:0), so the bootstrap string is only known once the cluster runs.
 */
#ifndef SK_KAFKA_MOCK_H
#define SK_KAFKA_MOCK_H

/** starts a mock cluster of `brokers` brokers and creates `topic` with `partitions` partitions and `dlq_topic` (may
 * be NULL) with as many. Returns the bootstrap string (owned by the mock, valid until sk_kafka_mock_stop) or NULL
 * after logging. One cluster per process. */
const char *sk_kafka_mock_start(int brokers, const char *topic, int partitions, const char *dlq_topic);
/** takes a broker (id 1..N) down (disconnects its clients, refuses connections; leadership stays) or back up.
 * Returns 0, or -1 if there is no mock or no such broker. Thread-safe. */
int sk_kafka_mock_broker_set_down(int id, int down);
/** a broker switch running on a thread of its own: librdkafka's mock commands wait for the mock thread's answer,
 * which no loop may do. sk_kafka_mock_switch_done says when it has ended (then its result), and
 * sk_kafka_mock_switch_release gives the handle back, at any time (a switch still running frees it when it ends). */
typedef struct st_sk_kafka_mock_switch_t sk_kafka_mock_switch_t;
/** starts taking broker `id` down (or up); NULL if there is no mock, no such broker, or no thread could start */
sk_kafka_mock_switch_t *sk_kafka_mock_switch_start(int id, int down);
/** 0 while it runs; 1 once it has ended, *ok then 1 if the broker was switched */
int sk_kafka_mock_switch_done(sk_kafka_mock_switch_t *sw, int *ok);
void sk_kafka_mock_switch_release(sk_kafka_mock_switch_t *sw);
/** destroys the cluster; everything in it is lost */
void sk_kafka_mock_stop(void);
/** at process exit: leaves the cluster running (its threads and memory end with the process) instead of destroying
 * it, which takes up to a second in librdkafka 2.0.2 (see mock.c); nothing may use it afterwards */
void sk_kafka_mock_abandon(void);

/**
 * The standalone mock (`seckilld --kafka-mock FILE`): starts a cluster (SECKILLD_KAFKA_MOCK_BROKERS brokers,
 * default 3; topic SECKILLD_TOPIC, default SK_KAFKA_DEFAULT_TOPIC (producer.h), with SECKILLD_KAFKA_PARTITIONS partitions, default
 * 6, plus "<topic>.dlq"), prints the bootstrap string as one line on stdout and writes it to FILE (unless FILE is "-"), then reads
 * commands from stdin, one a line: "down N", "up N", "topic NAME PARTITIONS"; each answered "ok" or "error". Runs until SIGINT or
 * SIGTERM. Returns the process exit status.
 */
int sk_kafka_mock_main(const char *bootstrap_file);

#endif
