/* Shard thread only: every function here runs on the loop of the shard that owns the router,
 * except router_link_counters and router_all_up (any thread, counters only). */
#include "shards/redis_router.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cluster_redirect.h"
#include "core/thread_role.h"

#define REFRESH_MIN_GAP 0.2 /* seconds between two CLUSTER SLOTS of one router: a failover's
                             * MOVED storm asks once, not once per command */
#define CHECK_INTERVAL 1.0  /* while a slot has no reachable master, ask again this often */
#define WAIT_FIRST 0.005    /* first wait before sending a command again; doubles ... */
#define WAIT_MAX 0.1        /* ... up to this */
#define MAX_REDIRECTS 16    /* MOVED/ASK followed per command: a misconfigured cluster could loop */

/* A command on a cluster, kept until it is answered so that it can be sent again. */
struct routed_cmd {
    struct redis_router *r;
    link_reply_fn *fn;
    void *priv;
    struct routed_cmd *next; /* in the wait queue */
    ev_tstamp deadline;      /* the section's timeout after router_send */
    uint16_t slot;
    uint8_t redirects;
    size_t len;
    char bytes[]; /* the RESP command */
};

/* A master's connection; `next` lists retired ones until they are freed. */
struct master_link {
    struct redis_link link;
    struct master_link *next;
};

static void routed_send(struct routed_cmd *c, int ask_node);
static void router_refresh(struct redis_router *r);

/* --- the wait queue: commands to send again, in the order they were decided --- */

static void wait_push(struct routed_cmd *c)
{
    struct redis_router *r = c->r;
    c->next = NULL;
    if (r->wait_tail != NULL)
        r->wait_tail->next = c;
    else
        r->wait_head = c;
    r->wait_tail = c;
    r->waiting_in_slot[c->slot]++;
    if (!ev_is_active(&r->wait_timer)) {
        ev_timer_set(&r->wait_timer, r->wait_delay, 0.);
        ev_timer_start(r->loop, &r->wait_timer);
    }
}

static void finish(struct routed_cmd *c, struct redis_link *link, enum link_status status, redisReply *reply)
{
    c->fn(link, status, reply, c->priv);
    free(c);
}

/* Send every waiting command again, in order; those that still cannot go wait again, behind the
 * others of their slot (routed_send sees waiting_in_slot). Past its deadline a command is done. */
static void on_wait_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct redis_router *r = w->data;
    struct routed_cmd *c = r->wait_head;
    r->wait_head = r->wait_tail = NULL;
    for (struct routed_cmd *x = c; x != NULL; x = x->next)
        r->waiting_in_slot[x->slot]--;
    while (c != NULL) {
        struct routed_cmd *next = c->next;
        if (ev_now(loop) >= c->deadline) {
            finish(c, &r->seed, LINK_NOT_SENT, NULL);
        } else {
            counter_add(&r->counters.retries, 1);
            routed_send(c, -1);
        }
        c = next;
    }
    if (r->wait_head != NULL) {
        r->wait_delay = r->wait_delay * 2 > WAIT_MAX ? WAIT_MAX : r->wait_delay * 2;
        ev_timer_set(w, r->wait_delay, 0.);
        ev_timer_start(loop, w);
    } else {
        r->wait_delay = WAIT_FIRST;
    }
}

/* --- master connections, by map index --- */

static void update_gauges(struct redis_router *r)
{
    uint64_t masters = 0, covered = 0;
    for (int i = 0; i < (int)CLUSTER_MAP_MAX_NODES; i++)
        masters += r->node[i] != NULL;
    for (uint32_t s = 0; s < CLUSTER_SLOTS; s++) {
        uint16_t i = r->map->slot_owner[s];
        covered += i != CLUSTER_NODE_NONE && r->node[i] != NULL;
    }
    counter_set(&r->counters.masters, masters);
    counter_set(&r->counters.covered, covered);
}

