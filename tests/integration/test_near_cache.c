/* Contract §11, docs/near-cache.md: the near cache answers from memory and is never stale. A
 * QueryRoute sent after any writer got Redis's reply to its write sees the write: writes by hand
 * (a plain Redis client), by another instance, racing the read that fills the cache, while the
 * invalidation connection is killed, across a Redis restart and a FLUSHALL; an entry never
 * outlives its key's TTL; a tiny near_cache evicts, 0 turns it all off. Real Redis, real server,
 * waiting on conditions the server or Redis report. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"

TestSuite(near_cache, .init = fx_init_redis, .fini = fx_fini, .timeout = IT_TIMEOUT);
TestSuite(near_cache_cluster, .init = fx_init_cluster, .fini = fx_fini, .timeout = 2 * IT_TIMEOUT);

#define SHARDS 2 /* it_config_defaults' thread_count: one tracked node per shard standalone */

static int R(void)
{
    return FX.cache.port;
}

static double metric(const struct it_server *s, const char *name)
{
    return it_metric_now(s, name);
}

static void wait_tracked(const struct it_server *s, int nodes)
{
    it_wait_metric(s, "impresence_near_cache_tracked", nodes, 10000 * IT_SLOW);
}

/* Start FX.srv with [route] near_cache = entries (-1: the default), all links up and, with the
 * cache on, every shard's tracking confirmed. */
static void start(int entries)
{
    if (entries >= 0)
        it_config_set(&FX.cfg, "route", "near_cache", "%d", entries);
    fx_start_server_linked();
    if (entries != 0)
        wait_tracked(&FX.srv, SHARDS);
}

/* Redis again, this time with DEBUG allowed from loopback (DEBUG SET-ACTIVE-EXPIRE). */
static void redis_with_debug(void)
{
    it_redis_stop(&FX.cache);
    static const char *const debug[] = {"--enable-debug-command", "local", NULL};
    FX.cache.extra_args = debug;
    it_redis_restart(&FX.cache);
}

static void gw_of(char *buf, size_t n, int64_t uid, int version)
{
    snprintf(buf, n, "gw-%lld-%d:7000", (long long)uid, version);
}

/* Bind users [first, first+n) to version's gateway, pipelined; every answer OK. */
static void bind_all(struct pc_client *c, int64_t first, int n, int version)
{
    char gw[64];
    for (int i = 0; i < n; i++) {
        Mpim__BindRouteReq r = MPIM__BIND_ROUTE_REQ__INIT;
        r.user_id = first + i;
        gw_of(gw, sizeof(gw), first + i, version);
        r.gateway_addr = it_bytes(gw);
        cr_assert_eq(pc_send(c, PR_METHOD_BIND, &r.base), 0, "%s", pc_error(c));
    }
    cr_assert_eq(pc_flush(c), 0, "%s", pc_error(c));
    for (int i = 0; i < n; i++) {
        ProtobufCMessage *m = NULL;
        cr_assert_eq(pc_recv(c, PR_METHOD_BIND, &m), 0, "%s", pc_error(c));
        Mpim__BindRouteResp *b = (Mpim__BindRouteResp *)m;
        cr_assert_eq(b->result->code, MPIM__CODE__OK, "bind %lld: %s", (long long)(first + i), b->result->msg);
        protobuf_c_message_free_unpacked(m, NULL);
    }
}

/* Query users [first, first+n), pipelined; each must be online on version's gateway. */
static void query_all(struct pc_client *c, int64_t first, int n, int version)
{
    for (int i = 0; i < n; i++) {
        Mpim__QueryRouteReq r = MPIM__QUERY_ROUTE_REQ__INIT;
        r.user_id = first + i;
        cr_assert_eq(pc_send(c, PR_METHOD_QUERY, &r.base), 0, "%s", pc_error(c));
    }
    cr_assert_eq(pc_flush(c), 0, "%s", pc_error(c));
    char gw[64];
    for (int i = 0; i < n; i++) {
        ProtobufCMessage *m = NULL;
        cr_assert_eq(pc_recv(c, PR_METHOD_QUERY, &m), 0, "%s", pc_error(c));
        Mpim__QueryRouteResp *q = (Mpim__QueryRouteResp *)m;
        gw_of(gw, sizeof(gw), first + i, version);
        cr_assert_eq(q->result->code, MPIM__CODE__OK, "query %lld: %s %s", (long long)(first + i),
                     pc_code_name(q->result->code), q->result->msg);
        cr_assert(it_bytes_eq(q->gateway_addr, gw), "query %lld: '%.*s', want '%s'", (long long)(first + i),
                  (int)q->gateway_addr.len, q->gateway_addr.data, gw);
        protobuf_c_message_free_unpacked(m, NULL);
    }
}

