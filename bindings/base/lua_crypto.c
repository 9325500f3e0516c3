/*
 * lua_crypto.c: `crypto`, what signed purchase tokens need (crypto.h, on OpenSSL). None of these yield.
 *   crypto.hmac_sha256(key, msg) -> 64 lowercase hex digits
 *   crypto.equal(a, b)           -> boolean; constant-time for strings of equal length (compare MACs with it, never ==)
 *   crypto.random_hex(nbytes)    -> 2 * nbytes hex digits from the CSPRNG, nbytes 1..64
 * Misuse (a non-string, nbytes out of range) raises; so does a failure of OpenSSL itself, which no script can handle.
 */
#include <lauxlib.h>
#include "../../core/binding.h"
#include "crypto.h"

#define MAX_RANDOM 64

static int l_hmac_sha256(lua_State *L)
{
    size_t keylen, msglen;
    const char *key = luaL_checklstring(L, 1, &keylen), *msg = luaL_checklstring(L, 2, &msglen);
    char hex[SK_CRYPTO_SHA256_HEX_LEN + 1];
    if (sk_crypto_hmac_sha256_hex(key, keylen, msg, msglen, hex) != 0)
        return luaL_error(L, "crypto.hmac_sha256: OpenSSL failed");
    lua_pushlstring(L, hex, SK_CRYPTO_SHA256_HEX_LEN);
    return 1;
}

static int l_equal(lua_State *L)
{
    size_t alen, blen;
    const char *a = luaL_checklstring(L, 1, &alen), *b = luaL_checklstring(L, 2, &blen);
    lua_pushboolean(L, sk_crypto_equal(a, alen, b, blen));
    return 1;
}

static int l_random_hex(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= MAX_RANDOM, 1, "nbytes must be between 1 and 64");
    unsigned char bytes[MAX_RANDOM];
    char hex[2 * MAX_RANDOM + 1];
    if (sk_crypto_random(bytes, (size_t)n) != 0)
        return luaL_error(L, "crypto.random_hex: no randomness available");
    sk_crypto_hex(bytes, (size_t)n, hex);
    lua_pushlstring(L, hex, 2 * (size_t)n);
    return 1;
}

static void open_crypto(lua_State *L)
{
    static const luaL_Reg fns[] = {{"hmac_sha256", l_hmac_sha256}, {"equal", l_equal}, {"random_hex", l_random_hex}, {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_setglobal(L, "crypto");
}

const sk_binding_t sk_binding_crypto = {.name = "crypto", .open = open_crypto};
