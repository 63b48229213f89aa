/* Shard thread only: every function here runs on the loop of the shard that owns the link. */
#include "shards/redis_link.h"

#include <assert.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libev.h>

#define BACKOFF_MIN 0.05 /* seconds */
#define BACKOFF_MAX 2.0
#define FIFO_INITIAL 1024

static void link_connect(struct redis_link *link);

/* The one place the state changes, so the `up` gauge always agrees with it. */
static void link_set_state(struct redis_link *link, enum link_state state)
{
    link->state = state;
    counter_set(&link->up, state == LINK_UP);
}

static uint32_t fifo_count(const struct redis_link *link)
{
    return link->fifo_tail - link->fifo_head;
}

static int fifo_push(struct redis_link *link, link_reply_fn *fn, void *priv, ev_tstamp deadline)
{
    if (fifo_count(link) > link->fifo_mask) {
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
    }
    link->fifo[link->fifo_tail++ & link->fifo_mask] = (struct link_pending){fn, priv, deadline};
    return 0;
}

/* hiredis calls back in send order, so the reply belongs to the oldest entry. */
static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    struct redis_link *link = privdata;
    assert(fifo_count(link) > 0);
    struct link_pending p = link->fifo[link->fifo_head++ & link->fifo_mask];
    int status = LINK_REPLY;
    if (r == NULL) {
        /* We tore the connection down (ac cleared first), or hiredis lost it. */
        if (link->ac == NULL)
            status = link->fail_status;
        else
            status = link->state == LINK_UP ? LINK_LOST : LINK_NOT_SENT;
    }
    p.fn(link, status, r, p.priv);
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

/* Drop the connection: pending commands are answered with `status` by hiredis's free. */
static void link_teardown(struct redis_link *link, enum link_status status)
{
    redisAsyncContext *ac = link->ac;
    link->ac = NULL;
    link_set_state(link, LINK_DOWN);
    link->fail_status = status;
    ev_timer_stop(link->loop, &link->deadline_timer);
    if (ac != NULL)
        redisAsyncFree(ac);
    schedule_reconnect(link);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_link *link = ac->data;
    if (ac != link->ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac after we return, answering queued commands: never sent. */
        counter_add(&link->errors, 1);
        log_limited(&link->log_lim, LOG_WARN, "redis connect failed role=%s addr=%s:%d error=\"%s\"", link->role,
                    link->conf->host, link->conf->port, ac->errstr);
        link->ac = NULL;
        link_set_state(link, LINK_DOWN);
        link->fail_status = LINK_NOT_SENT;
        ev_timer_stop(link->loop, &link->deadline_timer);
        schedule_reconnect(link);
        return;
    }
    link_set_state(link, LINK_UP);
    if (link->ever_up)
        counter_add(&link->reconnects, 1);
    link->ever_up = true;
    log_info("redis connected role=%s addr=%s:%d", link->role, link->conf->host, link->conf->port);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct redis_link *link = ac->data;
    if (ac != link->ac)
        return; /* our own teardown: already handled */
    counter_add(&link->errors, 1);
    log_limited(&link->log_lim, LOG_WARN, "redis connection lost role=%s addr=%s:%d error=\"%s\"", link->role,
                link->conf->host, link->conf->port, ac->errstr ? ac->errstr : "closed");
    /* hiredis may answer the pending commands after this callback: they were sent. */
    link->ac = NULL;
    link_set_state(link, LINK_DOWN);
    link->fail_status = LINK_LOST;
    ev_timer_stop(link->loop, &link->deadline_timer);
    schedule_reconnect(link);
}

