/* reply.c: deep copies of hiredis replies (reply.h) */
#include <string.h>
#include "../../core/loop.h"
#include "reply.h"

redisReply *sk_redis_reply_dup(const redisReply *src)
{
    redisReply *r = h2o_mem_alloc(sizeof(*r));
    *r = *src;
    r->str = NULL;
    r->element = NULL;
    switch (src->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        r->str = h2o_mem_alloc(src->len + 1);
        memcpy(r->str, src->str, src->len);
        r->str[src->len] = '\0';
        break;
    case REDIS_REPLY_ARRAY:
        if (src->elements != 0) {
            r->element = h2o_mem_alloc(src->elements * sizeof(*r->element));
            for (size_t i = 0; i != src->elements; ++i)
                r->element[i] = sk_redis_reply_dup(src->element[i]);
        }
        break;
    default:
        break;
    }
    return r;
}
