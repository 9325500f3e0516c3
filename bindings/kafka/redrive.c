/*
 * redrive.c: `seckilld --redrive-dlq`: dead letters back to the orders topic, each exactly once across runs.
 *
 * A command, not a server: it runs on the main thread with blocking librdkafka calls (metadata, flush, commit) and
 * exits. The consumer uses assign(), not subscribe(): a redrive reads every partition of the dead-letter topic and
 * must not wait for a group to form; its group id only names where the committed offsets live.
 *
 * It works in chunks of up to CHUNK messages: read (up to the end of every partition), produce each, flush, then
 * commit per partition the offset after the last message whose delivery succeeded with all before it. A failed
 * delivery ends the run with status 1 after committing what precedes it.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <librdkafka/rdkafka.h>
#include "../../core/log.h"
#include "../../core/loop.h"
#include "producer.h"
#include "redrive.h"

#define CHUNK 10000

/* one message read from the dead-letter topic in the current chunk */
struct record {
    int32_t partition;
    int64_t offset;
    int status; /* 0 in flight, 1 delivered, -1 failed */
};

static struct {
    rd_kafka_t *consumer, *producer;
    const char *topic, *dlq, *group;
    struct record *records;
    size_t nrecords;
    unsigned long redriven;
    int failed;
} rd;

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    if (level <= 3)
        sk_error("kafka redrive: %s: %s", fac, buf);
    else if (level == 4)
        sk_warn("kafka redrive: %s: %s", fac, buf);
    else
        sk_debug("kafka redrive: %s: %s", fac, buf);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk, (void)opaque;
    struct record *r = &rd.records[(uintptr_t)m->_private];
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        r->status = 1;
        sk_debug("kafka redrive: %s[%d]@%lld -> %s[%d]@%lld", rd.dlq, (int)r->partition, (long long)r->offset, rd.topic,
                 (int)m->partition, (long long)m->offset);
    } else {
        r->status = -1;
        sk_error("kafka redrive: %s[%d]@%lld not delivered to %s: %s", rd.dlq, (int)r->partition, (long long)r->offset, rd.topic,
                 rd_kafka_err2str(m->err));
    }
}

static rd_kafka_t *create(rd_kafka_type_t type, sk_config_t *cfg, const char *brokers)
{
    char errstr[512];
    const char *who = type == RD_KAFKA_PRODUCER ? "kafka redrive producer" : "kafka redrive consumer";
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int bad = sk_kafka_conf_set(conf, who, "bootstrap.servers", brokers) != 0 ||
              sk_kafka_conf_set(conf, who, "client.id", "seckilld-redrive") != 0;
    if (type == RD_KAFKA_PRODUCER) {
        bad = bad || sk_kafka_conf_set(conf, who, "enable.idempotence", "true") != 0 ||
              sk_kafka_conf_set(conf, who, "acks", "all") != 0 || sk_kafka_conf_apply(conf, cfg, "kafka.producer") != 0;
        rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    } else {
        /* the passthrough first: exactly-once across runs depends on what follows */
        bad = bad || sk_kafka_conf_apply(conf, cfg, "kafka.consumer") != 0 ||
              sk_kafka_conf_set(conf, who, "group.id", rd.group) != 0 ||
              sk_kafka_conf_set(conf, who, "enable.auto.commit", "false") != 0 ||
              sk_kafka_conf_set(conf, who, "enable.auto.offset.store", "false") != 0 ||
              sk_kafka_conf_set(conf, who, "auto.offset.reset", "earliest") != 0 ||
              sk_kafka_conf_set(conf, who, "enable.partition.eof", "true") != 0;
    }
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_t *rk = bad ? NULL : rd_kafka_new(type, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        if (!bad)
            sk_error("%s: %s", who, errstr);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* assigns every partition of the dead-letter topic at its committed offset; returns the partition count (0: no such
 * topic, nothing to do) or -1 */
static int assign_all(void)
{
    const struct rd_kafka_metadata *md;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rd.consumer, rd.dlq, NULL);
    rd_kafka_resp_err_t err = rd_kafka_metadata(rd.consumer, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        sk_error("kafka redrive: metadata of %s: %s", rd.dlq, rd_kafka_err2str(err));
        return -1;
    }
    int n = md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR ? md->topics[0].partition_cnt : 0;
    if (md->topic_cnt == 1 && md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR)
        sk_info("kafka redrive: %s: %s", rd.dlq, rd_kafka_err2str(md->topics[0].err));
    rd_kafka_metadata_destroy(md);
    if (n == 0)
        return 0;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p != n; ++p)
        rd_kafka_topic_partition_list_add(parts, rd.dlq, p)->offset = RD_KAFKA_OFFSET_STORED;
    err = rd_kafka_assign(rd.consumer, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        sk_error("kafka redrive: assign %s: %s", rd.dlq, rd_kafka_err2str(err));
        return -1;
    }
    return n;
}

