/* The near cache's nodes, tracking, fence and hits (route_cache.h, docs/near-cache.md). Shard
 * thread only, except route_cache_new/route_cache_free (main thread, shard not running). */
#include "shards/route_cache.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/thread_role.h"
#include "presence.pb-c.h"
#include "shards/handlers.h"
#include "shards/handlers_common.h"
#include "shards/route_cache_int.h"
#include "shards/shard.h"

int64_t rc_now_ms(void)
{
    return (int64_t)(clock_mono_ns() / 1000000u);
}

/* --- tracked or not --- */

static void set_tracked(struct rc_node *n, bool on)
{
    if (n->tracked == on)
        return;
    n->tracked = on;
    n->rc->ntracked += on ? 1 : (uint32_t)-1;
    counter_set(&n->rc->s->counters.nc_tracked, n->rc->ntracked);
}

/* Forget everything, and every read in flight: the cache can no longer be trusted. */
static void flush(struct route_cache *rc, const char *why)
{
    counter_add(&rc->s->counters.nc_flushes, 1);
    near_cache_clear(rc->nc);
    counter_set(&rc->s->counters.nc_entries, 0);
    log_debug("near cache flushed: %s", why);
}

/* Something broke between Redis and this node's tracking: not tracked until a new CLIENT
 * TRACKING is confirmed; what was cached under it goes (Redis may now change it silently). */
static void node_lose(struct rc_node *n, const char *why)
{
    if (!n->tracked)
        return; /* nothing was cached under it since it last broke */
    set_tracked(n, false);
    flush(n->rc, why);
}

/* The node may serve hits now: tracked, its tracking link subscribed, its cache link up. */
static bool node_usable(struct rc_node *n)
{
    if (!n->tracked)
        return false;
    if (!tracking_link_ready(&n->tl) || n->data == NULL || n->data->state != LINK_UP) {
        node_lose(n, "a connection of the node went down");
        return false;
    }
    return true;
}

struct rc_node *rc_tracked_node(struct route_cache *rc, struct redis_link *link)
{
    int i = router_link_index(&rc->s->cache, link);
    struct rc_node *n = i >= 0 ? rc->node[i] : NULL;
    return n != NULL && n->data == link && node_usable(n) ? n : NULL;
}

/* Has Redis closed the shard's cache connection to this node? Redis forgets the tracking of a
 * connection it closes (CLIENT KILL, a client timeout, an output limit), so writes after that
 * invalidate nothing for us; but it closed it before those writes ran, so by the time a fence
 * PING sent later comes back, the FIN is already in our socket even if nothing read it yet.
 * POLLRDHUP sees it behind unread replies too. */
static bool data_closed(const struct redis_link *l)
{
    if (l->ac == NULL)
        return true;
    struct pollfd p = {.fd = l->ac->c.fd, .events = POLLRDHUP};
    int r = poll(&p, 1, 0);
    return r < 0 || (r > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0);
}

/* g's PING ended: it leaves the node's list of PINGed groups (the oldest, as pongs come in order). */
static void sent_pop(struct rc_node *n, struct rc_group *g)
{
    struct rc_group **p = &n->sent_head, *prev = NULL;
    while (*p != NULL && *p != g)
        prev = *p, p = &(*p)->next;
    if (*p == NULL)
        return;
    *p = g->next;
    if (n->sent_tail == g)
        n->sent_tail = prev;
    g->next = NULL;
}

/* --- CLIENT TRACKING on the shard's cache connection --- */

static void on_tracking_off(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    (void)link, (void)status, (void)reply, (void)priv; /* the "on" behind it tells */
}

