/* Contract §8: gateway leases and drains against the real server binary, a real Redis (keys and
 * scores read back directly) and real SUBSCRIBE clients on presence:route and presence:kick.
 *
 * GatewayHeartbeat sets the lease's end, shorter or longer; bad input is INVALID and writes
 * nothing. DrainGateway ends exactly that gateway's sessions, each as its UnbindRoute would (route
 * fallback, logout, the notices; no kick), removes nothing the second time, and answers 0 for a
 * gateway it does not know. A lapsed lease is drained automatically by exactly one of two
 * instances sharing the Redis, within 2 s of its end; a gateway that never leased is not. A drain
 * of 100,000 sessions leaves another connection's queries answered meanwhile (the worst latency is
 * printed). A lease drain cut short by SIGTERM is finished by another instance, every notice
 * published exactly once; with Redis hung both calls answer UNAVAILABLE. On a cluster a drain
 * finds the gateway's users on every master. Every wait is a condition with a deadline. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cluster_slot.h"
#include "core/hash.h"
#include "harness.h"

TestSuite(gateways, .init = fx_init_redis, .fini = fx_fini, .timeout = IT_TIMEOUT);

static int R(void)
{
    return FX.cache.port;
}

/* ------------------------------------------------------------------ calls */

static Mpim__GatewayHeartbeatResp *lease(struct pc_client *c, const char *gw, int32_t ms)
{
    Mpim__GatewayHeartbeatReq q = MPIM__GATEWAY_HEARTBEAT_REQ__INIT;
    q.gateway_addr = it_bytes(gw);
    q.lease_ms = ms;
    Mpim__GatewayHeartbeatResp *r = it_call(c, PR_METHOD_GATEWAY_HEARTBEAT, &q.base);
    cr_assert_not_null(r->result);
    return r;
}

/* A lease that must be granted: its end. */
static int64_t lease_ok(struct pc_client *c, const char *gw, int32_t ms)
{
    Mpim__GatewayHeartbeatResp *r = lease(c, gw, ms);
    cr_assert_eq(r->result->code, MPIM__CODE__OK, "lease %s %d: %s %s", gw, ms, pc_code_name(r->result->code),
                 r->result->msg);
    int64_t end = r->expires_ms;
    it_free(r);
    return end;
}

static Mpim__DrainGatewayResp *drain(struct pc_client *c, const char *gw)
{
    Mpim__DrainGatewayReq q = MPIM__DRAIN_GATEWAY_REQ__INIT;
    q.gateway_addr = it_bytes(gw);
    Mpim__DrainGatewayResp *r = it_call(c, PR_METHOD_DRAIN_GATEWAY, &q.base);
    cr_assert_not_null(r->result);
    return r;
}

/* A drain that must succeed: how many sessions it removed. */
static int64_t drain_ok(struct pc_client *c, const char *gw)
{
    Mpim__DrainGatewayResp *r = drain(c, gw);
    cr_assert_eq(r->result->code, MPIM__CODE__OK, "drain %s: %s %s", gw, pc_code_name(r->result->code),
                 r->result->msg);
    int64_t n = r->sessions_removed;
    it_free(r);
    return n;
}

static int64_t bind_dev(struct pc_client *c, int64_t uid, const char *gw, const char *dev)
{
    Mpim__BindRouteReq q = MPIM__BIND_ROUTE_REQ__INIT;
    q.user_id = uid;
    q.gateway_addr = it_bytes(gw);
    q.device_id = (ProtobufCBinaryData){strlen(dev), (uint8_t *)dev};
    Mpim__BindRouteResp *r = it_call(c, PR_METHOD_BIND, &q.base);
    cr_assert_eq(r->result->code, MPIM__CODE__OK, "bind %lld %s '%s': %s %s", (long long)uid, gw, dev,
                 pc_code_name(r->result->code), r->result->msg);
    int64_t epoch = r->epoch;
    it_free(r);
    return epoch;
}

/* Bind users first..first+n-1 (device "") to gw, pipelined in rounds of at most 1000 (under
 * max_inflight, so the server never stops reading while we are not). */
