#include "shards/shard.h"

#include <assert.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/slot_tag.h"
#include "core/thread_role.h"
#include "shards/batch_run.h"
#include "shards/drain.h"
#include "shards/gateways.h"
#include "shards/handlers.h"
#include "shards/lease_watch.h"
#include "shards/route_cache.h"
#include "presence.pb-c.h"

/* --- shard thread --- */

void shard_answer(struct shard *s, struct pr_request *req)
{
    ASSERT_THREAD_OF(ROLE_SHARD, s);
    if (req->part != NULL) {
        batch_run_done(s, req); /* one id of a batch part: back to its part, not to the outbox */
        return;
    }
    if (req->method == PR_METHOD_DELIVER)
        req->timestamp = clock_now_ms();
    /* A batch part is not a call: the acceptor counts the call once, when it is gathered. */
    if (req->batch == NULL && req->method < PR_METHOD_COUNT && req->code < PR_CODE_COUNT)
        counter_add(&s->counters.requests[req->method][req->code], 1);
    /* Cannot fail: the acceptor keeps at most queue_depth requests per shard outstanding, and
     * the outbox holds that many. */
    TRACE_HOOK(trace_answered(req));
    bool ok = ring_push(&s->outbox, req);
    assert(ok);
    (void)ok;
    s->answers_pending = true;
}

/* The scheduling policy follows the load (batch_sched_above). A wake-up preempts the thread
 * running on its core under the normal policy; SCHED_BATCH drops that preemption. Saturated (many
 * requests found per wake-up), preemption only cuts the acceptor's batches short: with 4-8 shards
 * on 2 cores SCHED_BATCH gives +10-30 % throughput. Lightly loaded (a few requests per wake-up),
 * a SCHED_BATCH shard waits for whatever runs to finish its slice (up to a 4 ms tick): at 40k
 * req/s on 2 busy cores the Redis round trip's p99, the shard's wake-up on the reply included, was
 * 4.0-4.1 ms against 2.2-2.6 ms under the normal policy (bench/RESULTS.md, hop breakdown).
 * Checked every SCHED_CHECK_WAKES wake-ups; back to normal below 3/4 of the threshold. */
#define SCHED_CHECK_WAKES 64

static void sched_set(struct shard *s, bool batch)
{
    struct sched_param sp = {0};
    /* Unprivileged either way; if refused, the policy stays as it was. */
    if (pthread_setschedparam(pthread_self(), batch ? SCHED_BATCH : SCHED_OTHER, &sp) == 0) {
        s->sched_batch = batch;
        log_debug("scheduling policy %s", batch ? "SCHED_BATCH" : "normal");
    }
}

static void sched_adapt(struct shard *s)
{
    uint64_t above = (uint64_t)s->conf->batch_sched_above;
    if (above == 0 || ++s->sched_wakes < SCHED_CHECK_WAKES)
        return;
    uint64_t popped = s->sched_popped; /* requests per wake-up = popped / SCHED_CHECK_WAKES */
    s->sched_wakes = s->sched_popped = 0;
    if (!s->sched_batch && popped >= above * SCHED_CHECK_WAKES)
        sched_set(s, true);
    else if (s->sched_batch && popped * 4 < above * 3 * SCHED_CHECK_WAKES)
        sched_set(s, false);
}

/* Drain the whole inbox each wake-up; commands issued here leave in one write per link. */
static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct shard *s = w->data;
    struct pr_request *req;
    TRACE_HOOK(trace_woken(s->id));
    while ((req = ring_pop(&s->inbox)) != NULL) {
        TRACE_HOOK(trace_popped(req));
        s->sched_popped++;
        handlers_dispatch(s, req);
    }
    sched_adapt(s);
}

/* Before the loop sleeps: one wake-up for the acceptor per turn, not one per answer. */
static void on_before_sleep(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    struct shard *s = w->data;
    if (s->near != NULL)
        route_cache_before_sleep(s); /* the near cache's fence PINGs for this turn's hits */
    if (s->answers_pending) {
        s->answers_pending = false;
        TRACE_HOOK(trace_notify_sent(s->id));
        ev_async_send(s->acceptor_loop, s->answered);
    }
}

