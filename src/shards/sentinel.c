/* Shard thread only: every function runs on the loop of the shard that owns the link. */
#include "shards/sentinel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libev.h>

#define WATCH_RETRY 1.0 /* seconds between +switch-master subscription attempts */

static void ask_next(struct sentinel *s);

/* A hiredis async connection to sentinel i, or NULL (logged). */
static redisAsyncContext *connect_to(struct sentinel *s, int i, redisConnectCallback *on_connect,
                                     redisDisconnectCallback *on_disconnect)
{
    const struct cluster_addr *n = &s->conf->node[i];
    redisAsyncContext *ac = redisAsyncConnect(n->host, n->port);
    if (ac == NULL || ac->err) {
        log_limited(&s->log_lim, LOG_WARN, "sentinel connect failed role=%s addr=%s:%d error=\"%s\"", s->role,
                    n->host, n->port, ac ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        return NULL;
    }
    ac->data = s;
    redisLibevAttach(s->loop, ac);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return ac;
}

/* --- find: SENTINEL get-master-addr-by-name, one sentinel after the other --- */

/* This sentinel did not answer: hiredis frees ac itself (free = false) or we do. */
static void ask_failed(struct sentinel *s, bool free, const char *why)
{
    redisAsyncContext *ac = s->ask;
    const struct cluster_addr *n = &s->conf->node[s->asking];
    log_limited(&s->log_lim, LOG_WARN, "sentinel did not name the master role=%s addr=%s:%d master_name=%s why=\"%s\"",
                s->role, n->host, n->port, s->conf->master_name, why);
    s->ask = NULL; /* first: the callbacks hiredis makes while freeing it are then ignored */
    ev_timer_stop(s->loop, &s->ask_timer);
    if (free && ac != NULL)
        redisAsyncFree(ac);
    s->asking++;
    ask_next(s);
}

static void on_ask_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct sentinel *s = priv;
    if (ac != s->ask)
        return; /* a connection we gave up */
    redisReply *reply = r;
    if (reply == NULL) { /* hiredis is freeing it: connection lost */
        ask_failed(s, false, ac->errstr[0] ? ac->errstr : "connection lost");
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 || reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING) {
        ask_failed(s, true, reply->type == REDIS_REPLY_ERROR ? reply->str : "no such master");
        return;
    }
    char host[CLUSTER_HOST_MAX];
    snprintf(host, sizeof(host), "%s", reply->element[0]->str);
    int port = atoi(reply->element[1]->str);
    s->ask = NULL;
    ev_timer_stop(s->loop, &s->ask_timer);
    redisAsyncFree(ac); /* deferred by hiredis until this callback returns */
    s->asking = 0;      /* the next find starts from the first sentinel again */
    s->found(s->owner, host, port);
}

static void on_ask_connect(const redisAsyncContext *ac, int status)
{
    struct sentinel *s = ac->data;
    if (ac == s->ask && status != REDIS_OK)
        ask_failed(s, false, ac->errstr); /* hiredis frees ac after we return */
}

static void on_ask_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct sentinel *s = ac->data;
    if (ac == s->ask)
        ask_failed(s, false, "connection lost");
}

static void on_ask_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sentinel *s = w->data;
    if (s->ask != NULL)
        ask_failed(s, true, "no answer within timeout");
}

static void ask_next(struct sentinel *s)
{
    while (!s->stopping && s->asking < s->conf->nnodes) {
        redisAsyncContext *ac = connect_to(s, s->asking, on_ask_connect, on_ask_disconnect);
        if (ac != NULL && redisAsyncCommand(ac, on_ask_reply, s, "SENTINEL get-master-addr-by-name %s",
                                            s->conf->master_name) == REDIS_OK) {
            s->ask = ac;
            ev_timer_set(&s->ask_timer, s->conf->timeout_ms / 1000.0, 0.);
            ev_timer_start(s->loop, &s->ask_timer);
            return;
        }
        if (ac != NULL)
            redisAsyncFree(ac);
        s->asking++;
    }
    if (s->stopping)
        return;
    s->asking = 0;
    s->found(s->owner, NULL, 0);
}

void sentinel_find_master(struct sentinel *s)
{
    if (s->ask == NULL)
        ask_next(s);
}

/* --- watch: +switch-master "<name> <old-ip> <old-port> <new-ip> <new-port>" --- */

static void watch_lost(struct sentinel *s)
{
    s->watch = NULL;
    if (s->stopping)
        return;
    s->watching = (s->watching + 1) % s->conf->nnodes; /* the next sentinel, next time */
    ev_timer_set(&s->watch_retry, WATCH_RETRY, 0.);
    ev_timer_start(s->loop, &s->watch_retry);
}

static void on_watch_message(redisAsyncContext *ac, void *r, void *priv)
{
    struct sentinel *s = priv;
    redisReply *reply = r;
    if (ac != s->watch || reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING || strcmp(reply->element[0]->str, "message") != 0 ||
        reply->element[2]->type != REDIS_REPLY_STRING)
        return; /* the subscription's confirmation, or a connection going away */
    char name[128], old_host[CLUSTER_HOST_MAX], new_host[CLUSTER_HOST_MAX];
    int old_port, new_port;
    if (sscanf(reply->element[2]->str, "%127s %255s %d %255s %d", name, old_host, &old_port, new_host,
               &new_port) != 5 ||
        strcmp(name, s->conf->master_name) != 0)
        return;
    log_info("sentinel announced a new master role=%s master_name=%s addr=%s:%d", s->role, name, new_host,
             new_port);
    s->switched(s->owner, new_host, new_port);
}

static void on_watch_connect(const redisAsyncContext *ac, int status)
{
    struct sentinel *s = ac->data;
    if (ac == s->watch && status != REDIS_OK)
        watch_lost(s);
}

static void on_watch_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct sentinel *s = ac->data;
    if (ac == s->watch)
        watch_lost(s);
}

void sentinel_watch(struct sentinel *s)
{
    if (s->watch != NULL || s->stopping || s->conf->nnodes == 0)
        return;
    redisAsyncContext *ac = connect_to(s, s->watching, on_watch_connect, on_watch_disconnect);
    if (ac == NULL || redisAsyncCommand(ac, on_watch_message, s, "SUBSCRIBE +switch-master") != REDIS_OK) {
        if (ac != NULL)
            redisAsyncFree(ac);
        watch_lost(s);
        return;
    }
    s->watch = ac;
}

static void on_watch_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sentinel_watch(w->data);
}

/* --- life cycle --- */

void sentinel_init(struct sentinel *s, const char *role, const struct redis_conf *conf, struct ev_loop *loop,
                   void *owner, sentinel_found_fn *found, sentinel_switched_fn *switched)
{
    memset(s, 0, sizeof(*s));
    s->role = role;
    s->conf = conf;
    s->loop = loop;
    s->owner = owner;
    s->found = found;
    s->switched = switched;
    ev_timer_init(&s->ask_timer, on_ask_timeout, 0., 0.);
    s->ask_timer.data = s;
    ev_timer_init(&s->watch_retry, on_watch_retry, 0., 0.);
    s->watch_retry.data = s;
}

void sentinel_stop(struct sentinel *s)
{
    s->stopping = true;
    ev_timer_stop(s->loop, &s->ask_timer);
    ev_timer_stop(s->loop, &s->watch_retry);
    redisAsyncContext *ask = s->ask, *watch = s->watch;
    s->ask = s->watch = NULL; /* first: the callbacks made while freeing are ignored */
    if (ask != NULL)
        redisAsyncFree(ask);
    if (watch != NULL)
        redisAsyncFree(watch);
}
