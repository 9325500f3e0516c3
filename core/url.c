#include "url.h"

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t sk_url_decode(char *dst, const char *src, size_t len, int plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < len; ++i) {
        int hi, lo;
        if (src[i] == '%' && i + 2 < len && (hi = hexval(src[i + 1])) >= 0 && (lo = hexval(src[i + 2])) >= 0) {
            dst[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (plus_is_space && src[i] == '+') {
            dst[o++] = ' ';
        } else {
            dst[o++] = src[i];
        }
    }
    return o;
}
