/* Draining a gateway (contract §8): end every session whose gateway it is, each exactly as that
 * session's UnbindRoute would (keys, route fallback, the notices on presence:route; nothing on
 * presence:kick), then end its lease. Shard thread only.
 *
 * In bounded steps, each one EVALSHA of the drain script (gateway_scripts.c) on one index key:
 * it takes up to DRAIN_STEP members off the index and ends their sessions atomically. One script
 * of a drain is in flight at a time and the next is sent from the previous one's reply, so a drain
 * is only callbacks between the shard's other work: it never holds the shard, and Redis never runs
 * more than one step (a few ms) of it at once. A key is done when a step takes fewer than
 * DRAIN_STEP members (the set was empty at that instant: a later Bind is after the drain). On a
 * cluster the gateway's bitmap (gateways.h) is read first and each slot's index drained in turn,
 * every step routed by that slot. With wait_replicas, a step that ended sessions is WAITed for on
 * its connection, as writes.c does, and a step not confirmed ends the drain UNAVAILABLE without
 * its notices (as an unconfirmed Unbind publishes none). The notices of a step are published
 * while the next step runs; the drain ends once all are answered. At the end the finish script
 * ends the lease (DrainGateway: always; a lease drain: only the lapsed lease it claimed) and drops
 * the drain lock. A drain that failed half-way leaves both: a lease drain is then claimed again,
 * by any instance, once its lock lapses, and finishes what is left (ending sessions is
 * idempotent: a second drain finds nothing already ended).
 *
 * Users of other shards are changed by a drain: the scripts are atomic per user, so a drain and
 * that user's own calls interleave only as whole steps. */
#ifndef PR_SHARDS_DRAIN_H
#define PR_SHARDS_DRAIN_H

#include <stdbool.h>
#include <stddef.h>

struct shard;
struct pr_request;

/* How a drain started: the labels of impresence_gateway_drains_total{how}. */
enum drain_kind {
    DRAIN_MANUAL, /* DrainGateway */
    DRAIN_LEASE,  /* a lapsed lease (lease_watch.c) */
};

/* The shard is stopping: drains end (UNAVAILABLE) once their step in flight and its notices are
 * answered, so that no session is ended without its notice. false: none runs, go on; true: the
 * last one to end calls shard_stop_finish (within the Redis timeouts: every command has one). */
bool drain_quiesce(struct shard *s);

/* Index members one step takes. */
#define DRAIN_STEP 256

/* Drain gateway gw (gw_len bytes). req: the DrainGateway call, answered (sessions_removed) when
 * the drain ends; NULL for a lapsed lease, lease_end then the lapsed end (decimal ms) its lock was
 * claimed for. */
void drain_start(struct shard *s, struct pr_request *req, const void *gw, size_t gw_len,
                 const char *lease_end);

#endif
