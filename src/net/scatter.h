/* Batch calls on the acceptor (contract §7): scatter a call's ids to their shards as parts,
 * gather the parts back into one answer in the connection's reorder window. No lock, no thread:
 * the parts travel on the same rings as every request. Acceptor thread only.
 *
 * Ownership is core/batch.h's: the call stays here; each part is a request of its own, the
 * shard's from a successful shard_submit until it comes out of the outbox. */
#ifndef PR_NET_SCATTER_H
#define PR_NET_SCATTER_H

#include <stdbool.h>

struct acceptor;
struct conn;
struct pr_request;

/* A decoded BatchQueryRoute or BatchDeliver from c, its seq reserved: refuse it (more than
 * max_batch ids), or answer its ids <= 0 INVALID and send every shard its part, in the shard's
 * inbox behind the connection's earlier requests (so each id runs after that user's earlier
 * requests). A part no shard can take now (queue_depth reached, ring full) is not sent: its ids
 * are answered OVERLOADED and the call still gets its one answer. */
void scatter_call(struct acceptor *acc, struct conn *c, struct pr_request *call);

/* A part came out of its shard's outbox. When it was the call's last, the answer is packed and
 * handed to the connection, or dropped if the connection has gone (answer = false: always
 * dropped, for the exit path). */
void scatter_part_back(struct acceptor *acc, struct pr_request *part, bool answer);

#endif