/* One QueryRoute: want_gw NULL means NOT_FOUND. */
static void expect_query(struct pc_client *c, int64_t uid, const char *want_gw)
{
    Mpim__QueryRouteResp *q = it_query(c, uid);
    if (want_gw == NULL) {
        cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND, "user %lld: %s '%.*s', want NOT_FOUND", (long long)uid,
                     pc_code_name(q->result->code), (int)q->gateway_addr.len, q->gateway_addr.data);
        cr_assert_not(q->is_online);
    } else {
        cr_assert_eq(q->result->code, MPIM__CODE__OK, "user %lld: %s %s, want OK %s", (long long)uid,
                     pc_code_name(q->result->code), q->result->msg, want_gw);
        cr_assert(it_bytes_eq(q->gateway_addr, want_gw), "user %lld: stale '%.*s', want '%s'", (long long)uid,
                  (int)q->gateway_addr.len, q->gateway_addr.data, want_gw);
    }
    it_free(q);
}

/* A QueryRoute until it is neither UNAVAILABLE (Redis coming back) nor a deadline passes. */
static Mpim__QueryRouteResp *query_served(struct pc_client *c, int64_t uid)
{
    double deadline = it_mono_ms() + 10000 * IT_SLOW;
    for (;;) {
        Mpim__QueryRouteResp *q = it_query(c, uid);
        if (q->result->code != MPIM__CODE__UNAVAILABLE)
            return q;
        cr_assert_lt(it_mono_ms(), deadline, "user %lld still UNAVAILABLE: %s", (long long)uid, q->result->msg);
        it_free(q);
        it_sleep_ms(10);
    }
}

/* a) 2,000 warm users changed by a plain Redis client, each queried once right after its write's
 * reply: every answer is the new state. */
IT(near_cache, writes_by_a_plain_redis_client_are_never_answered_stale)
{
    enum { USERS = 2000, FIRST = 10000 };
    start(-1); /* the default: on */
    struct pc_client *c = it_connect();
    bind_all(c, FIRST, USERS, 1);
    query_all(c, FIRST, USERS, 1); /* misses: fills the cache */
    double hits0 = metric(&FX.srv, "impresence_near_cache_hits_total");
    query_all(c, FIRST, USERS, 1);
    double hits = metric(&FX.srv, "impresence_near_cache_hits_total") - hits0;
    cr_assert_eq(hits, USERS, "a warm second round: %g hits of %d", hits, USERS);
    cr_assert_eq(metric(&FX.srv, "impresence_near_cache_entries"), USERS);

    redisContext *r = it_rconnect(R(), 0);
    char gw[64], key[64];
    int64_t now = it_now_ms();
    for (int i = 0; i < USERS; i++) {
        int64_t uid = FIRST + i;
        redisReply *rep = NULL;
        switch (i % 4) {
        case 0: /* another gateway */
            gw_of(gw, sizeof(gw), uid, 2);
            rep = redisCommand(r, "SET user:route:%lld %s", (long long)uid, gw);
            break;
        case 1: /* gone */
            rep = redisCommand(r, "DEL user:route:%lld", (long long)uid);
            break;
        case 2: /* expired: PEXPIRE 1, then until Redis says it is gone */
            rep = redisCommand(r, "PEXPIRE user:route:%lld 1", (long long)uid);
            snprintf(key, sizeof(key), "user:route:%lld", (long long)uid);
            while (it_rexists(R(), 0, key))
                it_sleep_ms(1);
            break;
        default: /* a session added by hand: the answer lists it */
            rep = redisCommand(r, "HSET user:sessions:%lld hand 99|3|%lld|gw-hand:1", (long long)uid,
                               (long long)now);
            break;
        }
        cr_assert(rep != NULL && rep->type != REDIS_REPLY_ERROR, "write for %lld failed", (long long)uid);
        freeReplyObject(rep);
        /* The write's reply is in: the very next query must see it. */
        Mpim__QueryRouteResp *q = it_query(c, uid);
        switch (i % 4) {
        case 0:
            cr_assert(q->result->code == MPIM__CODE__OK && it_bytes_eq(q->gateway_addr, gw),
                      "user %lld: stale '%.*s' after SET %s", (long long)uid, (int)q->gateway_addr.len,
                      q->gateway_addr.data, gw);
            break;
        case 1:
        case 2:
            cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND, "user %lld: stale '%.*s' after %s",
                         (long long)uid, (int)q->gateway_addr.len, q->gateway_addr.data, i % 4 == 1 ? "DEL" : "expiry");
            break;
        default: {
            bool seen = false;
            for (size_t k = 0; k < q->n_sessions; k++)
                seen = seen || (strcmp(q->sessions[k]->device_id, "hand") == 0 && q->sessions[k]->epoch == 99);
            cr_assert(seen, "user %lld: the session added by HSET is missing (%zu sessions)", (long long)uid,
                      q->n_sessions);
            break;
        }
        }
        it_free(q);
    }
    redisFree(r);
    cr_assert_gt(metric(&FX.srv, "impresence_near_cache_invalidations_total"), 0);
    pc_close(c);
}

