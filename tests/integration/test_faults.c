/* Contract §3, Redis failures: unreachable, hung or slow Redis gives UNAVAILABLE (never
 * INTERNAL, never a hang) within the section's timeout; Deliver retries only what certainly did
 * not run, within (max_retries + 1) x (timeout + retry_interval); the service reconnects by
 * itself; cache and queue fail independently. Only upper bounds, with generous slack. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define TIMEOUT_MS 500
#define MAX_RETRIES 2
#define RETRY_MS 100
/* Scheduling, sanitizers, a loaded CI machine: what an answer may take beyond the contract. */
#define SLACK_MS (1500.0 * IT_SLOW)
#define QUERY_BOUND_MS (TIMEOUT_MS + SLACK_MS)
#define DELIVER_BOUND_MS ((MAX_RETRIES + 1) * (TIMEOUT_MS + RETRY_MS) + SLACK_MS)

static void fault_config(void)
{
    it_config_set(&FX.cfg, "redis_cache", "timeout", "%d", TIMEOUT_MS);
    it_config_set(&FX.cfg, "redis_queue", "timeout", "%d", TIMEOUT_MS);
    it_config_set(&FX.cfg, "route", "max_retries", "%d", MAX_RETRIES);
    it_config_set(&FX.cfg, "route", "retry_interval", "%d", RETRY_MS);
}

static void faults_init(void)
{
    fx_init_redis();
    fault_config();
    fx_start_server();
}

static void split_init(void)
{
    fx_init_split();
    fault_config();
}

TestSuite(faults, .init = faults_init, .fini = fx_fini, .timeout = IT_TIMEOUT);
TestSuite(faults_split, .init = split_init, .fini = fx_fini, .timeout = IT_TIMEOUT);

/* Each call's answer code, and how long it took. */
struct timed {
    int code;
    char msg[128];
    double ms;
};

static struct timed timed_call(struct pc_client *c, int method, int64_t uid, const char *gw)
{
    struct timed t;
    double t0 = it_mono_ms();
    switch (method) {
    case PR_METHOD_BIND: {
        Mpim__BindRouteResp *r = it_bind(c, uid, gw);
        t.code = r->result->code;
        snprintf(t.msg, sizeof(t.msg), "%s", r->result->msg);
        it_free(r);
        break;
    }
    case PR_METHOD_QUERY: {
        Mpim__QueryRouteResp *r = it_query(c, uid);
        t.code = r->result->code;
        snprintf(t.msg, sizeof(t.msg), "%s", r->result->msg);
        it_free(r);
        break;
    }
    case PR_METHOD_DELIVER: {
        Mpim__DeliverResp *r = it_deliver(c, uid, "payload", 7, "chat");
        t.code = r->result->code;
        snprintf(t.msg, sizeof(t.msg), "%s", r->result->msg);
        it_free(r);
        break;
    }
    case PR_METHOD_UNBIND: {
        Mpim__UnbindRouteResp *r = it_unbind(c, uid, gw);
        t.code = r->result->code;
        snprintf(t.msg, sizeof(t.msg), "%s", r->result->msg);
        it_free(r);
        break;
    }
    default: {
        Mpim__HeartbeatResp *r = it_heartbeat(c, uid, gw);
        t.code = r->result->code;
        snprintf(t.msg, sizeof(t.msg), "%s", r->result->msg);
        it_free(r);
        break;
    }
    }
    t.ms = it_mono_ms() - t0;
    return t;
}

/* method must answer UNAVAILABLE within bound_ms. */
static void expect_unavailable(struct pc_client *c, int method, int64_t uid, const char *gw, double bound_ms,
                               const char *when)
{
    struct timed t = timed_call(c, method, uid, gw);
    cr_assert_eq(t.code, MPIM__CODE__UNAVAILABLE, "%s with %s: got %s '%s', want UNAVAILABLE",
                 request_method_name(method), when, pc_code_name(t.code), t.msg);
    cr_assert_lt(t.ms, bound_ms, "%s with %s took %.0f ms (bound %.0f ms)", request_method_name(method), when,
                 t.ms, bound_ms);
}