/* A connection for map index i. An address of kind SAME means the host of the node that told
 * us (via_host); UNKNOWN cannot be connected to: its slots wait for a later map. */
static void make_link(struct redis_router *r, int i, const struct cluster_addr *a, const char *via_host)
{
    if (a->kind == CLUSTER_HOST_UNKNOWN)
        return;
    struct master_link *m = calloc(1, sizeof(*m));
    if (m == NULL || link_init(&m->link, r->role, r->conf, r->loop, r->owner, r->on_setup) < 0) {
        free(m);
        return; /* out of memory: its slots wait, and the next map tries again */
    }
    link_set_target(&m->link, a->kind == CLUSTER_HOST_NAMED ? a->host : via_host, a->port);
    link_share_counters(&m->link, &r->links);
    r->node[i] = &m->link;
    r->linked[i] = *a;
    r->topology++;
    link_start(&m->link);
}

/* Retire index i's connection: nothing new goes to it, and it is closed once what it carries
 * is answered (a master demoted by CLUSTER FAILOVER answers MOVED, and those are followed), or
 * once it is down. Never freed here: this may be the link whose callback is running. */
static void drop_link(struct redis_router *r, int i)
{
    struct master_link *m = (struct master_link *)r->node[i];
    r->node[i] = NULL;
    r->topology++;
    m->next = r->retiring;
    r->retiring = m;
    if (!ev_is_active(&r->reap_timer))
        ev_timer_start(r->loop, &r->reap_timer);
}

/* Retired links: close the idle ones; free those closed on an earlier turn. */
static void on_reap_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct redis_router *r = w->data;
    struct master_link **p = &r->retiring;
    while (*p != NULL) {
        struct master_link *m = *p;
        if (m->link.stopping) {
            *p = m->next;
            link_destroy(&m->link);
            free(m);
            continue;
        }
        if (r->stopping || link_in_flight(&m->link) == 0 || m->link.state == LINK_DOWN)
            link_stop(&m->link);
        p = &m->next;
    }
    if (r->retiring == NULL)
        ev_timer_stop(loop, w);
}

/* Make the connections match the map: one per master, re-made if its index changed hands. */
static void sync_links(struct redis_router *r, const char *via_host)
{
    for (int i = 0; i < (int)CLUSTER_MAP_MAX_NODES; i++) {
        const struct cluster_addr *a = cluster_map_node(r->map, i);
        if (r->node[i] != NULL && (a == NULL || !cluster_addr_equal(a, &r->linked[i])))
            drop_link(r, i);
        if (a != NULL && r->node[i] == NULL)
            make_link(r, i, a, via_host);
    }
    update_gauges(r);
}

/* --- the slot map --- */

/* FNV-1a over the slot owners: tells a map that assigns slots differently from one that does not. */
static uint64_t slots_digest(const struct cluster_map *m)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint32_t s = 0; s < CLUSTER_SLOTS; s++)
        h = (h ^ m->slot_owner[s]) * 0x100000001b3ull;
    return h;
}

static void on_slots(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct redis_router *r = priv;
    r->refreshing = false;
    if (status != LINK_REPLY)
        return; /* the check timer asks again */
    char err[256];
    uint64_t before = slots_digest(r->map);
    if (cluster_map_parse(r->map, reply, err, sizeof(err)) < 0) {
        log_limited(&r->log_lim, LOG_WARN, "redis cluster map rejected role=%s addr=%s:%d error=\"%s\"", r->role,
                    link->host, link->port, err);
        return;
    }
    counter_add(&r->counters.refreshes, 1);
    if (slots_digest(r->map) != before)
        r->topology++;
    sync_links(r, link->host);
}