/* b) Two instances on one Redis: what one writes, the other (warm) answers at once. */
IT(near_cache, another_instance_writes_are_seen_at_once)
{
    enum { USERS = 200, FIRST = 500 };
    start(-1);
    struct it_config cfg = FX.cfg;
    it_config_set(&cfg, "presence_service", "port", "0");
    it_config_set(&cfg, "metrics", "port", "auto");
    struct it_server b;
    memset(&b, 0, sizeof(b));
    it_server_start(&b, &cfg, NULL);
    wait_tracked(&b, SHARDS);
    struct pc_client *ca = it_connect(), *cb = it_connect_port(b.port);
    bind_all(ca, FIRST, USERS, 1);
    query_all(cb, FIRST, USERS, 1);
    double hits0 = metric(&b, "impresence_near_cache_hits_total");
    query_all(cb, FIRST, USERS, 1); /* B is warm */
    cr_assert_eq(metric(&b, "impresence_near_cache_hits_total") - hits0, USERS);
    char gw[64];
    for (int i = 0; i < USERS; i++) {
        Mpim__BindRouteResp *r = it_bind(ca, FIRST + i, (gw_of(gw, sizeof(gw), FIRST + i, 2), gw));
        cr_assert_eq(r->result->code, MPIM__CODE__OK);
        it_free(r);
        expect_query(cb, FIRST + i, gw); /* B: right after A's answer */
    }
    pc_close(ca);
    pc_close(cb);
    it_server_stop_clean(&b);
}

/* The server's state letter in /proc (T: stopped). */
static char proc_state(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    char *text = it_read_file(path);
    cr_assert_not_null(text);
    const char *p = strrchr(text, ')');
    char state = p != NULL && p[1] == ' ' ? p[2] : '?';
    free(text);
    return state;
}

static void wait_state(pid_t pid, char want)
{
    double deadline = it_mono_ms() + 5000 * IT_SLOW;
    while (proc_state(pid) != want) {
        cr_assert_lt(it_mono_ms(), deadline, "process %d never reached state %c", (int)pid, want);
        it_sleep_ms(1);
    }
}

/* Has Redis run a tracked client's last command `cmd` (CLIENT LIST: flags=t, cmd=...)? */
static bool tracked_client_ran(const char *cmd)
{
    redisContext *r = it_rconnect(R(), 0);
    redisReply *rep = redisCommand(r, "CLIENT LIST");
    cr_assert(rep != NULL && rep->type == REDIS_REPLY_STRING);
    char want[64];
    snprintf(want, sizeof(want), " cmd=%s ", cmd);
    bool found = false;
    for (char *line = strtok(rep->str, "\n"); line != NULL && !found; line = strtok(NULL, "\n"))
        found = strstr(line, " flags=t ") != NULL && strstr(line, want) != NULL;
    freeReplyObject(rep);
    redisFree(r);
    return found;
}

