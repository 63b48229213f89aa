/* Contract §2-3: every row of the semantics table, checked through a real socket against a
 * real Redis (route and status keys, their TTLs, and Pub/Sub notices seen by a real SUBSCRIBE). */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* Route and status get different TTLs, so each key is seen renewed to its own. */
#define ROUTE_TTL 300
#define STATUS_TTL 120

static void rpc_init(void)
{
    fx_init_redis();
    it_config_set(&FX.cfg, "route", "route_ttl", "%d", ROUTE_TTL);
    it_config_set(&FX.cfg, "route", "status_ttl", "%d", STATUS_TTL);
    fx_start_server();
}

TestSuite(rpc, .init = rpc_init, .fini = fx_fini, .timeout = IT_TIMEOUT);

static int R(void)
{
    return FX.cache.port;
}

static const char *route_key(int64_t uid)
{
    static char buf[4][48];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, 48, "user:route:%lld", (long long)uid);
    return b;
}

static const char *status_key(int64_t uid)
{
    static char buf[4][48];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, 48, "user:status:%lld", (long long)uid);
    return b;
}

static void expect_value(const char *key, const char *want)
{
    char *v = it_rget(R(), 0, key, NULL);
    if (want == NULL) {
        cr_assert_null(v, "%s should not exist, holds '%s'", key, v);
        return;
    }
    cr_assert_not_null(v, "%s missing (want '%s')", key, want);
    cr_assert_str_eq(v, want, "%s holds '%s', want '%s'", key, v, want);
    free(v);
}

static void expect_ttl_near(const char *key, int ttl)
{
    long long t = it_rttl(R(), 0, key);
    cr_assert(t > ttl - 5 && t <= ttl, "TTL of %s is %lld, want about %d", key, t, ttl);
}

static void expect_timestamp_now(int64_t ts)
{
    int64_t now = it_now_ms();
    cr_assert(ts > now - 5000 && ts < now + 5000, "timestamp %lld is not now (%lld) in ms", (long long)ts,
              (long long)now);
}

static void bind_ok(struct pc_client *c, int64_t uid, const char *gw)
{
    Mpim__BindRouteResp *b = it_bind(c, uid, gw);
    cr_assert_eq(b->result->code, MPIM__CODE__OK, "bind %lld %s: %s %s", (long long)uid, gw,
                 pc_code_name(b->result->code), b->result->msg);
    it_free(b);
}

/* ------------------------------------------------------------------ BindRoute */

IT(rpc, bind_writes_route_and_status_with_their_ttls)
{
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 42, "gw-1:7000");
    cr_assert_eq(b->result->code, MPIM__CODE__OK, "%s", b->result->msg);
    cr_assert_str_eq(b->route_key, "user:route:42");
    it_free(b);

    expect_value("user:route:42", "gw-1:7000");
    expect_value("user:status:42", "online");
    expect_ttl_near("user:route:42", ROUTE_TTL);
    expect_ttl_near("user:status:42", STATUS_TTL);
    /* Routes live in the cache database (0), not the queue's (1): route, status and the user's
     * sessions hash (contract §6), and the gateway's session index (§8). */
    cr_assert_eq(it_rdbsize(R(), 0), 4);
    cr_assert(it_rexists(R(), 0, "gateway:sessions:gw-1:7000"));
    cr_assert_eq(it_rdbsize(R(), 1), 0);
    pc_close(c);
}

IT(rpc, bind_publishes_route_notice)
{
    const char *ch[] = {"presence:route", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    struct pc_client *c = it_connect();
    bind_ok(c, 42, "gw-1:7000");
    it_sub_expect(s, "presence:route", "42:gw-1:7000", strlen("42:gw-1:7000"));
    it_sub_close(s);
    pc_close(c);
}

IT(rpc, bind_again_replaces_route_and_notifies_each_time)
{
    const char *ch[] = {"presence:route", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    struct pc_client *c = it_connect();
    bind_ok(c, 8, "gw-a:1");
    bind_ok(c, 8, "gw-b:2");
    expect_value(route_key(8), "gw-b:2");
    it_sub_expect(s, "presence:route", "8:gw-a:1", 8);
    it_sub_expect(s, "presence:route", "8:gw-b:2", 8);
    it_sub_close(s);
    pc_close(c);
}

/* ----------------------------------------------------------------- QueryRoute */

IT(rpc, query_returns_bound_gateway_and_online)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 42, "gw-1:7000");
    Mpim__QueryRouteResp *q = it_query(c, 42);
    cr_assert_eq(q->result->code, MPIM__CODE__OK, "%s", q->result->msg);
    cr_assert(it_bytes_eq(q->gateway_addr, "gw-1:7000"), "gateway '%.*s'", (int)q->gateway_addr.len,
              q->gateway_addr.data);
    cr_assert(q->is_online);
    it_free(q);
    pc_close(c);
}

