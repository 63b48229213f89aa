/* The RPC logic. Shard thread only: every function runs on the owning shard's loop, in hiredis
 * callbacks or in the inbox drain. A request is always finished by exactly one shard_answer. */
#include "shards/handlers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/cluster_slot.h"
#include "core/log.h"
#include "core/mpim_hash.h"
#include "core/thread_role.h"
#include "presence.pb-c.h"
#include "shards/redis_result.h"
#include "shards/shard.h"

#define ROUTE_CHANNEL "presence:route"

/* KEYS: route, status. ARGV: gateway. Deletes both only if the route still names the gateway,
 * so a stale gateway never logs out a newer session. */
static const char UNBIND_LUA[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "redis.call('DEL', KEYS[1], KEYS[2]) return 1 end return 0";

/* KEYS: route, status. ARGV: gateway, route_ttl, status_ttl. Renews each key to its own TTL,
 * re-creating the status if only it had expired. */
static const char HEARTBEAT_LUA[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "redis.call('EXPIRE', KEYS[1], ARGV[2]) "
    "redis.call('SET', KEYS[2], 'online', 'EX', ARGV[3]) return 1 end return 0";

static struct shard *shard_of(struct redis_link *link)
{
    return link->owner;
}

/* Send the command built in s->resp about req's user (its slot on a cluster). -1: not sent
 * (link down, or out of memory building it). */
static int send_built(struct shard *s, struct redis_router *router, link_reply_fn *fn, struct pr_request *req)
{
    if (s->resp.failed)
        return -1;
    TRACE_HOOK(trace_sent(req));
    return router_send(router, req->slot, fn, req, s->resp.buf, s->resp.len);
}

/* "user:route:<uid>" and "user:status:<uid>" as one argument each; on a cluster the uid is the
 * hash tag, "user:route:{<uid>}", so that a user's keys share a slot (contract §10). */
static void arg_user_key(struct shard *s, const struct pr_request *req, const char *prefix, const char *tagged)
{
    if (s->conf->cache.mode == REDIS_CLUSTER)
        resp_arg_id(&s->resp, tagged, (long long)req->user_id, "}", NULL, 0);
    else
        resp_arg_id(&s->resp, prefix, (long long)req->user_id, "", NULL, 0);
}

static void arg_route_key(struct shard *s, const struct pr_request *req)
{
    arg_user_key(s, req, "user:route:", "user:route:{");
}

static void arg_status_key(struct shard *s, const struct pr_request *req)
{
    arg_user_key(s, req, "user:status:", "user:status:{");
}

/* The cluster slot of a user's keys: their hash tag is the uid in decimal (arg_user_key). */
static uint16_t user_slot(int64_t uid)
{
    char tag[24];
    int n = snprintf(tag, sizeof(tag), "%lld", (long long)uid);
    return cluster_crc16(tag, (size_t)n) % CLUSTER_SLOTS;
}

/* --- results --- */

/* Record what (status, reply) means for req (redis_result decides the code). true: the reply is
 * usable and nothing was recorded; false: req holds the failure. */
static bool take_result(struct pr_request *req, const char *role, enum link_status status,
                        const redisReply *reply)
{
    int code = redis_result(status, reply);
    if (code == MPIM__CODE__OK)
        return true;
    if (status == LINK_REPLY)
        request_set_result(req, code, "%s redis: %s", role, reply->str);
    else
        request_set_result(req, code, "%s redis unavailable%s", role,
                           status == LINK_LOST ? " (no reply within timeout or connection lost)" : "");
    return false;
}

/* The command could not be sent: the link is down. */
static void answer_not_sent(struct shard *s, struct pr_request *req, const char *role)
{
    take_result(req, role, LINK_NOT_SENT, NULL);
    shard_answer(s, req);
}

/* true when the reply is usable; otherwise the request has been answered. */
static bool reply_ok(struct shard *s, struct pr_request *req, const char *role, enum link_status status,
                     const redisReply *reply)
{
    if (take_result(req, role, status, reply))
        return true;
    shard_answer(s, req);
    return false;
}

/* --- route-change notices (after Bind and effective Unbind) --- */

static void on_notice_published(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct pr_request *req = priv;
    /* The route is written: a lost notice is reported in msg, never as a failed Bind/Unbind. */
    if (redis_result(status, reply) != MPIM__CODE__OK)
        request_set_result(req, MPIM__CODE__OK, "route-change notice not published: %s",
                           status == LINK_REPLY ? reply->str : "queue redis unavailable");
    shard_answer(shard_of(link), req);
}

/* The cache write succeeded: publish "<uid>:<gw>" (or "<uid>:" for a logout), then answer OK. */
static void publish_notice(struct shard *s, struct pr_request *req, bool logout)
{
    request_set_result(req, MPIM__CODE__OK, NULL);
    resp_start(&s->resp, 3);
    resp_arg_str(&s->resp, "PUBLISH");
    resp_arg_str(&s->resp, ROUTE_CHANNEL);
    resp_arg_id(&s->resp, "", (long long)req->user_id, ":", logout ? NULL : req->gateway.data,
                logout ? 0 : req->gateway.len);
    if (send_built(s, &s->queue, on_notice_published, req) < 0) {
        request_set_result(req, MPIM__CODE__OK, "route-change notice not published: queue redis unavailable");
        shard_answer(s, req);
    }
}

/* --- writes: [redis_cache] wait_replicas, then the answer --- */

static void write_done(struct shard *s, struct pr_request *req, struct redis_link *link);

static void on_waited(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct pr_request *req = priv;
    req->replicas = status == LINK_REPLY && reply->type == REDIS_REPLY_INTEGER ? (int32_t)reply->integer : 0;
    write_done(shard_of(link), req, link);
}

/* WAIT on the connection that answered the write (link), so that it covers that write: WAIT
 * counts the replicas that have this connection's last write. Sent from the write's reply
 * callback, so on that very connection or not at all (never on a reconnected one, where it
 * would confirm nothing). It blocks for at most what is left of the request's timeout, holding
 * up the connection while replicas lag: the price of the guarantee. -1: not sent. */
static int send_wait(struct shard *s, struct pr_request *req, struct redis_link *link)
{
    /* Redis ends a WAIT up to one cron tick (100 ms at hz 10) after its timeout; the link's own
     * deadline for the WAIT must not fire first (that would drop the connection), hence the margin. */
    int64_t elapsed_ms = (int64_t)((clock_mono_ns() - req->started_ns) / 1000000u);
    int64_t left = s->conf->cache.timeout_ms - elapsed_ms;
    int64_t wait_ms = left * 9 / 10 - 100;
    resp_start(&s->resp, 3);
    resp_arg_str(&s->resp, "WAIT");
    resp_arg_id(&s->resp, "", s->conf->cache.wait_replicas, "", NULL, 0);
    resp_arg_id(&s->resp, "", wait_ms > 1 ? wait_ms : 1, "", NULL, 0); /* never 0: that waits forever */
    if (s->resp.failed)
        return -1;
    return link_send(link, on_waited, req, s->resp.buf, s->resp.len);
}

/* Every reply of a write (Bind, Unbind, Heartbeat) is in, the last from link: WAIT if asked to,
 * then answer, or publish the notice first. A write that changed something and was not
 * confirmed by wait_replicas replicas is UNAVAILABLE: it is in effect on the master, and a
 * failover now could lose it. */
static void write_done(struct shard *s, struct pr_request *req, struct redis_link *link)
{
    if (req->code != MPIM__CODE__OK) {
        shard_answer(s, req); /* a write that failed publishes nothing */
        return;
    }
    bool changed = req->method == PR_METHOD_BIND || req->flag;
    int want = s->conf->cache.wait_replicas;
    if (want > 0 && changed && req->replicas < 0) {
        if (send_wait(s, req, link) == 0)
            return;
        req->replicas = 0; /* not sent: unconfirmed */
    }
    if (want > 0 && changed && req->replicas < want) {
        request_set_result(req, MPIM__CODE__UNAVAILABLE,
                           "written on the master, but confirmed by %d of %d replicas within the timeout",
                           req->replicas, want);
        shard_answer(s, req);
    } else if (req->method == PR_METHOD_BIND || (req->method == PR_METHOD_UNBIND && req->flag)) {
        publish_notice(s, req, req->method == PR_METHOD_UNBIND);
    } else {
        request_set_result(req, MPIM__CODE__OK, NULL);
        shard_answer(s, req);
    }
}

/* --- BindRoute: SETEX route, SETEX status (pipelined), then the notice --- */

static void on_bind_written(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct pr_request *req = priv;
    if (req->code == MPIM__CODE__OK) /* the first failure is the one reported */
        take_result(req, "cache", status, reply);
    if (--req->pending == 0)
        write_done(shard_of(link), req, link);
}

static void bind_route(struct shard *s, struct pr_request *req)
{
    const struct presence_conf *c = s->conf;
    /* BindRouteResp.route_key, named as arg_route_key names it; the codec sends it on success. */
    int n = snprintf(req->route_inline, sizeof(req->route_inline),
                     c->cache.mode == REDIS_CLUSTER ? "user:route:{%lld}" : "user:route:%lld", (long long)req->user_id);
    req->route = req->route_inline;
    req->route_len = (size_t)n;
    resp_start(&s->resp, 4);
    resp_arg_str(&s->resp, "SETEX");
    arg_route_key(s, req);
    resp_arg_id(&s->resp, "", c->route_ttl, "", NULL, 0);
    resp_arg(&s->resp, req->gateway.data, req->gateway.len);
    if (send_built(s, &s->cache, on_bind_written, req) < 0) {
        answer_not_sent(s, req, "cache");
        return;
    }
    req->pending = 1;
    /* Same link, same loop turn: if the first went out, so will this one, short of running out
     * of memory; then the bind must not claim success. */
    resp_start(&s->resp, 4);
    resp_arg_str(&s->resp, "SETEX");
    arg_status_key(s, req);
    resp_arg_id(&s->resp, "", c->status_ttl, "", NULL, 0);
    resp_arg_str(&s->resp, "online");
    if (send_built(s, &s->cache, on_bind_written, req) == 0)
        req->pending = 2;
    else
        request_set_result(req, MPIM__CODE__INTERNAL, "status not written");
}

/* --- QueryRoute: GET route --- */

static bool take_route(struct pr_request *req, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_STRING) {
        req->flag = false;
        return false;
    }
    req->route = reply->len <= sizeof(req->route_inline) ? req->route_inline : malloc(reply->len);
    if (req->route == NULL) {
        request_set_result(req, MPIM__CODE__INTERNAL, "out of memory");
        return false;
    }
    memcpy(req->route, reply->str, reply->len);
    req->route_len = reply->len;
    req->flag = true;
    return true;
}

static void on_query_route(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct pr_request *req = priv;
    struct shard *s = shard_of(link);
    if (!reply_ok(s, req, "cache", status, reply))
        return;
    counter_add(reply->type == REDIS_REPLY_STRING ? &s->counters.route_hits : &s->counters.route_misses, 1);
    if (take_route(req, reply))
        request_set_result(req, MPIM__CODE__OK, NULL);
    else if (req->code == MPIM__CODE__OK)
        request_set_result(req, MPIM__CODE__NOT_FOUND, NULL);
    shard_answer(s, req);
}

static int get_route(struct shard *s, struct pr_request *req, link_reply_fn *fn)
{
    resp_start(&s->resp, 2);
    resp_arg_str(&s->resp, "GET");
    arg_route_key(s, req);
    return send_built(s, &s->cache, fn, req);
}

/* --- Deliver: GET route, then PUBLISH user:<uid>, retried only when surely not executed --- */

static void deliver_publish(struct shard *s, struct pr_request *req);

static void retry_timer_arm(struct shard *s)
{
    if (s->retry_head == NULL)
        return;
    double wait = s->retry_head->retry_at - ev_now(s->loop);
    ev_timer_set(&s->retry_timer, wait > 0 ? wait : 0., 0.);
    ev_timer_start(s->loop, &s->retry_timer);
}

static void on_retry_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct shard *s = w->data;
    /* retry_interval is fixed, so the queue is in due order. */
    while (s->retry_head != NULL && s->retry_head->retry_at <= ev_now(loop)) {
        struct pr_request *req = s->retry_head;
        s->retry_head = req->next;
        if (s->retry_head == NULL)
            s->retry_tail = NULL;
        req->next = NULL;
        deliver_publish(s, req);
    }
    retry_timer_arm(s);
}

