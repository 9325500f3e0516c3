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
#include "../bindings/all.h"
#include "binding.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "vm.h"
#include "worker.h"

#ifndef SK_MALLOC /* CMakeLists.txt links jemalloc unless SK_JEMALLOC is off or the sanitizers are on */
#define SK_MALLOC "libc"
#endif

static void usage(FILE *fp)
{
    fprintf(fp, "usage: seckilld [-c FILE] [-t] [--role all|api");
    sk_bindings_usage_roles(fp, "|");
    fprintf(fp, "]\n");
    sk_bindings_usage_synopsis(fp);
    fprintf(fp, "  -c FILE            configuration file (default conf/seckilld.conf)\n"
                "  -t                 check the configuration (every problem), then load every script, and exit\n"
                "  --role ROLE        all (default): the HTTP API and every service; api: the HTTP API only;\n");
    sk_bindings_usage_options(fp);
    fprintf(fp, "  -h, --help         print this and exit\n"
                "  --version          print the name and version and exit\n"
                "Environment variables override the file:\n");
    sk_config_usage_env(fp, sk_bindings_config_keys());
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

/* -t: the config was checked by sk_config_load (every problem); then every script compiled and the application VM
 * built, the first error as file:line: message */
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
    const sk_vm_role_t *role; /* the services' entry scripts */
    for (size_t i = 0; ok && (role = sk_bindings_vm_role(i)) != NULL; ++i) {
        if (!sk_scripts_has(scripts, role->entry))
            continue;
        sk_vm_t *vm = sk_vm_create(scripts, role, 0, 0, NULL, err, sizeof(err));
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
        sk_bindings_reload(scripts); /* each service swaps VMs when it suits it, keeping the old one if the new fails */
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

/* the command-line modes bindings claim (binding.h): getopt values from MODE_BASE, one per mode */
#define MODE_BASE 256
#define MAX_MODES 16

int main(int argc, char **argv)
{
    const char *conf_path = "conf/seckilld.conf", *role = "all", *mode_args[MAX_MODES] = {NULL};
    int test_only = 0, mode_given[MAX_MODES] = {0}, ch;
    struct option longopts[MAX_MODES + 4] = {
        {"role", required_argument, NULL, 'r'}, {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'}};
    sk_bindings_use(sk_bindings_all); /* the composition: every binding this build has */
    size_t nmodes = 0;
    for (const sk_binding_mode_t *m; nmodes != MAX_MODES && (m = sk_bindings_mode(nmodes)) != NULL; ++nmodes)
        longopts[3 + nmodes] =
            (struct option){m->option, m->arg != NULL ? required_argument : no_argument, NULL, MODE_BASE + (int)nmodes};
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
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("seckilld %s\n", SK_VERSION);
            return 0;
        default:
            if (ch >= MODE_BASE && ch < MODE_BASE + (int)nmodes) {
                mode_given[ch - MODE_BASE] = 1;
                mode_args[ch - MODE_BASE] = optarg;
                break;
            }
            usage(stderr);
            return 1;
        }
    }
    for (size_t i = 0; i != nmodes; ++i) /* modes that need no configuration run first, in table order */
        if (mode_given[i] && !sk_bindings_mode(i)->needs_config)
            return sk_bindings_mode(i)->main(NULL, mode_args[i]);
    int serve_api = strcmp(role, "all") == 0 || strcmp(role, "api") == 0;
    if (!serve_api && !sk_bindings_has_role(role)) {
        fprintf(stderr, "--role must be all, api");
        sk_bindings_usage_roles(stderr, " or ");
        fprintf(stderr, "\n");
        return 1;
    }
    if (optind != argc) {
        usage(stderr);
        return 1;
    }

    char err[16384];
    if ((sk_config = sk_config_load(conf_path, sk_bindings_config_keys(), err, sizeof(err))) == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (test_only)
        return test_config();
    if (sk_config->access_log_on && sk_log_access_open(sk_config->access_log) != 0) {
        fprintf(stderr, "%s: access_log: cannot open %s: %s\n", sk_config->path, sk_config->access_log, strerror(errno));
        return 1;
    }
    for (size_t i = 0; i != nmodes; ++i)
        if (mode_given[i])
            return sk_bindings_mode(i)->main(sk_config, mode_args[i]);

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

    if (sk_bindings_init(sk_config, sk_config->workers + sk_bindings_services()) != 0)
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
    if (sk_bindings_start(sk_config, scripts, role, sk_config->workers) != 0)
        return 1;
    sk_scripts_release(scripts);
    close(listen_fd); /* each worker holds a dup */
    sk_info("listening on %s:%u with %u workers (role %s), scripts from %s, malloc %s", sk_config->listen_host,
            sk_config->listen_port, sk_config->workers, role, sk_config->scripts, SK_MALLOC);

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
    sk_bindings_stop();
    sk_bindings_shutdown();
    sk_info("stopped");
    return 0;
}