static void bind_many(struct pc_client *c, int64_t first, int n, const char *gw)
{
    for (int done = 0; done < n;) {
        int round = n - done < 1000 ? n - done : 1000;
        for (int i = 0; i < round; i++) {
            Mpim__BindRouteReq q = MPIM__BIND_ROUTE_REQ__INIT;
            q.user_id = first + done + i;
            q.gateway_addr = it_bytes(gw);
            cr_assert_eq(pc_send(c, PR_METHOD_BIND, &q.base), 0, "%s", pc_error(c));
        }
        cr_assert_eq(pc_flush(c), 0, "%s", pc_error(c));
        for (int i = 0; i < round; i++) {
            Mpim__BindRouteResp *b = (Mpim__BindRouteResp *)it_recv(c, PR_METHOD_BIND);
            cr_assert_eq(b->result->code, MPIM__CODE__OK, "bind %lld: %s %s", (long long)(first + done + i),
                         pc_code_name(b->result->code), b->result->msg);
            it_free(b);
        }
        done += round;
    }
}

/* QueryRoute answers gateway gw (NULL: offline, NOT_FOUND) with n sessions. */
static void expect_route(struct pc_client *c, int64_t uid, const char *gw, size_t n)
{
    Mpim__QueryRouteResp *q = it_query(c, uid);
    if (gw == NULL) {
        cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND, "user %lld: %s, want NOT_FOUND", (long long)uid,
                     pc_code_name(q->result->code));
        cr_assert_not(q->is_online);
    } else {
        cr_assert_eq(q->result->code, MPIM__CODE__OK, "user %lld: %s %s", (long long)uid,
                     pc_code_name(q->result->code), q->result->msg);
        cr_assert(it_bytes_eq(q->gateway_addr, gw), "user %lld: gateway '%.*s', want '%s'", (long long)uid,
                  (int)q->gateway_addr.len, q->gateway_addr.data, gw);
    }
    cr_assert_eq(q->n_sessions, n, "user %lld: %zu sessions, want %zu", (long long)uid, q->n_sessions, n);
    it_free(q);
}

/* The lease end Redis holds for gw (ms), or -1 if it holds none. */
static long long lease_score(int port, const char *gw)
{
    redisContext *rc = it_rconnect(port, 0);
    redisReply *r = redisCommand(rc, "ZSCORE {gateway-leases}:expiry %s", gw);
    cr_assert_not_null(r);
    long long v = r->type == REDIS_REPLY_STRING ? atoll(r->str) : -1;
    freeReplyObject(r);
    redisFree(rc);
    return v;
}

/* The sum of one series over the servers' /metrics (0 if a server does not show it yet). */
static double series_sum(const struct it_server *const *srv, int n, const char *name)
{
    double sum = 0;
    for (int i = 0; i < n; i++) {
        double v = it_metric_series(srv[i], name);
        sum += v == v ? v : 0;
    }
    return sum;
}

/* The next n notices on presence:route are exactly want[0..n) in any order (SPOP takes the
 * sessions in no particular order); then nothing more is published there or on presence:kick. */
static void expect_notices(struct it_sub *s, const char *const *want, size_t n)
{
    bool seen[16] = {false};
    cr_assert_leq(n, 16);
    for (size_t k = 0; k < n; k++) {
        struct it_msg m;
        cr_assert_eq(it_sub_next(s, &m, 3000 * IT_SLOW), 1, "notice %zu of %zu never came", k + 1, n);
        cr_assert_str_eq(m.channel, "presence:route", "'%s' on %s: a drain kicks nobody", m.data, m.channel);
        size_t i = 0;
        while (i < n && (seen[i] || strcmp(want[i], m.data) != 0))
            i++;
        cr_assert_lt(i, n, "unexpected or repeated notice '%s'", m.data);
        seen[i] = true;
        free(m.data);
    }
    it_sub_expect_nothing(s, "presence:route");
    it_sub_expect_nothing(s, "presence:kick");
}

/* --------------------------------------------------------------- leases */

