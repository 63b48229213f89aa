/* Redis error replies, row by row as docs/failure-modes.md lists them: an error that says "not
 * now" (LOADING, READONLY, MASTERDOWN, BUSY) is UNAVAILABLE for every RPC; any other error reply
 * is INTERNAL; Deliver retries a publish only when Redis refused it with a "not now" error. Each
 * error is produced by a real Redis in that state: a replica, a Redis loading its RDB, a Redis
 * running a long script, an ACL user without a command. */
#include <string.h>

#include "harness.h"

static void errors_init(void)
{
    fx_init_split();
    it_config_set(&FX.cfg, "route", "max_retries", "2");
    it_config_set(&FX.cfg, "route", "retry_interval", "50");
}

TestSuite(redis_errors, .init = errors_init, .fini = fx_fini, .timeout = IT_TIMEOUT);

/* The answer's code and msg, whatever the method. */
struct answer {
    int code;
    char msg[160];
};

static struct answer call(struct pc_client *c, int method, int64_t uid, const char *gw)
{
    ProtobufCMessage *m;
    const Mpim__Result *res;
    switch (method) {
    case PR_METHOD_BIND: {
        Mpim__BindRouteResp *r = it_bind(c, uid, gw);
        m = &r->base, res = r->result;
        break;
    }
    case PR_METHOD_QUERY: {
        Mpim__QueryRouteResp *r = it_query(c, uid);
        m = &r->base, res = r->result;
        break;
    }
    case PR_METHOD_DELIVER: {
        Mpim__DeliverResp *r = it_deliver(c, uid, "hello", 5, NULL);
        m = &r->base, res = r->result;
        break;
    }
    case PR_METHOD_UNBIND: {
        Mpim__UnbindRouteResp *r = it_unbind(c, uid, gw);
        m = &r->base, res = r->result;
        break;
    }
    default: {
        Mpim__HeartbeatResp *r = it_heartbeat(c, uid, gw);
        m = &r->base, res = r->result;
        break;
    }
    }
    cr_assert_not_null(res, "%s: no Result", request_method_name(method));
    struct answer a = {.code = res->code};
    snprintf(a.msg, sizeof(a.msg), "%s", res->msg);
    protobuf_c_message_free_unpacked(m, NULL);
    return a;
}

/* method must answer want with the Redis error word in msg. */
static void expect(struct pc_client *c, int method, int64_t uid, const char *gw, int want, const char *word)
{
    struct answer a = call(c, method, uid, gw);
    cr_assert_eq(a.code, want, "%s: got %s '%s', want %s (%s)", request_method_name(method), pc_code_name(a.code),
                 a.msg, pc_code_name(want), word);
    cr_assert_not_null(strstr(a.msg, word), "%s: msg '%s' does not carry the Redis error %s",
                       request_method_name(method), a.msg, word);
}

/* A Redis command sent and not waited for (DEBUG RELOAD, an endless script); argv NULL-terminated. */
static redisContext *send_detached(int port, const char *const *argv)
{
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    redisContext *r = it_rconnect(port, 0);
    cr_assert_eq(redisAppendCommandArgv(r, argc, (const char **)argv, NULL), REDIS_OK);
    int done = 0;
    while (!done)
        cr_assert_eq(redisBufferWrite(r, &done), REDIS_OK, "write %s: %s", argv[0], r->errstr);
    return r;
}

static void wait_ping(int port, const char *want);

/* Redis at port runs an endless script; past busy-reply-threshold it answers others -BUSY. */
static redisContext *make_busy(int port)
{
    static const char *const endless_script[] = {"EVAL", "while true do end", "0", NULL};
    it_rcmd(port, 0, "CONFIG SET busy-reply-threshold 10");
    redisContext *busy = send_detached(port, endless_script);
    wait_ping(port, "BUSY");
    return busy;
}

/* PING port on a fresh connection until its answer starts with want (or is PONG for NULL). */
static void wait_ping(int port, const char *want)
{
    double deadline = it_mono_ms() + 10000.0 * IT_SLOW;
    for (;;) {
        redisContext *r = it_rconnect(port, 0);
        redisReply *rep = redisCommand(r, "PING");
        bool ok = rep != NULL && (want == NULL ? rep->type == REDIS_REPLY_STATUS
                                               : rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, want, strlen(want)) == 0);
        freeReplyObject(rep);
        redisFree(r);
        if (ok)
            return;
        cr_assert_lt(it_mono_ms(), deadline, "Redis :%d never answered PING with %s", port, want ? want : "PONG");
        it_sleep_ms(10);
    }
}