static void deliver_retry_or_fail(struct shard *s, struct pr_request *req, const char *why)
{
    if (req->attempts > s->conf->max_retries) {
        request_set_result(req, MPIM__CODE__UNAVAILABLE, "message not published after %d attempts: %s",
                           req->attempts, why);
        shard_answer(s, req);
        return;
    }
    counter_add(&s->counters.deliver_retries, 1);
    req->retry_at = ev_now(s->loop) + s->conf->retry_interval_ms / 1000.0;
    req->next = NULL;
    if (s->retry_tail != NULL)
        s->retry_tail->next = req;
    else
        s->retry_head = req;
    s->retry_tail = req;
    if (!ev_is_active(&s->retry_timer))
        retry_timer_arm(s);
}

static void on_deliver_published(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct pr_request *req = priv;
    struct shard *s = shard_of(link);
    int code = redis_result(status, reply);
    if (code == MPIM__CODE__UNAVAILABLE && redis_not_run(status, reply)) {
        /* Surely not published, and a later attempt may succeed. */
        deliver_retry_or_fail(s, req, status == LINK_REPLY ? reply->str : "queue redis unavailable");
    } else if (status == LINK_LOST) {
        /* It may have gone out: publishing again could deliver the message twice. */
        request_set_result(req, MPIM__CODE__UNAVAILABLE,
                           "queue redis did not answer the publish in time; not retried");
        shard_answer(s, req);
    } else if (code != MPIM__CODE__OK) {
        reply_ok(s, req, "queue", status, reply); /* an error no retry can mend: INTERNAL */
    } else {
        req->flag = reply->type == REDIS_REPLY_INTEGER && reply->integer > 0;
        counter_add(req->flag ? &s->counters.delivered : &s->counters.undelivered, 1);
        request_set_result(req, MPIM__CODE__OK, NULL);
        shard_answer(s, req);
    }
}

