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
#include "shards/batch_run.h"
#include "shards/redis_result.h"
#include "shards/session_scripts.h"
#include "shards/shard.h"

#define ROUTE_CHANNEL "presence:route"
#define KICK_CHANNEL "presence:kick"

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

static void arg_sessions_key(struct shard *s, const struct pr_request *req)
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

static bool take_route(struct pr_request *req, const redisReply *reply);

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
    bool eval = by_body || sc->sha[0] == '\0';
    int argc = req->method == PR_METHOD_BIND ? 6 : req->method == PR_METHOD_UNBIND ? 4 : 5;
    req->attempts++;
    resp_start(&s->resp, 6 + argc);
    resp_arg_str(&s->resp, eval ? "EVAL" : "EVALSHA");
    resp_arg_str(&s->resp, eval ? sc->body : sc->sha);
    resp_arg_str(&s->resp, "3");
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
    return send_built(s, &s->cache, on_script_result, req);
}

static void start_script(struct shard *s, struct pr_request *req, bool by_body)
{
    if (run_script(s, req, by_body) < 0)
        answer_not_sent(s, req, "cache");
}

/* A number Lua sent as a string or an integer. */
static bool reply_int(const redisReply *r, int64_t *out)
{
    if (r->type == REDIS_REPLY_INTEGER) {
        *out = r->integer;
        return true;
    }
    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 20)
        return false;
    char buf[24], *end;
    memcpy(buf, r->str, r->len);
    buf[r->len] = '\0';
    long long v = strtoll(buf, &end, 10);
    *out = v;
    return *end == '\0';
}

/* Bind's {epoch, {device, gateway, platform, epoch, last_seen_ms, ...}}. */
static bool take_bind(struct pr_request *req, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || !reply_int(r->element[0], &req->epoch) ||
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
        if (e[0]->type != REDIS_REPLY_STRING || e[1]->type != REDIS_REPLY_STRING || !reply_int(e[2], &platform) ||
            !reply_int(e[3], &v.epoch) || !reply_int(e[4], &v.last_seen_ms))
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
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || !reply_int(r->element[0], &changed) ||
        !reply_int(r->element[1], &what) || r->element[2]->type != REDIS_REPLY_STRING)
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
    if (status == LINK_REPLY && reply->type == REDIS_REPLY_ERROR && req->attempts == 1 &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        start_script(s, req, true);
        return;
    }
    if (take_result(req, "cache", status, reply)) {
        bool ok = req->method == PR_METHOD_BIND ? take_bind(req, reply) : take_change(req, reply);
        if (!ok && req->code == MPIM__CODE__OK)
            request_set_result(req, MPIM__CODE__INTERNAL, "unexpected reply from the cache redis script");
    }
    write_done(s, req, link);
}

static void bind_route(struct shard *s, struct pr_request *req)
{
    const struct presence_conf *c = s->conf;
    /* BindRouteResp.route_key, named as arg_route_key names it; the codec sends it on success. */
    int n = snprintf(req->route_inline, sizeof(req->route_inline),
                     c->cache.mode == REDIS_CLUSTER ? "user:route:{%lld}" : "user:route:%lld", (long long)req->user_id);
    req->route = req->route_inline;
    req->route_len = (size_t)n;
    req->notice = NOTICE_ROUTE;
    start_script(s, req, false);
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
static bool take_sessions(struct shard *s, struct pr_request *req, const redisReply *r)
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
    const struct presence_conf *c = s->conf;
    req->slot = c->cache.mode == REDIS_CLUSTER || c->queue.mode == REDIS_CLUSTER ? user_slot(req->user_id) : 0;
    req->replicas = -1;
    int rc = 0;
    switch (req->method) {
    case PR_METHOD_BIND:
        bind_route(s, req);
        return;
    case PR_METHOD_QUERY:
        query_route(s, req);
        return;
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
    s->bind_script.body = SESSION_BIND_LUA;
    s->unbind_script.body = SESSION_UNBIND_LUA;
    s->heartbeat_script.body = SESSION_HEARTBEAT_LUA;
    ev_timer_init(&s->retry_timer, on_retry_timer, 0., 0.);
    s->retry_timer.data = s;
    return 0;
}
