/* Shard thread only: every function here runs on the loop of the shard that owns the link. */
#include "shards/redis_link.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libev.h>

#include "core/thread_role.h"
#include "core/trace.h"

#define BACKOFF_MIN 0.05 /* seconds */
#define BACKOFF_MAX 2.0
#define FIFO_INITIAL 1024
#define PROBE_MAX 0.5 /* seconds: the longest an UP link goes without sending (see probe_interval) */

static void link_connect(struct redis_link *link);
static void link_teardown(struct redis_link *link);

/* The one place the state changes, so the `up` gauge always agrees with it. */
static void link_set_state(struct redis_link *link, enum link_state state)
{
    bool was_up = link->state == LINK_UP, is_up = state == LINK_UP;
    link->state = state;
    if (was_up != is_up) /* a shared gauge counts links: up and down by one (wrapping add) */
        counter_add(&link->cnt->up, is_up ? 1u : UINT64_MAX);
}

static uint32_t fifo_count(const struct redis_link *link)
{
    return link->fifo_tail - link->fifo_head;
}

/* Room for one more entry, made before a command goes to hiredis: once hiredis has it, its
 * reply must find an entry, so the push that follows cannot fail. */
static int fifo_reserve(struct redis_link *link)
{
    if (fifo_count(link) <= link->fifo_mask)
        return 0;
    /* Grow by copying the live range in order into a twice-larger array. */
    uint32_t cap = (link->fifo_mask + 1) * 2;
    struct link_pending *bigger = malloc(cap * sizeof(*bigger));
    if (bigger == NULL)
        return -1;
    uint32_t n = fifo_count(link);
    for (uint32_t i = 0; i < n; i++)
        bigger[i] = link->fifo[(link->fifo_head + i) & link->fifo_mask];
    free(link->fifo);
    link->fifo = bigger;
    link->fifo_mask = cap - 1;
    link->fifo_head = 0;
    link->fifo_tail = n;
    return 0;
}

static void fifo_push(struct redis_link *link, link_reply_fn *fn, void *priv, ev_tstamp deadline)
{
    assert(fifo_count(link) <= link->fifo_mask); /* fifo_reserve came first */
    link->fifo[link->fifo_tail++ & link->fifo_mask] = (struct link_pending){fn, priv, deadline};
}

/* What a command left without a reply gets: nothing is written before the TCP connect is done. */
static enum link_status loss_status(const struct redis_link *link)
{
    return link->state == LINK_CONNECTING ? LINK_NOT_SENT : LINK_LOST;
}

/* hiredis calls back in send order, so the reply belongs to the oldest entry. */
static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    struct redis_link *link = privdata;
    TRACE_HOOK(trace_reply_seen());
    assert(fifo_count(link) > 0);
    struct link_pending p = link->fifo[link->fifo_head++ & link->fifo_mask];
    enum link_status status = LINK_REPLY;
    if (r == NULL) /* we tore the connection down (ac cleared first), or hiredis is freeing it */
        status = link->ac == NULL ? link->fail_status : loss_status(link);
    p.fn(link, status, r, p.priv);
    /* A master demoted under us (a sentinel failover): find the new one. */
    redisReply *reply = r;
    if (link->conf->mode == REDIS_SENTINEL && reply != NULL && reply->type == REDIS_REPLY_ERROR &&
        strncmp(reply->str, "READONLY", 8) == 0 && link->ac != NULL) {
        log_limited(&link->log_lim, LOG_WARN, "redis master became a replica, asking the sentinels role=%s addr=%s:%d",
                    link->role, link->host, link->port);
        link_teardown(link);
    }
}

static void schedule_reconnect(struct redis_link *link)
{
    if (link->stopping)
        return;
    /* Jitter of +-25% keeps the shards from reconnecting in lockstep. */
    double jitter = 0.75 + 0.5 * ((double)rand_r(&link->seed) / RAND_MAX);
    ev_timer_set(&link->reconnect_timer, link->backoff * jitter, 0.);
    ev_timer_start(link->loop, &link->reconnect_timer);
    link->backoff = link->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : link->backoff * 2;
}

/* The one way down, whoever noticed: hiredis (failed connect, lost connection) or we (timeout,
 * set-up error, stop). The commands still pending get fail_status when hiredis frees ac. */
static void link_mark_down(struct redis_link *link)
{
    link->fail_status = loss_status(link);
    link->ac = NULL;
    link_set_state(link, LINK_DOWN);
    ev_timer_stop(link->loop, &link->deadline_timer);
    ev_timer_stop(link->loop, &link->probe_timer);
    schedule_reconnect(link);
}

