/* Contract §7: BatchQueryRoute and BatchDeliver against the real server and a real Redis. One
 * entry per listed id, in request order, each what the single call for that id gives (checked
 * against the single call itself), repeats looked up or published once per listing (messages
 * counted by real SUBSCRIBEs), ids <= 0 INVALID in their own entries, the call's limits, a batch
 * spanning every shard, a batch's ids run after that user's earlier requests on the connection,
 * a full shard queue answered OVERLOADED per entry, the mpim dialect's channel, a cluster, and
 * the CLI. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cluster_slot.h"
#include "core/hash.h"
#include "core/mpim_hash.h"
#include "harness.h"

TestSuite(batch, .init = fx_init_redis, .fini = fx_fini, .timeout = IT_TIMEOUT);

static int R(void)
{
    return FX.cache.port;
}

static void start(int shards)
{
    it_config_set(&FX.cfg, "presence_service", "thread_count", "%d", shards);
    fx_start_server();
}

/* ------------------------------------------------------------------ calls */

static void send_batch_query(struct pc_client *c, const int64_t *ids, size_t n)
{
    Mpim__BatchQueryRouteReq r = MPIM__BATCH_QUERY_ROUTE_REQ__INIT;
    r.n_user_ids = n;
    r.user_ids = (int64_t *)ids;
    cr_assert_eq(pc_send(c, PR_METHOD_BATCH_QUERY, &r.base), 0, "%s", pc_error(c));
}

static void send_batch_deliver(struct pc_client *c, const char *msg, size_t len, const int64_t *ids, size_t n)
{
    Mpim__BatchDeliverReq r = MPIM__BATCH_DELIVER_REQ__INIT;
    r.n_user_ids = n;
    r.user_ids = (int64_t *)ids;
    r.message = (ProtobufCBinaryData){len, (uint8_t *)msg};
    r.message_type = it_bytes("text");
    cr_assert_eq(pc_send(c, PR_METHOD_BATCH_DELIVER, &r.base), 0, "%s", pc_error(c));
}

static Mpim__BatchQueryRouteResp *recv_batch_query(struct pc_client *c)
{
    Mpim__BatchQueryRouteResp *r = (Mpim__BatchQueryRouteResp *)it_recv(c, PR_METHOD_BATCH_QUERY);
    cr_assert_not_null(r->result, "BatchQueryRouteResp without result");
    return r;
}

static Mpim__BatchDeliverResp *recv_batch_deliver(struct pc_client *c)
{
    Mpim__BatchDeliverResp *r = (Mpim__BatchDeliverResp *)it_recv(c, PR_METHOD_BATCH_DELIVER);
    cr_assert_not_null(r->result, "BatchDeliverResp without result");
    return r;
}

static Mpim__BatchQueryRouteResp *batch_query(struct pc_client *c, const int64_t *ids, size_t n)
{
    send_batch_query(c, ids, n);
    cr_assert_eq(pc_flush(c), 0, "%s", pc_error(c));
    return recv_batch_query(c);
}

static Mpim__BatchDeliverResp *batch_deliver(struct pc_client *c, const char *msg, const int64_t *ids, size_t n)
{
    send_batch_deliver(c, msg, strlen(msg), ids, n);
    cr_assert_eq(pc_flush(c), 0, "%s", pc_error(c));
    return recv_batch_deliver(c);
}

static void bind_ok(struct pc_client *c, int64_t uid, const char *gw)
{
    Mpim__BindRouteResp *b = it_bind(c, uid, gw);
    cr_assert_eq(b->result->code, MPIM__CODE__OK, "bind %lld: %s %s", (long long)uid,
                 pc_code_name(b->result->code), b->result->msg);
    it_free(b);
}

static const char *gw_of(int64_t uid)
{
    static char buf[4][32];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, 32, "gw-%lld:7000", (long long)uid);
    return b;
}

/* The result is OK, the call processed, with one entry per listed id. */
static void expect_processed(const Mpim__Result *res, size_t got, size_t want)
{
    cr_assert_eq(res->code, MPIM__CODE__OK, "call: %s '%s'", pc_code_name(res->code), res->msg);
    cr_assert_eq(got, want, "%zu entries for %zu ids", got, want);
}

