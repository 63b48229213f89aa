/* mode = sentinel (contract §10): the server finds the master through real sentinels (1 master,
 * 1 replica, 3 sentinels started by the test), follows a manual failover and the death of the
 * master under load, and answers UNAVAILABLE, logged, while no sentinel names a master. It trusts
 * no stale answer: a "master" whose ROLE says slave is refused and the sentinels asked again, and
 * a READONLY reply makes it ask again without any +switch-master. */
#include <string.h>

#include "harness.h"

TestSuite(sentinel, .init = fx_init_sentinel, .fini = fx_fini, .timeout = IT_TIMEOUT);
TestSuite(sentinel_bad, .init = fx_init_redis, .fini = fx_fini, .timeout = IT_TIMEOUT);

/* The master the sentinels name now. */
static int master_port(void)
{
    int port = 0;
    cr_assert_eq(tp_sentinel_master(&FX.sentinel, &port), 0, "no sentinel names the master: %s", tp_error());
    return port;
}

/* Bind and Query users 1..50 in turn on c (they span every shard) until, after the sentinels
 * announced a new master (seen on sub), 50 Binds in a row are answered OK by it. Every Bind on the
 * way is OK or UNAVAILABLE, and a Query that is OK names its own user's gateway. Returns ms from
 * the announcement to the first Bind of that run. */
static double serve_through_failover(struct pc_client *c, struct it_sub *sub, int old_master)
{
    double announced = -1, run_start = -1, deadline = it_mono_ms() + 30000.0 * IT_SLOW;
    int unavailable = 0, run = 0;
    for (int i = 0; run < 50; i++) {
        cr_assert_lt(it_mono_ms(), deadline, "not served by a new master within the deadline (announced: %s)",
                     announced < 0 ? "no" : "yes");
        struct it_msg m;
        if (announced < 0 && it_sub_next(sub, &m, 0) == 1) {
            cr_assert_not_null(strstr(m.data, "presence 127.0.0.1"), "+switch-master '%s'", m.data);
            free(m.data);
            announced = it_mono_ms();
        }
        int64_t uid = 1 + i % 50;
        char gw[32];
        snprintf(gw, sizeof(gw), "gw-%lld:%d", (long long)uid, i);
        double t = it_mono_ms();
        Mpim__BindRouteResp *b = it_bind(c, uid, gw);
        int code = b->result->code;
        cr_assert(code == MPIM__CODE__OK || code == MPIM__CODE__UNAVAILABLE, "Bind during failover: %s '%s'",
                  pc_code_name(code), b->result->msg);
        it_free(b);
        Mpim__QueryRouteResp *q = it_query(c, uid);
        /* NOT_FOUND: this user's Binds so far failed, or were lost with the master (asynchronous
         * replication: wait_replicas is the guard, not built yet). */
        cr_assert(q->result->code == MPIM__CODE__OK || q->result->code == MPIM__CODE__UNAVAILABLE ||
                      q->result->code == MPIM__CODE__NOT_FOUND,
                  "Query during failover: %s '%s'", pc_code_name(q->result->code), q->result->msg);
        if (q->result->code == MPIM__CODE__OK) {
            char want[32];
            int n = snprintf(want, sizeof(want), "gw-%lld:", (long long)uid);
            cr_assert(q->gateway_addr.len > (size_t)n && memcmp(q->gateway_addr.data, want, (size_t)n) == 0,
                      "user %lld got another user's route '%.*s'", (long long)uid, (int)q->gateway_addr.len,
                      q->gateway_addr.data);
        }
        it_free(q);
        unavailable += code != MPIM__CODE__OK;
        if (announced < 0 || code != MPIM__CODE__OK) {
            run = 0;
            continue;
        }
        if (run++ == 0)
            run_start = t;
    }
    int port = master_port();
    cr_assert_neq(port, old_master, "the sentinels still name the old master");
    char key[32];
    snprintf(key, sizeof(key), "user:route:%d", 1);
    cr_assert(it_rexists(port, 0, key), "the last Binds did not reach the new master :%d", port);
    double ms = run_start > announced ? run_start - announced : 0;
    cr_log_info("every shard served by the new master %.0f ms after +switch-master; %d Binds UNAVAILABLE on the way",
                ms, unavailable);
    return ms;
}

