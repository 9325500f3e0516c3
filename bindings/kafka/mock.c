/*
 * mock.c: the embedded / standalone librdkafka mock cluster.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include "../../core/log.h"
#include "mock.h"
#include "producer.h"

static struct {
    rd_kafka_t *rk; /* bookkeeping handle the cluster hangs off; it never connects anywhere */
    rd_kafka_mock_cluster_t *cluster;
    int brokers;
} mock;

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    if (level <= 3)
        sk_error("kafka mock: %s: %s", fac, buf);
}

/*
 * librdkafka 2.0.2's mock thread serves its command queue only when its poll() returns, and the wake-up of a command
 * queued soon after another one is lost: the command then waits for the poll's 1 s timeout (every fourth start took
 * a second longer, in the second topic's creation). A connection to a broker's listener ends that poll as well, so
 * while a command is pending a helper thread (never a loop thread: commands are only sent at start-up, from the
 * standalone mock's stdin reader and from the test routes' rare broker up/down) connects to the brokers every 5 ms.
 */
static struct {
    struct sockaddr_in addrs[16];
    int n;
} listeners;

static void remember_listeners(const char *bootstraps)
{
    listeners.n = 0;
    for (const char *p = bootstraps; p != NULL && *p != '\0' && listeners.n < 16;) {
        char host[64];
        unsigned port;
        if (sscanf(p, "%63[^:]:%u", host, &port) == 2) {
            struct sockaddr_in *a = &listeners.addrs[listeners.n];
            memset(a, 0, sizeof(*a));
            a->sin_family = AF_INET;
            a->sin_port = htons((unsigned short)port);
            if (inet_pton(AF_INET, host, &a->sin_addr) == 1)
                ++listeners.n;
        }
        p = strchr(p, ',');
        if (p != NULL)
            ++p;
    }
}

struct nudge_t {
    pthread_t tid;
    atomic_int done;
    int started;
};

static void *nudge_main(void *arg)
{
    struct nudge_t *nudge = arg;
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 5000000};
    nanosleep(&pause, NULL); /* most commands are served at once, without any help */
    while (!atomic_load(&nudge->done)) {
        for (int i = 0; i != listeners.n; ++i) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0)
                break;
            (void)connect(fd, (struct sockaddr *)&listeners.addrs[i], sizeof(listeners.addrs[i]));
            close(fd);
        }
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static void nudge_start(struct nudge_t *nudge)
{
    atomic_init(&nudge->done, 0);
    nudge->started = listeners.n != 0 && pthread_create(&nudge->tid, NULL, nudge_main, nudge) == 0;
}

static void nudge_stop(struct nudge_t *nudge)
{
    atomic_store(&nudge->done, 1);
    if (nudge->started)
        pthread_join(nudge->tid, NULL);
}

static int create_topic(const char *topic, int partitions)
{
    struct nudge_t nudge;
    nudge_start(&nudge);
    rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(mock.cluster, topic, partitions, mock.brokers < 3 ? mock.brokers : 3);
    nudge_stop(&nudge);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        sk_error("kafka mock: cannot create topic %s: %s", topic, rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

const char *sk_kafka_mock_start(int brokers, const char *topic, int partitions, const char *dlq_topic)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, on_log);
    if ((mock.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr))) == NULL) {
        rd_kafka_conf_destroy(conf);
        sk_error("kafka mock: %s", errstr);
        return NULL;
    }
    if ((mock.cluster = rd_kafka_mock_cluster_new(mock.rk, brokers)) == NULL) {
        sk_error("kafka mock: cannot create the mock cluster");
        rd_kafka_destroy(mock.rk);
        mock.rk = NULL;
        return NULL;
    }
    mock.brokers = brokers;
    remember_listeners(rd_kafka_mock_cluster_bootstraps(mock.cluster));
    if (create_topic(topic, partitions) != 0 || (dlq_topic != NULL && create_topic(dlq_topic, partitions) != 0)) {
        sk_kafka_mock_stop();
        return NULL;
    }
    return rd_kafka_mock_cluster_bootstraps(mock.cluster);
}

int sk_kafka_mock_broker_set_down(int id, int down)
{
    if (mock.cluster == NULL || id < 1 || id > mock.brokers)
        return -1;
    struct nudge_t nudge;
    nudge_start(&nudge);
    rd_kafka_resp_err_t err =
        down ? rd_kafka_mock_broker_set_down(mock.cluster, id) : rd_kafka_mock_broker_set_up(mock.cluster, id);
    nudge_stop(&nudge);
    return err == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -1;
}

struct st_sk_kafka_mock_switch_t {
    int id, down, ok;
    atomic_int state; /* SWITCH_RUNNING, then _DONE (the thread ended) or _RELEASED (the owner let go) first */
};

enum { SWITCH_RUNNING, SWITCH_DONE, SWITCH_RELEASED };

