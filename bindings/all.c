/*
 * all.c: the bindings this build has, in init order; one line per binding.
 */
#include "all.h"

extern const sk_binding_t sk_binding_core;
extern const sk_binding_t sk_binding_shared;
extern const sk_binding_t sk_binding_limit;
extern const sk_binding_t sk_binding_crypto;
extern const sk_binding_t sk_binding_semaphore;
extern const sk_binding_t sk_binding_lane;
extern const sk_binding_t sk_binding_static;
extern const sk_binding_t sk_binding_kafka;
extern const sk_binding_t sk_binding_redis;
extern const sk_binding_t sk_binding_mysql;
extern const sk_binding_t sk_binding_metrics;
extern const sk_binding_t sk_binding_script_keys;

/* order matters only for init (e.g. the consumer needs the producer's cluster) */
/* clang-format off */
const sk_binding_t *const sk_bindings_all[] = {
    &sk_binding_core,
    &sk_binding_shared,
    &sk_binding_limit,
    &sk_binding_crypto,
    &sk_binding_semaphore,
    &sk_binding_lane,
    &sk_binding_static,
    &sk_binding_kafka,
    &sk_binding_redis,
    &sk_binding_mysql,
    &sk_binding_metrics,
    &sk_binding_script_keys,
    NULL,
};
/* clang-format on */
