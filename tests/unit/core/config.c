/* tests core/config.c: the Lua file, dotted lookups and SECKILLD_* overrides */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../../../core/config.h"
#include "../test.h"

static const char *write_conf(const char *text)
{
    static char path[] = "/tmp/sk-config-XXXXXX";
    strcpy(path, "/tmp/sk-config-XXXXXX");
    int fd = mkstemp(path);
    ssize_t n = write(fd, text, strlen(text));
    (void)n;
    close(fd);
    return path;
}

int main(void)
{
    char err[512];
    unsetenv("SECKILLD_LISTEN");
    unsetenv("SECKILLD_WORKERS");
    unsetenv("SECKILLD_REDIS");
    unsetenv("SECKILLD_MAX_INFLIGHT");
    const char *p = write_conf("return { listen = '0.0.0.0:9000', workers = 3, redis = { url = 'redis://x:1/0', pool_size = 7 } }");
    sk_config_t *c = sk_config_load(p, err, sizeof(err));
    ok(c != NULL, "loads: %s", err);
    ok(strcmp(c->listen_host, "0.0.0.0") == 0 && c->listen_port == 9000, "listen parsed");
    ok(c->workers == 3, "workers");
    ok(sk_config_get_int(c, "redis.pool_size", 1) == 7, "nested int");
    ok(strcmp(sk_config_get_string(c, "redis.url", ""), "redis://x:1/0") == 0, "nested string");
    ok(sk_config_get_int(c, "mysql.pool_size", 4) == 4, "absent key gives default");
    ok(c->max_body == 16384, "default max body");
    ok(c->max_inflight == 1024, "default max_inflight");
    sk_config_free(c);

    setenv("SECKILLD_LISTEN", "127.0.0.1:1234", 1);
    setenv("SECKILLD_WORKERS", "2", 1);
    setenv("SECKILLD_REDIS", "redis://127.0.0.1:9/1", 1);
    c = sk_config_load(p, err, sizeof(err));
    ok(c != NULL && c->listen_port == 1234 && c->workers == 2, "environment overrides the file");
    ok(strcmp(sk_config_get_string(c, "redis.url", ""), "redis://127.0.0.1:9/1") == 0, "override keeps siblings");
    ok(sk_config_get_int(c, "redis.pool_size", 1) == 7, "sibling kept");
    sk_config_free(c);
    unlink(p);

    setenv("SECKILLD_WORKERS", "two", 1);
    p = write_conf("return {}");
    ok(sk_config_load(p, err, sizeof(err)) == NULL && strstr(err, "SECKILLD_WORKERS") != NULL, "bad integer named: %s", err);
    unsetenv("SECKILLD_WORKERS");
    unsetenv("SECKILLD_LISTEN");
    unsetenv("SECKILLD_REDIS");
    unlink(p);

    p = write_conf("return {\n  listen = ,\n}");
    ok(sk_config_load(p, err, sizeof(err)) == NULL && strstr(err, ":2:") != NULL, "syntax error has file:line: %s", err);
    unlink(p);
    p = write_conf("return 42");
    ok(sk_config_load(p, err, sizeof(err)) == NULL && strstr(err, "must return a table") != NULL, "non-table refused");
    unlink(p);
    p = write_conf("return { http = { max_inflight = 50 } }");
    c = sk_config_load(p, err, sizeof(err));
    ok(c != NULL && c->max_inflight == 50, "http.max_inflight read");
    sk_config_free(c);
    setenv("SECKILLD_MAX_INFLIGHT", "0", 1);
    c = sk_config_load(p, err, sizeof(err));
    ok(c != NULL && c->max_inflight == 0, "SECKILLD_MAX_INFLIGHT overrides it (0: unlimited)");
    sk_config_free(c);
    setenv("SECKILLD_MAX_INFLIGHT", "-1", 1);
    ok(sk_config_load(p, err, sizeof(err)) == NULL && strstr(err, "max_inflight") != NULL, "negative refused: %s", err);
    unsetenv("SECKILLD_MAX_INFLIGHT");
    unlink(p);
    p = write_conf("return { listen = 'nohost' }");
    ok(sk_config_load(p, err, sizeof(err)) == NULL && strstr(err, "HOST:PORT") != NULL, "bad listen refused");
    unlink(p);
    ok(sk_config_load("/nonexistent/seckilld.conf", err, sizeof(err)) == NULL && strstr(err, "cannot read") != NULL,
       "missing file");
    return done();
}
