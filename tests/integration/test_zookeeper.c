/* [zookeeper] (contract §9): the server registers itself where MPIM's RPC clients look, in a real
 * ZooKeeper (tests/common/zk.h) checked with the real C client: the persistent /PresenceService
 * and one ephemeral node per method holding ip:port, made only once the server serves; a second
 * instance takes the nodes over when the first's session ends (SIGKILL) or it stops (SIGTERM);
 * the server serves on while ZooKeeper is down or away, and registers again when it is back or
 * after a session expiry; SIGTERM removes the nodes before the server stops serving. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>

#include <zookeeper/zookeeper.h>

#include "harness.h"
#include "zk.h"

static struct tp_zk ZK;

/* Redis and a ZooKeeper directory; ZooKeeper itself starts in the test (zk_up), so that a test
 * can start the server first. */
static void zk_suite_init(void)
{
    fx_init_redis();
    cr_assert_eq(tp_zk_init(&ZK, it_dir(), "zookeeper"), 0, "%s", tp_error());
    ZK.port = tp_zk_pick_port();
    cr_assert_gt(ZK.port, 0, "%s", tp_error());
    it_config_set(&FX.cfg, "zookeeper", "hosts", "127.0.0.1:%d", ZK.port);
    /* Short, so that takeover after a crash is quick; well above ZooKeeper's 400 ms minimum. */
    it_config_set(&FX.cfg, "zookeeper", "session_timeout", "%d", 2000 * IT_SLOW);
    /* The test's own client logs here, not into the runner's output. */
    FILE *log = fopen(it_path("zk-client.log"), "a");
    if (log != NULL)
        zoo_set_log_stream(log);
}

static void zk_suite_fini(void)
{
    tp_zk_kill(&ZK);
    fx_fini();
}

TestSuite(zookeeper, .init = zk_suite_init, .fini = zk_suite_fini, .timeout = IT_TIMEOUT);

#define SESSION_MS (2000 * IT_SLOW)
#define REGISTER_MS (10000 * IT_SLOW) /* contract: within 10 s of ZooKeeper being reachable */

/* Start (or restart, on the same port and data) ZooKeeper; asserts. */
static void zk_up(void)
{
    if (tp_zk_start(&ZK, false, 2) != 0) {
        tp_print_tail(ZK.log, 30);
        cr_assert_fail("%s", tp_error());
    }
}

/* ------------------------------------------------------------ the test's client */

static zhandle_t *zk_client(void)
{
    char hosts[32];
    snprintf(hosts, sizeof(hosts), "127.0.0.1:%d", ZK.port);
    zhandle_t *zh = zookeeper_init(hosts, NULL, 10000, NULL, NULL, ZOO_NO_LOG_CLIENTENV);
    cr_assert_not_null(zh, "zookeeper_init: %s", strerror(errno));
    double deadline = it_mono_ms() + 10000.0 * IT_SLOW;
    while (zoo_state(zh) != ZOO_CONNECTED_STATE) {
        cr_assert_lt(it_mono_ms(), deadline, "the test's client did not connect to ZooKeeper");
        it_sleep_ms(10);
    }
    return zh;
}

static void method_path(char *out, size_t len, int m)
{
    snprintf(out, len, "/%s/%s", IT_SERVICE, request_method_name(m));
}

/* The node's data and stat: ZOK, ZNONODE, ... */
static int node_get(zhandle_t *zh, const char *path, char *data, size_t cap, struct Stat *st)
{
    int len = (int)cap - 1;
    int rc = zoo_get(zh, path, 0, data, &len, st);
    data[rc == ZOK && len > 0 ? len : 0] = '\0';
    return rc;
}

/* Wait until every method node holds addr and belongs to one session, not `not_owner`; returns
 * that session. Asserts within timeout_ms. */
static int64_t wait_nodes(zhandle_t *zh, const char *addr, int64_t not_owner, int timeout_ms)
{
    double deadline = it_mono_ms() + timeout_ms;
    for (;;) {
        int64_t owner = -1;
        int m;
        char path[64], data[128] = "";
        struct Stat st;
        for (m = 0; m < PR_METHOD_COUNT; m++) {
            method_path(path, sizeof(path), m);
            int rc = node_get(zh, path, data, sizeof(data), &st);
            if (rc != ZOK || strcmp(data, addr) != 0 || st.ephemeralOwner == 0 ||
                st.ephemeralOwner == not_owner || (owner != -1 && st.ephemeralOwner != owner))
                break;
            owner = st.ephemeralOwner;
        }
        if (m == PR_METHOD_COUNT)
            return owner;
        cr_assert_lt(it_mono_ms(), deadline,
                     "%s does not hold '%s' from one new session after %d ms (data '%s')", path, addr,
                     timeout_ms, data);
        it_sleep_ms(20);
    }
}

