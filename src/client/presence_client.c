/* Blocking im-presence client (see presence_client.h).
 *
 * The socket stays in blocking mode for anyone holding pc_fd(), but every read and write here
 * uses MSG_DONTWAIT after a poll(), so each call can honour its deadline. While flushing we also
 * read whatever the server has answered: a long pipeline can then never deadlock with a server
 * that stops reading until its answers are taken. */
#include "client/presence_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/frame.h"

#define PC_MAX_RESPONSE ((size_t)64 << 20) /* a response body larger than this is malformed */
#define PC_READ_CHUNK ((size_t)64 << 10)   /* free space we want before each read */
#define PC_BUF_MIN ((size_t)4 << 10)       /* first allocation of every buffer */

/* A byte buffer: data[off, len) is live; bytes before off are already written or consumed. */
struct pc_buf {
    uint8_t *data; /* never NULL once the client exists */
    size_t off;    /* out: bytes already sent; in: bytes already handed to the caller */
    size_t len;    /* bytes held, including the off prefix */
    size_t cap;    /* bytes allocated */
};

struct pc_client {
    int fd;                /* connected TCP socket, blocking mode */
    int timeout_ms;        /* bound of every public call's waiting; 0: none */
    bool eof;              /* the server closed its side: no more bytes will arrive */
    struct pc_buf out;     /* framed requests not yet written */
    struct pc_buf in;      /* bytes received, not yet returned as responses */
    struct pc_buf scratch; /* pc_send packs the args here before framing them */
    char err[192];         /* last error, for pc_error() */
};

