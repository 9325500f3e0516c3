/* cluster_map.c: the slot map (cluster_map.h) and building it from CLUSTER SLOTS */
#include <stdio.h>
#include <string.h>
#include "cluster_map.h"

void sk_redis_cluster_map_init(sk_redis_cluster_map_t *map)
{
    map->nnodes = 0;
    map->nreplicas = 0;
    for (size_t i = 0; i != SK_REDIS_SLOTS; ++i)
        map->owner[i] = SK_REDIS_CLUSTER_NO_NODE;
}

int sk_redis_cluster_map_node(sk_redis_cluster_map_t *map, const char *ip, int port, int add)
{
    for (size_t i = 0; i != map->nnodes; ++i)
        if (map->nodes[i].port == port && strcmp(map->nodes[i].ip, ip) == 0)
            return (int)i;
    if (!add || map->nnodes == SK_REDIS_CLUSTER_MAX_NODES || strlen(ip) >= sizeof(map->nodes[0].ip))
        return -1;
    sk_redis_cluster_node_t *n = &map->nodes[map->nnodes];
    *n = (sk_redis_cluster_node_t){.port = port};
    strcpy(n->ip, ip);
    return (int)map->nnodes++;
}

void sk_redis_cluster_map_set(sk_redis_cluster_map_t *map, int slot, int node)
{
    map->owner[slot] = (uint16_t)node;
    map->nodes[node].master = 1;
}

size_t sk_redis_cluster_map_masters(const sk_redis_cluster_map_t *map, int *first_slots, size_t max)
{
    uint8_t seen[SK_REDIS_CLUSTER_MAX_NODES] = {0};
    size_t n = 0;
    for (int i = 0; i != SK_REDIS_SLOTS && n != max; ++i) {
        uint16_t o = map->owner[i];
        if (o == SK_REDIS_CLUSTER_NO_NODE || seen[o])
            continue;
        seen[o] = 1;
        first_slots[n++] = i;
    }
    return n;
}

int sk_redis_cluster_map_master_slot(const sk_redis_cluster_map_t *map, int slot)
{
    uint16_t o = map->owner[slot];
    if (o == SK_REDIS_CLUSTER_NO_NODE)
        return -1;
    for (int i = 0; i != slot; ++i)
        if (map->owner[i] == o)
            return i;
    return slot;
}

size_t sk_redis_cluster_map_unowned(const sk_redis_cluster_map_t *map)
{
    size_t n = 0;
    for (size_t i = 0; i != SK_REDIS_SLOTS; ++i)
        n += map->owner[i] == SK_REDIS_CLUSTER_NO_NODE;
    return n;
}

