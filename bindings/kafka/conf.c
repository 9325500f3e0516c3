/*
 * conf.c: librdkafka properties from the configuration, for the producer, the consumer and --redrive-dlq.
 */
#include <stdio.h>
#include "../../core/log.h"
#include "conf.h"

int sk_kafka_conf_apply(rd_kafka_conf_t *conf, sk_config_t *cfg, const char *path)
{
    lua_State *L = cfg->L;
    int ret = 0;
    sk_config_push_value(cfg, path);
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            char val[256], errstr[512];
            const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            if (lua_type(L, -1) == LUA_TBOOLEAN)
                snprintf(val, sizeof(val), "%s", lua_toboolean(L, -1) ? "true" : "false");
            else if (lua_isinteger(L, -1))
                snprintf(val, sizeof(val), "%lld", (long long)lua_tointeger(L, -1));
            else if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)
                snprintf(val, sizeof(val), "%s", lua_tostring(L, -1));
            else
                key = NULL;
            if (key == NULL) {
                sk_error("config: %s: keys must be strings and values strings, numbers or booleans", path);
                ret = -1;
            } else if (rd_kafka_conf_set(conf, key, val, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
                sk_error("config: %s.%s: %s", path, key, errstr);
                ret = -1;
            }
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        sk_error("config: %s must be a table", path);
        ret = -1;
    }
    lua_pop(L, 1);
    return ret;
}

int sk_kafka_conf_set(rd_kafka_conf_t *conf, const char *who, const char *key, const char *val)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, key, val, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        sk_error("%s: %s=%s: %s", who, key, val, errstr);
        return -1;
    }
    return 0;
}