static void on_tracking_on(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct route_cache *rc = shard_of(link)->near;
    uintptr_t cookie = (uintptr_t)priv;
    struct rc_node *n = rc != NULL ? rc->node[cookie & 0xff] : NULL;
    if (n == NULL || cookie >> 8 != (n->asked & (UINTPTR_MAX >> 8)))
        return; /* a later pair was sent: that one counts */
    if (status != LINK_REPLY || reply->type == REDIS_REPLY_ERROR) {
        if (status == LINK_REPLY)
            log_limited(&rc->log_lim, LOG_WARN, "near cache off for addr=%s:%d: CLIENT TRACKING refused: %s",
                        link->host, link->port, reply->str);
        return;
    }
    /* Confirmed for the connections it named, if both are still those. Every reply read after
     * this one on this connection is of a command sent after it: tracked, with this redirect. */
    if (n->data == link && n->asked_serial == n->data_serial && tracking_link_ready(&n->tl) &&
        n->asked_readies == n->tl.readies)
        set_tracked(n, true);
}

/* Ask the node's cache connection to send its invalidations to the tracking link. Off first: a
 * connection already tracking refuses a new REDIRECT. Until the "on" is confirmed the node is
 * not tracked (a write between the two would be lost; nothing is cached meanwhile). */
static void ask_tracking(struct rc_node *n)
{
    struct redis_link *l = n->data;
    if (l == NULL || l->state == LINK_DOWN || !tracking_link_ready(&n->tl))
        return;
    n->asked++;
    n->asked_serial = n->data_serial;
    n->asked_readies = n->tl.readies;
    uintptr_t cookie = (uintptr_t)(n->asked << 8) | (uintptr_t)n->index;
    if (link_command(l, on_tracking_off, NULL, "CLIENT TRACKING off") == 0)
        link_command(l, on_tracking_on, (void *)cookie, "CLIENT TRACKING on REDIRECT %lld", n->tl.client_id);
}

/* --- hits waiting for their fence --- */

static uint32_t wait_bucket(int64_t uid)
{
    return (uint32_t)(((uint64_t)uid * 0x9E3779B97F4A7C15ull) >> 48) & (RC_WAIT_BUCKETS - 1);
}

static struct rc_group *group_new(struct route_cache *rc, struct rc_node *n)
{
    struct rc_group *g = rc->spare;
    if (g != NULL)
        rc->spare = g->next;
    else if ((g = malloc(sizeof(*g))) == NULL)
        return NULL;
    *g = (struct rc_group){.node = n};
    return g;
}

static void group_free(struct route_cache *rc, struct rc_group *g)
{
    g->next = rc->spare;
    rc->spare = g;
}

/* Take out of g every request of uid, in order, onto *out's tail. */
static void group_take_user(struct route_cache *rc, struct rc_group *g, int64_t uid, struct pr_request ***out)
{
    struct pr_request **p = &g->head, *last = NULL;
    while (*p != NULL) {
        struct pr_request *req = *p;
        if (req->user_id != uid) {
            last = req;
            p = &req->next;
            continue;
        }
        *p = req->next;
        req->next = NULL;
        **out = req;
        *out = &req->next;
        rc->waiting[wait_bucket(uid)]--;
    }
    g->tail = last;
}

/* A user's requests run in the order they reached the shard (README), hits included: a hit waits
 * for its fence while later requests of the same user go on. So before one of those is sent to
 * Redis -- a write through this server, or a read that missed -- every hit of the user still
 * waiting goes to Redis first, in order (a read from Redis is always right, only slower). A later
 * hit need not: it waits behind them, and fences end in order. */
static void pull_waiting(struct route_cache *rc, int64_t uid)
{
    if (rc->waiting[wait_bucket(uid)] == 0)
        return; /* the common case: no hit of this user (or of its bucket) waits */
    struct pr_request *pulled = NULL, **tail = &pulled;
    for (int i = 0; i < (int)CLUSTER_MAP_MAX_NODES; i++) {
        struct rc_node *n = rc->node[i];
        if (n == NULL)
            continue;
        for (struct rc_group *g = n->sent_head; g != NULL; g = g->next)
            group_take_user(rc, g, uid, &tail);
        if (n->collecting != NULL)
            group_take_user(rc, n->collecting, uid, &tail);
    }
    while (pulled != NULL) {
        struct pr_request *req = pulled;
        pulled = req->next;
        req->next = NULL;
        rc_fetch(rc, req);
    }
}