static void bind_ok(struct pc_client *c, int64_t uid, const char *gw)
{
    struct timed t = timed_call(c, PR_METHOD_BIND, uid, gw);
    cr_assert_eq(t.code, MPIM__CODE__OK, "bind: %s '%s'", pc_code_name(t.code), t.msg);
}

/* Query uid until it answers want_code (Redis is back) or timeout_ms passes. */
static void wait_served(struct pc_client *c, int64_t uid, int want_code, double timeout_ms)
{
    double deadline = it_mono_ms() + timeout_ms;
    int last = -1;
    while (it_mono_ms() < deadline) {
        struct timed t = timed_call(c, PR_METHOD_QUERY, uid, NULL);
        last = t.code;
        if (t.code == want_code)
            return;
        cr_assert_eq(t.code, MPIM__CODE__UNAVAILABLE, "while recovering: got %s '%s'", pc_code_name(t.code),
                     t.msg);
        it_sleep_ms(50);
    }
    cr_assert_fail("not served again within %.0f ms of Redis coming back (last answer %s)", timeout_ms,
                   pc_code_name(last));
}

/* ------------------------------------------------------------ one Redis */

IT(faults, redis_killed_every_method_is_unavailable_within_timeout)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 1, "gw-1:1");
    it_redis_kill(&FX.cache);
    expect_unavailable(c, PR_METHOD_QUERY, 1, NULL, QUERY_BOUND_MS, "Redis killed");
    expect_unavailable(c, PR_METHOD_BIND, 2, "gw-2:1", QUERY_BOUND_MS, "Redis killed");
    expect_unavailable(c, PR_METHOD_HEARTBEAT, 1, "gw-1:1", QUERY_BOUND_MS, "Redis killed");
    expect_unavailable(c, PR_METHOD_UNBIND, 1, "gw-1:1", QUERY_BOUND_MS, "Redis killed");
    expect_unavailable(c, PR_METHOD_DELIVER, 1, NULL, DELIVER_BOUND_MS, "Redis killed");
    pc_close(c);
}

IT(faults, redis_restarted_on_same_port_is_served_again_without_restarting_server)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 1, "gw-1:1");
    it_redis_kill(&FX.cache);
    expect_unavailable(c, PR_METHOD_QUERY, 1, NULL, QUERY_BOUND_MS, "Redis killed");
    it_redis_restart(&FX.cache);
    /* The restarted Redis is empty: a Query answers NOT_FOUND once the server reconnected. */
    wait_served(c, 1, MPIM__CODE__NOT_FOUND, 5000.0 * IT_SLOW);
    bind_ok(c, 1, "gw-1:2");
    struct timed t = timed_call(c, PR_METHOD_QUERY, 1, NULL);
    cr_assert_eq(t.code, MPIM__CODE__OK);
    /* The queue side reconnected too: a Deliver reaches a subscriber. */
    const char *ch[] = {"user:1", NULL};
    struct it_sub *s = it_sub_open(FX.cache.port, ch);
    double deadline = it_mono_ms() + 5000.0 * IT_SLOW;
    Mpim__DeliverResp *d = NULL;
    for (;;) {
        d = it_deliver(c, 1, "back", 4, NULL);
        if (d->result->code == MPIM__CODE__OK || it_mono_ms() > deadline)
            break;
        it_free(d);
        it_sleep_ms(50);
    }
    cr_assert_eq(d->result->code, MPIM__CODE__OK, "deliver after restart: %s '%s'",
                 pc_code_name(d->result->code), d->result->msg);
    cr_assert(d->delivered);
    it_free(d);
    it_sub_expect(s, "user:1", "back", 4);
    it_sub_close(s);
    pc_close(c);
}

IT(faults, redis_paused_is_unavailable_at_timeout_then_served_after_resume)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 1, "gw-1:1");
    it_redis_pause(&FX.cache);
    expect_unavailable(c, PR_METHOD_QUERY, 1, NULL, QUERY_BOUND_MS, "Redis hung");
    expect_unavailable(c, PR_METHOD_BIND, 2, "gw-2:1", QUERY_BOUND_MS, "Redis hung");
    expect_unavailable(c, PR_METHOD_DELIVER, 1, NULL, DELIVER_BOUND_MS, "Redis hung");
    it_redis_resume(&FX.cache);
    wait_served(c, 1, MPIM__CODE__OK, 5000.0 * IT_SLOW);
    pc_close(c);
}

