/* tests bindings/redis/cluster_map.c: building the slot map from a CLUSTER SLOTS reply (fed as RESP through
 * hiredis's reader, as it comes off the wire), node numbers kept across refreshes, MOVED updates, the replicas kept
 * apart, and a slot's new owner told a failover (a replica of its owner, or its owner down) from a reshard */
#include <stdio.h>
#include <string.h>
#include "../../../../bindings/redis/cluster_map.h"
#include "../../test.h"

static redisReply *parse(const char *resp)
{
    redisReader *reader = redisReaderCreate();
    void *reply = NULL;
    redisReaderFeed(reader, resp, strlen(resp));
    if (redisReaderGetReply(reader, &reply) != REDIS_OK)
        reply = NULL;
    redisReaderFree(reader);
    return reply;
}

/* three masters (one with a replica), as Redis 7 answers (ip, port, id, then a metadata map as an empty array) */
static const char three[] = "*3\r\n"
                            "*3\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$2\r\nid\r\n"
                            "*4\r\n:5461\r\n:10922\r\n*3\r\n$9\r\n127.0.0.1\r\n:7002\r\n$2\r\nid\r\n"
                            "*3\r\n$9\r\n127.0.0.1\r\n:7004\r\n$2\r\nid\r\n"
                            "*3\r\n:10923\r\n:16383\r\n*3\r\n$0\r\n\r\n:7003\r\n$2\r\nid\r\n";

