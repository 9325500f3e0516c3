/*
 * cmd.h: a Redis command kept for later (a transaction's WATCH, reads and queued writes, resent on every try; an
 * EVALSHA resent after NOSCRIPT). hiredis copies a command's arguments when it is sent, so a command that is only
 * sent once needs no copy. No Lua here (lua_value.h builds these from Lua values).
 */
#ifndef SK_REDIS_CMD_H
#define SK_REDIS_CMD_H

#include <stddef.h>

/** a command in one malloc'd block: argv, lens and the words (each NUL-terminated) follow the struct. Free with
 * free(). */
typedef struct st_sk_redis_cmd_t {
    int argc;
    const char **argv;
    size_t *lens;
} sk_redis_cmd_t;

/** copies argc words (binary-safe: lens[i] bytes each) into a new command */
sk_redis_cmd_t *sk_redis_cmd_new(int argc, const char *const *argv, const size_t *lens);

#endif