static void *switch_main(void *arg)
{
    sk_kafka_mock_switch_t *sw = arg;
    sw->ok = sk_kafka_mock_broker_set_down(sw->id, sw->down) == 0;
    if (atomic_exchange(&sw->state, SWITCH_DONE) == SWITCH_RELEASED)
        free(sw);
    return NULL;
}

sk_kafka_mock_switch_t *sk_kafka_mock_switch_start(int id, int down)
{
    if (mock.cluster == NULL || id < 1 || id > mock.brokers)
        return NULL;
    sk_kafka_mock_switch_t *sw = malloc(sizeof(*sw));
    if (sw == NULL)
        return NULL;
    *sw = (sk_kafka_mock_switch_t){.id = id, .down = down};
    atomic_init(&sw->state, SWITCH_RUNNING);
    pthread_attr_t attr;
    pthread_t tid;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&tid, &attr, switch_main, sw);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        free(sw);
        return NULL;
    }
    return sw;
}

int sk_kafka_mock_switch_done(sk_kafka_mock_switch_t *sw, int *ok)
{
    if (atomic_load(&sw->state) != SWITCH_DONE)
        return 0;
    *ok = sw->ok;
    return 1;
}

void sk_kafka_mock_switch_release(sk_kafka_mock_switch_t *sw)
{
    if (atomic_exchange(&sw->state, SWITCH_RELEASED) == SWITCH_DONE)
        free(sw);
}

void sk_kafka_mock_stop(void)
{
    if (mock.cluster != NULL)
        rd_kafka_mock_cluster_destroy(mock.cluster);
    if (mock.rk != NULL)
        rd_kafka_destroy(mock.rk);
    mock.cluster = NULL;
    mock.rk = NULL;
}

void sk_kafka_mock_abandon(void)
{
    /* the pointers stay in `mock`, so LeakSanitizer sees the cluster as reachable, not leaked */
    if (mock.cluster != NULL)
        sk_debug("kafka mock: left to end with the process");
}

/* ===== standalone mode ===== */

static int env_int(const char *name, int def)
{
    const char *s = getenv(name);
    return s != NULL && *s != '\0' ? atoi(s) : def;
}

static int write_file(const char *path, const char *text)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *fp = fopen(tmp, "w");
    if (fp == NULL)
        return -1;
    fprintf(fp, "%s\n", text);
    if (fclose(fp) != 0)
        return -1;
    /* rename so a test polling for the file never reads half of it */
    return rename(tmp, path);
}

static void *stdin_main(void *arg)
{
    (void)arg;
    char line[512], name[256];
    int n;
    while (fgets(line, sizeof(line), stdin) != NULL) {
        int ok;
        if (sscanf(line, "down %d", &n) == 1)
            ok = sk_kafka_mock_broker_set_down(n, 1) == 0;
        else if (sscanf(line, "up %d", &n) == 1)
            ok = sk_kafka_mock_broker_set_down(n, 0) == 0;
        else if (sscanf(line, "topic %255s %d", name, &n) == 2)
            ok = create_topic(name, n) == 0;
        else
            ok = 0;
        printf("%s\n", ok ? "ok" : "error");
        fflush(stdout);
    }
    return NULL; /* stdin closed: keep serving until a signal */
}

int sk_kafka_mock_main(const char *bootstrap_file)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    /* blocked before the cluster's threads start, so they inherit the mask and sigwait below gets the signal */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    sk_log_set_thread_name("kafka-mock");

    const char *topic = getenv("SECKILLD_TOPIC") != NULL ? getenv("SECKILLD_TOPIC") : SK_KAFKA_DEFAULT_TOPIC;
    char dlq[512];
    snprintf(dlq, sizeof(dlq), "%s.dlq", topic);
    const char *bootstraps =
        sk_kafka_mock_start(env_int("SECKILLD_KAFKA_MOCK_BROKERS", 3), topic, env_int("SECKILLD_KAFKA_PARTITIONS", 6), dlq);
    if (bootstraps == NULL)
        return 1;
    sk_warn("kafka mock: standalone mock cluster on %s (topic %s); IN MEMORY ONLY, NOT DURABLE", bootstraps, topic);
    if (bootstrap_file != NULL && strcmp(bootstrap_file, "-") != 0 && write_file(bootstrap_file, bootstraps) != 0) {
        sk_error("kafka mock: cannot write %s: %s", bootstrap_file, strerror(errno));
        sk_kafka_mock_stop();
        return 1;
    }
    printf("%s\n", bootstraps);
    fflush(stdout);

    pthread_t reader;
    pthread_create(&reader, NULL, stdin_main, NULL);
    pthread_detach(reader);
    int sig;
    sigwait(&set, &sig);
    sk_info("kafka mock: stopping on signal %d", sig);
    sk_kafka_mock_abandon(); /* the process exits now: no need to wait for the cluster's threads */
    return 0;
}
