/* tests core/config.c and core/config_check.c: the Lua file, dotted lookups, SECKILLD_* overrides, the strict check */
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

/* a schema of a few keys of each kind, beside the core's */
static const char *const colours[] = {"red", "blue", NULL};
static const sk_config_key_t db_keys[] = {{.name = "pool_size", .types = SK_CONF_INT, .ranged = 1, .min = 1, .max = 64},
                                          {.name = "timeout_ms", .types = SK_CONF_INT, .ranged = 1, .min = 1, .max = 1000},
                                          {.name = "url", .types = SK_CONF_STRING},
                                          {.name = "props", .types = SK_CONF_MAP},
                                          {NULL}};
static const sk_config_key_t entry_keys[] = {{.name = "id", .types = SK_CONF_STRING, .ranged = 1, .min = 1, .max = 8}, {NULL}};
static const sk_config_key_t entry = {.types = SK_CONF_TABLE, .keys = entry_keys};
static const sk_config_key_t test_keys[] = {
    {.name = "db", .types = SK_CONF_TABLE, .keys = db_keys},
    {.name = "colour", .types = SK_CONF_STRING, .choices = colours},
    {.name = "rate", .types = SK_CONF_NUMBER, .ranged = 1, .min = 0.5, .max = SK_CONF_NO_MAX},
    {.name = "log", .types = SK_CONF_STRING | SK_CONF_BOOL},
    {.name = "entries", .types = SK_CONF_LIST, .elem = &entry},
    {.name = "admin_token", .types = SK_CONF_STRING, .env = "SECKILLD_ADMIN_TOKEN"},
    {NULL}};
static const sk_config_key_t *const test_sets[] = {sk_config_core_keys, test_keys, NULL};

/* rows as a binding declares them (the shipped ones are tested in tests/unit/bindings/all.c): with a default, with a
 * variable, and with neither (unset means "not configured") */
static const sk_config_key_t store_rows[] = {SK_CONF_KEY("url", SK_CONF_STRING, .env = "SECKILLD_REDIS", .help = "where"),
                                             SK_CONF_RANGED("pool_size", SK_CONF_INT, 1, 64, .def = "4", .help = "how many"),
                                             SK_CONF_RANGED("lease_size", SK_CONF_INT, 1, 64, .help = "computed when unset"),
                                             {NULL}};
static const sk_config_key_t queue_rows[] = {SK_CONF_KEY("brokers", SK_CONF_STRING, .help = "unset: none"),
                                             SK_CONF_KEY("topic", SK_CONF_STRING, .def = "seckill.orders", .help = "the topic"),
                                             {NULL}};
static const sk_config_key_t binding_rows[] = {{.name = "redis", .types = SK_CONF_TABLE, .keys = store_rows},
                                               {.name = "mysql", .types = SK_CONF_TABLE, .keys = store_rows + 1},
                                               {.name = "kafka", .types = SK_CONF_TABLE, .keys = queue_rows},
                                               SK_CONF_KEY("token_secret", SK_CONF_STRING, .help = "a secret"),
                                               {NULL}};
static const sk_config_key_t *const binding_sets[] = {sk_config_core_keys, binding_rows, NULL};

/* loads text with the test schema; the problems (or "") in err; returns whether it loaded */
static int check(const char *text, char *err, size_t errlen)
{
    const char *p = write_conf(text);
    err[0] = '\0';
    sk_config_t *c = sk_config_load(p, test_sets, err, errlen);
    unlink(p);
    if (c != NULL)
        sk_config_free(c);
    return c != NULL;
}

static size_t lines(const char *s)
{
    size_t n = *s != '\0';
    for (; *s != '\0'; ++s)
        n += *s == '\n';
    return n;
}

