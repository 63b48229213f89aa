/* im-presence-cli stats and watch: the operator commands. */
#ifndef PR_CLI_CLI_STATS_H
#define PR_CLI_CLI_STATS_H

#include "client/presence_client.h"

/* Ask the server for its Stats and print them as a table. Returns the CLI exit status. */
int cli_stats(struct pc_client *c, const char *where, int all);

/* Follow presence:route (and user:<uid> when uid > 0) on the queue Redis at host:port and print
 * each event as it happens; stop after `count` events (0: never). Returns the exit status. */
int cli_watch(const char *host, int port, long long uid, long long count);

#endif