static void end_busy(int port, redisContext *busy)
{
    it_rcmd(port, 0, "SCRIPT KILL");
    redisFree(busy);
    wait_ping(port, NULL);
}

IT(redis_errors, readonly_replica_is_unavailable_and_changes_nothing)
{
    fx_start_server_linked();
    struct pc_client *c = it_connect();
    expect(c, PR_METHOD_BIND, 1, "gw-1:1", MPIM__CODE__OK, "");
    /* The cache becomes a replica of a master that is not there; it keeps serving its data. */
    it_rcmd(FX.cache.port, 0, "CONFIG SET replica-serve-stale-data yes");
    it_rcmd(FX.cache.port, 0, "REPLICAOF 127.0.0.1 %d", it_free_port());
    expect(c, PR_METHOD_BIND, 2, "gw-2:1", MPIM__CODE__UNAVAILABLE, "READONLY");
    expect(c, PR_METHOD_UNBIND, 1, "gw-1:1", MPIM__CODE__UNAVAILABLE, "READONLY");
    expect(c, PR_METHOD_HEARTBEAT, 1, "gw-1:1", MPIM__CODE__UNAVAILABLE, "READONLY");
    /* Reads still work. */
    expect(c, PR_METHOD_QUERY, 1, NULL, MPIM__CODE__OK, "");
    cr_assert_not(it_rexists(FX.cache.port, 0, "user:route:2"), "a refused Bind wrote its route");
    cr_assert(it_rexists(FX.cache.port, 0, "user:route:1"), "a refused Unbind deleted the route");
    /* A master again: served again. */
    it_rcmd(FX.cache.port, 0, "REPLICAOF NO ONE");
    expect(c, PR_METHOD_BIND, 2, "gw-2:1", MPIM__CODE__OK, "");
    pc_close(c);
}

IT(redis_errors, masterdown_replica_is_unavailable)
{
    fx_start_server_linked();
    struct pc_client *c = it_connect();
    expect(c, PR_METHOD_BIND, 1, "gw-1:1", MPIM__CODE__OK, "");
    it_rcmd(FX.cache.port, 0, "CONFIG SET replica-serve-stale-data no");
    it_rcmd(FX.cache.port, 0, "REPLICAOF 127.0.0.1 %d", it_free_port());
    expect(c, PR_METHOD_QUERY, 1, NULL, MPIM__CODE__UNAVAILABLE, "MASTERDOWN");
    expect(c, PR_METHOD_DELIVER, 1, NULL, MPIM__CODE__UNAVAILABLE, "MASTERDOWN");
    it_rcmd(FX.cache.port, 0, "REPLICAOF NO ONE");
    expect(c, PR_METHOD_QUERY, 1, NULL, MPIM__CODE__OK, "");
    pc_close(c);
}

IT(redis_errors, loading_redis_is_unavailable_for_every_rpc)
{
    /* DEBUG RELOAD loads the RDB again; key-load-delay makes the load last, and a small
     * processing interval lets Redis answer -LOADING meanwhile. */
    it_redis_stop(&FX.cache);
    static const char *const debug[] = {"--enable-debug-command", "local", NULL};
    FX.cache.extra_args = debug;
    it_redis_restart(&FX.cache);
    fx_start_server_linked();
    struct pc_client *c = it_connect();
    expect(c, PR_METHOD_BIND, 1, "gw-1:1", MPIM__CODE__OK, "");
    it_rcmd(FX.cache.port, 0, "DEBUG POPULATE 2000");
    it_rcmd(FX.cache.port, 0, "CONFIG SET loading-process-events-interval-bytes 1024");
    it_rcmd(FX.cache.port, 0, "CONFIG SET key-load-delay 2000"); /* us per key: ~4 s */
    redisContext *reload = send_detached(FX.cache.port, (const char *const[]){"DEBUG", "RELOAD", NULL});
    wait_ping(FX.cache.port, "LOADING");
    expect(c, PR_METHOD_BIND, 2, "gw-2:1", MPIM__CODE__UNAVAILABLE, "LOADING");
    expect(c, PR_METHOD_QUERY, 1, NULL, MPIM__CODE__UNAVAILABLE, "LOADING");
    expect(c, PR_METHOD_DELIVER, 1, NULL, MPIM__CODE__UNAVAILABLE, "LOADING");
    expect(c, PR_METHOD_UNBIND, 1, "gw-1:1", MPIM__CODE__UNAVAILABLE, "LOADING");
    expect(c, PR_METHOD_HEARTBEAT, 1, "gw-1:1", MPIM__CODE__UNAVAILABLE, "LOADING");
    /* Loaded: served again, and the refused calls changed nothing. */
    it_rcmd(FX.cache.port, 0, "CONFIG SET key-load-delay 0");
    redisReply *done = NULL;
    cr_assert_eq(redisGetReply(reload, (void **)&done), REDIS_OK, "DEBUG RELOAD: %s", reload->errstr);
    freeReplyObject(done);
    redisFree(reload);
    wait_ping(FX.cache.port, NULL);
    expect(c, PR_METHOD_QUERY, 1, NULL, MPIM__CODE__OK, "");
    cr_assert_not(it_rexists(FX.cache.port, 0, "user:route:2"), "a refused Bind wrote its route");
    pc_close(c);
}

