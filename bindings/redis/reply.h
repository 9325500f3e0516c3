/*
 * reply.h: a hiredis reply kept beyond its callback. hiredis frees every reply as soon as the callback that
 * received it returns, so whatever is turned into Lua values later (when the coroutine resumes, from the loop)
 * is a deep copy made inside the callback. No Lua here.
 */
#ifndef SK_REDIS_REPLY_H
#define SK_REDIS_REPLY_H

#include <hiredis/hiredis.h>

/** deep-copies a reply into malloc'd memory; free it with hiredis's freeReplyObject */
redisReply *sk_redis_reply_dup(const redisReply *reply);

#endif
