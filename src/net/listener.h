/* The listening socket. Acceptor thread only. */
#ifndef PR_NET_LISTENER_H
#define PR_NET_LISTENER_H

#include <ev.h>

struct acceptor;

struct listener {
    int fd;              /* -1 when closed */
    ev_io io;            /* readable = connections to accept */
    struct acceptor *acc;
    const char *host;    /* for logs (the configuration's string) */
    int port;
};

/* Bind host:port (a taken port fails here, before any thread starts). 0, or -1 with the
 * reason logged. Nothing is accepted yet: the kernel queues no connection before listen. */
int listener_open(struct listener *l, struct acceptor *acc, const char *host, int port);
/* Listen and accept. Called last in start-up, so a port that accepts is the server's readiness
 * signal: signal handlers, shard threads and the metrics thread all exist by then. 0 or -1. */
int listener_start(struct listener *l, struct ev_loop *loop);
void listener_close(struct listener *l, struct ev_loop *loop);

#endif
