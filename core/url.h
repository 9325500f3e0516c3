/*
 * url.h: percent-decoding of path parameters and query strings.
 */
#ifndef SK_URL_H
#define SK_URL_H

#include <stddef.h>

/** decodes src[0..len) into dst (which has room for len bytes); "%41" becomes "A", a malformed escape is kept as
 * is, and '+' becomes a space when plus_is_space (query strings). Returns the decoded length. */
size_t sk_url_decode(char *dst, const char *src, size_t len, int plus_is_space);

#endif