/* Entry i is exactly what QueryRoute(uid) answers now: code, gateway, is_online, sessions. */
static void expect_entry_is_query(struct pc_client *single, const Mpim__RouteEntry *e, int64_t uid, size_t i)
{
    cr_assert_eq(e->user_id, uid, "entry %zu is user %lld, want %lld", i, (long long)e->user_id, (long long)uid);
    if (uid <= 0) {
        cr_assert_eq(e->code, MPIM__CODE__INVALID, "entry %zu (user %lld): %s", i, (long long)uid,
                     pc_code_name(e->code));
        cr_assert(!e->is_online && e->gateway_addr.len == 0 && e->n_sessions == 0);
        return;
    }
    Mpim__QueryRouteResp *q = it_query(single, uid);
    cr_assert_eq(e->code, q->result->code, "entry %zu (user %lld): %s, the single call %s", i, (long long)uid,
                 pc_code_name(e->code), pc_code_name(q->result->code));
    cr_assert_eq(e->gateway_addr.len, q->gateway_addr.len, "entry %zu (user %lld) gateway", i, (long long)uid);
    cr_assert(e->gateway_addr.len == 0 || memcmp(e->gateway_addr.data, q->gateway_addr.data, e->gateway_addr.len) == 0,
              "entry %zu (user %lld) gateway '%.*s'", i, (long long)uid, (int)e->gateway_addr.len,
              e->gateway_addr.data);
    cr_assert_eq(e->is_online, q->is_online, "entry %zu (user %lld) is_online", i, (long long)uid);
    cr_assert_eq(e->n_sessions, q->n_sessions, "entry %zu (user %lld) sessions", i, (long long)uid);
    for (size_t k = 0; k < e->n_sessions; k++) {
        const Mpim__Session *a = e->sessions[k], *b = q->sessions[k];
        cr_assert_str_eq(a->device_id, b->device_id);
        cr_assert_str_eq(a->gateway_addr, b->gateway_addr);
        cr_assert_eq(a->platform, b->platform);
        cr_assert_eq(a->epoch, b->epoch);
        cr_assert_eq(a->last_seen_ms, b->last_seen_ms);
    }
    it_free(q);
}

static void expect_timestamp_now(int64_t ts)
{
    int64_t now = it_now_ms();
    cr_assert(ts > now - 5000 && ts < now + 5000, "timestamp %lld is not now (%lld)", (long long)ts, (long long)now);
}

/* One series of a fresh /metrics scrape; 0 if absent. */
static double series(const char *name)
{
    double v = it_metric_series(&FX.srv, name);
    return v != v ? 0 : v; /* NAN: not emitted yet */
}

/* ------------------------------------------------------------ BatchQueryRoute */

IT(batch, query_answers_each_id_in_order_as_its_single_call_would)
{
    start(4);
    struct pc_client *c = it_connect();
    bind_ok(c, 3, gw_of(3));
    bind_ok(c, 1, gw_of(1));
    Mpim__BindRouteReq second = MPIM__BIND_ROUTE_REQ__INIT; /* a second device: two sessions */
    second.user_id = 1;
    second.gateway_addr = it_bytes("gw-phone:1");
    second.device_id = (ProtobufCBinaryData){5, (uint8_t *)"phone"}; /* bytes (proto: device_id) */
    second.platform = 2;
    ProtobufCMessage *m = NULL;
    cr_assert_eq(pc_call(c, PR_METHOD_BIND, &second.base, &m), 0);
    protobuf_c_message_free_unpacked(m, NULL);
    it_rcmd(R(), 0, "SET user:route:2 gw-direct:9"); /* a route set by anyone else: visible at once */

    const int64_t ids[] = {3, 100, 1, -5, 0, 2, 100, INT64_MIN, 3};
    const size_t n = sizeof(ids) / sizeof(ids[0]);
    Mpim__BatchQueryRouteResp *r = batch_query(c, ids, n);
    expect_processed(r->result, r->n_routes, n);
    for (size_t i = 0; i < n; i++)
        expect_entry_is_query(c, r->routes[i], ids[i], i);
    cr_assert(r->routes[0]->is_online && r->routes[8]->is_online, "user 3 is online, both times listed");
    cr_assert_eq(r->routes[2]->n_sessions, 2, "user 1 has two sessions");
    cr_assert_eq(r->routes[1]->code, MPIM__CODE__NOT_FOUND);
    it_free(r);

    /* Counted once per call, like every method; each listed valid id is one route lookup. */
    cr_assert_eq(series("impresence_requests_total{method=\"BatchQueryRoute\",code=\"OK\"}"), 1);
    pc_close(c);
}

