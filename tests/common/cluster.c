#include "cluster.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

/* How often a settle condition is polled. */
#define POLL_MS 50
/* Base bounds, multiplied by `slow`. */
#define NODE_READY_MS 5000
#define CREATE_MS 30000
#define SETTLE_MS 30000
#define STOP_MS 3000

static int factor(int slow)
{
    return slow > 0 ? slow : 1;
}

/* ------------------------------------------------------------ Redis direct */

/* A command on a fresh connection with short timeouts (a node may be dead or hung); the reply
 * (free it), or NULL. */
static redisReply *node_cmd(int port, const char *fmt, ...)
{
    struct timeval tv = {0, 500000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c == NULL)
        return NULL;
    redisReply *r = NULL;
    if (!c->err) {
        struct timeval cmd_tv = {1, 0};
        redisSetTimeout(c, cmd_tv);
        va_list ap;
        va_start(ap, fmt);
        r = redisvCommand(c, fmt, ap);
        va_end(ap);
    }
    redisFree(c);
    return r;
}

/* A command whose reply must be a bulk or status string: it, malloc'd, or NULL. */
static char *node_text(int port, const char *fmt, const char *arg)
{
    redisReply *r = arg != NULL ? node_cmd(port, fmt, arg) : node_cmd(port, fmt);
    char *text = NULL;
    if (r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS))
        text = strdup(r->str);
    if (r != NULL)
        freeReplyObject(r);
    return text;
}

/* The value of `field:` in INFO / CLUSTER INFO text, into out; false if absent. */
static bool info_field(const char *text, const char *field, char *out, size_t size)
{
    size_t flen = strlen(field);
    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p != NULL ? p + 1 : NULL) {
        if (strncmp(p, field, flen) != 0 || p[flen] != ':')
            continue;
        const char *v = p + flen + 1;
        size_t n = strcspn(v, "\r\n");
        if (n >= size)
            n = size - 1;
        memcpy(out, v, n);
        out[n] = '\0';
        return true;
    }
    return false;
}

/* Is the server on r->port really r's process? A port race can leave another test's Redis
 * answering PING on the port ours failed to bind. */
static bool answers_as(const struct tp_redis *r)
{
    char *info = node_text(r->port, "INFO server", NULL);
    char pid[24];
    bool ours = info != NULL && info_field(info, "process_id", pid, sizeof(pid)) && atoi(pid) == (int)r->pid;
    free(info);
    return ours;
}

/* tp_redis_start on r->port, once, and make sure the process answering is ours. */
static int start_once(struct tp_redis *r)
{
    if (tp_redis_start(r, false, 1, 0) != 0)
        return -1;
    if (answers_as(r))
        return 0;
    tp_set_error("port %d answered by another process than redis-server %d", r->port, (int)r->pid);
    tp_kill_reap(r->pid);
    r->pid = 0;
    return -1;
}

/* SIGTERM every pid in rs at once (a cluster shuts down faster in parallel), then reap each
 * within one shared bound, SIGKILL after it. */
static void stop_all(struct tp_redis *const *rs, int n)
{
    for (int i = 0; i < n; i++)
        if (rs[i]->pid != 0) {
            kill(rs[i]->pid, SIGCONT);
            kill(rs[i]->pid, SIGTERM);
        }
    double deadline = tp_mono_ms() + STOP_MS;
    for (int i = 0; i < n; i++) {
        if (rs[i]->pid == 0)
            continue;
        int left = (int)(deadline - tp_mono_ms());
        if (tp_wait_pid(rs[i]->pid, left > 0 ? left : 0) == -1)
            tp_kill_reap(rs[i]->pid);
        rs[i]->pid = 0;
    }
}

/* A fresh free port that no node of c already uses (ports and bus ports). */
static int fresh_port(const struct tp_cluster *c, int avoid)
{
    for (int tries = 0; tries < 50; tries++) {
        int p = tp_free_port();
        if (p < 0)
            return -1;
        bool used = p == avoid;
        for (int i = 0; i < c->n; i++)
            used |= c->node[i].r.port == p || c->node[i].bus_port == p;
        if (!used)
            return p;
    }
    tp_set_error("no unused free port found");
    return -1;
}

