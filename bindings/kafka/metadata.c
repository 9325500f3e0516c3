/*
 * metadata.c: the partition counts by topic, and the thread that keeps them fresh. A metadata request blocks, so it
 * runs on neither a loop nor the producer's poller (which must stay free to hand out delivery reports): the counts'
 * own thread asks every SK_KAFKA_METADATA_REFRESH_MS, or within a second of a lookup that missed.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../../core/log.h"
#include "metadata.h"

/* the partition counts are refreshed this often (and within a second when a lookup missed), by their own thread */
#define SK_KAFKA_METADATA_REFRESH_MS 30000

struct topic_count {
    char *name;
    int partitions;
};

static struct {
    /* partition counts by topic from the last metadata; replaced whole by whoever fetched it, read by any thread.
     * mutex also guards the thread's flags, and cond wakes it. */
    pthread_mutex_t mutex;
    pthread_cond_t cond; /* initialized by sk_kafka_metadata_start */
    struct topic_count *topics;
    int ntopics;
    int refresh_wanted, stopping, started;
    pthread_t thread;
    sk_kafka_metadata_fetch_cb fetch;
} metadata = {.mutex = PTHREAD_MUTEX_INITIALIZER};

static void free_topics(struct topic_count *topics, int n)
{
    for (int i = 0; i != n; ++i)
        free(topics[i].name);
    free(topics);
}

void sk_kafka_metadata_keep(const struct rd_kafka_metadata *md)
{
    struct topic_count *topics = calloc(md->topic_cnt > 0 ? md->topic_cnt : 1, sizeof(*topics));
    int n = 0;
    for (int i = 0; i != md->topic_cnt; ++i) {
        if (md->topics[i].err != RD_KAFKA_RESP_ERR_NO_ERROR || md->topics[i].partition_cnt <= 0)
            continue;
        topics[n].name = strdup(md->topics[i].topic);
        topics[n++].partitions = md->topics[i].partition_cnt;
    }
    pthread_mutex_lock(&metadata.mutex);
    struct topic_count *old = metadata.topics;
    int nold = metadata.ntopics;
    metadata.topics = topics;
    metadata.ntopics = n;
    pthread_mutex_unlock(&metadata.mutex);
    free_topics(old, nold);
}

int sk_kafka_metadata_partition_count(const char *topic)
{
    int n = -1;
    pthread_mutex_lock(&metadata.mutex);
    for (int i = 0; i != metadata.ntopics; ++i)
        if (strcmp(metadata.topics[i].name, topic) == 0) {
            n = metadata.topics[i].partitions;
            break;
        }
    if (n < 0 && !metadata.refresh_wanted) {
        metadata.refresh_wanted = 1; /* the thread looks again within a second */
        if (metadata.started)
            pthread_cond_signal(&metadata.cond);
    }
    pthread_mutex_unlock(&metadata.mutex);
    return n;
}

/* waits (mutex held) for ms, or less if stopping or, with or_wanted, if a refresh is wanted */
static void wait_for(unsigned ms, int or_wanted)
{
    struct timespec at;
    clock_gettime(CLOCK_MONOTONIC, &at);
    at.tv_sec += ms / 1000;
    at.tv_nsec += (long)(ms % 1000) * 1000000;
    if (at.tv_nsec >= 1000000000) {
        at.tv_sec += 1;
        at.tv_nsec -= 1000000000;
    }
    while (!metadata.stopping && !(or_wanted && metadata.refresh_wanted))
        if (pthread_cond_timedwait(&metadata.cond, &metadata.mutex, &at) != 0)
            break;
}

static void *metadata_main(void *arg)
{
    (void)arg;
    sk_log_set_thread_name("kafka-metadata");
    pthread_mutex_lock(&metadata.mutex);
    for (;;) {
        wait_for(1000, 0); /* at most one request a second */
        wait_for(SK_KAFKA_METADATA_REFRESH_MS - 1000, 1);
        if (metadata.stopping)
            break;
        metadata.refresh_wanted = 0;
        pthread_mutex_unlock(&metadata.mutex);
        metadata.fetch(2000);
        pthread_mutex_lock(&metadata.mutex);
    }
    pthread_mutex_unlock(&metadata.mutex);
    return NULL;
}

int sk_kafka_metadata_start(sk_kafka_metadata_fetch_cb fetch)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&metadata.cond, &attr);
    pthread_condattr_destroy(&attr);
    metadata.fetch = fetch;
    pthread_mutex_lock(&metadata.mutex);
    int err = pthread_create(&metadata.thread, NULL, metadata_main, NULL);
    metadata.started = err == 0;
    pthread_mutex_unlock(&metadata.mutex);
    if (err != 0) {
        sk_error("kafka producer: cannot start the metadata thread");
        return -1;
    }
    return 0;
}

void sk_kafka_metadata_stop(void)
{
    pthread_mutex_lock(&metadata.mutex);
    int started = metadata.started;
    metadata.stopping = 1;
    if (started)
        pthread_cond_signal(&metadata.cond);
    pthread_mutex_unlock(&metadata.mutex);
    if (started)
        pthread_join(metadata.thread, NULL); /* at most the metadata request in progress (2 s) */
    pthread_mutex_lock(&metadata.mutex);
    free_topics(metadata.topics, metadata.ntopics);
    metadata.topics = NULL;
    metadata.ntopics = 0;
    pthread_mutex_unlock(&metadata.mutex);
}