IT(rpc, query_unknown_user_is_not_found_offline_and_empty)
{
    struct pc_client *c = it_connect();
    Mpim__QueryRouteResp *q = it_query(c, 12345);
    cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND, "got %s", pc_code_name(q->result->code));
    cr_assert_not(q->is_online);
    cr_assert_eq(q->gateway_addr.len, 0);
    it_free(q);
    pc_close(c);
}

IT(rpc, query_sees_route_set_directly_in_redis_at_once)
{
    struct pc_client *c = it_connect();
    it_rcmd(R(), 0, "SET user:route:7 gw-direct:9");
    Mpim__QueryRouteResp *q = it_query(c, 7);
    cr_assert_eq(q->result->code, MPIM__CODE__OK, "got %s", pc_code_name(q->result->code));
    cr_assert(it_bytes_eq(q->gateway_addr, "gw-direct:9"));
    cr_assert(q->is_online, "is_online is true iff a route exists");
    it_free(q);

    /* Changed behind the server's back: the next query sees the new value (no stale cache). */
    it_rcmd(R(), 0, "SET user:route:7 gw-other:1");
    q = it_query(c, 7);
    cr_assert(it_bytes_eq(q->gateway_addr, "gw-other:1"), "stale gateway '%.*s'", (int)q->gateway_addr.len,
              q->gateway_addr.data);
    it_free(q);
    pc_close(c);
}

IT(rpc, query_sees_route_deleted_directly_in_redis_at_once)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 7, "gw-1:1");
    Mpim__QueryRouteResp *q = it_query(c, 7);
    cr_assert_eq(q->result->code, MPIM__CODE__OK);
    it_free(q);
    it_rcmd(R(), 0, "DEL user:route:7");
    q = it_query(c, 7);
    cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND, "got %s", pc_code_name(q->result->code));
    cr_assert_not(q->is_online);
    cr_assert_eq(q->gateway_addr.len, 0);
    it_free(q);
    pc_close(c);
}

/* -------------------------------------------------------------------- Deliver */

IT(rpc, deliver_without_route_is_not_found_and_publishes_nothing)
{
    const char *ch[] = {"user:9", "presence:route", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    struct pc_client *c = it_connect();
    Mpim__DeliverResp *d = it_deliver(c, 9, "hello", 5, "chat");
    cr_assert_eq(d->result->code, MPIM__CODE__NOT_FOUND, "got %s", pc_code_name(d->result->code));
    cr_assert_not(d->delivered);
    expect_timestamp_now(d->timestamp);
    it_free(d);
    it_sub_expect_nothing(s, "user:9");
    it_sub_close(s);
    pc_close(c);
}

IT(rpc, deliver_to_subscriber_publishes_exact_binary_bytes)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 11, "gw-1:7000");
    const char *ch[] = {"user:11", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    static const uint8_t payload[] = {'h', 'i', 0x00, 0xff, 0x80, '\n', 0x00, 0x7f, 0xfe, 0x01};
    Mpim__DeliverResp *d = it_deliver(c, 11, payload, sizeof(payload), "bin");
    cr_assert_eq(d->result->code, MPIM__CODE__OK, "%s %s", pc_code_name(d->result->code), d->result->msg);
    cr_assert(d->delivered, "a subscriber was listening on user:11");
    expect_timestamp_now(d->timestamp);
    it_free(d);
    it_sub_expect(s, "user:11", payload, sizeof(payload));
    it_sub_close(s);
    pc_close(c);
}

IT(rpc, deliver_large_payload_of_every_byte_value_passes_untouched)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 12, "gw-1:7000");
    const char *ch[] = {"user:12", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    size_t len = 200 * 1024;
    uint8_t *payload = malloc(len);
    cr_assert_not_null(payload);
    for (size_t i = 0; i < len; i++)
        payload[i] = (uint8_t)(i * 7 + i / 256);
    Mpim__DeliverResp *d = it_deliver(c, 12, payload, len, "file");
    cr_assert_eq(d->result->code, MPIM__CODE__OK, "%s", d->result->msg);
    cr_assert(d->delivered);
    it_free(d);
    it_sub_expect(s, "user:12", payload, len);
    free(payload);
    it_sub_close(s);
    pc_close(c);
}