IT(batch, repeated_ids_are_repeated_lookups)
{
    start(2);
    struct pc_client *c = it_connect();
    bind_ok(c, 7, gw_of(7));
    double hits = series("impresence_route_lookups_total{result=\"hit\"}");
    double misses = series("impresence_route_lookups_total{result=\"miss\"}");
    const int64_t ids[] = {7, 7, 8, 7, 8};
    Mpim__BatchQueryRouteResp *r = batch_query(c, ids, 5);
    expect_processed(r->result, r->n_routes, 5);
    for (size_t i = 0; i < 5; i++) {
        cr_assert_eq(r->routes[i]->user_id, ids[i]);
        cr_assert_eq(r->routes[i]->code, ids[i] == 7 ? MPIM__CODE__OK : MPIM__CODE__NOT_FOUND, "entry %zu", i);
        cr_assert(ids[i] != 7 || it_bytes_eq(r->routes[i]->gateway_addr, gw_of(7)));
    }
    it_free(r);
    cr_assert_eq(series("impresence_route_lookups_total{result=\"hit\"}") - hits, 3, "7 listed three times");
    cr_assert_eq(series("impresence_route_lookups_total{result=\"miss\"}") - misses, 2, "8 listed twice");
    pc_close(c);
}

IT(batch, empty_list_is_ok_with_no_entries)
{
    start(2);
    struct pc_client *c = it_connect();
    Mpim__BatchQueryRouteResp *q = batch_query(c, NULL, 0);
    expect_processed(q->result, q->n_routes, 0);
    it_free(q);
    Mpim__BatchDeliverResp *d = batch_deliver(c, "hello", NULL, 0);
    expect_processed(d->result, d->n_results, 0);
    expect_timestamp_now(d->timestamp);
    it_free(d);
    cr_assert_eq(series("impresence_requests_total{method=\"BatchDeliver\",code=\"OK\"}"), 1);
    pc_close(c);
}

/* Users spread over every shard of 4; a list of 1000 (the default max_batch) is more than
 * BATCH_STEP ids per shard, so each part is served in several steps. */
IT(batch, a_batch_spanning_every_shard_and_the_default_limit)
{
    enum { SHARDS = 4, N = 1000 };
    start(SHARDS);
    struct pc_client *c = it_connect();
    int64_t ids[N];
    int per_shard[SHARDS] = {0};
    for (int i = 0; i < N; i++) {
        ids[i] = 5000 + (i * 7919) % 1500; /* some repeated, in no particular order */
        per_shard[hash_shard(ids[i], SHARDS)]++;
    }
    for (int s = 0; s < SHARDS; s++)
        cr_assert_gt(per_shard[s], 64, "shard %d gets %d ids: want several steps on each", s, per_shard[s]);
    for (int64_t uid = 5000; uid < 6500; uid += 3)
        bind_ok(c, uid, gw_of(uid));

    Mpim__BatchQueryRouteResp *r = batch_query(c, ids, N);
    expect_processed(r->result, r->n_routes, N);
    for (int i = 0; i < N; i++) {
        const Mpim__RouteEntry *e = r->routes[i];
        bool online = (ids[i] - 5000) % 3 == 0;
        cr_assert_eq(e->user_id, ids[i], "entry %d", i);
        cr_assert_eq(e->code, online ? MPIM__CODE__OK : MPIM__CODE__NOT_FOUND, "entry %d (user %lld): %s", i,
                     (long long)ids[i], pc_code_name(e->code));
        cr_assert_eq(e->is_online, online);
        cr_assert(!online || it_bytes_eq(e->gateway_addr, gw_of(ids[i])), "entry %d gateway", i);
    }
    it_free(r);
    /* A sample compared with the single call field by field. */
    for (int i = 0; i < N; i += 97) {
        r = batch_query(c, &ids[i], 1);
        expect_entry_is_query(c, r->routes[0], ids[i], (size_t)i);
        it_free(r);
    }
    pc_close(c);
}

/* §7: "each user's part runs after that user's earlier requests on the same connection". All in
 * one pipeline, users on every shard: a batch sees the Binds and Unbinds sent before it. */