static void test_check(void)
{
    char err[4096];
    /* the test harness exports the services' addresses: the schema here has no redis, mysql or kafka */
    static const char *const overrides[] = {"SECKILLD_LISTEN",      "SECKILLD_WORKERS",      "SECKILLD_REDIS",
                                            "SECKILLD_MYSQL",       "SECKILLD_KAFKA",        "SECKILLD_TOPIC",
                                            "SECKILLD_ADMIN_TOKEN", "SECKILLD_SCRIPTS",      "SECKILLD_STRATEGY",
                                            "SECKILLD_LOG_LEVEL",   "SECKILLD_LOG_FORMAT",   "SECKILLD_REQUEST_TIMEOUT_MS",
                                            "SECKILLD_DEADLINE_MS", "SECKILLD_MAX_INFLIGHT", "SECKILLD_TOKEN_SECRET"};
    for (size_t i = 0; i < sizeof(overrides) / sizeof(overrides[0]); ++i)
        unsetenv(overrides[i]);
    ok(check("return { db = { pool_size = 4, url = 'x', props = { ['a.b'] = 'c', n = 5, f = true } }, colour = 'red', "
             "rate = 1.5, log = true, entries = { { id = 'a' }, { id = 'b' } } }",
             err, sizeof(err)),
       "a good config loads: %s", err);
    ok(check("return { log = '/tmp/x.log', colour = 'BLUE' }", err, sizeof(err)), "string or boolean; words without case");

    ok(!check("return { db = { pool_sze = 4 } }", err, sizeof(err)) &&
           strstr(err, ": db.pool_sze: unknown key; did you mean pool_size?") != NULL,
       "unknown key with a suggestion: %s", err);
    ok(!check("return { zzzzzz = 1 }", err, sizeof(err)) && strstr(err, "zzzzzz: unknown key") != NULL &&
           strstr(err, "did you mean") == NULL,
       "unknown key, nothing close: %s", err);
    ok(!check("return { wrokers = 2 }", err, sizeof(err)) && strstr(err, "did you mean workers?") != NULL,
       "a transposition is one edit: %s", err);
    ok(!check("return { db = { pool_size = '4' } }", err, sizeof(err)) &&
           strstr(err, "db.pool_size: must be an integer, got string") != NULL,
       "type checked: %s", err);
    ok(!check("return { db = { pool_size = 2.5 } }", err, sizeof(err)) && strstr(err, "must be an integer, got 2.5") != NULL,
       "a fraction is not an integer: %s", err);
    ok(check("return { db = { pool_size = 2.0 } }", err, sizeof(err)), "a whole float is an integer");
    ok(!check("return { db = { pool_size = 0 } }", err, sizeof(err)) &&
           strstr(err, "db.pool_size: must be between 1 and 64, got 0") != NULL,
       "zero size refused: %s", err);
    ok(!check("return { db = { timeout_ms = -5 } }", err, sizeof(err)) && strstr(err, "db.timeout_ms: must be between") != NULL,
       "negative timeout refused: %s", err);
    ok(!check("return { rate = 0.1 }", err, sizeof(err)) && strstr(err, "rate: must be at least 0.5, got 0.1") != NULL,
       "number range: %s", err);
    ok(!check("return { colour = 'green' }", err, sizeof(err)) &&
           strstr(err, "colour: must be one of \"red\", \"blue\", got \"green\"") != NULL,
       "words: %s", err);
    ok(!check("return { log = 3 }", err, sizeof(err)) && strstr(err, "log: must be a string or a boolean, got an integer") != NULL,
       "either type: %s", err);
    ok(!check("return { db = 'x' }", err, sizeof(err)) && strstr(err, "db: must be a table, got string") != NULL,
       "table expected: %s", err);
    ok(!check("return { db = { props = { x = {} } } }", err, sizeof(err)) && strstr(err, "db.props[\"x\"]: must be") != NULL,
       "a library's table takes scalars: %s", err);
    ok(check("return { db = { props = { ['any.thing.at.all'] = 1 } } }", err, sizeof(err)), "a library's keys are free");
    ok(!check("return { entries = { { id = 'a' }, { idd = 'b' }, { id = '' } } }", err, sizeof(err)) &&
           strstr(err, "entries[2].idd: unknown key; did you mean id?") != NULL &&
           strstr(err, "entries[3].id: must be 1 to 8 characters long") != NULL,
       "list entries checked with their index: %s", err);
    ok(!check("return { entries = { x = 1 } }", err, sizeof(err)) && strstr(err, "entries.x: unexpected key") != NULL,
       "a list has no names: %s", err);
    ok(!check("return { db = { 1 } }", err, sizeof(err)) && strstr(err, "db[1]: unexpected entry") != NULL,
       "a table has no list part: %s", err);
    ok(!check("return { listen = ':80' }", err, sizeof(err)) && strstr(err, "listen: must be HOST:PORT") != NULL,
       "listen without a host: %s", err);
    ok(!check("return { listen = '127.0.0.1:0' }", err, sizeof(err)) && strstr(err, "listen: must be HOST:PORT") != NULL,
       "port 0: %s", err);
    ok(!check("return { listen = '127.0.0.1:65536' }", err, sizeof(err)), "port 65536");
    ok(!check("return { workers = 65, http = { max_body = 0, deadline_ms = -1 } }", err, sizeof(err)) &&
           strstr(err, "workers: must be between 0 and 64") != NULL && strstr(err, "http.max_body: must be between 1") != NULL &&
           strstr(err, "http.deadline_ms: must be between 0 and 86400000, got -1") != NULL,
       "the core's keys: %s", err);

    /* every problem, one a line, each naming the file */
    ok(!check("return { db = { pool_sze = 4, timeout_ms = 0 }, colour = 1, wrokers = 2, listen = 'x' }", err, sizeof(err)) &&
           lines(err) == 5 && strncmp(err, "/tmp/sk-config-", 15) == 0,
       "every problem on a line of its own (5): %s", err);

    /* the default admin token only on loopback */
    ok(check("return { admin_token = 'change-me', listen = '127.0.0.1:8080' }", err, sizeof(err)), "change-me on 127.0.0.1");
    ok(check("return { admin_token = 'change-me', listen = '127.3.2.1:8080' }", err, sizeof(err)), "change-me on 127/8");
    ok(check("return { admin_token = 'change-me', listen = 'localhost:8080' }", err, sizeof(err)), "change-me on localhost");
    ok(check("return { admin_token = 'change-me', listen = '::1:8080' }", err, sizeof(err)), "change-me on ::1");
    ok(check("return { admin_token = 'change-me', listen = '[::1]:8080' }", err, sizeof(err)), "change-me on [::1]");
    ok(check("return { admin_token = 'change-me' }", err, sizeof(err)), "change-me on the default listen (loopback)");
    ok(!check("return { admin_token = 'change-me', listen = '0.0.0.0:8080' }", err, sizeof(err)) &&
           strstr(err, "admin_token: the default token \"change-me\" is refused") != NULL,
       "change-me on 0.0.0.0 refused: %s", err);
    ok(!check("return { admin_token = 'change-me', listen = '10.1.2.3:8080' }", err, sizeof(err)), "change-me on 10/8 refused");
    ok(check("return { admin_token = 's3cret', listen = '0.0.0.0:8080' }", err, sizeof(err)), "a real token anywhere");
    setenv("SECKILLD_ADMIN_TOKEN", "change-me", 1);
    ok(!check("return { admin_token = 's3cret', listen = '0.0.0.0:8080' }", err, sizeof(err)) && strstr(err, "admin_token") != NULL,
       "the override is what is checked");
    setenv("SECKILLD_LISTEN", "127.0.0.1:9999", 1);
    ok(check("return { admin_token = 's3cret', listen = '0.0.0.0:8080' }", err, sizeof(err)), "SECKILLD_LISTEN counts too");
    unsetenv("SECKILLD_LISTEN");
    unsetenv("SECKILLD_ADMIN_TOKEN");

    ok(sk_config_distance("pool_sze", "pool_size") == 1 && sk_config_distance("abc", "abc") == 0 &&
           sk_config_distance("ab", "ba") == 1 && sk_config_distance("", "abc") == 3,
       "edit distance");
}

