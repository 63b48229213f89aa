/* Contract §6 (and §3 for device ""): several sessions per user, epochs, login policies, kicks,
 * fencing, expiry, a legacy client, bad input, concurrency and the CLI, through real sockets
 * against the real server and a real Redis (keys, TTLs and Pub/Sub seen by real SUBSCRIBEs).
 *
 * Every test starts its own server (the policy and TTLs differ); waits are conditions with a
 * deadline. Times: last_seen_ms comes from the Redis clock, on this machine the test's clock, so a
 * session bound between t0 and t1 (it_now_ms) has t0 <= last_seen_ms <= t1. */
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"

/* Route and status get different TTLs, so each key is seen renewed to its own. */
#define ROUTE_TTL 300
#define STATUS_TTL 120

TestSuite(sessions, .init = fx_init_redis, .fini = fx_fini, .timeout = IT_TIMEOUT);

static int R(void)
{
    return FX.cache.port;
}

/* FX.srv with this policy (NULL: the default) and TTLs. */
static void start_server(const char *policy, int route_ttl, int status_ttl)
{
    if (policy != NULL)
        it_config_set(&FX.cfg, "route", "login_policy", "%s", policy);
    it_config_set(&FX.cfg, "route", "route_ttl", "%d", route_ttl);
    it_config_set(&FX.cfg, "route", "status_ttl", "%d", status_ttl);
    fx_start_server();
}

/* A second instance on the same Redis as FX.srv, with its own port and policy. */
static void start_second(struct it_server *s2, const char *policy)
{
    struct it_config c2 = FX.cfg;
    it_config_set(&c2, "presence_service", "port", "0");
    if (policy != NULL)
        it_config_set(&c2, "route", "login_policy", "%s", policy);
    memset(s2, 0, sizeof(*s2));
    it_server_start(s2, &c2, NULL);
}

static const char *key(const char *kind, int64_t uid)
{
    static char buf[8][48];
    static int next;
    char *b = buf[next++ % 8];
    snprintf(b, 48, "user:%s:%lld", kind, (long long)uid);
    return b;
}

/* ------------------------------------------------------------- typed calls with the new fields */

static Mpim__BindRouteResp *bind_dev(struct pc_client *c, int64_t uid, const char *gw, const char *dev,
                                     int32_t platform)
{
    Mpim__BindRouteReq q = MPIM__BIND_ROUTE_REQ__INIT;
    q.user_id = uid;
    q.gateway_addr = it_bytes(gw);
    q.device_id = (ProtobufCBinaryData){strlen(dev), (uint8_t *)dev};
    q.platform = platform;
    Mpim__BindRouteResp *r = it_call(c, PR_METHOD_BIND, &q.base);
    cr_assert_not_null(r->result);
    return r;
}

static Mpim__UnbindRouteResp *unbind_dev(struct pc_client *c, int64_t uid, const char *gw, const char *dev,
                                         int64_t epoch)
{
    Mpim__UnbindRouteReq q = MPIM__UNBIND_ROUTE_REQ__INIT;
    q.user_id = uid;
    q.gateway_addr = it_bytes(gw);
    q.device_id = (ProtobufCBinaryData){strlen(dev), (uint8_t *)dev};
    q.epoch = epoch;
    Mpim__UnbindRouteResp *r = it_call(c, PR_METHOD_UNBIND, &q.base);
    cr_assert_not_null(r->result);
    return r;
}

static Mpim__HeartbeatResp *heartbeat_dev(struct pc_client *c, int64_t uid, const char *gw, const char *dev,
                                          int64_t epoch)
{
    Mpim__HeartbeatReq q = MPIM__HEARTBEAT_REQ__INIT;
    q.user_id = uid;
    q.gateway_addr = it_bytes(gw);
    q.device_id = (ProtobufCBinaryData){strlen(dev), (uint8_t *)dev};
    q.epoch = epoch;
    Mpim__HeartbeatResp *r = it_call(c, PR_METHOD_HEARTBEAT, &q.base);
    cr_assert_not_null(r->result);
    return r;
}

/* What the test knows of one session: what it bound, the epoch it got, and when it was last seen
 * (between seen_lo and seen_hi). */
struct sess {
    const char *dev;
    const char *gw;
    int platform;
    int64_t epoch;
    int64_t seen_lo, seen_hi;
};

/* Bind and return the answer (OK asserted); *s filled in. */
static Mpim__BindRouteResp *bind_rec(struct pc_client *c, int64_t uid, struct sess *s, const char *dev,
                                     const char *gw, int platform)
{
    s->dev = dev;
    s->gw = gw;
    s->platform = platform;
    s->seen_lo = it_now_ms();
    Mpim__BindRouteResp *b = bind_dev(c, uid, gw, dev, platform);
    s->seen_hi = it_now_ms();
    cr_assert_eq(b->result->code, MPIM__CODE__OK, "bind %lld device '%s' %s: %s %s", (long long)uid, dev, gw,
                 pc_code_name(b->result->code), b->result->msg);
    cr_assert_str_eq(b->route_key, key("route", uid));
    cr_assert_gt(b->epoch, 0, "bind of device '%s' answered epoch %lld", dev, (long long)b->epoch);
    s->epoch = b->epoch;
    return b;
}

/* Bind that must displace nothing. */
static void bind_new(struct pc_client *c, int64_t uid, struct sess *s, const char *dev, const char *gw,
                     int platform)
{
    Mpim__BindRouteResp *b = bind_rec(c, uid, s, dev, gw, platform);
    cr_assert_eq(b->n_displaced, 0,
                 "bind of device '%s' displaced %zu session(s), the first device '%s' epoch %lld", dev,
                 b->n_displaced, b->n_displaced ? b->displaced[0]->device_id : "",
                 b->n_displaced ? (long long)b->displaced[0]->epoch : 0LL);
    it_free(b);
}

static void heartbeat_rec(struct pc_client *c, int64_t uid, struct sess *s)
{
    int64_t lo = it_now_ms();
    Mpim__HeartbeatResp *h = heartbeat_dev(c, uid, s->gw, s->dev, s->epoch);
    int64_t hi = it_now_ms();
    cr_assert_eq(h->result->code, MPIM__CODE__OK, "%s", h->result->msg);
    cr_assert(h->refreshed, "heartbeat of live device '%s' epoch %lld not refreshed", s->dev,
              (long long)s->epoch);
    it_free(h);
    s->seen_lo = lo;
    s->seen_hi = hi;
}

static void expect_session(const Mpim__Session *got, const struct sess *want, const char *what, size_t i)
{
    cr_assert_str_eq(got->device_id, want->dev, "%s[%zu]: device '%s', want '%s'", what, i, got->device_id,
                     want->dev);
    cr_assert_str_eq(got->gateway_addr, want->gw, "%s[%zu] (%s): gateway '%s', want '%s'", what, i, want->dev,
                     got->gateway_addr, want->gw);
    cr_assert_eq(got->platform, want->platform, "%s[%zu] (%s): platform %d, want %d", what, i, want->dev,
                 got->platform, want->platform);
    cr_assert_eq(got->epoch, want->epoch, "%s[%zu] (%s): epoch %lld, want %lld", what, i, want->dev,
                 (long long)got->epoch, (long long)want->epoch);
    cr_assert(got->last_seen_ms >= want->seen_lo && got->last_seen_ms <= want->seen_hi,
              "%s[%zu] (%s): last_seen_ms %lld, want within [%lld, %lld]", what, i, want->dev,
              (long long)got->last_seen_ms, (long long)want->seen_lo, (long long)want->seen_hi);
}

/* QueryRoute answers route gateway gw (NULL: offline) and exactly the sessions want[0..n), in
 * that order (highest epoch first). */
static void expect_query(struct pc_client *c, int64_t uid, const char *gw, const struct sess *const *want,
                         size_t n)
{
    Mpim__QueryRouteResp *q = it_query(c, uid);
    if (gw == NULL) {
        cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND, "query %lld: %s, want NOT_FOUND", (long long)uid,
                     pc_code_name(q->result->code));
        cr_assert_not(q->is_online);
        cr_assert_eq(q->gateway_addr.len, 0);
    } else {
        cr_assert_eq(q->result->code, MPIM__CODE__OK, "query %lld: %s %s", (long long)uid,
                     pc_code_name(q->result->code), q->result->msg);
        cr_assert(q->is_online);
        cr_assert(it_bytes_eq(q->gateway_addr, gw), "query %lld: gateway '%.*s', want '%s'", (long long)uid,
                  (int)q->gateway_addr.len, q->gateway_addr.data, gw);
    }
    cr_assert_eq(q->n_sessions, n, "query %lld: %zu sessions, want %zu", (long long)uid, q->n_sessions, n);
    for (size_t i = 0; i < n; i++)
        expect_session(q->sessions[i], want[i], "sessions", i);
    it_free(q);
}

/* BindRouteResp.displaced is exactly the set want[0..n) (the contract gives no order). */
static void expect_displaced(const Mpim__BindRouteResp *b, const struct sess *const *want, size_t n)
{
    cr_assert_eq(b->n_displaced, n, "displaced %zu session(s), want %zu", b->n_displaced, n);
    bool used[64] = {false};
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < n && (used[j] || strcmp(b->displaced[j]->device_id, want[i]->dev) != 0 ||
                         b->displaced[j]->epoch != want[i]->epoch))
            j++;
        cr_assert_lt(j, n, "device '%s' epoch %lld is not in displaced", want[i]->dev,
                     (long long)want[i]->epoch);
        used[j] = true;
        expect_session(b->displaced[j], want[i], "displaced", j);
    }
}

static void expect_value(const char *k, const char *want)
{
    char *v = it_rget(R(), 0, k, NULL);
    if (want == NULL) {
        cr_assert_null(v, "%s should not exist, holds '%s'", k, v);
        return;
    }
    cr_assert_not_null(v, "%s missing (want '%s')", k, want);
    cr_assert_str_eq(v, want, "%s holds '%s', want '%s'", k, v, want);
    free(v);
}

static void expect_ttl_near(const char *k, int ttl)
{
    long long t = it_rttl(R(), 0, k);
    cr_assert(t > ttl - 5 && t <= ttl, "TTL of %s is %lld, want about %d", k, t, ttl);
}

static long long rint_cmd(const char *fmt, ...)
{
    redisContext *rc = it_rconnect(R(), 0);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    cr_assert(r != NULL && r->type == REDIS_REPLY_INTEGER, "redis: integer reply expected");
    long long v = r->integer;
    freeReplyObject(r);
    redisFree(rc);
    return v;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The user's sessions hash as "field=value\n" lines, sorted (malloc'd; "" if none). */
