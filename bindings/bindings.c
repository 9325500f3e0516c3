#include "bindings.h"

extern const sk_binding_t sk_binding_core;
extern const sk_binding_t sk_binding_shared;
extern const sk_binding_t sk_binding_semaphore;
extern const sk_binding_t sk_binding_kafka;
extern const sk_binding_t sk_binding_redis;
extern const sk_binding_t sk_binding_mysql;
extern const sk_binding_t sk_binding_metrics;

/* order matters only for init (e.g. the consumer needs the producer's cluster); one line per binding */
/* clang-format off */
static const sk_binding_t *all[] = {
    &sk_binding_core,
    &sk_binding_shared,
    &sk_binding_semaphore,
    &sk_binding_kafka,
    &sk_binding_redis,
    &sk_binding_mysql,
    &sk_binding_metrics,
};
/* clang-format on */

#define FOREACH_BINDING(b)                                                                                                         \
    for (size_t _i = 0; _i < sizeof(all) / sizeof(all[0]); ++_i)                                                                   \
        for (const sk_binding_t *b = all[_i]; b != NULL; b = NULL)

int sk_bindings_init(sk_config_t *cfg, unsigned nthreads)
{
    FOREACH_BINDING(b)
    if (b->init != NULL && b->init(cfg, nthreads) != 0)
        return -1;
    return 0;
}

void sk_bindings_thread_init(sk_loop_t *loop)
{
    FOREACH_BINDING(b)
    if (b->thread_init != NULL)
        b->thread_init(loop);
}

void sk_bindings_open(lua_State *L)
{
    FOREACH_BINDING(b)
    if (b->open != NULL)
        b->open(L);
}

void sk_bindings_thread_dispose(sk_loop_t *loop)
{
    FOREACH_BINDING(b)
    if (b->thread_dispose != NULL)
        b->thread_dispose(loop);
}

void sk_bindings_shutdown(void)
{
    FOREACH_BINDING(b)
    if (b->shutdown != NULL)
        b->shutdown();
}