/* ---------------------------------------------------------------- cluster */

/* Spawn node i on its ports (new_port: fresh ones, retrying a port race; else its old ones,
 * retrying while the old socket lingers) and wait for PING. */
static int node_spawn(struct tp_cluster *c, int i, bool new_port)
{
    struct tp_cluster_node *nd = &c->node[i];
    int attempts = new_port ? 5 : 40;
    for (int attempt = 0; attempt < attempts; attempt++) {
        if (new_port) {
            nd->r.port = nd->bus_port = 0;
            int p = fresh_port(c, 0), b = p > 0 ? fresh_port(c, p) : -1;
            if (p < 0 || b < 0)
                return -1;
            nd->r.port = p;
            nd->bus_port = b;
            char conf[sizeof(nd->r.dir) + 32];
            snprintf(conf, sizeof(conf), "%s/nodes-%d.conf", nd->r.dir, p);
            if (strlen(conf) >= sizeof(nd->nodes_conf)) {
                tp_set_error("path too long: %s", conf);
                return -1;
            }
            memcpy(nd->nodes_conf, conf, strlen(conf) + 1);
            unlink(nd->nodes_conf);
        }
        snprintf(nd->args[0], sizeof(nd->args[0]), "%d", nd->bus_port);
        const char *const args[] = {"--cluster-enabled",
                                    "yes",
                                    "--cluster-config-file",
                                    nd->nodes_conf,
                                    "--cluster-port",
                                    nd->args[0],
                                    "--cluster-node-timeout",
                                    "2000",
                                    "--repl-diskless-sync-delay",
                                    "0",
                                    "--repl-ping-replica-period",
                                    "1",
                                    NULL};
        nd->r.extra_args = args;
        int rc = start_once(&nd->r);
        nd->r.extra_args = NULL; /* args lives on this stack frame only */
        if (rc == 0)
            return 0;
        if (!new_port)
            tp_sleep_ms(50);
    }
    tp_set_error("cluster node %d did not start (last port %d); see %s", i, nd->r.port, nd->r.log);
    return -1;
}

/* `redis-cli --cluster create` over every node, bounded. */
static int cluster_create(struct tp_cluster *c)
{
    char addr[TP_CLUSTER_MAX_NODES][32], replicas[16];
    const char *argv[TP_CLUSTER_MAX_NODES + 8] = {REDIS_CLI_BIN, "--cluster", "create"};
    int n = 3;
    for (int i = 0; i < c->n; i++) {
        snprintf(addr[i], sizeof(addr[i]), "127.0.0.1:%d", c->node[i].r.port);
        argv[n++] = addr[i];
    }
    snprintf(replicas, sizeof(replicas), "%d", c->replicas);
    argv[n++] = "--cluster-replicas";
    argv[n++] = replicas;
    argv[n++] = "--cluster-yes";
    argv[n] = NULL;
    char log[PATH_MAX + 16];
    snprintf(log, sizeof(log), "%s/create.log", c->dir);
    pid_t pid = tp_spawn(argv, log, NULL);
    if (pid < 0)
        return -1;
    int status = tp_wait_pid(pid, CREATE_MS * factor(c->slow));
    if (status == -1) {
        tp_kill_reap(pid);
        tp_set_error("redis-cli --cluster create did not finish; see %s", log);
        return -1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        tp_set_error("redis-cli --cluster create failed (status %d); see %s", status, log);
        return -1;
    }
    return 0;
}

