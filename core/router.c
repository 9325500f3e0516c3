#include <stdlib.h>
#include <string.h>
#include <h2o/memory.h>
#include "router.h"

static int valid_method(const char *m)
{
    static const char *methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); ++i)
        if (strcmp(m, methods[i]) == 0)
            return 1;
    return 0;
}

static int same_shape(const sk_route_t *a, const sk_route_t *b)
{
    if (a->nsegments != b->nsegments)
        return 0;
    for (size_t i = 0; i < a->nsegments; ++i) {
        if (a->segments[i].is_param != b->segments[i].is_param)
            return 0;
        if (!a->segments[i].is_param &&
            (a->segments[i].len != b->segments[i].len || memcmp(a->segments[i].text, b->segments[i].text, a->segments[i].len)))
            return 0;
    }
    return 1;
}

static void free_route(sk_route_t *r)
{
    for (size_t i = 0; i < r->nsegments; ++i)
        free(r->segments[i].text);
    free(r->method);
    free(r->pattern);
}

int sk_router_add(sk_router_t *router, const char *method, const char *pattern, int handler_ref, const char **err)
{
    sk_route_t r = {.method = strdup(method), .pattern = strdup(pattern), .handler_ref = handler_ref};
    if (!valid_method(method)) {
        *err = "unknown HTTP method";
        goto Error;
    }
    if (pattern[0] != '/') {
        *err = "pattern must start with /";
        goto Error;
    }
    const char *p = pattern + 1;
    while (*p != '\0') {
        const char *end = strchr(p, '/');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        if (r.nsegments == SK_ROUTER_MAX_SEGMENTS) {
            *err = "too many path segments";
            goto Error;
        }
        int is_param = len >= 2 && p[0] == '{' && p[len - 1] == '}';
        if (len == 0 || (!is_param && (memchr(p, '{', len) || memchr(p, '}', len)))) {
            *err = "empty segment or misplaced brace in pattern";
            goto Error;
        }
        const char *text = is_param ? p + 1 : p;
        size_t text_len = is_param ? len - 2 : len;
        r.segments[r.nsegments].text = strndup(text, text_len);
        r.segments[r.nsegments].len = text_len;
        r.segments[r.nsegments].is_param = is_param;
        ++r.nsegments;
        p += len;
        if (*p == '/')
            ++p;
    }
    size_t nparams = 0;
    for (size_t i = 0; i < r.nsegments; ++i)
        nparams += r.segments[i].is_param;
    if (nparams > SK_ROUTER_MAX_PARAMS) {
        *err = "too many parameters";
        goto Error;
    }
    for (size_t i = 0; i < router->count; ++i) {
        if (strcmp(router->routes[i].method, method) == 0 && same_shape(&router->routes[i], &r)) {
            *err = "duplicate route";
            goto Error;
        }
    }
    if (router->count == router->capacity) {
        router->capacity = router->capacity ? router->capacity * 2 : 16;
        router->routes = h2o_mem_realloc(router->routes, router->capacity * sizeof(*router->routes));
    }
    router->routes[router->count++] = r;
    return 0;
Error:
    free_route(&r);
    return -1;
}

/* matches the segments of a route against the path; literal segments win over parameters by trying routes in order
 * literal-first is not needed for the small route sets scripts declare: the first declared match wins */
static int match_path(sk_route_t *r, const char *path, size_t path_len, sk_route_match_t *m)
{
    const char *p = path, *end = path + path_len;
    if (p == end || *p != '/')
        return 0;
    ++p;
    m->nparams = 0;
    for (size_t i = 0; i < r->nsegments; ++i) {
        const char *slash = memchr(p, '/', end - p);
        size_t len = slash != NULL ? (size_t)(slash - p) : (size_t)(end - p);
        if (len == 0)
            return 0;
        if (r->segments[i].is_param) {
            m->params[m->nparams].name = r->segments[i].text;
            m->params[m->nparams].name_len = r->segments[i].len;
            m->params[m->nparams].value = p;
            m->params[m->nparams].value_len = len;
            ++m->nparams;
        } else if (len != r->segments[i].len || memcmp(p, r->segments[i].text, len) != 0) {
            return 0;
        }
        p += len;
        if (p == end)
            return i + 1 == r->nsegments;
        ++p; /* the slash */
    }
    /* the path has more segments, or a trailing slash; "/" matches a route with no segments */
    return p == end && r->nsegments == 0;
}

int sk_router_match(sk_router_t *router, const char *method, size_t method_len, const char *path, size_t path_len,
                    sk_route_match_t *match, char *allow, size_t allow_len)
{
    int path_matched = 0;
    size_t allow_used = 0;
    if (allow != NULL && allow_len != 0)
        allow[0] = '\0';
    for (size_t i = 0; i < router->count; ++i) {
        sk_route_t *r = router->routes + i;
        sk_route_match_t m;
        if (!match_path(r, path, path_len, &m))
            continue;
        if (strlen(r->method) == method_len && memcmp(r->method, method, method_len) == 0) {
            *match = m;
            match->route = r;
            return SK_ROUTER_FOUND;
        }
        path_matched = 1;
        size_t ml = strlen(r->method);
        if (allow != NULL && allow_used + ml + 3 < allow_len) {
            if (allow_used != 0) {
                memcpy(allow + allow_used, ", ", 2);
                allow_used += 2;
            }
            memcpy(allow + allow_used, r->method, ml + 1);
            allow_used += ml;
        }
    }
    return path_matched ? SK_ROUTER_METHOD_NOT_ALLOWED : SK_ROUTER_NOT_FOUND;
}

void sk_router_dispose(sk_router_t *router)
{
    for (size_t i = 0; i < router->count; ++i)
        free_route(router->routes + i);
    free(router->routes);
    *router = (sk_router_t){NULL};
}
