/* Client connections. Acceptor thread only. */
#include "net/conn.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/codec.h"
#include "core/frame.h"
#include "core/log.h"
#include "core/request.h"
#include "core/thread_role.h"
#include "net/acceptor.h"

#define IN_INITIAL 16384
#define READ_MIN 4096
#define DRAIN_READ_MAX (8u << 20) /* bytes still taken from a socket at shutdown */

static int process_input(struct conn *c);
static int in_reserve(struct conn *c);

static void on_readable(struct ev_loop *loop, ev_io *w, int revents);
static void on_writable(struct ev_loop *loop, ev_io *w, int revents);

#ifndef NDEBUG
/* Whether a connection may go from one state to the other (the table in conn.h). */
static bool state_change_ok(enum conn_state from, enum conn_state to)
{
    switch (to) {
    case CONN_READING: return from == CONN_PAUSED;
    case CONN_PAUSED: return from == CONN_READING;
    case CONN_DRAINING: return from == CONN_READING || from == CONN_PAUSED;
    case CONN_BROKEN: return from != CONN_BROKEN && from != CONN_CLOSED;
    case CONN_CLOSED: return from != CONN_CLOSED;
    }
    return false;
}
#endif

/* The one place a connection's state changes (memcached's conn_set_state), so every transition
 * is checked and greppable, and rio is active exactly while reading. */
static void conn_set_state(struct conn *c, enum conn_state state)
{
    assert(state_change_ok(c->state, state));
    c->state = state;
    if (state == CONN_READING)
        ev_io_start(c->acc->loop, &c->rio);
    else
        ev_io_stop(c->acc->loop, &c->rio);
}

struct conn *conn_create(struct acceptor *acc, int fd, uint64_t id)
{
    ASSERT_THREAD_OF(ROLE_ACCEPTOR, acc);
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        goto fail;
    c->acc = acc;
    c->id = id;
    c->fd = fd;
    c->in = malloc(IN_INITIAL);
    if (c->in == NULL || window_init(&c->window, (uint32_t)acc->conf->max_inflight) < 0)
        goto fail;
    c->in_cap = IN_INITIAL;
    ev_io_init(&c->rio, on_readable, fd, EV_READ);
    c->rio.data = c;
    ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
    c->wio.data = c;
    c->state = CONN_READING; /* the first state: conn_set_state makes every later change */
    ev_io_start(acc->loop, &c->rio);
    c->last_active = ev_now(acc->loop);
    return c;
fail:
    if (c != NULL) {
        free(c->in);
        free(c);
    }
    close(fd);
    return NULL;
}

void conn_close(struct conn *c, const char *why)
{
    ASSERT_THREAD_OF(ROLE_ACCEPTOR, c->acc);
    if (c->state == CONN_CLOSED)
        return;
    log_debug("connection closed conn=%llu reason=\"%s\"", (unsigned long long)c->id, why);
    conn_set_state(c, CONN_CLOSED);
    ev_io_stop(c->acc->loop, &c->wio);
    close(c->fd);
    c->fd = -1;
    window_destroy(&c->window);
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    acceptor_remove_conn(c->acc, c);
    /* On the flush list the struct is still referenced: the acceptor frees it there. */
    if (!c->dirty)
        free(c);
}

bool conn_idle(const struct conn *c)
{
    ASSERT_THREAD_OF(ROLE_ACCEPTOR, c->acc);
    return window_outstanding(&c->window) == 0 && c->out_off == c->out_len;
}

/* Room for n more output bytes. */
static int out_reserve(struct conn *c, size_t n)
{
    if (c->out_len + n <= c->out_cap)
        return 0;
    if (c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
        if (c->out_len + n <= c->out_cap)
            return 0;
    }
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap < c->out_len + n)
        cap *= 2;
    uint8_t *p = realloc(c->out, cap);
    if (p == NULL)
        return -1;
    c->out = p;
    c->out_cap = cap;
    return 0;
}

void conn_answer(struct conn *c, struct pr_request *req)
{
    ASSERT_THREAD_OF(ROLE_ACCEPTOR, c->acc);
    assert(c->state != CONN_CLOSED);
    window_complete(&c->window, req);
    uint64_t now = acceptor_now_ns(c->acc);
    struct pr_request *r;
    while ((r = window_pop(&c->window)) != NULL) {
        if (r->started_ns != 0)
            latency_record(&c->acc->counters.latency[r->method], now - r->started_ns);
        if (c->state != CONN_BROKEN && out_reserve(c, codec_response_bound(r)) == 0)
            c->out_len += codec_encode_response(r, c->out + c->out_len);
        else
            conn_break(c);
        TRACE_HOOK(trace_encoded(c, r));
        acceptor_request_free(c->acc, r);
    }
    acceptor_mark_dirty(c->acc, c);
}

/* Write as much pending output as the socket takes. -1 if the connection broke. */
static int write_out(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            counter_add(&c->acc->counters.bytes_out, (uint64_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(c->acc->loop, &c->wio);
            return 0;
        }
        return -1;
    }
    c->out_off = c->out_len = 0;
    TRACE_HOOK(trace_written(c));
    ev_io_stop(c->acc->loop, &c->wio);
    return 0;
}

void conn_break(struct conn *c)
{
    ASSERT_THREAD_OF(ROLE_ACCEPTOR, c->acc);
    if (c->state != CONN_BROKEN)
        conn_set_state(c, CONN_BROKEN);
    acceptor_mark_dirty(c->acc, c);
}

