/* The lapsed-lease watcher (contract §8): shard 0 of every instance, every 500 ms, runs the claim
 * script on the lease slot: of the gateways whose lease ended (end <= the Redis clock's now), it
 * locks the first one nobody holds ({gateway-leases}:lock:<gw> = this instance's id, SET NX PX
 * LEASE_LOCK_MS) and returns it; the instance that got the lock drains it (drain.c, as
 * DrainGateway would, with no client) and then claims again at once, up to LEASE_DRAINS_MAX drains
 * at a time. So a lapsed gateway is drained by exactly one instance, within about a second of its
 * end; the lock is renewed while the drain runs (drain.c); a crashed drainer's lock lapses after
 * LEASE_LOCK_MS and the next claim, by any instance, drains what is left. A gateway that never
 * sent GatewayHeartbeat is not in the set: never drained automatically.
 *
 * lease_watch_init/lease_watch_destroy: main thread (before the shard runs, after it stopped);
 * everything else: shard 0's thread. */
#ifndef PR_SHARDS_LEASE_WATCH_H
#define PR_SHARDS_LEASE_WATCH_H

struct shard;

#define LEASE_WATCH_INTERVAL 0.5 /* s between claims */
#define LEASE_LOCK_MS 30000      /* a drain lock's life; renewed every third of it */
#define LEASE_DRAINS_MAX 4       /* lease drains one instance runs at once */
#define LEASE_CANDIDATES 64      /* lapsed leases one claim looks at */

/* Shard 0: set up the watcher and start its timer (it first fires once the loop runs). 0, or -1. */
int lease_watch_init(struct shard *s);
/* Shard stopping: no more claims. Nothing if s has no watcher. */
void lease_watch_stop(struct shard *s);
void lease_watch_destroy(struct shard *s);
/* This instance's id, the value of the locks it holds ("" if s has no watcher). */
const char *lease_watch_owner(const struct shard *s);
/* A lease drain has ended (drain.c). */
void lease_watch_drain_done(struct shard *s);

#endif