/* Drop the connection ourselves. Inside a hiredis callback the free is deferred until it returns. */
static void link_teardown(struct redis_link *link)
{
    redisAsyncContext *ac = link->ac;
    link_mark_down(link);
    if (ac != NULL)
        redisAsyncFree(ac);
}

/* How long an UP link may go without sending before it PINGs. Say Redis hangs at h, and by h'
 * (h + the moment it takes to read what Redis wrote before h) every reply it will ever send has
 * been read. If a command is pending at h', the oldest one, sent by h', times out by h' + timeout.
 * If none is, the probe timer fires by h' + interval (it fires at most `interval` after its last
 * firing or the last send, both before h'); by then either a command was sent after h' or
 * nothing was sent for `interval` and it sends a PING: either times out within `timeout`. So the
 * link goes down by h' + interval + timeout. interval <= 0.5 s keeps that within the promised
 * timeout + 1 s with room for scheduling; interval <= timeout probes at least once per timeout. */
static ev_tstamp probe_interval(const struct redis_link *link)
{
    ev_tstamp timeout = link->conf->timeout_ms / 1000.0;
    return timeout < PROBE_MAX ? timeout : PROBE_MAX;
}

static void probe_arm(struct redis_link *link, ev_tstamp delay)
{
    ev_timer_set(&link->probe_timer, delay, 0.);
    ev_timer_start(link->loop, &link->probe_timer);
}

/* SELECT answered: the connection is set up and Redis serves it. The next failure starts the
 * backoff from the bottom (a rejected AUTH never gets here, so it does not reconnect at the
 * fastest rate). */
static void link_ready(struct redis_link *link)
{
    link_set_state(link, LINK_UP);
    link->backoff = BACKOFF_MIN;
    if (link->ever_up)
        counter_add(&link->cnt->reconnects, 1);
    link->ever_up = true;
    probe_arm(link, probe_interval(link));
    log_info("redis connected role=%s addr=%s:%d", link->role, link->host, link->port);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_link *link = ac->data;
    if (ac != link->ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac after we return, answering queued commands: never sent. */
        counter_add(&link->cnt->errors, 1);
        log_limited(&link->log_lim, LOG_WARN, "redis connect failed role=%s addr=%s:%d error=\"%s\"", link->role,
                    link->host, link->port, ac->errstr);
        link_mark_down(link);
        return;
    }
    /* Not UP yet: a stopped Redis still completes the TCP handshake. SELECT's answer tells. */
    link_set_state(link, LINK_SETUP);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct redis_link *link = ac->data;
    if (ac != link->ac)
        return; /* our own teardown: already handled */
    counter_add(&link->cnt->errors, 1);
    log_limited(&link->log_lim, LOG_WARN, "redis connection lost role=%s addr=%s:%d error=\"%s\"", link->role,
                link->host, link->port, ac->errstr ? ac->errstr : "closed");
    /* Connected, so the pending commands were sent: LINK_LOST, before or after this callback. */
    link_mark_down(link);
}

/* AUTH / SELECT answers: an error here means this connection is unusable. */
static void on_setup_reply(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    const char *what = priv;
    if (status != LINK_REPLY)
        return;
    if (strcmp(what, "ROLE") == 0 && reply->type != REDIS_REPLY_ERROR) {
        /* The sentinels' answer may be stale (a failover under way): only a master will do. */
        bool master = reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                      reply->element[0]->type == REDIS_REPLY_STRING && strcmp(reply->element[0]->str, "master") == 0;
        if (master)
            return;
        counter_add(&link->cnt->errors, 1);
        log_limited(&link->log_lim, LOG_WARN, "redis is not a master, asking the sentinels again role=%s addr=%s:%d",
                    link->role, link->host, link->port);
        if (link->ac != NULL)
            link_teardown(link);
        return;
    }
    if (reply->type != REDIS_REPLY_ERROR) {
        if (strcmp(what, "SELECT") == 0 && link->state == LINK_SETUP) /* SELECT goes last */
            link_ready(link);
        return;
    }
    counter_add(&link->cnt->errors, 1);
    log_limited(&link->log_lim, LOG_ERROR, "redis %s failed role=%s error=\"%s\"", what, link->role, reply->str);
    if (link->ac != NULL)
        link_teardown(link);
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct redis_link *link = w->data;
    if (fifo_count(link) == 0)
        return;
    ev_tstamp now = ev_now(loop);
    ev_tstamp due = link->fifo[link->fifo_head & link->fifo_mask].deadline;
    if (due > now) {
        ev_timer_set(w, due - now, 0.);
        ev_timer_start(loop, w);
        return;
    }
    counter_add(&link->cnt->errors, 1);
    log_limited(&link->log_lim, LOG_WARN, "redis timeout, reconnecting role=%s addr=%s:%d timeout_ms=%d",
                link->role, link->host, link->port, link->conf->timeout_ms);
    link_teardown(link);
}