/* Answer req from entry e (a READY entry just looked up, fence passed). */
static void serve_hit(struct route_cache *rc, struct pr_request *req, const struct nc_entry *e)
{
    struct shard *s = rc->s;
    size_t len = 0;
    const char *route = near_cache_route(e, &len);
    req->flag = route != NULL;
    /* A Deliver needs the route's bytes only for MPIM's channel (handlers.c deliver_channel). */
    if (route != NULL && (req->method == PR_METHOD_QUERY || s->conf->dialect == DIALECT_MPIM)) {
        req->route = len <= sizeof(req->route_inline) ? req->route_inline : malloc(len);
        if (req->route == NULL) {
            request_set_result(req, MPIM__CODE__INTERNAL, "out of memory");
            shard_answer(s, req);
            return;
        }
        memcpy(req->route, route, len);
        req->route_len = len;
    }
    if (req->method == PR_METHOD_QUERY && near_cache_copy_sessions(e->sessions, &req->sessions) < 0) {
        request_set_result(req, MPIM__CODE__INTERNAL, "out of memory");
        shard_answer(s, req);
        return;
    }
    counter_add(&s->counters.nc_hits, 1);
    handlers_route_known(s, req);
}

/* req's entry and its node, if it may be served now (the node tracked and still serving the
 * user's slot: off a cluster always index 0; on one a slot that moved has flushed the cache
 * already, see rc_sync, and this is a second look). */
static const struct nc_entry *hit_for(struct route_cache *rc, const struct pr_request *req, struct rc_node **node)
{
    const struct nc_entry *e = near_cache_lookup(rc->nc, req->user_id, rc_now_ms());
    struct rc_node *n = e != NULL ? rc->node[e->node] : NULL;
    if (n == NULL || !node_usable(n) || router_slot_node(&rc->s->cache, req->slot) != n->index)
        return NULL; /* (node_usable flushes only when it says no: e stays valid otherwise) */
    *node = n;
    return e;
}

/* The fence of group g ended. Answered (TL_PONG): every invalidation Redis had queued for us
 * when it read the PING has been taken in, so an entry still here was current when the PING was
 * sent, which was after each request reached this shard: serve it. Lost: what waited goes to
 * Redis. Hung: Redis did not answer within `timeout` of the request's arrival, as a GET would
 * not have: UNAVAILABLE, like a GET that timed out (§3's bound holds). */
static void serve_group(struct route_cache *rc, struct rc_group *g, enum tl_pong how)
{
    struct rc_node *n = g->node;
    struct pr_request *req = g->head;
    group_free(rc, g);
    if (how == TL_PONG && n->tracked && n->data != NULL && data_closed(n->data))
        node_lose(n, "the cache connection was closed by redis");
    rc_sync(rc);
    while (req != NULL) {
        struct pr_request *next = req->next;
        req->next = NULL;
        rc->waiting[wait_bucket(req->user_id)]--;
        struct rc_node *at = NULL;
        const struct nc_entry *e = how == TL_PONG ? hit_for(rc, req, &at) : NULL;
        if (e != NULL && at == n) {
            serve_hit(rc, req, e);
        } else if (how == TL_HUNG) {
            take_result(req, "cache", LINK_LOST, NULL);
            shard_answer(rc->s, req);
        } else {
            /* Invalidated meanwhile, expired, or the node's tracking broke. A later hit of the
             * user waits in a later group: at its pong it finds this read in flight, or its
             * result, so it never sees older data than this one. */
            rc_fetch(rc, req);
        }
        req = next;
    }
}

