/* A Redis Cluster node's address as Redis reports it (CLUSTER SLOTS, MOVED, ASK). Pure, any thread.
 *
 * Redis 7 does not always name the host (cluster-preferred-endpoint-type; seen on 7.0.15):
 *   - ip (default):        the node's IP, e.g. "10.0.0.5" or an IPv6 literal "::1";
 *   - unknown-endpoint:    CLUSTER SLOTS sends NIL, MOVED/ASK send an empty host (":6380"). It means
 *                          "the same endpoint you sent the command to" (all nodes behind one
 *                          address, e.g. a load balancer): the router connects to the host of the
 *                          node that answered, at this port;
 *   - hostname, none set:  "?" -- Redis does not know the endpoint yet. The router cannot connect
 *                          there: it treats the slots as unreachable and refreshes the map later.
 * Each case is kept apart (enum cluster_host), never guessed. CLUSTER SLOTS' metadata "ip" is
 * deliberately not used instead: with those settings the operator said clients must not use it. */
#ifndef PR_CORE_CLUSTER_ADDR_H
#define PR_CORE_CLUSTER_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest host kept, NUL included: a DNS name is at most 253 bytes, an IPv6 literal 45. */
#define CLUSTER_HOST_MAX 256u

enum cluster_host {
    CLUSTER_HOST_NAMED = 0, /* host holds an IP or a hostname */
    CLUSTER_HOST_SAME,      /* NIL or "": the host of the node that answered; host is "" */
    CLUSTER_HOST_UNKNOWN,   /* "?": not known yet, not connectable; host is "" */
};

struct cluster_addr {
    enum cluster_host kind;
    char host[CLUSTER_HOST_MAX]; /* NUL-terminated; "" unless kind is CLUSTER_HOST_NAMED */
    uint16_t port;               /* 1..65535 */
};

/* Fill a from Redis's host bytes (host NULL = NIL) and port. One pair of brackets around an IPv6
 * literal ("[::1]") is removed. Returns 0, or -1 (a unchanged) if the host is too long or holds a
 * NUL byte, or the port is outside 1..65535. */
int cluster_addr_set(struct cluster_addr *a, const char *host, size_t host_len, long long port);

/* Same node: same kind, host and port. */
bool cluster_addr_equal(const struct cluster_addr *a, const struct cluster_addr *b);

#endif