/* c) The race, forced: the read that would fill the cache runs in Redis, then a write changes the
 * key, and only then does the server see either the read's reply or the write's invalidation.
 * Redis is stopped (SIGSTOP) while the read is sent; the server is stopped while Redis runs the
 * read and then the write; then the server goes on. Whichever it takes in first, the old value
 * must not be cached: the next query says the new one. */
IT(near_cache, write_between_read_and_its_reply_is_never_cached_stale)
{
    /* Long timeouts: the stops must not look like a hung Redis (which would flush everything and
     * prove nothing). */
    it_config_set(&FX.cfg, "redis_cache", "timeout", "%d", 20000 * IT_SLOW);
    it_config_set(&FX.cfg, "redis_queue", "timeout", "%d", 20000 * IT_SLOW);
    start(-1);
    it_rcmd(R(), 0, "SET user:route:77 gw-old:1");
    struct pc_client *c = it_connect();
    double misses0 = metric(&FX.srv, "impresence_near_cache_misses_total");

    cr_assert_eq(tp_redis_pause(&FX.cache), 0, "%s", tp_error());
    Mpim__QueryRouteReq req = MPIM__QUERY_ROUTE_REQ__INIT;
    req.user_id = 77;
    cr_assert_eq(pc_send(c, PR_METHOD_QUERY, &req.base), 0);
    cr_assert_eq(pc_flush(c), 0);
    /* The shard began the read (counted as it is sent): its GET, PTTL, HGETALL, PTTL wait in
     * the stopped Redis's socket. */
    it_wait_metric(&FX.srv, "impresence_near_cache_misses_total", misses0 + 1, 5000 * IT_SLOW);
    kill(FX.srv.pid, SIGSTOP);
    wait_state(FX.srv.pid, 'T');
    cr_assert_eq(tp_redis_resume(&FX.cache), 0, "%s", tp_error());
    /* Redis runs the read (its reply now waits in the stopped server's socket) ... */
    double deadline = it_mono_ms() + 5000 * IT_SLOW;
    while (!tracked_client_ran("pttl")) {
        if (it_mono_ms() > deadline) {
            kill(FX.srv.pid, SIGCONT);
            cr_assert_fail("the server's read never reached Redis");
        }
        it_sleep_ms(1);
    }
    /* ... then the write, whose invalidation waits there too. */
    it_rcmd(R(), 0, "SET user:route:77 gw-new:1");
    kill(FX.srv.pid, SIGCONT);

    ProtobufCMessage *m = NULL;
    cr_assert_eq(pc_recv(c, PR_METHOD_QUERY, &m), 0, "%s", pc_error(c));
    Mpim__QueryRouteResp *q = (Mpim__QueryRouteResp *)m;
    cr_assert(q->result->code == MPIM__CODE__OK && it_bytes_eq(q->gateway_addr, "gw-old:1"),
              "the read ran before the write: want gw-old:1, got %s '%.*s'", pc_code_name(q->result->code),
              (int)q->gateway_addr.len, q->gateway_addr.data);
    protobuf_c_message_free_unpacked(m, NULL);
    for (int i = 0; i < 3; i++)
        expect_query(c, 77, "gw-new:1");
    /* Nothing flushed the cache: the race itself was handled. */
    cr_assert_eq(metric(&FX.srv, "impresence_near_cache_flushes_total"), 0);
    cr_assert_geq(metric(&FX.srv, "impresence_near_cache_invalidations_total"), 1);
    pc_close(c);
}

