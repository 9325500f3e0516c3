/*
 * schema.c: start-up work for the MySQL binding, on the main thread where blocking is fine: parsing the URL,
 * resolving the host once (the library's own lookup would block a loop), and applying conf/schema.sql.
 *
 * If MySQL is down at start-up the server still starts (health says "mysql": "down") and a background thread
 * retries the schema every second until it applies; it never touches a loop.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mysqld_error.h>
#include "../../core/log.h"
#include "schema.h"

/* ===== the URL ===== */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static char *percent_decode(const char *s, size_t len)
{
    char *out = h2o_mem_alloc(len + 1), *p = out;
    for (size_t i = 0; i < len; ++i) {
        if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            *p++ = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            *p++ = s[i];
        }
    }
    *p = '\0';
    return out;
}

static int resolve(const char *host, char *out, size_t outlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, NULL, &hints, &res) != 0)
        return -1;
    const void *addr = res->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                                                  : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
    int ok = inet_ntop(res->ai_family, addr, out, (socklen_t)outlen) != NULL;
    freeaddrinfo(res);
    return ok ? 0 : -1;
}

int sk_mysql_target_init(sk_mysql_target_t *t, const char *url, uint64_t connect_timeout_ms, uint64_t query_timeout_ms, char *err,
                         size_t errlen)
{
    static const char scheme[] = "mysql://";
    *t = (sk_mysql_target_t){.port = 3306, .connect_timeout_ms = connect_timeout_ms, .query_timeout_ms = query_timeout_ms};
    if (strncmp(url, scheme, sizeof(scheme) - 1) != 0) {
        snprintf(err, errlen, "mysql.url must look like mysql://user:pass@host:port/db");
        return -1;
    }
    const char *p = url + sizeof(scheme) - 1, *at = strrchr(p, '@'), *slash;
    if (at != NULL) {
        const char *colon = memchr(p, ':', at - p);
        t->user = percent_decode(p, (colon != NULL ? colon : at) - p);
        t->password = colon != NULL ? percent_decode(colon + 1, at - colon - 1) : h2o_strdup(NULL, "", 0).base;
        p = at + 1;
    } else {
        t->user = h2o_strdup(NULL, "root", SIZE_MAX).base;
        t->password = h2o_strdup(NULL, "", 0).base;
    }
    slash = strchr(p, '/');
    t->db = h2o_strdup(NULL, slash != NULL ? slash + 1 : "", SIZE_MAX).base;
    size_t hostport_len = slash != NULL ? (size_t)(slash - p) : strlen(p);
    char hostport[256], host[256], addr[INET6_ADDRSTRLEN];
    if (hostport_len == 0 || hostport_len >= sizeof(hostport)) {
        snprintf(err, errlen, "mysql.url: missing host");
        goto Error;
    }
    memcpy(hostport, p, hostport_len);
    hostport[hostport_len] = '\0';
    const char *port_str = NULL;
    if (hostport[0] == '[') { /* [::1]:3306 */
        char *close = strchr(hostport, ']');
        if (close == NULL)
            goto BadHost;
        *close = '\0';
        snprintf(host, sizeof(host), "%s", hostport + 1);
        if (close[1] == ':')
            port_str = close + 2;
    } else {
        char *colon = strrchr(hostport, ':');
        if (colon != NULL) {
            *colon = '\0';
            port_str = colon + 1;
        }
        snprintf(host, sizeof(host), "%s", hostport);
    }
    if (port_str != NULL) {
        char *end;
        long port = strtol(port_str, &end, 10);
        if (*end != '\0' || port <= 0 || port > 65535)
            goto BadHost;
        t->port = (unsigned)port;
    }
    if (resolve(host, addr, sizeof(addr)) != 0) {
        snprintf(err, errlen, "mysql.url: cannot resolve host \"%s\"", host);
        goto Error;
    }
    t->host = h2o_strdup(NULL, addr, SIZE_MAX).base;
    return 0;
BadHost:
    snprintf(err, errlen, "mysql.url: bad host or port");
Error:
    sk_mysql_target_dispose(t);
    return -1;
}

void sk_mysql_target_dispose(sk_mysql_target_t *t)
{
    free(t->host);
    free(t->user);
    free(t->password);
    free(t->db);
    *t = (sk_mysql_target_t){0};
}

/* ===== applying the schema (blocking API) ===== */

