/* cmd.c: commands copied into one block (cmd.h) */
#include <string.h>
#include "../../core/loop.h"
#include "cmd.h"

sk_redis_cmd_t *sk_redis_cmd_new(int argc, const char *const *argv, const size_t *lens)
{
    size_t bytes = 0;
    for (int i = 0; i != argc; ++i)
        bytes += lens[i] + 1;
    sk_redis_cmd_t *c = h2o_mem_alloc(sizeof(*c) + argc * (sizeof(char *) + sizeof(size_t)) + bytes);
    c->argc = argc;
    c->argv = (const char **)(c + 1);
    c->lens = (size_t *)(c->argv + argc);
    char *p = (char *)(c->lens + argc);
    for (int i = 0; i != argc; ++i) {
        memcpy(p, argv[i], lens[i]);
        p[lens[i]] = '\0';
        c->argv[i] = p;
        c->lens[i] = lens[i];
        p += lens[i] + 1;
    }
    return c;
}