/* Does node i see the whole cluster healthy? Sets the reason when not. */
static bool node_settled(const struct tp_cluster *c, int i)
{
    int port = c->node[i].r.port;
    char v[64];
    bool ok = false;
    char *info = node_text(port, "CLUSTER INFO", NULL);
    if (info == NULL || !info_field(info, "cluster_state", v, sizeof(v)) || strcmp(v, "ok") != 0)
        tp_set_error("node %d: cluster_state not ok", port);
    else if (!info_field(info, "cluster_slots_ok", v, sizeof(v)) || atoi(v) != TP_CLUSTER_SLOTS)
        tp_set_error("node %d: cluster_slots_ok %s", port, v);
    else
        ok = true;
    free(info);
    if (!ok)
        return false;

    /* CLUSTER NODES: <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slots>... */
    char *nodes = node_text(port, "CLUSTER NODES", NULL);
    if (nodes == NULL) {
        tp_set_error("node %d: no CLUSTER NODES", port);
        return false;
    }
    int lines = 0, masters = 0;
    char *save = NULL;
    for (char *line = strtok_r(nodes, "\n", &save); line != NULL && ok; line = strtok_r(NULL, "\n", &save)) {
        char flags[128], link[32];
        if (sscanf(line, "%*s %*s %127s %*s %*s %*s %*s %31s", flags, link) != 2)
            continue;
        lines++;
        masters += strstr(flags, "master") != NULL;
        if (strstr(flags, "fail") != NULL || strstr(flags, "handshake") != NULL ||
            strstr(flags, "noaddr") != NULL || strcmp(link, "connected") != 0) {
            tp_set_error("node %d sees: %s", port, line);
            ok = false;
        }
    }
    free(nodes);
    if (ok && (lines != c->n || masters != c->masters)) {
        tp_set_error("node %d knows %d nodes, %d masters (want %d, %d)", port, lines, masters, c->n,
                     c->masters);
        ok = false;
    }
    if (!ok)
        return false;

    char *repl = node_text(port, "INFO replication", NULL);
    if (repl != NULL && info_field(repl, "role", v, sizeof(v)) && strcmp(v, "slave") == 0 &&
        !(info_field(repl, "master_link_status", v, sizeof(v)) && strcmp(v, "up") == 0)) {
        tp_set_error("replica %d: master link not up", port);
        ok = false;
    } else if (repl == NULL) {
        tp_set_error("node %d: no INFO replication", port);
        ok = false;
    }
    free(repl);
    return ok;
}

/* Does node i's CLUSTER SLOTS list every slot with a master and (if there are replicas) one
 * replica? Redis 7.0 leaves out a replica whose replication offset it has not heard of yet (0
 * until the master sends anything: hence the 1 s replication ping). */
static bool slots_listed(const struct tp_cluster *c, int i, int *owner, int *replica)
{
    int port = c->node[i].r.port;
    int covered = tp_cluster_slots_at(port, owner, replica);
    if (covered != TP_CLUSTER_SLOTS) {
        tp_set_error("node %d: CLUSTER SLOTS covers %d slots", port, covered);
        return false;
    }
    for (int s = 0; c->replicas > 0 && s < TP_CLUSTER_SLOTS; s++)
        if (replica[s] == 0) {
            tp_set_error("node %d: CLUSTER SLOTS lists no replica for slot %d", port, s);
            return false;
        }
    return true;
}

static bool cluster_settled(void *arg)
{
    const struct tp_cluster *c = arg;
    for (int i = 0; i < c->n; i++)
        if (c->node[i].r.pid != 0 && !node_settled(c, i))
            return false;
    /* Listing replicas in CLUSTER SLOTS only matters once every node runs. */
    bool all = true;
    for (int i = 0; i < c->n; i++)
        all &= c->node[i].r.pid != 0;
    int *owner = malloc(2 * sizeof(int) * TP_CLUSTER_SLOTS);
    bool ok = owner != NULL;
    for (int i = 0; ok && all && i < c->n; i++)
        ok = slots_listed(c, i, owner, owner + TP_CLUSTER_SLOTS);
    free(owner);
    return ok;
}

int tp_cluster_wait_settled(struct tp_cluster *c, int timeout_ms)
{
    double deadline = tp_mono_ms() + timeout_ms;
    for (;;) {
        for (int i = 0; i < c->n; i++) {
            int status;
            if (c->node[i].r.pid != 0 && tp_exited(c->node[i].r.pid, &status)) {
                c->node[i].r.pid = 0;
                tp_set_error("cluster node %d exited (status %d); see %s", c->node[i].r.port, status,
                             c->node[i].r.log);
                return -1;
            }
        }
        if (cluster_settled(c))
            return 0;
        if (tp_mono_ms() >= deadline) {
            char why[PATH_MAX + 128];
            snprintf(why, sizeof(why), "%s", tp_error());
            tp_set_error("cluster not settled within %d ms: %s", timeout_ms, why);
            return -1;
        }
        tp_sleep_ms(POLL_MS);
    }
}