static int is_dead_letter_header(const char *name)
{
    return strcmp(name, "error") == 0 || strncmp(name, "original.", 9) == 0 || strcmp(name, "redriven-from") == 0;
}

/* produces one dead letter back to the orders topic; returns 0 or -1 */
static int redrive_one(const rd_kafka_message_t *m)
{
    char from[48];
    rd_kafka_headers_t *own, *hdrs = rd_kafka_headers_new(8);
    if (rd_kafka_message_headers(m, &own) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *value;
        size_t size;
        for (size_t i = 0; rd_kafka_header_get_all(own, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i)
            if (!is_dead_letter_header(name))
                rd_kafka_header_add(hdrs, name, -1, value, value != NULL ? (ssize_t)size : 0);
    }
    snprintf(from, sizeof(from), "%d:%lld", (int)m->partition, (long long)m->offset);
    rd_kafka_header_add(hdrs, "redriven-from", -1, from, -1);
    rd.records[rd.nrecords] = (struct record){.partition = m->partition, .offset = m->offset};
    size_t keylen = m->key != NULL ? m->key_len : 0;
    for (;;) {
        rd_kafka_resp_err_t err =
            rd_kafka_producev(rd.producer, RD_KAFKA_V_TOPIC(rd.topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_VALUE(m->payload, m->len), RD_KAFKA_V_KEY(m->key, keylen), RD_KAFKA_V_HEADERS(hdrs),
                              RD_KAFKA_V_OPAQUE((void *)(uintptr_t)rd.nrecords), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
            break;
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_headers_destroy(hdrs);
            sk_error("kafka redrive: produce to %s: %s", rd.topic, rd_kafka_err2str(err));
            return -1;
        }
        rd_kafka_poll(rd.producer, 100);
    }
    ++rd.nrecords;
    return 0;
}

/* waits for the chunk's deliveries, commits what was delivered (per partition, up to the first failure), and counts */
static int finish_chunk(unsigned flush_timeout_ms)
{
    if (rd.nrecords == 0)
        return 0;
    rd_kafka_flush(rd.producer, flush_timeout_ms);
    rd_kafka_topic_partition_list_t *commit = rd_kafka_topic_partition_list_new(8), *blocked = rd_kafka_topic_partition_list_new(8);
    unsigned long delivered = 0;
    for (size_t i = 0; i != rd.nrecords; ++i) {
        struct record *r = &rd.records[i];
        if (rd_kafka_topic_partition_list_find(blocked, rd.dlq, r->partition) != NULL)
            continue;
        if (r->status != 1) {
            if (r->status == 0)
                sk_error("kafka redrive: %s[%d]@%lld not delivered within %u ms", rd.dlq, (int)r->partition, (long long)r->offset,
                         flush_timeout_ms);
            rd_kafka_topic_partition_list_add(blocked, rd.dlq, r->partition);
            rd.failed = 1;
            continue;
        }
        rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(commit, rd.dlq, r->partition);
        if (p == NULL)
            p = rd_kafka_topic_partition_list_add(commit, rd.dlq, r->partition);
        p->offset = r->offset + 1;
        ++delivered;
    }
    rd_kafka_topic_partition_list_destroy(blocked);
    rd_kafka_resp_err_t err = commit->cnt != 0 ? rd_kafka_commit(rd.consumer, commit, 0) : RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_topic_partition_list_destroy(commit);
    rd.nrecords = 0;
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        sk_error("kafka redrive: commit of group %s: %s (the last %lu messages will be redriven again)", rd.group,
                 rd_kafka_err2str(err), delivered);
        return -1;
    }
    rd.redriven += delivered;
    return rd.failed ? -1 : 0;
}

/* reads every partition to its end, redriving as it goes; returns 0 or -1 */
static int run(int npartitions, unsigned timeout_ms, unsigned flush_timeout_ms)
{
    char *eof = calloc((size_t)npartitions, 1);
    int neof = 0, ret = 0;
    uint64_t deadline = sk_now_ms() + timeout_ms;
    while (neof < npartitions) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rd.consumer, 200);
        rd_kafka_poll(rd.producer, 0);
        if (m == NULL) {
            if (sk_now_ms() >= deadline) {
                sk_error("kafka redrive: %d of %d partitions of %s not read to their end within %u ms", npartitions - neof,
                         npartitions, rd.dlq, timeout_ms);
                ret = -1;
                break;
            }
            continue;
        }
        deadline = sk_now_ms() + timeout_ms;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (m->partition >= 0 && m->partition < npartitions && !eof[m->partition]) {
                eof[m->partition] = 1;
                ++neof;
            }
        } else if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            sk_error("kafka redrive: %s", rd_kafka_message_errstr(m));
            ret = -1;
        } else if (redrive_one(m) != 0 || (rd.nrecords == CHUNK && finish_chunk(flush_timeout_ms) != 0)) {
            ret = -1;
        }
        rd_kafka_message_destroy(m);
        if (ret != 0)
            break;
    }
    free(eof);
    if (finish_chunk(flush_timeout_ms) != 0)
        ret = -1;
    return ret;
}