static void on_stop(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)revents;
    struct shard *s = w->data;
    on_wake(loop, &s->wake, 0); /* nothing submitted is left unanswered */
    lease_watch_stop(s);       /* no new lease drain */
    if (drain_quiesce(s))      /* drains end after their step in flight; the last calls shard_stop_finish */
        return;
    shard_stop_finish(s);
}

void shard_stop_finish(struct shard *s)
{
    struct ev_loop *loop = s->loop;
    if (s->near != NULL)
        route_cache_stop(s);   /* hits waiting for their fence go to Redis, answered by router_stop */
    router_stop(&s->cache);
    router_stop(&s->queue);
    handlers_fail_retries(s);
    on_before_sleep(loop, &s->before_sleep, 0);
    ev_break(loop, EVBREAK_ALL);
}

static void *shard_main(void *arg)
{
    struct shard *s = arg;
    thread_role_set(ROLE_SHARD, s);
    char name[24];
    snprintf(name, sizeof(name), "shard-%d", s->id);
    log_set_thread(name);
    /* batch_sched_above = 0: always SCHED_BATCH; otherwise start normal, adapt (sched_adapt). */
    if (s->conf->batch_sched_above == 0)
        sched_set(s, true);
    router_start(&s->cache);
    router_start(&s->queue);
    ev_run(s->loop, 0);
    return NULL;
}

/* --- main thread --- */

int shard_init(struct shard *s, int id, const struct presence_conf *conf, struct ev_loop *acceptor_loop,
               ev_async *answered)
{
    memset(s, 0, sizeof(*s));
    s->id = id;
    s->conf = conf;
    s->acceptor_loop = acceptor_loop;
    s->answered = answered;
    if (ring_init(&s->inbox, (unsigned int)conf->queue_depth) < 0 ||
        ring_init(&s->outbox, (unsigned int)conf->queue_depth) < 0)
        return -1;
    s->loop = ev_loop_new(EVFLAG_AUTO);
    if (s->loop == NULL)
        return -1;
    ev_async_init(&s->wake, on_wake);
    s->wake.data = s;
    ev_async_start(s->loop, &s->wake);
    ev_async_init(&s->stop, on_stop);
    s->stop.data = s;
    ev_async_start(s->loop, &s->stop);
    ev_prepare_init(&s->before_sleep, on_before_sleep);
    s->before_sleep.data = s;
    ev_prepare_start(s->loop, &s->before_sleep);
    if (handlers_init(s) < 0)
        return -1;
    slot_tags_init(); /* names of the gateway indexes' per-slot keys on a cluster (gateways.c) */
    if (id == 0 && lease_watch_init(s) < 0) /* one watcher per instance */
        return -1;
    /* [route] near_cache > 0: each cache connection also turns on CLIENT TRACKING (route_cache.c). */
    if (conf->near_cache > 0 && (s->near = route_cache_new(s)) == NULL)
        return -1;
    if (router_init(&s->cache, "cache", &conf->cache, s->loop, s,
                    s->near != NULL ? route_cache_link_setup : handlers_cache_setup) < 0 ||
        router_init(&s->queue, "queue", &conf->queue, s->loop, s, NULL) < 0)
        return -1;
    return 0;
}

int shard_start(struct shard *s)
{
    /* Signals belong to the main thread's loop; the shard inherits a full block mask. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&s->thread, NULL, shard_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc == 0 ? 0 : -1;
}

void shard_stop(struct shard *s)
{
    ev_async_send(s->loop, &s->stop);
    pthread_join(s->thread, NULL);
}

void shard_destroy(struct shard *s)
{
    batch_run_destroy(s);
    lease_watch_destroy(s);
    gateways_destroy(s);
    resp_free(&s->resp);
    router_destroy(&s->cache);
    router_destroy(&s->queue);
    route_cache_free(s->near); /* after the routers: the links it points at are gone */
    s->near = NULL;
    if (s->loop != NULL)
        ev_loop_destroy(s->loop);
    ring_destroy(&s->inbox);
    ring_destroy(&s->outbox);
}

