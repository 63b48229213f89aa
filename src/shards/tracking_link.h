/* The near cache's invalidation connection to one Redis node (docs/near-cache.md), owned by one
 * shard thread: every function runs on that shard's loop.
 *
 * Redis's server-assisted client-side caching with RESP2 (hiredis 0.14 has no RESP3): the
 * shard's cache connection runs `CLIENT TRACKING on REDIRECT <id>`, and Redis sends what it reads
 * being changed as Pub/Sub messages to the client <id>, this one, subscribed to
 * __redis__:invalidate: ["message", "__redis__:invalidate", [key...] | nil], nil meaning "all"
 * (FLUSHALL, FLUSHDB).
 *
 * Why not a redisAsyncContext: while subscribed, hiredis 0.14 hands a PING's callback to the next
 * reply, which may be a Pub/Sub message, and the real "pong" is then dropped. The PING here is
 * the near cache's fence (route_cache.c) and must be matched to its own pong, so this drives a
 * non-blocking redisContext itself from an ev_io and an ev_timer on the shard's loop, and matches
 * replies in order: in subscribe mode RESP2 answers PING with ["pong", ""], and replies come back
 * in the order the PINGs went out.
 *
 * Sequence: connect, AUTH if the section has a password, CLIENT ID (kept: the REDIRECT target),
 * SUBSCRIBE __redis__:invalidate; ready once the subscription is confirmed. A PING is also the
 * liveness probe: one goes out after 1 s without sending, and a PING unanswered within the
 * section's `timeout` tears the connection down (so does a set-up that takes longer). A lost or
 * hung connection is reported to the owner (whose cache can no longer be trusted) and retried
 * with capped exponential backoff, like redis_link. */
#ifndef PR_SHARDS_TRACKING_LINK_H
#define PR_SHARDS_TRACKING_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>
#include <hiredis/hiredis.h>

#include "core/config.h"
#include "core/log.h"

enum tl_state {
    TL_DOWN,       /* no connection (waiting out the backoff, or stopped) */
    TL_CONNECTING, /* TCP connect in progress */
    TL_SETUP,      /* AUTH / CLIENT ID / SUBSCRIBE sent, not all answered */
    TL_READY,      /* subscribed: client_id is the REDIRECT target */
};

/* How a fence PING ended. */
enum tl_pong {
    TL_PONG, /* answered: every invalidation Redis queued for us before it has been delivered */
    TL_LOST, /* the connection failed (closed, error) before the answer */
    TL_HUNG, /* no answer within `timeout`: Redis is hung or unreachable */
};

struct tracking_link;

/* The owner's side. Every callback may call back into this link (ping, stop, set_target). */
struct tracking_ops {
    /* Subscribed: tl->client_id holds the new connection's id. */
    void (*ready)(void *owner, struct tracking_link *tl);
    /* The connection was lost or hung (it had reached at least TL_SETUP). Called before the
     * PINGs in flight are answered TL_LOST / TL_HUNG. */
    void (*lost)(void *owner, struct tracking_link *tl, bool hung);
    /* Redis says key changed (or was evicted from its tracking table). */
    void (*invalidate)(void *owner, struct tracking_link *tl, const char *key, size_t len);
    /* Redis says everything changed (nil message: FLUSHALL / FLUSHDB). */
    void (*flush)(void *owner, struct tracking_link *tl);
    /* A PING sent with tracking_link_ping ended; group is what it was sent with. */
    void (*pong)(void *owner, struct tracking_link *tl, void *group, enum tl_pong how);
};

struct tl_ping {
    void *group;     /* the owner's, or NULL for a liveness probe */
    ev_tstamp sent;  /* loop time it went out */
};

struct tracking_link {
    const struct redis_conf *conf;  /* timeout, credentials */
    struct ev_loop *loop;
    void *owner;
    const struct tracking_ops *ops;
    char host[256];                 /* the node: where the shard's data link connects */
    int port;

    redisContext *c;                /* NULL while down */
    uint64_t conn_seq;              /* connections made: a callback may replace c under a reader */
    enum tl_state state;
    int setup_step;                 /* set-up replies received so far */
    long long client_id;            /* CLIENT ID of the current connection (TL_SETUP on) */
    uint64_t readies;               /* times it became ready: a new id each time */
    bool stopping;                  /* tracking_link_stop: never reconnect */
    bool writing;                   /* the io watcher waits for EV_WRITE too */

    ev_io io;
    ev_timer timer;                 /* connect/set-up deadline, PING deadline, idle probe, backoff */
    ev_tstamp started;              /* when the connection attempt began */
    ev_tstamp last_sent;            /* when a PING last went out */
    ev_tstamp backoff;              /* next reconnect delay */
    unsigned int seed;              /* jitter */

    struct tl_ping *pings;          /* PINGs in flight, oldest first (a ring) */
    uint32_t ping_mask, ping_head, ping_tail;

    struct log_limit log_lim;
};

/* Set up (nothing connects yet). 0, or -1 out of memory. */
int tracking_link_init(struct tracking_link *tl, const struct redis_conf *conf, struct ev_loop *loop, void *owner,
                       const struct tracking_ops *ops);
/* Aim at host:port. Connected elsewhere: that connection is dropped (lost) and a new one made. */
void tracking_link_set_target(struct tracking_link *tl, const char *host, int port);
/* Connect now if down and not waiting out a backoff (also after tracking_link_stop). */
void tracking_link_start(struct tracking_link *tl);
/* Close for good; PINGs in flight end TL_LOST (after `lost`). */
void tracking_link_stop(struct tracking_link *tl);
void tracking_link_destroy(struct tracking_link *tl);

/* Send a PING now whose answer ends `group` (ops->pong). 0: pong will be called exactly once,
 * perhaps before this returns (TL_LOST, the write failed); -1 when not ready (nothing sent, no
 * callback). */
int tracking_link_ping(struct tracking_link *tl, void *group);

static inline bool tracking_link_ready(const struct tracking_link *tl)
{
    return tl->state == TL_READY;
}

#endif