static char *hash_dump(int64_t uid)
{
    redisContext *rc = it_rconnect(R(), 0);
    redisReply *r = redisCommand(rc, "HGETALL %s", key("sessions", uid));
    cr_assert(r != NULL && r->type == REDIS_REPLY_ARRAY);
    size_t n = r->elements / 2, total = 1;
    char **lines = calloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        const redisReply *f = r->element[2 * i], *v = r->element[2 * i + 1];
        size_t len = f->len + v->len + 3;
        lines[i] = malloc(len);
        snprintf(lines[i], len, "%.*s=%.*s\n", (int)f->len, f->str, (int)v->len, v->str);
        total += len;
    }
    qsort(lines, n, sizeof(char *), cmp_str);
    char *out = malloc(total);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        strcat(out, lines[i]);
        free(lines[i]);
    }
    free(lines);
    freeReplyObject(r);
    redisFree(rc);
    return out;
}

/* The hash holds exactly the sessions want[0..n), each in the stored form
 * "<epoch>|<platform>|<last_seen_ms>|<gateway>". */
static void expect_hash(int64_t uid, const struct sess *const *want, size_t n)
{
    cr_assert_eq(rint_cmd("HLEN %s", key("sessions", uid)), (long long)n,
                 "%s holds %lld fields, want %zu:\n%s", key("sessions", uid),
                 rint_cmd("HLEN %s", key("sessions", uid)), n, hash_dump(uid));
    for (size_t i = 0; i < n; i++) {
        redisContext *rc = it_rconnect(R(), 0);
        redisReply *r = redisCommand(rc, "HGET %s %s", key("sessions", uid), want[i]->dev);
        cr_assert(r != NULL && r->type == REDIS_REPLY_STRING, "no field '%s' in %s", want[i]->dev,
                  key("sessions", uid));
        long long e, t;
        int p, off = 0;
        int got = sscanf(r->str, "%lld|%d|%lld|%n", &e, &p, &t, &off);
        cr_assert(got == 3 && off > 0, "field '%s' holds '%s', not <epoch>|<platform>|<last_seen_ms>|<gw>",
                  want[i]->dev, r->str);
        cr_assert(e == want[i]->epoch && p == want[i]->platform && t >= want[i]->seen_lo &&
                      t <= want[i]->seen_hi && strcmp(r->str + off, want[i]->gw) == 0,
                  "field '%s' holds '%s', want epoch %lld platform %d last_seen in [%lld, %lld] gateway '%s'",
                  want[i]->dev, r->str, (long long)want[i]->epoch, want[i]->platform,
                  (long long)want[i]->seen_lo, (long long)want[i]->seen_hi, want[i]->gw);
        freeReplyObject(r);
        redisFree(rc);
    }
}

/* -------------------------------------------------------------------------- Pub/Sub */

static struct it_sub *sub_open(const char *channel)
{
    const char *ch[] = {channel, NULL};
    return it_sub_open(FX.queue.port, ch);
}

static void expect_route_notice(struct it_sub *s, int64_t uid, const char *gw)
{
    char want[300];
    int n = snprintf(want, sizeof(want), "%lld:%s", (long long)uid, gw != NULL ? gw : "");
    it_sub_expect(s, "presence:route", want, (size_t)n);
}

/* The next n messages on presence:kick are exactly the kicks of want[0..n) (any order), and
 * nothing else is published there. */
static void expect_kicks(struct it_sub *s, int64_t uid, const struct sess *const *want, size_t n)
{
    bool seen[64] = {false};
    for (size_t k = 0; k < n; k++) {
        struct it_msg m;
        cr_assert_eq(it_sub_next(s, &m, 3000 * IT_SLOW), 1, "kick %zu of %zu never came", k + 1, n);
        cr_assert_str_eq(m.channel, "presence:kick");
        size_t i = 0;
        for (; i < n; i++) {
            char k2[400];
            snprintf(k2, sizeof(k2), "%lld:%s:%lld:%s", (long long)uid, want[i]->dev,
                     (long long)want[i]->epoch, want[i]->gw);
            if (!seen[i] && strcmp(m.data, k2) == 0)
                break;
        }
        cr_assert_lt(i, n, "unexpected kick '%s'", m.data);
        seen[i] = true;
        free(m.data);
    }
    it_sub_expect_nothing(s, "presence:kick");
}

/* A list of sessions and its length, as the two arguments the expect_* helpers take. */
#define LIST(...)                                                                                            \
    ((const struct sess *const[]){__VA_ARGS__}),                                                             \
        (sizeof((const struct sess *const[]){__VA_ARGS__}) / sizeof(struct sess *))
#define NONE NULL, 0

/* ============================================================ several devices at once */

IT(sessions, two_then_three_devices_online_at_once_listed_highest_epoch_first)
{
    start_server(NULL, ROUTE_TTL, STATUS_TTL);
    struct it_sub *route = sub_open("presence:route"), *kick = sub_open("presence:kick");
    struct pc_client *c = it_connect();
    const int64_t U = 42;
    struct sess phone, laptop, tablet;

    bind_new(c, U, &phone, "phone-1", "gw-a:7000", 1);
    expect_route_notice(route, U, "gw-a:7000");
    bind_new(c, U, &laptop, "laptop_2.x", "gw-b:7000", 2);
    expect_route_notice(route, U, "gw-b:7000");
    cr_assert_gt(laptop.epoch, phone.epoch);

    /* Two devices: both live, the route is the newer one's gateway. */
    expect_query(c, U, "gw-b:7000", LIST(&laptop, &phone));
    expect_value(key("route", U), "gw-b:7000");
    expect_value(key("status", U), "online");
    expect_ttl_near(key("route", U), ROUTE_TTL);
    expect_ttl_near(key("status", U), STATUS_TTL);
    expect_hash(U, LIST(&phone, &laptop));

    /* A third, on platform 0 and the default device. */
    bind_new(c, U, &tablet, "", "gw-c:1", 0);
    expect_route_notice(route, U, "gw-c:1");
    cr_assert_gt(tablet.epoch, laptop.epoch);
    expect_query(c, U, "gw-c:1", LIST(&tablet, &laptop, &phone));
    expect_value(key("route", U), "gw-c:1");
    expect_hash(U, LIST(&phone, &laptop, &tablet));
    /* route, status and sessions of one user, and each gateway's session index (contract §8) */
    cr_assert_eq(it_rdbsize(R(), 0), 3 + 3, "route, status and sessions of one user, 3 gateway indexes");

    /* A heartbeat of the oldest updates its last_seen_ms only: order and route unchanged. */
    heartbeat_rec(c, U, &phone);
    expect_query(c, U, "gw-c:1", LIST(&tablet, &laptop, &phone));
    expect_hash(U, LIST(&phone, &laptop, &tablet));

    /* Multi (the default): nobody was kicked; no route notice beyond the binds. */
    it_sub_expect_nothing(kick, "presence:kick");
    it_sub_expect_nothing(route, "presence:route");
    it_sub_close(route);
    it_sub_close(kick);
    pc_close(c);
}

/* More sessions than fit the server's small fixed buffers: 40 devices listed in epoch order, then
 * one Bind under single (a second instance) ends all 40, each displaced and kicked. */
IT(sessions, forty_devices_listed_then_all_displaced_by_one_single_bind)
{
    start_server(NULL, ROUTE_TTL, STATUS_TTL);
    struct it_server single;
    start_second(&single, "single");
    struct pc_client *c = it_connect(), *s = it_connect_port(single.port);
    struct it_sub *kick = sub_open("presence:kick");
    enum { N = 40 };
    const int64_t U = 900;
    static struct sess d[N];
    static char devs[N][8], gws[N][16];
    const struct sess *order[N];
    for (int i = 0; i < N; i++) {
        snprintf(devs[i], sizeof(devs[i]), "dev%d", i);
        snprintf(gws[i], sizeof(gws[i]), "gw-%d:%d", i % 5, i);
        bind_new(c, U, &d[i], devs[i], gws[i], i % 256);
        order[N - 1 - i] = &d[i];
    }
    expect_query(c, U, gws[N - 1], order, N);
    expect_hash(U, order, N);
    struct sess last;
    Mpim__BindRouteResp *r = bind_rec(s, U, &last, "only", "gw-only:1", 9);
    expect_displaced(r, order, N);
    it_free(r);
    expect_kicks(kick, U, order, N);
    expect_query(c, U, "gw-only:1", LIST(&last));
    expect_hash(U, LIST(&last));
    it_sub_close(kick);
    pc_close(c);
    pc_close(s);
    it_server_stop_clean(&single);
}

/* ==================================================================== fallback on unbind */

IT(sessions, unbind_falls_back_to_next_highest_then_logs_out_with_the_last)
{
    start_server(NULL, ROUTE_TTL, STATUS_TTL);
    struct pc_client *c = it_connect();
    const int64_t U = 7;
    struct sess a, b, b2, d;
    bind_new(c, U, &a, "a", "gw-a:1", 1);
    bind_new(c, U, &b, "b", "gw-b:2", 2);
    bind_new(c, U, &b2, "b2", "gw-b:2", 3); /* same gateway as b */
    bind_new(c, U, &d, "d", "gw-d:4", 4);
    struct it_sub *route = sub_open("presence:route");

    /* The route's session (d) ends: the route moves to b2's gateway, with a notice. */
    Mpim__UnbindRouteResp *u = unbind_dev(c, U, "gw-d:4", "d", d.epoch);
    cr_assert_eq(u->result->code, MPIM__CODE__OK, "%s", u->result->msg);
    cr_assert(u->unbound);
    it_free(u);
    expect_route_notice(route, U, "gw-b:2");
    expect_value(key("route", U), "gw-b:2");
    expect_value(key("status", U), "online");
    expect_ttl_near(key("route", U), ROUTE_TTL);
    expect_ttl_near(key("status", U), STATUS_TTL);
    expect_query(c, U, "gw-b:2", LIST(&b2, &b, &a));
    expect_hash(U, LIST(&a, &b, &b2));

    /* b2 ends: the next (b) has the same gateway, the route's value does not change: no notice. */
    u = unbind_dev(c, U, "gw-b:2", "b2", 0);
    cr_assert(u->result->code == MPIM__CODE__OK && u->unbound, "%s", u->result->msg);
    it_free(u);
    it_sub_expect_nothing(route, "presence:route");
    expect_value(key("route", U), "gw-b:2");
    expect_query(c, U, "gw-b:2", LIST(&b, &a));

    /* A session that is not the route's ends: route unchanged, no notice, status stays. */
    u = unbind_dev(c, U, "gw-a:1", "a", a.epoch);
    cr_assert(u->result->code == MPIM__CODE__OK && u->unbound, "%s", u->result->msg);
    it_free(u);
    it_sub_expect_nothing(route, "presence:route");
    expect_value(key("route", U), "gw-b:2");
    expect_value(key("status", U), "online");
    expect_query(c, U, "gw-b:2", LIST(&b));
    expect_hash(U, LIST(&b));

    /* The last one ends: §3's logout, every key of the user gone, notice "<uid>:". */
    u = unbind_dev(c, U, "gw-b:2", "b", b.epoch);
    cr_assert(u->result->code == MPIM__CODE__OK && u->unbound, "%s", u->result->msg);
    it_free(u);
    expect_route_notice(route, U, NULL);
    expect_query(c, U, NULL, NONE);
    cr_assert_eq(it_rdbsize_all(R()), 0, "keys left after the last session ended:\n%s", hash_dump(U));
    it_sub_expect_nothing(route, "presence:route");
    it_sub_close(route);
    pc_close(c);
}