void route_cache_lookup(struct shard *s, struct pr_request *req)
{
    ASSERT_THREAD_OF(ROLE_SHARD, s);
    struct route_cache *rc = s->near;
    rc_sync(rc);
    struct rc_node *n = NULL;
    if (rc->stopping || hit_for(rc, req, &n) == NULL) {
        pull_waiting(rc, req->user_id);
        rc_fetch(rc, req);
        return;
    }
    /* THE FENCE. Redis 7.0 puts the invalidation in our tracking connection's output buffer
     * before the writer's reply, but beforeSleep writes clients in the order of
     * clients_pending_write, where putClientInPendingWriteQueue links each at the HEAD: the
     * writer's reply can reach its socket FIRST and the invalidation a moment later. Reading our
     * tracking socket before answering would leave that window (wider on a loaded machine or a
     * network). So a hit is answered only once a PING sent on the tracking link after the request
     * reached this shard has come back: invalidations queued for us before Redis read the PING
     * arrive before its pong on the same socket. Across a network the same holds: the writer saw
     * its reply before it (or whoever it told) asked us, so Redis had queued the invalidation
     * before it read our PING. The hits of a loop turn share one PING per node
     * (route_cache_before_sleep). */
    struct rc_group *g = n->collecting;
    if (g == NULL) {
        if ((g = group_new(rc, n)) == NULL) {
            pull_waiting(rc, req->user_id);
            rc_fetch(rc, req);
            return;
        }
        n->collecting = g;
        n->next_pending = rc->pending;
        rc->pending = n;
    }
    req->next = NULL;
    if (g->tail != NULL)
        g->tail->next = req;
    else
        g->head = req;
    g->tail = req;
    rc->waiting[wait_bucket(req->user_id)]++;
}

void route_cache_before_sleep(struct shard *s)
{
    struct route_cache *rc = s->near;
    while (rc->pending != NULL) {
        struct rc_node *n = rc->pending;
        struct rc_group *g = n->collecting;
        rc->pending = n->next_pending;
        n->next_pending = NULL;
        n->collecting = NULL;
        if (g->head == NULL) { /* every hit was pulled to Redis */
            group_free(rc, g);
            continue;
        }
        g->next = NULL;
        if (n->sent_tail != NULL)
            n->sent_tail->next = g;
        else
            n->sent_head = g;
        n->sent_tail = g;
        if (tracking_link_ping(&n->tl, g) < 0) {
            sent_pop(n, g);
            serve_group(rc, g, TL_LOST); /* not ready: they go to Redis (and may queue more) */
        }
    }
    counter_set(&s->counters.nc_entries, near_cache_entries(rc->nc));
}

void route_cache_invalidate(struct shard *s, int64_t uid)
{
    if (s->near == NULL)
        return;
    pull_waiting(s->near, uid); /* read before the write, as they were asked */
    near_cache_invalidate(s->near->nc, uid);
}

/* --- the tracking links' events --- */

static void on_tl_ready(void *owner, struct tracking_link *tl)
{
    (void)tl;
    struct rc_node *n = owner;
    node_lose(n, "tracking reconnected"); /* a new id: the old REDIRECT reaches nobody */
    ask_tracking(n);
}

static void on_tl_lost(void *owner, struct tracking_link *tl, bool hung)
{
    (void)tl;
    node_lose(owner, hung ? "tracking connection hung" : "tracking connection lost");
}

static void on_tl_invalidate(void *owner, struct tracking_link *tl, const char *key, size_t len)
{
    (void)tl;
    struct rc_node *n = owner;
    int64_t uid;
    if (!near_cache_key_uid(key, len, &uid))
        return; /* user:status:<uid> and anything else: not cached */
    counter_add(&n->rc->s->counters.nc_invalidations, 1);
    near_cache_invalidate(n->rc->nc, uid);
}

static void on_tl_flush(void *owner, struct tracking_link *tl)
{
    (void)tl;
    struct rc_node *n = owner;
    flush(n->rc, "redis flushed its keys");
}

static void on_tl_pong(void *owner, struct tracking_link *tl, void *group, enum tl_pong how)
{
    (void)tl;
    struct rc_node *n = owner;
    sent_pop(n, group);
    serve_group(n->rc, group, how);
}

static const struct tracking_ops tl_ops = {on_tl_ready, on_tl_lost, on_tl_invalidate, on_tl_flush, on_tl_pong};