IT(batch, ids_run_after_that_users_earlier_requests_on_the_connection)
{
    enum { SHARDS = 4, USERS = 40, ROUNDS = 5 };
    start(SHARDS);
    const char *ch[USERS / 4 + 1];
    char names[USERS / 4][32];
    for (int i = 0; i < USERS / 4; i++) {
        snprintf(names[i], sizeof(names[i]), "user:%d", 700 + 4 * i);
        ch[i] = names[i];
    }
    ch[USERS / 4] = NULL;
    struct it_sub *sub = it_sub_open(FX.queue.port, ch);
    struct pc_client *c = it_connect();
    int64_t ids[USERS];
    for (int i = 0; i < USERS; i++)
        ids[i] = 700 + i;
    int delivered_want = 0;
    for (int round = 0; round < ROUNDS; round++) {
        char gw[32];
        snprintf(gw, sizeof(gw), "gw-round-%d:1", round);
        /* Bind every user, query them all, unbind the odd ones, query and deliver again. */
        for (int i = 0; i < USERS; i++) {
            Mpim__BindRouteReq b = MPIM__BIND_ROUTE_REQ__INIT;
            b.user_id = ids[i];
            b.gateway_addr = it_bytes(gw);
            cr_assert_eq(pc_send(c, PR_METHOD_BIND, &b.base), 0);
        }
        send_batch_query(c, ids, USERS);
        for (int i = 1; i < USERS; i += 2) {
            Mpim__UnbindRouteReq u = MPIM__UNBIND_ROUTE_REQ__INIT;
            u.user_id = ids[i];
            u.gateway_addr = it_bytes(gw);
            cr_assert_eq(pc_send(c, PR_METHOD_UNBIND, &u.base), 0);
        }
        send_batch_query(c, ids, USERS);
        send_batch_deliver(c, "m", 1, ids, USERS);
        for (int i = 0; i < USERS; i += 2) { /* unbind the rest: next round starts offline */
            Mpim__UnbindRouteReq u = MPIM__UNBIND_ROUTE_REQ__INIT;
            u.user_id = ids[i];
            u.gateway_addr = it_bytes(gw);
            cr_assert_eq(pc_send(c, PR_METHOD_UNBIND, &u.base), 0);
        }
        send_batch_query(c, ids, USERS);
        cr_assert_eq(pc_flush(c), 0, "%s", pc_error(c));

        for (int i = 0; i < USERS; i++) {
            Mpim__BindRouteResp *b = (Mpim__BindRouteResp *)it_recv(c, PR_METHOD_BIND);
            cr_assert_eq(b->result->code, MPIM__CODE__OK);
            it_free(b);
        }
        Mpim__BatchQueryRouteResp *q = recv_batch_query(c);
        expect_processed(q->result, q->n_routes, USERS);
        for (int i = 0; i < USERS; i++)
            cr_assert(q->routes[i]->code == MPIM__CODE__OK && it_bytes_eq(q->routes[i]->gateway_addr, gw),
                      "round %d: user %lld bound just before the batch: %s", round, (long long)ids[i],
                      pc_code_name(q->routes[i]->code));
        it_free(q);
        for (int i = 1; i < USERS; i += 2) {
            Mpim__UnbindRouteResp *u = (Mpim__UnbindRouteResp *)it_recv(c, PR_METHOD_UNBIND);
            cr_assert(u->result->code == MPIM__CODE__OK && u->unbound);
            it_free(u);
        }
        q = recv_batch_query(c);
        expect_processed(q->result, q->n_routes, USERS);
        for (int i = 0; i < USERS; i++)
            cr_assert_eq(q->routes[i]->code, i % 2 == 0 ? MPIM__CODE__OK : MPIM__CODE__NOT_FOUND,
                         "round %d: user %lld after the unbinds: %s", round, (long long)ids[i],
                         pc_code_name(q->routes[i]->code));
        it_free(q);
        Mpim__BatchDeliverResp *d = recv_batch_deliver(c);
        expect_processed(d->result, d->n_results, USERS);
        for (int i = 0; i < USERS; i++) {
            cr_assert_eq(d->results[i]->code, i % 2 == 0 ? MPIM__CODE__OK : MPIM__CODE__NOT_FOUND,
                         "round %d: deliver to user %lld: %s", round, (long long)ids[i],
                         pc_code_name(d->results[i]->code));
            cr_assert_eq(d->results[i]->delivered, i % 4 == 0, "round %d user %lld: subscribed iff id %% 4 == 0",
                         round, (long long)ids[i]);
            delivered_want += i % 4 == 0;
        }
        it_free(d);
        for (int i = 0; i < USERS; i += 2) {
            Mpim__UnbindRouteResp *u = (Mpim__UnbindRouteResp *)it_recv(c, PR_METHOD_UNBIND);
            cr_assert(u->result->code == MPIM__CODE__OK && u->unbound);
            it_free(u);
        }
        q = recv_batch_query(c);
        for (int i = 0; i < USERS; i++)
            cr_assert_eq(q->routes[i]->code, MPIM__CODE__NOT_FOUND, "round %d: user %lld after logout", round,
                         (long long)ids[i]);
        it_free(q);
    }
    /* The subscribed users got exactly one message per round. */
    for (int k = 0; k < delivered_want; k++) {
        struct it_msg msg;
        cr_assert_eq(it_sub_next(sub, &msg, 5000), 1, "message %d of %d missing", k + 1, delivered_want);
        cr_assert_str_eq(msg.data, "m");
        free(msg.data);
    }
    for (int i = 0; i < USERS / 4; i++)
        it_sub_expect_nothing(sub, names[i]);
    it_sub_close(sub);
    pc_close(c);
}

