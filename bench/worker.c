#include "worker.h"

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "core/frame.h"

#define IN_BUF_INIT (64u << 10)  /* read buffer; grows only for a response frame larger than it */
#define MAX_RESPONSE (1u << 20)  /* a longer response frame is a transport error */
#define RECONNECT_S 0.1          /* wait before reconnecting a failed connection */
#define PUMP_BATCH 4096          /* open loop: requests encoded per wake-up before reading again */

/* One request on the wire, waiting for its response (responses come back in order). */
struct inflight {
    uint64_t t_ns;    /* when it was sent (closed) or scheduled (open): latency counts from here */
    int64_t uid;      /* the user it names */
    uint8_t method;   /* enum pr_method */
    uint8_t measured; /* sent/scheduled inside [t_measure, t_end) */
};

enum conn_state {
    CONN_DOWN,       /* no socket; the retry timer may be running */
    CONN_CONNECTING, /* non-blocking connect in progress; wio waits for it */
    CONN_UP,         /* connected; rio always on, wio on while output is blocked */
};

struct bconn {
    struct wstate *ws;      /* the thread that owns it */
    int fd;                 /* -1 when down */
    enum conn_state state;  /* see above */
    ev_io rio;              /* readable */
    ev_io wio;              /* writable: connect finished or output can move */
    ev_timer retry;         /* reconnect delay */
    uint8_t *in;            /* response bytes not parsed yet */
    size_t in_len, in_cap;
    uint8_t *out;           /* encoded requests not written yet: [out_off, out_len) */
    size_t out_off, out_len, out_cap;
    struct inflight *q;     /* ring of outstanding requests, oldest at q_head */
    uint32_t q_head, q_count, q_mask;
    uint64_t rng;           /* this connection's random state */
};

/* The thread's private state. */
struct wstate {
    struct worker *w;        /* public part: plan in, stats out */
    const struct plan *p;    /* == w->plan */
    struct ev_loop *loop;
    struct bconn *conns;
    int n;                   /* == w->nconns */
    struct encoder enc;      /* request encoder with this thread's scratch buffer */
    uint64_t outstanding;    /* sum of q_count over the connections */
    bool started;            /* t_start passed */
    bool stopping;           /* t_end passed (or preload done): nothing new is sent */
    ev_timer start_timer;    /* fires at t_start */
    ev_timer end_timer;      /* fires at t_end */
    ev_timer drain_timer;    /* fires when waiting for the last responses is over */
    /* open loop */
    int tfd;                 /* timerfd: wakes the thread at the next scheduled send */
    ev_io tio;               /* watches tfd */
    uint64_t next_k;         /* index of the next slot in this thread's schedule */
    double interval_ns;      /* time between slots */
    uint64_t t_phase;        /* slot 0's time: t_start plus this thread's offset */
    bool stalled;            /* the schedule waits for a connection's outstanding cap */
};

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double secs_until(uint64_t t)
{
    uint64_t now = now_ns();
    return t > now ? (double)(t - now) / 1e9 : 0.0;
}

static void note_error(struct wstate *ws, const char *fmt, const char *arg)
{
    struct worker_stats *st = &ws->w->stats;
    if (st->first_error[0] == '\0')
        snprintf(st->first_error, sizeof(st->first_error), fmt, arg);
}

static void out_of_memory(void)
{
    fprintf(stderr, "im-presence-bench: out of memory\n");
    exit(1);
}

static uint64_t slot_time(const struct wstate *ws, uint64_t k)
{
    return ws->t_phase + (uint64_t)((double)k * ws->interval_ns);
}

/* The first slot scheduled at or after t. */
static uint64_t first_slot_at(const struct wstate *ws, uint64_t t)
{
    if (t <= ws->t_phase)
        return 0;
    uint64_t k = (uint64_t)ceil((double)(t - ws->t_phase) / ws->interval_ns);
    while (k > 0 && slot_time(ws, k - 1) >= t)
        k--;
    while (slot_time(ws, k) < t)
        k++;
    return k;
}

static void conn_connect(struct bconn *c);
static void conn_fill(struct bconn *c);
static void schedule_pump(struct wstate *ws);

static void maybe_done(struct wstate *ws)
{
    if (ws->stopping && ws->outstanding == 0)
        ev_break(ws->loop, EVBREAK_ALL);
}