/* After a failover: writes reach the new master, and so do Deliver's publishes. */
static void expect_served_by(struct pc_client *c, int port)
{
    Mpim__BindRouteResp *b = it_bind(c, 100, "gw-100:1");
    cr_assert_eq(b->result->code, MPIM__CODE__OK, "Bind after the failover: %s '%s'", pc_code_name(b->result->code),
                 b->result->msg);
    it_free(b);
    char *route = it_rget(port, 0, "user:route:100", NULL);
    cr_assert_not_null(route, "the Bind did not reach the new master :%d", port);
    cr_assert_str_eq(route, "gw-100:1");
    free(route);
    const char *ch[] = {"user:100", NULL};
    struct it_sub *s = it_sub_open(port, ch);
    Mpim__DeliverResp *d = it_deliver(c, 100, "after", 5, NULL);
    cr_assert_eq(d->result->code, MPIM__CODE__OK, "Deliver after the failover: %s '%s'",
                 pc_code_name(d->result->code), d->result->msg);
    cr_assert(d->delivered, "the publish did not reach the new master's subscriber");
    it_free(d);
    it_sub_expect(s, "user:100", "after", 5);
    it_sub_close(s);
}

/* Serve on the master the sentinels name, make them fail over (cause), keep serving through it:
 * every shard is served by the new master within 2 s of +switch-master (contract §10), and
 * writes and publishes reach the new master. */
static void failover_under_load(void (*cause)(int old_master))
{
    fx_start_server_linked();
    struct pc_client *c = it_connect();
    int old_master = master_port();
    cr_assert_eq(old_master, FX.sentinel.master.port);
    Mpim__BindRouteResp *b = it_bind(c, 1, "gw-1:0");
    cr_assert_eq(b->result->code, MPIM__CODE__OK, "%s '%s'", pc_code_name(b->result->code), b->result->msg);
    it_free(b);
    cr_assert(it_rexists(old_master, 0, "user:route:1"), "the Bind did not reach the master the sentinels name");
    /* The replica has the route before the master goes: the check after the failover can hold. */
    it_rcmd(old_master, 0, "WAIT 1 5000");
    const char *ch[] = {"+switch-master", NULL};
    struct it_sub *sub = it_sub_open(FX.sentinel.sentinel[0].port, ch);
    cause(old_master);
    double ms = serve_through_failover(c, sub, old_master);
    cr_assert_leq(ms, 2000.0 * IT_SLOW, "served %.0f ms after +switch-master (contract: within 2 s)", ms);
    expect_served_by(c, master_port());
    it_sub_close(sub);
    pc_close(c);
}

static void manual_failover(int old_master)
{
    (void)old_master;
    it_rcmd(FX.sentinel.sentinel[1].port, 0, "SENTINEL FAILOVER %s", FX.sentinel.name);
}

static void kill_master(int old_master)
{
    it_redis_kill(FX.sentinel.master.port == old_master ? &FX.sentinel.master : &FX.sentinel.replica);
}

IT(sentinel, finds_the_master_and_follows_a_manual_failover_under_load)
{
    failover_under_load(manual_failover);
}

IT(sentinel, follows_the_death_of_the_master)
{
    failover_under_load(kill_master);
}

IT(sentinel, an_unknown_master_name_is_unavailable_and_logged)
{
    it_config_set(&FX.cfg, "redis_cache", "master_name", "nobody");
    fx_start_server();
    struct pc_client *c = it_connect();
    Mpim__QueryRouteResp *q = it_query(c, 1);
    cr_assert_eq(q->result->code, MPIM__CODE__UNAVAILABLE, "got %s '%s'", pc_code_name(q->result->code),
                 q->result->msg);
    it_free(q);
    pc_close(c);
    free(it_wait_file_holds(FX.srv.log, "sentinel did not name the master role=cache", 5000 * IT_SLOW));
}

IT(sentinel_bad, no_reachable_sentinel_is_unavailable_at_once_and_logged)
{
    /* Nothing listens on these ports: the server still starts, answers UNAVAILABLE without
     * waiting, says why in its log, and /healthz says the cache is down. */
    it_config_set(&FX.cfg, "redis_cache", "mode", "sentinel");
    it_config_set(&FX.cfg, "redis_cache", "master_name", "presence");
    it_config_set(&FX.cfg, "redis_cache", "nodes", "127.0.0.1:%d,127.0.0.1:%d", it_free_port(), it_free_port());
    fx_start_server();
    struct pc_client *c = it_connect();
    double t0 = it_mono_ms();
    Mpim__QueryRouteResp *q = it_query(c, 1);
    cr_assert_eq(q->result->code, MPIM__CODE__UNAVAILABLE, "got %s '%s'", pc_code_name(q->result->code),
                 q->result->msg);
    cr_assert_lt(it_mono_ms() - t0, 1000.0 * IT_SLOW, "UNAVAILABLE only after %.0f ms", it_mono_ms() - t0);
    it_free(q);
    pc_close(c);
    char *body = NULL;
    int status = it_http_wait_status(it_metrics_port(&FX.srv), "/healthz", 503, 5000 * IT_SLOW, &body);
    cr_assert_eq(status, 503, "/healthz %d: %s", status, body);
    free(body);
    free(it_wait_file_holds(FX.srv.log, "sentinel did not name the master role=cache", 5000 * IT_SLOW));
}

