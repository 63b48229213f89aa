/* The RPC logic: dispatch, QueryRoute and Deliver, and what writes.c shares (handlers_common.h);
 * Bind, Unbind and Heartbeat are in writes.c. Shard thread only: every function runs on the
 * owning shard's loop, in hiredis callbacks or in the inbox drain. A request is always finished
 * by exactly one shard_answer. */
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
#include "shards/batch_run.h"
#include "shards/gateways.h"
#include "shards/handlers_common.h"
#include "shards/redis_result.h"
#include "shards/route_cache.h"
#include "shards/session_scripts.h"
#include "shards/shard.h"

struct shard *shard_of(struct redis_link *link)
{
    return link->owner;
}

/* Send the command built in s->resp about req's user (its slot on a cluster). -1: not sent
 * (link down, or out of memory building it). */
int send_built(struct shard *s, struct redis_router *router, link_reply_fn *fn, struct pr_request *req)
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

void resp_start_script(struct shard *s, const struct shard_script *sc, bool by_body, int nkeys, int nrest)
{
    bool eval = by_body || sc->sha[0] == '\0';
    resp_start(&s->resp, 3 + nrest);
    resp_arg_str(&s->resp, eval ? "EVAL" : "EVALSHA");
    resp_arg_str(&s->resp, eval ? sc->body : sc->sha);
    resp_arg_id(&s->resp, "", nkeys, "", NULL, 0);
}

void arg_route_key(struct shard *s, const struct pr_request *req)
{
    arg_user_key(s, req, "user:route:", "user:route:{");
}

void arg_status_key(struct shard *s, const struct pr_request *req)
{
    arg_user_key(s, req, "user:status:", "user:status:{");
}

