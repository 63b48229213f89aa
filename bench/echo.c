#include "echo.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "core/frame.h"
#include "core/pb_arena.h"
#include "core/request.h"
#include "presence.pb-c.h"
#include "workload.h"

#define ECHO_IN_CAP (256u << 10)
#define ECHO_MAX_FRAME (1u << 20)
#define ECHO_RESP_MAX 128u /* every canned response fits */

struct echo_conn {
    struct echo_server *e;
    int fd;
    ev_io rio, wio;
    uint8_t *in;               /* request bytes not parsed yet */
    size_t in_len, in_cap;
    uint8_t *out;              /* responses not written yet: [out_off, out_len) */
    size_t out_off, out_len, out_cap;
    struct echo_conn *next;    /* all connections, for cleanup */
};

struct echo_server {
    int lfd;                             /* listening socket */
    struct ev_loop *loop;
    ev_io accept_io;
    ev_async stop;                       /* echo_stop wakes the loop with this */
    pthread_t thread;
    struct echo_conn *conns;             /* every connection accepted (closed ones have fd -1) */
    uint8_t canned[BENCH_METHODS][ECHO_RESP_MAX]; /* whole response frames, by method */
    size_t canned_len[BENCH_METHODS];
    unsigned long long answered;         /* requests answered */
};

static const char echo_gateway[] = "bench-gw:7000";

static size_t frame_of(uint8_t *out, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_pack(m, out + FRAME_PREFIX);
    frame_put_u32le(out, (uint32_t)n);
    return FRAME_PREFIX + n;
}

static void build_canned(struct echo_server *e)
{
    Mpim__Result ok = MPIM__RESULT__INIT;
    Mpim__QueryRouteResp q = MPIM__QUERY_ROUTE_RESP__INIT;
    q.result = &ok;
    q.gateway_addr.data = (uint8_t *)echo_gateway;
    q.gateway_addr.len = sizeof(echo_gateway) - 1;
    q.is_online = 1;
    e->canned_len[PR_METHOD_QUERY] = frame_of(e->canned[PR_METHOD_QUERY], &q.base);
    Mpim__DeliverResp d = MPIM__DELIVER_RESP__INIT;
    d.result = &ok;
    d.timestamp = 1700000000000;
    e->canned_len[PR_METHOD_DELIVER] = frame_of(e->canned[PR_METHOD_DELIVER], &d.base);
    Mpim__UnbindRouteResp u = MPIM__UNBIND_ROUTE_RESP__INIT;
    u.result = &ok;
    u.unbound = 1;
    e->canned_len[PR_METHOD_UNBIND] = frame_of(e->canned[PR_METHOD_UNBIND], &u.base);
    Mpim__HeartbeatResp h = MPIM__HEARTBEAT_RESP__INIT;
    h.result = &ok;
    h.refreshed = 1;
    e->canned_len[PR_METHOD_HEARTBEAT] = frame_of(e->canned[PR_METHOD_HEARTBEAT], &h.base);
}

static int method_of(const ProtobufCBinaryData *name)
{
    for (int m = 0; m < BENCH_METHODS; m++) {
        const char *s = request_method_name(m);
        if (strlen(s) == name->len && memcmp(s, name->data, name->len) == 0)
            return m;
    }
    return -1;
}

/* Append the response to one request frame; an error reply (INVALID) for what we don't know. */
static void answer(struct echo_server *e, struct echo_conn *c, const struct frame_request *fr)
{
    int m = method_of(&fr->header->method_name);
    uint8_t *out = c->out + c->out_len;
    if (m == PR_METHOD_BIND) {
        uint8_t abuf[256];
        struct pb_arena arena;
        pb_arena_init(&arena, abuf, sizeof(abuf));
        Mpim__BindRouteReq *req = mpim__bind_route_req__unpack(&arena.allocator, fr->args_len, fr->args);
        char key[40];
        snprintf(key, sizeof(key), "user:route:%lld", req != NULL ? (long long)req->user_id : 0LL);
        if (req != NULL)
            mpim__bind_route_req__free_unpacked(req, &arena.allocator);
        Mpim__Result ok = MPIM__RESULT__INIT;
        Mpim__BindRouteResp b = MPIM__BIND_ROUTE_RESP__INIT;
        b.result = &ok;
        b.route_key = key;
        c->out_len += frame_of(out, &b.base);
    } else if (m >= 0) {
        memcpy(out, e->canned[m], e->canned_len[m]);
        c->out_len += e->canned_len[m];
    } else {
        static char unknown[] = "unknown method"; /* protobuf-c strings are char * */
        Mpim__Result bad = MPIM__RESULT__INIT;
        bad.code = MPIM__CODE__INVALID;
        bad.msg = unknown;
        Mpim__ErrorResp r = MPIM__ERROR_RESP__INIT;
        r.result = &bad;
        c->out_len += frame_of(out, &r.base);
    }
    e->answered++;
}

