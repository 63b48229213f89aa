#include "shards/shard.h"

#include <assert.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "shards/handlers.h"
#include "presence.pb-c.h"

/* --- shard thread --- */

void shard_answer(struct shard *s, struct pr_request *req)
{
    if (req->method == PR_METHOD_DELIVER)
        req->timestamp = clock_now_ms();
    if (req->method < PR_METHOD_COUNT && req->code < PR_CODE_COUNT)
        counter_add(&s->counters.requests[req->method][req->code], 1);
    /* Cannot fail: the acceptor keeps at most queue_depth requests per shard outstanding, and
     * the outbox holds that many. */
    bool ok = ring_push(&s->outbox, req);
    assert(ok);
    (void)ok;
    s->answers_pending = true;
}

/* Drain the whole inbox each wake-up; commands issued here leave in one write per link. */
static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct shard *s = w->data;
    struct pr_request *req;
    while ((req = ring_pop(&s->inbox)) != NULL)
        handlers_dispatch(s, req);
}

/* Before the loop sleeps: one wake-up for the acceptor per turn, not one per answer. */
static void on_before_sleep(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    struct shard *s = w->data;
    if (s->answers_pending) {
        s->answers_pending = false;
        ev_async_send(s->acceptor_loop, s->answered);
    }
}

static void on_stop(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)revents;
    struct shard *s = w->data;
    on_wake(loop, &s->wake, 0); /* nothing submitted is left unanswered */
    link_stop(&s->cache);
    link_stop(&s->queue);
    handlers_fail_retries(s);
    on_before_sleep(loop, &s->before_sleep, 0);
    ev_break(loop, EVBREAK_ALL);
}

static void *shard_main(void *arg)
{
    struct shard *s = arg;
    char name[24];
    snprintf(name, sizeof(name), "shard-%d", s->id);
    log_set_thread(name);
    /* A shard is woken by the acceptor many times a millisecond. Under the normal policy each
     * wake-up may preempt the waker (CFS wake-up preemption), which cuts both threads' batches
     * short whenever there are more threads than cores. SCHED_BATCH keeps fair time slices but
     * drops that preemption: with 4-8 shards on 2 cores, +10-30 % throughput and a lower p99
     * (bench/RESULTS.md). Unprivileged; if refused, the normal policy stays. */
    struct sched_param sp = {0};
    pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    link_start(&s->cache);
    link_start(&s->queue);
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
    if (link_init(&s->cache, "cache", &conf->cache, s->loop, s, handlers_cache_setup) < 0 ||
        link_init(&s->queue, "queue", &conf->queue, s->loop, s, NULL) < 0)
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
    resp_free(&s->resp);
    link_destroy(&s->cache);
    link_destroy(&s->queue);
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