IT(gateways, heartbeat_sets_the_lease_end_shorter_or_longer)
{
    fx_start_server();
    struct pc_client *c = it_connect();
    int64_t t0 = it_now_ms();
    int64_t end = lease_ok(c, "gw-1:7000", 60000);
    int64_t t1 = it_now_ms();
    /* The Redis clock is this machine's: the end is lease_ms after the call, within its span. */
    cr_assert(end >= t0 + 60000 && end <= t1 + 60000, "expires_ms %lld not 60 s after [%lld, %lld]",
              (long long)end, (long long)t0, (long long)t1);
    cr_assert_eq(lease_score(R(), "gw-1:7000"), end, "the lease set holds the end answered");

    int64_t shorter = lease_ok(c, "gw-1:7000", 1000);
    cr_assert_lt(shorter, end, "a shorter lease ends sooner: %lld then %lld", (long long)end,
                 (long long)shorter);
    cr_assert_eq(lease_score(R(), "gw-1:7000"), shorter);
    int64_t longer = lease_ok(c, "gw-1:7000", 600000);
    cr_assert_gt(longer, shorter + 590000, "%lld then %lld", (long long)shorter, (long long)longer);
    cr_assert_eq(lease_score(R(), "gw-1:7000"), longer);

    /* Another gateway's lease is its own; the limits themselves are accepted. */
    int64_t other = lease_ok(c, "gw 2", 1000);
    cr_assert_eq(lease_score(R(), "gw 2"), other);
    cr_assert_eq(lease_score(R(), "gw-1:7000"), longer);
    cr_assert_eq(it_rdbsize(R(), 0), 1, "one lease set, nothing else");
    pc_close(c);
}

IT(gateways, bad_lease_or_gateway_is_invalid_and_writes_nothing)
{
    fx_start_server();
    struct pc_client *c = it_connect();
    const int32_t bad_ms[] = {0, -1000, 999, 600001};
    for (size_t i = 0; i < sizeof(bad_ms) / sizeof(bad_ms[0]); i++) {
        Mpim__GatewayHeartbeatResp *r = lease(c, "gw-1:7000", bad_ms[i]);
        cr_assert_eq(r->result->code, MPIM__CODE__INVALID, "lease_ms %d: %s", bad_ms[i],
                     pc_code_name(r->result->code));
        cr_assert_not_null(strstr(r->result->msg, "lease_ms"), "msg '%s'", r->result->msg);
        cr_assert_eq(r->expires_ms, 0);
        it_free(r);
    }
    char long_gw[300];
    memset(long_gw, 'g', 256);
    long_gw[256] = '\0';
    const char *bad_gw[] = {"", "gw\t1", "gw\x7f", long_gw};
    for (size_t i = 0; i < sizeof(bad_gw) / sizeof(bad_gw[0]); i++) {
        Mpim__GatewayHeartbeatResp *r = lease(c, bad_gw[i], 5000);
        cr_assert_eq(r->result->code, MPIM__CODE__INVALID, "gateway %zu: %s", i,
                     pc_code_name(r->result->code));
        cr_assert_not_null(strstr(r->result->msg, "gateway_addr"), "msg '%s'", r->result->msg);
        it_free(r);
        Mpim__DrainGatewayResp *d = drain(c, bad_gw[i]);
        cr_assert_eq(d->result->code, MPIM__CODE__INVALID, "drain gateway %zu: %s", i,
                     pc_code_name(d->result->code));
        cr_assert_not_null(strstr(d->result->msg, "gateway_addr"), "msg '%s'", d->result->msg);
        it_free(d);
    }
    cr_assert_eq(it_rdbsize_all(R()), 0, "an INVALID call wrote to Redis");
    pc_close(c);
}

/* ---------------------------------------------------------------- drains */

/* Users of gw-a:1 and gw-b:1. U: phone on gw-b, then "" on gw-a (the route). V: only gw-a.
 * W: "" on gw-a, then phone on gw-b (the route). X: only gw-b. Draining gw-a ends U's, V's and W's
 * gw-a sessions exactly as their Unbinds would: U's route falls back to gw-b ("U:gw-b:1"), V logs
 * out ("V:"), W's route was not gw-a (no notice); X is untouched; nobody is kicked. */
