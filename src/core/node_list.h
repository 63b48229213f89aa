/* "host:port,host:port": the Redis nodes of a section's `nodes` key (contract §10: the sentinels,
 * or a cluster's seed nodes), as cluster_addr values. Any thread: pure parsing. */
#ifndef PR_CORE_NODE_LIST_H
#define PR_CORE_NODE_LIST_H

#include <stddef.h>

#include "core/cluster_addr.h"

#define NODE_LIST_MAX 16 /* nodes one key may name */

/* Parse text into out[0..*n). Entries are separated by commas, blanks around them are ignored;
 * the port follows the last ':' (so "::1:26379" is [::1] port 26379); "[::1]:26379" works too.
 * Every host is named (kind CLUSTER_HOST_NAMED). Returns 0, or -1 with why in err (empty list,
 * empty host, bad port, too many nodes). */
int node_list_parse(const char *text, struct cluster_addr *out, int max, int *n, char *err, size_t errlen);

#endif