/* The ids of the clients subscribed to the invalidation channel (our tracking links). */
static int tracking_clients(long long *ids, int max)
{
    redisContext *r = it_rconnect(R(), 0);
    redisReply *rep = redisCommand(r, "CLIENT LIST");
    cr_assert(rep != NULL && rep->type == REDIS_REPLY_STRING);
    int n = 0;
    for (char *line = strtok(rep->str, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (strstr(line, " sub=1 ") == NULL || strstr(line, " flags=P ") == NULL)
            continue;
        if (n < max)
            ids[n] = strtoll(strstr(line, "id=") + 3, NULL, 10);
        n++;
    }
    freeReplyObject(rep);
    redisFree(r);
    return n;
}

/* d) The invalidation connection killed: everything cached is dropped, a write right after the
 * kill is seen, and the cache serves again once tracking is back. */
IT(near_cache, killed_tracking_connection_flushes_and_recovers)
{
    enum { USERS = 100, FIRST = 300 };
    start(-1);
    struct pc_client *c = it_connect();
    bind_all(c, FIRST, USERS, 1);
    query_all(c, FIRST, USERS, 1);
    query_all(c, FIRST, USERS, 1);
    cr_assert_gt(metric(&FX.srv, "impresence_near_cache_hits_total"), 0);
    double flushes0 = metric(&FX.srv, "impresence_near_cache_flushes_total");
    long long ids[8];
    int n = tracking_clients(ids, 8);
    cr_assert_eq(n, SHARDS, "want one tracking connection per shard, found %d", n);
    for (int i = 0; i < n; i++)
        it_rcmd(R(), 0, "CLIENT KILL ID %lld", ids[i]);
    /* Right after the kill, before the server may have noticed: writes it can no longer hear of. */
    char gw[64];
    for (int i = 0; i < USERS; i++) {
        gw_of(gw, sizeof(gw), FIRST + i, 2);
        it_rcmd(R(), 0, "SET user:route:%lld %s", (long long)(FIRST + i), gw);
        expect_query(c, FIRST + i, gw);
    }
    it_wait_metric(&FX.srv, "impresence_near_cache_flushes_total", flushes0 + SHARDS, 5000 * IT_SLOW);
    /* Tracking comes back by itself (new connections, new ids), and with it the hits. */
    wait_tracked(&FX.srv, SHARDS);
    cr_assert_eq(tracking_clients(ids, 8), SHARDS);
    query_all(c, FIRST, USERS, 2);
    double hits0 = metric(&FX.srv, "impresence_near_cache_hits_total");
    query_all(c, FIRST, USERS, 2);
    cr_assert_eq(metric(&FX.srv, "impresence_near_cache_hits_total") - hits0, USERS);
    pc_close(c);
}

/* The shard's own cache connection killed: Redis forgets what it tracked for it, so writes after
 * the kill announce nothing; the server must not trust what it cached through it. */
IT(near_cache, killed_cache_connection_is_not_trusted)
{
    enum { USERS = 50, FIRST = 400 };
    start(-1);
    struct pc_client *c = it_connect();
    bind_all(c, FIRST, USERS, 1);
    query_all(c, FIRST, USERS, 1);
    query_all(c, FIRST, USERS, 1); /* cached */
    it_rcmd(R(), 0, "CLIENT KILL TYPE normal SKIPME yes"); /* every plain connection: the cache links too */
    char gw[64];
    for (int i = 0; i < USERS; i++) {
        gw_of(gw, sizeof(gw), FIRST + i, 2);
        it_rcmd(R(), 0, "SET user:route:%lld %s", (long long)(FIRST + i), gw);
        Mpim__QueryRouteResp *q = query_served(c, FIRST + i);
        cr_assert(q->result->code == MPIM__CODE__OK && it_bytes_eq(q->gateway_addr, gw),
                  "user %lld: %s '%.*s' after the cache connection was killed, want %s", (long long)(FIRST + i),
                  pc_code_name(q->result->code), (int)q->gateway_addr.len, q->gateway_addr.data, gw);
        it_free(q);
    }
    pc_close(c);
}

/* e) Redis restarted with other data: no answer from before. */
IT(near_cache, redis_restart_with_other_data_serves_no_old_answer)
{
    enum { USERS = 100, FIRST = 700 };
    start(-1);
    struct pc_client *c = it_connect();
    bind_all(c, FIRST, USERS, 1);
    query_all(c, FIRST, USERS, 1);
    query_all(c, FIRST, USERS, 1); /* cached */
    it_redis_stop(&FX.cache);
    it_redis_restart(&FX.cache);
    /* Other data: half the users elsewhere, the rest gone. */
    char gw[64];
    for (int i = 0; i < USERS; i += 2) {
        gw_of(gw, sizeof(gw), FIRST + i, 3);
        it_rcmd(R(), 0, "SET user:route:%lld %s", (long long)(FIRST + i), gw);
    }
    for (int i = 0; i < USERS; i++) {
        Mpim__QueryRouteResp *q = query_served(c, FIRST + i);
        if (i % 2 == 0) {
            gw_of(gw, sizeof(gw), FIRST + i, 3);
            cr_assert(q->result->code == MPIM__CODE__OK && it_bytes_eq(q->gateway_addr, gw),
                      "user %lld: %s '%.*s', want %s", (long long)(FIRST + i), pc_code_name(q->result->code),
                      (int)q->gateway_addr.len, q->gateway_addr.data, gw);
        } else {
            cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND, "user %lld: old '%.*s' after the restart",
                         (long long)(FIRST + i), (int)q->gateway_addr.len, q->gateway_addr.data);
        }
        it_free(q);
    }
    /* And it caches again once tracking is back. */
    wait_tracked(&FX.srv, SHARDS);
    gw_of(gw, sizeof(gw), FIRST, 3);
    expect_query(c, FIRST, gw);
    double hits0 = metric(&FX.srv, "impresence_near_cache_hits_total");
    expect_query(c, FIRST, gw);
    cr_assert_eq(metric(&FX.srv, "impresence_near_cache_hits_total") - hits0, 1);
    pc_close(c);
}