/* ------------------------------------------------- [redis_cache] wait_replicas (contract §10) */

IT(sentinel, wait_replicas_confirms_every_write_on_the_replica)
{
    it_config_set(&FX.cfg, "redis_cache", "wait_replicas", "1");
    fx_start_server_linked();
    struct pc_client *c = it_connect();
    int replica = FX.sentinel.replica.port;
    /* Each OK means the replica has the write already. */
    Mpim__BindRouteResp *b = it_bind(c, 1, "gw-1:1");
    cr_assert_eq(b->result->code, MPIM__CODE__OK, "%s '%s'", pc_code_name(b->result->code), b->result->msg);
    it_free(b);
    char *route = it_rget(replica, 0, "user:route:1", NULL);
    cr_assert_not_null(route, "Bind answered OK before the replica had it");
    free(route);
    cr_assert(it_rexists(replica, 0, "user:status:1"));
    Mpim__HeartbeatResp *h = it_heartbeat(c, 1, "gw-1:1");
    cr_assert(h->result->code == MPIM__CODE__OK && h->refreshed, "%s '%s'", pc_code_name(h->result->code),
              h->result->msg);
    it_free(h);
    Mpim__UnbindRouteResp *u = it_unbind(c, 1, "gw-1:1");
    cr_assert(u->result->code == MPIM__CODE__OK && u->unbound, "%s '%s'", pc_code_name(u->result->code),
              u->result->msg);
    it_free(u);
    cr_assert_not(it_rexists(replica, 0, "user:route:1"), "Unbind answered OK before the replica had it");

    /* The replica hangs: a write is in effect on the master, unconfirmed, so UNAVAILABLE. */
    it_redis_pause(&FX.sentinel.replica);
    b = it_bind(c, 2, "gw-2:1");
    cr_assert_eq(b->result->code, MPIM__CODE__UNAVAILABLE, "%s '%s'", pc_code_name(b->result->code),
                 b->result->msg);
    cr_assert_not_null(strstr(b->result->msg, "written on the master, but confirmed by 0 of 1 replicas"), "msg '%s'",
                       b->result->msg);
    it_free(b);
    cr_assert(it_rexists(FX.sentinel.master.port, 0, "user:route:2"), "the msg says the write is on the master");
    /* Reads need no confirmation, and a write that changes nothing neither. */
    Mpim__QueryRouteResp *q = it_query(c, 2);
    cr_assert_eq(q->result->code, MPIM__CODE__OK);
    it_free(q);
    u = it_unbind(c, 3, "gw-3:1");
    cr_assert(u->result->code == MPIM__CODE__OK && !u->unbound, "%s '%s'", pc_code_name(u->result->code),
              u->result->msg);
    it_free(u);
    it_redis_resume(&FX.sentinel.replica);
    pc_close(c);
}

IT(sentinel, wait_replicas_above_the_replica_count_refuses_writes)
{
    it_config_set(&FX.cfg, "redis_cache", "wait_replicas", "2");
    it_config_set(&FX.cfg, "redis_cache", "timeout", "%d", 1500 * IT_SLOW); /* the WAIT ends well before the link gives up on it */
    fx_start_server_linked();
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 1, "gw-1:1");
    cr_assert_eq(b->result->code, MPIM__CODE__UNAVAILABLE, "%s '%s'", pc_code_name(b->result->code),
                 b->result->msg);
    cr_assert_not_null(strstr(b->result->msg, "confirmed by 1 of 2 replicas"), "msg '%s'", b->result->msg);
    it_free(b);
    pc_close(c);
}

