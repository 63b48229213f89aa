/* The slot map of a Redis Cluster: which master serves each of the 16384 slots. Pure code; a map
 * belongs to whoever holds it (each shard thread keeps its own, beside its own connection per
 * master, so no lock appears on the request path).
 *
 * Filled from CLUSTER SLOTS, not CLUSTER SHARDS: on 7.0 CLUSTER SHARDS still lists dead masters
 * after a failover. Only masters are kept -- we never read from replicas.
 *
 * Node indices are stable: a full parse keeps every master that is still listed at the index it
 * had, so the holder's per-index connections stay valid across refreshes. A master no longer
 * listed is dropped and its index may be reused later by another address: the holder compares
 * the address (cluster_addr_equal) before reusing a connection. */
#ifndef PR_CORE_CLUSTER_MAP_H
#define PR_CORE_CLUSTER_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "core/cluster_addr.h"
#include "core/cluster_slot.h"

/* Enough for any cluster we plan for: Redis advises at most ~1000 nodes, masters and replicas. */
#define CLUSTER_MAP_MAX_NODES 256u
#define CLUSTER_NODE_NONE UINT16_MAX /* slot_owner value of a slot no master serves */

struct cluster_map_node {
    struct cluster_addr addr;
    bool used; /* false: a free index (its master left the map) */
};

struct cluster_map {
    uint16_t nnodes;                                      /* every index >= nnodes is free */
    struct cluster_map_node nodes[CLUSTER_MAP_MAX_NODES]; /* masters, by stable index */
    uint16_t slot_owner[CLUSTER_SLOTS];                   /* node index, or CLUSTER_NODE_NONE */
};

/* An empty map: no node, every slot uncovered. */
void cluster_map_init(struct cluster_map *m);

/* Replace the slot assignment with a CLUSTER SLOTS reply (Redis 3.0 to 7.x layout: an array of
 * [start, end, master, replica...], each node [host, port, id?, metadata?...]). The reply is
 * checked strictly: any wrong type, slot outside 0..16383, start > end, a slot listed twice, a
 * missing or bad host or port, or more than CLUSTER_MAP_MAX_NODES masters -> -1, a message in
 * err, and m unchanged. Slots the reply does not list become uncovered (an empty reply is valid:
 * a node that has not joined a cluster answers so). Host forms: see core/cluster_addr.h. Masters
 * are merged by address. Allocates a scratch map (about 100 KiB) for the call. Returns 0. */
int cluster_map_parse(struct cluster_map *m, const redisReply *reply, char *err, size_t errlen);

/* After a MOVED: slot now belongs to addr, added as a node if new. Returns its index, or -1 (m
 * unchanged) if slot > 16383 or no index is free. */
int cluster_map_set_slot(struct cluster_map *m, uint16_t slot, const struct cluster_addr *addr);

/* The index of the master serving slot, or -1 if none is known (or slot > 16383). */
int cluster_map_node_for_slot(const struct cluster_map *m, uint16_t slot);

/* The node at index i, or NULL if i is not a used index. */
const struct cluster_addr *cluster_map_node(const struct cluster_map *m, int i);

/* The index of the master at addr, or -1. */
int cluster_map_find(const struct cluster_map *m, const struct cluster_addr *addr);

#endif