static void on_reconnect_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    link_connect(w->data);
}

/* A command may go to hiredis: the link is not down and its FIFO entry is reserved. */
static bool can_send(struct redis_link *link)
{
    return link->ac != NULL && link->state != LINK_DOWN && fifo_reserve(link) == 0;
}

/* Bookkeeping for a command hiredis accepted: its reply's owner and its deadline. */
static void track(struct redis_link *link, link_reply_fn *fn, void *priv)
{
    link->last_sent = ev_now(link->loop);
    fifo_push(link, fn, priv, link->last_sent + link->conf->timeout_ms / 1000.0);
    if (!ev_is_active(&link->deadline_timer)) {
        ev_timer_set(&link->deadline_timer, link->conf->timeout_ms / 1000.0, 0.);
        ev_timer_start(link->loop, &link->deadline_timer);
    }
}

static int send_command(struct redis_link *link, link_reply_fn *fn, void *priv, const char *fmt,
                        va_list ap)
{
    if (!can_send(link))
        return -1;
    if (redisvAsyncCommand(link->ac, on_reply, link, fmt, ap) != REDIS_OK)
        return -1;
    track(link, fn, priv);
    return 0;
}

int link_send(struct redis_link *link, link_reply_fn *fn, void *priv, const char *cmd, size_t len)
{
    ASSERT_THREAD_OF(ROLE_SHARD, link->owner);
    if (!can_send(link))
        return -1;
    if (redisAsyncFormattedCommand(link->ac, on_reply, link, cmd, len) != REDIS_OK)
        return -1;
    track(link, fn, priv);
    return 0;
}

int link_command(struct redis_link *link, link_reply_fn *fn, void *priv, const char *fmt, ...)
{
    ASSERT_THREAD_OF(ROLE_SHARD, link->owner);
    va_list ap;
    va_start(ap, fmt);
    int rc = send_command(link, fn, priv, fmt, ap);
    va_end(ap);
    return rc;
}

static int setup_command(struct redis_link *link, const char *what, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = send_command(link, on_setup_reply, (void *)what, fmt, ap);
    va_end(ap);
    return rc;
}

/* Any reply, an error such as -LOADING or -BUSY too, shows that Redis reads and answers; a
 * missing one has already torn the link down through the PING's deadline. */
static void on_probe_reply(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    (void)link;
    (void)status;
    (void)reply;
    (void)priv;
}

/* While UP. Re-armed lazily, like the deadline timer, so that sending costs one store. */
static void on_probe_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct redis_link *link = w->data;
    ev_tstamp now = ev_now(loop), interval = probe_interval(link);
    ev_tstamp next = now + interval; /* commands in flight: their deadlines watch Redis */
    if (fifo_count(link) == 0) {
        if (link->last_sent + interval > now + 0.001)
            next = link->last_sent + interval; /* sent lately, and answered */
        else
            link_command(link, on_probe_reply, NULL, "PING"); /* a deadline like any command */
    }
    if (link->state == LINK_UP)
        probe_arm(link, next - now);
}

