/* What route_cache.c (nodes, tracking, the fence, hits) and route_fetch.c (misses: the read from
 * Redis that fills the cache) share. Shard thread only. */
#ifndef PR_SHARDS_ROUTE_CACHE_INT_H
#define PR_SHARDS_ROUTE_CACHE_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/cluster_map.h"
#include "core/log.h"
#include "core/near_cache.h"
#include "core/request.h"
#include "shards/route_cache.h"
#include "shards/tracking_link.h"

struct rc_node;

/* Buckets of the filter that tells whether a user may have hits waiting for their fence. */
#define RC_WAIT_BUCKETS 65536u

/* The hits of one loop turn on one node: answered when the PING sent after them comes back. */
struct rc_group {
    struct pr_request *head, *tail; /* linked through req->next (no other list holds them now) */
    struct rc_node *node;
    struct rc_group *next;          /* the node's PINGed groups in order, or the spare list */
};

/* One Redis node: its tracking link, and whether the shard's connection to it is tracked. */
struct rc_node {
    struct route_cache *rc;
    int index;                    /* cluster map index; 0 off a cluster */
    struct tracking_link tl;
    struct redis_link *data;      /* the shard's cache link to this node (NULL: none now) */
    uint64_t data_serial;         /* connections of `data` begun (its set-up hook ran) */
    uint64_t asked;               /* CLIENT TRACKING pairs sent; only the latest counts */
    uint64_t asked_serial;        /* ... on which connection of `data` */
    uint64_t asked_readies;       /* ... naming which connection of the tracking link */
    bool tracked;                 /* the latest pair was confirmed and nothing broke since */
    struct rc_group *collecting;  /* this turn's hits, PING not sent yet */
    struct rc_group *sent_head;   /* groups whose PING is out, oldest first (pongs come in order) */
    struct rc_group *sent_tail;
    struct rc_node *next_pending; /* in rc->pending while collecting */
};

struct route_cache {
    struct shard *s;
    struct near_cache *nc;
    struct rc_node *node[CLUSTER_MAP_MAX_NODES]; /* by map index; [0] off a cluster */
    struct rc_node *pending;                     /* nodes with a group to PING for */
    struct rc_group *spare;
    uint32_t *waiting;                           /* hits waiting for a fence, by uid hash (RC_WAIT_BUCKETS) */
    uint32_t ntracked;                           /* nodes tracked now (the gauge) */
    uint64_t topology;                           /* router_topology when last looked at */
    bool stopping;
    struct log_limit log_lim;
};

/* route_cache.c: the cluster map moved since last looked at: flush (a MOVED, a failover, a
 * new master: what Redis tracks for us may be elsewhere now). */
void rc_sync(struct route_cache *rc);
/* The node whose link answered, if it is tracked now; NULL otherwise. */
struct rc_node *rc_tracked_node(struct route_cache *rc, struct redis_link *link);
/* Monotonic milliseconds: deadlines. */
int64_t rc_now_ms(void);

/* route_fetch.c: read req's route, sessions and their TTLs from Redis; cache them if nothing
 * cancelled the fetch and the node is tracked; answer. */
void rc_fetch(struct route_cache *rc, struct pr_request *req);

#endif
