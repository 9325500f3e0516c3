/* tests bindings/redis/redirect.c: MOVED / ASK / TRYAGAIN / CLUSTERDOWN error replies, good and malformed */
#include <string.h>
#include "../../../../bindings/redis/redirect.h"
#include "../../test.h"

static sk_redis_redirect_t r;

static sk_redis_redirect_kind_t parse(const char *s)
{
    return sk_redis_redirect_parse(s, strlen(s), &r);
}

int main(void)
{
    ok(parse("MOVED 3999 127.0.0.1:6381") == SK_REDIS_REDIRECT_MOVED, "MOVED");
    ok(r.slot == 3999 && strcmp(r.host, "127.0.0.1") == 0 && r.port == 6381, "MOVED target %d %s %d", r.slot, r.host, r.port);
    ok(parse("ASK 0 10.0.0.7:7000") == SK_REDIS_REDIRECT_ASK, "ASK");
    ok(r.slot == 0 && strcmp(r.host, "10.0.0.7") == 0 && r.port == 7000, "ASK target");
    ok(parse("MOVED 16383 ::1:7001") == SK_REDIS_REDIRECT_MOVED && strcmp(r.host, "::1") == 0 && r.port == 7001,
       "an IPv6 host: the port follows the last colon");
    ok(parse("TRYAGAIN Multiple keys request during rehashing of slot") == SK_REDIS_REDIRECT_TRYAGAIN, "TRYAGAIN");
    ok(parse("CLUSTERDOWN The cluster is down") == SK_REDIS_REDIRECT_CLUSTERDOWN, "CLUSTERDOWN");
    ok(parse("CLUSTERDOWN") == SK_REDIS_REDIRECT_CLUSTERDOWN, "CLUSTERDOWN alone");

    /* malformed or not a redirection: an ordinary error reply */
    static const char *bad[] = {
        "MOVED",
        "MOVED ",
        "MOVED 3999",
        "MOVED 3999 ",
        "MOVED 3999 127.0.0.1",
        "MOVED 3999 127.0.0.1:",
        "MOVED 3999 :6381",
        "MOVED 16384 127.0.0.1:6381",
        "MOVED -1 127.0.0.1:6381",
        "MOVED x 127.0.0.1:6381",
        "MOVED 3999 127.0.0.1:6381x",
        "MOVED 3999 127.0.0.1:65536",
        "MOVED 3999 127.0.0.1:0",
        "MOVED 3999  127.0.0.1:6381",
        "MOVEDX 3999 127.0.0.1:6381",
        "ASK",
        "ASK 1 host",
        "ASKING is fine",
        "ERR unknown command",
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "TRYAGAINX",
        "",
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i)
        ok(parse(bad[i]) == SK_REDIS_REDIRECT_NONE, "\"%s\" is no redirection", bad[i]);
    /* a host that does not fit is malformed, not truncated */
    char longhost[200] = "MOVED 1 ";
    memset(longhost + 8, 'h', 100);
    strcpy(longhost + 108, ":6379");
    ok(parse(longhost) == SK_REDIS_REDIRECT_NONE, "an overlong host");
    /* a NUL or a control byte in the host would cut it short or name no node (found by tests/fuzz/redis_cluster) */
    static const char nul[] = "MOVED 3999 \0\0"
                              "127.0.0.1:6381",
                      ctl[] = "ASK 1 10.0.0.7\t:7000";
    ok(sk_redis_redirect_parse(nul, sizeof(nul) - 1, &r) == SK_REDIS_REDIRECT_NONE, "a host with a NUL byte");
    ok(sk_redis_redirect_parse(ctl, sizeof(ctl) - 1, &r) == SK_REDIS_REDIRECT_NONE, "a host with a tab");
    return done();
}