IT(sessions, legacy_calls_act_on_the_default_device_beside_other_devices)
{
    start_server(NULL, ROUTE_TTL, STATUS_TTL);
    struct pc_client *c = it_connect();
    const int64_t U = 8;
    struct sess legacy = {"", "gw-l:1", 0, 0, 0, 0}, phone;
    legacy.seen_lo = it_now_ms();
    Mpim__BindRouteResp *b = it_bind(c, U, "gw-l:1");
    legacy.seen_hi = it_now_ms();
    cr_assert_eq(b->result->code, MPIM__CODE__OK);
    legacy.epoch = b->epoch;
    it_free(b);
    bind_new(c, U, &phone, "phone", "gw-p:2", 1);
    struct it_sub *route = sub_open("presence:route");

    /* Legacy Heartbeat/Unbind name the "" session's gateway, not the route's: §6 decides. */
    Mpim__HeartbeatResp *h = it_heartbeat(c, U, "gw-p:2");
    cr_assert(h->result->code == MPIM__CODE__OK && !h->refreshed,
              "a legacy heartbeat of the phone's gateway");
    it_free(h);
    legacy.seen_lo = it_now_ms();
    h = it_heartbeat(c, U, "gw-l:1");
    legacy.seen_hi = it_now_ms();
    cr_assert(h->result->code == MPIM__CODE__OK && h->refreshed, "a legacy heartbeat of the \"\" session");
    it_free(h);
    expect_query(c, U, "gw-p:2", LIST(&phone, &legacy));
    Mpim__UnbindRouteResp *u = it_unbind(c, U, "gw-l:1");
    cr_assert(u->result->code == MPIM__CODE__OK && u->unbound);
    it_free(u);
    it_sub_expect_nothing(route, "presence:route");
    expect_value(key("route", U), "gw-p:2");
    expect_value(key("status", U), "online");
    expect_query(c, U, "gw-p:2", LIST(&phone));
    it_sub_close(route);
    pc_close(c);
}

/* ======================================================================== fencing */

IT(sessions, unbind_and_heartbeat_fenced_by_epoch_and_gateway_change_nothing)
{
    start_server(NULL, ROUTE_TTL, STATUS_TTL);
    struct pc_client *c = it_connect();
    const int64_t U = 9;
    struct sess a, b;
    bind_new(c, U, &a, "a", "gw-a:1", 1);
    bind_new(c, U, &b, "b", "gw-b:2", 2);
    /* Recognisable TTLs: a call that wrote anything would renew them. */
    it_rcmd(R(), 0, "EXPIRE %s 77", key("route", U));
    it_rcmd(R(), 0, "EXPIRE %s 66", key("status", U));
    it_rcmd(R(), 0, "EXPIRE %s 55", key("sessions", U));
    char *before = hash_dump(U);
    struct it_sub *route = sub_open("presence:route"), *kick = sub_open("presence:kick");

    static const struct {
        const char *dev, *gw;
        int which; /* epoch: 0 a's - 1, 1 a's + 1, 2 b's, 3 a's (with a wrong gateway), 4 -1, 5 0 */
    } fenced[] = {
        {"a", "gw-a:1", 0}, {"a", "gw-a:1", 1}, {"a", "gw-a:1", 2},    {"a", "gw-b:2", 3}, {"a", "gw-x:9", 5},
        {"a", "gw-a:1", 4}, {"b", "gw-a:1", 5}, {"nope", "gw-a:1", 5}, {"", "gw-a:1", 5},  {"b", "gw-b:2", 3},
    };
    for (size_t i = 0; i < sizeof(fenced) / sizeof(fenced[0]); i++) {
        int64_t e = fenced[i].which == 0   ? a.epoch - 1
                    : fenced[i].which == 1 ? a.epoch + 1
                    : fenced[i].which == 2 ? b.epoch
                    : fenced[i].which == 3 ? a.epoch
                    : fenced[i].which == 4 ? -1
                                           : 0;
        Mpim__UnbindRouteResp *u = unbind_dev(c, U, fenced[i].gw, fenced[i].dev, e);
        cr_assert_eq(u->result->code, MPIM__CODE__OK, "case %zu: %s", i, pc_code_name(u->result->code));
        cr_assert_not(u->unbound, "case %zu: unbind device '%s' %s epoch %lld unbound", i, fenced[i].dev,
                      fenced[i].gw, (long long)e);
        it_free(u);
        Mpim__HeartbeatResp *h = heartbeat_dev(c, U, fenced[i].gw, fenced[i].dev, e);
        cr_assert_eq(h->result->code, MPIM__CODE__OK, "case %zu: %s", i, pc_code_name(h->result->code));
        cr_assert_not(h->refreshed, "case %zu: heartbeat device '%s' %s epoch %lld refreshed", i,
                      fenced[i].dev, fenced[i].gw, (long long)e);
        it_free(h);
    }
    char *after = hash_dump(U);
    cr_assert_str_eq(after, before, "fenced calls changed the sessions");
    free(after);
    expect_value(key("route", U), "gw-b:2");
    expect_value(key("status", U), "online");
    cr_assert_leq(it_rttl(R(), 0, key("route", U)), 77, "a fenced call renewed the route");
    cr_assert_leq(it_rttl(R(), 0, key("status", U)), 66, "a fenced call renewed the status");
    cr_assert_leq(it_rttl(R(), 0, key("sessions", U)), 55, "a fenced call renewed the sessions hash");
    cr_assert_gt(it_rttl(R(), 0, key("sessions", U)), 0);
    it_sub_expect_nothing(route, "presence:route");
    it_sub_expect_nothing(kick, "presence:kick");

    /* A late call from a's old connection after a re-bind on the same gateway: fenced by epoch. */
    struct sess a2;
    Mpim__BindRouteResp *r = bind_rec(c, U, &a2, "a", "gw-a:1", 1);
    expect_displaced(r, LIST(&a));
    it_free(r);
    expect_route_notice(route, U, "gw-a:1");
    Mpim__UnbindRouteResp *u = unbind_dev(c, U, "gw-a:1", "a", a.epoch);
    cr_assert(u->result->code == MPIM__CODE__OK && !u->unbound, "the old epoch unbound the new session");
    it_free(u);
    Mpim__HeartbeatResp *h = heartbeat_dev(c, U, "gw-a:1", "a", a.epoch);
    cr_assert(h->result->code == MPIM__CODE__OK && !h->refreshed, "the old epoch refreshed the new session");
    it_free(h);
    expect_query(c, U, "gw-a:1", LIST(&a2, &b));

    /* The right epoch (or none) acts. */
    heartbeat_rec(c, U, &a2);
    b.seen_lo = it_now_ms();
    h = heartbeat_dev(c, U, "gw-b:2", "b", 0);
    b.seen_hi = it_now_ms();
    cr_assert(h->result->code == MPIM__CODE__OK && h->refreshed, "epoch 0 is any epoch");
    it_free(h);
    expect_ttl_near(key("status", U), STATUS_TTL);
    expect_ttl_near(key("route", U), ROUTE_TTL);
    expect_query(c, U, "gw-a:1", LIST(&a2, &b));
    u = unbind_dev(c, U, "gw-a:1", "a", a2.epoch);
    cr_assert(u->result->code == MPIM__CODE__OK && u->unbound);
    it_free(u);
    expect_route_notice(route, U, "gw-b:2");
    expect_query(c, U, "gw-b:2", LIST(&b));
    free(before);
    it_sub_close(route);
    it_sub_close(kick);
    pc_close(c);
}

/* ======================================================================== policies */

IT(sessions, policy_multi_displaces_only_the_same_device)
{
    start_server("multi", ROUTE_TTL, STATUS_TTL);
    struct pc_client *c = it_connect();
    struct it_sub *kick = sub_open("presence:kick"), *route = sub_open("presence:route");
    const int64_t U = 100;
    struct sess a, b, d, a2, a3;
    bind_new(c, U, &a, "phone", "gw-a:1", 1);
    bind_new(c, U, &b, "laptop", "gw-b:2", 1); /* same platform: multi keeps both */
    bind_new(c, U, &d, "", "gw-d:3", 0);
    expect_kicks(kick, U, NONE);
    expect_query(c, U, "gw-d:3", LIST(&d, &b, &a));

    /* Re-binding a device ends its old session: displaced and kicked, even on the same platform. */
    Mpim__BindRouteResp *r = bind_rec(c, U, &a2, "phone", "gw-a2:1", 1);
    expect_displaced(r, LIST(&a));
    it_free(r);
    expect_kicks(kick, U, LIST(&a));
    expect_query(c, U, "gw-a2:1", LIST(&a2, &d, &b));

    /* ... on the very same gateway too. */
    r = bind_rec(c, U, &a3, "phone", "gw-a2:1", 1);
    expect_displaced(r, LIST(&a2));
    it_free(r);
    expect_kicks(kick, U, LIST(&a2));
    expect_query(c, U, "gw-a2:1", LIST(&a3, &d, &b));
    expect_hash(U, LIST(&a3, &d, &b));

    /* Every Bind's route notice, in order (§3), and no other. */
    static const char *const notices[] = {"gw-a:1", "gw-b:2", "gw-d:3", "gw-a2:1", "gw-a2:1"};
    for (size_t i = 0; i < 5; i++)
        expect_route_notice(route, U, notices[i]);
    it_sub_expect_nothing(route, "presence:route");
    it_sub_close(kick);
    it_sub_close(route);
    pc_close(c);
}