static void set_error(struct pc_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_error(struct pc_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
}

/* Short lower-case wording for the errors people actually meet; strerror for the rest. */
static const char *errno_text(int e)
{
    switch (e) {
    case ECONNREFUSED: return "connection refused";
    case ECONNRESET: return "connection reset by the server";
    case EPIPE: return "server closed the connection";
    case ETIMEDOUT: return "timed out";
    case EHOSTUNREACH: return "host unreachable";
    case ENETUNREACH: return "network unreachable";
    case ENOMEM: return "out of memory";
    default: return strerror(e);
    }
}

/* ---- time ---- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A deadline in mono_ms() time, or -1 for none. */
static int64_t deadline_after(int timeout_ms)
{
    return timeout_ms > 0 ? mono_ms() + timeout_ms : -1;
}

/* What is left of a deadline, as a poll() timeout. */
static int remaining_ms(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - mono_ms();
    return left > 0 ? (int)left : 0;
}

/* poll() one fd until it is ready or the deadline passes, retrying on EINTR.
 * Returns 1 (ready, *revents set), 0 (timed out) or -1 (errno set). */
static int poll_until(int fd, short events, int64_t deadline, short *revents)
{
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int n = poll(&p, 1, remaining_ms(deadline));
        if (n > 0) {
            *revents = p.revents;
            return 1;
        }
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* poll_until for a client: a timeout or failure becomes the client's error. */
static int wait_fd(struct pc_client *c, short events, int64_t deadline, short *revents)
{
    int rc = poll_until(c->fd, events, deadline, revents);
    if (rc == 0) {
        set_error(c, "timed out after %d ms", c->timeout_ms);
        return -1;
    }
    if (rc < 0) {
        set_error(c, "poll: %s", errno_text(errno));
        return -1;
    }
    if (*revents & POLLNVAL) {
        set_error(c, "socket is not open");
        return -1;
    }
    return 0;
}

/* ---- buffers ---- */

static int buf_init(struct pc_buf *b)
{
    b->data = malloc(PC_BUF_MIN);
    b->off = b->len = 0;
    b->cap = b->data != NULL ? PC_BUF_MIN : 0;
    return b->data != NULL ? 0 : -1;
}

/* Make room for extra more bytes after len: drop the consumed prefix first, then grow. */
static int buf_reserve(struct pc_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= extra)
            return 0;
    }
    if (extra > SIZE_MAX / 2 - b->len)
        return -1;
    size_t cap = b->cap * 2;
    if (cap < b->len + extra)
        cap = b->len + extra;
    uint8_t *data = realloc(b->data, cap);
    if (data == NULL)
        return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

/* ---- socket I/O (one non-blocking step each) ---- */

/* Read what is available into c->in. Returns 0 (possibly nothing read) or -1. */
static int read_some(struct pc_client *c)
{
    if (c->in.off == c->in.len)
        c->in.off = c->in.len = 0; /* everything consumed: start over, no memmove */
    if (buf_reserve(&c->in, PC_READ_CHUNK) < 0) {
        set_error(c, "out of memory");
        return -1;
    }
    ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, MSG_DONTWAIT);
    if (n > 0) {
        c->in.len += (size_t)n;
        return 0;
    }
    if (n == 0) {
        c->eof = true;
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return 0;
    set_error(c, "%s", errno_text(errno));
    return -1;
}

/* Write what the socket takes from c->out. Returns 0 (possibly nothing written) or -1. */
static int write_some(struct pc_client *c)
{
    /* MSG_NOSIGNAL: a server that went away must give us EPIPE, not kill the process. */
    ssize_t n = send(c->fd, c->out.data + c->out.off, c->out.len - c->out.off,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
        c->out.off += (size_t)n;
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return 0;
    set_error(c, "%s", errno_text(errno));
    return -1;
}

static int flush_until(struct pc_client *c, int64_t deadline)
{
    while (c->out.off < c->out.len) {
        short revents = 0;
        short events = (short)(POLLOUT | (c->eof ? 0 : POLLIN));
        if (wait_fd(c, events, deadline, &revents) < 0)
            return -1;
        /* Take the answers that are ready, so the server is never stuck writing them. */
        if (!c->eof && (revents & (POLLIN | POLLHUP | POLLERR)) && read_some(c) < 0)
            return -1;
        if ((revents & (POLLOUT | POLLHUP | POLLERR)) && write_some(c) < 0)
            return -1;
    }
    c->out.off = c->out.len = 0;
    return 0;
}

static int recv_raw_until(struct pc_client *c, int64_t deadline, const uint8_t **body, size_t *len)
{
    for (;;) {
        size_t frame_len = 0;
        const uint8_t *p = c->in.data + c->in.off;
        size_t have = c->in.len - c->in.off;
        int st = frame_parse_response(p, have, PC_MAX_RESPONSE, body, len, &frame_len);
        if (st == FRAME_OK) {
            /* The body stays where it is until the next call touches the buffer. */
            c->in.off += frame_len;
            return 0;
        }
        if (st < 0) {
            set_error(c, "malformed response: a %u-byte frame is over the %zu-byte limit",
                      (unsigned)frame_get_u32le(p), PC_MAX_RESPONSE);
            return -1;
        }
        if (c->eof) {
            set_error(c, have > 0 ? "server closed the connection in the middle of a response"
                                  : "server closed the connection");
            return -1;
        }
        short revents = 0;
        if (wait_fd(c, POLLIN, deadline, &revents) < 0 || read_some(c) < 0)
            return -1;
    }
}

/* ---- connecting ---- */

/* Connect one address within the deadline. Returns the fd (blocking mode) or -1 with *why. */
static int dial_one(const struct addrinfo *ai, int64_t deadline, const char **why)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        *why = errno_text(errno);
        return -1;
    }
    /* Non-blocking connect, so the deadline holds even against a host that drops SYNs. */
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS && errno != EINTR) {
            *why = errno_text(errno);
            goto fail;
        }
        short revents = 0;
        int rc = poll_until(fd, POLLOUT, deadline, &revents);
        if (rc <= 0) {
            *why = rc == 0 ? "timed out" : errno_text(errno);
            goto fail;
        }
        int soerr = 0;
        socklen_t slen = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) < 0)
            soerr = errno;
        if (soerr != 0) {
            *why = errno_text(soerr);
            goto fail;
        }
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
        *why = errno_text(errno);
        goto fail;
    }
    /* Small requests must leave at once; Nagle would hold them behind the previous answer. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;

fail:
    close(fd);
    return -1;
}

/* Try every address of host:port in turn until one connects or the deadline passes. */
static int dial(const char *host, int port, int64_t deadline, const char **why)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        *why = rc == EAI_SYSTEM ? errno_text(errno) : gai_strerror(rc);
        return -1;
    }
    int fd = -1;
    for (const struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = dial_one(ai, deadline, why);
        if (fd < 0 && deadline >= 0 && remaining_ms(deadline) == 0) {
            *why = "timed out";
            break;
        }
    }
    freeaddrinfo(res);
    return fd;
}