/* Nothing new from now on; wait (bounded) for what is outstanding. */
static void begin_stop(struct wstate *ws)
{
    if (ws->stopping)
        return;
    ws->stopping = true;
    ev_timer_stop(ws->loop, &ws->end_timer);
    for (int i = 0; i < ws->n; i++)
        ev_timer_stop(ws->loop, &ws->conns[i].retry);
    if (ws->p->mode == PLAN_OPEN) {
        ev_io_stop(ws->loop, &ws->tio);
        uint64_t k_meas = first_slot_at(ws, ws->p->t_measure);
        uint64_t k_end = first_slot_at(ws, ws->p->t_end);
        uint64_t from = ws->next_k > k_meas ? ws->next_k : k_meas;
        ws->w->stats.scheduled = k_end > k_meas ? k_end - k_meas : 0;
        ws->w->stats.not_sent = k_end > from ? k_end - from : 0;
    }
    if (ws->p->mode != PLAN_PRELOAD) {
        ev_timer_set(&ws->drain_timer, (double)ws->p->drain_ns / 1e9, 0.0);
        ev_timer_start(ws->loop, &ws->drain_timer);
    }
    maybe_done(ws);
}

/* Drop the connection: everything outstanding on it is lost (a transport error each). */
static void conn_fail(struct bconn *c, const char *why)
{
    struct wstate *ws = c->ws;
    note_error(ws, "connection: %s", why);
    ev_io_stop(ws->loop, &c->rio);
    ev_io_stop(ws->loop, &c->wio);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = CONN_DOWN;
    for (uint32_t i = 0; i < c->q_count; i++)
        if (c->q[(c->q_head + i) & c->q_mask].measured)
            ws->w->stats.transport_errors++;
    ws->outstanding -= c->q_count;
    c->q_count = c->q_head = 0;
    c->in_len = c->out_off = c->out_len = 0;
    if (!ws->stopping) {
        ev_timer_set(&c->retry, RECONNECT_S, 0.0);
        ev_timer_start(ws->loop, &c->retry);
    }
    maybe_done(ws);
}

/* Write what is buffered; arm wio if the socket is full. */
static void conn_flush(struct bconn *c)
{
    struct wstate *ws = c->ws;
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!ev_is_active(&c->wio))
                    ev_io_start(ws->loop, &c->wio);
                return;
            }
            conn_fail(c, strerror(errno));
            return;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    if (ev_is_active(&c->wio))
        ev_io_stop(ws->loop, &c->wio);
}

/* Encode one request into c's output and remember it. The ring has room (callers check). */
static void conn_push(struct bconn *c, int method, int64_t uid, uint64_t t, bool measured)
{
    struct wstate *ws = c->ws;
    if (c->out_cap - c->out_len < ws->enc.max_frame) {
        if (c->out_off > 0) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        while (c->out_cap - c->out_len < ws->enc.max_frame) {
            size_t cap = c->out_cap * 2;
            uint8_t *p = realloc(c->out, cap);
            if (p == NULL)
                out_of_memory();
            c->out = p;
            c->out_cap = cap;
        }
    }
    c->out_len += encoder_write(&ws->enc, method, uid, c->out + c->out_len);
    struct inflight *e = &c->q[(c->q_head + c->q_count) & c->q_mask];
    e->t_ns = t;
    e->uid = uid;
    e->method = (uint8_t)method;
    e->measured = measured;
    c->q_count++;
    ws->outstanding++;
}

/* Closed loop and preload: top the connection up to `pipeline` outstanding requests. */
static void conn_fill(struct bconn *c)
{
    struct wstate *ws = c->ws;
    const struct plan *p = ws->p;
    if (c->state != CONN_UP || ws->stopping || !ws->started)
        return;
    uint64_t t = now_ns();
    if (t >= p->t_end) {
        begin_stop(ws);
        return;
    }
    bool measured = t >= p->t_measure;
    while (c->q_count < (uint32_t)p->pipeline) {
        int method;
        int64_t uid;
        if (p->mode == PLAN_PRELOAD) {
            if (ws->w->seq_next >= ws->w->seq_end)
                break;
            method = PR_METHOD_BIND;
            uid = ws->w->seq_next++;
        } else {
            method = mix_next(&p->mix, &c->rng);
            uid = keydist_next(&p->keys, &c->rng);
        }
        conn_push(c, method, uid, t, measured);
    }
    conn_flush(c);
    if (p->mode == PLAN_PRELOAD && ws->w->seq_next >= ws->w->seq_end && ws->outstanding == 0)
        begin_stop(ws);
}