IT(sessions, policy_single_displaces_every_other_session)
{
    /* Sessions made under multi by a second instance, then a Bind under single ends them all. */
    start_server("single", ROUTE_TTL, STATUS_TTL);
    struct it_server multi;
    start_second(&multi, "multi");
    struct pc_client *m = it_connect_port(multi.port), *c = it_connect();
    struct it_sub *kick = sub_open("presence:kick"), *route = sub_open("presence:route");
    const int64_t U = 200;
    struct sess a, b, d, t, p, p2, q;
    bind_new(m, U, &a, "phone", "gw-a:1", 1);
    bind_new(m, U, &b, "laptop", "gw-b:2", 2);
    bind_new(m, U, &d, "", "gw-d:3", 0);
    expect_kicks(kick, U, NONE);

    Mpim__BindRouteResp *r = bind_rec(c, U, &t, "tablet", "gw-t:4", 3);
    expect_displaced(r, LIST(&a, &b, &d));
    it_free(r);
    expect_kicks(kick, U, LIST(&a, &b, &d));
    expect_query(c, U, "gw-t:4", LIST(&t));
    expect_hash(U, LIST(&t));

    /* Another device, platform 0: still the only one. */
    r = bind_rec(c, U, &p, "phone", "gw-p:5", 0);
    expect_displaced(r, LIST(&t));
    it_free(r);
    expect_kicks(kick, U, LIST(&t));
    /* The same device again: its old session is displaced and kicked. */
    r = bind_rec(c, U, &p2, "phone", "gw-p:5", 0);
    expect_displaced(r, LIST(&p));
    it_free(r);
    expect_kicks(kick, U, LIST(&p));
    expect_query(c, U, "gw-p:5", LIST(&p2));
    expect_hash(U, LIST(&p2));
    expect_value(key("route", U), "gw-p:5");
    expect_value(key("status", U), "online");

    /* Another user is untouched by U's policy. */
    bind_new(c, U + 1, &q, "phone", "gw-q:6", 1);
    expect_query(c, U, "gw-p:5", LIST(&p2));
    expect_kicks(kick, U, NONE);

    static const char *const notices[] = {"gw-a:1", "gw-b:2", "gw-d:3", "gw-t:4", "gw-p:5", "gw-p:5"};
    for (size_t i = 0; i < 6; i++)
        expect_route_notice(route, U, notices[i]);
    expect_route_notice(route, U + 1, "gw-q:6");
    it_sub_expect_nothing(route, "presence:route");
    pc_close(m);
    pc_close(c);
    it_sub_close(kick);
    it_sub_close(route);
    it_server_stop_clean(&multi);
}

IT(sessions, policy_per_platform_displaces_the_same_nonzero_platform)
{
    start_server("per_platform", ROUTE_TTL, STATUS_TTL);
    struct pc_client *c = it_connect();
    struct it_sub *kick = sub_open("presence:kick");
    const int64_t U = 300;
    struct sess a, b, w0, w1, e, f, g, h;
    bind_new(c, U, &a, "phone1", "gw-a:1", 1);
    bind_new(c, U, &b, "laptop", "gw-b:2", 2);
    bind_new(c, U, &w0, "web0", "gw-c:3", 0);
    bind_new(c, U, &w1, "web1", "gw-d:4", 0); /* platform 0 twice: 0 is "unknown", never a match */
    expect_kicks(kick, U, NONE);
    expect_query(c, U, "gw-d:4", LIST(&w1, &w0, &b, &a));

    /* Another device on platform 1 ends phone1 only. */
    Mpim__BindRouteResp *r = bind_rec(c, U, &e, "phone2", "gw-e:5", 1);
    expect_displaced(r, LIST(&a));
    it_free(r);
    expect_kicks(kick, U, LIST(&a));

    /* A new device on platform 0 ends nothing. */
    bind_new(c, U, &f, "webx", "gw-f:6", 0);
    expect_kicks(kick, U, NONE);

    /* web0 again, now on platform 2: its own old session and the laptop (platform 2). */
    r = bind_rec(c, U, &g, "web0", "gw-g:7", 2);
    expect_displaced(r, LIST(&w0, &b));
    it_free(r);
    expect_kicks(kick, U, LIST(&w0, &b));
    expect_query(c, U, "gw-g:7", LIST(&g, &f, &e, &w1));

    /* phone2 again, on platform 0: only its own old session. */
    r = bind_rec(c, U, &h, "phone2", "gw-h:8", 0);
    expect_displaced(r, LIST(&e));
    it_free(r);
    expect_kicks(kick, U, LIST(&e));
    expect_query(c, U, "gw-h:8", LIST(&h, &g, &f, &w1));
    expect_hash(U, LIST(&h, &g, &f, &w1));
    it_sub_close(kick);
    pc_close(c);
}

/* ========================================================================= epochs */

IT(sessions, epochs_increase_across_a_server_restart)
{
    start_server(NULL, ROUTE_TTL, STATUS_TTL);
    struct pc_client *c = it_connect();
    const int64_t U = 400;
    struct sess a, b, a2, x;
    bind_new(c, U, &a, "a", "gw-a:1", 1);
    bind_new(c, U, &b, "b", "gw-b:2", 2);
    pc_close(c);
    it_server_stop_clean(&FX.srv);
    it_config_set(&FX.cfg, "presence_service", "port", "0");
    fx_start_server();
    c = it_connect();
    /* The sessions outlive the restart, and new epochs are above every earlier one. */
    expect_query(c, U, "gw-b:2", LIST(&b, &a));
    Mpim__BindRouteResp *r = bind_rec(c, U, &a2, "a", "gw-a:1", 1);
    expect_displaced(r, LIST(&a));
    it_free(r);
    cr_assert_gt(a2.epoch, b.epoch, "epoch after restart %lld <= %lld", (long long)a2.epoch,
                 (long long)b.epoch);
    bind_new(c, U, &x, "x", "gw-x:3", 3);
    cr_assert_gt(x.epoch, a2.epoch);
    expect_query(c, U, "gw-x:3", LIST(&x, &a2, &b));
    pc_close(c);
}

IT(sessions, epochs_increase_across_two_instances_on_one_redis)
{
    start_server(NULL, ROUTE_TTL, STATUS_TTL);
    struct it_server s2;
    start_second(&s2, NULL);
    struct pc_client *c[2] = {it_connect(), it_connect_port(s2.port)};
    const int64_t U = 500;
    static const char *const devs[] = {"d0", "d1", "d2"};
    struct sess last[3] = {{0}};
    int64_t prev = 0;
    for (int i = 0; i < 30; i++) {
        struct sess s;
        static char gws[30][16];
        char *gw = gws[i];
        snprintf(gw, sizeof(gws[i]), "gw-%d:%d", i % 2, i);
        /* Bind through one instance, see it (and the displaced session) through the other. */
        Mpim__BindRouteResp *r = bind_rec(c[i % 2], U, &s, devs[i % 3], gw, i % 3);
        cr_assert_gt(s.epoch, prev, "bind %d through instance %d: epoch %lld <= previous %lld", i, i % 2,
                     (long long)s.epoch, (long long)prev);
        if (last[i % 3].epoch != 0)
            expect_displaced(r, LIST(&last[i % 3]));
        else
            cr_assert_eq(r->n_displaced, 0);
        it_free(r);
        prev = s.epoch;
        last[i % 3] = s;
        Mpim__QueryRouteResp *q = it_query(c[(i + 1) % 2], U);
        cr_assert(q->n_sessions >= 1 && q->sessions[0]->epoch == s.epoch && it_bytes_eq(q->gateway_addr, gw),
                  "bind %d not seen first through the other instance", i);
        it_free(q);
    }
    /* Pipelined on both instances at once: every epoch distinct, increasing on each connection. */
    enum { N = 100 };
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < N; i++) {
            Mpim__BindRouteReq q = MPIM__BIND_ROUTE_REQ__INIT;
            q.user_id = U;
            q.gateway_addr = it_bytes(k ? "gw-p1:1" : "gw-p0:1");
            q.device_id = (ProtobufCBinaryData){strlen(devs[i % 3]), (uint8_t *)devs[i % 3]};
            cr_assert_eq(pc_send(c[k], PR_METHOD_BIND, &q.base), 0);
        }
    for (int k = 0; k < 2; k++)
        cr_assert_eq(pc_flush(c[k]), 0, "%s", pc_error(c[k]));
    int64_t all[2 * N];
    for (int k = 0; k < 2; k++) {
        int64_t p = prev;
        for (int i = 0; i < N; i++) {
            Mpim__BindRouteResp *r = (Mpim__BindRouteResp *)it_recv(c[k], PR_METHOD_BIND);
            cr_assert_eq(r->result->code, MPIM__CODE__OK, "%s", r->result->msg);
            cr_assert_gt(r->epoch, p, "pipelined bind %d on instance %d: epoch %lld <= %lld", i, k,
                         (long long)r->epoch, (long long)p);
            p = all[k * N + i] = r->epoch;
            it_free(r);
        }
    }
    for (int i = 0; i < 2 * N; i++)
        for (int j = i + 1; j < 2 * N; j++)
            cr_assert_neq(all[i], all[j], "epoch %lld issued twice", (long long)all[i]);
    pc_close(c[0]);
    pc_close(c[1]);
    it_server_stop_clean(&s2);
}

IT(sessions, epochs_increase_after_logout)
{
    start_server(NULL, ROUTE_TTL, STATUS_TTL);
    struct pc_client *c = it_connect();
    const int64_t U = 600;
    struct sess a, a2;
    bind_new(c, U, &a, "a", "gw-a:1", 1);
    Mpim__UnbindRouteResp *u = unbind_dev(c, U, "gw-a:1", "a", a.epoch);
    cr_assert(u->result->code == MPIM__CODE__OK && u->unbound);
    it_free(u);
    cr_assert_eq(it_rdbsize_all(R()), 0, "nothing left of the user after the logout");
    bind_new(c, U, &a2, "a", "gw-a:1", 1);
    cr_assert_gt(a2.epoch, a.epoch, "epoch after logout %lld <= %lld", (long long)a2.epoch,
                 (long long)a.epoch);
    /* The same for a legacy client. */
    Mpim__BindRouteResp *b = it_bind(c, U + 1, "gw-l:1");
    int64_t e1 = b->epoch;
    it_free(b);
    u = it_unbind(c, U + 1, "gw-l:1");
    cr_assert(u->unbound);
    it_free(u);
    b = it_bind(c, U + 1, "gw-l:1");
    cr_assert_gt(b->epoch, e1);
    it_free(b);
    pc_close(c);
}