/* ---- public API ---- */

struct pc_client *pc_connect(const char *host, int port, int timeout_ms, const char **err)
{
    const char *why = "out of memory";
    struct pc_client *c = NULL;
    if (host == NULL || port <= 0 || port > 65535) {
        why = "invalid host or port";
        goto fail;
    }
    if (timeout_ms < 0) {
        why = "invalid timeout";
        goto fail;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        goto fail;
    c->fd = -1;
    c->timeout_ms = timeout_ms;
    if (buf_init(&c->out) < 0 || buf_init(&c->in) < 0 || buf_init(&c->scratch) < 0)
        goto fail;
    c->fd = dial(host, port, deadline_after(timeout_ms), &why);
    if (c->fd < 0)
        goto fail;
    return c;

fail:
    if (err != NULL)
        *err = why;
    pc_close(c);
    return NULL;
}

void pc_close(struct pc_client *c)
{
    if (c == NULL)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c->out.data);
    free(c->in.data);
    free(c->scratch.data);
    free(c);
}

const char *pc_error(const struct pc_client *c)
{
    return c != NULL ? c->err : "no client";
}

int pc_fd(const struct pc_client *c)
{
    return c != NULL ? c->fd : -1;
}

int pc_send(struct pc_client *c, int method, const ProtobufCMessage *req)
{
    if (method < 0 || method >= PR_METHOD_COUNT || req == NULL) {
        set_error(c, "pc_send: bad method %d or no request", method);
        return -1;
    }
    size_t args_len = protobuf_c_message_get_packed_size(req);
    if (args_len > UINT32_MAX) {
        set_error(c, "request of %zu bytes is too large", args_len);
        return -1;
    }
    /* Pack into scratch first: frame_write_request copies the args behind the header. */
    const char *name = request_method_name(method);
    size_t frame_len = frame_request_size(CODEC_SERVICE, name, args_len);
    c->scratch.off = c->scratch.len = 0;
    if (buf_reserve(&c->scratch, args_len) < 0 || buf_reserve(&c->out, frame_len) < 0) {
        set_error(c, "out of memory");
        return -1;
    }
    protobuf_c_message_pack(req, c->scratch.data);
    c->out.len += frame_write_request(c->out.data + c->out.len, CODEC_SERVICE, name, c->scratch.data,
                                      args_len);
    return 0;
}

int pc_send_raw(struct pc_client *c, const void *bytes, size_t len)
{
    if (len == 0)
        return 0;
    if (buf_reserve(&c->out, len) < 0) {
        set_error(c, "out of memory");
        return -1;
    }
    memcpy(c->out.data + c->out.len, bytes, len);
    c->out.len += len;
    return 0;
}

int pc_flush(struct pc_client *c)
{
    return flush_until(c, deadline_after(c->timeout_ms));
}

int pc_recv_raw(struct pc_client *c, const uint8_t **body, size_t *len)
{
    /* Anything still queued is sent first: its answer may be the one awaited. */
    int64_t deadline = deadline_after(c->timeout_ms);
    if (flush_until(c, deadline) < 0)
        return -1;
    return recv_raw_until(c, deadline, body, len);
}

