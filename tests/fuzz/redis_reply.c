/*
 * redis_reply.c: bytes off a Redis connection (RESP, parsed by hiredis's reader as the pools do) through what we do
 * with a reply: into Lua as redis.call returns it (bindings/redis/lua_value.c), into the slot map when it answers
 * CLUSTER SLOTS (cluster_map.c, over a map that already knows three masters, as a refresh does), and, for an error
 * reply, the redirection it may be (redirect.c).
 *
 * hiredis 0.14 allocates a multi-bulk's element array before its elements arrive and has no limit of its own, so an
 * input announcing more than 100,000 elements is skipped: that is the reader's allocation, not our code.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../bindings/redis/cluster_map.h"
#include "../../bindings/redis/lua_value.h"
#include "../../bindings/redis/redirect.h"

#define MAX_ELEMENTS 100000

static int too_many_elements(const char *p, size_t size)
{
    for (size_t i = 0; i != size; ++i) {
        if (p[i] != '*')
            continue;
        long long n = 0;
        for (size_t j = i + 1; j != size && p[j] >= '0' && p[j] <= '9'; ++j)
            if ((n = n * 10 + (p[j] - '0')) > MAX_ELEMENTS)
                return 1;
    }
    return 0;
}

/* what the Lua side may meet: the redis.call contract (lua_value.h), recursively */
static void check_value(lua_State *L, int idx, const redisReply *r, int nested)
{
    int t = lua_type(L, idx);
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (t != LUA_TSTRING || len != r->len || memcmp(s, r->str, len) != 0)
            abort();
        break;
    }
    case REDIS_REPLY_INTEGER:
        if (!lua_isinteger(L, idx) || lua_tointeger(L, idx) != r->integer)
            abort();
        break;
    case REDIS_REPLY_ARRAY:
        if (t != LUA_TTABLE || lua_rawlen(L, idx) != r->elements)
            abort();
        for (size_t i = 0; i != r->elements; ++i) {
            lua_rawgeti(L, idx, (lua_Integer)i + 1);
            check_value(L, lua_gettop(L), r->element[i], 1);
            lua_pop(L, 1);
        }
        break;
    case REDIS_REPLY_ERROR:
        if (t != LUA_TTABLE || lua_getfield(L, idx, "err") != LUA_TSTRING)
            abort();
        lua_pop(L, 1);
        break;
    default:
        if (nested ? t != LUA_TBOOLEAN : t != LUA_TNIL)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lua_State *L;
    static sk_redis_cluster_map_t prev, map;
    if (L == NULL) {
        L = luaL_newstate();
        sk_redis_cluster_map_init(&prev);
        for (int i = 0; i != 3; ++i) {
            int node = sk_redis_cluster_map_node(&prev, "127.0.0.1", 7001 + i, 1);
            for (int s = i * 5461; s != (i == 2 ? SK_REDIS_SLOTS : (i + 1) * 5461); ++s)
                sk_redis_cluster_map_set(&prev, s, node);
        }
    }
    if (too_many_elements((const char *)data, size))
        return 0;
    redisReader *reader = redisReaderCreate();
    redisReaderFeed(reader, (const char *)data, size);
    void *reply;
    while (redisReaderGetReply(reader, &reply) == REDIS_OK && reply != NULL) {
        redisReply *r = reply;
        char err[256];
        /* (an array only: the map's 16,384 slots make every call slow, and anything else is refused at once) */
        if (r->type == REDIS_REPLY_ARRAY && sk_redis_cluster_map_from_reply(&map, &prev, r, "10.0.0.1", err, sizeof(err)) == 0) {
            if (map.nnodes < prev.nnodes || map.nnodes > SK_REDIS_CLUSTER_MAX_NODES)
                abort();
            int first[SK_REDIS_CLUSTER_MAX_NODES];
            size_t n = sk_redis_cluster_map_masters(&map, first, SK_REDIS_CLUSTER_MAX_NODES);
            for (size_t i = 0; i != n; ++i)
                if (sk_redis_cluster_map_master_slot(&map, first[i]) != first[i])
                    abort();
            for (int s = 0; s != SK_REDIS_SLOTS; ++s)
                if (map.owner[s] != SK_REDIS_CLUSTER_NO_NODE && (map.owner[s] >= map.nnodes || !map.nodes[map.owner[s]].master))
                    abort();
        }
        if (r->type == REDIS_REPLY_ERROR) {
            sk_redis_redirect_t rd;
            sk_redis_redirect_parse(r->str, r->len, &rd);
        }
        int top = lua_gettop(L);
        if (r->type != REDIS_REPLY_ERROR) {
            sk_redis_value_push(L, r, 0);
            check_value(L, top + 1, r, 0);
            lua_settop(L, top);
        }
        int n = sk_redis_value_push_result(L, r, NULL); /* frees r */
        if (n != lua_gettop(L) - top)
            abort();
        lua_settop(L, top);
    }
    redisReaderFree(reader);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