/* A connection to ask: a master that is up (a different one each time), else the seed link. */
static struct redis_link *map_source(struct redis_router *r)
{
    static const int n = (int)CLUSTER_MAP_MAX_NODES;
    int start = (int)(counter_get(&r->counters.refreshes) % (uint64_t)n);
    for (int k = 0; k < n; k++) {
        struct redis_link *l = r->node[(start + k) % n];
        if (l != NULL && l->state == LINK_UP)
            return l;
    }
    return &r->seed;
}

static void ask_for_map(struct redis_router *r)
{
    struct redis_link *l = map_source(r);
    if (l == &r->seed && l->state == LINK_DOWN) {
        /* The seed it aimed at failed since (not merely waiting out its backoff): aim at the next
         * one, at once. Asked when the seed link comes up (seed_setup). */
        uint64_t errors = counter_get(&r->seed.own.errors);
        if (errors != r->seed_errors) {
            r->seed_errors = errors;
            const struct cluster_addr *a = &r->conf->node[r->seed_next++ % r->conf->nnodes];
            link_set_target(&r->seed, a->host, a->port);
            link_connect_soon(&r->seed);
        }
        return;
    }
    if (link_command(l, on_slots, r, "CLUSTER SLOTS") == 0) {
        r->refreshing = true;
        r->last_refresh = ev_now(r->loop);
    }
}

static void on_refresh_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct redis_router *r = w->data;
    if (!r->refreshing)
        ask_for_map(r);
}

/* Ask for a new map now, or REFRESH_MIN_GAP after the last one. */
static void router_refresh(struct redis_router *r)
{
    if (r->refreshing || ev_is_active(&r->refresh_timer))
        return;
    ev_tstamp next = r->last_refresh + REFRESH_MIN_GAP - ev_now(r->loop);
    if (next <= 0) {
        ask_for_map(r);
        return;
    }
    ev_timer_set(&r->refresh_timer, next, 0.);
    ev_timer_start(r->loop, &r->refresh_timer);
}

/* Every second: a slot without a master, or a master not up, wants a new map (after a failover
 * nobody may be sending to those slots to trigger one). */
static void on_check_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct redis_router *r = w->data;
    if (!router_all_up(r))
        router_refresh(r);
}

/* Every connection of the seed link asks for the map first. */
static void seed_setup(struct redis_link *link)
{
    struct redis_router *r = (struct redis_router *)((char *)link - offsetof(struct redis_router, seed));
    if (!r->refreshing && link_command(link, on_slots, r, "CLUSTER SLOTS") == 0) {
        r->refreshing = true;
        r->last_refresh = ev_now(r->loop);
    }
}

/* --- commands --- */

static bool may_redirect(struct routed_cmd *c)
{
    return ev_now(c->r->loop) < c->deadline && ++c->redirects <= MAX_REDIRECTS;
}

static void on_asking(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    (void)link, (void)status, (void)reply, (void)priv; /* the command behind it tells */
}

static void on_routed_reply(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct routed_cmd *c = priv;
    struct redis_router *r = c->r;
    if (status == LINK_REPLY && reply->type == REDIS_REPLY_ERROR && !r->stopping) {
        struct cluster_redirect rd;
        int i;
        switch (cluster_error_classify(reply->str, reply->len, &rd)) {
        case CLUSTER_ERR_MOVED:
            /* The slot moved for good (failover, resharding): take it now, confirm with a map. */
            counter_add(&r->counters.moved, 1);
            r->topology++;
            i = cluster_map_set_slot(r->map, rd.slot, &rd.to);
            if (i >= 0 && r->node[i] == NULL)
                make_link(r, i, &rd.to, link->host);
            router_refresh(r);
            if (may_redirect(c)) {
                routed_send(c, -1);
                return;
            }
            break;
        case CLUSTER_ERR_ASK:
            /* Migrating, and this key is already at the target: once there, map unchanged. A
             * target we have no connection to (a new master): wait, and the migration's end
             * brings a MOVED to a master of the map. */
            counter_add(&r->counters.ask, 1);
            i = cluster_map_find(r->map, &rd.to);
            if (may_redirect(c)) {
                if (i >= 0 && r->node[i] != NULL) {
                    routed_send(c, i);
                } else {
                    router_refresh(r);
                    wait_push(c);
                }
                return;
            }
            break;
        case CLUSTER_ERR_RETRY: /* TRYAGAIN, CLUSTERDOWN, LOADING: not run; the same node later */
            if (ev_now(r->loop) < c->deadline) {
                wait_push(c);
                return;
            }
            break;
        case CLUSTER_ERR_OTHER:
            break;
        }
    } else if (status == LINK_NOT_SENT && !r->stopping) {
        /* Never reached its master: maybe gone; a new map may name another. */
        router_refresh(r);
        if (ev_now(r->loop) < c->deadline) {
            wait_push(c);
            return;
        }
    } else if (status == LINK_LOST) {
        router_refresh(r); /* it may have run: never sent again, but the map may be stale */
    }
    finish(c, link, status, reply);
}