/* Where a Deliver publishes: "user:<uid>", or with dialect = mpim the channel MPIM's gateway
 * (the user's route, kept by on_deliver_route) subscribes to: 10000 + std::hash(gateway) % 50000. */
static size_t deliver_channel(const struct shard *s, const struct pr_request *req, char *buf, size_t size)
{
    int n = s->conf->dialect == DIALECT_MPIM
                ? snprintf(buf, size, "%u", mpim_gateway_channel(req->route, req->route_len))
                : snprintf(buf, size, "user:%lld", (long long)req->user_id);
    return (size_t)n;
}

static void deliver_publish(struct shard *s, struct pr_request *req)
{
    req->attempts++;
    bool sharded = s->conf->queue.pubsub == PUBSUB_SHARDED;
    char channel[32];
    size_t n = deliver_channel(s, req, channel, sizeof(channel));
    resp_start(&s->resp, 3);
    resp_arg_str(&s->resp, sharded ? "SPUBLISH" : "PUBLISH");
    resp_arg(&s->resp, channel, n);
    resp_arg(&s->resp, req->message.data, req->message.len);
    if (s->resp.failed) {
        deliver_retry_or_fail(s, req, "out of memory");
        return;
    }
    /* SPUBLISH must reach the channel's slot master; a PUBLISH any node spreads to every node,
     * so it goes by the user's slot, like the user's keys. */
    uint16_t slot = sharded && s->conf->queue.mode == REDIS_CLUSTER ? cluster_keyslot(channel, n) : req->slot;
    TRACE_HOOK(trace_sent(req));
    if (router_send(&s->queue, slot, on_deliver_published, req, s->resp.buf, s->resp.len) < 0)
        deliver_retry_or_fail(s, req, "queue redis unavailable");
}

