/* tests core/health.c */
#include <string.h>
#include "../../../core/health.h"
#include "../test.h"

int main(void)
{
    char buf[512];
    _Atomic int *redis = sk_health_register("redis");
    atomic_store(redis, 1);
    ok(sk_health_render(buf, sizeof(buf)) == 1, "all parts up");
    ok(strcmp(buf, "{\"ok\":true,\"redis\":\"up\"}") == 0, "no status yet: %s", buf);

    sk_health_info_t *consumer = sk_health_register_info("consumer", "idle");
    ok(consumer != NULL, "registered");
    sk_health_render(buf, sizeof(buf));
    ok(strcmp(buf, "{\"ok\":true,\"redis\":\"up\",\"consumer\":\"idle\"}") == 0, "a status without detail: %s", buf);

    sk_health_info_set(consumer, "stalled", "mysql: \"down\"\\ \x01 here\nstack traceback: ...");
    ok(sk_health_render(buf, sizeof(buf)) == 1, "a stalled status never decides the status code");
    ok(strcmp(buf, "{\"ok\":true,\"redis\":\"up\",\"consumer\":\"stalled\",\"consumer_error\":\"mysql: \\\"down\\\"\\\\ \\u0001 "
                   "here\"}") == 0,
       "detail escaped, first line only: %s", buf);

    atomic_store(redis, 0);
    ok(sk_health_render(buf, sizeof(buf)) == 0, "a part down decides");

    char longer[1000];
    memset(longer, '"', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    sk_health_info_set(consumer, "stalled", longer);
    char small[256];
    sk_health_render(small, sizeof(small));
    size_t n = strlen(small);
    ok(n < sizeof(small) && small[n - 1] == '}' && small[n - 2] == '"' && small[n - 3] == '"' && small[n - 4] == '\\',
       "a long detail is shortened, never splitting an escape: %s", small);

    sk_health_info_set(consumer, "ok", NULL);
    sk_health_render(buf, sizeof(buf));
    ok(strstr(buf, "consumer_error") == NULL && strstr(buf, "\"consumer\":\"ok\"") != NULL, "detail cleared: %s", buf);
    return done();
}
