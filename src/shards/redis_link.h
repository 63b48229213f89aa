/* One hiredis async connection to one Redis role (cache or queue), owned by one shard thread.
 *
 * What it adds to hiredis:
 *  - a deadline for every command. hiredis 0.14 (Debian 12) has no async timeout at all, and the
 *    one hiredis 1.x added (redisAsyncSetTimeout) is one timer restarted on every read and write:
 *    an inactivity timeout that steady traffic keeps from ever firing, so it gives no single
 *    command a deadline. The link keeps the send time of each command in a FIFO (replies come
 *    back in send order) and one timer watches the oldest; a command that outlives the role's
 *    `timeout` tears the connection down, which answers it and everything behind it with
 *    LINK_LOST;
 *  - a PING on a link that has sent nothing for a while, so that a hung Redis is noticed (and the
 *    link torn down) within `timeout` + 0.5 s with or without traffic: an open connection is not
 *    taken for a live one;
 *  - reconnection by itself with capped exponential backoff and jitter; while down, commands
 *    are refused at once (link_command returns -1) instead of queueing without bound;
 *  - AUTH and SELECT on every (re)connect, before anything else is sent;
 *  - mode = sentinel: before every connect, the master's address from the sentinels; after it,
 *    ROLE must say master; a READONLY reply or a +switch-master announcement reconnects;
 *  - for each reply, whether a missing reply means "certainly not executed" (LINK_NOT_SENT:
 *    the connection never came up) or "outcome unknown" (LINK_LOST), so callers know when a
 *    retry is safe. */
#ifndef PR_SHARDS_REDIS_LINK_H
#define PR_SHARDS_REDIS_LINK_H

#include <stdbool.h>
#include <stdint.h>

#include <ev.h>
#include <hiredis/async.h>

#include "core/config.h"
#include "core/counter.h"
#include "core/log.h"
#include "shards/sentinel.h"

enum link_state {
    LINK_DOWN,       /* no connection; commands are refused */
    LINK_CONNECTING, /* TCP connect in progress: nothing has been written yet */
    LINK_SETUP,      /* connected, AUTH/SELECT not answered yet: what was queued may have run */
    LINK_UP,         /* SELECT answered: Redis serves this connection (the `up` gauge is 1) */
};

enum link_status {
    LINK_REPLY,    /* reply is valid (it may be a Redis error reply) */
    LINK_NOT_SENT, /* no reply, and Redis certainly did not execute the command */
    LINK_LOST,     /* no reply, outcome unknown: timed out or connection lost after sending */
};

struct redis_link;

/* reply is NULL unless status == LINK_REPLY; it is freed after the callback returns. */
typedef void link_reply_fn(struct redis_link *link, enum link_status status, redisReply *reply, void *priv);
/* Called each time a connection attempt starts, so the owner can queue its own setup. */
typedef void link_setup_fn(struct redis_link *link);

struct link_pending {
    link_reply_fn *fn; /* the caller's callback */
    void *priv;        /* its argument */
    ev_tstamp deadline; /* when the command times out */
};

/* What metrics read of a link (one writer: the shard). A cluster's links share one set, so that
 * a link dropped with its master leaves its counts behind and readers never touch a freed link. */
struct link_counters {
    counter_t reconnects; /* connections set up (UP) after the first */
    counter_t errors;     /* timeouts, lost connections, failed connects, setup errors */
    counter_t up;         /* links UP now (a gauge: 1 or 0 for a link of its own) */
};

struct redis_link {
    const char *role;               /* "cache" or "queue", for logs */
    const struct redis_conf *conf;  /* address, database, timeout, credentials */
    char host[CLUSTER_HOST_MAX];       /* the Redis connected to: conf's, or the master a sentinel named */
    int port;
    struct sentinel sentinel;       /* mode = sentinel: finds and watches the master */
    bool finding;                   /* waiting for the sentinels' answer before connecting */
    struct ev_loop *loop;           /* the owning shard's loop */
    void *owner;                    /* the owning shard */
    link_setup_fn *on_setup;        /* owner's per-connection setup, may be NULL */

    redisAsyncContext *ac;          /* NULL while down */
    enum link_state state;          /* see enum */
    enum link_status fail_status;   /* what pending commands get when we tear down */
    bool stopping;                  /* link_stop called: never reconnect */

    struct link_pending *fifo;      /* commands sent and not yet answered, oldest first */
    uint32_t fifo_mask;             /* fifo capacity - 1 */
    uint32_t fifo_head, fifo_tail;  /* oldest, next free */

    ev_timer deadline_timer;        /* at the oldest command's deadline (re-armed lazily) */
    ev_timer probe_timer;           /* while UP: PING when nothing was sent for a while (lazily) */
    ev_tstamp last_sent;            /* loop time of the last command handed to hiredis */
    ev_timer reconnect_timer;       /* backoff before the next attempt */
    ev_tstamp backoff;              /* next reconnect delay */
    unsigned int seed;              /* jitter */

    /* handlers.c's WAIT batching: at most one WAIT in flight per connection (a client blocked in
     * WAIT runs nothing else, so WAITs queued one per write would add up); writes done meanwhile
     * wait for the next one, which covers them all. Requests linked through their `next`. */
    bool wait_in_flight;
    void *wait_next_head, *wait_next_tail;

    struct link_counters own;       /* the counters, unless link_share_counters pointed elsewhere */
    struct link_counters *cnt;      /* where this link counts: &own or a shared set */
    bool ever_up;                   /* has been UP at least once */
    struct log_limit log_lim;       /* one line per second while Redis is down */
};

int link_init(struct redis_link *link, const char *role, const struct redis_conf *conf,
              struct ev_loop *loop, void *owner, link_setup_fn *on_setup);
/* Before link_start: connect to host:port instead of conf's address (a cluster node). */
void link_set_target(struct redis_link *link, const char *host, int port);
/* Before link_start: count into *shared (zeroed by its owner) instead of the link's own. */
void link_share_counters(struct redis_link *link, struct link_counters *shared);
/* Down and waiting out its backoff: connect now (after link_set_target, say). */
void link_connect_soon(struct redis_link *link);
/* Commands sent and not answered yet. */
uint32_t link_in_flight(const struct redis_link *link);
/* Start connecting (shard thread). */
void link_start(struct redis_link *link);
/* Close for good: pending commands get LINK_LOST (or NOT_SENT if never sent). */
void link_stop(struct redis_link *link);
void link_destroy(struct redis_link *link);

/* Send a command (hiredis format string). Returns 0, or -1 without calling fn when the link
 * is down or memory ran out: the command was certainly not sent. For set-up commands and the
 * idle PING; the hot path uses link_send. */
int link_command(struct redis_link *link, link_reply_fn *fn, void *priv, const char *fmt, ...);

/* The same for a command already in RESP (see resp.h). */
int link_send(struct redis_link *link, link_reply_fn *fn, void *priv, const char *cmd, size_t len);

#endif
