/* redirect.c: parsing MOVED / ASK / TRYAGAIN / CLUSTERDOWN error replies (redirect.h) */
#include <string.h>
#include "redirect.h"
#include "slot.h"

static int has_word(const char *str, size_t len, const char *word)
{
    size_t n = strlen(word);
    return len >= n && memcmp(str, word, n) == 0 && (len == n || str[n] == ' ');
}

/* a decimal number of str[*pos..] up to the next stop character; -1 if none or beyond max */
static long parse_number(const char *str, size_t len, size_t *pos, char stop, long max)
{
    long n = 0;
    size_t start = *pos;
    for (; *pos != len && str[*pos] != stop; ++*pos) {
        if (str[*pos] < '0' || str[*pos] > '9')
            return -1;
        n = n * 10 + (str[*pos] - '0');
        if (n > max)
            return -1;
    }
    return *pos == start ? -1 : n;
}

/* "<slot> <host>:<port>" after the word: host may be an IPv6 address (the port follows the last ':') */
static int parse_target(const char *str, size_t len, sk_redis_redirect_t *out)
{
    size_t pos = 0;
    long slot = parse_number(str, len, &pos, ' ', SK_REDIS_SLOTS - 1);
    if (slot < 0 || pos == len)
        return -1;
    const char *host = str + pos + 1, *end = str + len;
    const char *colon = NULL;
    for (const char *p = host; p != end; ++p)
        if (*p == ':')
            colon = p;
    if (colon == NULL || colon == host || (size_t)(colon - host) >= sizeof(out->host))
        return -1;
    /* a host name or an address: printable, no space. A NUL byte would cut it short (an empty host, or another
     * node's) once it is a C string in the slot map */
    for (const char *p = host; p != colon; ++p)
        if (*p <= ' ' || *p > '~')
            return -1;
    size_t ppos = (size_t)(colon + 1 - str);
    long port = parse_number(str, len, &ppos, '\0', 65535);
    if (port <= 0 || ppos != len)
        return -1;
    out->slot = (int)slot;
    memcpy(out->host, host, colon - host);
    out->host[colon - host] = '\0';
    out->port = (int)port;
    return 0;
}

sk_redis_redirect_kind_t sk_redis_redirect_parse(const char *str, size_t len, sk_redis_redirect_t *out)
{
    *out = (sk_redis_redirect_t){.kind = SK_REDIS_REDIRECT_NONE};
    if (has_word(str, len, "MOVED") && len > 6 && parse_target(str + 6, len - 6, out) == 0)
        out->kind = SK_REDIS_REDIRECT_MOVED;
    else if (has_word(str, len, "ASK") && len > 4 && parse_target(str + 4, len - 4, out) == 0)
        out->kind = SK_REDIS_REDIRECT_ASK;
    else if (has_word(str, len, "TRYAGAIN"))
        out->kind = SK_REDIS_REDIRECT_TRYAGAIN;
    else if (has_word(str, len, "CLUSTERDOWN"))
        out->kind = SK_REDIS_REDIRECT_CLUSTERDOWN;
    return out->kind;
}