static MYSQL *connect_blocking(const sk_mysql_target_t *t, const char *db)
{
    MYSQL *m = mysql_init(NULL);
    unsigned secs = (unsigned)((t->connect_timeout_ms + 999) / 1000), rw = (unsigned)((t->query_timeout_ms + 999) / 1000);
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &secs);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &rw);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &rw);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    /* on failure the caller reads mysql_errno/mysql_error, then closes */
    mysql_real_connect(m, t->host, t->user, t->password, db, t->port, NULL, 0);
    return m;
}

static int run_file(MYSQL *m, const char *path, int *count, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    h2o_buffer_t *stmt;
    h2o_buffer_init(&stmt, &h2o_socket_buffer_prototype);
    char line[4096];
    int ret = 0;
    while (fgets(line, sizeof(line), fp) != NULL) {
        const char *s = line + strspn(line, " \t\r\n");
        if (strncmp(s, "--", 2) == 0 || *s == '\0')
            continue;
        size_t len = strlen(line);
        h2o_iovec_t buf = h2o_buffer_reserve(&stmt, len);
        memcpy(buf.base, line, len);
        stmt->size += len;
        /* a statement ends with ';' at the end of a line: enough for a hand-written schema file */
        while (len > 0 && strchr(" \t\r\n", line[len - 1]) != NULL)
            --len;
        if (len > 0 && line[len - 1] == ';') {
            if (mysql_real_query(m, stmt->bytes, stmt->size) != 0) {
                snprintf(err, errlen, "%s: %s (%u)", path, mysql_error(m), mysql_errno(m));
                ret = -1;
                break;
            }
            ++*count;
            h2o_buffer_consume(&stmt, stmt->size);
        }
    }
    h2o_buffer_dispose(&stmt);
    fclose(fp);
    return ret;
}

int sk_mysql_schema_apply(const sk_mysql_target_t *t, const char *path, char *err, size_t errlen)
{
    MYSQL *m = connect_blocking(t, t->db);
    if (mysql_errno(m) == ER_BAD_DB_ERROR && t->db[0] != '\0') {
        /* the account may create its database; do it rather than fail start-up */
        mysql_close(m);
        m = connect_blocking(t, NULL);
        if (mysql_errno(m) == 0) {
            char sql[300];
            snprintf(sql, sizeof(sql), "CREATE DATABASE IF NOT EXISTS `%s` CHARACTER SET utf8mb4", t->db);
            if (strchr(t->db, '`') != NULL || mysql_query(m, sql) != 0 || mysql_select_db(m, t->db) != 0)
                goto LibError;
        }
    }
    if (mysql_errno(m) != 0)
        goto LibError;
    int count = 0;
    int ret = run_file(m, path, &count, err, errlen);
    mysql_close(m);
    if (ret == 0)
        sk_info("mysql: schema %s applied (%d statements) on %s:%u/%s", path, count, t->host, t->port, t->db);
    return ret;
LibError:
    snprintf(err, errlen, "%s (%u)", mysql_error(m), mysql_errno(m));
    mysql_close(m);
    return -1;
}

/* ===== retrying in the background ===== */

static struct {
    pthread_t thread;
    int running;
    int stop;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    const sk_mysql_target_t *target;
    char *path;
    void (*on_applied)(void);
} retry = {.mutex = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void *retry_main(void *arg)
{
    (void)arg;
    sk_log_set_thread_name("mysql-schema");
    char err[512];
    for (;;) {
        pthread_mutex_lock(&retry.mutex);
        if (!retry.stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&retry.cond, &retry.mutex, &ts);
        }
        int stop = retry.stop;
        pthread_mutex_unlock(&retry.mutex);
        if (stop)
            break;
        if (sk_mysql_schema_apply(retry.target, retry.path, err, sizeof(err)) == 0) {
            retry.on_applied();
            break;
        }
        sk_debug("mysql: schema still not applied: %s", err);
    }
    mysql_thread_end();
    return NULL;
}

void sk_mysql_schema_retry_start(const sk_mysql_target_t *target, const char *path, void (*on_applied)(void))
{
    retry.target = target;
    retry.path = h2o_strdup(NULL, path, SIZE_MAX).base;
    retry.on_applied = on_applied;
    retry.stop = 0;
    if (pthread_create(&retry.thread, NULL, retry_main, NULL) == 0)
        retry.running = 1;
}

void sk_mysql_schema_retry_stop(void)
{
    if (!retry.running)
        return;
    pthread_mutex_lock(&retry.mutex);
    retry.stop = 1;
    pthread_cond_signal(&retry.cond);
    pthread_mutex_unlock(&retry.mutex);
    pthread_join(retry.thread, NULL);
    retry.running = 0;
    free(retry.path);
    retry.path = NULL;
}