/* One response: decode it, check it against its request, count it. */
static void complete(struct wstate *ws, const struct inflight *e, const uint8_t *body, size_t len,
                     uint64_t t)
{
    struct worker_stats *st = &ws->w->stats;
    st->responses_total++;
    int code = 0;
    char msg[128];
    msg[0] = '\0';
    bool want_msg = st->first_error[0] == '\0'; /* copy Result.msg only while it may be shown */
    int rc = response_check(e->method, e->uid, body, len, &code, want_msg ? msg : NULL, sizeof(msg));
    if (rc < 0) {
        note_error(ws, "undecodable or mismatched %s response", method_short_name(e->method));
        if (e->measured)
            st->transport_errors++;
        return;
    }
    if (code != 0 && code != 2 /* NOT_FOUND is an ordinary answer */ && want_msg)
        snprintf(st->first_error, sizeof(st->first_error), "%s: %s: %s", method_short_name(e->method),
                 request_code_name(code), msg);
    if (!e->measured)
        return;
    st->codes[e->method][code]++;
    hist_record(&st->hist[e->method], t > e->t_ns ? t - e->t_ns : 0);
}

static void on_read(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct bconn *c = io->data;
    struct wstate *ws = c->ws;
    for (;;) {
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n > 0) {
            c->in_len += (size_t)n;
            break;
        }
        if (n == 0) {
            conn_fail(c, "server closed the connection");
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            conn_fail(c, strerror(errno));
        return;
    }
    uint64_t t = now_ns(); /* one arrival time for everything this read brought */
    size_t off = 0;
    for (;;) {
        const uint8_t *body;
        size_t blen, flen;
        int rc = frame_parse_response(c->in + off, c->in_len - off, MAX_RESPONSE, &body, &blen, &flen);
        if (rc == FRAME_AGAIN)
            break;
        if (rc < 0) {
            conn_fail(c, "response frame over 1 MiB");
            return;
        }
        if (c->q_count == 0) {
            conn_fail(c, "a response with no request outstanding");
            return;
        }
        struct inflight e = c->q[c->q_head];
        c->q_head = (c->q_head + 1) & c->q_mask;
        c->q_count--;
        ws->outstanding--;
        complete(ws, &e, body, blen, t);
        off += flen;
    }
    if (off > 0) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    if (c->in_len == c->in_cap) { /* one frame larger than the buffer: make room for it */
        size_t need = FRAME_PREFIX + (size_t)frame_get_u32le(c->in);
        size_t cap = c->in_cap * 2 > need ? c->in_cap * 2 : need;
        uint8_t *p = realloc(c->in, cap);
        if (p == NULL)
            out_of_memory();
        c->in = p;
        c->in_cap = cap;
    }
    if (ws->p->mode == PLAN_OPEN) {
        if (ws->stalled)
            schedule_pump(ws);
    } else {
        conn_fill(c);
    }
    maybe_done(ws);
}

static void conn_up(struct bconn *c)
{
    struct wstate *ws = c->ws;
    c->state = CONN_UP;
    ws->w->stats.connects++;
    ev_io_stop(ws->loop, &c->wio);
    ev_io_set(&c->rio, c->fd, EV_READ);
    ev_io_set(&c->wio, c->fd, EV_WRITE);
    ev_io_start(ws->loop, &c->rio);
    if (ws->p->mode != PLAN_OPEN)
        conn_fill(c);
}

static void on_write(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct bconn *c = io->data;
    if (c->state == CONN_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err != 0) {
            c->ws->w->stats.connect_failures++;
            conn_fail(c, strerror(err));
            return;
        }
        conn_up(c);
        return;
    }
    conn_flush(c);
}

static void on_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    conn_connect(t->data);
}

static void conn_connect(struct bconn *c)
{
    struct wstate *ws = c->ws;
    const struct plan *p = ws->p;
    c->fd = socket(p->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        ws->w->stats.connect_failures++;
        conn_fail(c, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (const struct sockaddr *)&p->addr, p->addrlen) == 0) {
        conn_up(c);
        return;
    }
    if (errno != EINPROGRESS) {
        ws->w->stats.connect_failures++;
        conn_fail(c, strerror(errno));
        return;
    }
    c->state = CONN_CONNECTING;
    ev_io_set(&c->wio, c->fd, EV_WRITE);
    ev_io_start(ws->loop, &c->wio);
}

/* --- open loop: the schedule -------------------------------------------------------------- */

