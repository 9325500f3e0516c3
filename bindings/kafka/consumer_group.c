/*
 * consumer_group.c: staying in the consumer group without ever blocking the loop: pausing and resuming the assigned
 * partitions (back-pressure: we never stop polling, see consumer.c) and serving rebalances.
 *
 * On an assignment the new partitions get the pause state we want (an application pause outlives an unassignment in
 * librdkafka). On a revoke the pending messages of the revoked partitions are dropped (batch.c keeps the batch in
 * flight until its completion) and their next owner fetches them again from the committed offset: librdkafka's
 * auto-commit commits the stored offsets of the revoked partitions as they are unassigned.
 */
#include <stdio.h>
#include <string.h>
#include "../../core/log.h"
#include "../../core/metrics.h"
#include "consumer_internal.h"

/* the group's own state (consumer thread) */
static struct {
    int paused; /* the assigned partitions are paused (pending full, or a batch being retried) */
    sk_counter_t *pauses;
} group;

void sk_kafka_group_init(void)
{
    group.pauses = sk_metrics_counter("seckilld_kafka_consumer_pauses_total",
                                      "times the assigned partitions were paused (pending full, or a batch retried)", "");
}

/* ===== pausing ===== */

/* pauses or resumes `parts` (the assignment we track). rd_kafka_pause_partitions waits for the partitions' librdkafka
 * threads to take the request: a local hand-over, no network round trip. */
static void pause_resume(rd_kafka_topic_partition_list_t *parts, int pause)
{
    if (parts->cnt == 0)
        return;
    rd_kafka_resp_err_t err =
        pause ? rd_kafka_pause_partitions(sk_kafka_consumer.rk, parts) : rd_kafka_resume_partitions(sk_kafka_consumer.rk, parts);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        sk_warn("kafka consumer: %s: %s", pause ? "pause" : "resume", rd_kafka_err2str(err));
}

static void set_paused(int pause)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(16);
    sk_kafka_status_assigned(parts);
    pause_resume(parts, pause);
    sk_debug("kafka consumer: %s %d partitions (%zu pending%s)", pause ? "paused" : "resumed", parts->cnt,
             sk_kafka_consumer.batch.count, sk_kafka_consumer.batch.consecutive_failures ? ", retrying" : "");
    rd_kafka_topic_partition_list_destroy(parts);
    group.paused = pause;
    if (pause)
        sk_counter_inc(group.pauses);
}

void sk_kafka_group_update(void)
{
    size_t count = sk_kafka_consumer.batch.count, max = sk_kafka_consumer.max_pending;
    int retrying = sk_kafka_batch_retrying(&sk_kafka_consumer.batch);
    int pause = count != 0 && (retrying || count >= max || (group.paused && count > max / 2));
    if (pause != group.paused && sk_kafka_consumer.rk != NULL)
        set_paused(pause);
    sk_kafka_status_publish(&sk_kafka_consumer.batch);
}

/* served inside rd_kafka_consumer_poll (or rd_kafka_consumer_close), on the consumer thread */
void sk_kafka_group_on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    (void)opaque;
    int incremental = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    char desc[1024] = "";
    for (int i = 0; i != parts->cnt && strlen(desc) < sizeof(desc) - 32; ++i)
        snprintf(desc + strlen(desc), sizeof(desc) - strlen(desc), "%s%d", i ? "," : "", (int)parts->elems[i].partition);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        sk_info("kafka consumer: assigned partitions [%s]", desc);
        sk_kafka_status_set_assigned(parts, 1);
        if (incremental)
            rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
        /* an application pause outlives an unassignment in librdkafka: set the state we want either way */
        pause_resume(parts, group.paused);
    } else {
        /* librdkafka commits the stored offsets of revoked partitions (auto-commit) as they are unassigned; messages
         * not yet processed are dropped and will be fetched again by the partitions' next owner */
        sk_info("kafka consumer: revoked partitions [%s]", desc);
        sk_kafka_batch_revoke(&sk_kafka_consumer.batch, incremental ? parts : NULL);
        sk_kafka_status_set_assigned(parts, 0);
        if (incremental)
            rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
    }
}