/* AUTH / SELECT answers: an error here means this connection is unusable. */
static void on_setup_reply(struct redis_link *link, int status, redisReply *reply, void *priv)
{
    const char *what = priv;
    if (status != LINK_REPLY)
        return;
    if (reply->type != REDIS_REPLY_ERROR) {
        /* SELECT goes last: the connection is fully set up, so the next failure starts the
         * backoff from the bottom (a rejected AUTH must not reconnect at the fastest rate). */
        if (strcmp(what, "SELECT") == 0)
            link->backoff = BACKOFF_MIN;
        return;
    }
    counter_add(&link->errors, 1);
    log_limited(&link->log_lim, LOG_ERROR, "redis %s failed role=%s error=\"%s\"", what, link->role, reply->str);
    /* Inside a hiredis callback the free is deferred until it returns; that is fine. */
    if (link->ac != NULL)
        link_teardown(link, LINK_LOST);
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
    counter_add(&link->errors, 1);
    log_limited(&link->log_lim, LOG_WARN, "redis timeout, reconnecting role=%s addr=%s:%d timeout_ms=%d",
                link->role, link->conf->host, link->conf->port, link->conf->timeout_ms);
    link_teardown(link, link->state == LINK_UP ? LINK_LOST : LINK_NOT_SENT);
}

static void on_reconnect_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    link_connect(w->data);
}

/* Bookkeeping for a command hiredis accepted: its reply's owner and its deadline. */
static void track(struct redis_link *link, link_reply_fn *fn, void *priv)
{
    ev_tstamp deadline = ev_now(link->loop) + link->conf->timeout_ms / 1000.0;
    if (fifo_push(link, fn, priv, deadline) < 0)
        abort(); /* the command is out and its reply must find its caller: no way to go on */
    if (!ev_is_active(&link->deadline_timer)) {
        ev_timer_set(&link->deadline_timer, link->conf->timeout_ms / 1000.0, 0.);
        ev_timer_start(link->loop, &link->deadline_timer);
    }
}

static int send_command(struct redis_link *link, link_reply_fn *fn, void *priv, const char *fmt,
                        va_list ap)
{
    if (link->ac == NULL || link->state == LINK_DOWN)
        return -1;
    if (redisvAsyncCommand(link->ac, on_reply, link, fmt, ap) != REDIS_OK)
        return -1;
    track(link, fn, priv);
    return 0;
}

int link_send(struct redis_link *link, link_reply_fn *fn, void *priv, const char *cmd, size_t len)
{
    if (link->ac == NULL || link->state == LINK_DOWN)
        return -1;
    if (redisAsyncFormattedCommand(link->ac, on_reply, link, cmd, len) != REDIS_OK)
        return -1;
    track(link, fn, priv);
    return 0;
}

int link_command(struct redis_link *link, link_reply_fn *fn, void *priv, const char *fmt, ...)
{
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

static void link_connect(struct redis_link *link)
{
    if (link->stopping || link->ac != NULL)
        return;
    redisAsyncContext *ac = redisAsyncConnect(link->conf->host, link->conf->port);
    if (ac == NULL || ac->err) {
        counter_add(&link->errors, 1);
        log_limited(&link->log_lim, LOG_WARN, "redis connect failed role=%s addr=%s:%d error=\"%s\"", link->role,
                    link->conf->host, link->conf->port, ac ? ac->errstr : "out of memory");
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
    setup_command(link, "SELECT", "SELECT %d", c->database);
    if (link->on_setup != NULL)
        link->on_setup(link);
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
    link->backoff = BACKOFF_MIN;
    link->fail_status = LINK_LOST;
    link->seed = (unsigned int)(uintptr_t)link;
    link->fifo = malloc(FIFO_INITIAL * sizeof(*link->fifo));
    if (link->fifo == NULL)
        return -1;
    link->fifo_mask = FIFO_INITIAL - 1;
    ev_timer_init(&link->deadline_timer, on_deadline, 0., 0.);
    link->deadline_timer.data = link;
    ev_timer_init(&link->reconnect_timer, on_reconnect_timer, 0., 0.);
    link->reconnect_timer.data = link;
    return 0;
}

void link_start(struct redis_link *link)
{
    link_connect(link);
}

void link_stop(struct redis_link *link)
{
    link->stopping = true;
    ev_timer_stop(link->loop, &link->reconnect_timer);
    if (link->ac != NULL)
        link_teardown(link, link->state == LINK_UP ? LINK_LOST : LINK_NOT_SENT);
}

void link_destroy(struct redis_link *link)
{
    free(link->fifo);
    link->fifo = NULL;
}