IT(gateways, drain_ends_that_gateways_sessions_as_unbind_would)
{
    enum { U = 11, V = 12, W = 13, X = 14 };
    fx_start_server();
    struct pc_client *c = it_connect();
    bind_dev(c, U, "gw-b:1", "phone");
    bind_dev(c, U, "gw-a:1", "");
    bind_dev(c, V, "gw-a:1", "");
    bind_dev(c, W, "gw-a:1", "");
    bind_dev(c, W, "gw-b:1", "phone");
    bind_dev(c, X, "gw-b:1", "");
    lease_ok(c, "gw-a:1", 600000);
    expect_route(c, U, "gw-a:1", 2);
    const char *ch[] = {"presence:route", "presence:kick", NULL};
    struct it_sub *sub = it_sub_open(FX.queue.port, ch);

    cr_assert_eq(drain_ok(c, "gw-a:1"), 3, "U's, V's and W's sessions on gw-a");
    char u_note[32], v_note[32];
    snprintf(u_note, sizeof(u_note), "%d:gw-b:1", U);
    snprintf(v_note, sizeof(v_note), "%d:", V);
    const char *want[] = {u_note, v_note};
    expect_notices(sub, want, 2);

    expect_route(c, U, "gw-b:1", 1);
    expect_route(c, V, NULL, 0);
    expect_route(c, W, "gw-b:1", 1);
    expect_route(c, X, "gw-b:1", 1);
    /* Keys as Unbind leaves them: V has none; U's and W's route and status live on. */
    cr_assert_not(it_rexists(R(), 0, "user:route:12"));
    cr_assert_not(it_rexists(R(), 0, "user:status:12"));
    cr_assert_not(it_rexists(R(), 0, "user:sessions:12"));
    cr_assert(it_rexists(R(), 0, "user:status:11"));
    cr_assert_gt(it_rttl(R(), 0, "user:route:11"), 3500, "the fallback route lives as its session does");
    cr_assert_not(it_rexists(R(), 0, "gateway:sessions:gw-a:1"), "the index is empty, so gone");
    cr_assert(it_rexists(R(), 0, "gateway:sessions:gw-b:1"));
    cr_assert_eq(lease_score(R(), "gw-a:1"), -1, "the drain ended the lease");

    /* Again: nothing to remove, nothing published. A gateway nobody knows: 0, OK. */
    cr_assert_eq(drain_ok(c, "gw-a:1"), 0);
    cr_assert_eq(drain_ok(c, "gw-never-seen:9"), 0);
    it_sub_expect_nothing(sub, "presence:route");
    expect_route(c, X, "gw-b:1", 1);
    cr_assert_eq(drain_ok(c, "gw-b:1"), 3, "U's, W's and X's phones and X's session");
    char x_note[32], w_note[32];
    snprintf(u_note, sizeof(u_note), "%d:", U);
    snprintf(w_note, sizeof(w_note), "%d:", W);
    snprintf(x_note, sizeof(x_note), "%d:", X);
    const char *want2[] = {u_note, w_note, x_note};
    expect_notices(sub, want2, 3);
    cr_assert_eq(it_rdbsize_all(R()), 0, "nothing left after both drains");
    it_sub_close(sub);

    char *body = NULL;
    cr_assert_eq(it_http_get(it_metrics_port(&FX.srv), "/metrics", NULL, &body), 200);
    cr_assert_eq(it_metric(body, "impresence_gateway_drains_total{how=\"manual\"}"), 4);
    cr_assert_eq(it_metric(body, "impresence_gateway_drains_total{how=\"lease\"}"), 0);
    cr_assert_eq(it_metric(body, "impresence_gateway_drained_sessions_total"), 6);
    cr_assert_eq(it_metric(body, "impresence_requests_total{method=\"DrainGateway\",code=\"OK\"}"), 4);
    free(body);
    pc_close(c);
}

/* A session that moved to another gateway (a Bind of the same device elsewhere) left the first
 * gateway's index: draining it does not touch the session. Lapsed sessions leave with their
 * user's next call, and a drain skips what is left of them. */
IT(gateways, drain_skips_sessions_that_moved_or_lapsed)
{
    it_config_set(&FX.cfg, "route", "route_ttl", "1");
    it_config_set(&FX.cfg, "route", "status_ttl", "1");
    fx_start_server();
    struct pc_client *c = it_connect();
    bind_dev(c, 21, "gw-a:1", "");
    bind_dev(c, 21, "gw-b:1", ""); /* replaces it: now on gw-b */
    bind_dev(c, 22, "gw-a:1", "");
    double deadline = it_mono_ms() + 5000 * IT_SLOW;
    while (it_rexists(R(), 0, "user:route:22")) { /* user 22's session lapses */
        cr_assert_lt(it_mono_ms(), deadline, "user 22's route never expired");
        it_sleep_ms(50);
    }
    const char *ch[] = {"presence:route", "presence:kick", NULL};
    struct it_sub *sub = it_sub_open(FX.queue.port, ch);
    cr_assert_eq(drain_ok(c, "gw-a:1"), 0, "21 moved to gw-b, 22 lapsed: nothing of gw-a lives");
    it_sub_expect_nothing(sub, "presence:route");
    it_sub_close(sub);
    pc_close(c);
}

