/* Any thread. */
#include "core/node_list.h"

#include <stdio.h>
#include <string.h>

static int parse_one(const char *s, size_t len, struct cluster_addr *out, char *err, size_t errlen)
{
    while (len > 0 && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    const char *colon = NULL;
    for (size_t i = 0; i < len; i++)
        if (s[i] == ':')
            colon = s + i;
    if (colon == NULL) {
        snprintf(err, errlen, "'%.*s' is not host:port", (int)len, s);
        return -1;
    }
    const char *port = colon + 1;
    size_t plen = (size_t)(s + len - port);
    long long value = plen == 0 || plen > 5 ? -1 : 0;
    for (size_t i = 0; i < plen && value >= 0; i++)
        value = port[i] >= '0' && port[i] <= '9' ? value * 10 + (port[i] - '0') : -1;
    size_t hlen = (size_t)(colon - s);
    if (value < 1 || hlen == 0 || cluster_addr_set(out, s, hlen, value) < 0 ||
        out->kind != CLUSTER_HOST_NAMED) {
        snprintf(err, errlen, "'%.*s': want host:port, a host and a port from 1 to 65535", (int)len, s);
        return -1;
    }
    return 0;
}

int node_list_parse(const char *text, struct cluster_addr *out, int max, int *n, char *err, size_t errlen)
{
    *n = 0;
    const char *p = text;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (*n == max) {
            snprintf(err, errlen, "more than %d nodes", max);
            return -1;
        }
        if (parse_one(p, len, &out[*n], err, errlen) < 0)
            return -1;
        (*n)++;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}
