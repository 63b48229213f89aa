/* Acceptor thread only (acceptor_init/acceptor_destroy: main thread, before/after). */
#include "net/acceptor.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/codec.h"
#include "core/hash.h"
#include "core/request.h"
#include "core/thread_role.h"
#include "net/conn.h"
#include "net/scatter.h"
#include "presence.pb-c.h"
#include "shards/shard.h"

/* Recycled request objects kept beyond this are freed: bounds idle memory after a burst. */
#define FREE_REQUESTS_MAX 4096

/* --- request objects --- */

struct pr_request *acceptor_request_new(struct acceptor *acc)
{
    struct pr_request *req = acc->free_requests;
    if (req == NULL)
        return calloc(1, sizeof(*req));
    acc->free_requests = req->next;
    acc->nfree_requests--;
    req->next = NULL;
    return req;
}

void acceptor_request_free(struct acceptor *acc, struct pr_request *req)
{
    request_reset(req);
    if (acc->nfree_requests >= FREE_REQUESTS_MAX) {
        free(req);
        return;
    }
    req->next = acc->free_requests;
    acc->free_requests = req;
    acc->nfree_requests++;
}

/* --- connections --- */

static uint32_t open_conns(const struct acceptor *acc)
{
    return (uint32_t)acc->conf->max_connections - acc->nfree;
}

/* Requests handed to shards and not yet back (derived: only shutdown asks). */
static uint64_t inflight_total(const struct acceptor *acc)
{
    uint64_t n = 0;
    for (int i = 0; i < acc->nshards; i++)
        n += counter_get(&acc->inflight[i]);
    return n;
}

static struct conn *conn_by_id(struct acceptor *acc, uint64_t id)
{
    uint32_t slot = (uint32_t)id;
    if (slot >= (uint32_t)acc->conf->max_connections)
        return NULL;
    struct conn *c = acc->conns[slot];
    return c != NULL && c->id == id ? c : NULL;
}

struct conn *acceptor_find_conn(struct acceptor *acc, uint64_t id)
{
    return conn_by_id(acc, id);
}

void acceptor_add_conn(struct acceptor *acc, int fd)
{
    if (acc->draining || acc->nfree == 0) {
        close(fd);
        counter_add(&acc->counters.rejected, 1);
        log_limited(&acc->reject_log, LOG_WARN, "connection refused reason=%s",
                    acc->draining ? "shutting_down" : "max_connections");
        return;
    }
    uint32_t slot = acc->free_slots[--acc->nfree];
    uint64_t id = (uint64_t)acc->generation[slot] << 32 | slot;
    struct conn *c = conn_create(acc, fd, id);
    if (c == NULL) {
        acc->free_slots[acc->nfree++] = slot;
        log_error("connection dropped reason=out_of_memory");
        return;
    }
    acc->conns[slot] = c;
    counter_set(&acc->counters.open, open_conns(acc));
    counter_add(&acc->counters.accepted, 1);
}

void acceptor_remove_conn(struct acceptor *acc, struct conn *c)
{
    uint32_t slot = (uint32_t)c->id;
    acc->conns[slot] = NULL;
    acc->generation[slot]++;
    acc->free_slots[acc->nfree++] = slot;
    counter_set(&acc->counters.open, open_conns(acc));
}

void acceptor_mark_dirty(struct acceptor *acc, struct conn *c)
{
    if (c->dirty)
        return;
    c->dirty = true;
    c->next_dirty = acc->dirty;
    acc->dirty = c;
}

/* --- requests in, answers out --- */

void acceptor_dispatch(struct acceptor *acc, struct conn *c, const uint8_t *args, size_t args_len,
                       const ProtobufCBinaryData *service, const ProtobufCBinaryData *method)
{
    ASSERT_THREAD_OF(ROLE_ACCEPTOR, acc);
    struct pr_request *req = acceptor_request_new(acc);
    if (req == NULL) {
        /* Without a request object there is no way to answer in order: give up on this client. */
        conn_break(c);
        return;
    }
    req->conn_id = c->id;
    req->seq = window_reserve(&c->window);
    int m = codec_lookup(service, method, req);
    if (m < 0)
        goto answer_here;
    req->method = (uint8_t)m;
    req->started_ns = acceptor_now_ns(acc); /* latency is kept per known method */
    TRACE_HOOK(trace_read(req));
    if (codec_decode_request(req, args, args_len, acc->conf->max_message_bytes, acc->conf->dialect) < 0)
        goto answer_here;
    if (req->method == PR_METHOD_STATS) {
        if (acc->stats != NULL)
            acc->stats(acc->stats_source, req);
        else
            request_set_result(req, MPIM__CODE__INTERNAL, "no stats source");
        goto answer_here;
    }
    if (req->method == PR_METHOD_BATCH_QUERY || req->method == PR_METHOD_BATCH_DELIVER) {
        scatter_call(acc, c, req); /* split by shard, gathered back into one answer */
        return;
    }

    bool gateway_call = request_names_gateway(req->method);
    uint32_t i = gateway_call ? hash_bytes_shard(req->gateway.data, req->gateway.len, (uint32_t)acc->nshards)
                              : hash_shard(req->user_id, (uint32_t)acc->nshards);
    TRACE_HOOK(trace_stamp(req, TRACE_PUSHED));
    /* The in-flight bound is what guarantees the shard's outbox never fills. */
    if (counter_get(&acc->inflight[i]) >= (uint64_t)acc->conf->queue_depth ||
        !shard_submit(&acc->shards[i], req)) {
        request_set_result(req, MPIM__CODE__OVERLOADED, "shard %u queue full, retry later", i);
        goto answer_here;
    }
    counter_add(&acc->inflight[i], 1);
    acc->wake[i] = true;
    return;

answer_here:
    acceptor_answer_here(acc, c, req, m < 0 ? PR_METHOD_COUNT : m);
}

