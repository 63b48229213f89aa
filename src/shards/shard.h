/* A shard: one thread, one libev loop, its own Redis connections, and the users whose ids hash
 * to it (memcached's worker thread, h2o's per-thread context).
 *
 * Threads: shard_init/shard_start/shard_stop/shard_destroy run on the main thread;
 * shard_submit/shard_wake/shard_take_answer on the acceptor thread; everything in shard.c's
 * static functions and in handlers.c on the shard's own thread; shard_stats_read/shard_stats_sum
 * on any thread. The two rings are the only memory both sides touch. */
#ifndef PR_SHARDS_SHARD_H
#define PR_SHARDS_SHARD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include "core/config.h"
#include "core/counter.h"
#include "core/request.h"
#include "core/ring.h"
#include "shards/gateway_scripts.h"
#include "shards/redis_router.h"
#include "shards/resp.h"

/* Written only by the shard thread; other threads read them through shard_stats_read. */
struct shard_counters {
    counter_t requests[PR_METHOD_COUNT][PR_CODE_COUNT]; /* answered, by method and Mpim__Code */
    counter_t route_hits;        /* QueryRoute/Deliver lookups that found a route */
    counter_t route_misses;      /* ... that found none */
    counter_t delivered;         /* Deliver publishes that reached a subscriber */
    counter_t undelivered;       /* Deliver publishes with no subscriber */
    counter_t deliver_retries;   /* publish attempts after the first */
    counter_t drains[2];         /* gateway drains finished, by enum drain_kind (drain.h) */
    counter_t drained_sessions;  /* sessions those drains (finished or not) ended */
    counter_t nc_hits;           /* near cache: lookups answered from memory (route_cache.c) */
    counter_t nc_misses;         /* ... read from Redis instead */
    counter_t nc_invalidations;  /* ... user keys Redis said changed */
    counter_t nc_flushes;        /* ... whole-cache drops (tracking lost, FLUSHALL, cluster map moved) */
    counter_t nc_entries;        /* ... entries held (a gauge) */
    counter_t nc_tracked;        /* ... Redis nodes whose tracking is confirmed (a gauge) */
};

/* A Lua script the shard runs with EVALSHA; its SHA1 comes back from SCRIPT LOAD. */
struct shard_script {
    const char *body; /* Lua source */
    char sha[41];     /* hex SHA1, empty until SCRIPT LOAD answered */
};

struct shard {
    /* Fixed before the thread starts. */
    int id;                              /* 0..N-1 */
    const struct presence_conf *conf;    /* read-only */
    struct ev_loop *acceptor_loop;       /* where `answered` is registered */
    ev_async *answered;                  /* acceptor's wake-up: "answers in my outbox" */

    /* Shared: the two single-producer/single-consumer rings. */
    struct pr_ring inbox;                /* acceptor -> shard: requests */
    struct pr_ring outbox;               /* shard -> acceptor: answered requests */
    ev_async wake;                       /* acceptor -> shard: inbox not empty */
    ev_async stop;                       /* main -> shard: finish and exit */

    /* Shard thread only. */
    pthread_t thread;
    struct ev_loop *loop;
    ev_prepare before_sleep;             /* sends one wake-up per loop turn, if answers went out */
    bool answers_pending;                /* outbox got answers since the last wake-up */
    bool sched_batch;                    /* running under SCHED_BATCH now (shard.c sched_adapt) */
    uint32_t sched_wakes, sched_popped;  /* wake-ups and requests since the last policy check */
    struct redis_router cache;           /* routes and statuses */
    struct redis_router queue;           /* Pub/Sub */
    struct resp resp;                    /* the Redis command being built */
    struct shard_script bind_script;     /* session scripts (session_scripts.c) */
    struct shard_script unbind_script;
    struct shard_script heartbeat_script;
    struct shard_script gw_scripts[GW_SCRIPTS]; /* gateway leases and drains (gateway_scripts.c) */
    struct lease_watch *lease_watch;     /* shard 0: the lapsed-lease watcher (lease_watch.c); else NULL */
    struct gw_marks *gw_marks;           /* cluster: gateway slot bits known set (gateways.c); lazily made */
    uint32_t drains_running;             /* gateway drains in progress (drain.c) */
    bool drains_stopping;                /* stopping: drains end after their step in flight (drain.c) */
    struct route_cache *near;            /* the near cache (route_cache.c); NULL: [route] near_cache = 0 */
    struct pr_request *retry_head;       /* Deliver publishes waiting for their retry, by due time */
    struct pr_request *retry_tail;
    ev_timer retry_timer;                /* due time of retry_head */
    struct pr_request *batch_spare;      /* recycled requests for the ids of batch parts (batch_run.c) */
    uint32_t nbatch_spare;
    struct shard_counters counters;
};