int main(void)
{
    char err[512];
    unsetenv("SECKILLD_LISTEN");
    unsetenv("SECKILLD_WORKERS");
    unsetenv("SECKILLD_REDIS");
    unsetenv("SECKILLD_MAX_INFLIGHT");
    const char *p = write_conf("return { listen = '0.0.0.0:9000', workers = 3, redis = { url = 'redis://x:1/0', pool_size = 7 } }");
    sk_config_t *c = sk_config_load(p, binding_sets, err, sizeof(err));
    ok(c != NULL, "loads: %s", err);
    ok(strcmp(c->listen_host, "0.0.0.0") == 0 && c->listen_port == 9000, "listen parsed");
    ok(c->workers == 3, "workers");
    ok(sk_config_int(c, "redis.pool_size") == 7, "nested int");
    ok(strcmp(sk_config_string(c, "redis.url"), "redis://x:1/0") == 0, "nested string");
    ok(sk_config_int(c, "mysql.pool_size") == 4, "an absent key reads its row's default");
    ok(strcmp(sk_config_string(c, "kafka.topic"), "seckill.orders") == 0, "a table the file lacks gets its defaults");
    ok(!sk_config_isset(c, "kafka.brokers") && sk_config_string(c, "kafka.brokers") == NULL,
       "a key without a default stays unset (Kafka not configured)");
    ok(!sk_config_isset(c, "redis.lease_size") && !sk_config_isset(c, "token_secret"), "unset keys without a default");
    ok(c->max_body == 16384, "default max body");
    ok(c->max_inflight == 1024, "default max_inflight");
    ok(c->deadline_ms == 10000 && sk_config_int(c, "http.deadline_ms") == 10000, "default deadline");
    sk_config_free(c);

    setenv("SECKILLD_LISTEN", "127.0.0.1:1234", 1);
    setenv("SECKILLD_WORKERS", "2", 1);
    setenv("SECKILLD_REDIS", "redis://127.0.0.1:9/1", 1);
    c = sk_config_load(p, binding_sets, err, sizeof(err));
    ok(c != NULL && c->listen_port == 1234 && c->workers == 2, "environment overrides the file");
    ok(strcmp(sk_config_string(c, "redis.url"), "redis://127.0.0.1:9/1") == 0, "override keeps siblings");
    ok(sk_config_int(c, "redis.pool_size") == 7, "sibling kept");
    sk_config_free(c);
    /* the core's rows alone (keys NULL): a binding's variable does not apply */
    c = sk_config_load(p, NULL, err, sizeof(err));
    ok(c != NULL && c->listen_port == 1234, "the core's variables without the bindings' rows");
    sk_config_push_value(c, "redis.url");
    ok(strcmp(lua_tostring(c->L, -1), "redis://x:1/0") == 0, "a binding's variable needs the binding's row");
    lua_pop(c->L, 1);
    sk_config_free(c);
    unlink(p);

    setenv("SECKILLD_WORKERS", "two", 1);
    p = write_conf("return {}");
    ok(sk_config_load(p, NULL, err, sizeof(err)) == NULL && strstr(err, "SECKILLD_WORKERS") != NULL, "bad integer named: %s", err);
    unsetenv("SECKILLD_WORKERS");
    unsetenv("SECKILLD_LISTEN");
    unsetenv("SECKILLD_REDIS");
    unlink(p);

    p = write_conf("return {\n  listen = ,\n}");
    ok(sk_config_load(p, NULL, err, sizeof(err)) == NULL && strstr(err, ":2:") != NULL, "syntax error has file:line: %s", err);
    unlink(p);
    p = write_conf("return 42");
    ok(sk_config_load(p, NULL, err, sizeof(err)) == NULL && strstr(err, "must return a table") != NULL, "non-table refused");
    unlink(p);
    p = write_conf("return { http = { max_inflight = 50 } }");
    c = sk_config_load(p, NULL, err, sizeof(err));
    ok(c != NULL && c->max_inflight == 50, "http.max_inflight read");
    sk_config_free(c);
    setenv("SECKILLD_MAX_INFLIGHT", "0", 1);
    c = sk_config_load(p, NULL, err, sizeof(err));
    ok(c != NULL && c->max_inflight == 0, "SECKILLD_MAX_INFLIGHT overrides it (0: unlimited)");
    sk_config_free(c);
    setenv("SECKILLD_MAX_INFLIGHT", "-1", 1);
    ok(sk_config_load(p, NULL, err, sizeof(err)) == NULL && strstr(err, "max_inflight") != NULL, "negative refused: %s", err);
    unsetenv("SECKILLD_MAX_INFLIGHT");
    unlink(p);
    p = write_conf("return { listen = 'nohost' }");
    ok(sk_config_load(p, NULL, err, sizeof(err)) == NULL && strstr(err, "HOST:PORT") != NULL, "bad listen refused");
    unlink(p);
    ok(sk_config_load("/nonexistent/seckilld.conf", NULL, err, sizeof(err)) == NULL && strstr(err, "cannot read") != NULL,
       "missing file");

    test_check();
    return done();
}
