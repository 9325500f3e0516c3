/*
 * redis_cluster.c: a Redis Cluster's redirections and the slots of our commands (bindings/redis/redirect.c,
 * slot.c): an error reply's text parsed as MOVED / ASK / TRYAGAIN / CLUSTERDOWN and a MOVED applied to the slot map
 * as sk_redis_cluster_moved applies it (cluster_map.c); then a command's words through the key table, the hash tags
 * and CRC16 (the slot a command is sent to), and each slot's token back to its slot.
 *
 * Input: the error reply's text on the first line, then a command, one argument per line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../bindings/redis/cluster_map.h"
#include "../../bindings/redis/redirect.h"
#include "../../bindings/redis/slot.h"
#include "harness.h"

#define MAX_ARGS 64

static void check_redirect(const char *text, size_t len)
{
    static sk_redis_cluster_map_t map;
    static int ready;
    if (!ready) {
        sk_redis_cluster_map_init(&map);
        ready = 1;
    }
    sk_redis_redirect_t rd;
    sk_redis_redirect_kind_t kind = sk_redis_redirect_parse(text, len, &rd);
    if (kind != rd.kind)
        abort();
    if (kind != SK_REDIS_REDIRECT_MOVED && kind != SK_REDIS_REDIRECT_ASK)
        return;
    size_t hlen = strnlen(rd.host, sizeof(rd.host));
    if (rd.slot < 0 || rd.slot >= SK_REDIS_SLOTS || rd.port < 1 || rd.port > 65535 || hlen == sizeof(rd.host) || hlen == 0)
        abort();
    /* sk_redis_cluster_moved (ASK: sk_redis_cluster_pool_at, which only makes the node known) */
    if (map.nnodes == SK_REDIS_CLUSTER_MAX_NODES)
        sk_redis_cluster_map_init(&map);
    int node = sk_redis_cluster_map_node(&map, rd.host, rd.port, 1);
    if (node < 0)
        abort(); /* a host the parser accepted fits the map */
    if (node >= 0 && kind == SK_REDIS_REDIRECT_MOVED) {
        sk_redis_cluster_map_set(&map, rd.slot, node);
        if (map.owner[rd.slot] != node || sk_redis_cluster_map_master_slot(&map, rd.slot) > rd.slot)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size, *line;
    size_t len;
    if ((line = fuzz_next_line(&p, end, &len)) == NULL)
        return 0;
    check_redirect(line, len);

    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    int argc = 0;
    while (argc != MAX_ARGS && (line = fuzz_next_line(&p, end, &len)) != NULL) {
        argv[argc] = line;
        lens[argc++] = len;
    }
    int slot = sk_redis_slot_of_command(argc, argv, lens);
    if (slot != SK_REDIS_SLOT_NONE && slot != SK_REDIS_SLOT_CROSS && (slot < 0 || slot >= SK_REDIS_SLOTS))
        abort();
    for (int i = 0; i != argc; ++i) {
        size_t taglen;
        const char *tag = sk_redis_slot_hashtag(argv[i], lens[i], &taglen);
        if (tag < argv[i] || tag + taglen > argv[i] + lens[i])
            abort();
        int s = sk_redis_slot_of_key(argv[i], lens[i]);
        const char *token = sk_redis_slot_token(s);
        if (token == NULL || strlen(token) > SK_REDIS_SLOT_TOKEN_MAX || sk_redis_slot_of_key(token, strlen(token)) != s)
            abort();
    }
    return 0;
}