/* The cache Redis gone: both calls answer UNAVAILABLE within its timeout, never hang. */
IT(gateways, redis_down_is_unavailable)
{
    it_config_set(&FX.cfg, "redis_cache", "timeout", "%d", 1000 * IT_SLOW);
    fx_start_server_linked();
    struct pc_client *c = it_connect();
    bind_dev(c, 31, "gw-a:1", "");
    it_redis_pause(&FX.cache);
    double t0 = it_mono_ms();
    Mpim__DrainGatewayResp *d = drain(c, "gw-a:1");
    cr_assert_eq(d->result->code, MPIM__CODE__UNAVAILABLE, "%s %s", pc_code_name(d->result->code),
                 d->result->msg);
    it_free(d);
    Mpim__GatewayHeartbeatResp *h = lease(c, "gw-a:1", 5000);
    cr_assert_eq(h->result->code, MPIM__CODE__UNAVAILABLE, "%s %s", pc_code_name(h->result->code),
                 h->result->msg);
    it_free(h);
    cr_assert_lt(it_mono_ms() - t0, 5000.0 * IT_SLOW, "answered within the timeouts");
    it_redis_resume(&FX.cache);
    /* Back: a drain ends what is left. The timed-out step may still have run once Redis resumed
     * (its bytes were sent: outcome unknown, as for any write that timed out), so 0 or 1. */
    double deadline = it_mono_ms() + 5000 * IT_SLOW;
    for (;;) {
        d = drain(c, "gw-a:1");
        bool ok = d->result->code == MPIM__CODE__OK;
        int64_t n = d->sessions_removed;
        it_free(d);
        if (ok) {
            cr_assert(n == 0 || n == 1, "%lld removed", (long long)n);
            break;
        }
        cr_assert_lt(it_mono_ms(), deadline, "no drain succeeded after Redis came back");
        it_sleep_ms(50);
    }
    expect_route(c, 31, NULL, 0);
    pc_close(c);
}

/* ------------------------------------------------------ lapsed leases */

/* A second instance on FX's Redis, with its own ports. */
static void start_second(struct it_server *s2)
{
    struct it_config c2 = FX.cfg;
    it_config_set(&c2, "presence_service", "port", "0");
    it_config_set(&c2, "metrics", "port", "auto");
    memset(s2, 0, sizeof(*s2));
    it_server_start(s2, &c2, NULL);
}

/* Two instances share the Redis and both watch the leases: exactly one drains the lapsed gateway
 * (each session's notice comes exactly once), no later than 2 s after its end (plus slack for a
 * loaded machine). A gateway that keeps its lease is left alone. */
IT(gateways, a_lapsed_lease_is_drained_once_by_one_of_two_instances)
{
    enum { N = 40 };
    fx_start_server();
    struct it_server s2;
    start_second(&s2);
    struct pc_client *c1 = it_connect(), *c2 = it_connect_port(s2.port);
    bind_many(c1, 1001, N / 2, "gw-lapse:1");
    bind_many(c2, 1001 + N / 2, N / 2, "gw-lapse:1");
    bind_dev(c1, 2001, "gw-live:1", "");
    lease_ok(c2, "gw-live:1", 600000);
    const char *ch[] = {"presence:route", "presence:kick", NULL};
    struct it_sub *sub = it_sub_open(FX.queue.port, ch);

    int64_t end = lease_ok(c1, "gw-lapse:1", 1000);
    bool seen[N] = {false};
    for (int k = 0; k < N; k++) {
        struct it_msg m;
        cr_assert_eq(it_sub_next(sub, &m, 5000 * IT_SLOW), 1, "%d of %d logouts seen", k, N);
        cr_assert_str_eq(m.channel, "presence:route", "'%s' on %s: a drain kicks nobody", m.data, m.channel);
        int uid = atoi(m.data);
        cr_assert(uid >= 1001 && uid < 1001 + N && m.data[m.len - 1] == ':', "notice '%s'", m.data);
        cr_assert_not(seen[uid - 1001], "user %d logged out twice", uid);
        seen[uid - 1001] = true;
        free(m.data);
    }
    int64_t last = it_now_ms();
    cr_log_info("lease ended at %lld; the last of %d logouts published %lld ms after it", (long long)end, N,
                (long long)(last - end));
    cr_assert_leq(last, end + 2000 + 1500 * IT_SLOW, "drained %lld ms after the lease's end",
                  (long long)(last - end));
    cr_assert_geq(last, end, "drained before the lease ended");

    /* The drain finished: the lease and the lock are gone, so nobody can claim it again. */
    double deadline = it_mono_ms() + 5000 * IT_SLOW;
    while (lease_score(R(), "gw-lapse:1") != -1 || it_rexists(R(), 0, "{gateway-leases}:lock:gw-lapse:1")) {
        cr_assert_lt(it_mono_ms(), deadline, "the lapsed lease or its lock is still there");
        it_sleep_ms(20);
    }
    it_sub_expect_nothing(sub, "presence:route");
    it_sub_expect_nothing(sub, "presence:kick");
    it_sub_close(sub);
    const struct it_server *both[] = {&FX.srv, &s2};
    cr_assert_eq(series_sum(both, 2, "impresence_gateway_drains_total{how=\"lease\"}"), 1,
                 "one instance drained it");
    cr_assert_eq(series_sum(both, 2, "impresence_gateway_drained_sessions_total"), N);
    expect_route(c1, 2001, "gw-live:1", 1);
    cr_assert_gt(lease_score(R(), "gw-live:1"), 0, "a live lease stays");
    pc_close(c1);
    pc_close(c2);
    it_server_stop_clean(&s2);
}

