/* Registrar thread only (node.h). */
#include "registrar/node.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <zookeeper/zookeeper.h>

#include "core/codec.h"
#include "core/log.h"
#include "core/thread_role.h"
#include "registrar/zk_events.h"

#define RETRY_MS 500 /* after a failed request: ZooKeeper is reconnecting, or refused it */

void node_init(struct registrar *r, int i)
{
    struct reg_node *n = &r->node[i];
    n->r = r;
    n->ephemeral = i > 0;
    if (i == 0)
        snprintf(n->path, sizeof(n->path), "/%s", CODEC_SERVICE);
    else
        snprintf(n->path, sizeof(n->path), "/%s/%s", CODEC_SERVICE, request_method_name(i - 1));
    node_reset(n);
}

void node_reset(struct reg_node *n)
{
    n->state = REG_IDLE;
    n->retry_at_ms = 0;
    atomic_store(&n->result, REG_NO_RESULT);
    atomic_store(&n->owner, 0);
    atomic_store(&n->watch_fired, false);
}

/* Try again later. A lost connection is routine while ZooKeeper is away (the session's state
 * is logged once); anything else is worth a line. */
static void failed(struct registrar *r, struct reg_node *n, const char *op, int rc, int64_t now_ms)
{
    n->state = REG_IDLE;
    n->retry_at_ms = now_ms + RETRY_MS;
    if (rc != ZCONNECTIONLOSS && rc != ZOPERATIONTIMEOUT && rc != ZCLOSING && rc != ZSESSIONEXPIRED &&
        rc != ZINVALIDSTATE)
        log_limited(&r->op_log, LOG_WARN, "zookeeper: %s failed path=%s error=\"%s\"", op, n->path,
                    zerror(rc));
}

static void send_create(struct registrar *r, struct reg_node *n, int64_t now_ms)
{
    /* As MPIM's own servers: the service node holds nothing, each method node "ip:port". */
    const char *data = n->ephemeral ? r->advertise : NULL;
    int len = n->ephemeral ? (int)strlen(r->advertise) : -1;
    int rc = zoo_acreate(r->zh, n->path, data, len, &ZOO_OPEN_ACL_UNSAFE,
                         n->ephemeral ? ZOO_EPHEMERAL : ZOO_PERSISTENT, zk_created, n);
    if (rc != ZOK) {
        failed(r, n, "create", rc, now_ms);
        return;
    }
    n->state = REG_CREATING;
}

/* Whose node is it? The answer also sets the exists watch, which fires once it is deleted. */
static void send_check(struct registrar *r, struct reg_node *n, int64_t now_ms)
{
    /* What fired before this question is in its answer. */
    atomic_store(&n->watch_fired, false);
    int rc = zoo_awexists(r->zh, n->path, zk_node_watcher, n, zk_exists, n);
    if (rc != ZOK) {
        failed(r, n, "exists", rc, now_ms);
        return;
    }
    n->state = REG_CHECKING;
}

static void created(struct registrar *r, struct reg_node *n, int rc, int64_t now_ms)
{
    if (rc == ZOK || rc == ZNODEEXISTS) {
        if (n->ephemeral)
            send_check(r, n, now_ms); /* ours, or another instance's: the owner says */
        else
            n->state = REG_HELD; /* the service node only has to exist */
    } else if (rc == ZNONODE && n->ephemeral) {
        /* /PresenceService is gone (deleted by hand, or a new ensemble): make it again first. */
        r->node[0].state = REG_IDLE;
        n->state = REG_IDLE;
    } else {
        failed(r, n, "create", rc, now_ms);
    }
}

static void checked(struct registrar *r, struct reg_node *n, int rc, int64_t now_ms)
{
    if (rc == ZNONODE) {
        n->state = REG_IDLE; /* gone in the meantime: create it now */
        return;
    }
    if (rc != ZOK) {
        failed(r, n, "exists", rc, now_ms);
        return;
    }
    int64_t owner = atomic_load(&n->owner);
    int64_t session = atomic_load(&r->session_id);
    if (owner == session) {
        n->state = REG_HELD;
        log_debug("zookeeper: holding path=%s", n->path);
    } else {
        log_info("zookeeper: held by another instance, taking over when it goes path=%s owner=0x%" PRIx64,
                 n->path, (uint64_t)owner);
        n->state = REG_OTHER;
    }
}

void node_step(struct registrar *r, struct reg_node *n, int64_t now_ms, bool serving)
{
    ASSERT_THREAD_OF(ROLE_REGISTRAR, r);
    int rc = atomic_exchange(&n->result, REG_NO_RESULT);
    if (rc != REG_NO_RESULT) {
        if (n->state == REG_CREATING)
            created(r, n, rc, now_ms);
        else if (n->state == REG_CHECKING)
            checked(r, n, rc, now_ms);
    }
    switch (n->state) {
    case REG_IDLE:
        if (serving && now_ms >= n->retry_at_ms && (!n->ephemeral || r->node[0].state == REG_HELD))
            send_create(r, n, now_ms);
        break;
    case REG_HELD:
    case REG_OTHER:
        /* Deleted (the holder's session ended), created or changed: look again. */
        if (n->ephemeral && atomic_exchange(&n->watch_fired, false))
            send_create(r, n, now_ms);
        break;
    case REG_CREATING:
    case REG_CHECKING:
        break; /* the answer is on its way */
    }
}