void acceptor_answer_here(struct acceptor *acc, struct conn *c, struct pr_request *req, int row)
{
    if ((req->method == PR_METHOD_DELIVER || req->method == PR_METHOD_BATCH_DELIVER) && req->args != NULL)
        req->timestamp = clock_now_ms();
    counter_add(&acc->counters.answered_here[row][req->code], 1);
    conn_answer(c, req);
}

static void on_answered(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct acceptor *acc = w->data;
    int i = (int)(w - acc->answered);
    struct pr_request *req;
    TRACE_HOOK(trace_notified(i));
    while ((req = shard_take_answer(&acc->shards[i])) != NULL) {
        TRACE_HOOK(trace_taken(req));
        counter_set(&acc->inflight[i], counter_get(&acc->inflight[i]) - 1);
        if (req->batch != NULL) {
            scatter_part_back(acc, req, true); /* a part of a batch call: into its call */
            continue;
        }
        struct conn *c = conn_by_id(acc, req->conn_id);
        if (c != NULL)
            conn_answer(c, req);
        else
            acceptor_request_free(acc, req); /* its client has gone */
    }
}

/* Once per loop turn, before sleeping (Redis's beforeSleep): write each connection's answers in
 * one send, resume paused readers, then wake each shard that got work — once, not per request. */
static void on_before_sleep(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    struct acceptor *acc = w->data;
    while (acc->dirty != NULL) {
        struct conn *c = acc->dirty;
        acc->dirty = c->next_dirty;
        c->dirty = false;
        if (c->state == CONN_CLOSED)
            free(c); /* closed while on this list */
        else
            conn_flush(c);
    }
    for (int i = 0; i < acc->nshards; i++) {
        if (acc->wake[i]) {
            acc->wake[i] = false;
            TRACE_HOOK(trace_wake_sent(i));
            shard_wake(&acc->shards[i]);
        }
    }
    acc->now_ns = 0; /* the next turn reads the clock afresh */
    if (acc->draining && open_conns(acc) == 0 && inflight_total(acc) == 0)
        ev_break(loop, EVBREAK_ALL);
}

/* --- shutdown --- */

static void on_drain_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct acceptor *acc = w->data;
    log_warn("shutdown deadline passed, exiting unanswered=%llu",
             (unsigned long long)inflight_total(acc));
    ev_break(loop, EVBREAK_ALL);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    struct acceptor *acc = w->data;
    if (acc->draining)
        return;
    if (acc->before_drain != NULL) /* still accepting meanwhile: the kernel queues new connections */
        acc->before_drain(acc->before_drain_arg);
    log_info("shutdown: stop accepting, answer what is in flight signal=%d inflight=%llu", w->signum,
             (unsigned long long)inflight_total(acc));
    acc->draining = true;
    counter_set(&acc->counters.draining, 1);
    listener_close(&acc->listener, loop);
    for (uint32_t s = 0; s < (uint32_t)acc->conf->max_connections; s++)
        if (acc->conns[s] != NULL)
            conn_drain(acc->conns[s]);
    /* Long enough for the slowest answer: a Deliver with every retry. */
    const struct presence_conf *c = acc->conf;
    int timeout = c->cache.timeout_ms > c->queue.timeout_ms ? c->cache.timeout_ms : c->queue.timeout_ms;
    double bound = (c->max_retries + 2) * (timeout + c->retry_interval_ms) / 1000.0 + 1.0;
    ev_timer_set(&acc->drain_deadline, bound, 0.);
    ev_timer_start(loop, &acc->drain_deadline);
}

/* Once a second: close connections with nothing outstanding that sent nothing for idle_timeout. */
static void on_idle_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct acceptor *acc = w->data;
    ev_tstamp limit = ev_now(loop) - acc->conf->idle_timeout;
    for (uint32_t s = 0; s < (uint32_t)acc->conf->max_connections; s++) {
        struct conn *c = acc->conns[s];
        if (c != NULL && c->last_active < limit && conn_idle(c)) {
            counter_add(&acc->counters.idle_closed, 1);
            conn_close(c, "idle timeout");
        }
    }
}

