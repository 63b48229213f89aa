/* Health of idle Redis links. Regression "hung Redis invisible while idle": with the cache Redis
 * stopped by SIGSTOP and no traffic, /healthz kept answering 200 indefinitely, because an open
 * connection counted as a live one. Each link with nothing in flight now PINGs at least once per
 * timeout, so a hung Redis shows in /healthz (503 naming the role) within the role's timeout
 * + 1 s with or without traffic, the link reconnects as after a request timeout, and a PING
 * answered with an error is an answering Redis, not a dead one. Cache and queue are separate
 * Redis servers here, so each role is checked alone and the other must notice nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define TIMEOUT_MS 1000
#define SHARDS 2
/* The promised bound on noticing a hung Redis, scaled for sanitized servers. */
#define NOTICE_BOUND_MS ((TIMEOUT_MS + 1000.0) * IT_SLOW)
/* Redis back: reconnect backoff up to 2 s + 25 % jitter, then AUTH/SELECT: generous. */
#define RECOVER_MS (5000 * IT_SLOW)

static void health_init(void)
{
    fx_init_split();
    it_config_set(&FX.cfg, "presence_service", "thread_count", "%d", SHARDS);
    it_config_set(&FX.cfg, "redis_cache", "timeout", "%d", TIMEOUT_MS);
    it_config_set(&FX.cfg, "redis_queue", "timeout", "%d", TIMEOUT_MS);
    fx_start_server();
}

TestSuite(health, .init = health_init, .fini = fx_fini, .timeout = IT_TIMEOUT);

/* ------------------------------------------------------------------ helpers */

static char *scrape(void)
{
    char *body = NULL;
    int status = it_http_get(it_metrics_port(&FX.srv), "/metrics", NULL, &body);
    cr_assert_eq(status, 200, "GET /metrics: status %d", status);
    return body;
}

/* The Redis-link series of one role, summed over the shards. */
struct link_counts {
    double errors;     /* impresence_redis_errors_total */
    double reconnects; /* impresence_redis_reconnects_total */
    double up;         /* impresence_redis_connections_up */
};

static double sample(const char *text, const char *family, const char *role)
{
    char series[128];
    snprintf(series, sizeof(series), "%s{role=\"%s\"}", family, role);
    double v = it_metric(text, series);
    cr_assert(!isnan(v), "no sample %s in:\n%s", series, text);
    return v;
}

static struct link_counts counts(const char *role)
{
    char *text = scrape();
    struct link_counts c = {
        .errors = sample(text, "impresence_redis_errors_total", role),
        .reconnects = sample(text, "impresence_redis_reconnects_total", role),
        .up = sample(text, "impresence_redis_connections_up", role),
    };
    free(text);
    return c;
}

/* A number in Redis INFO: the digits after `key` (e.g. "cmdstat_ping:calls="), 0 if absent. */
static long long redis_info(int port, const char *section, const char *key)
{
    redisContext *c = it_rconnect(port, 0);
    redisReply *r = redisCommand(c, "INFO %s", section);
    cr_assert(r != NULL && r->type == REDIS_REPLY_STRING, "INFO %s on :%d failed", section, port);
    const char *p = strstr(r->str, key);
    long long v = p != NULL ? strtoll(p + strlen(key), NULL, 10) : 0;
    freeReplyObject(r);
    redisFree(c);
    return v;
}

static void wait_healthz_ok(const char *when)
{
    char *body = NULL;
    int status = it_http_wait_status(it_metrics_port(&FX.srv), "/healthz", 200, RECOVER_MS, &body);
    cr_assert_eq(status, 200, "/healthz %d %s: %s", status, when, body != NULL ? body : "(no answer)");
    free(body);
}

/* The metrics thread polls Redis (INFO, DBSIZE) every 5 s on the same thread that answers
 * /healthz, and a hung Redis stalls that poll, and with it /healthz, for up to min(timeout, 1 s).
 * So that the bound below times the Redis links and not that stall, the clock starts just after
 * a poll: a key is added to the cache database and we wait for impresence_cache_keys to count it
 * (both roles are polled together). */
static void wait_metrics_poll(void)
{
    static int keys_added;
    long long want = it_rdbsize(FX.cache.port, 0) + 1;
    it_rcmd(FX.cache.port, 0, "SET it:health:%d x", ++keys_added);
    double deadline = it_mono_ms() + 10000.0 * IT_SLOW;
    for (;;) {
        char *text = scrape();
        double keys = it_metric(text, "impresence_cache_keys");
        free(text);
        if (keys == (double)want)
            return;
        cr_assert_lt(it_mono_ms(), deadline, "impresence_cache_keys never reached %lld (last %g)", want, keys);
        it_sleep_ms(20);
    }
}