void arg_sessions_key(struct shard *s, const struct pr_request *req)
{
    arg_user_key(s, req, "user:sessions:", "user:sessions:{");
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
bool take_result(struct pr_request *req, const char *role, enum link_status status,
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
void answer_not_sent(struct shard *s, struct pr_request *req, const char *role)
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

/* --- QueryRoute: GET route --- */

bool take_route(struct pr_request *req, const redisReply *reply)
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

/* Both replies are in (GET route, HGETALL sessions): the first failure, or the answer. */
static void query_done(struct shard *s, struct pr_request *req)
{
    if (--req->pending > 0)
        return;
    if (req->code == MPIM__CODE__OK)
        request_set_result(req, req->flag ? MPIM__CODE__OK : MPIM__CODE__NOT_FOUND, NULL);
    shard_answer(s, req);
}

static void on_query_route(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct pr_request *req = priv;
    struct shard *s = shard_of(link);
    if (req->code == MPIM__CODE__OK && take_result(req, "cache", status, reply)) {
        counter_add(reply->type == REDIS_REPLY_STRING ? &s->counters.route_hits : &s->counters.route_misses, 1);
        take_route(req, reply);
    }
    query_done(s, req);
}

/* The live sessions of an HGETALL reply, highest epoch first. A value not in the stored form
 * (written by hand) is skipped, like a lapsed session. */
bool take_sessions(struct shard *s, struct pr_request *req, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0)
        return false;
    size_t n = r->elements / 2, live = 0, bytes = 0;
    if (n == 0)
        return true;
    struct session_view stack[16], *v = n <= 16 ? stack : malloc(n * sizeof(*v));
    if (v == NULL)
        return false;
    int64_t now = clock_now_ms(), ttl_ms = (int64_t)s->conf->route_ttl * 1000;
    for (size_t i = 0; i < n; i++) {
        const redisReply *field = r->element[2 * i], *value = r->element[2 * i + 1];
        struct session_view *x = &v[live];
        if (field->type != REDIS_REPLY_STRING || value->type != REDIS_REPLY_STRING ||
            session_value_parse(value->str, value->len, x) < 0 || x->last_seen_ms + ttl_ms <= now)
            continue;
        x->device = field->str, x->device_len = field->len;
        bytes += field->len + x->gateway_len;
        live++;
    }
    bool ok = true;
    if (live > 0) {
        session_views_sort(v, live);
        req->sessions = session_list_new(live, bytes);
        ok = req->sessions != NULL;
        for (size_t i = 0; ok && i < live; i++)
            session_list_add(req->sessions, &v[i]);
    }
    if (v != stack)
        free(v);
    return ok;
}

static void on_query_sessions(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct pr_request *req = priv;
    struct shard *s = shard_of(link);
    if (req->code == MPIM__CODE__OK && take_result(req, "cache", status, reply) && !take_sessions(s, req, reply))
        request_set_result(req, MPIM__CODE__INTERNAL, "unexpected sessions reply from the cache redis");
    query_done(s, req);
}

/* QueryRoute: the route and every session, pipelined (one round trip, same slot). */
static void query_route(struct shard *s, struct pr_request *req)
{
    resp_start(&s->resp, 2);
    resp_arg_str(&s->resp, "GET");
    arg_route_key(s, req);
    if (send_built(s, &s->cache, on_query_route, req) < 0) {
        answer_not_sent(s, req, "cache");
        return;
    }
    req->pending = 1;
    resp_start(&s->resp, 2);
    resp_arg_str(&s->resp, "HGETALL");
    arg_sessions_key(s, req);
    if (send_built(s, &s->cache, on_query_sessions, req) == 0)
        req->pending = 2;
    else
        request_set_result(req, MPIM__CODE__INTERNAL, "sessions not read");
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

/* The near cache (route_cache.c) knows req's route, from memory or just read from Redis:
 * req->flag says whether there is one, req->route and req->sessions hold it. Answer exactly as
 * the reads above do. */
void handlers_route_known(struct shard *s, struct pr_request *req)
{
    counter_add(req->flag ? &s->counters.route_hits : &s->counters.route_misses, 1);
    if (req->method == PR_METHOD_QUERY || !req->flag) {
        request_set_result(req, req->flag ? MPIM__CODE__OK : MPIM__CODE__NOT_FOUND, NULL);
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

/* --- entry --- */

void handlers_dispatch(struct shard *s, struct pr_request *req)
{
    ASSERT_THREAD_OF(ROLE_SHARD, s);
    if (req->method == PR_METHOD_BATCH_QUERY || req->method == PR_METHOD_BATCH_DELIVER) {
        batch_run_start(s, req); /* each id comes back here as its single call, with its own slot */
        return;
    }
    if (request_names_gateway(req->method)) {
        gateways_dispatch(s, req); /* names a gateway, no user: its keys have slots of their own */
        return;
    }
    const struct presence_conf *c = s->conf;
    req->slot = c->cache.mode == REDIS_CLUSTER || c->queue.mode == REDIS_CLUSTER ? user_slot(req->user_id) : 0;
    req->replicas = -1;
    int rc = 0;
    switch (req->method) {
    case PR_METHOD_BIND:
        writes_bind(s, req);
        return;
    case PR_METHOD_QUERY:
        if (s->near != NULL) { /* [route] near_cache > 0: route_cache.c */
            route_cache_lookup(s, req);
            return;
        }
        query_route(s, req);
        return;
    case PR_METHOD_DELIVER:
        if (s->near != NULL) {
            route_cache_lookup(s, req);
            return;
        }
        rc = get_route(s, req, on_deliver_route);
        break;
    case PR_METHOD_UNBIND:
    case PR_METHOD_HEARTBEAT:
        writes_unbind_or_heartbeat(s, req);
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
    s->bind_script.body = SESSION_BIND_LUA;
    s->unbind_script.body = SESSION_UNBIND_LUA;
    s->heartbeat_script.body = SESSION_HEARTBEAT_LUA;
    for (int i = 0; i < GW_SCRIPTS; i++)
        s->gw_scripts[i].body = GW_SCRIPT_LUA[i];
    ev_timer_init(&s->retry_timer, on_retry_timer, 0., 0.);
    s->retry_timer.data = s;
    return 0;
}
