/* What a Redis outcome means for the client: the one place that turns (link status, reply) into
 * an Mpim__Code, so that every RPC answers a given fault the same way (docs/failure-modes.md).
 * Pure functions: any thread may call them; the shards do. */
#ifndef PR_SHARDS_REDIS_RESULT_H
#define PR_SHARDS_REDIS_RESULT_H

#include <stdbool.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "shards/redis_link.h"

/* OK for a usable reply (any type but an error); UNAVAILABLE for no reply (link down, timed out,
 * connection lost) or an error that says Redis cannot serve now (LOADING, READONLY, MASTERDOWN,
 * BUSY, TRYAGAIN, CLUSTERDOWN, NOREPLICAS); INTERNAL for any other error reply. reply may be
 * NULL unless status is LINK_REPLY. */
int redis_result(enum link_status status, const redisReply *reply);

/* Redis certainly did not run the command: it was never sent, or Redis refused it with an error
 * reply. Only then may a non-idempotent command (Deliver's PUBLISH) be sent again. */
bool redis_not_run(enum link_status status, const redisReply *reply);

/* EVALSHA refused: Redis does not have the script (SCRIPT FLUSH, a failover, a new master); run
 * it by body once. */
bool redis_noscript(enum link_status status, const redisReply *reply);

/* A number a Lua script returned, as an integer or as a decimal string (a script returns numbers
 * above 2^53 as strings). false: neither. */
bool redis_reply_int(const redisReply *r, int64_t *out);

#endif