IT(sentinel, confirmed_writes_survive_the_death_of_the_master)
{
    it_config_set(&FX.cfg, "redis_cache", "wait_replicas", "1");
    fx_start_server_linked();
    struct pc_client *c = it_connect();
    enum { USERS = 50 };
    for (int uid = 1; uid <= USERS; uid++) {
        char gw[32];
        snprintf(gw, sizeof(gw), "gw-%d:1", uid);
        Mpim__BindRouteResp *b = it_bind(c, uid, gw);
        cr_assert_eq(b->result->code, MPIM__CODE__OK, "%s '%s'", pc_code_name(b->result->code), b->result->msg);
        it_free(b);
    }
    const char *ch[] = {"+switch-master", NULL};
    struct it_sub *sub = it_sub_open(FX.sentinel.sentinel[0].port, ch);
    kill_master(master_port());
    struct it_msg m;
    cr_assert_eq(it_sub_next(sub, &m, 20000 * IT_SLOW), 1, "no +switch-master after the master died");
    free(m.data);
    /* Every Bind answered OK before the kill is on the promoted master. */
    double deadline = it_mono_ms() + 2000.0 * IT_SLOW;
    for (int uid = 1; uid <= USERS; uid++) {
        Mpim__QueryRouteResp *q;
        while ((q = it_query(c, uid))->result->code == MPIM__CODE__UNAVAILABLE && it_mono_ms() < deadline)
            it_free(q);
        cr_assert_eq(q->result->code, MPIM__CODE__OK, "user %d lost in the failover: %s '%s'", uid,
                     pc_code_name(q->result->code), q->result->msg);
        char gw[32];
        snprintf(gw, sizeof(gw), "gw-%d:1", uid);
        cr_assert(it_bytes_eq(q->gateway_addr, gw), "user %d: another route", uid);
        it_free(q);
    }
    /* The promoted master has no replica until one rejoins: writes are refused meanwhile
     * (docs/failure-modes.md). */
    Mpim__BindRouteResp *b = it_bind(c, 1, "gw-1:2");
    cr_assert_eq(b->result->code, MPIM__CODE__UNAVAILABLE, "%s '%s'", pc_code_name(b->result->code), b->result->msg);
    it_free(b);
    it_sub_close(sub);
    pc_close(c);
}

/* ------------------------------------ the sentinels' answer is checked (contract §10) */

/* One series of a fresh /metrics scrape (name and labels exactly as exposed); NAN if absent. */
static double series(const char *name)
{
    return it_metric_series(&FX.srv, name);
}

/* Every sentinel forgets the master name (SENTINEL REMOVE; no +switch-master is published). */
static void sentinels_forget(void)
{
    for (int k = 0; k < TP_SENTINELS; k++)
        it_rcmd(FX.sentinel.sentinel[k].port, 0, "SENTINEL REMOVE %s", FX.sentinel.name);
}

/* Every sentinel names port as the master, whatever port is: forget the name, MONITOR port afresh.
 * Nothing but the test decides what they answer: nothing announces +switch-master, and with a
 * down-after of a minute none acts on its own within a test (a master reporting role:slave counts
 * as down only after down-after + 20 s; and a sentinel monitoring afresh knows the replicas its
 * master's INFO lists, none if that "master" is a replica, so it has none to reconfigure). */
static void sentinels_name(int port)
{
    for (int k = 0; k < TP_SENTINELS; k++) {
        int sp = FX.sentinel.sentinel[k].port;
        redisContext *rc = it_rconnect(sp, 0);
        freeReplyObject(redisCommand(rc, "SENTINEL REMOVE %s", FX.sentinel.name)); /* may not know it: fine */
        redisFree(rc);
        it_rcmd(sp, 0, "SENTINEL MONITOR %s 127.0.0.1 %d 2", FX.sentinel.name, port);
        it_rcmd(sp, 0, "SENTINEL SET %s down-after-milliseconds 60000 failover-timeout 180000", FX.sentinel.name);
        int named = 0;
        cr_assert_eq(tp_sentinel_master_at(sp, FX.sentinel.name, &named), 0, "%s", tp_error());
        cr_assert_eq(named, port, "sentinel :%d names :%d, want :%d", sp, named, port);
    }
}

/* Wait until Redis on port has the write (a connection's last write) confirmed by a replica. */
static void set_replicated(int port, const char *key, const char *value)
{
    redisContext *rc = it_rconnect(port, 0);
    redisReply *r = redisCommand(rc, "SET %s %s", key, value);
    cr_assert(r != NULL && r->type == REDIS_REPLY_STATUS, "SET %s on :%d", key, port);
    freeReplyObject(r);
    r = redisCommand(rc, "WAIT 1 %d", 5000 * IT_SLOW);
    cr_assert(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1, "the replica of :%d lags", port);
    freeReplyObject(r);
    redisFree(rc);
}