static void arm_timerfd(struct wstate *ws, uint64_t at)
{
    struct itimerspec its;
    memset(&its, 0, sizeof(its));
    if (at == 0)
        at = 1; /* 0 would disarm */
    its.it_value.tv_sec = (time_t)(at / 1000000000u);
    its.it_value.tv_nsec = (long)(at % 1000000000u);
    timerfd_settime(ws->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Send every slot that is due, then sleep until the next one. A slot whose connection is at
 * its cap waits (stalled) with its scheduled time kept, so the wait counts as latency. */
static void schedule_pump(struct wstate *ws)
{
    const struct plan *p = ws->p;
    struct worker_stats *st = &ws->w->stats;
    if (ws->stopping)
        return;
    ws->stalled = false;
    uint64_t now = now_ns();
    int batch = 0;
    for (;;) {
        uint64_t sched = slot_time(ws, ws->next_k);
        if (sched >= p->t_end) {
            if (now >= p->t_end)
                begin_stop(ws);
            else
                arm_timerfd(ws, p->t_end);
            break;
        }
        if (sched > now) {
            arm_timerfd(ws, sched);
            break;
        }
        if (++batch > PUMP_BATCH) { /* let reads in; come straight back */
            arm_timerfd(ws, now);
            break;
        }
        struct bconn *c = &ws->conns[ws->next_k % (uint64_t)ws->n];
        bool measured = sched >= p->t_measure;
        if (c->state != CONN_UP) {
            if (measured)
                st->send_failed++;
            ws->next_k++;
            continue;
        }
        if (c->q_count > c->q_mask) {
            ws->stalled = true; /* resumes when c gets a response */
            break;
        }
        conn_push(c, mix_next(&p->mix, &c->rng), keydist_next(&p->keys, &c->rng), sched, measured);
        if (measured) {
            uint64_t lag = now - sched;
            if (lag > st->max_lag_ns)
                st->max_lag_ns = lag;
            if (lag > 1000000u)
                st->late_1ms++;
        }
        ws->next_k++;
    }
    for (int i = 0; i < ws->n; i++) {
        struct bconn *c = &ws->conns[i];
        if (c->state == CONN_UP && c->out_len > c->out_off && !ev_is_active(&c->wio))
            conn_flush(c);
    }
}

static void on_timerfd(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct wstate *ws = io->data;
    uint64_t expirations;
    if (read(ws->tfd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
        note_error(ws, "timerfd: %s", strerror(errno));
    schedule_pump(ws);
}

/* --- timers ----------------------------------------------------------------------------- */

/* libev times a timer from its cached ev_now(), which lags while callbacks run, so a timer
 * can fire a little before the monotonic instant we asked for: if so, wait for the rest. */
static bool early(struct ev_loop *loop, ev_timer *t, uint64_t at)
{
    if (now_ns() >= at)
        return false;
    ev_now_update(loop);
    ev_timer_set(t, secs_until(at), 0.0);
    ev_timer_start(loop, t);
    return true;
}

static void on_start(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct wstate *ws = t->data;
    if (early(loop, t, ws->p->t_start))
        return;
    ws->started = true;
    if (ws->p->mode == PLAN_OPEN) {
        schedule_pump(ws);
        return;
    }
    for (int i = 0; i < ws->n; i++)
        conn_fill(&ws->conns[i]);
}

static void on_end(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct wstate *ws = t->data;
    if (early(loop, t, ws->p->t_end))
        return;
    if (ws->p->mode == PLAN_OPEN)
        schedule_pump(ws); /* slots due before t_end go out, late, with their scheduled times */
    begin_stop(ws);
}

static void on_drain(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct wstate *ws = t->data;
    for (int i = 0; i < ws->n; i++) {
        struct bconn *c = &ws->conns[i];
        for (uint32_t j = 0; j < c->q_count; j++)
            if (c->q[(c->q_head + j) & c->q_mask].measured)
                ws->w->stats.unanswered++;
    }
    if (ws->p->mode == PLAN_PRELOAD)
        note_error(ws, "%s", "preload did not finish in time");
    ev_break(loop, EVBREAK_ALL);
}

/* --- thread ------------------------------------------------------------------------------ */

static uint32_t pow2_at_least(uint32_t v)
{
    uint32_t p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

static int wstate_init(struct wstate *ws, struct worker *w)
{
    const struct plan *p = w->plan;
    memset(ws, 0, sizeof(*ws));
    ws->w = w;
    ws->p = p;
    ws->n = w->nconns;
    ws->tfd = -1;
    ws->loop = ev_loop_new(EVFLAG_AUTO);
    if (ws->loop == NULL)
        return -1;
    if (encoder_init(&ws->enc, p->service, p->gateway, p->message, p->message_len) < 0)
        return -1;
    ws->conns = calloc((size_t)ws->n, sizeof(*ws->conns));
    if (ws->conns == NULL)
        return -1;
    uint32_t depth = pow2_at_least((uint32_t)(p->mode == PLAN_OPEN ? p->max_outstanding : p->pipeline));
    size_t out_init = ws->enc.max_frame * (depth < 64 ? depth : 64);
    for (int i = 0; i < ws->n; i++) {
        struct bconn *c = &ws->conns[i];
        c->ws = ws;
        c->fd = -1;
        c->in_cap = IN_BUF_INIT;
        c->in = malloc(c->in_cap);
        c->out_cap = out_init;
        c->out = malloc(c->out_cap);
        c->q_mask = depth - 1;
        c->q = malloc(sizeof(*c->q) * depth);
        if (c->in == NULL || c->out == NULL || c->q == NULL)
            return -1;
        uint64_t seed = p->seed ^ ((uint64_t)w->id << 40) ^ ((uint64_t)i << 20) ^ 0x5bd1e995u;
        c->rng = rng_next(&seed);
        ev_io_init(&c->rio, on_read, -1, EV_READ);
        ev_io_init(&c->wio, on_write, -1, EV_WRITE);
        ev_timer_init(&c->retry, on_retry, RECONNECT_S, 0.0);
        c->rio.data = c->wio.data = c->retry.data = c;
    }
    if (p->mode == PLAN_OPEN) {
        ws->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (ws->tfd < 0)
            return -1;
        ws->interval_ns = 1e9 / p->rate;
        /* Threads interleave their slots instead of all sending at the same instants. */
        ws->t_phase = p->t_start + (uint64_t)(ws->interval_ns * w->id / w->nthreads);
        ev_io_init(&ws->tio, on_timerfd, ws->tfd, EV_READ);
        ws->tio.data = ws;
        ev_io_start(ws->loop, &ws->tio);
    }
    ev_timer_init(&ws->start_timer, on_start, secs_until(p->t_start), 0.0);
    ev_timer_init(&ws->end_timer, on_end, 0.0, 0.0);
    ev_timer_init(&ws->drain_timer, on_drain, (double)p->drain_ns / 1e9, 0.0);
    ws->start_timer.data = ws->end_timer.data = ws->drain_timer.data = ws;
    return 0;
}

static void wstate_destroy(struct wstate *ws)
{
    if (ws->conns != NULL) {
        for (int i = 0; i < ws->n; i++) {
            struct bconn *c = &ws->conns[i];
            if (c->fd >= 0)
                close(c->fd);
            free(c->in);
            free(c->out);
            free(c->q);
        }
        free(ws->conns);
    }
    if (ws->tfd >= 0)
        close(ws->tfd);
    encoder_destroy(&ws->enc);
    if (ws->loop != NULL)
        ev_loop_destroy(ws->loop);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct wstate ws;
    for (int m = 0; m < BENCH_METHODS; m++)
        hist_init(&w->stats.hist[m]);
    if (wstate_init(&ws, w) < 0) {
        snprintf(w->start_error, sizeof(w->start_error), "worker %d: cannot set up (out of memory?)", w->id);
        wstate_destroy(&ws);
        return NULL;
    }
    const struct plan *p = w->plan;
    for (int i = 0; i < ws.n; i++)
        conn_connect(&ws.conns[i]);
    ev_now_update(ws.loop);
    ev_timer_set(&ws.start_timer, secs_until(p->t_start), 0.0);
    ev_timer_start(ws.loop, &ws.start_timer);
    if (p->mode == PLAN_PRELOAD) {
        ev_timer_start(ws.loop, &ws.drain_timer); /* an overall time limit */
    } else {
        ev_timer_set(&ws.end_timer, secs_until(p->t_end), 0.0);
        ev_timer_start(ws.loop, &ws.end_timer);
    }
    if (ws.n > 0 && !(p->mode == PLAN_PRELOAD && w->seq_next >= w->seq_end))
        ev_run(ws.loop, 0);
    wstate_destroy(&ws);
    return NULL;
}

int worker_start(struct worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void worker_join(struct worker *w)
{
    pthread_join(w->thread, NULL);
}
