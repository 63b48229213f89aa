/* Bind, Unbind and Heartbeat (contract §3, §6): the session scripts, WAIT, then kicks and the
 * route-change notice. Shard thread only: every function runs on the owning shard's loop, in
 * hiredis callbacks or in the inbox drain. A request is finished by exactly one shard_answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "presence.pb-c.h"
#include "shards/handlers.h"
#include "shards/gateways.h"
#include "shards/handlers_common.h"
#include "shards/redis_result.h"
#include "shards/route_cache.h"
#include "shards/shard.h"

/* --- after a write: kicks and the route-change notice, then the answer --- */

enum notice {
    NOTICE_NONE,
    NOTICE_ROUTE,  /* "<uid>:<gateway>": Bind */
    NOTICE_LOGOUT, /* "<uid>:": the last session ended */
    NOTICE_MOVED,  /* "<uid>:<req->route>": the route fell back to another session */
};

static void on_published(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct pr_request *req = priv;
    /* The write is done: a lost notice or kick is reported in msg, never as a failed call. */
    if (redis_result(status, reply) != MPIM__CODE__OK)
        request_set_result(req, MPIM__CODE__OK, "notice not published: %s",
                           status == LINK_REPLY ? reply->str : "queue redis unavailable");
    if (--req->pending == 0)
        shard_answer(shard_of(link), req);
}

static void publish(struct shard *s, struct pr_request *req, const char *channel, const char *msg, size_t len)
{
    resp_start(&s->resp, 3);
    resp_arg_str(&s->resp, "PUBLISH");
    resp_arg_str(&s->resp, channel);
    resp_arg(&s->resp, msg, len);
    if (send_built(s, &s->queue, on_published, req) == 0)
        req->pending++;
    else
        request_set_result(req, MPIM__CODE__OK, "notice not published: queue redis unavailable");
}

/* The cache write succeeded: kick every session it ended ("<uid>:<device>:<epoch>:<gateway>" on
 * presence:kick, so a gateway closes exactly that connection), publish the route change on
 * presence:route, then answer OK once Redis took them. */