static void expect_no_method_nodes(zhandle_t *zh)
{
    for (int m = 0; m < PR_METHOD_COUNT; m++) {
        char path[64];
        method_path(path, sizeof(path), m);
        struct Stat st;
        cr_assert_eq(zoo_exists(zh, path, 0, &st), ZNONODE, "%s exists", path);
    }
}

static void self_addr(const struct it_server *s, char *out, size_t len)
{
    snprintf(out, len, "127.0.0.1:%d", s->port);
}

/* A Bind and a Query on c, both OK: the server serves. */
static void expect_serving(struct pc_client *c, int64_t uid)
{
    char gw[32];
    snprintf(gw, sizeof(gw), "gw-%lld:1", (long long)uid);
    Mpim__BindRouteResp *b = it_bind(c, uid, gw);
    cr_assert_eq(b->result->code, MPIM__CODE__OK, "Bind: %s '%s'", pc_code_name(b->result->code),
                 b->result->msg);
    it_free(b);
    Mpim__QueryRouteResp *q = it_query(c, uid);
    cr_assert_eq(q->result->code, MPIM__CODE__OK, "Query: %s '%s'", pc_code_name(q->result->code),
                 q->result->msg);
    cr_assert(it_bytes_eq(q->gateway_addr, gw));
    it_free(q);
}

/* A second server on the same Redis and ZooKeeper, its own port. */
static void start_second(struct it_server *s)
{
    struct it_config cfg = FX.cfg;
    it_config_set(&cfg, "presence_service", "port", "0");
    it_server_start(s, &cfg, NULL);
}

/* ------------------------------------------------------------------ tests */

/* Once serving: /PresenceService (persistent, empty) and /PresenceService/<Method> for every
 * method the codec accepts (ephemeral, "ip:port"): what MPIM's RPC client reads, and dialling it
 * reaches this server. */
IT(zookeeper, registers_every_method_once_serving)
{
    zk_up();
    fx_start_server();
    it_wait_metric(&FX.srv, "impresence_zookeeper_registered", 1, REGISTER_MS);
    zhandle_t *zh = zk_client();
    char addr[32];
    self_addr(&FX.srv, addr, sizeof(addr));
    int64_t owner = wait_nodes(zh, addr, 0, REGISTER_MS);
    cr_assert_neq(owner, 0);

    char data[128];
    struct Stat st;
    cr_assert_eq(node_get(zh, "/" IT_SERVICE, data, sizeof(data), &st), ZOK);
    cr_assert_eq(st.ephemeralOwner, 0, "/%s must be persistent", IT_SERVICE);
    cr_assert_eq(st.dataLength, 0, "/%s holds nothing", IT_SERVICE);
    /* MPIM's five, by name: its clients call exactly these. */
    static const char *const mpim[] = {"BindRoute", "QueryRoute", "Deliver", "UnbindRoute", "Heartbeat"};
    for (size_t i = 0; i < sizeof(mpim) / sizeof(mpim[0]); i++) {
        char path[64];
        snprintf(path, sizeof(path), "/%s/%s", IT_SERVICE, mpim[i]);
        cr_assert_eq(node_get(zh, path, data, sizeof(data), &st), ZOK, "%s", path);
        cr_assert_str_eq(data, addr, "%s", path);
        /* Dial what ZooKeeper says, as MPIM's client does. */
        int port = 0;
        cr_assert_eq(sscanf(data, "127.0.0.1:%d", &port), 1, "%s holds '%s'", path, data);
        struct pc_client *c = it_connect_port(port);
        expect_serving(c, 10 + (int64_t)i);
        pc_close(c);
    }
    zookeeper_close(zh);
}

/* advertise is what the nodes hold, whatever the listen address (0.0.0.0 needs it). */
IT(zookeeper, advertise_is_written)
{
    zk_up();
    it_config_set(&FX.cfg, "presence_service", "host", "0.0.0.0");
    it_config_set(&FX.cfg, "zookeeper", "advertise", "10.11.12.13:7000");
    fx_start_server();
    zhandle_t *zh = zk_client();
    wait_nodes(zh, "10.11.12.13:7000", 0, REGISTER_MS);
    zookeeper_close(zh);
}

