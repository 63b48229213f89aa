/* Shard 0's thread, except lease_watch_init and lease_watch_destroy (main thread, while the shard
 * does not run): shards/lease_watch.h. */
#include "shards/lease_watch.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <ev.h>

#include "core/log.h"
#include "shards/drain.h"
#include "shards/gateways.h"
#include "shards/redis_result.h"
#include "shards/shard.h"

struct lease_watch {
    struct shard *s;
    ev_timer timer;   /* every LEASE_WATCH_INTERVAL */
    char owner[96];   /* "<host>:<pid>:<random>": this instance's locks */
    bool claiming;    /* a claim script is out */
    bool stopping;    /* the shard is stopping: claim nothing more */
    uint8_t attempts; /* runs of the claim script out (a NOSCRIPT runs it by body, once) */
    uint32_t running; /* lease drains in progress */
    struct log_limit log_lim;
};

static void claim(struct lease_watch *w, bool by_body);

static void on_claimed(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    (void)link;
    struct lease_watch *w = priv;
    w->claiming = false;
    if (redis_noscript(status, reply) && w->attempts == 1) {
        claim(w, true);
        return;
    }
    w->attempts = 0;
    if (redis_result(status, reply) != 0) {
        if (status == LINK_REPLY) /* Redis down is reported by its link; a script error is ours */
            log_limited(&w->log_lim, LOG_WARN, "lease watcher: claim failed error=\"%s\"", reply->str);
        return; /* the timer tries again */
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING || reply->element[1]->type != REDIS_REPLY_STRING ||
        reply->element[0]->len > GW_ADDR_MAX || reply->element[1]->len >= 24)
        return; /* nil: no lapsed lease free to claim */
    char end[24];
    memcpy(end, reply->element[1]->str, reply->element[1]->len);
    end[reply->element[1]->len] = '\0';
    log_info("lease lapsed, draining gateway=\"%.*s\" lease_end=%s", (int)reply->element[0]->len,
             reply->element[0]->str, end);
    w->running++;
    drain_start(w->s, NULL, reply->element[0]->str, reply->element[0]->len, end);
    claim(w, false); /* another may be due: not half a second later */
}

static void claim(struct lease_watch *w, bool by_body)
{
    if (w->claiming || w->stopping || w->running >= LEASE_DRAINS_MAX)
        return;
    char ms[16], candidates[16];
    const struct gw_arg args[] = {
        {GW_LEASES_KEY, sizeof(GW_LEASES_KEY) - 1},
        {GW_LOCK_PREFIX, sizeof(GW_LOCK_PREFIX) - 1},
        {w->owner, strlen(w->owner)},
        {ms, (size_t)snprintf(ms, sizeof(ms), "%d", LEASE_LOCK_MS)},
        {candidates, (size_t)snprintf(candidates, sizeof(candidates), "%d", LEASE_CANDIDATES)},
    };
    w->attempts++;
    if (gateways_eval(w->s, GW_SCRIPT_CLAIM, by_body, gateways_lease_slot(), on_claimed, w, args, 5, 1) == 0)
        w->claiming = true;
    else
        w->attempts = 0; /* cache down: the next tick */
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    claim(t->data, false);
}

void lease_watch_drain_done(struct shard *s)
{
    struct lease_watch *w = s->lease_watch;
    w->running--;
    claim(w, false);
}

const char *lease_watch_owner(const struct shard *s)
{
    return s->lease_watch != NULL ? s->lease_watch->owner : "";
}

void lease_watch_stop(struct shard *s)
{
    if (s->lease_watch == NULL)
        return;
    s->lease_watch->stopping = true;
    ev_timer_stop(s->loop, &s->lease_watch->timer);
}

int lease_watch_init(struct shard *s)
{
    struct lease_watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -1;
    w->s = s;
    char host[64] = "host";
    gethostname(host, sizeof(host) - 1);
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)(uintptr_t)w ^ (uint32_t)getpid();
    snprintf(w->owner, sizeof(w->owner), "%s:%d:%08x", host, (int)getpid(), rnd);
    ev_timer_init(&w->timer, on_timer, LEASE_WATCH_INTERVAL, LEASE_WATCH_INTERVAL);
    w->timer.data = w;
    ev_timer_start(s->loop, &w->timer);
    s->lease_watch = w;
    return 0;
}

void lease_watch_destroy(struct shard *s)
{
    if (s->lease_watch != NULL)
        ev_timer_stop(s->loop, &s->lease_watch->timer); /* the shard's thread has ended */
    free(s->lease_watch);
    s->lease_watch = NULL;
}
