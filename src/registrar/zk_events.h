/* What the ZooKeeper client library calls back: the session watcher, the node watcher, the
 * completions of the registrar's operations and the client's log lines. These run on the
 * library's own threads (its completion and I/O threads, or inside zookeeper_close on the
 * registrar thread). They only store what they learnt into the registrar's atomics and wake the
 * registrar thread; every decision is taken there. No lock, no call into the rest of the server
 * but the logger. */
#ifndef PR_REGISTRAR_ZK_EVENTS_H
#define PR_REGISTRAR_ZK_EVENTS_H

#include <zookeeper/zookeeper.h>

#include "registrar/registrar.h"

/* Any thread: make the registrar thread run its next step now. */
void registrar_wake(struct registrar *r);

/* Session events (the handle's watcher; ctx is the struct registrar). */
void zk_session_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx);
/* Events of one node's exists watch (ctx is the struct reg_node). */
void zk_node_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx);
/* Completions of zoo_acreate and zoo_awexists (data is the struct reg_node). */
void zk_created(int rc, const char *value, const void *data);
void zk_exists(int rc, const struct Stat *stat, const void *data);
/* The client library's log lines, at most one a second (it repeats itself while ZooKeeper is down). */
void zk_log(const char *message);

#endif
