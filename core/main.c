/*
 * main.c: command line, start-up, and the main thread's only job afterwards: waiting for signals.
 *
 * All signals are blocked in every thread; the main thread takes them synchronously with sigwait, so a handler
 * never runs on a loop and reload work (reading and compiling scripts) happens here, off the loops.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "../bindings/bindings.h"
#include "../bindings/kafka/consumer.h"
#include "../bindings/kafka/mock.h"
#include "../bindings/kafka/redrive.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "vm.h"
#include "worker.h"

static void usage(FILE *fp)
{
    fprintf(fp, "usage: seckilld [-c FILE] [-t] [--role all|api|consumer]\n"
                "       seckilld --kafka-mock FILE\n"
                "       seckilld [-c FILE] --redrive-dlq\n"
                "  -c FILE            configuration file (default conf/seckilld.conf)\n"
                "  -t                 load the configuration and every script, report the first error, and exit\n"
                "  --role ROLE        all (default): HTTP API and the Kafka order consumer; api: the HTTP API only;\n"
                "                     consumer: the order consumer (HTTP serves only /healthz and /metrics)\n"
                "  --kafka-mock FILE  run a standalone Kafka mock cluster (tests), writing its bootstrap servers to FILE\n"
                "  --redrive-dlq      move the dead letters not yet redriven back to the orders topic, print\n"
                "                     \"redriven N\" and exit\n"
                "Environment variables SECKILLD_* override the file (see README).\n");
}

static int open_listener(const char *host, unsigned short port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    int gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0) {
        sk_error("listen %s:%u: %s", host, port, gai_strerror(gai));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 ||
        listen(fd, 4096) != 0) {
        sk_error("listen %s:%u: %s", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* -t: the config, every script compiled, and the application VM built; first error as file:line: message */
static int test_config(void)
{
    char err[1024], *serr = NULL;
    sk_scripts_t *scripts = sk_scripts_read(sk_config->scripts, &serr);
    if (scripts == NULL) {
        fprintf(stderr, "%s\n", serr != NULL ? serr : "cannot read the scripts folder");
        return 1;
    }
    int ok = sk_scripts_compile_all(scripts, err, sizeof(err)) == 0;
    if (ok) {
        sk_vm_t *vm = sk_vm_create(scripts, SK_VM_ROLE_API, 0, 0, NULL, err, sizeof(err));
        if ((ok = vm != NULL))
            sk_vm_release(vm);
    }
    if (ok && sk_scripts_has(scripts, "consumer.lua")) {
        sk_vm_t *vm = sk_vm_create(scripts, SK_VM_ROLE_CONSUMER, 0, 0, NULL, err, sizeof(err));
        if ((ok = vm != NULL))
            sk_vm_release(vm);
    }
    sk_scripts_release(scripts);
    if (!ok) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("%s: ok, scripts in %s: ok\n", sk_config->path, sk_config->scripts);
    return 0;
}

static void reload(sk_counter_t *ok_counter, sk_counter_t *failed_counter, int serve_api)
{
    char err[1024], *serr = NULL;
    sk_scripts_t *scripts = sk_scripts_read(sk_config->scripts, &serr);
    int ok = scripts != NULL && sk_scripts_compile_all(scripts, err, sizeof(err)) == 0 &&
             (!serve_api || sk_workers_reload(scripts, err, sizeof(err)) == 0);
    if (ok)
        sk_kafka_consumer_reload(scripts); /* it swaps VMs between batches, keeping the old one if the new fails */
    if (scripts == NULL)
        snprintf(err, sizeof(err), "%s", serr != NULL ? serr : "cannot read the scripts folder");
    free(serr);
    if (scripts != NULL)
        sk_scripts_release(scripts);
    if (ok) {
        sk_counter_inc(ok_counter);
        sk_info("reloaded scripts from %s", sk_config->scripts);
    } else {
        sk_counter_inc(failed_counter);
        sk_error("reload rejected, the previous scripts keep serving: %s", err);
    }
}

int main(int argc, char **argv)
{
    const char *conf_path = "conf/seckilld.conf", *role = "all", *mock_file = NULL;
    int test_only = 0, redrive = 0, ch;
    static const struct option longopts[] = {{"role", required_argument, NULL, 'r'},
                                             {"kafka-mock", required_argument, NULL, 'k'},
                                             {"redrive-dlq", no_argument, NULL, 'D'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL}};
    while ((ch = getopt_long(argc, argv, "c:th", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            conf_path = optarg;
            break;
        case 't':
            test_only = 1;
            break;
        case 'r':
            role = optarg;
            break;
        case 'k':
            mock_file = optarg;
            break;
        case 'D':
            redrive = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (mock_file != NULL)
        return sk_kafka_mock_main(mock_file);
    int serve_api = strcmp(role, "all") == 0 || strcmp(role, "api") == 0;
    int run_consumer = strcmp(role, "all") == 0 || strcmp(role, "consumer") == 0;
    if (!serve_api && !run_consumer) {
        fprintf(stderr, "--role must be all, api or consumer\n");
        return 1;
    }
    if (optind != argc) {
        usage(stderr);
        return 1;
    }

    char err[1024];
    if ((sk_config = sk_config_load(conf_path, err, sizeof(err))) == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (test_only)
        return test_config();
    if (redrive)
        return sk_kafka_redrive_main(sk_config);

    /* block every signal before any thread exists so that all threads inherit the mask */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    sk_counter_t *reloads_ok = sk_metrics_counter("seckilld_reloads_total", "Script reloads by result", "result=\"ok\"");
    sk_counter_t *reloads_failed = sk_metrics_counter("seckilld_reloads_total", "Script reloads by result", "result=\"failed\"");

    if (sk_bindings_init(sk_config, sk_config->workers + 1) != 0)
        return 1;
    int listen_fd = open_listener(sk_config->listen_host, sk_config->listen_port);
    if (listen_fd < 0)
        return 1;
    char *serr = NULL;
    sk_scripts_t *scripts = sk_scripts_read(sk_config->scripts, &serr);
    if (scripts == NULL) {
        sk_error("%s", serr != NULL ? serr : "cannot read the scripts folder");
        return 1;
    }
    if (sk_workers_start(listen_fd, serve_api ? scripts : NULL, err, sizeof(err)) != 0) {
        sk_error("%s", err);
        return 1;
    }
    if (run_consumer && sk_kafka_consumer_start(sk_config, scripts, sk_config->workers, !serve_api) != 0)
        return 1;
    sk_scripts_release(scripts);
    close(listen_fd); /* each worker holds a dup */
    sk_info("listening on %s:%u with %u workers (role %s), scripts from %s", sk_config->listen_host, sk_config->listen_port,
            sk_config->workers, role, sk_config->scripts);

    for (;;) {
        int sig;
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            reload(reloads_ok, reloads_failed, serve_api);
        } else if (sig == SIGTERM || sig == SIGINT) {
            sk_info("%s: draining in-flight requests", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        }
    }
    sk_workers_stop();
    sk_kafka_consumer_stop();
    sk_bindings_shutdown();
    sk_info("stopped");
    return 0;
}
