/* The near cache's miss path (route_cache_int.h): read a user's route and sessions from Redis,
 * with their TTLs, cache them if that is safe, answer. Shard thread only: every function runs on
 * the owning shard's loop, in the inbox drain, a fence's end or a hiredis callback. */
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "presence.pb-c.h"
#include "shards/handlers.h"
#include "shards/handlers_common.h"
#include "shards/redis_result.h"
#include "shards/route_cache_int.h"
#include "shards/shard.h"

/* One read in flight: GET route, PTTL route, HGETALL sessions, PTTL sessions, pipelined on the
 * user's connection (one slot on a cluster: the keys share the uid's hash tag). */
struct rc_fetchop {
    struct route_cache *rc;
    struct pr_request *req;
    uint64_t token;             /* near_cache_begin_fetch's */
    int64_t sent_ms;            /* monotonic, when it went out */
    int64_t sent_wall_ms;       /* the same instant on the wall clock (sessions' last_seen_ms) */
    long long route_pttl;       /* PTTL replies: ms left, -1 no TTL, -2 no key */
    long long sessions_pttl;
    struct redis_link *link;    /* the connection that answered (all four must agree) */
    uint8_t pending;            /* replies still awaited */
    bool cacheable;             /* no reason found yet not to cache what comes back */
};

static void note_link(struct rc_fetchop *f, struct redis_link *link)
{
    if (f->link == NULL)
        f->link = link;
    else if (f->link != link)
        f->cacheable = false; /* redirected midway (cluster): the replies are not one node's */
}

/* When the entry stops being true even if nothing writes: no later than either key's TTL (from
 * the send time, so early rather than late) nor the lapse of its first live session to lapse
 * (QueryRoute lists only live ones). */
static int64_t deadline_of(const struct rc_fetchop *f, int64_t route_ttl_ms)
{
    int64_t d = INT64_MAX;
    if (f->route_pttl >= 0)
        d = f->sent_ms + f->route_pttl;
    if (f->sessions_pttl >= 0 && f->sent_ms + f->sessions_pttl < d)
        d = f->sent_ms + f->sessions_pttl;
    const struct pr_sessions *l = f->req->sessions;
    for (size_t i = 0; l != NULL && i < l->n; i++) {
        int64_t lapse = f->sent_ms + (l->items[i].last_seen_ms + route_ttl_ms - f->sent_wall_ms);
        if (lapse < d)
            d = lapse;
    }
    return d;
}

/* All four replies are in and usable: put them in the cache if nothing cancelled the fetch and
 * the connection that answered is tracked now (so every later change of these keys reaches us). */
static void cache_fetched(struct rc_fetchop *f)
{
    struct route_cache *rc = f->rc;
    struct pr_request *req = f->req;
    rc_sync(rc); /* a MOVED or a new map meanwhile: the generation moved on, the token is void */
    struct rc_node *n = f->cacheable ? rc_tracked_node(rc, f->link) : NULL;
    /* On a cluster a missing key is not cached: were its slot migrated, its creation on the new
     * owner would never be announced by the old one, which tracked our read (docs/near-cache.md). */
    bool missing = f->route_pttl == -2 || f->sessions_pttl == -2;
    if (n == NULL || (missing && rc->s->conf->cache.mode == REDIS_CLUSTER)) {
        near_cache_cancel(rc->nc, req->user_id, f->token);
        return;
    }
    struct nc_value v = {.route = req->flag ? req->route : NULL, .route_len = req->route_len,
                         .deadline_ms = deadline_of(f, (int64_t)rc->s->conf->route_ttl * 1000),
                         .node = (uint16_t)n->index};
    if (req->method == PR_METHOD_QUERY) {
        if (near_cache_copy_sessions(req->sessions, &v.sessions) < 0) {
            near_cache_cancel(rc->nc, req->user_id, f->token);
            return;
        }
    } else {
        v.sessions = req->sessions; /* a Deliver does not answer them: they move */
        req->sessions = NULL;
    }
    if (near_cache_complete_fetch(rc->nc, req->user_id, f->token, &v) != 1)
        session_list_free(v.sessions);
}

