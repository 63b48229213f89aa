/* The registrar thread's loop and life cycle; registrar.h says which thread runs what. */
#include "registrar/registrar.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <zookeeper/zookeeper.h>

#include "core/clock.h"
#include "core/thread_role.h"
#include "registrar/node.h"
#include "registrar/zk_events.h"
#include "shards/shard.h"

#define TICK_MS 100    /* longest nap: the listener and the shards' links are polled this often */
#define REOPEN_MS 1000 /* after zookeeper_init failed (a host name that does not resolve, ...) */
/* A handle that cannot get its session back for this long is replaced by a new one that asks
 * for the same session. The old handle may never get it back: a ZooKeeper that lost its data
 * (rebuilt ensemble) refuses a client that has seen newer transactions than its own, forever;
 * a new handle has seen none, and learns that the session expired. */
#define STALE_MS 3000

static int64_t mono_ms(void)
{
    return (int64_t)(clock_mono_ns() / 1000000u);
}

/* --- registrar thread --- */

/* Serving: the port listens and every shard's cache and queue links are up (metrics_health's
 * test). Only then may a client be sent here. */
static bool check_serving(const struct registrar *r)
{
    int on = 0;
    socklen_t len = sizeof(on);
    if (getsockopt(r->listen_fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) < 0 || !on)
        return false;
    for (int s = 0; s < r->nshards; s++) {
        struct shard_stats st;
        shard_stats_read(&r->shards[s], &st);
        if (st.link[SHARD_LINK_CACHE].all_up == 0 || st.link[SHARD_LINK_QUEUE].all_up == 0)
            return false;
    }
    return true;
}

static void open_session(struct registrar *r, int64_t now)
{
    const struct zookeeper_conf *z = &r->conf->zookeeper;
    clientid_t resume = {.client_id = r->resume_id};
    memcpy(resume.passwd, r->resume_passwd, sizeof(resume.passwd));
    /* Non-blocking: the client library connects (and reconnects) on its own threads. */
    r->zh = zookeeper_init2(r->hosts, zk_session_watcher, z->session_timeout_ms,
                            r->resume_id ? &resume : NULL, r, ZOO_NO_LOG_CLIENTENV, zk_log);
    if (r->zh == NULL) {
        log_limited(&r->op_log, LOG_WARN, "zookeeper: cannot start a session hosts=%s error=\"%s\"", r->hosts,
                    strerror(errno));
        r->reopen_at_ms = now + REOPEN_MS;
        return;
    }
    r->connected_at_ms = now;
    log_write(r->stale ? LOG_DEBUG : LOG_INFO, "zookeeper: connecting hosts=%s session_timeout=%d%s",
              r->hosts, z->session_timeout_ms, r->resume_id ? " (resuming the session)" : "");
}

/* End the session: ZooKeeper deletes its ephemeral nodes once it has the close request. The
 * library calls back what was in flight (ZCLOSING) before zookeeper_close returns, and nothing
 * after: the nodes can be reset. */
static void close_session(struct registrar *r)
{
    zookeeper_close(r->zh);
    r->zh = NULL;
    for (int i = 0; i < REG_NODES; i++)
        node_reset(&r->node[i]);
    atomic_store(&r->session_state, 0);
    atomic_store(&r->session_id, 0);
    r->seen_state = 0;
    counter_set(&r->registered, 0);
}

static void log_session(struct registrar *r, int state)
{
    if (state == r->seen_state)
        return;
    if (state == ZOO_CONNECTED_STATE)
        log_info("zookeeper: connected session=0x%" PRIx64 " timeout=%d",
                 (uint64_t)atomic_load(&r->session_id), zoo_recv_timeout(r->zh));
    else if (r->seen_state == ZOO_CONNECTED_STATE)
        log_warn("zookeeper: connection lost, reconnecting; the nodes stay while the session lives");
    r->seen_state = state;
}

static void step(struct registrar *r)
{
    int64_t now = mono_ms();
    int state = atomic_load(&r->session_state);
    if (r->zh != NULL && (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE)) {
        log_warn("zookeeper: session %s, starting a new one",
                 state == ZOO_EXPIRED_SESSION_STATE ? "expired" : "refused (auth failed)");
        close_session(r);
        r->resume_id = 0;
        r->reopen_at_ms = state == ZOO_EXPIRED_SESSION_STATE ? now : now + REOPEN_MS;
    } else if (r->zh != NULL && state != ZOO_CONNECTED_STATE && now - r->connected_at_ms >= STALE_MS) {
        const clientid_t *id = zoo_client_id(r->zh); /* written only while connecting, long ago */
        r->resume_id = id->client_id;
        memcpy(r->resume_passwd, id->passwd, sizeof(r->resume_passwd));
        /* Every STALE_MS while ZooKeeper is away: say it once. */
        log_write(r->stale ? LOG_DEBUG : LOG_WARN,
                  "zookeeper: no session for %d ms, trying again with a new handle", STALE_MS);
        r->stale = true;
        close_session(r);
        r->reopen_at_ms = now;
    }
    if (r->zh == NULL) {
        if (now >= r->reopen_at_ms)
            open_session(r, now);
        return;
    }
    log_session(r, state);
    if (state == ZOO_CONNECTED_STATE) {
        r->connected_at_ms = now;
        r->stale = false;
    }
    bool serving = check_serving(r);
    if (serving != r->serving) {
        log_info(serving ? "zookeeper: serving (port listening, every shard linked): registering"
                         : "zookeeper: not serving (a shard's Redis link is down): registering nothing new");
        r->serving = serving;
    }
    if (state != ZOO_CONNECTED_STATE) {
        counter_set(&r->registered, 0);
        return;
    }
    bool all = true;
    for (int i = 0; i < REG_NODES; i++) {
        node_step(r, &r->node[i], now, serving);
        all = all && r->node[i].state == REG_HELD;
    }
    if (all && counter_get(&r->registered) == 0)
        log_info("zookeeper: registered nodes=%s/* addr=%s", r->node[0].path, r->advertise);
    counter_set(&r->registered, all ? 1 : 0);
}

