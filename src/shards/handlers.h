/* The five RPCs on Redis (contract §3). Shard thread only. */
#ifndef PR_SHARDS_HANDLERS_H
#define PR_SHARDS_HANDLERS_H

#include "core/request.h"
#include "shards/redis_router.h"

struct shard;

int handlers_init(struct shard *s);
/* Start serving req; it is answered later through shard_answer. */
void handlers_dispatch(struct shard *s, struct pr_request *req);
/* Cache link setup on every (re)connect: load the Lua scripts. */
void handlers_cache_setup(struct redis_link *link);
/* Shutdown: answer every Deliver still waiting for a retry. */
void handlers_fail_retries(struct shard *s);

#endif