IT(redis_errors, busy_script_is_unavailable_then_served_after_kill)
{
    fx_start_server_linked();
    struct pc_client *c = it_connect();
    expect(c, PR_METHOD_BIND, 1, "gw-1:1", MPIM__CODE__OK, "");
    redisContext *busy = make_busy(FX.cache.port);
    expect(c, PR_METHOD_QUERY, 1, NULL, MPIM__CODE__UNAVAILABLE, "BUSY");
    expect(c, PR_METHOD_BIND, 2, "gw-2:1", MPIM__CODE__UNAVAILABLE, "BUSY");
    expect(c, PR_METHOD_HEARTBEAT, 1, "gw-1:1", MPIM__CODE__UNAVAILABLE, "BUSY");
    end_busy(FX.cache.port, busy);
    expect(c, PR_METHOD_QUERY, 1, NULL, MPIM__CODE__OK, "");
    pc_close(c);
}

IT(redis_errors, deliver_retries_a_busy_queue_then_is_unavailable)
{
    fx_start_server_linked();
    struct pc_client *c = it_connect();
    expect(c, PR_METHOD_BIND, 1, "gw-1:1", MPIM__CODE__OK, "");
    redisContext *busy = make_busy(FX.queue.port);
    /* BUSY means not published: each attempt is refused, max_retries (2) more are made. */
    expect(c, PR_METHOD_DELIVER, 1, NULL, MPIM__CODE__UNAVAILABLE, "BUSY");
    it_wait_metric(&FX.srv, "impresence_deliver_retries_total", 2, 1000 * IT_SLOW);
    end_busy(FX.queue.port, busy);
    expect(c, PR_METHOD_DELIVER, 1, NULL, MPIM__CODE__OK, "");
    pc_close(c);
}

IT(redis_errors, other_error_replies_are_internal_and_never_retried)
{
    /* ACL users that lack one command each: any error that is not "not now" is INTERNAL. */
    it_rcmd(FX.cache.port, 0, "ACL SETUSER im on >pw ~* &* +@all -evalsha -eval"); /* Bind is a script */
    it_rcmd(FX.queue.port, 0, "ACL SETUSER im on >pw ~* &* +@all -publish");
    it_config_set(&FX.cfg, "redis_cache", "username", "im");
    it_config_set(&FX.cfg, "redis_cache", "password", "pw");
    it_config_set(&FX.cfg, "redis_queue", "username", "im");
    it_config_set(&FX.cfg, "redis_queue", "password", "pw");
    fx_start_server_linked();
    struct pc_client *c = it_connect();
    expect(c, PR_METHOD_BIND, 1, "gw-1:1", MPIM__CODE__INTERNAL, "NOPERM");
    cr_assert_not(it_rexists(FX.cache.port, 0, "user:route:1"), "a failed Bind wrote its route");
    it_rcmd(FX.cache.port, 0, "SET user:route:1 gw-1:1");
    expect(c, PR_METHOD_DELIVER, 1, NULL, MPIM__CODE__INTERNAL, "NOPERM");
    expect(c, PR_METHOD_QUERY, 1, NULL, MPIM__CODE__OK, "");
    cr_assert_eq(it_metric_now(&FX.srv, "impresence_deliver_retries_total"), 0,
                 "a publish refused for good was retried");
    pc_close(c);
}
