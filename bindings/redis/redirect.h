/*
 * redirect.h: what a Redis Cluster node's error reply asks of the client.
 *
 *   MOVED <slot> <ip>:<port>   the slot lives on that node now: update the map, send the command there
 *   ASK <slot> <ip>:<port>     the slot is migrating and this key is already there: ASKING + the command on that
 *                              node, once, without touching the map
 *   TRYAGAIN ...               a multi-key command during a migration: try again a little later
 *   CLUSTERDOWN ...            the cluster (or this slot) is not served right now: try again a little later
 *
 * A MOVED or ASK that does not parse is not a redirection (the caller sees the error reply as it came). Pure
 * functions: no I/O, no Lua.
 */
#ifndef SK_REDIS_REDIRECT_H
#define SK_REDIS_REDIRECT_H

#include <stddef.h>

typedef enum {
    SK_REDIS_REDIRECT_NONE, /* not a cluster redirection: an ordinary error reply */
    SK_REDIS_REDIRECT_MOVED,
    SK_REDIS_REDIRECT_ASK,
    SK_REDIS_REDIRECT_TRYAGAIN,
    SK_REDIS_REDIRECT_CLUSTERDOWN
} sk_redis_redirect_kind_t;

typedef struct st_sk_redis_redirect_t {
    sk_redis_redirect_kind_t kind;
    /** MOVED and ASK only */
    int slot;
    char host[64];
    int port;
} sk_redis_redirect_t;

/** parses the text of an error reply (len bytes, e.g. "MOVED 3999 127.0.0.1:6381"); returns out->kind */
sk_redis_redirect_kind_t sk_redis_redirect_parse(const char *str, size_t len, sk_redis_redirect_t *out);

#endif
