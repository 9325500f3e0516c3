/*
 * all.h: the bindings this build has, as the list the composition root hands to the core's registry
 * (core/binding.h: sk_bindings_use). The core never includes this: only core/main.c and the test harnesses that build
 * a whole server's VM (tests/fuzz) do.
 */
#ifndef SK_BINDINGS_ALL_H
#define SK_BINDINGS_ALL_H

#include "../core/binding.h"

/** every binding, in init order (the consumer needs the producer's cluster), NULL-terminated */
extern const sk_binding_t *const sk_bindings_all[];

#endif