/* ------------------------------------------------------------ BatchDeliver */

IT(batch, deliver_publishes_exactly_once_per_listing_of_a_bound_id)
{
    start(4);
    /* 11, 12, 13, 16 subscribed; 11-14 bound (14 without a subscriber), 16 not bound. */
    const char *ch[] = {"user:11", "user:12", "user:13", "user:16", NULL};
    struct it_sub *sub = it_sub_open(FX.queue.port, ch);
    struct pc_client *c = it_connect();
    for (int64_t uid = 11; uid <= 14; uid++)
        bind_ok(c, uid, gw_of(uid));
    double delivered0 = series("impresence_deliveries_total{result=\"delivered\"}");

    const int64_t ids[] = {11, 12, 16, 11, -1, 13, 14, 11, 0};
    const size_t n = sizeof(ids) / sizeof(ids[0]);
    const char payload[] = "group\0message"; /* binary: passed through exactly */
    send_batch_deliver(c, payload, sizeof(payload) - 1, ids, n);
    cr_assert_eq(pc_flush(c), 0);
    Mpim__BatchDeliverResp *d = recv_batch_deliver(c);
    expect_processed(d->result, d->n_results, n);
    expect_timestamp_now(d->timestamp);
    static const struct {
        int code;
        bool delivered;
    } want[] = {
        {MPIM__CODE__OK, true},         {MPIM__CODE__OK, true},      {MPIM__CODE__NOT_FOUND, false},
        {MPIM__CODE__OK, true},         {MPIM__CODE__INVALID, false}, {MPIM__CODE__OK, true},
        {MPIM__CODE__OK, false},        {MPIM__CODE__OK, true},      {MPIM__CODE__INVALID, false},
    };
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(d->results[i]->user_id, ids[i], "entry %zu", i);
        cr_assert_eq((int)d->results[i]->code, want[i].code, "entry %zu (user %lld): %s", i, (long long)ids[i],
                     pc_code_name(d->results[i]->code));
        cr_assert_eq(d->results[i]->delivered, want[i].delivered, "entry %zu (user %lld) delivered", i,
                     (long long)ids[i]);
    }
    it_free(d);

    /* Exactly: user:11 three times, user:12 and user:13 once, user:16 never. */
    int got[17] = {0};
    for (int k = 0; k < 5; k++) {
        struct it_msg m;
        cr_assert_eq(it_sub_next(sub, &m, 5000), 1, "message %d of 5 missing", k + 1);
        cr_assert_eq(m.len, sizeof(payload) - 1);
        cr_assert_eq(memcmp(m.data, payload, m.len), 0, "payload changed");
        int uid = atoi(m.channel + 5);
        cr_assert(uid >= 11 && uid <= 16, "channel %s", m.channel);
        got[uid]++;
        free(m.data);
    }
    cr_assert(got[11] == 3 && got[12] == 1 && got[13] == 1 && got[16] == 0, "per channel: 11:%d 12:%d 13:%d 16:%d",
              got[11], got[12], got[13], got[16]);
    for (int i = 0; ch[i] != NULL; i++)
        it_sub_expect_nothing(sub, ch[i]);
    it_sub_close(sub);
    cr_assert_eq(series("impresence_deliveries_total{result=\"delivered\"}") - delivered0, 5);
    cr_assert_eq(series("impresence_requests_total{method=\"BatchDeliver\",code=\"OK\"}"), 1);
    cr_assert_eq(series("impresence_requests_total{method=\"Deliver\",code=\"OK\"}"), 0,
                 "a batch's ids are not counted as calls of their own");
    pc_close(c);
}

/* max_batch + 1 ids, or a message over max_message_bytes: INVALID for the whole call, no entries,
 * nothing published; exactly the limit is served. */