/* Connect to link->host:link->port and queue the set-up. */
static void link_connect_now(struct redis_link *link)
{
    redisAsyncContext *ac = redisAsyncConnect(link->host, link->port);
    if (ac == NULL || ac->err) {
        counter_add(&link->cnt->errors, 1);
        log_limited(&link->log_lim, LOG_WARN, "redis connect failed role=%s addr=%s:%d error=\"%s\"", link->role,
                    link->host, link->port, ac ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        schedule_reconnect(link);
        return;
    }
    ac->data = link;
    redisLibevAttach(link->loop, ac);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    link->ac = ac;
    link_set_state(link, LINK_CONNECTING);

    /* Queued now, sent first once connected; SELECT always goes, so that a connect that never
     * completes still has a command whose deadline ends it. */
    const struct redis_conf *c = link->conf;
    if (c->password[0] != '\0') {
        if (c->username[0] != '\0')
            setup_command(link, "AUTH", "AUTH %s %s", c->username, c->password);
        else
            setup_command(link, "AUTH", "AUTH %s", c->password);
    }
    if (c->mode == REDIS_SENTINEL)
        setup_command(link, "ROLE", "ROLE");
    if (setup_command(link, "SELECT", "SELECT %d", c->database) < 0) {
        /* Without SELECT the link would never come UP, nor time out: start over. */
        counter_add(&link->cnt->errors, 1);
        link_teardown(link);
        return;
    }
    if (link->on_setup != NULL)
        link->on_setup(link);
}

/* The sentinels named the master (host NULL: none did). */
static void on_master_found(void *owner, const char *host, int port)
{
    struct redis_link *link = owner;
    link->finding = false;
    if (link->stopping || link->ac != NULL)
        return;
    if (host == NULL) {
        counter_add(&link->cnt->errors, 1);
        schedule_reconnect(link);
        return;
    }
    snprintf(link->host, sizeof(link->host), "%s", host);
    link->port = port;
    link_connect_now(link);
}

/* The sentinels promoted another master: leave this one now rather than when it fails. */
static void on_master_switched(void *owner, const char *host, int port)
{
    struct redis_link *link = owner;
    if (link->stopping || link->finding)
        return; /* the answer on its way is asked after the switch */
    link->backoff = BACKOFF_MIN; /* not a failure of ours: come back at once */
    if (link->ac == NULL) {
        /* Down and waiting out its backoff (the old master is gone): no need to wait. */
        ev_timer_stop(link->loop, &link->reconnect_timer);
        link_connect(link);
    } else if (strcmp(host, link->host) != 0 || port != link->port) {
        link_teardown(link);
    }
}

static void link_connect(struct redis_link *link)
{
    if (link->stopping || link->ac != NULL || link->finding)
        return;
    if (link->conf->mode == REDIS_SENTINEL) {
        /* Asked again on every connect: a failover may have happened while we were away. */
        link->finding = true;
        sentinel_find_master(&link->sentinel);
        return;
    }
    link_connect_now(link);
}

int link_init(struct redis_link *link, const char *role, const struct redis_conf *conf,
              struct ev_loop *loop, void *owner, link_setup_fn *on_setup)
{
    memset(link, 0, sizeof(*link));
    link->role = role;
    link->conf = conf;
    link->loop = loop;
    link->owner = owner;
    link->on_setup = on_setup;
    snprintf(link->host, sizeof(link->host), "%s", conf->host);
    link->port = conf->port;
    sentinel_init(&link->sentinel, role, conf, loop, link, on_master_found, on_master_switched);
    link->backoff = BACKOFF_MIN;
    link->fail_status = LINK_LOST;
    link->cnt = &link->own;
    link->seed = (unsigned int)(uintptr_t)link;
    link->fifo = malloc(FIFO_INITIAL * sizeof(*link->fifo));
    if (link->fifo == NULL)
        return -1;
    link->fifo_mask = FIFO_INITIAL - 1;
    ev_timer_init(&link->deadline_timer, on_deadline, 0., 0.);
    link->deadline_timer.data = link;
    ev_timer_init(&link->probe_timer, on_probe_timer, 0., 0.);
    link->probe_timer.data = link;
    ev_timer_init(&link->reconnect_timer, on_reconnect_timer, 0., 0.);
    link->reconnect_timer.data = link;
    return 0;
}

void link_set_target(struct redis_link *link, const char *host, int port)
{
    snprintf(link->host, sizeof(link->host), "%s", host);
    link->port = port;
}

void link_connect_soon(struct redis_link *link)
{
    if (link->stopping || link->ac != NULL || link->finding)
        return;
    ev_timer_stop(link->loop, &link->reconnect_timer);
    link_connect(link);
}

uint32_t link_in_flight(const struct redis_link *link)
{
    return fifo_count(link);
}

void link_share_counters(struct redis_link *link, struct link_counters *shared)
{
    link->cnt = shared;
}

void link_start(struct redis_link *link)
{
    if (link->conf->mode == REDIS_SENTINEL)
        sentinel_watch(&link->sentinel);
    link_connect(link);
}

void link_stop(struct redis_link *link)
{
    link->stopping = true;
    ev_timer_stop(link->loop, &link->reconnect_timer);
    sentinel_stop(&link->sentinel);
    if (link->ac != NULL)
        link_teardown(link);
}

void link_destroy(struct redis_link *link)
{
    free(link->fifo);
    link->fifo = NULL;
}