static void conn_close(struct echo_conn *c)
{
    ev_io_stop(c->e->loop, &c->rio);
    ev_io_stop(c->e->loop, &c->wio);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void conn_flush(struct echo_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ev_io_stop(c->e->loop, &c->rio); /* back-pressure: read again once drained */
                ev_io_start(c->e->loop, &c->wio);
                return;
            }
            conn_close(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    ev_io_stop(c->e->loop, &c->wio);
    ev_io_start(c->e->loop, &c->rio);
}

static void on_conn_write(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    conn_flush(io->data);
}

static void on_conn_read(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct echo_conn *c = io->data;
    if (c->in_len == c->in_cap) { /* a frame larger than the buffer */
        size_t cap = c->in_cap * 2;
        uint8_t *p = cap <= 2 * ECHO_MAX_FRAME ? realloc(c->in, cap) : NULL;
        if (p == NULL) {
            conn_close(c);
            return;
        }
        c->in = p;
        c->in_cap = cap;
    }
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        conn_close(c);
        return;
    }
    c->in_len += (size_t)n;
    size_t off = 0;
    for (;;) {
        struct frame_request fr;
        int rc = frame_parse_request(c->in + off, c->in_len - off, ECHO_MAX_FRAME, &fr);
        if (rc == FRAME_AGAIN)
            break;
        if (rc < 0) {
            conn_close(c);
            return;
        }
        if (c->out_cap - c->out_len < ECHO_RESP_MAX) {
            size_t cap = c->out_cap * 2;
            uint8_t *p = realloc(c->out, cap);
            if (p == NULL) {
                frame_request_done(&fr);
                conn_close(c);
                return;
            }
            c->out = p;
            c->out_cap = cap;
        }
        answer(c->e, c, &fr);
        off += fr.frame_len;
        frame_request_done(&fr);
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    conn_flush(c);
}

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    struct echo_server *e = io->data;
    int fd = accept4(e->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    struct echo_conn *c = calloc(1, sizeof(*c));
    if (c != NULL) {
        c->in_cap = ECHO_IN_CAP;
        c->out_cap = 64u << 10;
        c->in = malloc(c->in_cap);
        c->out = malloc(c->out_cap);
    }
    if (c == NULL || c->in == NULL || c->out == NULL) {
        if (c != NULL) {
            free(c->in);
            free(c->out);
        }
        free(c);
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->e = e;
    c->fd = fd;
    ev_io_init(&c->rio, on_conn_read, fd, EV_READ);
    ev_io_init(&c->wio, on_conn_write, fd, EV_WRITE);
    c->rio.data = c->wio.data = c;
    c->next = e->conns;
    e->conns = c;
    ev_io_start(loop, &c->rio);
}

static void on_stop(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)a;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void *echo_main(void *arg)
{
    struct echo_server *e = arg;
    ev_run(e->loop, 0);
    return NULL;
}

struct echo_server *echo_start(int *port)
{
    struct echo_server *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    build_canned(e);
    e->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sin);
    if (e->lfd < 0 || bind(e->lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(e->lfd, 1024) < 0 ||
        getsockname(e->lfd, (struct sockaddr *)&sin, &len) < 0)
        goto fail;
    *port = ntohs(sin.sin_port);
    e->loop = ev_loop_new(EVFLAG_AUTO);
    if (e->loop == NULL)
        goto fail;
    ev_io_init(&e->accept_io, on_accept, e->lfd, EV_READ);
    e->accept_io.data = e;
    ev_io_start(e->loop, &e->accept_io);
    ev_async_init(&e->stop, on_stop);
    ev_async_start(e->loop, &e->stop);
    if (pthread_create(&e->thread, NULL, echo_main, e) != 0)
        goto fail;
    return e;
fail:
    if (e->loop != NULL)
        ev_loop_destroy(e->loop);
    if (e->lfd >= 0)
        close(e->lfd);
    free(e);
    return NULL;
}

unsigned long long echo_stop(struct echo_server *e)
{
    ev_async_send(e->loop, &e->stop);
    pthread_join(e->thread, NULL);
    unsigned long long answered = e->answered;
    for (struct echo_conn *c = e->conns, *next; c != NULL; c = next) {
        next = c->next;
        conn_close(c);
        free(c->in);
        free(c->out);
        free(c);
    }
    ev_io_stop(e->loop, &e->accept_io);
    ev_loop_destroy(e->loop);
    close(e->lfd);
    free(e);
    return answered;
}