int tp_cluster_start(struct tp_cluster *c, const char *parent_dir, int masters, int replicas_per_master)
{
    int slow = c->slow;
    memset(c, 0, sizeof(*c));
    c->slow = slow;
    c->masters = masters;
    c->replicas = replicas_per_master;
    c->n = masters * (1 + replicas_per_master);
    if (masters < 1 || replicas_per_master < 0 || c->n > TP_CLUSTER_MAX_NODES ||
        (masters < 3 && !(masters == 1 && replicas_per_master == 0))) {
        tp_set_error("unsupported cluster: %d masters, %d replicas each", masters, replicas_per_master);
        return -1;
    }
    int len = snprintf(c->dir, sizeof(c->dir), "%s/cluster", parent_dir);
    if (len < 0 || (size_t)len >= sizeof(c->dir) || (mkdir(c->dir, 0700) != 0 && errno != EEXIST)) {
        tp_set_error("mkdir %s/cluster: %s", parent_dir, strerror(errno));
        return -1;
    }
    for (int i = 0; i < c->n; i++) {
        char name[16];
        snprintf(name, sizeof(name), "node-%d", i);
        if (tp_redis_init(&c->node[i].r, c->dir, name) != 0)
            goto fail;
        c->node[i].r.ready_ms = NODE_READY_MS * factor(slow);
    }
    for (int i = 0; i < c->n; i++)
        if (node_spawn(c, i, true) != 0)
            goto fail;
    if (c->n == 1) {
        redisReply *r = node_cmd(c->node[0].r.port, "CLUSTER ADDSLOTSRANGE 0 %d", TP_CLUSTER_SLOTS - 1);
        bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;
        if (r != NULL)
            freeReplyObject(r);
        if (!ok) {
            tp_set_error("CLUSTER ADDSLOTSRANGE on %d failed", c->node[0].r.port);
            goto fail;
        }
    } else if (cluster_create(c) != 0) {
        goto fail;
    }
    if (tp_cluster_wait_settled(c, SETTLE_MS * factor(slow)) == 0)
        return 0;
fail:;
    char why[PATH_MAX + 128];
    snprintf(why, sizeof(why), "%s", tp_error());
    tp_cluster_stop(c);
    tp_set_error("%s", why);
    return -1;
}

void tp_cluster_stop(struct tp_cluster *c)
{
    struct tp_redis *rs[TP_CLUSTER_MAX_NODES];
    for (int i = 0; i < c->n; i++)
        rs[i] = &c->node[i].r;
    stop_all(rs, c->n);
}

int tp_cluster_nodes(const struct tp_cluster *c, char *buf, size_t size)
{
    size_t used = 0;
    if (size > 0)
        buf[0] = '\0';
    for (int i = 0; i < c->n; i++) {
        int n = snprintf(buf + used, size - used, "%s127.0.0.1:%d", i > 0 ? "," : "", c->node[i].r.port);
        if (n < 0 || (size_t)n >= size - used) {
            tp_set_error("node list longer than %zu bytes", size);
            return -1;
        }
        used += (size_t)n;
    }
    return 0;
}

/* The port of a CLUSTER SLOTS node entry [ip, port, id, ...], or 0. */
static int entry_port(const redisReply *e)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || e->element[1]->type != REDIS_REPLY_INTEGER)
        return 0;
    return (int)e->element[1]->integer;
}

int tp_cluster_slots_at(int port, int *owner, int *replicas)
{
    redisReply *r = node_cmd(port, "CLUSTER SLOTS");
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        tp_set_error("CLUSTER SLOTS on %d: %s", port, r != NULL && r->str != NULL ? r->str : "no answer");
        if (r != NULL)
            freeReplyObject(r);
        return -1;
    }
    memset(owner, 0, sizeof(int) * TP_CLUSTER_SLOTS);
    if (replicas != NULL)
        memset(replicas, 0, sizeof(int) * TP_CLUSTER_SLOTS);
    int covered = 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *range = r->element[i];
        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 ||
            range->element[0]->type != REDIS_REPLY_INTEGER || range->element[1]->type != REDIS_REPLY_INTEGER)
            continue;
        long long from = range->element[0]->integer, to = range->element[1]->integer;
        int master = entry_port(range->element[2]);
        int replica = range->elements > 3 ? entry_port(range->element[3]) : 0;
        for (long long s = from; s <= to && s < TP_CLUSTER_SLOTS; s++) {
            if (s < 0)
                continue;
            covered += owner[s] == 0 && master != 0;
            owner[s] = master;
            if (replicas != NULL)
                replicas[s] = replica;
        }
    }
    freeReplyObject(r);
    return covered;
}

