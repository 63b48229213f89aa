/* Throw-away ZooKeeper servers for the integration tests (contract §9): Debian's zookeeper
 * package run as `java -cp zookeeper.jar org.apache.zookeeper.server.ZooKeeperServerMain CFG`
 * (the jar's manifest names its dependencies), standalone, on a free loopback port, with its own
 * data directory. The tick is short (200 ms) and sessions may be as short as two ticks, so that
 * session expiry tests stay fast. Same conventions as proc.h: nothing asserts; a call that fails
 * returns -1 with the reason in tp_error(). JAVA_BIN and ZOOKEEPER_CLASSPATH (the jar, and a
 * log binding when there is one) name what to run. */
#ifndef PR_TESTS_COMMON_ZK_H
#define PR_TESTS_COMMON_ZK_H

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

struct tp_zk {
    pid_t pid;          /* running ZooKeeperServerMain, 0 if none */
    int port;           /* client port; kept across stop/kill so it can restart there */
    int tick_ms;        /* tickTime; granted sessions: 2 to 100 ticks */
    char name[32];      /* names its dir and log */
    char dir[PATH_MAX]; /* zoo.cfg and data/ */
    char log[PATH_MAX]; /* the JVM's stdout/stderr */
    int ready_ms;       /* how long a start waits for the server to serve */
};

/* Name z, make its directory parent/name, log to parent/name.log; tick 200 ms, 30 s to start
 * (a JVM on a busy machine). Nothing is started. 0, or -1. */
int tp_zk_init(struct tp_zk *z, const char *parent, const char *name);
/* Write zoo.cfg and start the server, on a fresh free port (new_port) or on z->port, waiting
 * until it serves; up to `attempts` spawns (a port race). 0 running, or -1 (z->pid 0). */
int tp_zk_start(struct tp_zk *z, bool new_port, int attempts);
/* SIGKILL and reap: ZooKeeper gone at once, its data kept (sessions and nodes come back with a
 * restart on the same directory). Nothing if it is not running. */
void tp_zk_kill(struct tp_zk *z);
/* Forget everything (sessions, nodes): remove the data directory. Only while stopped. */
void tp_zk_wipe(struct tp_zk *z);
/* Does 127.0.0.1:port answer the `srvr` four-letter word as a serving server, within 500 ms? */
bool tp_zk_serving(int port);
/* A free loopback port below the kernel's ephemeral range, for a ZooKeeper whose port must be
 * known (written into a server's config) before it starts: there no outgoing connection can take
 * it in the meantime, as one may take a port tp_free_port picked. -1 if none was found. */
int tp_zk_pick_port(void);

#endif
