/* Acceptor thread only. */
#include "net/listener.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "net/acceptor.h"

/* Accepting is bounded per event so a connection storm cannot starve established clients. */
#define ACCEPTS_PER_EVENT 64

static void on_acceptable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct listener *l = w->data;
    for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                log_limited(&l->acc->reject_log, LOG_WARN, "accept failed error=\"%s\"", strerror(errno));
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        acceptor_add_conn(l->acc, fd);
    }
}

int listener_open(struct listener *l, struct acceptor *acc, const char *host, int port)
{
    l->fd = -1;
    l->acc = acc;
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        log_error("listen failed addr=%s:%d error=\"%s\"", host, port, gai_strerror(rc));
        return -1;
    }
    int err = 0;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            l->fd = fd;
            break;
        }
        err = errno;
        close(fd);
    }
    freeaddrinfo(res);
    if (l->fd < 0) {
        log_error("listen failed addr=%s:%d error=\"%s\"", host, port, strerror(err));
        return -1;
    }
    l->host = host;
    l->port = port;
    ev_io_init(&l->io, on_acceptable, l->fd, EV_READ);
    l->io.data = l;
    return 0;
}

int listener_start(struct listener *l, struct ev_loop *loop)
{
    /* Two servers can both bind a port with SO_REUSEADDR; only one of them can listen. */
    if (listen(l->fd, 1024) < 0) {
        log_error("listen failed addr=%s:%d error=\"%s\"", l->host, l->port, strerror(errno));
        return -1;
    }
    ev_io_start(loop, &l->io);
    return 0;
}

void listener_close(struct listener *l, struct ev_loop *loop)
{
    if (l->fd < 0)
        return;
    ev_io_stop(loop, &l->io);
    close(l->fd);
    l->fd = -1;
}