IT(batch, over_the_limits_is_invalid_and_does_nothing)
{
    enum { MAX = 8 };
    it_config_set(&FX.cfg, "presence_service", "max_batch", "%d", MAX);
    it_config_set(&FX.cfg, "presence_service", "max_message_bytes", "16");
    start(2);
    const char *ch[] = {"user:21", "user:22", NULL};
    struct it_sub *sub = it_sub_open(FX.queue.port, ch);
    struct pc_client *c = it_connect();
    bind_ok(c, 21, gw_of(21));
    bind_ok(c, 22, gw_of(22));
    double lookups = series("impresence_route_lookups_total{result=\"hit\"}");
    int64_t ids[MAX + 1];
    for (int i = 0; i <= MAX; i++)
        ids[i] = 21 + i % 2;

    Mpim__BatchDeliverResp *d = batch_deliver(c, "too many", ids, MAX + 1);
    cr_assert_eq(d->result->code, MPIM__CODE__INVALID, "%s", pc_code_name(d->result->code));
    cr_assert_not_null(strstr(d->result->msg, "max_batch"), "msg '%s'", d->result->msg);
    cr_assert_eq(d->n_results, 0);
    expect_timestamp_now(d->timestamp);
    it_free(d);
    Mpim__BatchQueryRouteResp *q = batch_query(c, ids, MAX + 1);
    cr_assert_eq(q->result->code, MPIM__CODE__INVALID);
    cr_assert_eq(q->n_routes, 0);
    it_free(q);
    d = batch_deliver(c, "seventeen bytes!!", ids, 2);
    cr_assert_eq(d->result->code, MPIM__CODE__INVALID);
    cr_assert_not_null(strstr(d->result->msg, "message"), "msg '%s'", d->result->msg);
    cr_assert_eq(d->n_results, 0);
    expect_timestamp_now(d->timestamp);
    it_free(d);
    cr_assert_eq(series("impresence_route_lookups_total{result=\"hit\"}"), lookups, "nothing was looked up");
    it_sub_expect_nothing(sub, "user:21");
    it_sub_expect_nothing(sub, "user:22");

    /* Exactly at the limits: served. */
    d = batch_deliver(c, "sixteen bytes!!!", ids, MAX);
    expect_processed(d->result, d->n_results, MAX);
    for (int i = 0; i < MAX; i++)
        cr_assert_eq(d->results[i]->code, MPIM__CODE__OK);
    it_free(d);
    for (int k = 0; k < MAX; k++) {
        struct it_msg m;
        cr_assert_eq(it_sub_next(sub, &m, 5000), 1, "message %d of %d missing", k + 1, MAX);
        cr_assert_str_eq(m.data, "sixteen bytes!!!");
        free(m.data);
    }
    it_sub_expect_nothing(sub, "user:21");
    it_sub_expect_nothing(sub, "user:22");
    it_sub_close(sub);
    cr_assert_eq(series("impresence_requests_total{method=\"BatchDeliver\",code=\"INVALID\"}"), 2);
    cr_assert_eq(series("impresence_requests_total{method=\"BatchQueryRoute\",code=\"INVALID\"}"), 1);
    pc_close(c);
}

/* A shard that already holds queue_depth requests takes no part: that part's ids are answered
 * OVERLOADED, the rest as usual, and the call still gets exactly one answer. */