/* Nothing is registered while the shards cannot reach Redis; registration follows the links. */
IT(zookeeper, registers_only_once_shards_are_linked)
{
    zk_up();
    it_redis_stop(&FX.cache);
    fx_start_server();
    char *log = it_wait_file_holds(FX.srv.log, "zookeeper: connected", REGISTER_MS);
    free(log);
    char *body = NULL;
    int status = it_http_wait_status(it_metrics_port(&FX.srv), "/healthz", 503, 5000 * IT_SLOW, &body);
    cr_assert_eq(status, 503, "/healthz with Redis down: %d %s", status, body);
    free(body);
    zhandle_t *zh = zk_client();
    expect_no_method_nodes(zh);
    cr_assert_eq(it_metric_now(&FX.srv, "impresence_zookeeper_registered"), 0);
    it_redis_restart(&FX.cache);
    char addr[32];
    self_addr(&FX.srv, addr, sizeof(addr));
    wait_nodes(zh, addr, 0, REGISTER_MS);
    zookeeper_close(zh);
}

/* ZooKeeper unreachable at start: the server serves anyway, and registers once it is there. */
IT(zookeeper, serves_without_zookeeper_and_registers_when_it_comes)
{
    fx_start_server_linked();
    struct pc_client *c = it_connect();
    expect_serving(c, 1);
    cr_assert_eq(it_metric_now(&FX.srv, "impresence_zookeeper_registered"), 0);
    zk_up();
    double up = it_mono_ms();
    zhandle_t *zh = zk_client();
    char addr[32];
    self_addr(&FX.srv, addr, sizeof(addr));
    wait_nodes(zh, addr, 0, REGISTER_MS);
    cr_log_info("registered %.0f ms after ZooKeeper served", it_mono_ms() - up);
    expect_serving(c, 2);
    pc_close(c);
    zookeeper_close(zh);
}

/* Two instances: the first holds the nodes, the second waits (NODEEXISTS is normal) and takes
 * over within the session timeout + 1 s of the first's crash; a third takes over at once when
 * the second stops with SIGTERM. */
IT(zookeeper, second_instance_takes_over)
{
    zk_up();
    fx_start_server_linked();
    zhandle_t *zh = zk_client();
    char a_addr[32], b_addr[32];
    self_addr(&FX.srv, a_addr, sizeof(a_addr));
    int64_t a_owner = wait_nodes(zh, a_addr, 0, REGISTER_MS);

    struct it_server b;
    start_second(&b);
    self_addr(&b, b_addr, sizeof(b_addr));
    char *log = it_wait_file_holds(b.log, "held by another instance", REGISTER_MS);
    free(log);
    cr_assert_eq(wait_nodes(zh, a_addr, 0, 1000), a_owner, "the second instance must not steal the nodes");

    /* Crash: the nodes lapse with A's session, then B creates its own. */
    double t0 = it_mono_ms();
    it_server_stop(&FX.srv, SIGKILL, 5000);
    int64_t b_owner = wait_nodes(zh, b_addr, a_owner, SESSION_MS + 5000 * IT_SLOW);
    double ms = it_mono_ms() - t0;
    cr_log_info("took over %.0f ms after the holder was killed (session timeout %d ms)", ms, SESSION_MS);
    /* The contract's bound (session timeout + 1 s) counts from the session's end; ZooKeeper ends it
     * a tick or more after the timeout, later on a loaded machine (its JVM shares our 2 cores):
     * one more second for that, measured from the kill. Measured idle: ~2.1 s for a 2 s session. */
    cr_assert_leq(ms, SESSION_MS + 2000.0 * IT_SLOW,
                  "took over after %.0f ms (contract: session timeout + 1 s after the session ends)", ms);
    struct pc_client *c = it_connect_port(b.port);
    expect_serving(c, 5);
    pc_close(c);

    /* A clean stop: B's nodes go with its session at once, C takes over well before a timeout. */
    struct it_server cs;
    start_second(&cs);
    char c_addr[32];
    self_addr(&cs, c_addr, sizeof(c_addr));
    log = it_wait_file_holds(cs.log, "held by another instance", REGISTER_MS);
    free(log);
    t0 = it_mono_ms();
    it_server_stop_clean(&b);
    wait_nodes(zh, c_addr, b_owner, SESSION_MS);
    cr_log_info("took over %.0f ms after the holder's SIGTERM", it_mono_ms() - t0);
    it_server_stop_clean(&cs);
    zookeeper_close(zh);
}

