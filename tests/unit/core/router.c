/* tests core/router.c */
#include <string.h>
#include "../../../core/router.h"
#include "../test.h"

static int match(sk_router_t *r, const char *method, const char *path, sk_route_match_t *m, char *allow)
{
    return sk_router_match(r, method, strlen(method), path, strlen(path), m, allow, 64);
}

int main(void)
{
    sk_router_t r = {0};
    const char *err = NULL;
    ok(sk_router_add(&r, "GET", "/order/{order_id}", 1, &err) == 0, "add param route");
    ok(sk_router_add(&r, "GET", "/orders", 2, &err) == 0, "add literal route");
    ok(sk_router_add(&r, "PUT", "/admin/items/{item_id}", 3, &err) == 0, "add put");
    ok(sk_router_add(&r, "GET", "/admin/items/{item_id}", 4, &err) == 0, "add get, same path");
    ok(sk_router_add(&r, "GET", "/", 5, &err) == 0, "add root");
    ok(sk_router_add(&r, "GET", "/order/{other}", 9, &err) != 0 && strcmp(err, "duplicate route") == 0, "duplicate shape");
    ok(sk_router_add(&r, "BREW", "/x", 9, &err) != 0, "unknown method refused");
    ok(sk_router_add(&r, "GET", "x", 9, &err) != 0, "pattern without slash refused");
    ok(sk_router_add(&r, "GET", "/a//b", 9, &err) != 0, "empty segment refused");
    ok(sk_router_add(&r, "GET", "/a{b}", 9, &err) != 0, "brace inside literal refused");

    sk_route_match_t m;
    char allow[64];
    ok(match(&r, "GET", "/order/abc-123", &m, allow) == SK_ROUTER_FOUND && m.route->handler_ref == 1, "param match");
    ok(m.nparams == 1 && m.params[0].value_len == 7 && memcmp(m.params[0].value, "abc-123", 7) == 0, "param value");
    ok(m.params[0].name_len == 8 && memcmp(m.params[0].name, "order_id", 8) == 0, "param name");
    ok(match(&r, "GET", "/orders", &m, allow) == SK_ROUTER_FOUND && m.route->handler_ref == 2, "literal");
    ok(match(&r, "GET", "/order", &m, allow) == SK_ROUTER_NOT_FOUND, "missing param segment");
    ok(match(&r, "GET", "/order/", &m, allow) == SK_ROUTER_NOT_FOUND, "empty param");
    ok(match(&r, "GET", "/order/a/b", &m, allow) == SK_ROUTER_NOT_FOUND, "extra segment");
    ok(match(&r, "GET", "/orders/", &m, allow) == SK_ROUTER_NOT_FOUND, "trailing slash");
    ok(match(&r, "GET", "/", &m, allow) == SK_ROUTER_FOUND && m.route->handler_ref == 5, "root");
    ok(match(&r, "POST", "/orders", &m, allow) == SK_ROUTER_METHOD_NOT_ALLOWED && strcmp(allow, "GET") == 0, "405 allow");
    ok(match(&r, "DELETE", "/admin/items/x", &m, allow) == SK_ROUTER_METHOD_NOT_ALLOWED && strcmp(allow, "PUT, GET") == 0,
       "405 lists every method: %s", allow);
    ok(match(&r, "PUT", "/admin/items/x", &m, allow) == SK_ROUTER_FOUND && m.route->handler_ref == 3, "method picks route");
    ok(match(&r, "GET", "", &m, allow) == SK_ROUTER_NOT_FOUND, "empty path");
    sk_router_dispose(&r);
    return done();
}