/* With the server idle since it started, the `role` Redis (`hung`) stops: /healthz is 503 naming
 * it within the bound, stays 503 while it is stopped, and is 200 again once it runs. Each shard's
 * link went down and came back once; the `other` role noticed nothing. */
static void idle_hang_shows_in_healthz(struct tp_redis *hung, const char *role, const char *other,
                                       int readyz_while_hung)
{
    int port = it_metrics_port(&FX.srv);
    wait_healthz_ok("at start");
    struct link_counts hung0 = counts(role), other0 = counts(other);
    cr_assert_eq(hung0.up, SHARDS, "%s links up at start: %g", role, hung0.up);
    wait_metrics_poll();

    it_redis_pause(hung);
    double t0 = it_mono_ms();
    char *body = NULL;
    int status = it_http_wait_status(port, "/healthz", 503, (int)NOTICE_BOUND_MS, &body);
    double ms = it_mono_ms() - t0;
    cr_assert_eq(status, 503, "/healthz still %d %.0f ms after the idle %s Redis hung (bound %.0f ms): %s", status,
                 ms, role, NOTICE_BOUND_MS, body != NULL ? body : "(no answer)");
    cr_assert_leq(ms, NOTICE_BOUND_MS, "/healthz 503 only %.0f ms after the %s Redis hung (bound %.0f ms)", ms,
                  role, NOTICE_BOUND_MS);
    cr_assert_not_null(strstr(body, role), "the 503 body does not name the %s: '%s'", role, body);
    free(body);
    cr_log_info("%s hung: /healthz 503 after %.0f ms (bound %.0f ms)", role, ms, NOTICE_BOUND_MS);

    /* Reconnecting to the stopped process completes the TCP handshake (the kernel does it), but
     * that is not up: /healthz stays 503 until every shard's link has also timed out on a new
     * connection (one error per link for the hang, one more per link and attempt). */
    double deadline = it_mono_ms() + (4.0 * TIMEOUT_MS + 3000.0) * IT_SLOW;
    for (;;) {
        status = it_http_get(port, "/healthz", NULL, &body);
        cr_assert_eq(status, 503, "/healthz %d while the %s Redis is still hung: %s", status, role,
                     body != NULL ? body : "(no answer)");
        free(body);
        double errors = counts(role).errors;
        if (errors >= hung0.errors + 2 * SHARDS)
            break;
        cr_assert_lt(it_mono_ms(), deadline, "%s errors %g, want >= %g: the links did not retry and time out",
                     role, errors, hung0.errors + 2 * SHARDS);
        it_sleep_ms(50);
    }
    status = it_http_get(port, "/readyz", NULL, &body);
    cr_assert_eq(status, readyz_while_hung, "/readyz %d with the %s Redis hung: %s", status, role, body);
    free(body);

    it_redis_resume(hung);
    t0 = it_mono_ms();
    status = it_http_wait_status(port, "/healthz", 200, RECOVER_MS, &body);
    cr_assert_eq(status, 200, "/healthz %d %.0f ms after the %s Redis resumed: %s", status, it_mono_ms() - t0, role,
                 body != NULL ? body : "(no answer)");
    free(body);

    struct link_counts hung1 = counts(role), other1 = counts(other);
    cr_assert_geq(hung1.errors, hung0.errors + 2 * SHARDS);
    cr_assert_eq(hung1.reconnects, hung0.reconnects + SHARDS, "%s reconnects %g -> %g, want +%d", role,
                 hung0.reconnects, hung1.reconnects, SHARDS);
    cr_assert_eq(hung1.up, SHARDS);
    cr_assert_eq(other1.errors, other0.errors, "the %s links counted errors (%g -> %g) though it never hung",
                 other, other0.errors, other1.errors);
    cr_assert_eq(other1.reconnects, other0.reconnects, "the %s links reconnected though it never hung", other);
    cr_assert_eq(other1.up, SHARDS);
}

/* Bind users 1..n (both shards, whatever the hash) and require OK with an empty msg: the route was
 * written and its notice published. */
static void bind_users_ok(struct pc_client *c, int n)
{
    for (int uid = 1; uid <= n; uid++) {
        char gw[32];
        snprintf(gw, sizeof(gw), "gw-%d:1", uid);
        Mpim__BindRouteResp *b = it_bind(c, uid, gw);
        cr_assert_eq(b->result->code, MPIM__CODE__OK, "bind %d after resume: %s '%s'", uid,
                     pc_code_name(b->result->code), b->result->msg);
        cr_assert_str_eq(b->result->msg, "", "bind %d after resume: msg '%s'", uid, b->result->msg);
        it_free(b);
    }
}