/* Wait until the cache link's errors (failed attempts) pass `above`: the link keeps asking. */
static double wait_cache_errors_above(double above, int timeout_ms)
{
    double deadline = it_mono_ms() + timeout_ms, v;
    while ((v = series("impresence_redis_errors_total{role=\"cache\"}")) <= above) {
        cr_assert_lt(it_mono_ms(), deadline, "impresence_redis_errors_total{role=\"cache\"} stays at %g", v);
        it_sleep_ms(50);
    }
    return v;
}

/* Bind uid to gw until answered OK (asserts within timeout_ms); every answer on the way is
 * UNAVAILABLE, none another code. Returns the UNAVAILABLE answers. */
static int bind_until_ok(struct pc_client *c, int64_t uid, const char *gw, int timeout_ms)
{
    double deadline = it_mono_ms() + timeout_ms;
    for (int unavailable = 0;; unavailable++) {
        Mpim__BindRouteResp *b = it_bind(c, uid, gw);
        int code = b->result->code;
        cr_assert(code == MPIM__CODE__OK || (code == MPIM__CODE__UNAVAILABLE && it_mono_ms() < deadline),
                  "Bind %lld: %s '%s' after %d ms", (long long)uid, pc_code_name(code), b->result->msg, timeout_ms);
        it_free(b);
        if (code == MPIM__CODE__OK)
            return unavailable;
        it_sleep_ms(20);
    }
}

IT(sentinel, a_stale_answer_naming_a_replica_is_refused_by_role_and_asked_again)
{
    int master = FX.sentinel.master.port, replica = FX.sentinel.replica.port;
    /* A route the replica holds too: a link that took the replica's word would serve it. */
    set_replicated(master, "user:route:7", "gw-7:0");
    it_rcmd(master, 0, "SET user:status:7 online");
    /* The sentinels name the replica (as they might just before a failover reaches them). */
    sentinels_name(replica);
    fx_start_server();
    struct pc_client *c = it_connect();
    /* ROLE says slave: the link never comes up there, neither to read nor to write. */
    Mpim__QueryRouteResp *q = it_query(c, 7);
    cr_assert_eq(q->result->code, MPIM__CODE__UNAVAILABLE, "Query through a replica: %s '%s'",
                 pc_code_name(q->result->code), q->result->msg);
    it_free(q);
    Mpim__BindRouteResp *b = it_bind(c, 8, "gw-8:1");
    cr_assert_eq(b->result->code, MPIM__CODE__UNAVAILABLE, "Bind through a replica: %s '%s'",
                 pc_code_name(b->result->code), b->result->msg);
    it_free(b);
    char needle[128];
    snprintf(needle, sizeof(needle), "redis is not a master, asking the sentinels again role=cache addr=127.0.0.1:%d",
             replica);
    free(it_wait_file_holds(FX.srv.log, needle, 5000 * IT_SLOW));
    /* It asks again and again (each refused connection counts an error), and says it is down. */
    double e0 = wait_cache_errors_above(0, 5000 * IT_SLOW);
    double e1 = wait_cache_errors_above(e0, 5000 * IT_SLOW);
    char *body = NULL;
    int status = it_http_wait_status(it_metrics_port(&FX.srv), "/healthz", 503, 5000 * IT_SLOW, &body);
    cr_assert(status == 503 && strstr(body, "cache redis down") != NULL, "/healthz %d: %s", status, body);
    free(body);
    cr_assert_not(it_rexists(master, 0, "user:route:8"), "a Bind answered UNAVAILABLE reached the master");

    /* The sentinels name the real master: the next attempt finds it, ROLE says master, served. */
    double t0 = it_mono_ms();
    sentinels_name(master);
    int unavailable = bind_until_ok(c, 8, "gw-8:2", 10000 * IT_SLOW);
    cr_log_info("sentinels naming the replica :%d: cache errors %g, then %g; named the master: served %.0f ms "
                "later (%d Binds UNAVAILABLE on the way)",
                replica, e0, e1, it_mono_ms() - t0, unavailable);
    char *route = it_rget(master, 0, "user:route:8", NULL);
    cr_assert(route != NULL && strcmp(route, "gw-8:2") == 0, "the Bind is not on the master :%d: '%s'", master,
              route ? route : "(none)");
    free(route);
    q = it_query(c, 7);
    cr_assert(q->result->code == MPIM__CODE__OK && it_bytes_eq(q->gateway_addr, "gw-7:0"), "Query 7: %s '%s'",
              pc_code_name(q->result->code), q->result->msg);
    it_free(q);
    pc_close(c);
}