/* --- nodes --- */

static struct rc_node *node_get(struct route_cache *rc, int i)
{
    if (rc->node[i] != NULL)
        return rc->node[i];
    struct rc_node *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return NULL;
    n->rc = rc;
    n->index = i;
    if (tracking_link_init(&n->tl, &rc->s->conf->cache, rc->s->loop, n, &tl_ops) < 0) {
        free(n);
        return NULL;
    }
    rc->node[i] = n;
    return n;
}

/* Every connection of a master's cache link (the router's set-up hook): a new connection tracks
 * nothing yet; the tracking link goes where it goes (a sentinel's new master, a cluster index's
 * new address). */
void route_cache_link_setup(struct redis_link *link)
{
    handlers_cache_setup(link);
    struct shard *s = shard_of(link);
    struct route_cache *rc = s->near;
    if (rc == NULL || rc->stopping)
        return;
    int i = router_link_index(&s->cache, link);
    struct rc_node *n = i >= 0 ? node_get(rc, i) : NULL;
    if (n == NULL)
        return; /* a retired link, or out of memory: its users are read from Redis */
    node_lose(n, "cache connection (re)connecting");
    n->data = link;
    n->data_serial++;
    tracking_link_set_target(&n->tl, link->host, link->port);
    tracking_link_start(&n->tl);
    ask_tracking(n); /* if the tracking link is ready; else when it is (on_tl_ready) */
}

void rc_sync(struct route_cache *rc)
{
    struct redis_router *r = &rc->s->cache;
    uint64_t t = router_topology(r);
    if (t == rc->topology)
        return;
    rc->topology = t;
    if (near_cache_entries(rc->nc) > 0)
        flush(rc, "the cluster map changed");
    else
        near_cache_clear(rc->nc); /* fetches in flight too */
    for (int i = 0; i < (int)CLUSTER_MAP_MAX_NODES; i++) {
        struct rc_node *n = rc->node[i];
        if (n == NULL || n->data == NULL || router_link_at(r, i) == n->data)
            continue;
        /* The master's link was dropped: so is its tracking (a new link at i sets both up again). */
        set_tracked(n, false);
        n->data = NULL;
        tracking_link_stop(&n->tl);
    }
}

/* --- life cycle --- */

struct route_cache *route_cache_new(struct shard *s)
{
    struct route_cache *rc = calloc(1, sizeof(*rc));
    if (rc == NULL)
        return NULL;
    rc->s = s;
    rc->nc = near_cache_new((uint32_t)s->conf->near_cache);
    rc->waiting = calloc(RC_WAIT_BUCKETS, sizeof(*rc->waiting));
    if (rc->nc == NULL || rc->waiting == NULL) {
        route_cache_free(rc);
        return NULL;
    }
    return rc;
}

void route_cache_stop(struct shard *s)
{
    struct route_cache *rc = s->near;
    rc->stopping = true;
    while (rc->pending != NULL) {
        struct rc_node *n = rc->pending;
        struct rc_group *g = n->collecting;
        rc->pending = n->next_pending;
        n->collecting = NULL;
        serve_group(rc, g, TL_LOST);
    }
    for (int i = 0; i < (int)CLUSTER_MAP_MAX_NODES; i++) {
        if (rc->node[i] != NULL) {
            set_tracked(rc->node[i], false);
            tracking_link_stop(&rc->node[i]->tl); /* PINGs in flight: their hits go to Redis */
        }
    }
}

void route_cache_free(struct route_cache *rc)
{
    if (rc == NULL)
        return;
    for (int i = 0; i < (int)CLUSTER_MAP_MAX_NODES; i++) {
        if (rc->node[i] != NULL) {
            tracking_link_destroy(&rc->node[i]->tl);
            free(rc->node[i]);
        }
    }
    while (rc->spare != NULL) {
        struct rc_group *g = rc->spare;
        rc->spare = g->next;
        free(g);
    }
    near_cache_free(rc->nc);
    free(rc->waiting);
    free(rc);
}