IT(faults, pipeline_during_outage_is_answered_in_full_and_in_order)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 1, "gw-1:1");
    it_redis_kill(&FX.cache);
    enum { N = 200 };
    for (int i = 0; i < N; i++) {
        Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
        q.user_id = i % 10 == 9 ? 0 : 1 + i; /* every tenth is invalid: answered without Redis */
        cr_assert_eq(pc_send(c, PR_METHOD_QUERY, &q.base), 0);
    }
    double t0 = it_mono_ms();
    cr_assert_eq(pc_flush(c), 0);
    for (int i = 0; i < N; i++) {
        Mpim__QueryRouteResp *q = (Mpim__QueryRouteResp *)it_recv(c, PR_METHOD_QUERY);
        int want = i % 10 == 9 ? MPIM__CODE__INVALID : MPIM__CODE__UNAVAILABLE;
        cr_assert_eq((int)q->result->code, want, "answer %d: got %s, want %s", i, pc_code_name(q->result->code),
                     pc_code_name(want));
        it_free(q);
    }
    double ms = it_mono_ms() - t0;
    cr_assert_lt(ms, QUERY_BOUND_MS + 2000.0 * IT_SLOW, "200 queries during an outage took %.0f ms", ms);
    pc_close(c);
}

/* ---------------------------------------------------- separate cache and queue */

IT(faults_split, queue_down_bind_still_writes_route_and_says_notice_not_published)
{
    fx_start_server();
    struct pc_client *c = it_connect();
    it_redis_kill(&FX.queue);
    struct timed t = timed_call(c, PR_METHOD_BIND, 1, "gw-1:7000");
    cr_assert_eq(t.code, MPIM__CODE__OK, "bind with the queue down: %s '%s'", pc_code_name(t.code), t.msg);
    cr_assert_str_neq(t.msg, "", "an OK bind whose notice was not published must say so in msg");
    cr_assert_lt(t.ms, DELIVER_BOUND_MS, "bind took %.0f ms", t.ms);
    char *v = it_rget(FX.cache.port, 0, "user:route:1", NULL);
    cr_assert_not_null(v, "the route was not written");
    cr_assert_str_eq(v, "gw-1:7000");
    free(v);
    v = it_rget(FX.cache.port, 0, "user:status:1", NULL);
    cr_assert_not_null(v, "the status was not written");
    cr_assert_str_eq(v, "online");
    free(v);
    pc_close(c);
}

IT(faults_split, queue_down_query_unbind_heartbeat_still_work)
{
    fx_start_server();
    struct pc_client *c = it_connect();
    bind_ok(c, 1, "gw-1:7000");
    bind_ok(c, 2, "gw-2:7000");
    it_redis_kill(&FX.queue);

    Mpim__QueryRouteResp *q = it_query(c, 1);
    cr_assert_eq(q->result->code, MPIM__CODE__OK, "query with the queue down: %s '%s'",
                 pc_code_name(q->result->code), q->result->msg);
    cr_assert(it_bytes_eq(q->gateway_addr, "gw-1:7000"));
    it_free(q);

    it_rcmd(FX.cache.port, 0, "EXPIRE user:route:1 10");
    Mpim__HeartbeatResp *h = it_heartbeat(c, 1, "gw-1:7000");
    cr_assert_eq(h->result->code, MPIM__CODE__OK, "heartbeat with the queue down: %s '%s'",
                 pc_code_name(h->result->code), h->result->msg);
    cr_assert(h->refreshed);
    it_free(h);
    cr_assert_gt(it_rttl(FX.cache.port, 0, "user:route:1"), 10, "heartbeat did not renew");

    Mpim__UnbindRouteResp *u = it_unbind(c, 2, "gw-2:7000");
    cr_assert_eq(u->result->code, MPIM__CODE__OK, "unbind with the queue down: %s '%s'",
                 pc_code_name(u->result->code), u->result->msg);
    cr_assert(u->unbound);
    it_free(u);
    cr_assert_not(it_rexists(FX.cache.port, 0, "user:route:2"));
    cr_assert_not(it_rexists(FX.cache.port, 0, "user:status:2"));

    /* A Deliver to nobody needs no publish: still NOT_FOUND. */
    struct timed t = timed_call(c, PR_METHOD_DELIVER, 3, NULL);
    cr_assert_eq(t.code, MPIM__CODE__NOT_FOUND, "got %s", pc_code_name(t.code));
    pc_close(c);
}