static void on_deliver_route(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct pr_request *req = priv;
    struct shard *s = shard_of(link);
    if (!reply_ok(s, req, "cache", status, reply))
        return;
    counter_add(reply->type == REDIS_REPLY_STRING ? &s->counters.route_hits : &s->counters.route_misses, 1);
    if (reply->type != REDIS_REPLY_STRING) {
        req->flag = false;
        request_set_result(req, MPIM__CODE__NOT_FOUND, NULL);
        shard_answer(s, req);
        return;
    }
    if (s->conf->dialect == DIALECT_MPIM && !take_route(req, reply)) { /* the channel names the gateway */
        shard_answer(s, req);
        return;
    }
    deliver_publish(s, req);
}

void handlers_fail_retries(struct shard *s)
{
    ev_timer_stop(s->loop, &s->retry_timer);
    while (s->retry_head != NULL) {
        struct pr_request *req = s->retry_head;
        s->retry_head = req->next;
        req->next = NULL;
        request_set_result(req, MPIM__CODE__UNAVAILABLE, "server shutting down; message not published");
        shard_answer(s, req);
    }
    s->retry_tail = NULL;
}

/* --- UnbindRoute and Heartbeat: compare-on-gateway Lua scripts --- */

static void on_script_loaded(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    (void)link;
    struct shard_script *script = priv;
    if (status == LINK_REPLY && reply->type == REDIS_REPLY_STRING && reply->len == 40)
        memcpy(script->sha, reply->str, 41);
}