/* A gateway that never sent GatewayHeartbeat is not in the lease set: while two other gateways'
 * leases lapse one after the other and are drained (so the watcher has run all along), its
 * sessions stay. */
IT(gateways, a_gateway_that_never_leased_is_never_drained)
{
    fx_start_server();
    struct pc_client *c = it_connect();
    bind_many(c, 3001, 20, "gw-never:1");
    const char *lapsing[] = {"gw-lapse-1:1", "gw-lapse-2:1"};
    for (int i = 0; i < 2; i++) {
        bind_dev(c, 3100 + i, lapsing[i], "");
        lease_ok(c, lapsing[i], 1000);
        it_wait_metric(&FX.srv, "impresence_gateway_drains_total", i + 1, 5000 * IT_SLOW);
        expect_route(c, 3100 + i, NULL, 0);
        cr_assert_eq(lease_score(R(), "gw-never:1"), -1);
        for (int64_t uid = 3001; uid < 3021; uid++)
            expect_route(c, uid, "gw-never:1", 1);
    }
    pc_close(c);
}

/* A lease drain cut short by SIGTERM: the server still exits 0 (the drain's commands fail with
 * its links, nothing leaks); its lock stays, and once it lapses (here: deleted, as its expiry
 * would) another instance claims the lease again and ends the rest. Every session's logout is
 * published exactly once between the two. */
IT(gateways, a_lease_drain_cut_short_is_finished_by_another_instance)
{
    enum { N = 50000 };
    fx_start_server();
    struct pc_client *c = it_connect();
    bind_many(c, 1, N, "gw-cut:1");
    const char *ch[] = {"presence:route", NULL};
    struct it_sub *sub = it_sub_open(FX.queue.port, ch);
    lease_ok(c, "gw-cut:1", 1000);
    pc_close(c);
    double deadline = it_mono_ms() + 10000 * IT_SLOW;
    while (it_metric_now(&FX.srv, "impresence_gateway_drained_sessions_total") == 0) {
        cr_assert_lt(it_mono_ms(), deadline, "the lease drain never started");
        it_sleep_ms(5);
    }
    it_server_stop_clean(&FX.srv);
    bool cut = it_rexists(R(), 0, "{gateway-leases}:lock:gw-cut:1");
    cr_log_info("SIGTERM %s the drain", cut ? "cut short" : "came after");
    cr_assert_eq(cut, lease_score(R(), "gw-cut:1") != -1, "lock and lease stay or go together");
    it_rcmd(R(), 0, "DEL {gateway-leases}:lock:gw-cut:1");

    struct it_server s2;
    start_second(&s2);
    static bool seen[N + 1];
    for (int k = 0; k < N; k++) {
        struct it_msg m;
        cr_assert_eq(it_sub_next(sub, &m, 10000 * IT_SLOW), 1, "%d of %d logouts seen", k, N);
        int uid = atoi(m.data);
        cr_assert(uid >= 1 && uid <= N && m.data[m.len - 1] == ':', "notice '%s'", m.data);
        cr_assert_not(seen[uid], "user %d logged out twice", uid);
        seen[uid] = true;
        free(m.data);
    }
    deadline = it_mono_ms() + 5000 * IT_SLOW;
    while (lease_score(R(), "gw-cut:1") != -1) {
        cr_assert_lt(it_mono_ms(), deadline, "the lease was never ended");
        it_sleep_ms(20);
    }
    it_sub_expect_nothing(sub, "presence:route");
    it_sub_close(sub);
    cr_assert_eq(it_rdbsize(R(), 0), 0, "every user's keys and the index are gone");
    it_server_stop_clean(&s2);
}