int tp_cluster_slot_master(const struct tp_cluster *c, int slot)
{
    if (slot < 0 || slot >= TP_CLUSTER_SLOTS)
        return -1;
    int *owner = malloc(sizeof(int) * TP_CLUSTER_SLOTS);
    int port = -1;
    for (int i = 0; owner != NULL && i < c->n && port < 0; i++)
        if (c->node[i].r.pid != 0 && tp_cluster_slots_at(c->node[i].r.port, owner, NULL) >= 0)
            port = owner[slot] != 0 ? owner[slot] : -1;
    free(owner);
    return port;
}

int tp_cluster_node_index(const struct tp_cluster *c, int port)
{
    for (int i = 0; i < c->n; i++)
        if (c->node[i].r.port == port)
            return i;
    return -1;
}

bool tp_cluster_is_master(int port)
{
    redisReply *r = node_cmd(port, "ROLE");
    bool master = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                  r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0;
    if (r != NULL)
        freeReplyObject(r);
    return master;
}

void tp_cluster_kill(struct tp_cluster *c, int i)
{
    if (i < 0 || i >= c->n || c->node[i].r.pid == 0)
        return;
    tp_kill_reap(c->node[i].r.pid);
    c->node[i].r.pid = 0;
}

int tp_cluster_restart(struct tp_cluster *c, int i)
{
    if (i < 0 || i >= c->n || c->node[i].r.pid != 0) {
        tp_set_error("cluster node %d cannot be restarted", i);
        return -1;
    }
    return node_spawn(c, i, false);
}

/* --------------------------------------------------------------- Sentinel */

/* Start r on a fresh port, retrying a port race; extra_args must outlive the call only. */
static int start_fresh(struct tp_redis *r, const char *const *extra_args,
                       int (*prepare)(struct tp_redis *, void *), void *arg)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        if ((r->port = tp_free_port()) < 0)
            return -1;
        if (prepare != NULL && prepare(r, arg) != 0)
            return -1;
        r->extra_args = extra_args;
        int rc = start_once(r);
        r->extra_args = NULL;
        if (rc == 0)
            return 0;
    }
    tp_set_error("redis-server %s did not start; see %s", r->name, r->log);
    return -1;
}

struct sentinel_conf {
    const char *path;
    const char *name;
    int master_port;
};

/* Write a sentinel's config for its (new) port: what it monitors and how fast it fails over.
 * Written afresh on every attempt: the sentinel rewrites it (its id, what it learnt). */
static int write_sentinel_conf(struct tp_redis *r, void *arg)
{
    (void)r;
    const struct sentinel_conf *sc = arg;
    FILE *f = fopen(sc->path, "w");
    if (f == NULL) {
        tp_set_error("open %s: %s", sc->path, strerror(errno));
        return -1;
    }
    fprintf(f,
            "sentinel monitor %s 127.0.0.1 %d 2\n"
            "sentinel down-after-milliseconds %s 1000\n"
            "sentinel failover-timeout %s 5000\n",
            sc->name, sc->master_port, sc->name, sc->name);
    if (fclose(f) != 0) {
        tp_set_error("write %s: %s", sc->path, strerror(errno));
        return -1;
    }
    return 0;
}

/* The value of field in a flat [name, value, ...] reply, or NULL. */
static const char *flat_field(const redisReply *r, const char *field)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING && strcmp(r->element[i]->str, field) == 0 &&
            r->element[i + 1]->type == REDIS_REPLY_STRING)
            return r->element[i + 1]->str;
    return NULL;
}

/* Does the sentinel on port act (not in TILT), know the master up, its replica linked, both
 * other sentinels? */