IT(batch, a_part_no_shard_can_take_is_answered_overloaded_per_entry)
{
    enum { SHARDS = 2, N = 20 };
    it_config_set(&FX.cfg, "presence_service", "queue_depth", "1");
    /* Redis is paused below: a timeout that outlasts the test's steps. */
    it_config_set(&FX.cfg, "redis_cache", "timeout", "%d", 20000 * IT_SLOW);
    it_config_set(&FX.cfg, "redis_queue", "timeout", "%d", 20000 * IT_SLOW);
    it_config_set(&FX.cfg, "presence_service", "thread_count", "%d", SHARDS);
    fx_start_server_linked(); /* every link up before Redis pauses */
    int64_t ids[N + 1];
    bool on[SHARDS] = {false};
    for (int i = 0; i < N; i++) {
        ids[i] = 300 + i;
        on[hash_shard(ids[i], SHARDS)] = true;
    }
    ids[N] = -7;
    cr_assert(on[0] && on[1], "the ids span both shards");
    struct pc_client *a = it_connect(), *b = it_connect();

    /* Batch A fills both shards (one part each) while Redis cannot answer. */
    it_redis_pause(&FX.cache);
    send_batch_query(a, ids, N);
    cr_assert_eq(pc_flush(a), 0);
    it_wait_metric(&FX.srv, "impresence_shard_inflight", SHARDS, 5000 * IT_SLOW);
    /* Batch B on another connection: both parts refused, answered at once. */
    Mpim__BatchQueryRouteResp *r = batch_query(b, ids, N + 1);
    expect_processed(r->result, r->n_routes, N + 1);
    cr_assert_not_null(strstr(r->result->msg, "OVERLOADED"), "msg '%s'", r->result->msg);
    for (int i = 0; i < N; i++)
        cr_assert_eq(r->routes[i]->code, MPIM__CODE__OVERLOADED, "entry %d: %s", i, pc_code_name(r->routes[i]->code));
    cr_assert_eq(r->routes[N]->code, MPIM__CODE__INVALID, "an invalid id stays INVALID");
    it_free(r);
    it_redis_resume(&FX.cache);

    r = recv_batch_query(a);
    expect_processed(r->result, r->n_routes, N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(r->routes[i]->code, MPIM__CODE__NOT_FOUND, "entry %d: %s", i, pc_code_name(r->routes[i]->code));
    it_free(r);
    it_wait_metric(&FX.srv, "impresence_shard_inflight", 0, 5000 * IT_SLOW);
    pc_close(a);
    pc_close(b);
}

/* SIGTERM while a batch's parts wait on a hung Redis: the call is still answered, once, each id
 * as its single call would be (UNAVAILABLE after the timeout), and the server exits 0. */
IT(batch, shutdown_answers_a_batch_in_flight)
{
    enum { SHARDS = 2, N = 10 };
    it_config_set(&FX.cfg, "presence_service", "thread_count", "%d", SHARDS);
    it_config_set(&FX.cfg, "redis_cache", "timeout", "%d", 1000 * IT_SLOW);
    it_config_set(&FX.cfg, "redis_queue", "timeout", "%d", 1000 * IT_SLOW);
    fx_start_server_linked();
    struct pc_client *c = it_connect();
    int64_t ids[N];
    bool on[SHARDS] = {false};
    int parts = 0;
    for (int i = 0; i < N; i++) {
        ids[i] = 51 + i;
        bind_ok(c, ids[i], gw_of(ids[i]));
        uint32_t s = hash_shard(ids[i], SHARDS);
        parts += !on[s];
        on[s] = true;
    }
    it_redis_pause(&FX.cache);
    send_batch_deliver(c, "bye", 3, ids, N);
    cr_assert_eq(pc_flush(c), 0);
    it_wait_metric(&FX.srv, "impresence_shard_inflight", parts, 5000 * IT_SLOW);
    cr_assert_eq(kill(FX.srv.pid, SIGTERM), 0);
    Mpim__BatchDeliverResp *d = recv_batch_deliver(c);
    expect_processed(d->result, d->n_results, N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(d->results[i]->code, MPIM__CODE__UNAVAILABLE, "entry %d: %s", i, pc_code_name(d->results[i]->code));
    cr_assert_not_null(strstr(d->result->msg, "unavailable"), "the first failure is named: '%s'", d->result->msg);
    it_free(d);
    it_redis_resume(&FX.cache);
    it_server_stop_clean(&FX.srv);
    pc_close(c);
}

/* dialect = mpim: each id's publish goes where its single Deliver's would, the gateway's channel. */
IT(batch, mpim_dialect_delivers_on_the_gateways_channel)
{
    it_config_set(&FX.cfg, "presence_service", "dialect", "mpim");
    start(2);
    const char *gw = "10.0.0.5:9000";
    char channel[16];
    snprintf(channel, sizeof(channel), "%u", mpim_gateway_channel(gw, strlen(gw)));
    const char *ch[] = {channel, NULL};
    struct it_sub *sub = it_sub_open(FX.queue.port, ch);
    struct pc_client *c = it_connect();
    bind_ok(c, 31, gw);
    bind_ok(c, 32, gw);
    const int64_t ids[] = {31, 33, 32, 31};
    Mpim__BatchDeliverResp *d = batch_deliver(c, "payload", ids, 4);
    expect_processed(d->result, d->n_results, 4);
    cr_assert(d->results[0]->delivered && d->results[2]->delivered && d->results[3]->delivered);
    cr_assert_eq(d->results[1]->code, MPIM__CODE__NOT_FOUND);
    it_free(d);
    for (int k = 0; k < 3; k++)
        it_sub_expect(sub, channel, "payload", 7);
    it_sub_expect_nothing(sub, channel);
    it_sub_close(sub);
    pc_close(c);
}

/* ------------------------------------------------------------ CLI (§5) */

static int cli(char **out, const char *const *args)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", FX.srv.port);
    const char *argv[16] = {it_cli_bin(), "-p", port};
    int n = 3;
    for (int i = 0; args[i] != NULL && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return it_run(argv, out, NULL, 10000 * IT_SLOW);
}

IT(batch, cli_batch_query_and_batch_deliver_print_one_line_per_id)
{
    start(2);
    struct pc_client *c = it_connect();
    bind_ok(c, 42, "gw-1:7000");
    pc_close(c);
    char *out = NULL;
    const char *q[] = {"batch-query", "42", "7", "-1", NULL};
    cr_assert_eq(cli(&out, q), 0, "%s", out);
    cr_assert_str_eq(out, "OK entries=3\n"
                          "  user=42 OK gateway=gw-1:7000 online=yes sessions=1\n"
                          "  user=7 NOT_FOUND online=no\n"
                          "  user=-1 INVALID online=no\n");
    free(out);
    const char *d[] = {"batch-deliver", "hello", "42", "7", NULL};
    cr_assert_eq(cli(&out, d), 0, "%s", out);
    const char *lines = strchr(out, '\n');
    cr_assert(strncmp(out, "OK entries=2 timestamp=", 23) == 0, "%s", out);
    cr_assert_str_eq(lines, "\n  user=42 OK delivered=no\n  user=7 NOT_FOUND delivered=no\n");
    free(out);
    const char *bad[] = {"batch-deliver", "hello", NULL};
    cr_assert_eq(cli(&out, bad), 2, "no UID: a usage error");
    free(out);
    const char *bad_uid[] = {"batch-query", "1", "x", NULL};
    cr_assert_eq(cli(&out, bad_uid), 2);
    free(out);
}

/* ------------------------------------------------------------ Redis Cluster (§10) */

/* mode = cluster: each id of a part goes to its own slot's master, like its single call. */
Test(batch_cluster, each_id_goes_to_its_own_slot, .fini = fx_fini, .timeout = 2 * IT_TIMEOUT)
{
    fx_init_cluster();
    fx_start_server_linked();
    int owner[TP_CLUSTER_SLOTS], replica[TP_CLUSTER_SLOTS];
    cr_assert_eq(tp_cluster_slots_at(FX.cluster.node[0].r.port, owner, replica), TP_CLUSTER_SLOTS);
    struct pc_client *c = it_connect();
    enum { N = 60 };
    int64_t ids[N];
    int masters[8], nmasters = 0;
    for (int i = 0; i < N; i++) {
        ids[i] = 9000 + i;
        char tag[24];
        int len = snprintf(tag, sizeof(tag), "%lld", (long long)ids[i]);
        int port = owner[cluster_keyslot(tag, (size_t)len)];
        bool known = false;
        for (int k = 0; k < nmasters; k++)
            known = known || masters[k] == port;
        if (!known && nmasters < 8)
            masters[nmasters++] = port;
        if (i % 2 == 0)
            bind_ok(c, ids[i], gw_of(ids[i]));
    }
    cr_assert_geq(nmasters, 3, "the users live on every master");
    Mpim__BatchQueryRouteResp *r = batch_query(c, ids, N);
    expect_processed(r->result, r->n_routes, N);
    for (int i = 0; i < N; i++)
        expect_entry_is_query(c, r->routes[i], ids[i], (size_t)i);
    it_free(r);
    /* A PUBLISH reaches every node of a cluster: one subscriber sees each message once. */
    const char *ch[] = {"user:9000", "user:9001", NULL};
    struct it_sub *sub = it_sub_open(FX.cluster.node[FX.cluster.n - 1].r.port, ch);
    Mpim__BatchDeliverResp *d = batch_deliver(c, "hi", ids, N);
    expect_processed(d->result, d->n_results, N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(d->results[i]->code, i % 2 == 0 ? MPIM__CODE__OK : MPIM__CODE__NOT_FOUND, "entry %d: %s '%s'",
                     i, pc_code_name(d->results[i]->code), d->result->msg);
    it_free(d);
    it_sub_expect(sub, "user:9000", "hi", 2);
    it_sub_expect_nothing(sub, "user:9000");
    it_sub_expect_nothing(sub, "user:9001");
    it_sub_close(sub);
    /* Every id's commands went straight to its slot's master: no redirect was needed. */
    cr_assert_eq(series("impresence_redis_cluster_redirects_total{role=\"cache\",kind=\"moved\"}"), 0);
    cr_assert_eq(series("impresence_redis_cluster_redirects_total{role=\"queue\",kind=\"moved\"}"), 0);
    pc_close(c);
    fx_check_clean_exit();
}
