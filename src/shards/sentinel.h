/* Where the master is, as Redis Sentinel tells it (contract §10, mode = sentinel). Shard thread
 * only: one per Redis link in sentinel mode, on the owning shard's loop.
 *
 * Two jobs, each on its own hiredis async connection to a sentinel:
 *  - find: ask the sentinels in the configured order `SENTINEL get-master-addr-by-name`; the first
 *    that answers with an address wins. Each sentinel gets the section's `timeout`. The link asks
 *    again on every reconnect, so a failover is followed even without the watch below;
 *  - watch: SUBSCRIBE +switch-master on the first sentinel that takes it, so that a promotion is
 *    acted on at once instead of when the old master's connection fails. Only a speed-up: the
 *    link trusts nothing but a fresh answer to find and the master's own ROLE. */
#ifndef PR_SHARDS_SENTINEL_H
#define PR_SHARDS_SENTINEL_H

#include <stdbool.h>

#include <ev.h>
#include <hiredis/async.h>

#include "core/config.h"
#include "core/log.h"

/* find's answer: host/port of the master, or host NULL when no sentinel named one. */
typedef void sentinel_found_fn(void *owner, const char *host, int port);
/* The sentinels announced a new master for our name. */
typedef void sentinel_switched_fn(void *owner, const char *host, int port);

struct sentinel {
    const struct redis_conf *conf;   /* nodes (the sentinels), master_name, timeout */
    struct ev_loop *loop;
    void *owner;                     /* the redis_link */
    sentinel_found_fn *found;
    sentinel_switched_fn *switched;
    const char *role;                /* "cache" or "queue", for logs */

    redisAsyncContext *ask;          /* the find in progress, NULL if none */
    int asking;                      /* index of the sentinel asked now */
    ev_timer ask_timer;              /* that sentinel's deadline */

    redisAsyncContext *watch;        /* the +switch-master subscription, NULL while none */
    int watching;                    /* index of the sentinel it is on */
    ev_timer watch_retry;            /* next subscription attempt */
    bool stopping;
    struct log_limit log_lim;
};

void sentinel_init(struct sentinel *s, const char *role, const struct redis_conf *conf, struct ev_loop *loop,
                   void *owner, sentinel_found_fn *found, sentinel_switched_fn *switched);
/* Ask for the master; found() is called exactly once per call (unless sentinel_stop comes first).
 * A find already in progress is left to finish. */
void sentinel_find_master(struct sentinel *s);
/* Start watching +switch-master (idempotent). */
void sentinel_watch(struct sentinel *s);
/* Close both connections for good; no callback after this. */
void sentinel_stop(struct sentinel *s);

#endif