/* ------------------------------------------------------ 100,000 sessions */

struct querier {
    int port;
    int64_t uid;    /* a user of another gateway, on the drain's shard */
    const char *gw; /* ... and its gateway */
    atomic_bool stop;
    long answered, wrong; /* written by the thread, read after the join */
    double worst_ms;
    char error[160];
};

/* Another connection's QueryRoutes, one at a time, until told to stop: how many, how slow. */
static void *query_loop(void *arg)
{
    struct querier *q = arg;
    const char *err = NULL;
    struct pc_client *c = pc_connect("127.0.0.1", q->port, 30000 * IT_SLOW, &err);
    if (c == NULL) {
        snprintf(q->error, sizeof(q->error), "connect: %s", err ? err : "?");
        return NULL;
    }
    while (!atomic_load(&q->stop)) {
        double t0 = it_mono_ms();
        Mpim__QueryRouteResp *r = NULL;
        if (pc_query(c, q->uid, &r) < 0) {
            snprintf(q->error, sizeof(q->error), "query: %s", pc_error(c));
            break;
        }
        double ms = it_mono_ms() - t0;
        q->worst_ms = ms > q->worst_ms ? ms : q->worst_ms;
        bool ok =
            r->result != NULL && r->result->code == MPIM__CODE__OK && it_bytes_eq(r->gateway_addr, q->gw);
        q->wrong += !ok;
        q->answered++;
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    pc_close(c);
    return NULL;
}

Test(gateways, a_drain_of_100000_sessions_leaves_other_queries_answered, .timeout = 6 * IT_TIMEOUT)
{
    enum { N = 100000 };
    fx_start_server();
    const char *gw = "gw-big:7000";
    struct pc_client *c = it_connect();
    double t0 = it_mono_ms();
    bind_many(c, 1, N, gw);
    double bound_ms = it_mono_ms() - t0;
    /* The querier's user lives on the shard that runs the drain (the gateway's shard). */
    struct querier q = {.port = FX.srv.port, .gw = "gw-other:1"};
    uint32_t drain_shard = hash_bytes_shard(gw, strlen(gw), 2);
    for (q.uid = N + 1; hash_shard(q.uid, 2) != drain_shard; q.uid++)
        ;
    bind_dev(c, q.uid, q.gw, "");
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, query_loop, &q), 0);
    while (q.answered < 10 && q.error[0] == '\0') /* the querier is under way */
        it_sleep_ms(5);

    const char *err = NULL;
    struct pc_client *d = pc_connect("127.0.0.1", FX.srv.port, 0, &err); /* no timeout: the test's own */
    cr_assert_not_null(d, "%s", err ? err : "?");
    long before = q.answered;
    double t1 = it_mono_ms();
    int64_t removed = drain_ok(d, gw);
    double drain_ms = it_mono_ms() - t1;
    long during = q.answered - before;
    atomic_store(&q.stop, true);
    pthread_join(th, NULL);
    cr_assert_str_eq(q.error, "", "the querier failed: %s", q.error);
    cr_log_info(
        "bound %d sessions in %.0f ms; drained them in %.0f ms while another connection's %ld queries "
        "were answered, the worst in %.1f ms",
        N, bound_ms, drain_ms, during, q.worst_ms);
    fprintf(stderr, "drain of %d sessions: %.0f ms; %ld queries meanwhile, worst latency %.1f ms\n", N,
            drain_ms, during, q.worst_ms);
    cr_assert_eq(removed, N);
    cr_assert_eq(q.wrong, 0, "%ld queries of the other gateway's user answered wrong", q.wrong);
    cr_assert_gt(during, 10, "only %ld queries answered during a %.0f ms drain", during, drain_ms);
    cr_assert_lt(q.worst_ms, drain_ms / 2 + 200 * IT_SLOW, "a query waited %.1f ms of a %.0f ms drain",
                 q.worst_ms, drain_ms);
    for (int64_t uid = 1; uid <= N; uid += 997)
        expect_route(c, uid, NULL, 0);
    expect_route(c, q.uid, q.gw, 1);
    cr_assert_eq(it_rdbsize(R(), 0), 4, "the other user's 3 keys and its gateway's index");
    pc_close(d);
    pc_close(c);
    fx_check_clean_exit();
}