/* ZooKeeper stops and comes back (same data: the session survives): every request is answered
 * OK meanwhile, and the registration holds again within 10 s of ZooKeeper being back. */
IT(zookeeper, serves_through_a_zookeeper_restart)
{
    zk_up();
    fx_start_server_linked();
    char addr[32];
    self_addr(&FX.srv, addr, sizeof(addr));
    it_wait_metric(&FX.srv, "impresence_zookeeper_registered", 1, REGISTER_MS);
    struct pc_client *c = it_connect();
    expect_serving(c, 1);

    tp_zk_kill(&ZK);
    int uid = 100;
    /* The registrar notices (the gauge drops); requests are served all along. */
    double deadline = it_mono_ms() + 10000.0 * IT_SLOW;
    while (it_metric_now(&FX.srv, "impresence_zookeeper_registered") != 0) {
        cr_assert_lt(it_mono_ms(), deadline, "the registrar did not notice ZooKeeper went");
        expect_serving(c, uid++);
    }
    for (int i = 0; i < 20; i++)
        expect_serving(c, uid++);

    zk_up();
    double up = it_mono_ms();
    deadline = up + REGISTER_MS;
    while (it_metric_now(&FX.srv, "impresence_zookeeper_registered") != 1) {
        cr_assert_lt(it_mono_ms(), deadline, "not registered again within 10 s of ZooKeeper's return");
        expect_serving(c, uid++);
    }
    cr_log_info("registered again %.0f ms after ZooKeeper served", it_mono_ms() - up);
    zhandle_t *zh = zk_client();
    wait_nodes(zh, addr, 0, 1000);
    expect_serving(c, uid++);
    pc_close(c);
    zookeeper_close(zh);
}

/* A ZooKeeper that lost everything (session and nodes): the old session is expired, a new one
 * makes /PresenceService and every method node again. */
IT(zookeeper, registers_again_after_session_expiry)
{
    zk_up();
    fx_start_server_linked();
    char addr[32];
    self_addr(&FX.srv, addr, sizeof(addr));
    zhandle_t *zh = zk_client();
    int64_t old = wait_nodes(zh, addr, 0, REGISTER_MS);
    zookeeper_close(zh);

    tp_zk_kill(&ZK);
    tp_zk_wipe(&ZK);
    struct pc_client *c = it_connect();
    expect_serving(c, 1);
    zk_up();
    double up = it_mono_ms();
    zh = zk_client();
    int64_t now = wait_nodes(zh, addr, old, REGISTER_MS);
    cr_log_info("registered again %.0f ms after ZooKeeper served", it_mono_ms() - up);
    cr_assert_neq(now, old);
    char *log = it_wait_file_holds(FX.srv.log, "zookeeper: session expired", 1000);
    free(log);
    expect_serving(c, 2);
    pc_close(c);
    zookeeper_close(zh);
}

/* What the test client's exists watches saw while the server stopped. */
static struct {
    pid_t server;
    atomic_int deleted;             /* method nodes deleted */
    atomic_int deleted_while_alive; /* ... while the server process was still running */
} watched;

