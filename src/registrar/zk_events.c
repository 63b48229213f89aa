/* The ZooKeeper client library's threads (see zk_events.h): atomics and a wake-up only. */
#include "registrar/zk_events.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/thread_role.h"

void registrar_wake(struct registrar *r)
{
    uint64_t one = 1;
    /* The eventfd is non-blocking: a full counter already means "wake up". */
    ssize_t n = write(r->wake_fd, &one, sizeof(one));
    (void)n;
}

void zk_session_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)path;
    struct registrar *r = ctx;
    if (type != ZOO_SESSION_EVENT)
        return;
    /* The id first: the registrar thread reads it once it sees the connected state. */
    if (state == ZOO_CONNECTED_STATE)
        atomic_store(&r->session_id, zoo_client_id(zh)->client_id);
    atomic_store(&r->session_state, state);
    registrar_wake(r);
}

void zk_node_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh;
    (void)state;
    (void)path;
    struct reg_node *n = ctx;
    /* Every watcher also hears the session's events: the session watcher handles those. */
    if (type == ZOO_SESSION_EVENT)
        return;
    atomic_store(&n->watch_fired, true);
    registrar_wake(n->r);
}

void zk_created(int rc, const char *value, const void *data)
{
    (void)value;
    struct reg_node *n = (struct reg_node *)data;
    atomic_store(&n->result, rc);
    registrar_wake(n->r);
}

void zk_exists(int rc, const struct Stat *stat, const void *data)
{
    struct reg_node *n = (struct reg_node *)data;
    atomic_store(&n->owner, rc == ZOK && stat != NULL ? stat->ephemeralOwner : 0);
    atomic_store(&n->result, rc); /* after owner: the registrar thread reads owner once it sees rc */
    registrar_wake(n->r);
}

void zk_log(const char *message)
{
    if (!thread_role_is(ROLE_REGISTRAR, NULL))
        log_set_thread("zookeeper"); /* one of the library's own threads */
    /* Any of the library's threads: a lock-free one-line-a-second limit. */
    static _Atomic int64_t last_ms = INT64_MIN / 2;
    static atomic_uint suppressed;
    int64_t now = (int64_t)(clock_mono_ns() / 1000000u);
    int64_t last = atomic_load(&last_ms);
    if (now - last < 1000 || !atomic_compare_exchange_strong(&last_ms, &last, now)) {
        atomic_fetch_add(&suppressed, 1);
        return;
    }
    /* Drop the library's own time and pid prefix: "...:ZOO_ERROR@function@line: text". */
    const char *level = strstr(message, "ZOO_");
    if (level != NULL)
        message = level;
    size_t len = strlen(message);
    while (len > 0 && (message[len - 1] == '\n' || message[len - 1] == '\r'))
        len--;
    unsigned n = atomic_exchange(&suppressed, 0);
    if (n > 0)
        log_warn("zookeeper client: %.*s (%u similar suppressed)", (int)len, message, n);
    else
        log_warn("zookeeper client: %.*s", (int)len, message);
}
