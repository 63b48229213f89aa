/* The test infrastructure of contract §10 (tests/common/cluster.h): a real Redis Cluster and a
 * real Sentinel set come up settled on free loopback ports, fail over as Redis says they do, and
 * stop leaving no process; and our slot function agrees with Redis's CLUSTER KEYSLOT. No
 * im-presence server is started here. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cluster_slot.h"
#include "harness.h"

static void infra_init(void)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&FX, 0, sizeof(FX));
    it_dir();
}

TestSuite(cluster_infra, .init = infra_init, .fini = fx_fini, .timeout = IT_TIMEOUT);

/* Bound on a promotion: cluster-node-timeout (2 s) + Redis's own 0.5-1 s election delay, slack. */
#define PROMOTION_BOUND_MS (15000 * IT_SLOW)

static int g_owner[TP_CLUSTER_SLOTS], g_replica[TP_CLUSTER_SLOTS];

static bool pid_gone(pid_t pid)
{
    return kill(pid, 0) != 0 && errno == ESRCH;
}

IT(cluster_infra, three_masters_three_replicas_settle_cover_every_slot_and_stop_clean)
{
    double t0 = it_mono_ms();
    it_cluster_start(&FX.cluster, 3, 1);
    cr_log_info("3+3 cluster settled in %.0f ms", it_mono_ms() - t0);
    struct tp_cluster *c = &FX.cluster;
    cr_assert_eq(c->n, 6);

    /* Every node's map covers all slots, and all agree on it. */
    for (int i = 0; i < c->n; i++) {
        int covered = tp_cluster_slots_at(c->node[i].r.port, g_owner, g_replica);
        cr_assert_eq(covered, TP_CLUSTER_SLOTS, "node %d covers %d slots: %s", c->node[i].r.port, covered,
                     tp_error());
        int masters = 0, first_owner = g_owner[0];
        for (int s = 0; s < TP_CLUSTER_SLOTS; s++) {
            int m = tp_cluster_node_index(c, g_owner[s]), r = tp_cluster_node_index(c, g_replica[s]);
            cr_assert_geq(m, 0, "slot %d: master port %d is no node of ours", s, g_owner[s]);
            cr_assert_geq(r, 0, "slot %d: replica port %d is no node of ours", s, g_replica[s]);
            cr_assert_neq(m, r);
            masters += s == 0 || g_owner[s] != g_owner[s - 1];
        }
        cr_assert_eq(tp_cluster_slot_master(c, 0), first_owner);
        cr_assert_geq(masters, 3, "slots in fewer than 3 runs of owners");
    }
    int roles = 0;
    for (int i = 0; i < c->n; i++)
        roles += tp_cluster_is_master(c->node[i].r.port);
    cr_assert_eq(roles, 3, "%d masters", roles);

    char nodes[TP_CLUSTER_MAX_NODES * 24];
    cr_assert_eq(tp_cluster_nodes(c, nodes, sizeof(nodes)), 0);
    char want[32];
    snprintf(want, sizeof(want), "127.0.0.1:%d,", c->node[0].r.port);
    cr_assert_eq(strncmp(nodes, want, strlen(want)), 0, "%s", nodes);

    pid_t pids[TP_CLUSTER_MAX_NODES];
    for (int i = 0; i < c->n; i++)
        pids[i] = c->node[i].r.pid;
    t0 = it_mono_ms();
    tp_cluster_stop(c);
    cr_log_info("cluster stopped in %.0f ms", it_mono_ms() - t0);
    for (int i = 0; i < c->n; i++) {
        cr_assert_eq(c->node[i].r.pid, 0);
        cr_assert(pid_gone(pids[i]), "node pid %d still exists", (int)pids[i]);
        cr_assert_not(tp_port_open(c->node[i].r.port), "port %d still open", c->node[i].r.port);
    }
}

/* ------------------------------------------------------------------ keyslot */

static uint64_t g_rng;

static uint64_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static size_t rnd_text(char *out, size_t max, const char *alphabet)
{
    size_t n = rnd() % (max + 1), k = strlen(alphabet);
    for (size_t i = 0; i < n; i++)
        out[i] = alphabet[rnd() % k];
    return n;
}

/* Key number i of the three kinds: random bytes, hash tags in odd places, route keys. */
static size_t make_key(int i, char *key)
{
    static const char *const tagged[] = {"%s{%s}%s", "{%s}%s%s", "%s%s{%s}",   "%s{}%s{%s}", "%s{{%s}}%s",
                                         "%s}%s{%s", "%s{%s",    "{%s}{%s}%s", "%s{%s}{}%s", "{}%s%s%s"};
    if (i % 3 == 0) {
        size_t n = rnd() % 41;
        for (size_t k = 0; k < n; k++)
            key[k] = (char)(rnd() & 0xff);
        return n;
    }
    if (i % 3 == 1) {
        static const char letters[] = "abcxyz0189:_-{}";
        char a[12], b[12], c[12];
        a[rnd_text(a, 10, letters)] = '\0';
        b[rnd_text(b, 10, letters)] = '\0';
        c[rnd_text(c, 10, letters)] = '\0';
        return (size_t)snprintf(key, 64, tagged[rnd() % 10], a, b, c);
    }
    unsigned long long uid = rnd() >> (1 + rnd() % 63);
    return (size_t)snprintf(key, 64, "user:route:{%s%llu}", rnd() % 8 == 0 ? "-" : "", uid);
}

