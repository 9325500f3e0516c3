/*
 * cluster_map.h: a Redis Cluster's slot map: which master owns each of the 16384 slots, and the nodes by address.
 *
 * Built from a CLUSTER SLOTS reply (the first node of each range is its master; the others, its replicas, are kept
 * apart by address, never routed to, so that a replica taking over its master's slots is told from a reshard),
 * updated one slot at a time by a MOVED, copied whole between threads. Nodes are numbered by their position in `nodes`; a
 * node, once known, keeps its number in a map (a refresh builds a new map that keeps the old numbers: see
 * sk_redis_cluster_map_from_reply), so per-node state elsewhere (cluster.c's pools) can be indexed by it. No I/O, no
 * Lua.
 */
#ifndef SK_REDIS_CLUSTER_MAP_H
#define SK_REDIS_CLUSTER_MAP_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include "slot.h"

#define SK_REDIS_CLUSTER_MAX_NODES 64
/** owner[slot] of a slot no master serves */
#define SK_REDIS_CLUSTER_NO_NODE 0xffff

typedef struct st_sk_redis_cluster_node_t {
    char ip[64];
    int port;
    /** owns at least one slot in this map */
    int master;
} sk_redis_cluster_node_t;

/** a replica as the last CLUSTER SLOTS listed it: its address and the node (a master) it replicates */
typedef struct st_sk_redis_cluster_replica_t {
    char ip[64];
    int port;
    uint16_t of;
} sk_redis_cluster_replica_t;

typedef struct st_sk_redis_cluster_map_t {
    uint16_t owner[SK_REDIS_SLOTS];
    size_t nnodes;
    sk_redis_cluster_node_t nodes[SK_REDIS_CLUSTER_MAX_NODES];
    /** the replicas of the reply the map was built from (not carried over: each refresh lists them anew) */
    size_t nreplicas;
    sk_redis_cluster_replica_t replicas[SK_REDIS_CLUSTER_MAX_NODES];
} sk_redis_cluster_map_t;

/** an empty map: no node, no slot owned */
void sk_redis_cluster_map_init(sk_redis_cluster_map_t *map);
/** the number of the node at ip:port, adding it if add (as a non-master); -1 if unknown (or the map is full) */
int sk_redis_cluster_map_node(sk_redis_cluster_map_t *map, const char *ip, int port, int add);
/** makes node the owner of slot (a MOVED); marks it a master */
void sk_redis_cluster_map_set(sk_redis_cluster_map_t *map, int slot, int node);

/** fills map from a CLUSTER SLOTS reply: [[start, end, [ip, port, id...], replicas...], ...]. The nodes of `prev`
 * (may be NULL) keep their numbers, in the same order, before any new one; an empty ip (a node that does not know
 * its own address) is taken to be `default_ip`. Returns 0, or -1 with a message in err (map is then unspecified). */
int sk_redis_cluster_map_from_reply(sk_redis_cluster_map_t *map, const sk_redis_cluster_map_t *prev, const redisReply *reply,
                                    const char *default_ip, char *err, size_t errlen);

/** the first slot of each master that owns slots in this map, in slot order (one per master: a master's first slot
 * stands for it, e.g. its slot token in redis.masters()), at most max of them in first_slots; returns how many */
size_t sk_redis_cluster_map_masters(const sk_redis_cluster_map_t *map, int *first_slots, size_t max);
/** the first slot that the owner of slot owns (the slot standing for that master), or -1 if slot has no owner */
int sk_redis_cluster_map_master_slot(const sk_redis_cluster_map_t *map, int slot);

/** the slots no master owns */
size_t sk_redis_cluster_map_unowned(const sk_redis_cluster_map_t *map);

/** whether the node at ip:port taking slot over from its owner in `prev` is a failover: it was listed in `prev` as a
 * replica of that owner, or the owner is down (down[owner] set; down may be NULL): a reshard moves slots between
 * live masters, a failover to a replica, perhaps one that joined after prev was built. */
int sk_redis_cluster_map_is_failover(const sk_redis_cluster_map_t *prev, int slot, const char *ip, int port, const uint8_t *down);
/** marks in failed_over[slot] (1) every slot whose owner in `next` took it over from its owner in `prev` by a
 * failover (sk_redis_cluster_map_is_failover; next numbers nodes as prev does, as map_from_reply keeps them);
 * returns how many. *from and *to (may be NULL) get the nodes of the first such slot. */
size_t sk_redis_cluster_map_failovers(const sk_redis_cluster_map_t *prev, const sk_redis_cluster_map_t *next, const uint8_t *down,
                                      uint8_t *failed_over, int *from, int *to);

#endif