void handlers_cache_setup(struct redis_link *link)
{
    struct shard *s = shard_of(link);
    link_command(link, on_script_loaded, &s->unbind_script, "SCRIPT LOAD %s", s->unbind_script.body);
    link_command(link, on_script_loaded, &s->heartbeat_script, "SCRIPT LOAD %s", s->heartbeat_script.body);
}

static void on_script_result(struct redis_link *link, enum link_status status, redisReply *reply, void *priv);

/* EVALSHA once the SHA is known, EVAL before that and after a NOSCRIPT (EVAL re-caches it). */
static int run_script(struct shard *s, struct pr_request *req, bool by_body)
{
    bool hb = req->method == PR_METHOD_HEARTBEAT;
    struct shard_script *sc = hb ? &s->heartbeat_script : &s->unbind_script;
    bool eval = by_body || sc->sha[0] == '\0';
    req->attempts++;
    resp_start(&s->resp, hb ? 8 : 6);
    resp_arg_str(&s->resp, eval ? "EVAL" : "EVALSHA");
    resp_arg_str(&s->resp, eval ? sc->body : sc->sha);
    resp_arg_str(&s->resp, "2");
    arg_route_key(s, req);
    arg_status_key(s, req);
    resp_arg(&s->resp, req->gateway.data, req->gateway.len);
    if (hb) {
        resp_arg_id(&s->resp, "", s->conf->route_ttl, "", NULL, 0);
        resp_arg_id(&s->resp, "", s->conf->status_ttl, "", NULL, 0);
    }
    return send_built(s, &s->cache, on_script_result, req);
}

/* Run the script; answered (after WAIT, if asked) once its reply is in. */
static void start_script(struct shard *s, struct pr_request *req, bool by_body)
{
    if (run_script(s, req, by_body) < 0)
        answer_not_sent(s, req, "cache");
}

static void on_script_result(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct pr_request *req = priv;
    struct shard *s = shard_of(link);
    /* Scripts flushed (SCRIPT FLUSH, a failover, a cluster master that never loaded them): run
     * it by body once. */
    if (status == LINK_REPLY && reply->type == REDIS_REPLY_ERROR && req->attempts == 1 &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        start_script(s, req, true);
        return;
    }
    if (take_result(req, "cache", status, reply))
        req->flag = reply->type == REDIS_REPLY_INTEGER && reply->integer == 1; /* changed something */
    write_done(s, req, link);
}

/* --- entry --- */

void handlers_dispatch(struct shard *s, struct pr_request *req)
{
    ASSERT_THREAD_OF(ROLE_SHARD, s);
    const struct presence_conf *c = s->conf;
    req->slot = c->cache.mode == REDIS_CLUSTER || c->queue.mode == REDIS_CLUSTER ? user_slot(req->user_id) : 0;
    req->replicas = -1;
    int rc = 0;
    switch (req->method) {
    case PR_METHOD_BIND:
        bind_route(s, req);
        return;
    case PR_METHOD_QUERY:
        rc = get_route(s, req, on_query_route);
        break;
    case PR_METHOD_DELIVER:
        rc = get_route(s, req, on_deliver_route);
        break;
    case PR_METHOD_UNBIND:
    case PR_METHOD_HEARTBEAT:
        start_script(s, req, false);
        return;
    default:
        request_set_result(req, MPIM__CODE__INTERNAL, "bad method");
        shard_answer(s, req);
        return;
    }
    if (rc < 0)
        answer_not_sent(s, req, "cache");
}

int handlers_init(struct shard *s)
{
    if (resp_init(&s->resp) < 0)
        return -1;
    s->unbind_script.body = UNBIND_LUA;
    s->heartbeat_script.body = HEARTBEAT_LUA;
    ev_timer_init(&s->retry_timer, on_retry_timer, 0., 0.);
    s->retry_timer.data = s;
    return 0;
}
