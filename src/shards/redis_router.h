/* Where a shard sends a command for one Redis role (cache or queue), owned by that shard thread.
 *
 * standalone, sentinel: the role's one redis_link; router_send is link_send.
 * cluster (contract §10): Debian 12's hiredis 0.14 has no cluster client, so this is ours:
 *  - a slot map (core/cluster_map.h) from CLUSTER SLOTS, asked of any master that is up, else
 *    of the seed nodes in turn; taken at start, after a MOVED (one rate-limited refresh), when a
 *    master's connection is lost, and every second while a slot has no reachable master;
 *  - one redis_link per master, by the map's stable node index, in this shard only: no lock on
 *    the request path, and a user's commands stay in order on one connection;
 *  - each command's bytes are kept until its answer, so that the redirect rules of
 *    core/cluster_redirect.h can send it again: MOVED (slot updated, sent to the new owner), ASK
 *    (ASKING + the command on the target's connection, map unchanged), TRYAGAIN / CLUSTERDOWN /
 *    LOADING and an unreachable master (sent again after a short wait). Only until the section's
 *    timeout after router_send; then the caller gets the outcome (LINK_NOT_SENT, or the last reply).
 *    A command whose connection was lost after sending (LINK_LOST) is never sent again: it may
 *    have run, and a Deliver publish must not be repeated.
 *  - a user's commands keep their order through all this: while a command of a slot waits to be
 *    sent again, later commands of that slot wait behind it.
 * The callbacks get the link that answered (WAIT must follow a write on that connection), or the
 * seed link for a command that never reached a master. */
#ifndef PR_SHARDS_REDIS_ROUTER_H
#define PR_SHARDS_REDIS_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "core/cluster_map.h"
#include "core/counter.h"
#include "shards/redis_link.h"

/* Written by the shard thread only; readers use counter_get. */
struct router_counters {
    counter_t moved;     /* MOVED redirects followed */
    counter_t ask;       /* ASK redirects followed */
    counter_t retries;   /* commands sent again after TRYAGAIN/CLUSTERDOWN/LOADING or an unreachable master */
    counter_t refreshes; /* slot maps taken from CLUSTER SLOTS */
    counter_t masters;   /* masters in the map that have a connection (a gauge) */
    counter_t covered;   /* slots with a master in the map (a gauge) */
};

struct routed_cmd;
struct master_link;

struct redis_router {
    const char *role;
    const struct redis_conf *conf;
    struct ev_loop *loop;
    void *owner;              /* the shard */
    link_setup_fn *on_setup;  /* run on every connection to a master (scripts) */
    bool cluster;

    struct redis_link single; /* standalone, sentinel: the connection */

    /* cluster only */
    struct redis_link seed;                         /* asks the seed nodes for the map */
    int seed_next;                                  /* the next seed to aim at, in conf->node */
    uint64_t seed_errors;                           /* its error count when it was last aimed */
    struct cluster_map *map;                        /* malloc'd: ~100 KiB */
    struct redis_link *node[CLUSTER_MAP_MAX_NODES]; /* a connection per master, by map index */
    struct cluster_addr linked[CLUSTER_MAP_MAX_NODES]; /* the address node[i] was made for */
    struct master_link *retiring;                   /* links of masters gone, closed once idle */
    ev_timer reap_timer;
    ev_timer check_timer;                           /* every second: is every slot served? */
    bool stopping;                                  /* router_stop: nothing is sent again */
    bool refreshing;                                /* a CLUSTER SLOTS is out */
    ev_tstamp last_refresh;                         /* when the last one was sent */
    ev_timer refresh_timer;                         /* the rate-limited or periodic next one */
    struct routed_cmd *wait_head, *wait_tail;       /* commands to send again, in order */
    uint32_t *waiting_in_slot;                      /* how many of them per slot */
    ev_timer wait_timer;
    ev_tstamp wait_delay;                           /* grows while commands keep waiting */
    uint64_t topology;                              /* moves on every change of masters or slots (router_topology) */
    struct link_counters links;                     /* shared by every master's link */
    struct router_counters counters;
    struct log_limit log_lim;
};

/* Shard's thread, before the loop runs (main thread at init). 0, or -1 out of memory. */
int router_init(struct redis_router *r, const char *role, const struct redis_conf *conf, struct ev_loop *loop,
                void *owner, link_setup_fn *on_setup);
void router_start(struct redis_router *r);
/* Close every connection; commands waiting get LINK_NOT_SENT, those in flight LINK_LOST. */
void router_stop(struct redis_router *r);
void router_destroy(struct redis_router *r);

/* Send a RESP command about slot (ignored unless cluster). 0: fn will be called exactly once;
 * -1: fn will not be called and the command was certainly not sent (link down, out of memory). */
int router_send(struct redis_router *r, uint16_t slot, link_reply_fn *fn, void *priv, const char *cmd, size_t len);

/* For the near cache (shards/route_cache.c), shard thread: the map index of a master's link (0
 * for the one link off a cluster; -1 for any other, such as a retired or seed link); the link at
 * index i (NULL: none); the index of slot's master (0 off a cluster; -1: none known); and a
 * version that moves whenever a master's link is made or dropped, a MOVED is followed, or a new
 * map assigns slots differently: what Redis tracks for a shard may have moved elsewhere. */
int router_link_index(const struct redis_router *r, const struct redis_link *link);
struct redis_link *router_link_at(struct redis_router *r, int i);
int router_slot_node(const struct redis_router *r, uint16_t slot);
uint64_t router_topology(const struct redis_router *r);

/* For metrics, any thread: the role's link counters, and whether it serves every slot now. */
const struct link_counters *router_link_counters(const struct redis_router *r);
bool router_all_up(const struct redis_router *r);

#endif