/* f) A tiny near_cache: right answers, at most that many entries per shard. */
IT(near_cache, tiny_capacity_evicts_and_stays_right)
{
    enum { USERS = 300, FIRST = 900 };
    start(2);
    struct pc_client *c = it_connect();
    bind_all(c, FIRST, USERS, 1);
    for (int round = 0; round < 3; round++) {
        query_all(c, FIRST, USERS, 1);
        cr_assert_leq(metric(&FX.srv, "impresence_near_cache_entries"), 2 * SHARDS);
    }
    /* The same user twice in a row: the second is a hit even at capacity 2. */
    double hits0 = metric(&FX.srv, "impresence_near_cache_hits_total");
    char gw[64];
    expect_query(c, FIRST, (gw_of(gw, sizeof(gw), FIRST, 1), gw));
    expect_query(c, FIRST, gw);
    cr_assert_geq(metric(&FX.srv, "impresence_near_cache_hits_total") - hits0, 1);
    bind_all(c, FIRST, USERS, 2);
    query_all(c, FIRST, USERS, 2);
    cr_assert_leq(metric(&FX.srv, "impresence_near_cache_entries"), 2 * SHARDS);
    pc_close(c);
}

/* Clients with CLIENT TRACKING on, and tracking connections, on a node. */
static void node_tracking(int port, int *tracked, int *subscribed)
{
    redisContext *r = it_rconnect(port, 0);
    redisReply *rep = redisCommand(r, "CLIENT LIST");
    cr_assert(rep != NULL && rep->type == REDIS_REPLY_STRING);
    *tracked = *subscribed = 0;
    for (char *line = strtok(rep->str, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        *tracked += strstr(line, " flags=t ") != NULL;
        *subscribed += strstr(line, " sub=1 ") != NULL && strstr(line, " flags=P ") != NULL;
    }
    freeReplyObject(rep);
    redisFree(r);
}

/* g) near_cache = 0: no tracking connection, no CLIENT TRACKING, no hits; answers as ever. */
IT(near_cache, zero_turns_it_off)
{
    start(0);
    struct pc_client *c = it_connect();
    bind_all(c, 1, 50, 1);
    query_all(c, 1, 50, 1);
    query_all(c, 1, 50, 1);
    int tracked = 0, subscribed = 0;
    node_tracking(R(), &tracked, &subscribed);
    cr_assert_eq(subscribed, 0, "a tracking connection exists with near_cache = 0");
    cr_assert_eq(tracked, 0, "a connection has CLIENT TRACKING on with near_cache = 0");
    cr_assert_eq(metric(&FX.srv, "impresence_near_cache_hits_total"), 0);
    cr_assert_eq(metric(&FX.srv, "impresence_near_cache_misses_total"), 0);
    cr_assert_eq(metric(&FX.srv, "impresence_near_cache_tracked"), 0);
    it_rcmd(R(), 0, "SET user:route:1 gw-hand:1");
    expect_query(c, 1, "gw-hand:1");
    pc_close(c);
}

/* h) FLUSHALL: Redis says "everything changed"; everything is read again. */
IT(near_cache, flushall_drops_everything)
{
    enum { USERS = 100, FIRST = 1200 };
    start(-1);
    struct pc_client *c = it_connect();
    bind_all(c, FIRST, USERS, 1);
    query_all(c, FIRST, USERS, 1);
    query_all(c, FIRST, USERS, 1);
    double flushes0 = metric(&FX.srv, "impresence_near_cache_flushes_total");
    it_rcmd(R(), 0, "FLUSHALL");
    for (int i = 0; i < USERS; i++)
        expect_query(c, FIRST + i, NULL);
    cr_assert_geq(metric(&FX.srv, "impresence_near_cache_flushes_total"), flushes0 + 1);
    /* Offline users are cached too (Redis tracks the read of a missing key): their creation by
     * hand is announced like any change. */
    double hits0 = metric(&FX.srv, "impresence_near_cache_hits_total");
    for (int i = 0; i < USERS; i++)
        expect_query(c, FIRST + i, NULL);
    cr_assert_eq(metric(&FX.srv, "impresence_near_cache_hits_total") - hits0, USERS);
    for (int i = 0; i < USERS; i += 7) {
        it_rcmd(R(), 0, "SET user:route:%lld gw-back:1", (long long)(FIRST + i));
        expect_query(c, FIRST + i, "gw-back:1");
    }
    pc_close(c);
}

/* i) An entry never outlives its key's TTL, even when Redis has not deleted the key yet (active
 * expiry off: nothing announces the expiry until someone touches the key). */
IT(near_cache, entry_never_outlives_the_key_ttl)
{
    redis_with_debug();
    start(-1);
    it_rcmd(R(), 0, "DEBUG SET-ACTIVE-EXPIRE 0");
    struct pc_client *c = it_connect();
    it_rcmd(R(), 0, "SET user:route:4242 gw-ttl:1 PX 300");
    expect_query(c, 4242, "gw-ttl:1"); /* cached, with the key's TTL */
    double hits0 = metric(&FX.srv, "impresence_near_cache_hits_total");
    expect_query(c, 4242, "gw-ttl:1");
    cr_assert_eq(metric(&FX.srv, "impresence_near_cache_hits_total") - hits0, 1, "not cached");
    double inval0 = metric(&FX.srv, "impresence_near_cache_invalidations_total");
    /* Until Redis says it is gone. KEYS skips an expired key without deleting it, so no
     * invalidation is sent: only the entry's own deadline can tell the server. */
    for (;;) {
        redisContext *r = it_rconnect(R(), 0);
        redisReply *rep = redisCommand(r, "KEYS user:route:4242");
        bool gone = rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == 0;
        freeReplyObject(rep);
        redisFree(r);
        if (gone)
            break;
        it_sleep_ms(5);
    }
    cr_assert_eq(metric(&FX.srv, "impresence_near_cache_invalidations_total"), inval0,
                 "Redis announced the expiry: the deadline was not what answered");
    expect_query(c, 4242, NULL); /* right away */
    it_rcmd(R(), 0, "DEBUG SET-ACTIVE-EXPIRE 1");
    pc_close(c);
}

/* Deliver's route lookup uses the cache too, and sees writes as QueryRoute does. */
IT(near_cache, deliver_route_lookup_is_cached_and_fresh)
{
    start(-1);
    struct pc_client *c = it_connect();
    bind_all(c, 60, 1, 1);
    double hits0 = metric(&FX.srv, "impresence_near_cache_hits_total");
    for (int i = 0; i < 3; i++) {
        Mpim__DeliverResp *d = it_deliver(c, 60, "hi", 2, NULL);
        cr_assert_eq(d->result->code, MPIM__CODE__OK, "%s", d->result->msg);
        it_free(d);
    }
    cr_assert_eq(metric(&FX.srv, "impresence_near_cache_hits_total") - hits0, 2);
    it_rcmd(R(), 0, "DEL user:route:60");
    Mpim__DeliverResp *d = it_deliver(c, 60, "hi", 2, NULL);
    cr_assert_eq(d->result->code, MPIM__CODE__NOT_FOUND, "stale route after DEL");
    it_free(d);
    pc_close(c);
}

/* A user's requests keep their order on one connection: a hit waiting for its fence is not
 * overtaken by a later write of the same user (nor a later read by an earlier state). */
IT(near_cache, pipelined_query_write_query_keeps_order)
{
    start(-1);
    struct pc_client *c = it_connect();
    bind_all(c, 80, 1, 1);
    query_all(c, 80, 1, 1);
    query_all(c, 80, 1, 1); /* cached */
    for (int round = 2; round < 50; round++) {
        char old_gw[64], new_gw[64];
        gw_of(old_gw, sizeof(old_gw), 80, round - 1);
        gw_of(new_gw, sizeof(new_gw), 80, round);
        Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
        q.user_id = 80;
        Mpim__BindRouteReq b = MPIM__BIND_ROUTE_REQ__INIT;
        b.user_id = 80;
        b.gateway_addr = it_bytes(new_gw);
        cr_assert_eq(pc_send(c, PR_METHOD_QUERY, &q.base), 0);
        cr_assert_eq(pc_send(c, PR_METHOD_BIND, &b.base), 0);
        cr_assert_eq(pc_send(c, PR_METHOD_QUERY, &q.base), 0);
        cr_assert_eq(pc_flush(c), 0);
        const char *want[3] = {old_gw, NULL, new_gw};
        for (int k = 0; k < 3; k++) {
            ProtobufCMessage *m = NULL;
            int method = k == 1 ? PR_METHOD_BIND : PR_METHOD_QUERY;
            cr_assert_eq(pc_recv(c, method, &m), 0, "%s", pc_error(c));
            if (k != 1) {
                Mpim__QueryRouteResp *r = (Mpim__QueryRouteResp *)m;
                cr_assert(it_bytes_eq(r->gateway_addr, want[k]), "round %d answer %d: '%.*s', want '%s'", round,
                          k, (int)r->gateway_addr.len, r->gateway_addr.data, want[k]);
            }
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }
    pc_close(c);
}

/* [route] near_cache outside 0..10,000,000: exit 2, like every invalid value. */
IT(near_cache, out_of_range_is_refused)
{
    static const char *const bad[] = {"-1", "10000001", "lots"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        it_config_set(&FX.cfg, "route", "near_cache", "%s", bad[i]);
        it_server_spawn(&FX.srv, &FX.cfg, NULL);
        int status = it_wait_pid(FX.srv.pid, 10000 * IT_SLOW);
        cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 2, "near_cache = %s: status %d",
                  bad[i], status);
        FX.srv.pid = 0;
    }
}

/* ------------------------------------------------------------- j) cluster */

IT(near_cache_cluster, every_master_tracked_hits_and_a_redis_cli_write_is_seen)
{
    enum { USERS = 300, FIRST = 20000 };
    fx_start_server_linked();
    /* One tracked node per master per shard. */
    wait_tracked(&FX.srv, SHARDS * FX.cluster.masters);
    struct pc_client *c = it_connect();
    bind_all(c, FIRST, USERS, 1);
    query_all(c, FIRST, USERS, 1);
    double hits0 = metric(&FX.srv, "impresence_near_cache_hits_total");
    query_all(c, FIRST, USERS, 1);
    cr_assert_eq(metric(&FX.srv, "impresence_near_cache_hits_total") - hits0, USERS,
                 "users on every master: all hits the second time");
    int masters_seen = 0;
    for (int i = 0; i < FX.cluster.n; i++) {
        if (FX.cluster.node[i].r.pid == 0)
            continue;
        int tracked = 0, subscribed = 0;
        node_tracking(FX.cluster.node[i].r.port, &tracked, &subscribed);
        if (tracked > 0) {
            masters_seen++;
            cr_assert_eq(subscribed, SHARDS, "node %d: %d tracking connections", FX.cluster.node[i].r.port,
                         subscribed);
        }
    }
    cr_assert_eq(masters_seen, FX.cluster.masters);
    /* A write through redis-cli -c (any node; it follows MOVED) is seen at once. */
    char port[16], gw[64], key[64];
    snprintf(port, sizeof(port), "%d", FX.cluster.node[0].r.port);
    for (int i = 0; i < 30; i++) {
        int64_t uid = FIRST + i;
        snprintf(key, sizeof(key), "user:route:{%lld}", (long long)uid);
        gw_of(gw, sizeof(gw), uid, 2);
        const char *argv[] = {REDIS_CLI_BIN, "-c", "-p", port, "SET", key, gw, NULL};
        char *out = NULL;
        int rc = it_run(argv, &out, NULL, 10000 * IT_SLOW);
        cr_assert(rc == 0 && out != NULL && strstr(out, "OK") != NULL, "redis-cli: %d %s", rc, out);
        free(out);
        expect_query(c, uid, gw);
    }
    pc_close(c);
}
