/* The registrar thread (contract §9, [zookeeper]): makes the server findable by MPIM's RPC
 * clients, which read the ZooKeeper node /<Service>/<Method> (data "ip:port") and dial it.
 *
 * Once the server is serving (the port listens and every shard's cache and queue links are up),
 * it creates the persistent node /PresenceService and, for every method the codec accepts, the
 * ephemeral node /PresenceService/<Method> holding the advertise address. A method node that
 * another instance's session holds is watched and created as soon as it goes (takeover). After a
 * session expiry it starts a new session and creates its nodes again; while ZooKeeper is away the
 * server serves on, and the client library reconnects on its own. registrar_deregister closes
 * the session, which makes ZooKeeper delete every node it holds, before the acceptor drains.
 *
 * Threads:
 *   - registrar_start, registrar_stop: the main thread, before and after the acceptor runs;
 *   - registrar_deregister: the acceptor thread, from its SIGTERM/SIGINT handler;
 *   - registrar_registered: any thread (metrics);
 *   - registrar.c's static functions and node.c: the registrar thread, the only caller of the
 *     ZooKeeper API;
 *   - zk_events.c: the ZooKeeper client library's own threads. They only store into the atomics
 *     marked below and write the registrar's eventfd; they share no lock with a shard or the
 *     acceptor, and nothing here is on the request path. */
#ifndef PR_REGISTRAR_REGISTRAR_H
#define PR_REGISTRAR_REGISTRAR_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/counter.h"
#include "core/log.h"
#include "core/request.h"

struct shard;

/* A node's life on the registrar thread (node.c). */
enum reg_node_state {
    REG_IDLE,     /* to create when serving, connected and past retry_at_ms */
    REG_CREATING, /* zoo_acreate in flight */
    REG_CHECKING, /* zoo_awexists in flight: whose is it? (sets the watch) */
    REG_HELD,     /* exists and, for a method node, belongs to our session; watched */
    REG_OTHER,    /* another session's; watched, created again once it is gone */
};

#define REG_NO_RESULT (-1000000)        /* reg_node.result while no answer waits */
#define REG_NODES (1 + PR_METHOD_COUNT) /* [0] /PresenceService, [1 + m] its method m */

struct registrar;

struct reg_node {
    struct registrar *r;
    char path[64];  /* "/PresenceService" or "/PresenceService/<Method>" */
    bool ephemeral; /* the method nodes; the service node is persistent */
    /* Registrar thread only. */
    enum reg_node_state state;
    int64_t retry_at_ms; /* REG_IDLE: not before this monotonic time (after a failure) */
    /* Written by the ZooKeeper client's threads, taken by the registrar thread. */
    atomic_int result;       /* ZooKeeper rc of the operation in flight, REG_NO_RESULT: none yet */
    _Atomic int64_t owner;   /* ephemeralOwner in the last exists answer (0: none) */
    atomic_bool watch_fired; /* the watch saw the node created, deleted or changed */
};

struct registrar {
    /* Fixed by registrar_start. */
    const struct presence_conf *conf;
    const struct shard *shards; /* read only through shard_stats_read */
    int nshards;
    int listen_fd;       /* the acceptor's listening socket, only asked SO_ACCEPTCONN */
    char advertise[192]; /* "ip:port" the method nodes hold */
    char hosts[256];     /* [zookeeper] hosts without blanks: the client's connect string */
    bool started;        /* the thread runs ([zookeeper] hosts is set) */
    pthread_t thread;
    int wake_fd; /* eventfd: anyone -> registrar thread */
    int done_fd; /* eventfd: registrar thread -> registrar_deregister */

    /* Flags other threads set. */
    atomic_bool stop; /* acceptor: close the session, create nothing more */
    atomic_bool quit; /* main: end the thread */
    /* Written by the ZooKeeper client's session watcher. */
    atomic_int session_state;   /* last ZOO_*_STATE seen, 0 before the first */
    _Atomic int64_t session_id; /* our session, from its last ZOO_CONNECTED_STATE */

    counter_t registered; /* gauge, registrar thread writes: connected, every node ours */

    /* Registrar thread only. */
    void *zh;                /* zhandle_t *, NULL while there is no session */
    int64_t reopen_at_ms;    /* no session: open one at this monotonic time */
    int64_t connected_at_ms; /* last step that saw the session connected (or the handle opened) */
    int64_t resume_id;       /* a session to resume with a new handle (0: start a new one) */
    char resume_passwd[16];  /* ... and its password */
    bool stale;              /* handles replaced since the last connection (logged once) */
    int seen_state;          /* session_state last acted on, for the logs */
    bool serving;            /* the last serving check passed (logged once per change) */
    struct log_limit op_log; /* failed requests and session starts */
    struct reg_node node[REG_NODES];
};

/* Main thread, after the shards and the listener exist and before accepting: start the thread
 * if [zookeeper] hosts is set (else nothing; 0). listen_fd is the bound listening socket.
 * 0, or -1 logged (no thread, no eventfd). */
int registrar_start(struct registrar *r, const struct presence_conf *conf, const struct shard *shards,
                    int nshards, int listen_fd);

/* Acceptor thread, once, before it stops accepting: close the ZooKeeper session (its nodes go
 * with it) and wait for that, at most REGISTRAR_DEREGISTER_MS. A ZooKeeper that is down cannot
 * be told: the nodes lapse with the session. `arg` is the struct registrar (acceptor hook). */
void registrar_deregister(void *arg);
#define REGISTRAR_DEREGISTER_MS 2000

/* Main thread, after the acceptor returned: end the thread (closing the session if still open)
 * and free what registrar_start made. Nothing if it never started. */
void registrar_stop(struct registrar *r);

/* Any thread: 1 while connected and holding every method node, else 0. NULL r: 0. */
uint64_t registrar_registered(const struct registrar *r);

#endif