/* ------------------------------------------------------------------- tests */

IT(health, idle_cache_hung_is_503_within_timeout_plus_1s_and_served_after_resume)
{
    idle_hang_shows_in_healthz(&FX.cache, "cache", "queue", 503);
    struct pc_client *c = it_connect();
    enum { USERS = 8 };
    bind_users_ok(c, USERS);
    for (int uid = 1; uid <= USERS; uid++) {
        char gw[32];
        snprintf(gw, sizeof(gw), "gw-%d:1", uid);
        Mpim__QueryRouteResp *q = it_query(c, uid);
        cr_assert_eq(q->result->code, MPIM__CODE__OK, "query %d after resume: %s '%s'", uid,
                     pc_code_name(q->result->code), q->result->msg);
        cr_assert(it_bytes_eq(q->gateway_addr, gw), "query %d: not its gateway", uid);
        it_free(q);
    }
    pc_close(c);
}

IT(health, idle_queue_hung_is_503_within_timeout_plus_1s_and_served_after_resume)
{
    /* Routes do not need the queue: /readyz stays 200 meanwhile. */
    idle_hang_shows_in_healthz(&FX.queue, "queue", "cache", 200);
    const char *ch[] = {"presence:route", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    struct pc_client *c = it_connect();
    enum { USERS = 8 };
    bind_users_ok(c, USERS);
    for (int uid = 1; uid <= USERS; uid++) {
        char notice[48];
        int len = snprintf(notice, sizeof(notice), "%d:gw-%d:1", uid, uid);
        it_sub_expect(s, "presence:route", notice, (size_t)len);
    }
    it_sub_close(s);
    pc_close(c);
}

IT(health, idle_links_ping_both_redis_and_stay_up)
{
    wait_healthz_ok("at start");
    long long cache0 = redis_info(FX.cache.port, "commandstats", "cmdstat_ping:calls=");
    long long queue0 = redis_info(FX.queue.port, "commandstats", "cmdstat_ping:calls=");
    /* Each idle link PINGs at least once per timeout: two per link within about two timeouts. */
    double deadline = it_mono_ms() + (2.0 * TIMEOUT_MS + 1000.0) * IT_SLOW;
    long long cache = cache0, queue = queue0;
    while (cache < cache0 + 2 * SHARDS || queue < queue0 + 2 * SHARDS) {
        cr_assert_lt(it_mono_ms(), deadline, "PINGs from the idle server: cache +%lld, queue +%lld, want +%d each",
                     cache - cache0, queue - queue0, 2 * SHARDS);
        it_sleep_ms(50);
        cache = redis_info(FX.cache.port, "commandstats", "cmdstat_ping:calls=");
        queue = redis_info(FX.queue.port, "commandstats", "cmdstat_ping:calls=");
    }
    struct link_counts cc = counts("cache"), qc = counts("queue");
    cr_assert_eq(cc.errors + qc.errors, 0, "errors while idle: cache %g, queue %g", cc.errors, qc.errors);
    cr_assert_eq(cc.up + qc.up, 2 * SHARDS);
}

IT(health, ping_answered_with_an_error_is_not_a_dead_redis)
{
    /* -NOPERM here; -LOADING or -BUSY in production: either way Redis reads and answers. */
    wait_healthz_ok("at start");
    struct link_counts c0 = counts("cache");
    long long refused0 = redis_info(FX.cache.port, "errorstats", "errorstat_NOPERM:count=");
    it_rcmd(FX.cache.port, 0, "ACL SETUSER default -ping");
    double deadline = it_mono_ms() + (2.0 * TIMEOUT_MS + 1000.0) * IT_SLOW;
    long long refused = refused0;
    while (refused < refused0 + 2 * SHARDS) {
        cr_assert_lt(it_mono_ms(), deadline, "PINGs refused by the cache: +%lld, want +%d", refused - refused0,
                     2 * SHARDS);
        it_sleep_ms(50);
        refused = redis_info(FX.cache.port, "errorstats", "errorstat_NOPERM:count=");
    }
    struct link_counts c1 = counts("cache");
    cr_assert_eq(c1.errors, c0.errors, "a PING answered with an error counted as a failure (%g -> %g)", c0.errors,
                 c1.errors);
    cr_assert_eq(c1.reconnects, c0.reconnects, "a PING answered with an error made the link reconnect");
    cr_assert_eq(c1.up, SHARDS);
    char *body = NULL;
    int status = it_http_get(it_metrics_port(&FX.srv), "/healthz", NULL, &body);
    cr_assert_eq(status, 200, "/healthz %d while PING is refused: %s", status, body);
    free(body);
    it_rcmd(FX.cache.port, 0, "ACL SETUSER default +ping");
}