static void on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct acceptor *acc = w->data;
    if (acc->conf->log_file[0] == '\0')
        return;
    if (log_open(acc->conf->log_file) < 0)
        log_error("SIGHUP: log file reopen failed path=%s", acc->conf->log_file);
    else
        log_info("SIGHUP: log file reopened path=%s", acc->conf->log_file);
}

/* --- life cycle (main thread) --- */

int acceptor_init(struct acceptor *acc, const struct presence_conf *conf, struct ev_loop *loop,
                  struct shard *shards, int nshards)
{
    memset(acc, 0, sizeof(*acc));
    acc->conf = conf;
    acc->loop = loop;
    acc->shards = shards;
    acc->nshards = nshards;
    acc->listener.fd = -1;
    size_t maxc = (size_t)conf->max_connections;
    acc->conns = calloc(maxc, sizeof(*acc->conns));
    acc->generation = calloc(maxc, sizeof(*acc->generation));
    acc->free_slots = calloc(maxc, sizeof(*acc->free_slots));
    acc->answered = calloc((size_t)nshards, sizeof(*acc->answered));
    acc->inflight = calloc((size_t)nshards, sizeof(*acc->inflight));
    acc->wake = calloc((size_t)nshards, sizeof(*acc->wake));
    if (!acc->conns || !acc->generation || !acc->free_slots || !acc->answered || !acc->inflight || !acc->wake)
        return -1;
    /* Hand out low slots first. */
    for (size_t i = 0; i < maxc; i++)
        acc->free_slots[i] = (uint32_t)(maxc - 1 - i);
    acc->nfree = (uint32_t)maxc;

    if (listener_open(&acc->listener, acc, conf->host, conf->port) < 0)
        return -1;
    for (int i = 0; i < nshards; i++) {
        ev_async_init(&acc->answered[i], on_answered);
        acc->answered[i].data = acc;
        ev_async_start(loop, &acc->answered[i]);
    }
    ev_prepare_init(&acc->before_sleep, on_before_sleep);
    acc->before_sleep.data = acc;
    ev_prepare_start(loop, &acc->before_sleep);
    ev_signal_init(&acc->sigterm, on_signal, SIGTERM);
    acc->sigterm.data = acc;
    ev_signal_start(loop, &acc->sigterm);
    ev_signal_init(&acc->sigint, on_signal, SIGINT);
    acc->sigint.data = acc;
    ev_signal_start(loop, &acc->sigint);
    ev_signal_init(&acc->sighup, on_sighup, SIGHUP);
    acc->sighup.data = acc;
    ev_signal_start(loop, &acc->sighup);
    ev_timer_init(&acc->drain_deadline, on_drain_deadline, 0., 0.);
    acc->drain_deadline.data = acc;
    if (conf->idle_timeout > 0) {
        ev_timer_init(&acc->idle_sweep, on_idle_sweep, 1., 1.);
        acc->idle_sweep.data = acc;
        ev_timer_start(loop, &acc->idle_sweep);
    }
    return 0;
}

int acceptor_run(struct acceptor *acc)
{
    if (listener_start(&acc->listener, acc->loop) < 0)
        return -1;
    const struct presence_conf *c = acc->conf;
    log_info("listening on addr=%s:%d shards=%d cache=%s:%d/%d queue=%s:%d/%d", c->host, c->port, c->shards,
             c->cache.host, c->cache.port, c->cache.database, c->queue.host, c->queue.port, c->queue.database);
    log_set_thread("acceptor");
    thread_role_set(ROLE_ACCEPTOR, acc); /* and stays so for acceptor_destroy, on this thread */
    ev_run(acc->loop, 0);
    return 0;
}

void acceptor_destroy(struct acceptor *acc)
{
    TRACE_HOOK(trace_dump());
    if (acc->shards != NULL && acc->answered != NULL) {
        for (int i = 0; i < acc->nshards; i++) {
            struct pr_request *req;
            while ((req = shard_take_answer(&acc->shards[i])) != NULL) {
                if (req->batch != NULL)
                    scatter_part_back(acc, req, false); /* frees its call once the last is back */
                else
                    acceptor_request_free(acc, req);
            }
        }
    }
    if (acc->conns != NULL) {
        for (uint32_t s = 0; s < (uint32_t)acc->conf->max_connections; s++)
            if (acc->conns[s] != NULL)
                conn_close(acc->conns[s], "server exit");
    }
    while (acc->dirty != NULL) {
        struct conn *c = acc->dirty;
        acc->dirty = c->next_dirty;
        if (c->state == CONN_CLOSED)
            free(c);
        else
            c->dirty = false;
    }
    listener_close(&acc->listener, acc->loop);
    while (acc->free_requests != NULL) {
        struct pr_request *req = acc->free_requests;
        acc->free_requests = req->next;
        free(req);
    }
    free(acc->conns);
    free(acc->generation);
    free(acc->free_slots);
    free(acc->answered);
    free(acc->inflight);
    free(acc->wake);
}