IT(rpc, deliver_empty_message_to_subscriber)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 13, "gw-1:7000");
    const char *ch[] = {"user:13", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    Mpim__DeliverResp *d = it_deliver(c, 13, "", 0, NULL);
    cr_assert_eq(d->result->code, MPIM__CODE__OK, "%s", d->result->msg);
    cr_assert(d->delivered);
    it_free(d);
    it_sub_expect(s, "user:13", "", 0);
    it_sub_close(s);
    pc_close(c);
}

IT(rpc, deliver_with_route_but_no_subscriber_is_ok_not_delivered)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 14, "gw-1:7000");
    Mpim__DeliverResp *d = it_deliver(c, 14, "hello", 5, "chat");
    cr_assert_eq(d->result->code, MPIM__CODE__OK, "got %s", pc_code_name(d->result->code));
    cr_assert_not(d->delivered);
    expect_timestamp_now(d->timestamp);
    it_free(d);
    pc_close(c);
}

IT(rpc, deliver_does_not_touch_route_or_status)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 15, "gw-1:7000");
    it_rcmd(R(), 0, "EXPIRE user:route:15 50");
    Mpim__DeliverResp *d = it_deliver(c, 15, "x", 1, NULL);
    cr_assert_eq(d->result->code, MPIM__CODE__OK);
    it_free(d);
    cr_assert_leq(it_rttl(R(), 0, "user:route:15"), 50);
    expect_value("user:route:15", "gw-1:7000");
    pc_close(c);
}

/* ---------------------------------------------------------------- UnbindRoute */

IT(rpc, unbind_matching_gateway_deletes_both_keys_and_notifies_logout)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 21, "gw-1:7000");
    const char *ch[] = {"presence:route", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    Mpim__UnbindRouteResp *u = it_unbind(c, 21, "gw-1:7000");
    cr_assert_eq(u->result->code, MPIM__CODE__OK, "%s", u->result->msg);
    cr_assert(u->unbound);
    it_free(u);
    cr_assert_not(it_rexists(R(), 0, "user:route:21"));
    cr_assert_not(it_rexists(R(), 0, "user:status:21"));
    it_sub_expect(s, "presence:route", "21:", 3);

    Mpim__QueryRouteResp *q = it_query(c, 21);
    cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND);
    it_free(q);
    it_sub_close(s);
    pc_close(c);
}

IT(rpc, unbind_stale_gateway_never_logs_out_newer_session)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 22, "gw-old:1");
    bind_ok(c, 22, "gw-new:2");
    it_rcmd(R(), 0, "EXPIRE user:route:22 77");
    const char *ch[] = {"presence:route", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    Mpim__UnbindRouteResp *u = it_unbind(c, 22, "gw-old:1");
    cr_assert_eq(u->result->code, MPIM__CODE__OK, "got %s", pc_code_name(u->result->code));
    cr_assert_not(u->unbound);
    it_free(u);
    expect_value(route_key(22), "gw-new:2");
    expect_value(status_key(22), "online");
    cr_assert_leq(it_rttl(R(), 0, route_key(22)), 77, "a stale unbind rewrote the route");
    it_sub_expect_nothing(s, "presence:route");
    it_sub_close(s);
    pc_close(c);
}

IT(rpc, unbind_without_route_is_ok_not_unbound_and_silent)
{
    const char *ch[] = {"presence:route", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    struct pc_client *c = it_connect();
    Mpim__UnbindRouteResp *u = it_unbind(c, 23, "gw-1:7000");
    cr_assert_eq(u->result->code, MPIM__CODE__OK, "got %s", pc_code_name(u->result->code));
    cr_assert_not(u->unbound);
    it_free(u);
    cr_assert_eq(it_rdbsize_all(R()), 0, "an unbind of nobody wrote keys");
    it_sub_expect_nothing(s, "presence:route");
    it_sub_close(s);
    pc_close(c);
}

IT(rpc, unbind_keeps_status_of_other_users)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 24, "gw-1:7000");
    bind_ok(c, 25, "gw-1:7000");
    Mpim__UnbindRouteResp *u = it_unbind(c, 24, "gw-1:7000");
    cr_assert(u->unbound);
    it_free(u);
    expect_value(route_key(25), "gw-1:7000");
    expect_value(status_key(25), "online");
    pc_close(c);
}