static void publish_after_write(struct shard *s, struct pr_request *req)
{
    request_set_result(req, MPIM__CODE__OK, NULL);
    req->pending = 0;
    char msg[20 + 1 + SESSION_DEVICE_MAX + 1 + 20 + 1 + 256];
    if (req->method == PR_METHOD_BIND && req->sessions != NULL) {
        for (size_t i = 0; i < req->sessions->n; i++) {
            const Mpim__Session *k = req->sessions->ptrs[i];
            int n = snprintf(msg, sizeof(msg), "%lld:%s:%lld:%s", (long long)req->user_id, k->device_id,
                             (long long)k->epoch, k->gateway_addr);
            publish(s, req, KICK_CHANNEL, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
        }
    }
    const char *gw = NULL;
    size_t gw_len = 0;
    if (req->notice == NOTICE_ROUTE)
        gw = (const char *)req->gateway.data, gw_len = req->gateway.len;
    else if (req->notice == NOTICE_MOVED)
        gw = req->route, gw_len = req->route_len;
    if (req->notice != NOTICE_NONE) {
        int n = snprintf(msg, sizeof(msg), "%lld:%.*s", (long long)req->user_id, (int)gw_len, gw ? gw : "");
        publish(s, req, ROUTE_CHANNEL, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
    }
    if (req->pending == 0)
        shard_answer(s, req);
}

/* --- writes: [redis_cache] wait_replicas, then the answer --- */

static void write_done(struct shard *s, struct pr_request *req, struct redis_link *link);

static int send_wait(struct shard *s, struct redis_link *link, struct pr_request *group);

/* The WAIT's answer holds for every request of its group: their writes all came before it on
 * this connection. Then the next group's WAIT, if writes finished meanwhile. A WAIT without an
 * answer (connection lost) confirms nothing, for its group and for the next, whose writes were
 * on that connection too. */
static void on_waited(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct shard *s = shard_of(link);
    bool answered = status == LINK_REPLY && reply->type == REDIS_REPLY_INTEGER;
    int32_t replicas = answered ? (int32_t)reply->integer : 0;
    struct pr_request *next = link->wait_next_head;
    link->wait_next_head = link->wait_next_tail = NULL;
    link->wait_in_flight = false;
    if (next != NULL && answered && send_wait(s, link, next) == 0)
        next = NULL; /* the next group waits for its own WAIT */
    struct pr_request *groups[2] = {priv, next};
    for (int g = 0; g < 2; g++) {
        struct pr_request *req = groups[g];
        while (req != NULL) {
            struct pr_request *after = req->next;
            req->next = NULL;
            req->replicas = g == 0 ? replicas : 0; /* the next group here: its WAIT was not sent */
            write_done(s, req, link);
            req = after;
        }
    }
}

/* WAIT for a group of writes done on link: it counts the replicas that have this connection's
 * last write, so it covers them all. Sent from a reply callback of that connection, so on that
 * very connection or not at all (on a reconnected one it would confirm nothing). It blocks for at
 * most what is left of the group's most urgent request, holding up the connection meanwhile: the
 * price of the guarantee. -1: not sent. */
static int send_wait(struct shard *s, struct redis_link *link, struct pr_request *group)
{
    /* Redis ends a WAIT up to one cron tick (100 ms at hz 10) after its timeout; the link's own
     * deadline for the WAIT must not fire first (that would drop the connection), hence the margin. */
    uint64_t oldest = group->started_ns;
    for (struct pr_request *r = group->next; r != NULL; r = r->next)
        oldest = r->started_ns < oldest ? r->started_ns : oldest;
    int64_t elapsed_ms = (int64_t)((clock_mono_ns() - oldest) / 1000000u);
    int64_t left = s->conf->cache.timeout_ms - elapsed_ms;
    int64_t wait_ms = left * 3 / 4 - 100;
    resp_start(&s->resp, 3);
    resp_arg_str(&s->resp, "WAIT");
    resp_arg_id(&s->resp, "", s->conf->cache.wait_replicas, "", NULL, 0);
    resp_arg_id(&s->resp, "", wait_ms > 1 ? wait_ms : 1, "", NULL, 0); /* never 0: that waits forever */
    if (s->resp.failed || link_send(link, on_waited, group, s->resp.buf, s->resp.len) < 0)
        return -1;
    link->wait_in_flight = true;
    return 0;
}

/* Join the next WAIT on link: now if none is in flight, else behind the one that is. -1: not
 * sent (the write counts as unconfirmed). */
static int queue_wait(struct shard *s, struct redis_link *link, struct pr_request *req)
{
    req->next = NULL;
    if (!link->wait_in_flight)
        return send_wait(s, link, req);
    struct pr_request *tail = link->wait_next_tail;
    if (tail != NULL)
        tail->next = req;
    else
        link->wait_next_head = req;
    link->wait_next_tail = req;
    return 0;
}

/* The write's reply is in, from link: WAIT if asked to, then kicks and notice, then the answer.
 * A write that changed something and was not confirmed by wait_replicas replicas is
 * UNAVAILABLE: it is in effect on the master, and a failover now could lose it. */
static void write_done(struct shard *s, struct pr_request *req, struct redis_link *link)
{
    if (req->code != MPIM__CODE__OK) {
        shard_answer(s, req); /* a write that failed publishes nothing */
        return;
    }
    bool changed = req->method == PR_METHOD_BIND || req->flag;
    int want = s->conf->cache.wait_replicas;
    if (want > 0 && changed && req->replicas < 0) {
        if (queue_wait(s, link, req) == 0)
            return;
        req->replicas = 0; /* not sent: unconfirmed */
    }
    if (want > 0 && changed && req->replicas < want) {
        request_set_result(req, MPIM__CODE__UNAVAILABLE,
                           "written on the master, but confirmed by %d of %d replicas within the timeout",
                           req->replicas, want);
        shard_answer(s, req);
        return;
    }
    publish_after_write(s, req);
}

/* --- Bind, Unbind, Heartbeat: one session script each (session_scripts.c) --- */

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
    struct shard_script *all[] = {&s->bind_script, &s->unbind_script, &s->heartbeat_script};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        link_command(link, on_script_loaded, all[i], "SCRIPT LOAD %s", all[i]->body);
    for (int i = 0; i < GW_SCRIPTS; i++) /* gateway leases and drains (gateways.c) */
        link_command(link, on_script_loaded, &s->gw_scripts[i], "SCRIPT LOAD %s", s->gw_scripts[i].body);
}

static void on_script_result(struct redis_link *link, enum link_status status, redisReply *reply, void *priv);

static struct shard_script *script_of(struct shard *s, int method)
{
    return method == PR_METHOD_BIND ? &s->bind_script
         : method == PR_METHOD_UNBIND ? &s->unbind_script : &s->heartbeat_script;
}

/* EVALSHA once the SHA is known, EVAL before that and after a NOSCRIPT (EVAL re-caches it). */
static int run_script(struct shard *s, struct pr_request *req, bool by_body)
{
    static const char *const policies[] = {[LOGIN_MULTI] = "multi", [LOGIN_SINGLE] = "single",
                                           [LOGIN_PER_PLATFORM] = "per_platform"};
    const struct presence_conf *c = s->conf;
    struct shard_script *sc = script_of(s, req->method);
    int argc = (req->method == PR_METHOD_BIND ? 6 : req->method == PR_METHOD_UNBIND ? 4 : 5) + 2;
    req->attempts++;
    resp_start_script(s, sc, by_body, 3, 3 + argc);
    arg_route_key(s, req);
    arg_status_key(s, req);
    arg_sessions_key(s, req);
    resp_arg(&s->resp, req->device.data, req->device.len);
    resp_arg(&s->resp, req->gateway.data, req->gateway.len);
    if (req->method == PR_METHOD_BIND)
        resp_arg_id(&s->resp, "", req->platform, "", NULL, 0);
    else
        resp_arg_id(&s->resp, "", (long long)req->fence, "", NULL, 0);
    resp_arg_id(&s->resp, "", c->route_ttl, "", NULL, 0);
    if (req->method != PR_METHOD_UNBIND)
        resp_arg_id(&s->resp, "", c->status_ttl, "", NULL, 0);
    if (req->method == PR_METHOD_BIND)
        resp_arg_str(&s->resp, policies[c->login_policy]);
    gateways_arg_index(s, req); /* the gateway session indexes the script keeps (contract §8) */
    int rc = send_built(s, &s->cache, on_script_result, req);
    if (rc == 0 && req->method == PR_METHOD_BIND && req->attempts == 1)
        gateways_mark_slot(s, req); /* cluster: where a drain will look for the session */
    return rc;
}

static void start_script(struct shard *s, struct pr_request *req, bool by_body)
{
    if (run_script(s, req, by_body) < 0) {
        take_result(req, "cache", LINK_NOT_SENT, NULL);
        if (!gateways_mark_pending(req, NULL)) /* else the slot bit's answer answers it */
            shard_answer(s, req);
    }
}

/* Bind's {epoch, {device, gateway, platform, epoch, last_seen_ms, ...}}. */
static bool take_bind(struct pr_request *req, const redisReply *r)
{
    /* A third element: the gateway's index was not written (gateways_index_fallback). */
    if (r->type != REDIS_REPLY_ARRAY || (r->elements != 2 && r->elements != 3) ||
        !redis_reply_int(r->element[0], &req->epoch) ||
        r->element[1]->type != REDIS_REPLY_ARRAY || r->element[1]->elements % 5 != 0)
        return false;
    const redisReply *d = r->element[1];
    size_t n = d->elements / 5, bytes = 0;
    if (n == 0)
        return true;
    for (size_t i = 0; i < d->elements; i++)
        if (d->element[i]->type == REDIS_REPLY_STRING)
            bytes += d->element[i]->len;
    req->sessions = session_list_new(n, bytes);
    if (req->sessions == NULL)
        return false;
    for (size_t i = 0; i < n; i++) {
        redisReply **e = &d->element[i * 5];
        struct session_view v;
        int64_t platform;
        if (e[0]->type != REDIS_REPLY_STRING || e[1]->type != REDIS_REPLY_STRING || !redis_reply_int(e[2], &platform) ||
            !redis_reply_int(e[3], &v.epoch) || !redis_reply_int(e[4], &v.last_seen_ms))
            return false;
        v.device = e[0]->str, v.device_len = e[0]->len;
        v.gateway = e[1]->str, v.gateway_len = e[1]->len;
        v.platform = (int32_t)platform;
        session_list_add(req->sessions, &v);
    }
    return true;
}

/* Unbind's and Heartbeat's {changed 0|1, what 0|1|2, gateway}. */
static bool take_change(struct pr_request *req, const redisReply *r)
{
    int64_t changed, what;
    /* A fourth element: as take_bind's third. */
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || !redis_reply_int(r->element[0], &changed) ||
        !redis_reply_int(r->element[1], &what) || r->element[2]->type != REDIS_REPLY_STRING)
        return false;
    req->flag = changed == 1;
    req->notice = what == 1 ? NOTICE_LOGOUT : what == 2 ? NOTICE_MOVED : NOTICE_NONE;
    if (req->notice == NOTICE_MOVED && !take_route(req, r->element[2]))
        return false;
    return true;
}

