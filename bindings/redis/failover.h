/*
 * failover.h: the slots whose master failed over to a replica, process-wide, until the loss watcher has looked.
 *
 * A replica promoted after its master died may lack the master's last acknowledged writes (replication is
 * asynchronous). books/loss.lua sees that by the master's run_id within a round and rebuilds its items from MySQL,
 * but a buy in between would take the replica's stale stock. So each thread, when its slot map first shows a
 * replica owning its former master's slots (a refresh's CLUSTER SLOTS, or a MOVED: cluster.c), notes those slots
 * here under a new generation; the sale asks sk_redis_failover_pending before a take and refuses while a slot's
 * generation is newer than the last one the watcher settled (a round that began after it and found every master's
 * epoch at its run_id, so every loss is marked in Redis). Atomics only: any thread notes, any thread reads.
 */
#ifndef SK_REDIS_FAILOVER_H
#define SK_REDIS_FAILOVER_H

#include <stdint.h>

/** a new generation for the slots marked 1 in failed_over[SK_REDIS_SLOTS] (or for the one slot when failed_over is
 * NULL); returns it */
uint32_t sk_redis_failover_note(const uint8_t *failed_over, int slot);
/** the newest generation noted (0: none yet) */
uint32_t sk_redis_failover_generation(void);
/** the watcher has looked at every master since generation gen was read: slots noted up to gen are no longer
 * pending (a smaller gen than already settled changes nothing) */
void sk_redis_failover_settle(uint32_t gen);
/** whether slot's master failed over and the watcher has not looked since */
int sk_redis_failover_pending(int slot);

#endif