/* ------------------------------------------------------------------ Heartbeat */

IT(rpc, heartbeat_matching_renews_each_key_to_its_own_ttl)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 31, "gw-1:7000");
    it_rcmd(R(), 0, "EXPIRE user:route:31 10");
    it_rcmd(R(), 0, "EXPIRE user:status:31 5");
    Mpim__HeartbeatResp *h = it_heartbeat(c, 31, "gw-1:7000");
    cr_assert_eq(h->result->code, MPIM__CODE__OK, "%s", h->result->msg);
    cr_assert(h->refreshed);
    it_free(h);
    expect_ttl_near("user:route:31", ROUTE_TTL);
    expect_ttl_near("user:status:31", STATUS_TTL);
    expect_value("user:route:31", "gw-1:7000");
    expect_value("user:status:31", "online");
    pc_close(c);
}

IT(rpc, heartbeat_recreates_expired_status)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 32, "gw-1:7000");
    it_rcmd(R(), 0, "DEL user:status:32");
    Mpim__HeartbeatResp *h = it_heartbeat(c, 32, "gw-1:7000");
    cr_assert_eq(h->result->code, MPIM__CODE__OK, "%s", h->result->msg);
    cr_assert(h->refreshed);
    it_free(h);
    expect_value("user:status:32", "online");
    expect_ttl_near("user:status:32", STATUS_TTL);
    expect_ttl_near("user:route:32", ROUTE_TTL);
    pc_close(c);
}

/* Regression: after SCRIPT FLUSH (or a failover to a Redis without the scripts) EVALSHA answers
 * NOSCRIPT; Heartbeat and Unbind must still work, by running the script by body. */
IT(rpc, scripts_flushed_in_redis_heartbeat_and_unbind_still_work)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 36, "gw-1:7000");
    Mpim__HeartbeatResp *h = it_heartbeat(c, 36, "gw-1:7000"); /* scripts loaded and used */
    cr_assert(h->refreshed);
    it_free(h);
    it_rcmd(R(), 0, "SCRIPT FLUSH");
    h = it_heartbeat(c, 36, "gw-1:7000");
    cr_assert_eq(h->result->code, MPIM__CODE__OK, "%s", h->result->msg);
    cr_assert(h->refreshed);
    it_free(h);
    it_rcmd(R(), 0, "SCRIPT FLUSH");
    Mpim__UnbindRouteResp *u = it_unbind(c, 36, "gw-1:7000");
    cr_assert_eq(u->result->code, MPIM__CODE__OK, "%s", u->result->msg);
    cr_assert(u->unbound);
    it_free(u);
    expect_value(route_key(36), NULL);
    expect_value(status_key(36), NULL);
    pc_close(c);
}