static void on_node_event(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh;
    (void)state;
    (void)path;
    (void)ctx;
    if (type != ZOO_DELETED_EVENT)
        return;
    /* WNOWAIT: look, do not reap (the test thread reaps it). */
    siginfo_t si = {0};
    bool alive = waitid(P_PID, (id_t)watched.server, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == 0;
    atomic_fetch_add(&watched.deleted_while_alive, alive);
    atomic_fetch_add(&watched.deleted, 1);
}

/* SIGTERM: the nodes are deleted first, while the server still runs: a request in flight (its
 * Redis paused) keeps it draining, and is answered after the nodes are gone; exit 0. */
IT(zookeeper, sigterm_deletes_the_nodes_before_stopping)
{
    zk_up();
    fx_start_server_linked();
    char addr[32];
    self_addr(&FX.srv, addr, sizeof(addr));
    zhandle_t *zh = zk_client();
    wait_nodes(zh, addr, 0, REGISTER_MS);
    watched.server = FX.srv.pid;
    for (int m = 0; m < PR_METHOD_COUNT; m++) {
        char path[64];
        method_path(path, sizeof(path), m);
        struct Stat st;
        cr_assert_eq(zoo_wexists(zh, path, on_node_event, NULL, &st), ZOK, "%s", path);
    }
    struct pc_client *c = it_connect();
    it_redis_pause(&FX.cache);
    Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
    q.user_id = 7;
    cr_assert_eq(pc_send(c, PR_METHOD_QUERY, &q.base), 0, "%s", pc_error(c));
    cr_assert_eq(pc_flush(c), 0, "%s", pc_error(c));
    it_wait_metric(&FX.srv, "impresence_shard_inflight", 1, 5000 * IT_SLOW);

    pid_t pid = FX.srv.pid;
    kill(pid, SIGTERM);
    double deadline = it_mono_ms() + 5000.0 * IT_SLOW;
    while (atomic_load(&watched.deleted) < PR_METHOD_COUNT) {
        cr_assert_lt(it_mono_ms(), deadline, "%d of %d nodes deleted after SIGTERM",
                     atomic_load(&watched.deleted), PR_METHOD_COUNT);
        it_sleep_ms(5);
    }
    cr_assert_eq(atomic_load(&watched.deleted_while_alive), PR_METHOD_COUNT, "a node outlived the server");
    it_redis_resume(&FX.cache);
    Mpim__QueryRouteResp *r = (Mpim__QueryRouteResp *)it_recv(c, PR_METHOD_QUERY);
    cr_assert_not_null(r->result);
    cr_assert(r->result->code == MPIM__CODE__NOT_FOUND || r->result->code == MPIM__CODE__UNAVAILABLE,
              "the request in flight: %s '%s'", pc_code_name(r->result->code), r->result->msg);
    it_free(r);
    pc_close(c);
    int status = it_wait_pid(pid, 5000 * IT_SLOW);
    FX.srv.pid = 0;
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
    char *log = it_read_file(FX.srv.log);
    const char *dereg = strstr(log, "zookeeper: deregistered");
    const char *drain = strstr(log, "shutdown: stop accepting");
    cr_assert(dereg != NULL && drain != NULL && dereg < drain, "deregistered before the listener closed:\n%s",
              log);
    free(log);
    struct Stat st;
    cr_assert_eq(zoo_exists(zh, "/" IT_SERVICE, 0, &st), ZOK, "the persistent node stays");
    zookeeper_close(zh);
}

/* SIGTERM while ZooKeeper is down: nothing to tell it; the server stops at once all the same. */
IT(zookeeper, sigterm_without_zookeeper_stops_promptly)
{
    zk_up();
    fx_start_server_linked();
    it_wait_metric(&FX.srv, "impresence_zookeeper_registered", 1, REGISTER_MS);
    tp_zk_kill(&ZK);
    it_wait_metric(&FX.srv, "impresence_zookeeper_registered", 0, 10000 * IT_SLOW);
    double t0 = it_mono_ms();
    it_server_stop_clean(&FX.srv);
    cr_assert_leq(it_mono_ms() - t0, 3000.0 * IT_SLOW, "SIGTERM took %.0f ms", it_mono_ms() - t0);
}

/* Bad [zookeeper] values: exit 2 at start, naming the key. */
IT(zookeeper, bad_config_exits_2_naming_the_key)
{
    static const struct {
        const char *section, *key, *value, *want;
    } cases[] = {
        {"zookeeper", "hosts", "zk-without-port", "[zookeeper] hosts"},
        {"zookeeper", "advertise", "not-an-address", "[zookeeper] advertise"},
        {"presence_service", "host", "0.0.0.0", "[zookeeper] advertise: required"},
        {"zookeeper", "session_timeout", "often", "[zookeeper] session_timeout"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct it_config cfg = FX.cfg;
        it_config_set(&cfg, "presence_service", "port", "%d", it_free_port());
        it_config_set(&cfg, cases[i].section, cases[i].key, "%s", cases[i].value);
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s", it_path("bad.conf"));
        it_config_write(&cfg, path);
        const char *argv[] = {it_server_bin(), "-c", path, NULL};
        char *err = NULL;
        int code = it_run(argv, NULL, &err, 10000 * IT_SLOW);
        cr_assert_eq(code, 2, "case %zu: exit %d, want 2; stderr: %s", i, code, err);
        cr_assert_not_null(strstr(err, cases[i].want), "case %zu: stderr does not name '%s': %s", i,
                           cases[i].want, err);
        free(err);
    }
}
