/* Shard thread only: every function here runs on the loop of the shard that owns the link. */
#include "shards/tracking_link.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BACKOFF_MIN 0.05 /* seconds, as redis_link */
#define BACKOFF_MAX 2.0
#define IDLE_PROBE 1.0   /* a PING after this long without one */
#define PINGS_INITIAL 64
#define CHANNEL "__redis__:invalidate"

static void tl_connect(struct tracking_link *tl);

static uint32_t pings_count(const struct tracking_link *tl)
{
    return tl->ping_tail - tl->ping_head;
}

static ev_tstamp timeout_of(const struct tracking_link *tl)
{
    return tl->conf->timeout_ms / 1000.0;
}

/* The timer's next due time for the current state. */
static void arm_timer(struct tracking_link *tl)
{
    ev_tstamp now = ev_now(tl->loop), due;
    switch (tl->state) {
    case TL_DOWN:
        return; /* schedule_reconnect arms it */
    case TL_CONNECTING:
    case TL_SETUP:
        due = tl->started + timeout_of(tl);
        break;
    case TL_READY:
    default:
        due = pings_count(tl) > 0 ? tl->pings[tl->ping_head & tl->ping_mask].sent + timeout_of(tl)
                                  : tl->last_sent + IDLE_PROBE;
        break;
    }
    ev_timer_stop(tl->loop, &tl->timer);
    ev_timer_set(&tl->timer, due > now ? due - now : 0., 0.);
    ev_timer_start(tl->loop, &tl->timer);
}

static void watch(struct tracking_link *tl, bool write)
{
    if (ev_is_active(&tl->io) && tl->writing == write)
        return;
    ev_io_stop(tl->loop, &tl->io);
    ev_io_set(&tl->io, tl->c->fd, write ? EV_READ | EV_WRITE : EV_READ);
    tl->writing = write;
    ev_io_start(tl->loop, &tl->io);
}

static void schedule_reconnect(struct tracking_link *tl)
{
    if (tl->stopping)
        return;
    double jitter = 0.75 + 0.5 * ((double)rand_r(&tl->seed) / RAND_MAX);
    ev_timer_stop(tl->loop, &tl->timer);
    ev_timer_set(&tl->timer, tl->backoff * jitter, 0.);
    ev_timer_start(tl->loop, &tl->timer);
    tl->backoff = tl->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : tl->backoff * 2;
}

/* The one way down. The owner hears of it first (`lost`), then each PING in flight ends. */
static void teardown(struct tracking_link *tl, bool hung, const char *why)
{
    if (tl->c == NULL)
        return;
    bool was_setup = tl->state >= TL_SETUP;
    if (!tl->stopping) /* before the free: why may be the context's errstr */
        log_limited(&tl->log_lim, LOG_WARN, "redis tracking connection down role=cache addr=%s:%d error=\"%s\"",
                    tl->host, tl->port, why);
    ev_io_stop(tl->loop, &tl->io);
    ev_timer_stop(tl->loop, &tl->timer);
    redisFree(tl->c);
    tl->c = NULL;
    tl->state = TL_DOWN;
    tl->client_id = 0;
    schedule_reconnect(tl);
    if (was_setup)
        tl->ops->lost(tl->owner, tl, hung);
    /* Callbacks may reconnect, but not before the backoff: these PINGs are the old connection's. */
    while (pings_count(tl) > 0) {
        struct tl_ping p = tl->pings[tl->ping_head++ & tl->ping_mask];
        if (p.group != NULL)
            tl->ops->pong(tl->owner, tl, p.group, hung ? TL_HUNG : TL_LOST);
    }
}

/* Write what hiredis holds; what the socket does not take waits for EV_WRITE. -1: torn down. */
static int flush_out(struct tracking_link *tl)
{
    int done = 0;
    if (redisBufferWrite(tl->c, &done) != REDIS_OK) {
        teardown(tl, false, tl->c->errstr);
        return -1;
    }
    watch(tl, !done);
    return 0;
}

