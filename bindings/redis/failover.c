/* failover.c: the slots whose master failed over, process-wide (failover.h) */
#include <stdatomic.h>
#include "failover.h"
#include "slot.h"

static _Atomic uint32_t slot_generation[SK_REDIS_SLOTS];
static _Atomic uint32_t generation, settled;

uint32_t sk_redis_failover_note(const uint8_t *failed_over, int slot)
{
    uint32_t gen = atomic_fetch_add(&generation, 1) + 1;
    if (failed_over == NULL) {
        atomic_store(&slot_generation[slot], gen);
        return gen;
    }
    for (int i = 0; i != SK_REDIS_SLOTS; ++i)
        if (failed_over[i])
            atomic_store(&slot_generation[i], gen);
    return gen;
}

uint32_t sk_redis_failover_generation(void)
{
    return atomic_load(&generation);
}

void sk_redis_failover_settle(uint32_t gen)
{
    uint32_t cur = atomic_load(&settled);
    while (gen > cur && !atomic_compare_exchange_weak(&settled, &cur, gen))
        ;
}

int sk_redis_failover_pending(int slot)
{
    return slot >= 0 && slot < SK_REDIS_SLOTS && atomic_load(&slot_generation[slot]) > atomic_load(&settled);
}
