/* Gateway leases and drains on a shard (contract §8): the keys, running their scripts
 * (gateway_scripts.c), GatewayHeartbeat, and what a Bind adds on a cluster so that a drain finds
 * its session. The drain itself is drain.c, the lapsed-lease watcher lease_watch.c. Shard thread
 * only.
 *
 * A gateway's sessions are found through its session index, kept by the session scripts in the
 * same atomic step as the sessions (session_lua.h): on a single Redis one set,
 * gateway:sessions:<gw>; on a cluster one set per slot, gateway:sessions:{<slot tag>}:<gw>, in the
 * slot of the users it lists (core/slot_tag.h), plus the bitmap gateway:slots:{<gw>} of the slots
 * where the gateway ever had an index. A Bind on a cluster sets its slot's bit beside its script
 * (pipelined) and is answered OK only once both succeeded: an acknowledged session is always
 * findable by a drain. Each shard remembers the bits it saw set for a minute, so only the first
 * Bind of a gateway in a slot (per shard and minute) sends SETBIT: mostly no command more per
 * Bind, and a bit lost with a failover is set again by the next minute's Binds. The bitmap has no
 * TTL (2 KiB per gateway address ever bound): a drain cannot delete it safely while Binds may set
 * bits behind its back. */
#ifndef PR_SHARDS_GATEWAYS_H
#define PR_SHARDS_GATEWAYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shards/redis_link.h"

struct shard;
struct pr_request;

#define GW_LEASES_KEY "{gateway-leases}:expiry" /* sorted set: gateway -> its lease's end (ms) */
#define GW_LOCK_PREFIX "{gateway-leases}:lock:" /* + gateway: who drains its lapsed lease */
#define GW_INDEX_PREFIX "gateway:sessions:"     /* + gateway, or + {<slot tag>}: + gateway */
#define GW_SLOTS_PREFIX "gateway:slots:{"       /* + gateway + "}": cluster, the index's slots */
#define GW_ADDR_MAX 255                         /* gateway_addr's limit (codec) */

/* One argument of a script call. */
struct gw_arg {
    const void *p;
    size_t len;
};

/* The slot of the lease keys ({gateway-leases}). */
uint16_t gateways_lease_slot(void);
/* The index prefix for the users of slot (cache on a cluster) or for all (single Redis) into buf
 * (GW_INDEX_PREFIX plus room for a tag); its length. */
size_t gateways_index_prefix(const struct shard *s, uint16_t slot, char *buf, size_t size);
/* The session scripts' last two arguments: the index prefix of req's user, and its id. */
void gateways_arg_index(struct shard *s, const struct pr_request *req);

/* EVALSHA script (EVAL with its body when by_body or its SHA is unknown) about slot, with
 * args[0..nkeys) as KEYS and the rest as ARGV. 0, or -1: fn will not be called (not sent). */
int gateways_eval(struct shard *s, int script, bool by_body, uint16_t slot, link_reply_fn *fn, void *priv,
                  const struct gw_arg *args, int nargs, int nkeys);

/* GatewayHeartbeat or DrainGateway popped from the inbox. */
void gateways_dispatch(struct shard *s, struct pr_request *req);

/* Bind, cluster only (nothing otherwise): its session script was sent; send SETBIT of its slot on
 * the gateway's bitmap, unless this shard saw that bit set lately. A failure there fails the Bind.
 * No WAIT follows it, even with wait_replicas: a bitmap's master serves every Bind of its gateway,
 * and a WAIT there would fail them all, on every master, while that one has no replica. */
void gateways_mark_slot(struct shard *s, struct pr_request *req);
/* The Bind's or Heartbeat's script is answered by link (NULL: it could not be sent). true: its
 * slot bit or index fallback is still out, and that answer will call writes_done(link); false: go
 * on now. */
bool gateways_mark_pending(struct pr_request *req, struct redis_link *link);

/* Bind or Heartbeat: reply is its script's, which could not add the session to its gateway's
 * index (the slot is being migrated, session_lua.h): add it with SADD and PEXPIRE, which follow the
 * slot's ASK; the call waits for them (gateways_mark_pending) and fails if they do. */
void gateways_index_fallback(struct shard *s, struct pr_request *req, const redisReply *reply);

/* Main thread, after the shard stopped: free what gateways.c kept. */
void gateways_destroy(struct shard *s);

#endif