static int append(struct tracking_link *tl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int append(struct tracking_link *tl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAppendCommand(tl->c, fmt, ap);
    va_end(ap);
    return rc == REDIS_OK ? 0 : -1;
}

int tracking_link_ping(struct tracking_link *tl, void *group)
{
    if (tl->state != TL_READY)
        return -1;
    if (pings_count(tl) > tl->ping_mask) {
        /* Grow the ring by copying the live range in order into a twice-larger array. */
        uint32_t cap = (tl->ping_mask + 1) * 2, n = pings_count(tl);
        struct tl_ping *bigger = malloc(cap * sizeof(*bigger));
        if (bigger == NULL)
            return -1;
        for (uint32_t i = 0; i < n; i++)
            bigger[i] = tl->pings[(tl->ping_head + i) & tl->ping_mask];
        free(tl->pings);
        tl->pings = bigger;
        tl->ping_mask = cap - 1;
        tl->ping_head = 0;
        tl->ping_tail = n;
    }
    if (append(tl, "PING") < 0)
        return -1;
    bool first = pings_count(tl) == 0;
    tl->last_sent = ev_now(tl->loop);
    tl->pings[tl->ping_tail++ & tl->ping_mask] = (struct tl_ping){group, tl->last_sent};
    if (first)
        arm_timer(tl); /* from the idle probe's due time to this PING's deadline */
    (void)flush_out(tl); /* on failure torn down: the group has had its callback (TL_LOST) */
    return 0;
}

/* --- replies --- */

static bool is_str(const redisReply *r, const char *s)
{
    return r->type == REDIS_REPLY_STRING && r->len == strlen(s) && memcmp(r->str, s, r->len) == 0;
}

/* The replies to the set-up, in order: AUTH (if sent), CLIENT ID, SUBSCRIBE. -1: torn down. */
static int setup_reply(struct tracking_link *tl, const redisReply *r)
{
    int step = tl->setup_step++;
    if (tl->conf->password[0] == '\0')
        step++; /* no AUTH was sent */
    if (r->type == REDIS_REPLY_ERROR) {
        char why[160];
        snprintf(why, sizeof(why), "%s: %s", step == 0 ? "AUTH" : step == 1 ? "CLIENT ID" : "SUBSCRIBE", r->str);
        teardown(tl, false, why);
        return -1;
    }
    if (step == 1) {
        if (r->type != REDIS_REPLY_INTEGER) {
            teardown(tl, false, "CLIENT ID: not an integer");
            return -1;
        }
        tl->client_id = r->integer;
    } else if (step == 2) {
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || !is_str(r->element[0], "subscribe")) {
            teardown(tl, false, "SUBSCRIBE: unexpected reply");
            return -1;
        }
        tl->state = TL_READY;
        tl->backoff = BACKOFF_MIN;
        tl->readies++;
        tl->last_sent = ev_now(tl->loop);
        arm_timer(tl);
        log_info("redis tracking connected role=cache addr=%s:%d client_id=%lld", tl->host, tl->port,
                 tl->client_id);
        tl->ops->ready(tl->owner, tl);
    }
    return 0;
}

/* A reply while subscribed: an invalidation or a pong. -1: torn down. */
static int ready_reply(struct tracking_link *tl, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || r->element[0]->type != REDIS_REPLY_STRING) {
        teardown(tl, false, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply while subscribed");
        return -1;
    }
    if (is_str(r->element[0], "pong")) {
        if (pings_count(tl) == 0) {
            teardown(tl, false, "pong without a PING");
            return -1;
        }
        struct tl_ping p = tl->pings[tl->ping_head++ & tl->ping_mask];
        if (p.group != NULL)
            tl->ops->pong(tl->owner, tl, p.group, TL_PONG);
        return 0;
    }
    if (!is_str(r->element[0], "message") || r->elements != 3 || !is_str(r->element[1], CHANNEL))
        return 0; /* nothing else is ours (a late subscribe confirmation, say) */
    const redisReply *keys = r->element[2];
    if (keys->type == REDIS_REPLY_NIL) {
        tl->ops->flush(tl->owner, tl);
    } else if (keys->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < keys->elements; i++)
            if (keys->element[i]->type == REDIS_REPLY_STRING)
                tl->ops->invalidate(tl->owner, tl, keys->element[i]->str, keys->element[i]->len);
    } else if (keys->type == REDIS_REPLY_STRING) {
        tl->ops->invalidate(tl->owner, tl, keys->str, keys->len);
    }
    return 0;
}

/* Take in everything readable, in order: invalidations before the pong that follows them. */
static void on_readable(struct tracking_link *tl)
{
    redisContext *c = tl->c;
    uint64_t conn = tl->conn_seq;
    bool failed = redisBufferRead(c) != REDIS_OK;
    for (;;) {
        void *reply = NULL;
        if (redisGetReplyFromReader(c, &reply) != REDIS_OK) {
            teardown(tl, false, c->errstr);
            return;
        }
        if (reply == NULL)
            break;
        int rc = tl->state == TL_READY ? ready_reply(tl, reply) : setup_reply(tl, reply);
        freeReplyObject(reply);
        if (rc < 0 || tl->conn_seq != conn || tl->c == NULL)
            return; /* torn down, here or by a callback (which may even have connected again) */
    }
    if (failed)
        teardown(tl, false, c->errstr[0] ? c->errstr : "connection closed");
}