/* ------------------------------------------------------ Redis Cluster (§10) */

/* mode = cluster, wait_replicas = 1: a gateway's users on every master, in many slots, each slot
 * with its own index; a drain finds them all through the gateway's slot bitmap. A lapsed lease is
 * drained there too. */
Test(gateways_cluster, a_drain_finds_users_on_every_master, .fini = fx_fini, .timeout = 3 * IT_TIMEOUT)
{
    enum { N = 300 };
    fx_init_cluster();
    it_config_set(&FX.cfg, "redis_cache", "wait_replicas", "1");
    fx_start_server_linked();
    int owner[TP_CLUSTER_SLOTS];
    cr_assert_eq(tp_cluster_slots_at(FX.cluster.node[0].r.port, owner, NULL), TP_CLUSTER_SLOTS);
    struct pc_client *c = it_connect();
    /* Subscribed first: a PUBLISH reaches the other nodes over the cluster bus, so a Bind's notice
     * may arrive after its answer. Every notice is read, the Binds' first. */
    const char *ch[] = {"presence:route", "presence:kick", NULL};
    struct it_sub *sub = it_sub_open(FX.cluster.node[0].r.port, ch);
    bind_many(c, 5001, N, "gw-c:1");
    int masters[8] = {0}, nmasters = 0;
    for (int64_t uid = 5001; uid < 5001 + N; uid++) {
        char tag[24];
        int port = owner[cluster_keyslot(tag, (size_t)snprintf(tag, sizeof(tag), "%lld", (long long)uid))];
        bool known = false;
        for (int k = 0; k < nmasters; k++)
            known = known || masters[k] == port;
        if (!known && nmasters < 8)
            masters[nmasters++] = port;
    }
    cr_assert_eq(nmasters, 3, "the users live on every master");
    bind_dev(c, 5001, "gw-d:1", "phone"); /* 5001's route now gw-d; its gw-c session goes too */
    bind_dev(c, 6001, "gw-d:1", "");
    for (int k = 0; k < N + 2; k++) {
        struct it_msg m;
        cr_assert_eq(it_sub_next(sub, &m, 5000 * IT_SLOW), 1, "%d of %d bind notices seen", k, N + 2);
        cr_assert(m.data[m.len - 1] != ':', "a logout '%s' before the drain", m.data);
        free(m.data);
    }

    cr_assert_eq(drain_ok(c, "gw-c:1"), N);
    static bool seen[N];
    for (int k = 0; k < N - 1; k++) { /* 5001 keeps its phone: the route was not gw-c's, no notice */
        struct it_msg m;
        cr_assert_eq(it_sub_next(sub, &m, 5000 * IT_SLOW), 1, "%d of %d logouts seen", k, N - 1);
        cr_assert_str_eq(m.channel, "presence:route");
        int uid = atoi(m.data);
        cr_assert(uid > 5001 && uid < 5001 + N && m.data[m.len - 1] == ':', "notice '%s'", m.data);
        cr_assert_not(seen[uid - 5001], "user %d logged out twice", uid);
        seen[uid - 5001] = true;
        free(m.data);
    }
    it_sub_expect_nothing(sub, "presence:route");
    it_sub_expect_nothing(sub, "presence:kick");
    for (int64_t uid = 5002; uid < 5001 + N; uid += 7)
        expect_route(c, uid, NULL, 0);
    expect_route(c, 5001, "gw-d:1", 1);
    expect_route(c, 6001, "gw-d:1", 1);
    cr_assert_eq(drain_ok(c, "gw-c:1"), 0, "again: nothing left");

    /* The lease watcher on a cluster: gw-d lapses and is drained. */
    lease_ok(c, "gw-d:1", 1000);
    for (int k = 0; k < 2; k++) {
        struct it_msg m;
        cr_assert_eq(it_sub_next(sub, &m, 5000 * IT_SLOW), 1, "%d of 2 logouts of gw-d seen", k);
        cr_assert(strcmp(m.data, "5001:") == 0 || strcmp(m.data, "6001:") == 0, "notice '%s'", m.data);
        free(m.data);
    }
    expect_route(c, 5001, NULL, 0);
    expect_route(c, 6001, NULL, 0);
    it_wait_metric(&FX.srv, "impresence_gateway_drained_sessions_total", N + 2, 5000 * IT_SLOW);
    it_sub_close(sub);
    pc_close(c);
    fx_check_clean_exit();
}