static void fetch_step(struct rc_fetchop *f)
{
    if (--f->pending > 0)
        return;
    struct route_cache *rc = f->rc;
    struct pr_request *req = f->req;
    bool ok = req->code == MPIM__CODE__OK;
    if (ok && f->cacheable)
        cache_fetched(f);
    else
        near_cache_cancel(rc->nc, req->user_id, f->token);
    free(f);
    if (req->method == PR_METHOD_DELIVER && req->sessions != NULL) {
        session_list_free(req->sessions);
        req->sessions = NULL;
    }
    if (ok)
        handlers_route_known(rc->s, req);
    else
        shard_answer(rc->s, req);
}

static void on_get(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct rc_fetchop *f = priv;
    struct pr_request *req = f->req;
    note_link(f, link);
    if (req->code == MPIM__CODE__OK && take_result(req, "cache", status, reply))
        take_route(req, reply); /* flag: found; out of memory is recorded in req */
    else
        f->cacheable = false;
    fetch_step(f);
}

static void on_pttl(struct rc_fetchop *f, long long *to, enum link_status status, const redisReply *reply)
{
    if (status == LINK_REPLY && reply->type == REDIS_REPLY_INTEGER)
        *to = reply->integer;
    else
        f->cacheable = false; /* QueryRoute never read TTLs: a failure here only costs the caching */
}

static void on_route_pttl(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct rc_fetchop *f = priv;
    note_link(f, link);
    on_pttl(f, &f->route_pttl, status, reply);
    fetch_step(f);
}

static void on_sessions_pttl(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct rc_fetchop *f = priv;
    note_link(f, link);
    on_pttl(f, &f->sessions_pttl, status, reply);
    fetch_step(f);
}

/* QueryRoute's sessions fail it as they always did; a Deliver never read them: for it a failure
 * only costs the caching. */
static void on_sessions(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct rc_fetchop *f = priv;
    struct pr_request *req = f->req;
    struct shard *s = f->rc->s;
    note_link(f, link);
    if (req->method == PR_METHOD_QUERY) {
        if (req->code == MPIM__CODE__OK && take_result(req, "cache", status, reply)) {
            if (!take_sessions(s, req, reply))
                request_set_result(req, MPIM__CODE__INTERNAL, "unexpected sessions reply from the cache redis");
        } else {
            f->cacheable = false;
        }
    } else if (redis_result(status, reply) != MPIM__CODE__OK || !take_sessions(s, req, reply)) {
        f->cacheable = false;
    }
    fetch_step(f);
}

void rc_fetch(struct route_cache *rc, struct pr_request *req)
{
    struct shard *s = rc->s;
    counter_add(&s->counters.nc_misses, 1);
    struct rc_fetchop *f = malloc(sizeof(*f));
    if (f == NULL) {
        request_set_result(req, MPIM__CODE__INTERNAL, "out of memory");
        shard_answer(s, req);
        return;
    }
    *f = (struct rc_fetchop){.rc = rc, .req = req, .sent_ms = rc_now_ms(), .sent_wall_ms = clock_now_ms(),
                             .route_pttl = -2, .sessions_pttl = -2, .cacheable = true};
    /* Marked FETCHING before anything goes out: an invalidation that overtakes the replies
     * (another socket) removes the mark, and then they are answered but not cached. */
    f->token = near_cache_begin_fetch(rc->nc, req->user_id);
    static const struct {
        const char *cmd;
        bool route;
        link_reply_fn *fn;
    } cmds[] = {{"GET", true, on_get}, {"PTTL", true, on_route_pttl}, {"HGETALL", false, on_sessions},
                {"PTTL", false, on_sessions_pttl}};
    TRACE_HOOK(trace_sent(req));
    for (size_t k = 0; k < sizeof(cmds) / sizeof(cmds[0]); k++) {
        resp_start(&s->resp, 2);
        resp_arg_str(&s->resp, cmds[k].cmd);
        if (cmds[k].route)
            arg_route_key(s, req);
        else
            arg_sessions_key(s, req);
        if (!s->resp.failed && router_send(&s->cache, req->slot, cmds[k].fn, f, s->resp.buf, s->resp.len) == 0) {
            f->pending++;
            continue;
        }
        if (k == 0) { /* nothing went out: the link is down */
            near_cache_cancel(rc->nc, req->user_id, f->token);
            free(f);
            answer_not_sent(s, req, "cache");
            return;
        }
        /* Out of memory midway: what went out is answered; the rest is missing. */
        f->cacheable = false;
        if (k == 2 && req->method == PR_METHOD_QUERY)
            request_set_result(req, MPIM__CODE__INTERNAL, "sessions not read");
        break;
    }
}