/* ========================================================================= expiry */

#define SHORT_TTL 3 /* seconds: route_ttl and status_ttl of the expiry tests */

/* Poll until now >= t (a time the server reported), bounded. */
static void wait_clock_past(int64_t t)
{
    double deadline = it_mono_ms() + (double)(t - it_now_ms()) + 2000;
    while (it_now_ms() < t) {
        cr_assert_lt(it_mono_ms(), deadline, "the clock never reached %lld", (long long)t);
        it_sleep_ms(10);
    }
}

/* Poll QueryRoute until it lists exactly n sessions, bounded. */
static void wait_sessions(struct pc_client *c, int64_t uid, size_t n, int timeout_ms)
{
    double deadline = it_mono_ms() + timeout_ms;
    for (;;) {
        Mpim__QueryRouteResp *q = it_query(c, uid);
        size_t got = q->n_sessions;
        it_free(q);
        if (got == n)
            return;
        cr_assert_lt(it_mono_ms(), deadline, "user %lld still lists %zu sessions after %d ms, want %zu",
                     (long long)uid, got, timeout_ms, n);
        it_sleep_ms(20);
    }
}

static bool hexists(int64_t uid, const char *dev)
{
    return rint_cmd("HEXISTS %s %s", key("sessions", uid), dev) == 1;
}

IT(sessions, lapsed_session_is_gone_not_revived_not_found_and_not_displaced)
{
    start_server("per_platform", SHORT_TTL, SHORT_TTL);
    struct pc_client *c = it_connect();
    struct it_sub *kick = sub_open("presence:kick");
    enum { NU = 4 };
    const int64_t U = 700; /* users U+1 .. U+4, one first touch each */
    struct sess old[NU + 1], alive[NU + 1];
    for (int i = 1; i <= NU; i++)
        bind_new(c, U + i, &old[i], "old", "gw-old:1", 2);
    /* The live session is bound half a TTL later, so it outlives the old one by that much:
     * meanwhile the hash holds a lapsed session nobody has touched since. */
    wait_clock_past(old[NU].seen_hi + SHORT_TTL * 500);
    for (int i = 1; i <= NU; i++)
        bind_new(c, U + i, &alive[i], "alive", "gw-new:1", 1);
    for (int i = 1; i <= NU; i++) {
        wait_sessions(c, U + i, 1, (SHORT_TTL * 1000 + 3000) * IT_SLOW);
        expect_query(c, U + i, "gw-new:1", LIST(&alive[i]));
        cr_assert(hexists(U + i, "old"), "precondition: user %lld's lapsed field is still stored untouched",
                  (long long)(U + i));
    }
    struct it_sub *route = sub_open("presence:route");

    /* Heartbeat does not revive it; the touch prunes it. */
    Mpim__HeartbeatResp *h = heartbeat_dev(c, U + 1, "gw-old:1", "old", old[1].epoch);
    cr_assert(h->result->code == MPIM__CODE__OK && !h->refreshed, "a lapsed session was refreshed");
    it_free(h);
    h = heartbeat_dev(c, U + 1, "gw-old:1", "old", 0);
    cr_assert(h->result->code == MPIM__CODE__OK && !h->refreshed, "a lapsed session was refreshed (epoch 0)");
    it_free(h);
    cr_assert_not(hexists(U + 1, "old"), "the lapsed field was not pruned when touched (or was revived)");
    expect_query(c, U + 1, "gw-new:1", LIST(&alive[1]));

    /* Unbind does not find it (and changes nothing else). */
    Mpim__UnbindRouteResp *u = unbind_dev(c, U + 2, "gw-old:1", "old", 0);
    cr_assert(u->result->code == MPIM__CODE__OK && !u->unbound, "a lapsed session was unbound");
    it_free(u);
    cr_assert_not(hexists(U + 2, "old"), "the lapsed field was not pruned when touched");
    expect_value(key("route", U + 2), "gw-new:1");
    expect_value(key("status", U + 2), "online");
    expect_query(c, U + 2, "gw-new:1", LIST(&alive[2]));
    /* (A notice from users 1 or 2 would come before user 3's below.) */

    /* No Bind displaces it: not one of the same platform ... */
    struct sess other, again;
    bind_new(c, U + 3, &other, "other", "gw-o:1", 2);
    cr_assert_not(hexists(U + 3, "old"), "the lapsed field was not pruned when touched");
    expect_query(c, U + 3, "gw-o:1", LIST(&other, &alive[3]));
    /* ... nor one of the same device. */
    bind_new(c, U + 4, &again, "old", "gw-old:2", 2);
    cr_assert_gt(again.epoch, old[4].epoch);
    expect_query(c, U + 4, "gw-old:2", LIST(&again, &alive[4]));
    expect_hash(U + 4, LIST(&again, &alive[4]));
    expect_kicks(kick, U, NONE);
    expect_route_notice(route, U + 3, "gw-o:1");
    expect_route_notice(route, U + 4, "gw-old:2");

    /* Then the last session of user 1 lapses too: every key goes by itself. */
    double deadline = it_mono_ms() + (SHORT_TTL * 1000 + 3000) * IT_SLOW;
    while (it_rexists(R(), 0, key("route", U + 1)) || it_rexists(R(), 0, key("sessions", U + 1)) ||
           it_rexists(R(), 0, key("status", U + 1))) {
        cr_assert_lt(it_mono_ms(), deadline, "user %lld's keys never expired:\n%s", (long long)(U + 1),
                     hash_dump(U + 1));
        it_sleep_ms(20);
    }
    expect_query(c, U + 1, NULL, NONE);
    h = heartbeat_dev(c, U + 1, "gw-new:1", "alive", alive[1].epoch);
    cr_assert(h->result->code == MPIM__CODE__OK && !h->refreshed, "an expired session was refreshed");
    it_free(h);
    u = unbind_dev(c, U + 1, "gw-new:1", "alive", 0);
    cr_assert(u->result->code == MPIM__CODE__OK && !u->unbound, "an expired session was unbound");
    it_free(u);
    cr_assert_not(it_rexists(R(), 0, key("sessions", U + 1)), "a call on an expired user wrote its hash");
    cr_assert_not(it_rexists(R(), 0, key("route", U + 1)));
    cr_assert_not(it_rexists(R(), 0, key("status", U + 1)));
    it_sub_expect_nothing(route, "presence:route");
    /* ... and a new Bind after expiry gets a greater epoch, displacing nothing. */
    struct sess back;
    bind_new(c, U + 1, &back, "alive", "gw-new:1", 1);
    cr_assert_gt(back.epoch, alive[1].epoch, "epoch after expiry %lld <= %lld", (long long)back.epoch,
                 (long long)alive[1].epoch);
    expect_kicks(kick, U, NONE);
    it_sub_close(route);
    it_sub_close(kick);
    pc_close(c);
}

IT(sessions, heartbeat_moves_the_route_off_a_lapsed_session)
{
    start_server(NULL, SHORT_TTL, SHORT_TTL);
    struct pc_client *c = it_connect();
    const int64_t U = 800;
    struct sess keep, drop;
    bind_new(c, U, &keep, "keep", "gw-keep:1", 1);
    bind_new(c, U, &drop, "drop", "gw-drop:2", 2);
    struct it_sub *route = sub_open("presence:route");
    /* Keep one session alive with heartbeats until the route's (newer) one has lapsed. */
    double deadline = it_mono_ms() + (SHORT_TTL * 1000 + 3000) * IT_SLOW;
    for (;;) {
        heartbeat_rec(c, U, &keep);
        Mpim__QueryRouteResp *q = it_query(c, U);
        size_t n = q->n_sessions;
        it_free(q);
        if (n == 1)
            break;
        cr_assert_lt(it_mono_ms(), deadline, "the unrefreshed session never lapsed");
        it_sleep_ms(50);
    }
    /* The next heartbeat (if not already the last one) puts the route on the live session. */
    heartbeat_rec(c, U, &keep);
    expect_query(c, U, "gw-keep:1", LIST(&keep));
    expect_value(key("route", U), "gw-keep:1");
    expect_value(key("status", U), "online");
    cr_assert_gt(it_rttl(R(), 0, key("route", U)), 0);
    cr_assert_not(hexists(U, "drop"), "the lapsed session was not pruned");
    expect_route_notice(route, U, "gw-keep:1");
    it_sub_expect_nothing(route, "presence:route");
    it_sub_close(route);
    pc_close(c);
}

/* ================================================================== legacy client (§3) */