static void on_script_result(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct pr_request *req = priv;
    struct shard *s = shard_of(link);
    /* Scripts flushed (SCRIPT FLUSH, a failover, a cluster master that never loaded them): run
     * it by body once. */
    if (redis_noscript(status, reply) && req->attempts == 1) {
        start_script(s, req, true);
        return;
    }
    if (take_result(req, "cache", status, reply)) {
        bool ok = req->method == PR_METHOD_BIND ? take_bind(req, reply) : take_change(req, reply);
        if (!ok && req->code == MPIM__CODE__OK)
            request_set_result(req, MPIM__CODE__INTERNAL, "unexpected reply from the cache redis script");
        else if (ok)
            gateways_index_fallback(s, req, reply); /* a slot being migrated kept the script from it */
    }
    if (gateways_mark_pending(req, link))
        return; /* its slot bit or index fallback is still out: the last answer calls writes_done */
    write_done(s, req, link);
}

void writes_done(struct shard *s, struct pr_request *req, struct redis_link *link)
{
    write_done(s, req, link);
}

void writes_bind(struct shard *s, struct pr_request *req)
{
    const struct presence_conf *c = s->conf;
    /* BindRouteResp.route_key, named as arg_route_key names it; the codec sends it on success. */
    int n = snprintf(req->route_inline, sizeof(req->route_inline),
                     c->cache.mode == REDIS_CLUSTER ? "user:route:{%lld}" : "user:route:%lld", (long long)req->user_id);
    req->route = req->route_inline;
    req->route_len = (size_t)n;
    req->notice = NOTICE_ROUTE;
    route_cache_invalidate(s, req->user_id); /* near cache: also cancels a read racing the write */
    start_script(s, req, false);
}

void writes_unbind_or_heartbeat(struct shard *s, struct pr_request *req)
{
    route_cache_invalidate(s, req->user_id); /* near cache: also cancels a read racing the write */
    start_script(s, req, false);
}
