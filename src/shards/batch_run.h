/* Serving a batch part on its shard (contract §7, core/batch.h). Shard thread only.
 *
 * Each id of a part runs exactly as its single call would (QueryRoute, Deliver): as a request of
 * the shard's own, made here, dispatched by handlers_dispatch and finished by its shard_answer,
 * which hands it back here (req->part) instead of to the outbox. So every rule of the single call
 * holds for each id: that user's keys and cluster slot, Deliver's retry rule, the mpim dialect's
 * channel, the route lookup and delivery counters.
 *
 * Bounded steps: at most BATCH_STEP ids of a part are in progress at once, and each one that
 * finishes starts the next. A part of 1000 ids thus puts at most BATCH_STEP ids' commands ahead of
 * the requests other connections send meanwhile; the rest follow as replies come back,
 * interleaved with theirs. The part goes to the outbox once its last id has finished.
 *
 * Order: the part left the inbox after the connection's earlier requests, so each id runs after
 * that user's earlier requests (§7). The other way round is not kept: a request the connection
 * sends after the batch may run before the batch reaches that user in a later step. Keeping it
 * would mean holding such requests back per user while a part is in progress. */
#ifndef PR_SHARDS_BATCH_RUN_H
#define PR_SHARDS_BATCH_RUN_H

#include <stdint.h>

struct shard;
struct pr_request;

/* Ids of one part in progress at once. */
#define BATCH_STEP 64

/* A part popped from the inbox: start its first ids. */
void batch_run_start(struct shard *s, struct pr_request *part);
/* From shard_answer: one id's request (req->part set) has its answer. */
void batch_run_done(struct shard *s, struct pr_request *one);
/* shard_destroy: free the recycled requests. */
void batch_run_destroy(struct shard *s);

#endif