int pc_recv(struct pc_client *c, int method, ProtobufCMessage **resp)
{
    *resp = NULL;
    const ProtobufCMessageDescriptor *desc = pc_response_descriptor(method);
    if (desc == NULL) {
        set_error(c, "pc_recv: bad method %d", method);
        return -1;
    }
    const uint8_t *body;
    size_t len;
    if (pc_recv_raw(c, &body, &len) < 0)
        return -1;
    /* The frame is consumed either way, so the next response stays in step. */
    *resp = protobuf_c_message_unpack(desc, NULL, len, body);
    if (*resp == NULL) {
        set_error(c, "malformed response: %zu bytes do not decode as %s", len, desc->short_name);
        return -1;
    }
    return 0;
}

int pc_call(struct pc_client *c, int method, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    *resp = NULL;
    if (pc_send(c, method, req) < 0)
        return -1;
    return pc_recv(c, method, resp); /* flushes, then waits, within one timeout */
}

/* ---- typed helpers ---- */

/* A C string as a protobuf bytes field (NULL: empty). Packing only reads it. */
static ProtobufCBinaryData bytes_of(const char *s)
{
    ProtobufCBinaryData b = {.len = s != NULL ? strlen(s) : 0, .data = (uint8_t *)s};
    return b;
}

int pc_bind(struct pc_client *c, int64_t uid, const char *gw, Mpim__BindRouteResp **resp)
{
    Mpim__BindRouteReq req = MPIM__BIND_ROUTE_REQ__INIT;
    req.user_id = uid;
    req.gateway_addr = bytes_of(gw);
    ProtobufCMessage *m = NULL;
    int rc = pc_call(c, PR_METHOD_BIND, &req.base, &m);
    *resp = (Mpim__BindRouteResp *)m;
    return rc;
}

int pc_query(struct pc_client *c, int64_t uid, Mpim__QueryRouteResp **resp)
{
    Mpim__QueryRouteReq req = MPIM__QUERY_ROUTE_REQ__INIT;
    req.user_id = uid;
    ProtobufCMessage *m = NULL;
    int rc = pc_call(c, PR_METHOD_QUERY, &req.base, &m);
    *resp = (Mpim__QueryRouteResp *)m;
    return rc;
}

int pc_deliver(struct pc_client *c, int64_t uid, const void *msg, size_t len, const char *type,
               Mpim__DeliverResp **resp)
{
    Mpim__DeliverReq req = MPIM__DELIVER_REQ__INIT;
    req.user_id = uid;
    req.message.data = (uint8_t *)msg;
    req.message.len = msg != NULL ? len : 0;
    req.message_type = bytes_of(type);
    ProtobufCMessage *m = NULL;
    int rc = pc_call(c, PR_METHOD_DELIVER, &req.base, &m);
    *resp = (Mpim__DeliverResp *)m;
    return rc;
}

int pc_unbind(struct pc_client *c, int64_t uid, const char *gw, Mpim__UnbindRouteResp **resp)
{
    Mpim__UnbindRouteReq req = MPIM__UNBIND_ROUTE_REQ__INIT;
    req.user_id = uid;
    req.gateway_addr = bytes_of(gw);
    ProtobufCMessage *m = NULL;
    int rc = pc_call(c, PR_METHOD_UNBIND, &req.base, &m);
    *resp = (Mpim__UnbindRouteResp *)m;
    return rc;
}

int pc_heartbeat(struct pc_client *c, int64_t uid, const char *gw, Mpim__HeartbeatResp **resp)
{
    Mpim__HeartbeatReq req = MPIM__HEARTBEAT_REQ__INIT;
    req.user_id = uid;
    req.gateway_addr = bytes_of(gw);
    ProtobufCMessage *m = NULL;
    int rc = pc_call(c, PR_METHOD_HEARTBEAT, &req.base, &m);
    *resp = (Mpim__HeartbeatResp *)m;
    return rc;
}

const ProtobufCMessageDescriptor *pc_response_descriptor(int method)
{
    return codec_response_descriptor(method);
}

const char *pc_code_name(int code)
{
    return request_code_name(code);
}