IT(cluster_infra, keyslot_agrees_with_redis_cluster_keyslot)
{
    it_cluster_start(&FX.cluster, 1, 0);
    g_rng = (uint64_t)time(NULL) | 1;
    cr_log_info("keyslot seed %llu", (unsigned long long)g_rng);
    redisContext *rc = it_rconnect(FX.cluster.node[0].r.port, 0);
    enum { N = 2000 };
    static char keys[N][64];
    static size_t lens[N];
    for (int i = 0; i < N; i++) {
        lens[i] = make_key(i, keys[i]);
        cr_assert_eq(redisAppendCommand(rc, "CLUSTER KEYSLOT %b", keys[i], lens[i]), REDIS_OK);
    }
    for (int i = 0; i < N; i++) {
        redisReply *r = NULL;
        cr_assert_eq(redisGetReply(rc, (void **)&r), REDIS_OK, "%s", rc->errstr);
        cr_assert_eq(r->type, REDIS_REPLY_INTEGER, "%s", r->type == REDIS_REPLY_ERROR ? r->str : "?");
        long long ours = cluster_keyslot(keys[i], lens[i]);
        cr_assert_eq(ours, r->integer, "key %d (%zu bytes, \"%.*s\"): ours %lld, Redis %lld", i, lens[i],
                     (int)lens[i], keys[i], ours, r->integer);
        freeReplyObject(r);
    }
    redisFree(rc);
}

/* ----------------------------------------------------------------- failover */

IT(cluster_infra, kill_9_of_a_master_promotes_its_replica)
{
    it_cluster_start(&FX.cluster, 3, 1);
    struct tp_cluster *c = &FX.cluster;
    const int slot = 0;
    cr_assert_eq(tp_cluster_slots_at(c->node[0].r.port, g_owner, g_replica), TP_CLUSTER_SLOTS);
    int master = tp_cluster_node_index(c, g_owner[slot]), replica = tp_cluster_node_index(c, g_replica[slot]);
    cr_assert(master >= 0 && replica >= 0);
    int new_port = c->node[replica].r.port;

    double t0 = it_mono_ms();
    tp_cluster_kill(c, master);
    /* Promoted: the replica says it is a master, and every running node maps the slot to it. */
    double promoted = -1, agreed = -1;
    while (agreed < 0 && it_mono_ms() - t0 < PROMOTION_BOUND_MS) {
        if (promoted < 0 && tp_cluster_is_master(new_port))
            promoted = it_mono_ms() - t0;
        if (promoted >= 0) {
            bool all = true;
            for (int i = 0; i < c->n && all; i++)
                all = c->node[i].r.pid == 0 || (tp_cluster_slots_at(c->node[i].r.port, g_owner, NULL) > 0 &&
                                                g_owner[slot] == new_port);
            if (all)
                agreed = it_mono_ms() - t0;
        }
        it_sleep_ms(20);
    }
    cr_assert_geq(promoted, 0, "replica %d not promoted within %d ms", new_port, PROMOTION_BOUND_MS);
    cr_assert_geq(agreed, 0, "not every node maps slot %d to %d within %d ms", slot, new_port,
                  PROMOTION_BOUND_MS);
    cr_log_info("kill -9 of master %d: replica %d promoted after %.0f ms, every node agreed after %.0f ms",
                c->node[master].r.port, new_port, promoted, agreed);

    /* The old master comes back as a replica of the new one, and the cluster settles again. */
    t0 = it_mono_ms();
    cr_assert_eq(tp_cluster_restart(c, master), 0, "%s", tp_error());
    cr_assert_eq(tp_cluster_wait_settled(c, 20000 * IT_SLOW), 0, "%s", tp_error());
    cr_assert_not(tp_cluster_is_master(c->node[master].r.port));
    cr_assert_eq(tp_cluster_slot_master(c, slot), new_port);
    cr_log_info("old master rejoined as a replica, settled after %.0f ms", it_mono_ms() - t0);
}

IT(cluster_infra, sentinel_set_settles_and_follows_a_manual_failover)
{
    double t0 = it_mono_ms();
    it_sentinel_start(&FX.sentinel, "presence");
    cr_log_info("sentinel set settled in %.0f ms", it_mono_ms() - t0);
    struct tp_sentinel_set *s = &FX.sentinel;
    int port = 0;
    cr_assert_eq(tp_sentinel_master(s, &port), 0, "%s", tp_error());
    cr_assert_eq(port, s->master.port);
    char nodes[TP_SENTINELS * 24];
    cr_assert_eq(tp_sentinel_nodes(s, nodes, sizeof(nodes)), 0);
    cr_assert_not_null(strchr(strchr(nodes, ',') + 1, ','), "%s", nodes);

    t0 = it_mono_ms();
    it_rcmd(s->sentinel[0].port, 0, "SENTINEL FAILOVER %s", s->name);
    /* Every sentinel names the former replica, and it says it is a master. */
    bool moved = false;
    while (!moved && it_mono_ms() - t0 < PROMOTION_BOUND_MS) {
        moved = tp_cluster_is_master(s->replica.port);
        for (int k = 0; k < TP_SENTINELS && moved; k++)
            moved =
                tp_sentinel_master_at(s->sentinel[k].port, s->name, &port) == 0 && port == s->replica.port;
        if (!moved)
            it_sleep_ms(20);
    }
    cr_assert(moved, "sentinels do not all name %d as master within %d ms", s->replica.port,
              PROMOTION_BOUND_MS);
    cr_log_info("SENTINEL FAILOVER: every sentinel names the new master after %.0f ms", it_mono_ms() - t0);

    pid_t pids[] = {s->master.pid, s->replica.pid, s->sentinel[0].pid, s->sentinel[1].pid,
                    s->sentinel[2].pid};
    tp_sentinel_stop(s);
    for (size_t i = 0; i < sizeof(pids) / sizeof(pids[0]); i++)
        cr_assert(pid_gone(pids[i]), "pid %d still exists", (int)pids[i]);
}
