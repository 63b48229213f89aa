/* Throw-away Redis Cluster and Sentinel deployments for the test programs, built on tp_redis
 * (proc.h): every process on free loopback ports, logging into its own directory, stopped by its
 * pid. A start returns only once the deployment has settled (every node agrees, every replica's
 * link is up), so a test begins from a known state. Like proc.h nothing here asserts: -1 and
 * tp_error() on failure. Single-threaded, the thread that spawns the children.
 *
 * Bounds: every wait is a condition polled under a deadline; `slow` multiplies the deadlines
 * (set it before the start: IT_SLOW in the harness; 0 counts as 1). REDIS_CLI_BIN names
 * redis-cli, used for `--cluster create`. */
#ifndef PR_TESTS_COMMON_CLUSTER_H
#define PR_TESTS_COMMON_CLUSTER_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "proc.h"

#define TP_CLUSTER_SLOTS 16384
#define TP_CLUSTER_MAX_NODES 12

/* One cluster node: a tp_redis plus its cluster bus port (chosen free too, so ports above
 * 55535 work) and its nodes file, both kept across a kill so a restart rejoins as the same node. */
struct tp_cluster_node {
    struct tp_redis r;
    int bus_port;              /* --cluster-port */
    char nodes_conf[PATH_MAX]; /* --cluster-config-file, <dir>/nodes-<port>.conf */
    char args[3][24];          /* storage of the port-dependent arguments while it is spawned */
};

struct tp_cluster {
    int slow;              /* deadline factor, set before tp_cluster_start (0: 1) */
    int masters, replicas; /* per master */
    int n;                 /* masters * (1 + replicas) nodes */
    struct tp_cluster_node node[TP_CLUSTER_MAX_NODES];
    char dir[PATH_MAX]; /* parent/cluster: every node's dir and log, create.log */
};

/* Start masters * (1 + replicas_per_master) nodes in parent_dir/cluster, form the cluster
 * (`redis-cli --cluster create`, or a single master taking every slot when masters is 1 and
 * there are no replicas: redis-cli wants 3 masters), and wait until it has settled. On failure
 * whatever was started is stopped. 0, or -1. */
int tp_cluster_start(struct tp_cluster *c, const char *parent_dir, int masters, int replicas_per_master);
/* SIGTERM every node, then wait (bounded; SIGKILL after) and reap. Nothing if none runs. */
void tp_cluster_stop(struct tp_cluster *c);
/* Settled: every running node counts all n nodes, none flagged fail/pfail/handshake, `masters`
 * masters, cluster_state:ok with all 16384 slots ok, every running replica's master link up;
 * and, when every node runs, each one's CLUSTER SLOTS names a master and a replica (if any) for
 * every slot. Polls until it holds: 0, or -1 after timeout_ms (tp_error says what did not hold). */
int tp_cluster_wait_settled(struct tp_cluster *c, int timeout_ms);
/* "127.0.0.1:p1,127.0.0.1:p2,..." of every node, for a `nodes =` key. 0, or -1 if too long. */
int tp_cluster_nodes(const struct tp_cluster *c, char *buf, size_t size);
/* The slot map as node `port` sees it (CLUSTER SLOTS): owner[slot] = its master's port, 0 for
 * an uncovered slot; replicas[slot] (if non-NULL) = the port of its first replica, 0 if none.
 * The number of covered slots, or -1. */
int tp_cluster_slots_at(int port, int *owner, int *replicas);
/* The port of the master of slot, asked of the first running node that answers; -1 if none. */
int tp_cluster_slot_master(const struct tp_cluster *c, int slot);
/* The index of the node on port, or -1. */
int tp_cluster_node_index(const struct tp_cluster *c, int port);
/* Does the node answer ROLE with "master"? */
bool tp_cluster_is_master(int port);
/* kill -9 node i and reap it (its port, bus port and nodes file stay for a restart). */
void tp_cluster_kill(struct tp_cluster *c, int i);
/* Start node i again on its ports and nodes file; waits for PING only. 0, or -1. */
int tp_cluster_restart(struct tp_cluster *c, int i);

/* ------------------------------------------------------------------ Sentinel */

#define TP_SENTINELS 3

/* One master, one replica of it, three sentinels monitoring it with quorum 2. */
struct tp_sentinel_set {
    int slow;                        /* deadline factor, set before the start (0: 1) */
    char name[32];                   /* the monitored master's name */
    struct tp_redis master, replica; /* as started; after a failover their roles swap */
    struct tp_redis sentinel[TP_SENTINELS];
    char replicaof[16];                /* storage of the replica's --replicaof port */
    char conf[TP_SENTINELS][PATH_MAX]; /* each sentinel's generated (and rewritten) config */
    char dir[PATH_MAX];                /* parent/sentinel */
};

/* Start the set in parent_dir/sentinel watching `name` (down-after 1000 ms, failover-timeout
 * 5000 ms) and wait until it has settled: every sentinel knows the master, sees the replica
 * and both other sentinels. On failure whatever was started is stopped. 0, or -1. */
int tp_sentinel_start(struct tp_sentinel_set *s, const char *parent_dir, const char *name);
/* SIGTERM everything, bounded wait, SIGKILL after; reaped. */
void tp_sentinel_stop(struct tp_sentinel_set *s);
/* "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3" of the sentinels. 0, or -1 if too long. */
int tp_sentinel_nodes(const struct tp_sentinel_set *s, char *buf, size_t size);
/* SENTINEL get-master-addr-by-name, asked of the first running sentinel that answers:
 * 0 and *port, or -1. */
int tp_sentinel_master(const struct tp_sentinel_set *s, int *port);
/* The same, asked of the sentinel on sentinel_port only. */
int tp_sentinel_master_at(int sentinel_port, const char *name, int *port);

#endif