int sk_kafka_redrive_main(sk_config_t *cfg)
{
    char group[512];
    const char *brokers = sk_config_string(cfg, "kafka.brokers");
    if (brokers == NULL || *brokers == '\0') {
        sk_error("--redrive-dlq: kafka.brokers (SECKILLD_KAFKA) is not configured");
        return 1;
    }
    if (strcmp(brokers, "embedded") == 0) {
        sk_error("--redrive-dlq: kafka.brokers is \"embedded\": the mock cluster lives inside the server process, out of "
                 "reach of this command; redrive needs a real cluster (or a standalone --kafka-mock)");
        return 1;
    }
    char dlq[512];
    rd.topic = sk_config_string(cfg, "kafka.topic");
    snprintf(dlq, sizeof(dlq), "%s.dlq", rd.topic);
    rd.dlq = sk_config_isset(cfg, "kafka.dead_letter_topic") ? sk_config_string(cfg, "kafka.dead_letter_topic") : dlq;
    snprintf(group, sizeof(group), "%s.redrive", sk_config_string(cfg, "kafka.group"));
    rd.group = group;
    unsigned timeout_ms = (unsigned)sk_config_int(cfg, "kafka.redrive_timeout_ms");
    unsigned flush_timeout_ms = (unsigned)sk_config_int(cfg, "kafka.flush_timeout_ms");
    rd.records = malloc(CHUNK * sizeof(*rd.records));

    int ret = -1, n;
    if ((rd.producer = create(RD_KAFKA_PRODUCER, cfg, brokers)) == NULL ||
        (rd.consumer = create(RD_KAFKA_CONSUMER, cfg, brokers)) == NULL)
        goto Exit;
    if ((n = assign_all()) < 0)
        goto Exit;
    sk_info("kafka redrive: %s (%d partitions) -> %s, progress in group %s", rd.dlq, n, rd.topic, rd.group);
    ret = n == 0 ? 0 : run(n, timeout_ms, flush_timeout_ms);

Exit:
    if (rd.consumer != NULL) {
        rd_kafka_consumer_close(rd.consumer);
        rd_kafka_destroy(rd.consumer);
    }
    if (rd.producer != NULL) {
        rd_kafka_flush(rd.producer, flush_timeout_ms);
        rd_kafka_destroy(rd.producer);
    }
    free(rd.records);
    if (ret == 0)
        printf("redriven %lu\n", rd.redriven);
    else
        sk_error("--redrive-dlq failed after redriving %lu messages", rd.redriven);
    return ret == 0 ? 0 : 1;
}
