/* The near cache as a shard runs it (contract §11, docs/near-cache.md): the shard's table of
 * routes (core/near_cache.h), kept exact by Redis's invalidations, arriving on one tracking link
 * per Redis node (shards/tracking_link.h); QueryRoute and Deliver's route lookup go through it
 * when `[route] near_cache` > 0. With 0 nothing here exists and the handlers read Redis as before.
 *
 * Threads: route_cache_new/route_cache_free on the main thread (shard_init/shard_destroy, the
 * shard not running); everything else on the owning shard's thread. */
#ifndef PR_SHARDS_ROUTE_CACHE_H
#define PR_SHARDS_ROUTE_CACHE_H

#include <stdint.h>

struct pr_request;
struct redis_link;
struct route_cache;
struct shard;

/* Main thread. NULL out of memory. */
struct route_cache *route_cache_new(struct shard *s);
void route_cache_free(struct route_cache *rc);

/* The cache router's per-connection set-up while the near cache is on: the session scripts
 * (handlers_cache_setup), then CLIENT TRACKING on that connection (a link_setup_fn). */
void route_cache_link_setup(struct redis_link *link);

/* QueryRoute, or Deliver's route: from memory when it can be trusted, else from Redis (which
 * fills the cache). Answers as handlers_route_known, or with the Redis failure. */
void route_cache_lookup(struct shard *s, struct pr_request *req);

/* A write about uid is being sent by this shard (Bind, Unbind, Heartbeat): forget uid, and a
 * read of it in flight (it may return the value from before the write). */
void route_cache_invalidate(struct shard *s, int64_t uid);

/* The shard's ev_prepare, every loop turn before it sleeps: one fence PING per node for the
 * hits of this turn; the entries gauge. */
void route_cache_before_sleep(struct shard *s);

/* Shard stopping (before its routers stop): hits waiting for their fence go to Redis, the
 * tracking links close. */
void route_cache_stop(struct shard *s);

#endif