IT(rpc, heartbeat_stale_gateway_writes_nothing)
{
    struct pc_client *c = it_connect();
    bind_ok(c, 33, "gw-new:2");
    it_rcmd(R(), 0, "EXPIRE user:route:33 40");
    it_rcmd(R(), 0, "DEL user:status:33");
    const char *ch[] = {"presence:route", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    Mpim__HeartbeatResp *h = it_heartbeat(c, 33, "gw-old:1");
    cr_assert_eq(h->result->code, MPIM__CODE__OK, "got %s", pc_code_name(h->result->code));
    cr_assert_not(h->refreshed);
    it_free(h);
    cr_assert_leq(it_rttl(R(), 0, "user:route:33"), 40, "a stale heartbeat renewed the route");
    cr_assert_not(it_rexists(R(), 0, "user:status:33"), "a stale heartbeat re-created the status");
    expect_value("user:route:33", "gw-new:2");
    it_sub_expect_nothing(s, "presence:route");
    it_sub_close(s);
    pc_close(c);
}

IT(rpc, heartbeat_without_route_creates_nothing)
{
    struct pc_client *c = it_connect();
    Mpim__HeartbeatResp *h = it_heartbeat(c, 34, "gw-1:7000");
    cr_assert_eq(h->result->code, MPIM__CODE__OK, "got %s", pc_code_name(h->result->code));
    cr_assert_not(h->refreshed);
    it_free(h);
    cr_assert_eq(it_rdbsize_all(R()), 0, "a heartbeat of nobody wrote keys");
    pc_close(c);
}

/* -------------------------------------------------------------- cross-cutting */

IT(rpc, gateway_with_colons_round_trips)
{
    static const char *const gws[] = {"10.0.0.1:7000", "[::1]:7000", "gw:a:b:c", ":leading"};
    const char *ch[] = {"presence:route", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    struct pc_client *c = it_connect();
    for (int i = 0; i < 4; i++) {
        int64_t uid = 40 + i;
        bind_ok(c, uid, gws[i]);
        char notice[64];
        snprintf(notice, sizeof(notice), "%lld:%s", (long long)uid, gws[i]);
        it_sub_expect(s, "presence:route", notice, strlen(notice));
        Mpim__QueryRouteResp *q = it_query(c, uid);
        cr_assert(it_bytes_eq(q->gateway_addr, gws[i]), "'%s' came back as '%.*s'", gws[i],
                  (int)q->gateway_addr.len, q->gateway_addr.data);
        it_free(q);
        Mpim__HeartbeatResp *h = it_heartbeat(c, uid, gws[i]);
        cr_assert(h->refreshed, "heartbeat with '%s'", gws[i]);
        it_free(h);
        Mpim__UnbindRouteResp *u = it_unbind(c, uid, gws[i]);
        cr_assert(u->unbound, "unbind with '%s'", gws[i]);
        it_free(u);
        snprintf(notice, sizeof(notice), "%lld:", (long long)uid);
        it_sub_expect(s, "presence:route", notice, strlen(notice));
    }
    it_sub_close(s);
    pc_close(c);
}

IT(rpc, qualified_service_name_is_accepted)
{
    struct pc_client *c = it_connect();
    Mpim__BindRouteReq b = MPIM__BIND_ROUTE_REQ__INIT;
    b.user_id = 51;
    b.gateway_addr = it_bytes("gw-q:1");
    it_send_frame(c, "mpim.PresenceService", "BindRoute", &b.base);
    Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
    q.user_id = 51;
    it_send_frame(c, "mpim.PresenceService", "QueryRoute", &q.base);
    cr_assert_eq(pc_flush(c), 0, "%s", pc_error(c));

    Mpim__BindRouteResp *br = (Mpim__BindRouteResp *)it_recv(c, PR_METHOD_BIND);
    cr_assert_eq(br->result->code, MPIM__CODE__OK, "%s %s", pc_code_name(br->result->code), br->result->msg);
    cr_assert_str_eq(br->route_key, "user:route:51");
    it_free(br);
    Mpim__QueryRouteResp *qr = (Mpim__QueryRouteResp *)it_recv(c, PR_METHOD_QUERY);
    cr_assert_eq(qr->result->code, MPIM__CODE__OK);
    cr_assert(it_bytes_eq(qr->gateway_addr, "gw-q:1"));
    it_free(qr);
    expect_value("user:route:51", "gw-q:1");
    pc_close(c);
}

IT(rpc, client_ip_and_port_in_bind_are_accepted)
{
    struct pc_client *c = it_connect();
    Mpim__BindRouteReq b = MPIM__BIND_ROUTE_REQ__INIT;
    b.user_id = 52;
    b.gateway_addr = it_bytes("gw-1:7000");
    b.client_ip = it_bytes("192.168.1.20");
    b.client_port = 54321;
    cr_assert_eq(pc_send(c, PR_METHOD_BIND, &b.base), 0);
    Mpim__BindRouteResp *br = (Mpim__BindRouteResp *)it_recv(c, PR_METHOD_BIND);
    cr_assert_eq(br->result->code, MPIM__CODE__OK, "%s", br->result->msg);
    it_free(br);
    expect_value("user:route:52", "gw-1:7000");
    pc_close(c);
}

IT(rpc, users_are_independent_across_connections)
{
    struct pc_client *a = it_connect();
    struct pc_client *b = it_connect();
    bind_ok(a, 61, "gw-a:1");
    Mpim__QueryRouteResp *q = it_query(b, 61);
    cr_assert_eq(q->result->code, MPIM__CODE__OK, "a bind on one connection is seen on another");
    cr_assert(it_bytes_eq(q->gateway_addr, "gw-a:1"));
    it_free(q);
    q = it_query(b, 62);
    cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND);
    it_free(q);
    pc_close(a);
    pc_close(b);
}