/* Main thread. */
int shard_init(struct shard *s, int id, const struct presence_conf *conf, struct ev_loop *acceptor_loop,
               ev_async *answered);
int shard_start(struct shard *s);
void shard_stop(struct shard *s); /* ask to stop, then join */
void shard_destroy(struct shard *s);

/* Acceptor thread. shard_submit hands req over (true) or leaves it with the caller (false: full). */
static inline bool shard_submit(struct shard *s, struct pr_request *req)
{
    return ring_push(&s->inbox, req);
}
void shard_wake(struct shard *s);
static inline struct pr_request *shard_take_answer(struct shard *s)
{
    return ring_pop(&s->outbox);
}

/* Shard thread: the request is answered; give it back to the acceptor. */
void shard_answer(struct shard *s, struct pr_request *req);
/* Shard thread, stopping: close the Redis links and leave the loop, once the drains are quiet
 * (drain_quiesce). */
void shard_stop_finish(struct shard *s);

/* What metrics and Stats may know of a shard, as plain values: they read it only through
 * shard_stats_read/shard_stats_sum (memcached's threadlocal_stats_aggregate), never the
 * struct's layout. Each value is recent; together they are not one instant's. */
enum { SHARD_LINK_CACHE, SHARD_LINK_QUEUE, SHARD_LINKS };

struct shard_stats {
    uint64_t requests[PR_METHOD_COUNT][PR_CODE_COUNT]; /* answered, by method and Mpim__Code */
    uint64_t route_hits;      /* QueryRoute/Deliver lookups that found a route */
    uint64_t route_misses;    /* ... that found none */
    uint64_t delivered;       /* Deliver publishes that reached a subscriber */
    uint64_t undelivered;     /* Deliver publishes with no subscriber */
    uint64_t deliver_retries; /* publish attempts after the first */
    uint64_t drains[2];       /* gateway drains finished: [0] DrainGateway, [1] lapsed leases */
    uint64_t drained_sessions; /* sessions gateway drains ended */
    uint64_t nc_hits, nc_misses, nc_invalidations, nc_flushes; /* near cache (shard_counters) */
    uint64_t nc_entries, nc_tracked;                           /* ... gauges */
    struct {
        uint64_t up;          /* connections up (1 or 0 for one shard; on a cluster, one per master) */
        uint64_t all_up;      /* 1 when every slot's master is connected (standalone: = up) */
        uint64_t errors;      /* timeouts, lost connections, failed connects, setup errors */
        uint64_t reconnects;  /* connections re-established after a failure */
        uint64_t moved, ask;  /* cluster: redirects followed */
        uint64_t retries;     /* cluster: commands sent again (TRYAGAIN, CLUSTERDOWN, LOADING, master unreachable) */
        uint64_t refreshes;   /* cluster: slot maps taken */
        uint64_t masters;     /* cluster: masters in the map */
    } link[SHARD_LINKS];      /* by SHARD_LINK_CACHE / SHARD_LINK_QUEUE */
    uint64_t inbox_depth;     /* requests waiting in the inbox ring */
};

/* Any thread. shard_stats_read copies one shard's stats; shard_stats_sum adds up n shards'. */
void shard_stats_read(const struct shard *s, struct shard_stats *out);
void shard_stats_sum(const struct shard *shards, int n, struct shard_stats *out);

#endif