static bool sentinel_settled(const struct tp_sentinel_set *s, int port)
{
    char *info = node_text(port, "INFO sentinel", NULL);
    char tilt[8];
    bool acting = info != NULL && info_field(info, "sentinel_tilt", tilt, sizeof(tilt)) && strcmp(tilt, "0") == 0;
    free(info);
    if (!acting) {
        tp_set_error("sentinel %d: in TILT mode", port);
        return false;
    }
    bool ok = false;
    redisReply *m = node_cmd(port, "SENTINEL MASTER %s", s->name);
    const char *flags = flat_field(m, "flags"), *mport = flat_field(m, "port");
    const char *slaves = flat_field(m, "num-slaves"), *others = flat_field(m, "num-other-sentinels");
    if (flags == NULL || strcmp(flags, "master") != 0 || mport == NULL || atoi(mport) != s->master.port)
        tp_set_error("sentinel %d: master %s flags %s", port, mport ? mport : "?", flags ? flags : "?");
    else if (slaves == NULL || atoi(slaves) != 1 || others == NULL || atoi(others) != TP_SENTINELS - 1)
        tp_set_error("sentinel %d: %s replicas, %s other sentinels", port, slaves ? slaves : "?",
                     others ? others : "?");
    else
        ok = true;
    if (m != NULL)
        freeReplyObject(m);
    if (!ok)
        return false;

    redisReply *r = node_cmd(port, "SENTINEL REPLICAS %s", s->name);
    ok = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 1;
    if (ok) {
        const char *rflags = flat_field(r->element[0], "flags"), *rport = flat_field(r->element[0], "port");
        const char *link = flat_field(r->element[0], "master-link-status");
        ok = rflags != NULL && strcmp(rflags, "slave") == 0 && rport != NULL &&
             atoi(rport) == s->replica.port && link != NULL && strcmp(link, "ok") == 0;
    }
    if (!ok)
        tp_set_error("sentinel %d: replica not seen healthy", port);
    if (r != NULL)
        freeReplyObject(r);
    if (!ok)
        return false;

    r = node_cmd(port, "SENTINEL SENTINELS %s", s->name);
    ok = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == TP_SENTINELS - 1;
    for (size_t i = 0; ok && i < r->elements; i++) {
        const char *sflags = flat_field(r->element[i], "flags");
        ok = sflags != NULL && strcmp(sflags, "sentinel") == 0;
    }
    if (!ok)
        tp_set_error("sentinel %d: other sentinels not seen healthy", port);
    if (r != NULL)
        freeReplyObject(r);
    return ok;
}

static bool set_settled(void *arg)
{
    const struct tp_sentinel_set *s = arg;
    for (int k = 0; k < TP_SENTINELS; k++)
        if (!sentinel_settled(s, s->sentinel[k].port))
            return false;
    return true;
}

static bool replica_linked(void *arg)
{
    const struct tp_sentinel_set *s = arg;
    char *info = node_text(s->replica.port, "INFO replication", NULL);
    char v[16];
    bool up = info != NULL && info_field(info, "master_link_status", v, sizeof(v)) && strcmp(v, "up") == 0;
    free(info);
    if (!up)
        tp_set_error("replica %d: master link not up", s->replica.port);
    return up;
}