void conn_flush(struct conn *c)
{
    ASSERT_THREAD_OF(ROLE_ACCEPTOR, c->acc);
    assert(c->state != CONN_CLOSED);
    if (c->state == CONN_BROKEN) {
        conn_close(c, "out of memory");
        return;
    }
    if (write_out(c) < 0) {
        conn_close(c, "write failed");
        return;
    }
    if (c->out_len - c->out_off > c->acc->conf->max_output_bytes) {
        counter_add(&c->acc->counters.output_overflows, 1);
        log_limited(&c->acc->protocol_log, LOG_WARN,
                    "connection closed conn=%llu reason=max_output_bytes (client not reading)",
                    (unsigned long long)c->id);
        conn_close(c, "output limit");
        return;
    }
    /* The window has room again: read again (unless draining) and frame what is buffered. */
    if ((c->state == CONN_PAUSED || c->state == CONN_DRAINING) && !window_full(&c->window)) {
        if (c->state == CONN_PAUSED)
            conn_set_state(c, CONN_READING);
        if (process_input(c) < 0)
            return;
    }
    if (c->state == CONN_DRAINING && conn_idle(c))
        conn_close(c, "drained");
}

/* Shutdown: what the client already sent is in flight too, even if still in the kernel's buffer.
 * Take it, bounded, without blocking. */
static void read_remaining(struct conn *c)
{
    size_t taken = 0;
    while (taken < DRAIN_READ_MAX && in_reserve(c) == 0) {
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
        if (n <= 0)
            return;
        c->in_len += (size_t)n;
        taken += (size_t)n;
        counter_add(&c->acc->counters.bytes_in, (uint64_t)n);
    }
}

void conn_drain(struct conn *c)
{
    ASSERT_THREAD_OF(ROLE_ACCEPTOR, c->acc);
    /* Broken: closes at this turn's flush anyway (it is on the dirty list already). */
    if (c->state == CONN_BROKEN || c->state == CONN_CLOSED)
        return;
    if (c->state != CONN_DRAINING) {
        read_remaining(c);
        conn_set_state(c, CONN_DRAINING);
    }
    acceptor_mark_dirty(c->acc, c);
    /* Whole frames already received are in flight too: serve them (the rest after the window
     * drains, from conn_flush). */
    if (!window_full(&c->window))
        process_input(c);
}

static void protocol_error(struct conn *c, const char *what)
{
    counter_add(&c->acc->counters.protocol_errors, 1);
    log_limited(&c->acc->protocol_log, LOG_WARN, "connection closed conn=%llu reason=\"%s\"",
                (unsigned long long)c->id, what);
    conn_close(c, what);
}

/* Frame and dispatch every whole request buffered, while the window has room.
 * Returns -1 if the connection was closed. */
static int process_input(struct conn *c)
{
    size_t off = 0;
    size_t max_frame = c->acc->conf->max_frame_bytes;
    while (!window_full(&c->window) && c->state != CONN_BROKEN) {
        size_t avail = c->in_len - off;
        if (avail < FRAME_PREFIX || (c->in_need != 0 && avail < c->in_need))
            break;
        struct frame_request fr;
        int rc = frame_parse_request(c->in + off, avail, max_frame, &fr);
        if (rc == FRAME_AGAIN) {
            c->in_need = fr.frame_len;
            break;
        }
        if (rc < 0) {
            protocol_error(c, rc == FRAME_ERR_TOO_BIG ? "frame larger than max_frame_bytes"
                                                      : "RpcHeader does not parse");
            return -1;
        }
        acceptor_dispatch(c->acc, c, fr.args, fr.args_len, &fr.header->service_name,
                          &fr.header->method_name);
        frame_request_done(&fr);
        off += fr.frame_len;
        c->in_need = 0;
    }
    if (off > 0) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    if (window_full(&c->window) && c->state == CONN_READING) {
        /* Backpressure: stop reading until the oldest answers have gone out. */
        conn_set_state(c, CONN_PAUSED);
    }
    return 0;
}

/* Make room to read: at least READ_MIN free, and the whole next frame if its size is known. */
static int in_reserve(struct conn *c)
{
    size_t want = c->in_len + READ_MIN;
    if (c->in_need > want)
        want = c->in_need;
    if (want <= c->in_cap)
        return 0;
    size_t cap = c->in_cap;
    while (cap < want)
        cap *= 2;
    uint8_t *p = realloc(c->in, cap);
    if (p == NULL)
        return -1;
    c->in = p;
    c->in_cap = cap;
    return 0;
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct conn *c = w->data;
    assert(c->state == CONN_READING); /* rio is active only then */
    if (in_reserve(c) < 0) {
        conn_close(c, "out of memory");
        return;
    }
    /* One read per event: a busy client cannot starve the others. */
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n == 0) {
        /* The client may have only shut down its sending side: answer what it asked first. */
        if (conn_idle(c))
            conn_close(c, "peer closed");
        else
            conn_drain(c);
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_close(c, "read failed");
        return;
    }
    c->in_len += (size_t)n;
    counter_add(&c->acc->counters.bytes_in, (uint64_t)n);
    c->last_active = ev_now(loop);
    process_input(c);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = w->data;
    if (write_out(c) < 0) {
        conn_close(c, "write failed");
        return;
    }
    if (c->state == CONN_DRAINING && conn_idle(c))
        conn_close(c, "drained");
}