/* Send c to its slot's master (or, after an ASK, to map index ask_node with ASKING first). */
static void routed_send(struct routed_cmd *c, int ask_node)
{
    struct redis_router *r = c->r;
    if (r->waiting_in_slot[c->slot] > 0) { /* an earlier command of this slot waits: keep order */
        wait_push(c);
        return;
    }
    int i = ask_node >= 0 ? ask_node : cluster_map_node_for_slot(r->map, c->slot);
    struct redis_link *l = i >= 0 ? r->node[i] : NULL;
    if (l != NULL) {
        /* ASKING and the command are written together: if the first is taken, so is the second
         * (link_send can then fail only for memory, leaving a harmless lone ASKING). */
        if (ask_node < 0 || link_command(l, on_asking, NULL, "ASKING") == 0) {
            if (link_send(l, on_routed_reply, c, c->bytes, c->len) == 0)
                return;
        }
    }
    router_refresh(r); /* no master known, or its connection is down */
    wait_push(c);
}

int router_send(struct redis_router *r, uint16_t slot, link_reply_fn *fn, void *priv, const char *cmd, size_t len)
{
    ASSERT_THREAD_OF(ROLE_SHARD, r->owner);
    if (!r->cluster)
        return link_send(&r->single, fn, priv, cmd, len);
    if (r->stopping)
        return -1;
    struct routed_cmd *c = malloc(sizeof(*c) + len);
    if (c == NULL)
        return -1;
    *c = (struct routed_cmd){.r = r, .fn = fn, .priv = priv, .slot = slot % CLUSTER_SLOTS, .len = len,
                             .deadline = ev_now(r->loop) + r->conf->timeout_ms / 1000.0};
    memcpy(c->bytes, cmd, len);
    routed_send(c, -1);
    return 0;
}

/* --- life cycle --- */

int router_init(struct redis_router *r, const char *role, const struct redis_conf *conf, struct ev_loop *loop,
                void *owner, link_setup_fn *on_setup)
{
    memset(r, 0, sizeof(*r));
    r->role = role;
    r->conf = conf;
    r->loop = loop;
    r->owner = owner;
    r->on_setup = on_setup;
    r->cluster = conf->mode == REDIS_CLUSTER;
    if (!r->cluster)
        return link_init(&r->single, role, conf, loop, owner, on_setup);
    r->map = malloc(sizeof(*r->map));
    r->waiting_in_slot = calloc(CLUSTER_SLOTS, sizeof(*r->waiting_in_slot));
    if (r->map == NULL || r->waiting_in_slot == NULL || link_init(&r->seed, role, conf, loop, owner, seed_setup) < 0)
        return -1;
    cluster_map_init(r->map);
    const struct cluster_addr *first = &conf->node[0];
    link_set_target(&r->seed, first->host, first->port);
    r->seed_next = 1;
    r->wait_delay = WAIT_FIRST;
    r->last_refresh = -REFRESH_MIN_GAP;
    ev_timer_init(&r->wait_timer, on_wait_timer, 0., 0.);
    r->wait_timer.data = r;
    ev_timer_init(&r->refresh_timer, on_refresh_timer, 0., 0.);
    r->refresh_timer.data = r;
    ev_timer_init(&r->reap_timer, on_reap_timer, 0.05, 0.05);
    r->reap_timer.data = r;
    ev_timer_init(&r->check_timer, on_check_timer, CHECK_INTERVAL, CHECK_INTERVAL);
    r->check_timer.data = r;
    return 0;
}

