/* Redis Cluster error replies: redirects (MOVED, ASK) and errors worth retrying. Pure, any thread.
 *
 * The rules the router applies (contract §10; all of them inside the section's timeout, after
 * which the answer is UNAVAILABLE):
 *   MOVED <slot> <host>:<port>  the slot has a new owner for good: set that slot in the map
 *                               (cluster_map_set_slot), retry at the new owner, and ask for one
 *                               full map refresh (CLUSTER SLOTS), rate-limited, since a MOVED
 *                               usually means more than one slot moved (failover, resharding).
 *   ASK <slot> <host>:<port>    the slot is being migrated and this key is already at the target:
 *                               send ASKING then the command on the target's connection, once;
 *                               the map is NOT changed (the source still owns the slot).
 *   TRYAGAIN, CLUSTERDOWN,      transient (multi-key command during a migration, cluster without
 *   LOADING                     full coverage during a failover, a node loading its data): retry
 *                               the same node with backoff.
 *   anything else               the command's own error: not a cluster matter.
 * A MOVED or ASK means the command did not run, so even a Deliver publish may be sent again.
 *
 * The host follows core/cluster_addr.h: "" (unknown-endpoint) -> CLUSTER_HOST_SAME, "?" ->
 * CLUSTER_HOST_UNKNOWN. Redis writes IPv6 hosts without brackets ("MOVED 1 ::1:7000"), so the
 * port is what follows the LAST ':'. */
#ifndef PR_CORE_CLUSTER_REDIRECT_H
#define PR_CORE_CLUSTER_REDIRECT_H

#include <stddef.h>
#include <stdint.h>

#include "core/cluster_addr.h"

enum cluster_error {
    CLUSTER_ERR_OTHER = 0, /* not a cluster error (or a malformed redirect): report it as is */
    CLUSTER_ERR_MOVED,     /* *out filled */
    CLUSTER_ERR_ASK,       /* *out filled */
    CLUSTER_ERR_RETRY,     /* TRYAGAIN, CLUSTERDOWN, LOADING */
};

struct cluster_redirect {
    uint16_t slot; /* 0..16383 */
    struct cluster_addr to;
};

/* Classify an error reply's text (redisReply str/len, no trailing CRLF). out is written only
 * for MOVED and ASK. A redirect that does not parse exactly (missing or non-numeric slot or
 * port, slot > 16383, port outside 1..65535, extra bytes) is CLUSTER_ERR_OTHER: following a
 * half-read address could send a user's command to the wrong node. */
enum cluster_error cluster_error_classify(const char *err, size_t len, struct cluster_redirect *out);

#endif