/* The TCP connect finished: did it work? Then the set-up goes out. */
static void on_connected(struct tracking_link *tl)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(tl->c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        teardown(tl, false, strerror(err)); /* logs it */
        return;
    }
    tl->state = TL_SETUP;
    flush_out(tl);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct tracking_link *tl = w->data;
    if (tl->state == TL_CONNECTING) {
        if (revents & EV_WRITE)
            on_connected(tl);
        return;
    }
    if (revents & EV_READ) {
        uint64_t conn = tl->conn_seq;
        on_readable(tl);
        if (tl->conn_seq != conn || tl->c == NULL)
            return;
    }
    if ((revents & EV_WRITE) && tl->c != NULL)
        flush_out(tl);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct tracking_link *tl = w->data;
    ev_tstamp now = ev_now(loop);
    switch (tl->state) {
    case TL_DOWN:
        tl_connect(tl);
        return;
    case TL_CONNECTING:
    case TL_SETUP:
        if (now >= tl->started + timeout_of(tl)) {
            teardown(tl, true, "set-up not answered within timeout");
            return;
        }
        break;
    case TL_READY:
        if (pings_count(tl) > 0) {
            if (now >= tl->pings[tl->ping_head & tl->ping_mask].sent + timeout_of(tl)) {
                teardown(tl, true, "PING not answered within timeout");
                return;
            }
        } else if (now >= tl->last_sent + IDLE_PROBE - 0.001) {
            tracking_link_ping(tl, NULL); /* arms the timer itself */
            return;
        }
        break;
    }
    arm_timer(tl);
}

static void tl_connect(struct tracking_link *tl)
{
    if (tl->stopping || tl->c != NULL || tl->host[0] == '\0')
        return;
    redisContext *c = redisConnectNonBlock(tl->host, tl->port);
    if (c == NULL || c->err) {
        log_limited(&tl->log_lim, LOG_WARN, "redis tracking connect failed role=cache addr=%s:%d error=\"%s\"",
                    tl->host, tl->port, c ? c->errstr : "out of memory");
        if (c != NULL)
            redisFree(c);
        schedule_reconnect(tl);
        return;
    }
    tl->c = c;
    tl->conn_seq++;
    tl->state = TL_CONNECTING;
    tl->setup_step = 0;
    tl->started = ev_now(tl->loop);
    const struct redis_conf *conf = tl->conf;
    int rc = 0;
    if (conf->password[0] != '\0')
        rc |= conf->username[0] != '\0' ? append(tl, "AUTH %s %s", conf->username, conf->password)
                                        : append(tl, "AUTH %s", conf->password);
    rc |= append(tl, "CLIENT ID");
    rc |= append(tl, "SUBSCRIBE " CHANNEL);
    if (rc != 0) {
        teardown(tl, false, "out of memory");
        return;
    }
    watch(tl, true); /* writable: the connect is done (on_connected) */
    arm_timer(tl);
}

/* --- life cycle --- */

int tracking_link_init(struct tracking_link *tl, const struct redis_conf *conf, struct ev_loop *loop, void *owner,
                       const struct tracking_ops *ops)
{
    memset(tl, 0, sizeof(*tl));
    tl->conf = conf;
    tl->loop = loop;
    tl->owner = owner;
    tl->ops = ops;
    tl->backoff = BACKOFF_MIN;
    tl->seed = (unsigned int)(uintptr_t)tl;
    tl->pings = malloc(PINGS_INITIAL * sizeof(*tl->pings));
    if (tl->pings == NULL)
        return -1;
    tl->ping_mask = PINGS_INITIAL - 1;
    ev_init(&tl->io, on_io);
    tl->io.data = tl;
    ev_init(&tl->timer, on_timer);
    tl->timer.data = tl;
    return 0;
}

void tracking_link_set_target(struct tracking_link *tl, const char *host, int port)
{
    if (strcmp(tl->host, host) == 0 && tl->port == port)
        return;
    snprintf(tl->host, sizeof(tl->host), "%s", host);
    tl->port = port;
    if (tl->c != NULL) {
        tl->backoff = BACKOFF_MIN; /* not a failure: come back at once */
        teardown(tl, false, "the node moved");
    }
}

void tracking_link_start(struct tracking_link *tl)
{
    tl->stopping = false;
    if (tl->c == NULL && !ev_is_active(&tl->timer))
        tl_connect(tl);
}

void tracking_link_stop(struct tracking_link *tl)
{
    tl->stopping = true;
    ev_timer_stop(tl->loop, &tl->timer);
    teardown(tl, false, "stopped");
}

void tracking_link_destroy(struct tracking_link *tl)
{
    if (tl->c != NULL) {
        ev_io_stop(tl->loop, &tl->io);
        redisFree(tl->c);
        tl->c = NULL;
    }
    ev_timer_stop(tl->loop, &tl->timer);
    free(tl->pings);
    tl->pings = NULL;
}
