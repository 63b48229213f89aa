/* The listening socket. Acceptor thread only. */
#ifndef PR_NET_LISTENER_H
#define PR_NET_LISTENER_H

#include <ev.h>

struct acceptor;

struct listener {
    int fd;              /* -1 when closed */
    ev_io io;            /* readable = connections to accept */
    struct acceptor *acc;
};

/* Bind and listen on host:port. 0, or -1 with the reason logged. */
int listener_open(struct listener *l, struct acceptor *acc, const char *host, int port);
void listener_start(struct listener *l, struct ev_loop *loop);
void listener_close(struct listener *l, struct ev_loop *loop);

#endif