/* --- acceptor thread --- */

void shard_wake(struct shard *s)
{
    ev_async_send(s->loop, &s->wake);
}

/* --- any thread: stats --- */

void shard_stats_read(const struct shard *s, struct shard_stats *out)
{
    for (int m = 0; m < PR_METHOD_COUNT; m++)
        for (int code = 0; code < PR_CODE_COUNT; code++)
            out->requests[m][code] = counter_get(&s->counters.requests[m][code]);
    out->route_hits = counter_get(&s->counters.route_hits);
    out->route_misses = counter_get(&s->counters.route_misses);
    out->delivered = counter_get(&s->counters.delivered);
    out->undelivered = counter_get(&s->counters.undelivered);
    out->deliver_retries = counter_get(&s->counters.deliver_retries);
    for (int k = 0; k < 2; k++)
        out->drains[k] = counter_get(&s->counters.drains[k]);
    out->drained_sessions = counter_get(&s->counters.drained_sessions);
    out->nc_hits = counter_get(&s->counters.nc_hits);
    out->nc_misses = counter_get(&s->counters.nc_misses);
    out->nc_invalidations = counter_get(&s->counters.nc_invalidations);
    out->nc_flushes = counter_get(&s->counters.nc_flushes);
    out->nc_entries = counter_get(&s->counters.nc_entries);
    out->nc_tracked = counter_get(&s->counters.nc_tracked);
    const struct redis_router *routers[SHARD_LINKS] = {[SHARD_LINK_CACHE] = &s->cache, [SHARD_LINK_QUEUE] = &s->queue};
    for (int r = 0; r < SHARD_LINKS; r++) {
        const struct link_counters *lc = router_link_counters(routers[r]);
        const struct router_counters *rc = &routers[r]->counters;
        out->link[r].up = counter_get(&lc->up);
        out->link[r].all_up = router_all_up(routers[r]);
        out->link[r].errors = counter_get(&lc->errors);
        out->link[r].reconnects = counter_get(&lc->reconnects);
        out->link[r].moved = counter_get(&rc->moved);
        out->link[r].ask = counter_get(&rc->ask);
        out->link[r].retries = counter_get(&rc->retries);
        out->link[r].refreshes = counter_get(&rc->refreshes);
        out->link[r].masters = counter_get(&rc->masters);
    }
    out->inbox_depth = ring_depth(&s->inbox);
}

void shard_stats_sum(const struct shard *shards, int n, struct shard_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < n; i++) {
        struct shard_stats one;
        shard_stats_read(&shards[i], &one);
        for (int m = 0; m < PR_METHOD_COUNT; m++)
            for (int code = 0; code < PR_CODE_COUNT; code++)
                out->requests[m][code] += one.requests[m][code];
        out->route_hits += one.route_hits;
        out->route_misses += one.route_misses;
        out->delivered += one.delivered;
        out->undelivered += one.undelivered;
        out->deliver_retries += one.deliver_retries;
        for (int k = 0; k < 2; k++)
            out->drains[k] += one.drains[k];
        out->drained_sessions += one.drained_sessions;
        out->nc_hits += one.nc_hits;
        out->nc_misses += one.nc_misses;
        out->nc_invalidations += one.nc_invalidations;
        out->nc_flushes += one.nc_flushes;
        out->nc_entries += one.nc_entries;
        out->nc_tracked += one.nc_tracked;
        for (int r = 0; r < SHARD_LINKS; r++) {
            out->link[r].up += one.link[r].up;
            out->link[r].all_up += one.link[r].all_up;
            out->link[r].errors += one.link[r].errors;
            out->link[r].reconnects += one.link[r].reconnects;
            out->link[r].moved += one.link[r].moved;
            out->link[r].ask += one.link[r].ask;
            out->link[r].retries += one.link[r].retries;
            out->link[r].refreshes += one.link[r].refreshes;
            out->link[r].masters += one.link[r].masters;
        }
        out->inbox_depth += one.inbox_depth;
    }
}