IT(sessions, legacy_client_sees_section_3_exactly)
{
    start_server(NULL, ROUTE_TTL, STATUS_TTL);
    struct pc_client *c = it_connect();
    struct it_sub *route = sub_open("presence:route"), *kick = sub_open("presence:kick");
    const int64_t U = 42;

    /* Bind: route and status with their TTLs, notice. */
    Mpim__BindRouteResp *b = it_bind(c, U, "gw-1:7000");
    cr_assert_eq(b->result->code, MPIM__CODE__OK, "%s", b->result->msg);
    cr_assert_str_eq(b->route_key, "user:route:42");
    cr_assert_eq(b->n_displaced, 0);
    int64_t e1 = b->epoch;
    it_free(b);
    expect_value(key("route", U), "gw-1:7000");
    expect_value(key("status", U), "online");
    expect_ttl_near(key("route", U), ROUTE_TTL);
    expect_ttl_near(key("status", U), STATUS_TTL);
    expect_route_notice(route, U, "gw-1:7000");
    Mpim__QueryRouteResp *q = it_query(c, U);
    cr_assert(q->result->code == MPIM__CODE__OK && q->is_online && it_bytes_eq(q->gateway_addr, "gw-1:7000"));
    cr_assert_eq(q->n_sessions, 1);
    cr_assert_str_eq(q->sessions[0]->device_id, "");
    cr_assert_eq(q->sessions[0]->platform, 0);
    cr_assert_eq(q->sessions[0]->epoch, e1);
    it_free(q);

    /* Bind again elsewhere: replaced, notified (the old "" session is displaced: §6). */
    b = it_bind(c, U, "gw-2:7000");
    cr_assert_eq(b->result->code, MPIM__CODE__OK);
    cr_assert_eq(b->n_displaced, 1);
    cr_assert(strcmp(b->displaced[0]->device_id, "") == 0 &&
              strcmp(b->displaced[0]->gateway_addr, "gw-1:7000") == 0 && b->displaced[0]->epoch == e1);
    cr_assert_gt(b->epoch, e1);
    it_free(b);
    expect_value(key("route", U), "gw-2:7000");
    expect_route_notice(route, U, "gw-2:7000");
    char kick1[64];
    int kn = snprintf(kick1, sizeof(kick1), "42::%lld:gw-1:7000", (long long)e1);
    it_sub_expect(kick, "presence:kick", kick1, (size_t)kn);

    /* A stale gateway: nothing written, nothing published. */
    it_rcmd(R(), 0, "EXPIRE %s 77", key("route", U));
    it_rcmd(R(), 0, "DEL %s", key("status", U));
    Mpim__HeartbeatResp *h = it_heartbeat(c, U, "gw-1:7000");
    cr_assert(h->result->code == MPIM__CODE__OK && !h->refreshed);
    it_free(h);
    Mpim__UnbindRouteResp *u = it_unbind(c, U, "gw-1:7000");
    cr_assert(u->result->code == MPIM__CODE__OK && !u->unbound);
    it_free(u);
    cr_assert_leq(it_rttl(R(), 0, key("route", U)), 77, "a stale call renewed the route");
    cr_assert_not(it_rexists(R(), 0, key("status", U)), "a stale heartbeat re-created the status");
    expect_value(key("route", U), "gw-2:7000");
    it_sub_expect_nothing(route, "presence:route");

    /* Heartbeat: each key renewed to its own TTL, the status re-created. */
    h = it_heartbeat(c, U, "gw-2:7000");
    cr_assert(h->result->code == MPIM__CODE__OK && h->refreshed, "%s", h->result->msg);
    it_free(h);
    expect_ttl_near(key("route", U), ROUTE_TTL);
    expect_ttl_near(key("status", U), STATUS_TTL);
    expect_value(key("status", U), "online");

    /* Unbind: both keys (and the hash) deleted, logout notice; a second one is a silent no. */
    u = it_unbind(c, U, "gw-2:7000");
    cr_assert(u->result->code == MPIM__CODE__OK && u->unbound);
    it_free(u);
    cr_assert_eq(it_rdbsize_all(R()), 0, "keys left after the logout");
    expect_route_notice(route, U, NULL);
    u = it_unbind(c, U, "gw-2:7000");
    cr_assert(u->result->code == MPIM__CODE__OK && !u->unbound);
    it_free(u);
    h = it_heartbeat(c, U, "gw-2:7000");
    cr_assert(h->result->code == MPIM__CODE__OK && !h->refreshed);
    it_free(h);
    q = it_query(c, U);
    cr_assert(q->result->code == MPIM__CODE__NOT_FOUND && !q->is_online && q->gateway_addr.len == 0 &&
              q->n_sessions == 0);
    it_free(q);
    cr_assert_eq(it_rdbsize_all(R()), 0, "a call on nobody wrote keys");
    it_sub_expect_nothing(route, "presence:route");

    /* A route written before sessions existed (no hash): §3's compare on the route itself. */
    it_rcmd(R(), 0, "SET %s gw-old:1", key("route", 43));
    h = it_heartbeat(c, 43, "gw-other:1");
    cr_assert(h->result->code == MPIM__CODE__OK && !h->refreshed);
    it_free(h);
    h = it_heartbeat(c, 43, "gw-old:1");
    cr_assert(h->result->code == MPIM__CODE__OK && h->refreshed, "%s", h->result->msg);
    it_free(h);
    expect_ttl_near(key("route", 43), ROUTE_TTL);
    expect_ttl_near(key("status", 43), STATUS_TTL);
    u = it_unbind(c, 43, "gw-old:1");
    cr_assert(u->result->code == MPIM__CODE__OK && u->unbound, "%s", u->result->msg);
    it_free(u);
    expect_route_notice(route, 43, NULL);
    cr_assert_eq(it_rdbsize_all(R()), 0);
    it_sub_expect_nothing(route, "presence:route");
    it_sub_expect_nothing(kick, "presence:kick");
    it_sub_close(route);
    it_sub_close(kick);
    pc_close(c);
}

/* ====================================================================== bad input */

static void expect_invalid(const Mpim__Result *r, const char *field, const char *what)
{
    cr_assert_eq(r->code, MPIM__CODE__INVALID, "%s: %s %s, want INVALID", what, pc_code_name(r->code),
                 r->msg);
    cr_assert(r->msg != NULL && strstr(r->msg, field) != NULL, "%s: message '%s' does not name %s", what,
              r->msg, field);
}

/* A Bind whose device_id holds a NUL byte at offset nul, as a client would send it (the packed
 * frame is patched): device_id is bytes on our side so the check sees the NUL. */
static Mpim__BindRouteResp *bind_with_nul(struct pc_client *c, int64_t uid, const char *dev, size_t nul)
{
    Mpim__BindRouteReq q = MPIM__BIND_ROUTE_REQ__INIT;
    q.user_id = uid;
    q.gateway_addr = it_bytes("gw-1:1");
    q.device_id = (ProtobufCBinaryData){strlen(dev), (uint8_t *)dev};
    size_t len, dl = strlen(dev);
    uint8_t *f = it_frame(IT_SERVICE, "BindRoute", &q.base, &len);
    /* device_id (field 5) is packed last, so its bytes end the frame. */
    uint8_t *at = f + len - dl;
    cr_assert(len >= dl && memcmp(at, dev, dl) == 0, "the frame does not end with the device_id");
    cr_assert_not_null(at);
    at[nul] = '\0';
    cr_assert_eq(pc_send_raw(c, f, len), 0);
    cr_assert_eq(pc_flush(c), 0, "%s", pc_error(c));
    free(f);
    return (Mpim__BindRouteResp *)it_recv(c, PR_METHOD_BIND);
}

IT(sessions, bad_device_or_platform_is_invalid_naming_the_field_and_writes_nothing)
{
    start_server(NULL, ROUTE_TTL, STATUS_TTL);
    struct pc_client *c = it_connect();
    struct it_sub *route = sub_open("presence:route"), *kick = sub_open("presence:kick");
    char long65[66];
    memset(long65, 'x', 65);
    long65[65] = '\0';
    static const char *const bad[] = {"has space",         "sl/ash", "co:lon", "pi|pe",     "semi;", "tab\t",
                                      "\xc3\xa9t\xc3\xa9", "star*",  "+plus",  "new\nline", "{1}"};
    for (size_t i = 0; i <= sizeof(bad) / sizeof(bad[0]); i++) {
        const char *d = i < sizeof(bad) / sizeof(bad[0]) ? bad[i] : long65;
        char what[96];
        snprintf(what, sizeof(what), "device '%.20s' (%zu bytes)", d, strlen(d));
        Mpim__BindRouteResp *b = bind_dev(c, 1, "gw-1:1", d, 1);
        expect_invalid(b->result, "device_id", what);
        cr_assert_eq(b->epoch, 0);
        it_free(b);
        Mpim__UnbindRouteResp *u = unbind_dev(c, 1, "gw-1:1", d, 0);
        expect_invalid(u->result, "device_id", what);
        it_free(u);
        Mpim__HeartbeatResp *h = heartbeat_dev(c, 1, "gw-1:1", d, 0);
        expect_invalid(h->result, "device_id", what);
        it_free(h);
    }
    static const int32_t bad_platform[] = {-1, 256, INT32_MIN, INT32_MAX, 1000};
    for (size_t i = 0; i < sizeof(bad_platform) / sizeof(bad_platform[0]); i++) {
        char what[48];
        snprintf(what, sizeof(what), "platform %d", bad_platform[i]);
        Mpim__BindRouteResp *b = bind_dev(c, 1, "gw-1:1", "ok", bad_platform[i]);
        expect_invalid(b->result, "platform", what);
        it_free(b);
    }
    cr_assert_eq(it_rdbsize_all(R()), 0, "an INVALID call wrote keys:\n%s", hash_dump(1));
    it_sub_expect_nothing(route, "presence:route");
    it_sub_expect_nothing(kick, "presence:kick");

    /* The boundaries are accepted: 64 bytes of every allowed class, platforms 0 and 255. */
    static const char dev64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-";
    cr_assert_eq(strlen(dev64), 64);
    struct sess s64, s0, s255;
    bind_new(c, 2, &s64, dev64, "gw-1:1", 7);
    bind_new(c, 2, &s0, "under_score", "gw-2:1", 0);
    bind_new(c, 2, &s255, "", "gw-3:1", 255);
    expect_query(c, 2, "gw-3:1", LIST(&s255, &s0, &s64));
    /* The longest device on the longest gateway: displaced and kicked whole. */
    char gw255[256];
    memset(gw255, 'g', 255);
    gw255[255] = '\0';
    memcpy(gw255, "gw:7000|", 8);
    char devb[65];
    memset(devb, 'b', 64);
    devb[64] = '\0';
    struct sess l1, l2;
    bind_new(c, 2, &l1, devb, gw255, 7);
    Mpim__BindRouteResp *b = bind_rec(c, 2, &l2, devb, gw255, 7);
    expect_displaced(b, LIST(&l1));
    it_free(b);
    expect_kicks(kick, 2, LIST(&l1));
    expect_query(c, 2, gw255, LIST(&l2, &s255, &s0, &s64));
    expect_hash(2, LIST(&l2, &s255, &s0, &s64));
    pc_close(c);
    it_sub_close(route);
    it_sub_close(kick);
}

/* protobuf-c hands a string field over NUL-terminated: a device_id with a NUL byte must still be
 * judged on all its bytes, not on the part before the NUL. */
static void expect_nul_device_invalid(int64_t uid, const char *dev, size_t nul, const char *shown)
{
    start_server(NULL, ROUTE_TTL, STATUS_TTL);
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = bind_with_nul(c, uid, dev, nul);
    cr_assert_eq(b->result->code, MPIM__CODE__INVALID,
                 "device %s: %s epoch %lld, want INVALID; user %lld's sessions now:\n%s", shown,
                 pc_code_name(b->result->code), (long long)b->epoch, (long long)uid, hash_dump(uid));
    expect_invalid(b->result, "device_id", shown);
    it_free(b);
    cr_assert_eq(it_rdbsize_all(R()), 0, "an INVALID bind wrote keys:\n%s", hash_dump(uid));
    pc_close(c);
}

IT(sessions, device_id_with_an_inner_nul_byte_is_invalid)
{
    expect_nul_device_invalid(3, "abXcd", 2, "\"ab\\0cd\"");
}