void router_start(struct redis_router *r)
{
    if (!r->cluster) {
        link_start(&r->single);
        return;
    }
    link_start(&r->seed); /* its set-up asks for the map */
    ev_timer_start(r->loop, &r->check_timer);
}

void router_stop(struct redis_router *r)
{
    if (!r->cluster) {
        link_stop(&r->single);
        return;
    }
    r->stopping = true;
    ev_timer_stop(r->loop, &r->check_timer);
    ev_timer_stop(r->loop, &r->refresh_timer);
    ev_timer_stop(r->loop, &r->wait_timer);
    for (int i = 0; i < (int)CLUSTER_MAP_MAX_NODES; i++)
        if (r->node[i] != NULL)
            link_stop(r->node[i]); /* commands in flight come back now (stopping: not resent) */
    for (struct master_link *m = r->retiring; m != NULL; m = m->next)
        link_stop(&m->link);
    link_stop(&r->seed);
    struct routed_cmd *c = r->wait_head;
    r->wait_head = r->wait_tail = NULL;
    while (c != NULL) {
        struct routed_cmd *next = c->next;
        r->waiting_in_slot[c->slot]--;
        finish(c, &r->seed, LINK_NOT_SENT, NULL);
        c = next;
    }
}

void router_destroy(struct redis_router *r)
{
    if (!r->cluster) {
        link_destroy(&r->single);
        return;
    }
    for (int i = 0; i < (int)CLUSTER_MAP_MAX_NODES; i++) {
        if (r->node[i] != NULL) {
            link_destroy(r->node[i]);
            free(r->node[i]);
        }
    }
    while (r->retiring != NULL) {
        struct master_link *m = r->retiring;
        r->retiring = m->next;
        link_destroy(&m->link);
        free(m);
    }
    ev_timer_stop(r->loop, &r->reap_timer);
    link_destroy(&r->seed);
    free(r->map);
    free(r->waiting_in_slot);
}

/* --- the near cache's view --- */

int router_link_index(const struct redis_router *r, const struct redis_link *link)
{
    if (!r->cluster)
        return link == &r->single ? 0 : -1;
    for (int i = 0; i < (int)r->map->nnodes; i++) /* no node index is at nnodes or above */
        if (r->node[i] == link)
            return i;
    return -1;
}

struct redis_link *router_link_at(struct redis_router *r, int i)
{
    if (!r->cluster)
        return i == 0 ? &r->single : NULL;
    return i >= 0 && i < (int)CLUSTER_MAP_MAX_NODES ? r->node[i] : NULL;
}

int router_slot_node(const struct redis_router *r, uint16_t slot)
{
    return r->cluster ? cluster_map_node_for_slot(r->map, slot) : 0;
}

uint64_t router_topology(const struct redis_router *r)
{
    return r->topology;
}

/* --- any thread --- */

const struct link_counters *router_link_counters(const struct redis_router *r)
{
    return r->cluster ? &r->links : &r->single.own; /* a single link counts into its own */
}

bool router_all_up(const struct redis_router *r)
{
    if (!r->cluster)
        return counter_get(&r->single.own.up) != 0;
    uint64_t masters = counter_get(&r->counters.masters);
    return masters > 0 && counter_get(&r->counters.covered) == CLUSTER_SLOTS &&
           counter_get(&r->links.up) >= masters;
}