static void *registrar_main(void *arg)
{
    struct registrar *r = arg;
    thread_role_set(ROLE_REGISTRAR, r);
    log_set_thread("registrar");
    bool stopped = false;
    while (!atomic_load(&r->quit)) {
        if (!stopped && atomic_load(&r->stop)) {
            bool connected = r->zh != NULL && atomic_load(&r->session_state) == ZOO_CONNECTED_STATE;
            if (r->zh != NULL)
                close_session(r);
            log_info(connected
                         ? "zookeeper: deregistered: session closed, its nodes deleted"
                         : "zookeeper: deregistering while not connected: the nodes lapse with the session");
            stopped = true;
            uint64_t one = 1;
            ssize_t n = write(r->done_fd, &one, sizeof(one));
            (void)n;
        }
        if (!stopped)
            step(r);
        struct pollfd p = {.fd = r->wake_fd, .events = POLLIN};
        if (poll(&p, 1, TICK_MS) > 0) {
            uint64_t v;
            ssize_t n = read(r->wake_fd, &v, sizeof(v));
            (void)n;
        }
    }
    if (r->zh != NULL)
        close_session(r);
    return NULL;
}

/* --- main thread --- */

/* "a:1, b:2" as the client library wants it: "a:1,b:2" (config_load checked the list). */
static int connect_string(const char *text, char *out, size_t len)
{
    struct cluster_addr node[NODE_LIST_MAX];
    int n;
    char err[150];
    if (node_list_parse(text, node, NODE_LIST_MAX, &n, err, sizeof(err)) < 0)
        return -1;
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        bool v6 = strchr(node[i].host, ':') != NULL;
        int k = snprintf(out + used, len - used, "%s%s%s%s:%u", i ? "," : "", v6 ? "[" : "", node[i].host,
                         v6 ? "]" : "", (unsigned)node[i].port);
        if (k < 0 || (size_t)k >= len - used)
            return -1;
        used += (size_t)k;
    }
    return 0;
}

int registrar_start(struct registrar *r, const struct presence_conf *conf, const struct shard *shards,
                    int nshards, int listen_fd)
{
    memset(r, 0, sizeof(*r));
    r->wake_fd = r->done_fd = -1;
    if (conf->zookeeper.hosts[0] == '\0')
        return 0;
    r->conf = conf;
    r->shards = shards;
    r->nshards = nshards;
    r->listen_fd = listen_fd;
    config_zookeeper_advertise(conf, r->advertise, sizeof(r->advertise));
    if (connect_string(conf->zookeeper.hosts, r->hosts, sizeof(r->hosts)) < 0) {
        log_error("start-up failed reason=config [zookeeper] hosts=%s", conf->zookeeper.hosts);
        return -1;
    }
    /* The client library's own lines: errors only (it reports every reconnect at INFO). */
    zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
    for (int i = 0; i < REG_NODES; i++)
        node_init(r, i);
    r->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    r->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->wake_fd < 0 || r->done_fd < 0) {
        log_error("start-up failed reason=eventfd thread=registrar error=\"%s\"", strerror(errno));
        goto fail;
    }
    /* Signals stay with the acceptor; the ZooKeeper library's threads inherit this mask too. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&r->thread, NULL, registrar_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        log_error("start-up failed reason=thread thread=registrar");
        goto fail;
    }
    r->started = true;
    log_info("zookeeper: will register nodes=%s/<Method> addr=%s once serving", r->node[0].path,
             r->advertise);
    return 0;
fail:
    if (r->wake_fd >= 0)
        close(r->wake_fd);
    if (r->done_fd >= 0)
        close(r->done_fd);
    r->wake_fd = r->done_fd = -1;
    return -1;
}

void registrar_stop(struct registrar *r)
{
    if (!r->started)
        return;
    atomic_store(&r->quit, true);
    registrar_wake(r);
    pthread_join(r->thread, NULL);
    close(r->wake_fd);
    close(r->done_fd);
    r->wake_fd = r->done_fd = -1;
    r->started = false;
}

/* --- acceptor thread --- */

void registrar_deregister(void *arg)
{
    struct registrar *r = arg;
    if (!r->started)
        return;
    atomic_store(&r->stop, true);
    registrar_wake(r);
    int64_t deadline = mono_ms() + REGISTRAR_DEREGISTER_MS;
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0) {
            log_warn("zookeeper: session not closed after %d ms, stopping anyway", REGISTRAR_DEREGISTER_MS);
            return;
        }
        struct pollfd p = {.fd = r->done_fd, .events = POLLIN};
        int rc = poll(&p, 1, (int)left);
        if (rc > 0 || (rc < 0 && errno != EINTR))
            return;
    }
}

/* --- any thread --- */

uint64_t registrar_registered(const struct registrar *r)
{
    return r != NULL ? counter_get(&r->registered) : 0;
}