/* A lone NUL is not the default device "". */
IT(sessions, device_id_of_one_nul_byte_is_invalid)
{
    expect_nul_device_invalid(4, "X", 0, "\"\\0\"");
}

IT(sessions, unknown_login_policy_exits_2_naming_the_key)
{
    static const char *const bogus[] = {"bogus", "Multi", "single,multi"};
    for (size_t i = 0; i < sizeof(bogus) / sizeof(bogus[0]); i++) {
        struct it_config cfg = FX.cfg;
        it_config_set(&cfg, "presence_service", "port", "%d", it_free_port());
        it_config_set(&cfg, "route", "login_policy", "%s", bogus[i]);
        const char *path = it_path("bogus.conf");
        it_config_write(&cfg, path);
        const char *argv[] = {it_server_bin(), "-c", path, NULL};
        char *err = NULL;
        int code = it_run(argv, NULL, &err, 10000 * IT_SLOW);
        cr_assert_eq(code, 2, "login_policy = %s: exit %d, want 2; stderr: %s", bogus[i], code, err);
        cr_assert_not_null(strstr(err, "[route] login_policy"),
                           "login_policy = %s: stderr does not name the key: %s", bogus[i], err);
        cr_assert_not_null(strstr(err, bogus[i]), "stderr does not quote the value: %s", err);
        free(err);
    }
}

/* ==================================================================== concurrency */

enum { CC_CONNS = 16, CC_USERS = 100, CC_DEVS = 4, CC_MS = 10000 };
#define CC_UID0 1000

struct cc_worker {
    pthread_t th;
    int id;
    struct pc_client *c;
    unsigned seed;
    double end_ms;
    long ops, displaced;
    int failed;
    char why[256];
    int64_t last_epoch[CC_USERS];
    struct {
        int64_t epoch;
        int gw;
    } mine[CC_USERS][CC_DEVS];
};

/* One connection's loop (its own thread; no Criterion asserts here: failures are recorded and
 * asserted by the test's thread). Binds, unbinds and heartbeats random devices of the users,
 * with or without the epoch it last got, so that many calls are fenced. */
static void *cc_run(void *arg)
{
    struct cc_worker *w = arg;
    static const char *const devs[CC_DEVS] = {"d0", "d1", "d2", "d3"};
    while (!w->failed && tp_mono_ms() < w->end_ms) {
        int u = (int)(rand_r(&w->seed) % CC_USERS), d = (int)(rand_r(&w->seed) % CC_DEVS);
        int op = (int)(rand_r(&w->seed) % 10);
        /* The last fifth of the run only ends sessions of half of the users, so that both
         * outcomes (online, offline) are left to check. */
        if (op < 4 && u >= CC_USERS / 2 && tp_mono_ms() > w->end_ms - CC_MS / 5)
            op = 4 + op % 4;
        int64_t uid = CC_UID0 + u;
        char gw[32];
        ProtobufCMessage *m = NULL;
        const Mpim__Result *res = NULL;
        int g = w->mine[u][d].epoch != 0 ? w->mine[u][d].gw : (int)(rand_r(&w->seed) % 3);
        if (op < 4)
            g = (int)(rand_r(&w->seed) % 3);
        /* Three gateways shared by every connection: another connection's session is often on
         * the gateway named, so unbinds by epoch 0 end sessions this one did not bind. */
        snprintf(gw, sizeof(gw), "gw-%d:1", g);
        /* Mostly the epoch it holds (or 0), sometimes a stale one: fenced. */
        int64_t epoch = w->mine[u][d].epoch != 0 && rand_r(&w->seed) % 2 ? w->mine[u][d].epoch : 0;
        if (epoch != 0 && rand_r(&w->seed) % 4 == 0)
            epoch--;
        int rc;
        if (op < 4) {
            Mpim__BindRouteReq q = MPIM__BIND_ROUTE_REQ__INIT;
            q.user_id = uid;
            q.gateway_addr = it_bytes(gw);
            q.device_id = (ProtobufCBinaryData){strlen(devs[d]), (uint8_t *)devs[d]};
            q.platform = (int32_t)(rand_r(&w->seed) % 4);
            rc = pc_call(w->c, PR_METHOD_BIND, &q.base, &m);
            if (rc == 0) {
                Mpim__BindRouteResp *r = (Mpim__BindRouteResp *)m;
                res = r->result;
                if (res != NULL && res->code == MPIM__CODE__OK) {
                    if (r->epoch <= w->last_epoch[u]) {
                        snprintf(w->why, sizeof(w->why), "user %lld: epoch %lld after %lld on one connection",
                                 (long long)uid, (long long)r->epoch, (long long)w->last_epoch[u]);
                        w->failed = 1;
                    }
                    w->last_epoch[u] = r->epoch;
                    w->mine[u][d].epoch = r->epoch;
                    w->mine[u][d].gw = g;
                    w->displaced += (long)r->n_displaced;
                }
            }
        } else if (op < 8) {
            Mpim__UnbindRouteReq q = MPIM__UNBIND_ROUTE_REQ__INIT;
            q.user_id = uid;
            q.gateway_addr = it_bytes(gw);
            q.device_id = (ProtobufCBinaryData){strlen(devs[d]), (uint8_t *)devs[d]};
            q.epoch = epoch;
            rc = pc_call(w->c, PR_METHOD_UNBIND, &q.base, &m);
            if (rc == 0) {
                res = ((Mpim__UnbindRouteResp *)m)->result;
                if (((Mpim__UnbindRouteResp *)m)->unbound)
                    w->mine[u][d].epoch = 0;
            }
        } else {
            Mpim__HeartbeatReq q = MPIM__HEARTBEAT_REQ__INIT;
            q.user_id = uid;
            q.gateway_addr = it_bytes(gw);
            q.device_id = (ProtobufCBinaryData){strlen(devs[d]), (uint8_t *)devs[d]};
            q.epoch = epoch;
            rc = pc_call(w->c, PR_METHOD_HEARTBEAT, &q.base, &m);
            if (rc == 0)
                res = ((Mpim__HeartbeatResp *)m)->result;
        }
        if (rc != 0) {
            snprintf(w->why, sizeof(w->why), "op %d: transport error: %s", op, pc_error(w->c));
            w->failed = 1;
        } else if (res == NULL || res->code != MPIM__CODE__OK) {
            snprintf(w->why, sizeof(w->why), "op %d user %lld: %s %s", op, (long long)uid,
                     res ? pc_code_name(res->code) : "no result", res && res->msg ? res->msg : "");
            w->failed = 1;
        }
        if (m != NULL)
            protobuf_c_message_free_unpacked(m, NULL);
        w->ops++;
    }
    return NULL;
}

/* One user's keys agree with one another (and with QueryRoute). Returns the live sessions. */
static size_t cc_check_user(redisContext *rc, struct pc_client *c, int64_t uid)
{
    redisReply *h = redisCommand(rc, "HGETALL %s", key("sessions", uid));
    redisReply *route = redisCommand(rc, "GET %s", key("route", uid));
    redisReply *status = redisCommand(rc, "EXISTS %s", key("status", uid));
    redisReply *rttl = redisCommand(rc, "PTTL %s", key("route", uid));
    redisReply *httl = redisCommand(rc, "PTTL %s", key("sessions", uid));
    cr_assert(h && route && status && rttl && httl && h->type == REDIS_REPLY_ARRAY);
    size_t n = h->elements / 2;
    long long best = 0;
    char best_gw[64] = "";
    int64_t now = it_now_ms();
    for (size_t i = 0; i < n; i++) {
        const char *f = h->element[2 * i]->str, *v = h->element[2 * i + 1]->str;
        long long e, t;
        int p, off = 0;
        cr_assert(sscanf(v, "%lld|%d|%lld|%n", &e, &p, &t, &off) == 3 && off > 0,
                  "user %lld: '%s' holds '%s'", (long long)uid, f, v);
        cr_assert(strlen(f) == 2 && f[0] == 'd' && f[1] >= '0' && f[1] <= '3', "user %lld: device '%s'",
                  (long long)uid, f);
        cr_assert(p >= 0 && p <= 3 && t <= now && t > now - 60000, "user %lld: '%s' holds '%s'",
                  (long long)uid, f, v);
        if (e > best) {
            best = e;
            snprintf(best_gw, sizeof(best_gw), "%s", v + off);
        }
    }
    if (n == 0) {
        cr_assert_eq(route->type, REDIS_REPLY_NIL, "user %lld: no session, but a route '%s'", (long long)uid,
                     route->str);
        cr_assert_eq(status->integer, 0, "user %lld: no session, but a status", (long long)uid);
    } else {
        cr_assert_eq(route->type, REDIS_REPLY_STRING, "user %lld: %zu live session(s) but no route",
                     (long long)uid, n);
        cr_assert_str_eq(route->str, best_gw,
                         "user %lld: the route names '%s', the highest epoch's gateway is '%s'",
                         (long long)uid, route->str, best_gw);
        cr_assert_eq(status->integer, 1, "user %lld: %zu live session(s) but no status", (long long)uid, n);
        cr_assert(rttl->integer > 0 && rttl->integer <= ROUTE_TTL * 1000, "user %lld: route PTTL %lld",
                  (long long)uid, rttl->integer);
        cr_assert(httl->integer > 0 && httl->integer <= ROUTE_TTL * 1000, "user %lld: sessions PTTL %lld",
                  (long long)uid, httl->integer);
    }
    Mpim__QueryRouteResp *q = it_query(c, uid);
    cr_assert_eq(q->n_sessions, n, "user %lld: QueryRoute lists %zu sessions, the hash holds %zu",
                 (long long)uid, q->n_sessions, n);
    if (n > 0) {
        cr_assert(q->is_online && it_bytes_eq(q->gateway_addr, best_gw) && q->sessions[0]->epoch == best,
                  "user %lld: QueryRoute disagrees with the keys", (long long)uid);
        for (size_t i = 1; i < n; i++)
            cr_assert_lt(q->sessions[i]->epoch, q->sessions[i - 1]->epoch, "user %lld: sessions out of order",
                         (long long)uid);
    } else {
        cr_assert(q->result->code == MPIM__CODE__NOT_FOUND && !q->is_online);
    }
    it_free(q);
    freeReplyObject(h);
    freeReplyObject(route);
    freeReplyObject(status);
    freeReplyObject(rttl);
    freeReplyObject(httl);
    return n;
}