/* The master becomes a replica behind the server's back, and no sentinel announces anything: the
 * READONLY answer to a write is what makes the link ask again. A real sentinel set would notice
 * the swap on its own and act when its timers say (a replica that turned master is made a replica
 * again after its INFO is 8 s old, if its master still looks sane; a master that reports role:slave
 * is failed over after down-after + 20 s): no deterministic test. So the sentinels forget the name
 * during the swap and monitor it afresh afterwards (sentinels_name): first naming the old master,
 * now a replica (stale: the link must refuse it by ROLE and keep asking), then the new one. */
IT(sentinel, a_readonly_reply_makes_the_link_find_the_new_master)
{
    int old_master = FX.sentinel.master.port, new_master = FX.sentinel.replica.port;
    fx_start_server_linked();
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 1, "gw-1:1");
    cr_assert_eq(b->result->code, MPIM__CODE__OK, "%s '%s'", pc_code_name(b->result->code), b->result->msg);
    it_free(b);
    set_replicated(old_master, "it:probe", "1"); /* the replica has the route too */

    sentinels_forget();
    it_rcmd(new_master, 0, "REPLICAOF NO ONE");
    it_rcmd(old_master, 0, "REPLICAOF 127.0.0.1 %d", new_master);
    sentinels_name(old_master);
    /* The link to the old master is still up (REPLICAOF keeps clients): the write meets READONLY. */
    double e0 = series("impresence_redis_errors_total{role=\"cache\"}");
    b = it_bind(c, 2, "gw-2:1");
    cr_assert_eq(b->result->code, MPIM__CODE__UNAVAILABLE, "Bind on a demoted master: %s '%s'",
                 pc_code_name(b->result->code), b->result->msg);
    cr_assert_not_null(strstr(b->result->msg, "READONLY"), "msg '%s'", b->result->msg);
    it_free(b);
    char needle[128];
    snprintf(needle, sizeof(needle), "redis master became a replica, asking the sentinels role=cache addr=127.0.0.1:%d",
             old_master);
    free(it_wait_file_holds(FX.srv.log, needle, 5000 * IT_SLOW));
    /* Asked again, the sentinels name the old master: refused by ROLE, asked again, and so on. */
    snprintf(needle, sizeof(needle), "redis is not a master, asking the sentinels again role=cache addr=127.0.0.1:%d",
             old_master);
    free(it_wait_file_holds(FX.srv.log, needle, 5000 * IT_SLOW));
    double e1 = wait_cache_errors_above(e0, 5000 * IT_SLOW);
    b = it_bind(c, 2, "gw-2:2");
    cr_assert_eq(b->result->code, MPIM__CODE__UNAVAILABLE, "Bind while the sentinels name a replica: %s '%s'",
                 pc_code_name(b->result->code), b->result->msg);
    it_free(b);
    cr_assert_not(it_rexists(new_master, 0, "user:route:2"), "a Bind answered UNAVAILABLE was written");

    /* The sentinels name the new master: writes succeed there. */
    double t0 = it_mono_ms();
    sentinels_name(new_master);
    int unavailable = bind_until_ok(c, 2, "gw-2:3", 10000 * IT_SLOW);
    cr_log_info("READONLY on :%d: cache errors %g -> %g while the sentinels named it; named :%d: served %.0f ms "
                "later (%d Binds UNAVAILABLE on the way)",
                old_master, e0, e1, new_master, it_mono_ms() - t0, unavailable);
    char *route = it_rget(new_master, 0, "user:route:2", NULL);
    cr_assert(route != NULL && strcmp(route, "gw-2:3") == 0, "the Bind is not on the new master :%d: '%s'", new_master,
              route ? route : "(none)");
    free(route);
    Mpim__QueryRouteResp *q = it_query(c, 1);
    cr_assert(q->result->code == MPIM__CODE__OK && it_bytes_eq(q->gateway_addr, "gw-1:1"), "Query 1: %s '%s'",
              pc_code_name(q->result->code), q->result->msg);
    it_free(q);
    pc_close(c);
}
