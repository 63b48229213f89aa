/* im-presence-cli stats and watch: the operator commands. */
#ifndef PR_CLI_CLI_STATS_H
#define PR_CLI_CLI_STATS_H

#include "client/presence_client.h"

/* Ask the server for its Stats and print them as a table. Returns the CLI exit status. */
int cli_stats(struct pc_client *c, const char *where, int all);

/* Follow presence:route, presence:kick (and user:<uid> when uid > 0) on the queue Redis at
 * host:port and print each event as it happens; stop after `count` events (0: never). sharded:
 * user:<uid> with SSUBSCRIBE ([redis_queue] pubsub = sharded), on the channel's slot master when
 * host:port is a cluster node that redirects there. Returns the exit status. */
int cli_watch(const char *host, int port, long long uid, long long count, int sharded);

#endif