IT(faults_split, queue_down_deliver_is_unavailable_after_retries_within_bound)
{
    fx_start_server();
    struct pc_client *c = it_connect();
    bind_ok(c, 1, "gw-1:7000");
    it_redis_kill(&FX.queue);
    expect_unavailable(c, PR_METHOD_DELIVER, 1, NULL, DELIVER_BOUND_MS, "the queue down");
    pc_close(c);
}

IT(faults_split, cache_down_deliver_and_bind_are_unavailable_and_publish_nothing)
{
    fx_start_server();
    struct pc_client *c = it_connect();
    bind_ok(c, 1, "gw-1:7000");
    const char *ch[] = {"presence:route", "user:1", "user:2", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    it_redis_kill(&FX.cache);
    expect_unavailable(c, PR_METHOD_DELIVER, 1, NULL, DELIVER_BOUND_MS, "the cache down");
    expect_unavailable(c, PR_METHOD_BIND, 2, "gw-2:7000", DELIVER_BOUND_MS, "the cache down");
    expect_unavailable(c, PR_METHOD_QUERY, 1, NULL, QUERY_BOUND_MS, "the cache down");
    expect_unavailable(c, PR_METHOD_UNBIND, 1, "gw-1:7000", QUERY_BOUND_MS, "the cache down");
    expect_unavailable(c, PR_METHOD_HEARTBEAT, 1, "gw-1:7000", QUERY_BOUND_MS, "the cache down");
    it_sub_expect_nothing(s, "presence:route");
    it_sub_close(s);
    pc_close(c);
}

IT(faults_split, cache_hung_bind_is_unavailable_and_publishes_nothing)
{
    /* The SETEX went out and was never answered: still no notice for a route not written. */
    fx_start_server();
    struct pc_client *c = it_connect();
    const char *ch[] = {"presence:route", "user:1", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    it_redis_pause(&FX.cache);
    expect_unavailable(c, PR_METHOD_BIND, 1, "gw-1:7000", QUERY_BOUND_MS, "the cache hung");
    expect_unavailable(c, PR_METHOD_DELIVER, 1, NULL, DELIVER_BOUND_MS, "the cache hung");
    it_sub_expect_nothing(s, "presence:route");
    it_redis_resume(&FX.cache);
    it_sub_close(s);
    pc_close(c);
}

IT(faults_split, queue_hung_bind_still_writes_route_and_says_notice_not_published)
{
    /* The PUBLISH went out and was never answered: the bind itself still succeeded. */
    fx_start_server();
    struct pc_client *c = it_connect();
    it_redis_pause(&FX.queue);
    struct timed t = timed_call(c, PR_METHOD_BIND, 1, "gw-1:7000");
    it_redis_resume(&FX.queue);
    cr_assert_eq(t.code, MPIM__CODE__OK, "bind with the queue hung: %s '%s'", pc_code_name(t.code), t.msg);
    cr_assert_str_neq(t.msg, "", "an OK bind whose notice was not published must say so in msg");
    cr_assert_lt(t.ms, QUERY_BOUND_MS, "bind took %.0f ms", t.ms);
    char *v = it_rget(FX.cache.port, 0, "user:route:1", NULL);
    cr_assert_not_null(v, "the route was not written");
    cr_assert_str_eq(v, "gw-1:7000");
    free(v);
    pc_close(c);
}

IT(faults_split, cache_restarted_is_served_again)
{
    fx_start_server();
    struct pc_client *c = it_connect();
    it_redis_kill(&FX.cache);
    expect_unavailable(c, PR_METHOD_QUERY, 1, NULL, QUERY_BOUND_MS, "the cache down");
    it_redis_restart(&FX.cache);
    wait_served(c, 1, MPIM__CODE__NOT_FOUND, 5000.0 * IT_SLOW);
    bind_ok(c, 1, "gw-1:7000");
    pc_close(c);
}

IT(faults_split, deliver_timed_out_publish_is_never_published_twice)
{
    fx_start_server();
    struct pc_client *c = it_connect();
    bind_ok(c, 1, "gw-1:7000");
    const char *ch[] = {"user:1", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    /* The queue hangs: the PUBLISH is sent and never answered, so it must not be retried. */
    it_redis_pause(&FX.queue);
    expect_unavailable(c, PR_METHOD_DELIVER, 1, NULL, DELIVER_BOUND_MS, "the queue hung");
    /* The answer ends the request: a server that retried would have done it before answering,
     * and would have counted it. */
    it_wait_metric(&FX.srv, "impresence_deliver_retries_total", 0, 1000 * IT_SLOW);
    it_redis_resume(&FX.queue);
    /* Whatever reached Redis runs before the sentinel, sent later on a new connection; count the
     * copies before it. */
    it_rcmd(FX.queue.port, 0, "PUBLISH user:1 it-end");
    int copies = 0;
    for (;;) {
        struct it_msg m;
        cr_assert_eq(it_sub_next(s, &m, 3000 * IT_SLOW), 1, "the end marker never arrived");
        bool end = strcmp(m.data, "it-end") == 0;
        if (!end) {
            cr_assert_str_eq(m.data, "payload", "unexpected publish '%s'", m.data);
            copies++;
        }
        free(m.data);
        if (end)
            break;
    }
    cr_assert_leq(copies, 1, "a timed-out publish was retried: the message was published %d times", copies);
    it_sub_close(s);
    pc_close(c);
}

IT(faults_split, deliver_retries_until_queue_comes_back)
{
    /* Publishes that certainly did not run (no connection) are retried, retry_interval apart. */
    it_config_set(&FX.cfg, "route", "max_retries", "10");
    it_config_set(&FX.cfg, "route", "retry_interval", "%d", 300 * IT_SLOW);
    fx_start_server();
    struct pc_client *c = it_connect();
    bind_ok(c, 1, "gw-1:7000");
    it_redis_kill(&FX.queue);
    Mpim__DeliverReq d = MPIM__DELIVER_REQ__INIT;
    d.user_id = 1;
    d.message = it_bytes("late");
    cr_assert_eq(pc_send(c, PR_METHOD_DELIVER, &d.base), 0);
    cr_assert_eq(pc_flush(c), 0);
    it_wait_metric(&FX.srv, "impresence_deliver_retries_total", 1, 10000 * IT_SLOW); /* retrying */
    it_redis_restart(&FX.queue);
    Mpim__DeliverResp *r = (Mpim__DeliverResp *)it_recv(c, PR_METHOD_DELIVER);
    cr_assert_eq(r->result->code, MPIM__CODE__OK,
                 "a Deliver whose queue came back during its retries got %s '%s'",
                 pc_code_name(r->result->code), r->result->msg);
    it_free(r);
    pc_close(c);
}

IT(faults_split, queue_database_does_not_affect_pubsub)
{
    /* Pub/Sub ignores database numbers: a subscriber on db 0 sees the queue's (db 1) publishes. */
    it_config_set(&FX.cfg, "redis_queue", "database", "5");
    it_config_set(&FX.cfg, "redis_cache", "database", "3");
    fx_start_server();
    const char *ch[] = {"presence:route", "user:1", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    struct pc_client *c = it_connect();
    bind_ok(c, 1, "gw-1:7000");
    it_sub_expect(s, "presence:route", "1:gw-1:7000", strlen("1:gw-1:7000"));
    char *v = it_rget(FX.cache.port, 3, "user:route:1", NULL);
    cr_assert_not_null(v, "the route is not in the cache's configured database 3");
    free(v);
    cr_assert_eq(it_rdbsize(FX.cache.port, 0), 0, "routes written outside database 3");
    struct timed t = timed_call(c, PR_METHOD_DELIVER, 1, NULL);
    cr_assert_eq(t.code, MPIM__CODE__OK);
    it_sub_expect(s, "user:1", "payload", 7);
    it_sub_close(s);
    pc_close(c);
}