int tp_sentinel_start(struct tp_sentinel_set *s, const char *parent_dir, const char *name)
{
    int slow = factor(s->slow);
    memset(s, 0, sizeof(*s));
    s->slow = slow;
    snprintf(s->name, sizeof(s->name), "%s", name);
    int len = snprintf(s->dir, sizeof(s->dir), "%s/sentinel", parent_dir);
    if (len < 0 || (size_t)len >= sizeof(s->dir) || (mkdir(s->dir, 0700) != 0 && errno != EEXIST)) {
        tp_set_error("mkdir %s/sentinel: %s", parent_dir, strerror(errno));
        return -1;
    }
    static const char *const data_args[] = {"--repl-diskless-sync-delay", "0", NULL};
    if (tp_redis_init(&s->master, s->dir, "master") != 0 ||
        tp_redis_init(&s->replica, s->dir, "replica") != 0)
        return -1;
    s->master.ready_ms = s->replica.ready_ms = NODE_READY_MS * slow;
    if (start_fresh(&s->master, data_args, NULL, NULL) != 0)
        goto fail;
    snprintf(s->replicaof, sizeof(s->replicaof), "%d", s->master.port);
    const char *const replica_args[] = {
        "--repl-diskless-sync-delay", "0", "--replicaof", "127.0.0.1", s->replicaof, NULL};
    if (start_fresh(&s->replica, replica_args, NULL, NULL) != 0)
        goto fail;
    /* Linked before any sentinel starts: a sentinel's first INFO of the master then lists the
     * replica (the next comes 10 s later). */
    if (tp_wait_ready(&s->replica.pid, replica_linked, s, SETTLE_MS * slow, POLL_MS) != 0)
        goto fail;

    static const char *const sentinel_args[] = {"--sentinel", NULL};
    for (int k = 0; k < TP_SENTINELS; k++) {
        char sname[16];
        snprintf(sname, sizeof(sname), "sentinel-%d", k);
        if (tp_redis_init(&s->sentinel[k], s->dir, sname) != 0)
            goto fail;
        char conf[sizeof(s->sentinel[k].dir) + 16];
        snprintf(conf, sizeof(conf), "%s/sentinel.conf", s->sentinel[k].dir);
        if (strlen(conf) >= sizeof(s->conf[k])) {
            tp_set_error("path too long: %s", conf);
            goto fail;
        }
        memcpy(s->conf[k], conf, strlen(conf) + 1);
        s->sentinel[k].conf = s->conf[k];
        s->sentinel[k].ready_ms = NODE_READY_MS * slow;
        struct sentinel_conf sc = {s->conf[k], s->name, s->master.port};
        if (start_fresh(&s->sentinel[k], sentinel_args, write_sentinel_conf, &sc) != 0)
            goto fail;
    }
    /* A sentinel whose timer runs late by more than tilt-trigger (2 s: a starved process on a busy
     * test machine, often right at its start) enters TILT and does nothing for tilt-period (30 s),
     * failovers included. Tests want a sentinel that acts: a generous trigger, a short TILT. */
    for (int k = 0; k < TP_SENTINELS; k++) {
        redisReply *r = node_cmd(s->sentinel[k].port, "SENTINEL DEBUG tilt-trigger 30000 tilt-period 100");
        if (r != NULL)
            freeReplyObject(r);
    }
    if (tp_wait_ready(&s->sentinel[0].pid, set_settled, s, SETTLE_MS * slow, POLL_MS) == 0)
        return 0;
    {
        char why[PATH_MAX + 128];
        snprintf(why, sizeof(why), "%s", tp_error());
        tp_set_error("sentinel set not settled within %d ms: %s", SETTLE_MS * slow, why);
    }
fail:;
    char why[PATH_MAX + 128];
    snprintf(why, sizeof(why), "%s", tp_error());
    tp_sentinel_stop(s);
    tp_set_error("%s", why);
    return -1;
}

void tp_sentinel_stop(struct tp_sentinel_set *s)
{
    struct tp_redis *rs[] = {&s->sentinel[0], &s->sentinel[1], &s->sentinel[2], &s->replica, &s->master};
    stop_all(rs, 5);
}

int tp_sentinel_nodes(const struct tp_sentinel_set *s, char *buf, size_t size)
{
    int n = snprintf(buf, size, "127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", s->sentinel[0].port,
                     s->sentinel[1].port, s->sentinel[2].port);
    if (n < 0 || (size_t)n >= size) {
        tp_set_error("sentinel list longer than %zu bytes", size);
        return -1;
    }
    return 0;
}

int tp_sentinel_master_at(int sentinel_port, const char *name, int *port)
{
    redisReply *r = node_cmd(sentinel_port, "SENTINEL get-master-addr-by-name %s", name);
    bool ok = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
              r->element[1]->type == REDIS_REPLY_STRING;
    if (ok)
        *port = atoi(r->element[1]->str);
    else
        tp_set_error("sentinel %d: no master address for %s", sentinel_port, name);
    if (r != NULL)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

int tp_sentinel_master(const struct tp_sentinel_set *s, int *port)
{
    for (int k = 0; k < TP_SENTINELS; k++)
        if (s->sentinel[k].pid != 0 && tp_sentinel_master_at(s->sentinel[k].port, s->name, port) == 0)
            return 0;
    return -1;
}
