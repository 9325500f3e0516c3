/*
 * router.h: routes declared by app.lua — a method and a path pattern whose `{name}` segments capture — matched
 * segment by segment. No Lua knowledge: a route carries an opaque handler reference.
 */
#ifndef SK_ROUTER_H
#define SK_ROUTER_H

#include <stddef.h>

#define SK_ROUTER_MAX_SEGMENTS 16
#define SK_ROUTER_MAX_PARAMS 8

typedef struct st_sk_route_t {
    char *method;
    char *pattern;
    size_t nsegments;
    struct {
        char *text; /* literal text, or the parameter name */
        size_t len;
        int is_param;
    } segments[SK_ROUTER_MAX_SEGMENTS];
    int handler_ref;
    /** the route's option `shed = false` (app.route): never answered 503 "overloaded", however busy the thread (the
     * operator's routes must work during the flood they are used to handle) */
    int never_shed;
    /** per-route metrics cache, filled by the HTTP layer (status -> series) */
    struct {
        int status;
        void *series;
    } status_cache[8];
    void *latency;
} sk_route_t;

typedef struct st_sk_router_t {
    sk_route_t *routes;
    size_t count, capacity;
} sk_router_t;

typedef struct st_sk_route_match_t {
    sk_route_t *route;
    size_t nparams;
    struct {
        const char *name;
        size_t name_len;
        const char *value; /* points into the matched path, not decoded */
        size_t value_len;
    } params[SK_ROUTER_MAX_PARAMS];
} sk_route_match_t;

enum { SK_ROUTER_FOUND = 0, SK_ROUTER_NOT_FOUND = 1, SK_ROUTER_METHOD_NOT_ALLOWED = 2 };

/** adds a route; returns 0, or -1 with a reason ("pattern must start with /", "duplicate route", ...) */
int sk_router_add(sk_router_t *router, const char *method, const char *pattern, int handler_ref, const char **err);
/** matches a path (without query string). On METHOD_NOT_ALLOWED, allow gets the comma-separated methods that would
 * match (allow may be NULL). */
int sk_router_match(sk_router_t *router, const char *method, size_t method_len, const char *path, size_t path_len,
                    sk_route_match_t *match, char *allow, size_t allow_len);
void sk_router_dispose(sk_router_t *router);

#endif