int sk_redis_cluster_map_from_reply(sk_redis_cluster_map_t *map, const sk_redis_cluster_map_t *prev, const redisReply *reply,
                                    const char *default_ip, char *err, size_t errlen)
{
    sk_redis_cluster_map_init(map);
    if (prev != NULL) {
        for (size_t i = 0; i != prev->nnodes; ++i) {
            map->nodes[i] = prev->nodes[i];
            map->nodes[i].master = 0;
        }
        map->nnodes = prev->nnodes;
    }
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "CLUSTER SLOTS: %s", reply != NULL && reply->type == REDIS_REPLY_ERROR ? reply->str : "not an array");
        return -1;
    }
    for (size_t i = 0; i != reply->elements; ++i) {
        const redisReply *range = reply->element[i];
        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 || range->element[0]->type != REDIS_REPLY_INTEGER ||
            range->element[1]->type != REDIS_REPLY_INTEGER || range->element[2]->type != REDIS_REPLY_ARRAY ||
            range->element[2]->elements < 2) {
            snprintf(err, errlen, "CLUSTER SLOTS: range %zu is malformed", i);
            return -1;
        }
        long long start = range->element[0]->integer, end = range->element[1]->integer;
        const redisReply *master = range->element[2];
        if (start < 0 || end < start || end >= SK_REDIS_SLOTS || master->element[0]->type != REDIS_REPLY_STRING ||
            master->element[1]->type != REDIS_REPLY_INTEGER || master->element[1]->integer <= 0 ||
            master->element[1]->integer > 65535) {
            snprintf(err, errlen, "CLUSTER SLOTS: range %zu is malformed", i);
            return -1;
        }
        const char *ip = master->element[0]->len != 0 ? master->element[0]->str : default_ip;
        int node = sk_redis_cluster_map_node(map, ip, (int)master->element[1]->integer, 1);
        if (node < 0) {
            snprintf(err, errlen, "CLUSTER SLOTS: more than %d nodes, or a bad address", SK_REDIS_CLUSTER_MAX_NODES);
            return -1;
        }
        for (long long s = start; s <= end; ++s)
            sk_redis_cluster_map_set(map, (int)s, node);
    }
    /* the replicas: advisory (a failover is told by them), so one that does not parse, or past the table, is left
     * out; a master's replicas are listed again with each of its ranges, kept once */
    for (size_t i = 0; i != reply->elements; ++i) {
        const redisReply *range = reply->element[i];
        const redisReply *master = range->element[2];
        int node = sk_redis_cluster_map_node(map, master->element[0]->len != 0 ? master->element[0]->str : default_ip,
                                             (int)master->element[1]->integer, 0);
        for (size_t r = 3; node >= 0 && r < range->elements; ++r) {
            const redisReply *rep = range->element[r];
            if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 || rep->element[0]->type != REDIS_REPLY_STRING ||
                rep->element[1]->type != REDIS_REPLY_INTEGER || rep->element[1]->integer <= 0 || rep->element[1]->integer > 65535)
                continue;
            const char *ip = rep->element[0]->len != 0 ? rep->element[0]->str : default_ip;
            int port = (int)rep->element[1]->integer;
            size_t k = 0;
            while (k != map->nreplicas && !(map->replicas[k].port == port && strcmp(map->replicas[k].ip, ip) == 0))
                ++k;
            if (k == map->nreplicas) {
                if (k == SK_REDIS_CLUSTER_MAX_NODES || strlen(ip) >= sizeof(map->replicas[0].ip))
                    continue;
                ++map->nreplicas;
            }
            map->replicas[k].port = port;
            strcpy(map->replicas[k].ip, ip);
            map->replicas[k].of = (uint16_t)node;
        }
    }
    return 0;
}

int sk_redis_cluster_map_is_failover(const sk_redis_cluster_map_t *prev, int slot, const char *ip, int port, const uint8_t *down)
{
    uint16_t from = prev->owner[slot];
    if (from == SK_REDIS_CLUSTER_NO_NODE || (prev->nodes[from].port == port && strcmp(prev->nodes[from].ip, ip) == 0))
        return 0;
    if (down != NULL && down[from])
        return 1;
    for (size_t k = 0; k != prev->nreplicas; ++k)
        if (prev->replicas[k].of == from && prev->replicas[k].port == port && strcmp(prev->replicas[k].ip, ip) == 0)
            return 1;
    return 0;
}

size_t sk_redis_cluster_map_failovers(const sk_redis_cluster_map_t *prev, const sk_redis_cluster_map_t *next, const uint8_t *down,
                                      uint8_t *failed_over, int *from, int *to)
{
    size_t n = 0;
    for (int i = 0; i != SK_REDIS_SLOTS; ++i) {
        uint16_t o = next->owner[i];
        failed_over[i] = o != SK_REDIS_CLUSTER_NO_NODE && o != prev->owner[i] &&
                         sk_redis_cluster_map_is_failover(prev, i, next->nodes[o].ip, next->nodes[o].port, down);
        if (failed_over[i] && n++ == 0) {
            if (from != NULL)
                *from = prev->owner[i];
            if (to != NULL)
                *to = o;
        }
    }
    return n;
}