IT(sessions, concurrent_binds_and_unbinds_leave_sessions_route_and_status_in_agreement)
{
    start_server("per_platform", ROUTE_TTL, ROUTE_TTL);
    struct it_sub *kick = sub_open("presence:kick");
    static struct cc_worker w[CC_CONNS];
    double start = it_mono_ms();
    for (int i = 0; i < CC_CONNS; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].id = i;
        w[i].seed = 12345u + (unsigned)i * 7919u;
        w[i].c = it_connect();
        w[i].end_ms = start + CC_MS;
    }
    for (int i = 0; i < CC_CONNS; i++)
        cr_assert_eq(pthread_create(&w[i].th, NULL, cc_run, &w[i]), 0);
    long ops = 0, displaced = 0;
    for (int i = 0; i < CC_CONNS; i++) {
        pthread_join(w[i].th, NULL);
        ops += w[i].ops;
        displaced += w[i].displaced;
    }
    for (int i = 0; i < CC_CONNS; i++)
        cr_assert_not(w[i].failed, "connection %d: %s", i, w[i].why);
    cr_assert_gt(ops, 1000, "only %ld calls in %d ms", ops, CC_MS);
    cr_log_info("sessions concurrency: %ld calls in %.0f ms, %ld displaced", ops, it_mono_ms() - start,
                displaced);

    /* Every displaced session was kicked, once. */
    for (long k = 0; k < displaced; k++) {
        struct it_msg m;
        cr_assert_eq(it_sub_next(kick, &m, 3000 * IT_SLOW), 1, "kick %ld of %ld never came", k + 1,
                     displaced);
        cr_assert_str_eq(m.channel, "presence:kick");
        free(m.data);
    }
    it_sub_expect_nothing(kick, "presence:kick");

    redisContext *rc = it_rconnect(R(), 0);
    struct pc_client *c = it_connect();
    size_t live = 0, users = 0;
    for (int u = 0; u < CC_USERS; u++) {
        size_t n = cc_check_user(rc, c, CC_UID0 + u);
        live += n;
        users += n > 0;
    }
    cr_assert_gt(users, 0, "no user has a session left: the mix did not exercise anything");
    cr_log_info("sessions concurrency: %zu users online with %zu sessions, %zu offline", users, live,
                (size_t)CC_USERS - users);
    redisFree(rc);
    pc_close(c);
    for (int i = 0; i < CC_CONNS; i++)
        pc_close(w[i].c);
    it_sub_close(kick);
}

/* ============================================================================ CLI */

/* Run im-presence-cli against FX.srv with the NULL-terminated arguments; returns the exit code,
 * *out its stdout (malloc'd). */
static int cli(char **out, const char *first, ...)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", FX.srv.port);
    const char *argv[24] = {it_cli_bin(), "-h", "127.0.0.1", "-p", port};
    int n = 5;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL; a = va_arg(ap, const char *)) {
        cr_assert_lt(n, 23);
        argv[n++] = a;
    }
    va_end(ap);
    argv[n] = NULL;
    char *err = NULL;
    int code = it_run(argv, out, &err, 10000 * IT_SLOW);
    cr_assert_neq(code, -1, "the CLI did not finish");
    cr_assert(code == 0 || code == 1, "CLI exit %d; stdout '%s' stderr '%s'", code, *out, err);
    free(err);
    return code;
}

/* "OK route_key=user:route:<uid> epoch=<E>[ displaced=<n>]\n...": E, and *rest after the line. */
static long long cli_bind_epoch(const char *out, long long uid, const char **rest)
{
    char want[64];
    int n = snprintf(want, sizeof(want), "OK route_key=user:route:%lld epoch=", uid);
    cr_assert(strncmp(out, want, (size_t)n) == 0, "stdout '%s', want '%s<epoch>'", out, want);
    char *end;
    long long e = strtoll(out + n, &end, 10);
    cr_assert(e > 0 && end != out + n, "stdout '%s'", out);
    *rest = end;
    return e;
}

/* One "  <what> device=... gateway=... platform=P epoch=E last_seen_ms=T\n" line at *p. */
static void cli_expect_session_line(const char **p, const char *what, const char *dev, const char *gw,
                                    int platform, long long epoch)
{
    char want[256];
    int n =
        snprintf(want, sizeof(want), "  %s device=%s gateway=%s platform=%d epoch=%lld last_seen_ms=", what,
                 dev, gw, platform, epoch);
    cr_assert(strncmp(*p, want, (size_t)n) == 0, "line '%.*s', want '%s<ms>'", (int)strcspn(*p, "\n"), *p,
              want);
    char *end;
    long long t = strtoll(*p + n, &end, 10);
    long long now = it_now_ms();
    cr_assert(t > now - 60000 && t <= now && *end == '\n', "line '%.*s'", (int)strcspn(*p, "\n"), *p);
    *p = end + 1;
}

IT(sessions, cli_binds_devices_queries_sessions_and_fences_by_epoch)
{
    start_server(NULL, ROUTE_TTL, STATUS_TTL);
    char *out = NULL, e1s[24], e3s[24];
    const char *rest;
    cr_assert_eq(cli(&out, "bind", "42", "gw-a:7000", "--device", "phone", "--platform", "1", NULL), 0, "%s",
                 out);
    long long e1 = cli_bind_epoch(out, 42, &rest);
    cr_assert_str_eq(rest, "\n", "stdout '%s'", out);
    free(out);
    cr_assert_eq(cli(&out, "bind", "42", "gw-b:7000", "--platform", "2", "--device", "laptop", NULL), 0, "%s",
                 out);
    long long e2 = cli_bind_epoch(out, 42, &rest);
    cr_assert_gt(e2, e1);
    free(out);

    cr_assert_eq(cli(&out, "query", "42", NULL), 0);
    static const char head[] = "OK gateway=gw-b:7000 online=yes sessions=2\n";
    cr_assert(strncmp(out, head, strlen(head)) == 0, "stdout '%s', want '%s...'", out, head);
    const char *p = out + strlen(head);
    cli_expect_session_line(&p, "session", "laptop", "gw-b:7000", 2, e2);
    cli_expect_session_line(&p, "session", "phone", "gw-a:7000", 1, e1);
    cr_assert_str_eq(p, "", "stdout '%s' has more", out);
    free(out);

    /* The same device again: one displaced line. */
    cr_assert_eq(cli(&out, "bind", "42", "gw-c:7000", "--device", "phone", "--platform", "1", NULL), 0);
    long long e3 = cli_bind_epoch(out, 42, &rest);
    cr_assert(strncmp(rest, " displaced=1\n", 13) == 0, "stdout '%s'", out);
    p = rest + 13;
    cli_expect_session_line(&p, "displaced", "phone", "gw-a:7000", 1, e1);
    cr_assert_str_eq(p, "", "stdout '%s' has more", out);
    free(out);

    /* Heartbeat and unbind, fenced by --epoch. */
    snprintf(e1s, sizeof(e1s), "%lld", e1);
    snprintf(e3s, sizeof(e3s), "%lld", e3);
    cr_assert_eq(cli(&out, "heartbeat", "42", "gw-c:7000", "--device", "phone", "--epoch", e1s, NULL), 0);
    cr_assert_str_eq(out, "OK refreshed=no\n");
    free(out);
    cr_assert_eq(cli(&out, "heartbeat", "42", "gw-c:7000", "--device", "phone", "--epoch", e3s, NULL), 0);
    cr_assert_str_eq(out, "OK refreshed=yes\n");
    free(out);
    cr_assert_eq(cli(&out, "unbind", "42", "gw-c:7000", "--device", "phone", "--epoch", e1s, NULL), 0);
    cr_assert_str_eq(out, "OK unbound=no\n");
    free(out);
    cr_assert_eq(cli(&out, "unbind", "42", "gw-c:7000", "--epoch", e3s, "--device", "phone", NULL), 0);
    cr_assert_str_eq(out, "OK unbound=yes\n");
    free(out);
    cr_assert_eq(cli(&out, "query", "42", NULL), 0);
    static const char head1[] = "OK gateway=gw-b:7000 online=yes sessions=1\n";
    cr_assert(strncmp(out, head1, strlen(head1)) == 0, "stdout '%s', want '%s...'", out, head1);
    p = out + strlen(head1);
    cli_expect_session_line(&p, "session", "laptop", "gw-b:7000", 2, e2);
    free(out);

    /* A bad device is the server's INVALID (exit 1), naming the field. */
    cr_assert_eq(cli(&out, "bind", "42", "gw-a:7000", "--device", "bad dev", NULL), 1);
    cr_assert(strncmp(out, "INVALID", 7) == 0 && strstr(out, "device_id") != NULL, "stdout '%s'", out);
    free(out);
}

IT(sessions, cli_watch_shows_the_kick_of_a_displaced_session)
{
    start_server(NULL, ROUTE_TTL, STATUS_TTL);
    const char *outp = it_path("watch.out");
    char redis[32], port[16];
    snprintf(redis, sizeof(redis), "127.0.0.1:%d", FX.queue.port);
    snprintf(port, sizeof(port), "%d", FX.srv.port);
    /* Three messages: the first Bind's route, then the second's kick and route. */
    const char *argv[] = {it_cli_bin(), "-p", port, "-r", redis, "watch", "-n", "3", "42", NULL};
    pid_t pid = it_spawn(argv, outp, NULL);
    free(it_wait_file_holds(outp, "watching", 5000 * IT_SLOW));

    struct pc_client *c = it_connect();
    struct sess a, a2;
    bind_new(c, 42, &a, "phone", "gw-a:7000", 1);
    Mpim__BindRouteResp *r = bind_rec(c, 42, &a2, "phone", "gw-b:7000", 1);
    expect_displaced(r, LIST(&a));
    it_free(r);
    pc_close(c);

    int status = it_wait_pid(pid, 5000 * IT_SLOW);
    char *text = it_read_file(outp);
    cr_assert_neq(status, -1, "watch did not exit:\n%s", text);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "watch ended with status %d:\n%s", status, text);
    char want[160];
    snprintf(want, sizeof(want), " kick user=42 device=\"phone\" epoch=%lld gateway=gw-a:7000\n",
             (long long)a.epoch);
    cr_assert_not_null(strstr(text, want), "no '%s' in:\n%s", want, text);
    cr_assert_not_null(strstr(text, " route user=42 gateway=gw-a:7000\n"), "no first route line:\n%s", text);
    cr_assert_not_null(strstr(text, " route user=42 gateway=gw-b:7000\n"), "no second route line:\n%s", text);
    free(text);
}