int main(void)
{
    static sk_redis_cluster_map_t map, next;
    char err[128] = "";
    redisReply *r = parse(three);
    ok(r != NULL, "the RESP parses");
    ok(sk_redis_cluster_map_from_reply(&map, NULL, r, "10.1.1.1", err, sizeof(err)) == 0, "built: %s", err);
    ok(map.nnodes == 3, "three masters, the replica is not a node of the map (%zu)", map.nnodes);
    ok(map.nreplicas == 1 && map.replicas[0].port == 7004 && strcmp(map.replicas[0].ip, "127.0.0.1") == 0 &&
           map.replicas[0].of == 1,
       "7004 kept as 7002's replica");
    ok(map.owner[0] == 0 && map.owner[5460] == 0 && map.owner[5461] == 1 && map.owner[10922] == 1 && map.owner[10923] == 2 &&
           map.owner[16383] == 2,
       "the ranges");
    ok(strcmp(map.nodes[0].ip, "127.0.0.1") == 0 && map.nodes[0].port == 7001 && map.nodes[0].master, "node 0");
    ok(strcmp(map.nodes[2].ip, "10.1.1.1") == 0 && map.nodes[2].port == 7003, "an empty ip is the queried node's (%s)",
       map.nodes[2].ip);
    ok(sk_redis_cluster_map_unowned(&map) == 0, "every slot owned");
    freeReplyObject(r);

    /* a MOVED: one slot changes owner; a new address becomes a new node */
    ok(!sk_redis_cluster_map_is_failover(&map, 42, "127.0.0.1", 7009, NULL), "a slot moving to a new node: no failover");
    ok(sk_redis_cluster_map_is_failover(&map, 6000, "127.0.0.1", 7004, NULL), "its master's slot going to the replica is");
    ok(!sk_redis_cluster_map_is_failover(&map, 42, "127.0.0.1", 7004, NULL), "another master's slot going to it is not");
    ok(!sk_redis_cluster_map_is_failover(&map, 6000, "127.0.0.1", 7002, NULL), "its own owner: nothing moved");
    {
        uint8_t down[SK_REDIS_CLUSTER_MAX_NODES] = {0};
        down[0] = 1;
        ok(sk_redis_cluster_map_is_failover(&map, 42, "127.0.0.1", 7009, down),
           "a slot of an owner that is down, taken by a node not known as its replica: a failover all the same");
    }
    int n = sk_redis_cluster_map_node(&map, "127.0.0.1", 7009, 1);
    ok(n == 3, "a new node gets the next number (%d)", n);
    sk_redis_cluster_map_set(&map, 42, n);
    ok(map.owner[42] == 3 && map.nodes[3].master, "slot 42 moved");
    ok(sk_redis_cluster_map_node(&map, "127.0.0.1", 7002, 0) == 1, "lookup without adding");
    ok(sk_redis_cluster_map_node(&map, "127.0.0.1", 7777, 0) == -1, "unknown");

    /* a refresh keeps the numbers of the nodes it knew, in order, even one that no longer owns a slot */
    r = parse("*2\r\n"
              "*3\r\n:0\r\n:8191\r\n*2\r\n$8\r\n10.1.1.1\r\n:7003\r\n"
              "*3\r\n:8192\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:7005\r\n");
    ok(sk_redis_cluster_map_from_reply(&next, &map, r, "127.0.0.1", err, sizeof(err)) == 0, "refreshed: %s", err);
    ok(next.nnodes == 5, "four known + one new (%zu)", next.nnodes);
    ok(next.owner[0] == 2 && next.owner[16383] == 4, "old numbers kept, the new node is 4");
    ok(!next.nodes[0].master && !next.nodes[3].master && next.nodes[2].master && next.nodes[4].master, "masters of this map");
    ok(next.nreplicas == 0, "replicas are not carried over: this reply lists none");
    freeReplyObject(r);

    /* one slot per master, the first it owns (redis.masters), and the master standing for a slot (redis.master_of) */
    int firsts[8];
    ok(sk_redis_cluster_map_masters(&map, firsts, 8) == 4 && firsts[0] == 0 && firsts[1] == 42 && firsts[2] == 5461 &&
           firsts[3] == 10923,
       "four masters: 7001 from 0 (its 43.. is not another), 7009 from 42 (moved there), 7002, 7003");
    {
        /* 7002 dies and its replica 7004 takes its slots over (a new node of the map); 7003's go to 7002's address,
         * no replica of it: a failover of 7002's slots only */
        static sk_redis_cluster_map_t after;
        static uint8_t failed[SK_REDIS_SLOTS];
        redisReply *f = parse("*3\r\n"
                              "*3\r\n:0\r\n:5460\r\n*2\r\n$9\r\n127.0.0.1\r\n:7001\r\n"
                              "*3\r\n:5461\r\n:10922\r\n*2\r\n$9\r\n127.0.0.1\r\n:7004\r\n"
                              "*3\r\n:10923\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:7002\r\n");
        ok(sk_redis_cluster_map_from_reply(&after, &map, f, "127.0.0.1", err, sizeof(err)) == 0, "failed over: %s", err);
        int from = -1, to = -1;
        size_t nf = sk_redis_cluster_map_failovers(&map, &after, NULL, failed, &from, &to);
        ok(nf == 10922 - 5461 + 1 && failed[5461] && failed[10922] && !failed[5460] && !failed[10923] && !failed[42],
           "the dead master's slots failed over (%zu), not 7003's, nor 42 (moved back to 7001 by a reshard)", nf);
        ok(from == 1 && after.nodes[to].port == 7004, "from 7002 to 7004 (%d -> %d)", from, to);
        ok(sk_redis_cluster_map_failovers(&after, &after, NULL, failed, NULL, NULL) == 0, "the same map again: none");
        freeReplyObject(f);
        /* a malformed replica entry is left out, the map still builds; a replica listed twice is kept once */
        f = parse("*2\r\n*5\r\n:0\r\n:99\r\n*2\r\n$9\r\n127.0.0.1\r\n:7001\r\n:3\r\n"
                  "*2\r\n$9\r\n127.0.0.1\r\n:7005\r\n"
                  "*4\r\n:100\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:7001\r\n*2\r\n$9\r\n127.0.0.1\r\n:7005\r\n");
        ok(sk_redis_cluster_map_from_reply(&after, NULL, f, "127.0.0.1", err, sizeof(err)) == 0 && after.nnodes == 1 &&
               after.nreplicas == 1 && after.replicas[0].port == 7005,
           "bad replicas skipped, one listed twice kept once (%zu nodes, %zu replicas)", after.nnodes, after.nreplicas);
        freeReplyObject(f);
    }
    ok(sk_redis_cluster_map_masters(&next, firsts, 8) == 2 && firsts[0] == 0 && firsts[1] == 8192, "after the refresh: two");
    ok(sk_redis_cluster_map_masters(&next, firsts, 1) == 1 && firsts[0] == 0, "at most max");
    ok(sk_redis_cluster_map_master_slot(&map, 5000) == 0 && sk_redis_cluster_map_master_slot(&map, 42) == 42 &&
           sk_redis_cluster_map_master_slot(&map, 16383) == 10923 && sk_redis_cluster_map_master_slot(&next, 9000) == 8192,
       "the slot standing for a slot's master");

    /* holes: slots nobody serves */
    r = parse("*1\r\n*3\r\n:0\r\n:99\r\n*2\r\n$9\r\n127.0.0.1\r\n:7001\r\n");
    ok(sk_redis_cluster_map_from_reply(&next, NULL, r, "127.0.0.1", err, sizeof(err)) == 0, "partial map");
    ok(sk_redis_cluster_map_unowned(&next) == SK_REDIS_SLOTS - 100 && next.owner[100] == SK_REDIS_CLUSTER_NO_NODE, "holes");
    freeReplyObject(r);

    /* malformed replies */
    static const char *bad[] = {
        "-ERR This instance has cluster support disabled\r\n",
        ":1\r\n",
        "*1\r\n:1\r\n",
        "*1\r\n*2\r\n:0\r\n:1\r\n",
        "*1\r\n*3\r\n:5\r\n:1\r\n*2\r\n$1\r\nh\r\n:1\r\n",
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n",
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:0\r\n",
        "*1\r\n*3\r\n:0\r\n:1\r\n*1\r\n$1\r\nh\r\n",
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n:1\r\n:1\r\n",
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        r = parse(bad[i]);
        err[0] = '\0';
        ok(r != NULL && sk_redis_cluster_map_from_reply(&next, NULL, r, "127.0.0.1", err, sizeof(err)) == -1 && err[0] != '\0',
           "malformed reply %zu refused", i);
        if (r != NULL)
            freeReplyObject(r);
    }
    ok(sk_redis_cluster_map_from_reply(&next, NULL, NULL, "127.0.0.1", err, sizeof(err)) == -1, "no reply");
    return done();
}
