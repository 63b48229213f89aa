#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/hooks.h>

#include "core/frame.h"

struct it_fixture FX;

/* ------------------------------------------------------------------- time */

int64_t it_now_ms(void)
{
    return tp_wall_ms();
}

double it_mono_ms(void)
{
    return tp_mono_ms();
}

void it_sleep_ms(int ms)
{
    tp_sleep_ms(ms);
}

char *it_read_file(const char *path)
{
    return tp_read_file(path);
}

int it_slow(void)
{
    static int slow;
    if (slow == 0) {
        const char *e = getenv("PRESENCE_IT_SLOW");
        slow = e != NULL && atoi(e) > 0 ? atoi(e) : IT_SLOW_BUILD;
    }
    return slow;
}

#if IT_SLOW_BUILD > 1
/* The test process's own leaks after a failed assertion are noise; the server's are not, and it
 * is a separate binary with its own defaults. */
__attribute__((used)) const char *__asan_default_options(void);
__attribute__((used)) const char *__asan_default_options(void)
{
    return "detect_leaks=0";
}
#endif

const char *it_server_bin(void)
{
    const char *b = getenv("PRESENCE_SERVER_BIN");
    return b != NULL && *b != '\0' ? b : PRESENCE_SERVER_BIN;
}

const char *it_cli_bin(void)
{
    const char *b = getenv("PRESENCE_CLI_BIN");
    return b != NULL && *b != '\0' ? b : PRESENCE_CLI_BIN;
}

/* ------------------------------------------------- per-test dirs, runner side */

#define BASE_ENV "PRESENCE_IT_BASE"
#define KEEP_ENV "PRESENCE_IT_KEEP"

static bool keep_dirs(void)
{
    const char *k = getenv(KEEP_ENV);
    return k != NULL && *k != '\0' && strcmp(k, "0") != 0;
}

static void test_dir_for(char *out, size_t n, const char *base, const char *suite, const char *name)
{
    snprintf(out, n, "%s/%s.%s", base, suite, name);
}

static int print_server_logs(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    const char *base = path + ftw->base;
    if (flag == FTW_F && strncmp(base, "server", 6) == 0 && strstr(base, ".log") != NULL)
        tp_print_tail(path, 40);
    return 0;
}

/* Runs in the runner: after a failed test print its server logs, then drop its directory. */
static void report_and_clean(struct criterion_test_stats *stats)
{
    const char *base = getenv(BASE_ENV);
    if (base == NULL)
        return;
    char dir[PATH_MAX];
    test_dir_for(dir, sizeof(dir), base, stats->test->category, stats->test->name);
    struct stat st;
    if (stat(dir, &st) != 0)
        return;
    bool failed = stats->test_status == CR_STATUS_FAILED || stats->crashed || stats->timed_out;
    if (failed)
        nftw(dir, print_server_logs, 16, FTW_PHYS);
    if (!keep_dirs())
        tp_rm_tree(dir);
}

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    char tmpl[] = "/tmp/im-presence-it.XXXXXX";
    if (mkdtemp(tmpl) != NULL)
        setenv(BASE_ENV, tmpl, 1);
}

ReportHook(POST_FINI)(struct criterion_test_stats *stats)
{
    report_and_clean(stats);
}

ReportHook(TEST_CRASH)(struct criterion_test_stats *stats)
{
    report_and_clean(stats);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    const char *base = getenv(BASE_ENV);
    if (base == NULL)
        return;
    if (keep_dirs())
        fprintf(stderr, "integration test directories kept in %s\n", base);
    else
        tp_rm_tree(base);
}

/* ------------------------------------------------- per-test dirs, worker side */

static char g_dir[PATH_MAX];

const char *it_dir(void)
{
    if (g_dir[0] != '\0')
        return g_dir;
    const char *base = getenv(BASE_ENV);
    if (base != NULL && criterion_current_test != NULL) {
        test_dir_for(g_dir, sizeof(g_dir), base, criterion_current_test->category,
                     criterion_current_test->name);
        if (mkdir(g_dir, 0700) == 0 || errno == EEXIST)
            return g_dir;
    }
    char tmpl[] = "/tmp/im-presence-it-test.XXXXXX";
    cr_assert_not_null(mkdtemp(tmpl), "mkdtemp: %s", strerror(errno));
    snprintf(g_dir, sizeof(g_dir), "%s", tmpl);
    return g_dir;
}

const char *it_path(const char *name)
{
    static char bufs[8][PATH_MAX];
    static int next;
    char *b = bufs[next++ % 8];
    int n = snprintf(b, PATH_MAX, "%s/%s", it_dir(), name);
    cr_assert(n > 0 && n < PATH_MAX, "path too long: %s/%s", it_dir(), name);
    return b;
}

/* ------------------------------------------------------------------ children */

/* fork + exec with stdout to out_path and stderr to err_path (NULL: same file), appending.
 * The child dies with this worker (PR_SET_PDEATHSIG), whatever kills the worker. */
pid_t it_spawn(const char *const *argv, const char *out_path, const char *err_path)
{
    pid_t pid = tp_spawn(argv, out_path, err_path);
    cr_assert(pid > 0, "%s", tp_error());
    return pid;
}

int it_wait_pid(pid_t pid, int timeout_ms)
{
    return tp_wait_pid(pid, timeout_ms);
}

int it_run(const char *const *argv, char **out, char **err, int timeout_ms)
{
    static int runs;
    char oname[64], ename[64];
    runs++;
    snprintf(oname, sizeof(oname), "run-%d.out", runs);
    snprintf(ename, sizeof(ename), "run-%d.err", runs);
    char opath[PATH_MAX], epath[PATH_MAX];
    snprintf(opath, sizeof(opath), "%s", it_path(oname));
    snprintf(epath, sizeof(epath), "%s", it_path(ename));
    pid_t pid = it_spawn(argv, opath, epath);
    int status = tp_wait_pid(pid, timeout_ms);
    int code;
    if (status == -1) {
        tp_kill_reap(pid);
        code = -1;
    } else if (WIFEXITED(status)) {
        code = WEXITSTATUS(status);
    } else {
        code = 128 + WTERMSIG(status);
    }
    if (out != NULL) {
        *out = it_read_file(opath);
        cr_assert_not_null(*out);
    }
    if (err != NULL) {
        *err = it_read_file(epath);
        cr_assert_not_null(*err);
    }
    return code;
}

int it_free_port(void)
{
    int port = tp_free_port();
    cr_assert(port > 0, "%s", tp_error());
    return port;
}

/* --------------------------------------------------------------------- redis */

void it_redis_start(struct tp_redis *r, const char *name)
{
    cr_assert_eq(tp_redis_init(r, it_dir(), name), 0, "%s", tp_error());
    r->ready_ms = 5000 * IT_SLOW;
    if (tp_redis_start(r, true, 5, 0) == 0)
        return;
    tp_print_tail(r->log, 20);
    cr_assert_fail("redis-server %s did not start; see %s", name, r->log);
}

void it_redis_restart(struct tp_redis *r)
{
    cr_assert_eq(r->pid, 0, "redis %s is still running", r->name);
    /* The old socket may linger for a moment; Redis sets SO_REUSEADDR, so a retry suffices. */
    if (tp_redis_start(r, false, 20, 50) != 0)
        cr_assert_fail("redis-server %s did not restart on port %d; see %s", r->name, r->port, r->log);
}

void it_redis_stop(struct tp_redis *r)
{
    tp_redis_stop(r, 3000);
}

void it_redis_kill(struct tp_redis *r)
{
    if (r->pid == 0)
        return;
    tp_kill_reap(r->pid);
    r->pid = 0;
}

void it_redis_pause(struct tp_redis *r)
{
    cr_assert_neq(r->pid, 0);
    cr_assert_eq(tp_redis_pause(r), 0, "redis %s did not stop", r->name);
}

void it_redis_resume(struct tp_redis *r)
{
    cr_assert_neq(r->pid, 0);
    cr_assert_eq(tp_redis_resume(r), 0);
}

/* A failed start gets no runner report (it may run in .init): show the logs here. */
static int print_deploy_log(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    if (flag == FTW_F && strstr(path + ftw->base, ".log") != NULL)
        tp_print_tail(path, 15);
    return 0;
}

void it_cluster_start(struct tp_cluster *c, int masters, int replicas_per_master)
{
    c->slow = IT_SLOW;
    if (tp_cluster_start(c, it_dir(), masters, replicas_per_master) == 0)
        return;
    char why[PATH_MAX + 128];
    snprintf(why, sizeof(why), "%s", tp_error());
    nftw(c->dir, print_deploy_log, 16, FTW_PHYS);
    cr_assert_fail("Redis Cluster (%d masters, %d replicas each) did not start: %s", masters,
                   replicas_per_master, why);
}

void it_sentinel_start(struct tp_sentinel_set *s, const char *name)
{
    s->slow = IT_SLOW;
    if (tp_sentinel_start(s, it_dir(), name) == 0)
        return;
    char why[PATH_MAX + 128];
    snprintf(why, sizeof(why), "%s", tp_error());
    nftw(s->dir, print_deploy_log, 16, FTW_PHYS);
    cr_assert_fail("Sentinel set did not start: %s", why);
}

/* -------------------------------------------------------------------- config */

static struct it_kv *find_kv(struct it_config *c, const char *section, const char *key)
{
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->kv[i].section, section) == 0 && strcmp(c->kv[i].key, key) == 0)
            return &c->kv[i];
    return NULL;
}

void it_config_set(struct it_config *c, const char *section, const char *key, const char *fmt, ...)
{
    struct it_kv *kv = find_kv(c, section, key);
    if (kv == NULL) {
        cr_assert_lt(c->n, IT_MAX_KV);
        kv = &c->kv[c->n++];
        snprintf(kv->section, sizeof(kv->section), "%s", section);
        snprintf(kv->key, sizeof(kv->key), "%s", key);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kv->value, sizeof(kv->value), fmt, ap);
    va_end(ap);
}

void it_config_unset(struct it_config *c, const char *section, const char *key)
{
    struct it_kv *kv = find_kv(c, section, key);
    if (kv == NULL)
        return;
    size_t i = (size_t)(kv - c->kv);
    memmove(&c->kv[i], &c->kv[i + 1], (size_t)(c->n - (int)i - 1) * sizeof(*kv));
    c->n--;
}

const char *it_config_get(const struct it_config *c, const char *section, const char *key)
{
    struct it_kv *kv = find_kv((struct it_config *)c, section, key);
    return kv != NULL ? kv->value : NULL;
}

void it_config_defaults(struct it_config *c, int cache_port, int queue_port)
{
    memset(c, 0, sizeof(*c));
    it_config_set(c, "presence_service", "host", "127.0.0.1");
    it_config_set(c, "presence_service", "port", "0");
    it_config_set(c, "presence_service", "thread_count", "2");
    it_config_set(c, "presence_service", "max_connections", "1000");
    it_config_set(c, "presence_service", "log_level", "info");
    it_config_set(c, "route", "route_ttl", "3600");
    it_config_set(c, "route", "status_ttl", "3600");
    it_config_set(c, "route", "max_retries", "3");
    it_config_set(c, "route", "retry_interval", "200");
    it_config_set(c, "redis_cache", "host", "127.0.0.1");
    it_config_set(c, "redis_cache", "port", "%d", cache_port);
    it_config_set(c, "redis_cache", "database", "0");
    it_config_set(c, "redis_cache", "timeout", "%d", 2000 * IT_SLOW);
    it_config_set(c, "redis_queue", "host", "127.0.0.1");
    it_config_set(c, "redis_queue", "port", "%d", queue_port);
    it_config_set(c, "redis_queue", "database", "1");
    it_config_set(c, "redis_queue", "timeout", "%d", 2000 * IT_SLOW);
    /* The HTTP metrics listener: "auto" is written out as a free port ("0" would disable it). */
    it_config_set(c, "metrics", "port", "auto");
}

static void write_section(FILE *f, const struct it_config *c, const char *section)
{
    fprintf(f, "[%s]\n", section);
    for (int j = 0; j < c->n; j++) {
        const struct it_kv *kv = &c->kv[j];
        if (strcmp(kv->section, section) != 0)
            continue;
        if (strcmp(kv->section, "metrics") == 0 && strcmp(kv->key, "port") == 0 &&
            strcmp(kv->value, "auto") == 0)
            fprintf(f, "%s = %d\n", kv->key, it_free_port());
        else
            fprintf(f, "%s = %s\n", kv->key, kv->value);
    }
    fprintf(f, "\n");
}

void it_config_write(const struct it_config *c, const char *path)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    static const char *const order[] = {"presence_service", "route", "redis_cache", "redis_queue"};
    /* The known sections in the usual order, then any other section in order of appearance. */
    for (size_t k = 0; k < 4; k++)
        write_section(f, c, order[k]);
    for (int i = 0; i < c->n; i++) {
        bool seen = false;
        for (size_t k = 0; k < 4; k++)
            seen |= strcmp(c->kv[i].section, order[k]) == 0;
        for (int j = 0; j < i; j++)
            seen |= strcmp(c->kv[j].section, c->kv[i].section) == 0;
        if (!seen)
            write_section(f, c, c->kv[i].section);
    }
    cr_assert_eq(fclose(f), 0);
}

/* -------------------------------------------------------------------- server */

static int g_servers;

static void next_server_paths(struct it_server *s)
{
    g_servers++;
    char name[64];
    snprintf(name, sizeof(name), g_servers == 1 ? "server.conf" : "server-%d.conf", g_servers);
    snprintf(s->conf, sizeof(s->conf), "%s", it_path(name));
    snprintf(name, sizeof(name), g_servers == 1 ? "server.log" : "server-%d.log", g_servers);
    snprintf(s->log, sizeof(s->log), "%s", it_path(name));
}

static pid_t spawn_server(struct it_server *s, const char *const *extra_args)
{
    const char *argv[32] = {it_server_bin(), "-c", s->conf};
    int n = 3;
    for (int i = 0; extra_args != NULL && extra_args[i] != NULL; i++) {
        cr_assert_lt(n, 31);
        argv[n++] = extra_args[i];
    }
    argv[n] = NULL;
    s->pid = it_spawn(argv, s->log, NULL);
    return s->pid;
}

pid_t it_server_spawn(struct it_server *s, const struct it_config *c, const char *const *extra_args)
{
    next_server_paths(s);
    it_config_write(c, s->conf);
    const char *port = it_config_get(c, "presence_service", "port");
    if (port != NULL)
        s->port = atoi(port);
    return spawn_server(s, extra_args);
}

pid_t it_server_spawn_file(struct it_server *s, const char *conf, int port, const char *const *extra_args)
{
    next_server_paths(s);
    snprintf(s->conf, sizeof(s->conf), "%s", conf);
    s->port = port;
    return spawn_server(s, extra_args);
}

int it_server_wait_ready(struct it_server *s, int timeout_ms)
{
    return tp_wait_port(&s->pid, s->port, timeout_ms);
}

void it_server_start(struct it_server *s, struct it_config *c, const char *const *extra_args)
{
    const char *p = it_config_get(c, "presence_service", "port");
    bool pick = p == NULL || strcmp(p, "0") == 0;
    /* A port race with another test (ours or the metrics one) is retried on fresh ports. */
    for (int attempt = 0; attempt < 3; attempt++) {
        if (pick)
            it_config_set(c, "presence_service", "port", "%d", it_free_port());
        it_server_spawn(s, c, extra_args);
        if (it_server_wait_ready(s, 10000 * IT_SLOW) == 0)
            break;
        if (s->pid != 0) {
            tp_kill_reap(s->pid);
            s->pid = 0;
        }
    }
    if (s->pid != 0)
        return;
    if (pick)
        it_config_set(c, "presence_service", "port", "0");
    /* A failed .init gets no runner report: show the log here. */
    tp_print_tail(s->log, 40);
    cr_assert_fail("im-presence did not start listening; see %s", s->log);
}

int it_server_stop(struct it_server *s, int sig, int timeout_ms)
{
    if (s->pid == 0)
        return 0;
    int status = tp_stop(s->pid, sig, timeout_ms);
    s->pid = 0;
    return status;
}

void it_server_stop_clean(struct it_server *s)
{
    if (s->pid == 0)
        return;
    int bound = 5000 * IT_SLOW;
    int status = it_server_stop(s, SIGTERM, bound);
    cr_assert_neq(status, -1, "im-presence did not exit within %d ms of SIGTERM (killed)", bound);
    cr_assert(WIFEXITED(status), "im-presence died of signal %d after SIGTERM", WTERMSIG(status));
    cr_assert_eq(WEXITSTATUS(status), 0, "im-presence exited %d after SIGTERM (want 0)", WEXITSTATUS(status));
}

/* ------------------------------------------------------------------- fixture */

static void fx_common(void)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&FX, 0, sizeof(FX));
    it_dir();
}

void fx_init_redis(void)
{
    fx_common();
    it_redis_start(&FX.cache, "redis");
    FX.queue.port = FX.cache.port;
    it_config_defaults(&FX.cfg, FX.cache.port, FX.cache.port);
}

void fx_init_split(void)
{
    fx_common();
    it_redis_start(&FX.cache, "cache");
    it_redis_start(&FX.queue, "queue");
    it_config_defaults(&FX.cfg, FX.cache.port, FX.queue.port);
}

void fx_init_cluster(void)
{
    fx_common();
    it_cluster_start(&FX.cluster, 3, 1);
    int first = FX.cluster.node[0].r.port;
    it_config_defaults(&FX.cfg, first, first);
    char nodes[TP_CLUSTER_MAX_NODES * 24];
    cr_assert_eq(tp_cluster_nodes(&FX.cluster, nodes, sizeof(nodes)), 0, "%s", tp_error());
    static const char *const sections[] = {"redis_cache", "redis_queue"};
    for (int i = 0; i < 2; i++) {
        it_config_unset(&FX.cfg, sections[i], "host");
        it_config_unset(&FX.cfg, sections[i], "port");
        it_config_set(&FX.cfg, sections[i], "mode", "cluster");
        it_config_set(&FX.cfg, sections[i], "nodes", "%s", nodes);
        it_config_set(&FX.cfg, sections[i], "database", "0");
    }
}

void fx_init_sentinel(void)
{
    fx_common();
    it_sentinel_start(&FX.sentinel, "presence");
    it_config_defaults(&FX.cfg, FX.sentinel.master.port, FX.sentinel.master.port);
    char nodes[TP_SENTINELS * 24];
    cr_assert_eq(tp_sentinel_nodes(&FX.sentinel, nodes, sizeof(nodes)), 0, "%s", tp_error());
    static const char *const sections[] = {"redis_cache", "redis_queue"};
    for (int i = 0; i < 2; i++) {
        it_config_unset(&FX.cfg, sections[i], "host");
        it_config_unset(&FX.cfg, sections[i], "port");
        it_config_set(&FX.cfg, sections[i], "mode", "sentinel");
        it_config_set(&FX.cfg, sections[i], "nodes", "%s", nodes);
        it_config_set(&FX.cfg, sections[i], "master_name", "%s", FX.sentinel.name);
    }
}

void fx_start_server(void)
{
    it_server_start(&FX.srv, &FX.cfg, NULL);
}

void fx_start_server_linked(void)
{
    fx_start_server();
    char *body = NULL;
    int status = it_http_wait_status(it_metrics_port(&FX.srv), "/healthz", 200, 10000 * IT_SLOW, &body);
    cr_assert_eq(status, 200, "/healthz %d: %s", status, body);
    free(body);
}

void fx_init_server(void)
{
    fx_init_redis();
    fx_start_server();
}

void fx_fini(void)
{
    if (FX.srv.pid != 0) {
        tp_kill_reap(FX.srv.pid);
        FX.srv.pid = 0;
    }
    /* The Redis servers get a clean SIGTERM below; a cluster or sentinel set first, before
     * tp_kill_all could reap their pids under them. */
    tp_cluster_stop(&FX.cluster);
    tp_sentinel_stop(&FX.sentinel);
    const pid_t keep[] = {FX.cache.pid, FX.queue.pid};
    tp_kill_all(keep, 2);
    it_redis_stop(&FX.cache);
    it_redis_stop(&FX.queue);
}

void fx_check_clean_exit(void)
{
    it_server_stop_clean(&FX.srv);
}

/* -------------------------------------------------------------------- client */

struct pc_client *it_connect_port(int port)
{
    const char *err = NULL;
    struct pc_client *c = pc_connect("127.0.0.1", port, 5000 * IT_SLOW, &err);
    cr_assert_not_null(c, "connect to 127.0.0.1:%d: %s", port, err ? err : "?");
    return c;
}

struct pc_client *it_connect(void)
{
    return it_connect_port(FX.srv.port);
}

#define CHECK_RC(c, rc, what) cr_assert_eq(rc, 0, "%s: transport error: %s", what, pc_error(c))

/* The body of a typed call: pc_call (which fills r) worked and the response has a result. */
#define TYPED_CALL(Type, what, pc_call)                                                                      \
    Type *r = NULL;                                                                                          \
    CHECK_RC(c, pc_call, what);                                                                              \
    cr_assert_not_null(r);                                                                                   \
    cr_assert_not_null(r->result, what "Resp without result");                                               \
    return r

void *it_call(struct pc_client *c, int method, const ProtobufCMessage *req)
{
    ProtobufCMessage *m = NULL;
    cr_assert_eq(pc_call(c, method, req, &m), 0, "%s: %s", request_method_name(method), pc_error(c));
    cr_assert_not_null(m);
    return m;
}

Mpim__BindRouteResp *it_bind(struct pc_client *c, int64_t uid, const char *gw)
{
    TYPED_CALL(Mpim__BindRouteResp, "BindRoute", pc_bind(c, uid, gw, &r));
}

Mpim__QueryRouteResp *it_query(struct pc_client *c, int64_t uid)
{
    TYPED_CALL(Mpim__QueryRouteResp, "QueryRoute", pc_query(c, uid, &r));
}

Mpim__DeliverResp *it_deliver(struct pc_client *c, int64_t uid, const void *msg, size_t len, const char *type)
{
    TYPED_CALL(Mpim__DeliverResp, "Deliver", pc_deliver(c, uid, msg, len, type, &r));
}

Mpim__UnbindRouteResp *it_unbind(struct pc_client *c, int64_t uid, const char *gw)
{
    TYPED_CALL(Mpim__UnbindRouteResp, "UnbindRoute", pc_unbind(c, uid, gw, &r));
}

Mpim__HeartbeatResp *it_heartbeat(struct pc_client *c, int64_t uid, const char *gw)
{
    TYPED_CALL(Mpim__HeartbeatResp, "Heartbeat", pc_heartbeat(c, uid, gw, &r));
}

uint8_t *it_frame(const char *service, const char *method, const ProtobufCMessage *args, size_t *len)
{
    size_t alen = args != NULL ? protobuf_c_message_get_packed_size(args) : 0;
    uint8_t *abuf = malloc(alen + 1);
    cr_assert_not_null(abuf);
    if (args != NULL)
        protobuf_c_message_pack(args, abuf);
    size_t n = frame_request_size(service, method, alen);
    uint8_t *frame = malloc(n);
    cr_assert_not_null(frame);
    *len = frame_write_request(frame, service, method, abuf, alen);
    cr_assert_eq(*len, n);
    free(abuf);
    return frame;
}

void it_send_frame(struct pc_client *c, const char *service, const char *method, const ProtobufCMessage *args)
{
    size_t len;
    uint8_t *f = it_frame(service, method, args, &len);
    CHECK_RC(c, pc_send_raw(c, f, len), "pc_send_raw");
    free(f);
}

ProtobufCMessage *it_recv(struct pc_client *c, int method)
{
    ProtobufCMessage *m = NULL;
    CHECK_RC(c, pc_recv(c, method, &m), "pc_recv");
    cr_assert_not_null(m);
    return m;
}

Mpim__ErrorResp *it_recv_error(struct pc_client *c)
{
    const uint8_t *body;
    size_t len;
    CHECK_RC(c, pc_recv_raw(c, &body, &len), "pc_recv_raw");
    Mpim__ErrorResp *e = mpim__error_resp__unpack(NULL, len, body);
    cr_assert_not_null(e, "a %zu-byte response does not decode as ErrorResp", len);
    cr_assert_not_null(e->result, "response without field 1 (result)");
    return e;
}

ProtobufCBinaryData it_bytes(const char *s)
{
    ProtobufCBinaryData b = {.len = strlen(s), .data = (uint8_t *)s};
    return b;
}

bool it_bytes_eq(ProtobufCBinaryData b, const char *s)
{
    size_t n = strlen(s);
    return b.len == n && (n == 0 || memcmp(b.data, s, n) == 0);
}

int it_tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in a = tp_loopback(port);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "connect :%d: %s", port, strerror(errno));
    /* A plain read() on it can then never hang a test. */
    struct timeval tv = {5 * IT_SLOW, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

void it_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        cr_assert(n > 0, "write: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

int it_wait_closed(int fd, int timeout_ms)
{
    double deadline = it_mono_ms() + timeout_ms;
    bool data = false;
    for (;;) {
        int left = (int)(deadline - it_mono_ms());
        if (left <= 0)
            return data ? 0 : -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return data ? 0 : -1;
        char buf[4096];
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r == 0 || (r < 0 && (errno == ECONNRESET || errno == EPIPE)))
            return data ? 0 : 1;
        if (r > 0)
            data = true;
    }
}

/* ---------------------------------------------------------- metrics over HTTP */

int it_metrics_port(const struct it_server *s)
{
    char *conf = it_read_file(s->conf);
    cr_assert_not_null(conf, "cannot read %s", s->conf);
    int port = 0;
    bool in_metrics = false;
    for (char *line = strtok(conf, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (line[0] == '[')
            in_metrics = strncmp(line, "[metrics]", 9) == 0;
        else if (in_metrics && sscanf(line, " port = %d", &port) == 1)
            break;
    }
    free(conf);
    cr_assert_gt(port, 0, "no [metrics] port in %s", s->conf);
    return port;
}

int it_http_get(int port, const char *path, char **head, char **body)
{
    if (head != NULL)
        *head = NULL;
    if (body != NULL)
        *body = NULL;
    struct sockaddr_in a = tp_loopback(port);
    /* The server opens its metrics port a moment after its service port: a refused connection
     * is retried for a while. */
    double refused_until = it_mono_ms() + 2000.0 * IT_SLOW;
    int fd;
    for (;;) {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert(fd >= 0, "socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
            break;
        int e = errno;
        close(fd);
        if (e != ECONNREFUSED || it_mono_ms() > refused_until)
            return -1;
        it_sleep_ms(10);
    }
    char req[512];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n\r\n", path, port);
    cr_assert(n > 0 && (size_t)n < sizeof(req));
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return -1;
    }
    /* The server answers and closes (Connection: close): read to EOF, within the bound. */
    size_t cap = 16384, len = 0;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    double deadline = it_mono_ms() + 5000.0 * IT_SLOW;
    bool eof = false;
    for (;;) {
        int left = (int)(deadline - it_mono_ms());
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int rc = left > 0 ? poll(&p, 1, left) : 0;
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            break;
        if (cap - len < 4096) {
            cap *= 2;
            buf = realloc(buf, cap);
            cr_assert_not_null(buf);
        }
        ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            eof = true;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    int status = -1;
    if (!eof || sep == NULL || sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        free(buf);
        return -1;
    }
    *sep = '\0';
    if (body != NULL) {
        *body = strdup(sep + 4);
        cr_assert_not_null(*body);
    }
    if (head != NULL) {
        *head = strdup(buf);
        cr_assert_not_null(*head);
    }
    free(buf);
    return status;
}

int it_http_wait_status(int port, const char *path, int want, int timeout_ms, char **body)
{
    double deadline = it_mono_ms() + timeout_ms;
    for (;;) {
        char *b = NULL;
        int status = it_http_get(port, path, NULL, &b);
        if (status == want || it_mono_ms() >= deadline) {
            if (body != NULL)
                *body = b;
            else
                free(b);
            return status;
        }
        free(b);
        it_sleep_ms(50);
    }
}

double it_metric(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return NAN;
}

double it_metric_sum(const char *text, const char *family)
{
    size_t n = strlen(family);
    double sum = NAN;
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, family, n) == 0 && (line[n] == ' ' || line[n] == '{')) {
            const char *value = strchr(line, ' ');
            if (value != NULL)
                sum = (isnan(sum) ? 0 : sum) + strtod(value + 1, NULL);
        }
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return sum;
}

double it_metric_series(const struct it_server *s, const char *series)
{
    char *body = NULL;
    int status = it_http_get(it_metrics_port(s), "/metrics", NULL, &body);
    cr_assert_eq(status, 200, "GET /metrics: %d", status);
    double v = it_metric(body, series);
    free(body);
    return v;
}

double it_metric_now(const struct it_server *s, const char *family)
{
    char *body = NULL;
    int status = it_http_get(it_metrics_port(s), "/metrics", NULL, &body);
    cr_assert_eq(status, 200, "GET /metrics: %d", status);
    double v = it_metric_sum(body, family);
    free(body);
    cr_assert(!isnan(v), "no %s in /metrics", family);
    return v;
}

void it_wait_metric(const struct it_server *s, const char *family, double want, int timeout_ms)
{
    int port = it_metrics_port(s);
    double deadline = it_mono_ms() + timeout_ms;
    double v = NAN;
    for (;;) {
        char *body = NULL;
        if (it_http_get(port, "/metrics", NULL, &body) == 200)
            v = it_metric_sum(body, family);
        free(body);
        if (v == want)
            return;
        cr_assert_lt(it_mono_ms(), deadline, "%s = %g after %d ms, want %g", family, v, timeout_ms, want);
        it_sleep_ms(10);
    }
}

void it_wait_shutting_down(const struct it_server *s, int timeout_ms)
{
    int port = it_metrics_port(s);
    double deadline = it_mono_ms() + timeout_ms;
    for (;;) {
        char *body = NULL;
        int status = it_http_get(port, "/readyz", NULL, &body);
        bool down = status == 503 && body != NULL && strstr(body, "shutting down") != NULL;
        free(body);
        if (down)
            return;
        cr_assert_lt(it_mono_ms(), deadline, "/readyz never said 'shutting down' (last status %d)", status);
        it_sleep_ms(10);
    }
}

/* --------------------------------------------------------------- Redis direct */

redisContext *it_rconnect(int port, int db)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    cr_assert(c != NULL && !c->err, "connect to redis :%d: %s", port, c ? c->errstr : "oom");
    struct timeval rt = {5, 0};
    redisSetTimeout(c, rt);
    if (db != 0) {
        redisReply *r = redisCommand(c, "SELECT %d", db);
        cr_assert(r != NULL && r->type == REDIS_REPLY_STATUS, "SELECT %d failed", db);
        freeReplyObject(r);
    }
    return c;
}

/* One command on a fresh connection; the reply is not an error (asserts). */
static redisReply *rvcommand(int port, int db, const char *fmt, va_list ap)
{
    redisContext *c = it_rconnect(port, db);
    redisReply *r = redisvCommand(c, fmt, ap);
    cr_assert_not_null(r, "redis :%d: %s", port, c->errstr);
    cr_assert_neq(r->type, REDIS_REPLY_ERROR, "redis :%d: %s", port, r->str);
    redisFree(c);
    return r;
}

static redisReply *rcommand(int port, int db, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = rvcommand(port, db, fmt, ap);
    va_end(ap);
    return r;
}

char *it_rget(int port, int db, const char *key, size_t *len)
{
    redisReply *r = rcommand(port, db, "GET %s", key);
    char *v = NULL;
    if (r->type == REDIS_REPLY_STRING) {
        v = malloc(r->len + 1);
        cr_assert_not_null(v);
        memcpy(v, r->str, r->len);
        v[r->len] = '\0';
        if (len != NULL)
            *len = r->len;
    } else {
        cr_assert_eq(r->type, REDIS_REPLY_NIL, "GET %s: unexpected reply type %d", key, r->type);
    }
    freeReplyObject(r);
    return v;
}

long long it_rttl(int port, int db, const char *key)
{
    redisReply *r = rcommand(port, db, "TTL %s", key);
    cr_assert_eq(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

bool it_rexists(int port, int db, const char *key)
{
    redisReply *r = rcommand(port, db, "EXISTS %s", key);
    cr_assert_eq(r->type, REDIS_REPLY_INTEGER);
    bool v = r->integer > 0;
    freeReplyObject(r);
    return v;
}

long long it_rdbsize(int port, int db)
{
    redisReply *r = rcommand(port, db, "DBSIZE");
    cr_assert_eq(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

long long it_rdbsize_all(int port)
{
    long long total = 0;
    for (int db = 0; db < 16; db++)
        total += it_rdbsize(port, db);
    return total;
}

void it_rcmd(int port, int db, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    freeReplyObject(rvcommand(port, db, fmt, ap));
    va_end(ap);
}

/* ---------------------------------------------------------------- subscriber */

struct it_sub {
    redisContext *c; /* the subscribed connection */
    int port;        /* its Redis */
    int sentinels;   /* sentinels published so far */
};

/* Next reply within timeout_ms: 1 and *out, 0 timeout. Asserts on a broken connection. */
static int sub_read(struct it_sub *s, redisReply **out, int timeout_ms)
{
    double deadline = it_mono_ms() + timeout_ms;
    for (;;) {
        void *reply = NULL;
        cr_assert_eq(redisGetReplyFromReader(s->c, &reply), REDIS_OK, "subscriber: %s", s->c->errstr);
        if (reply != NULL) {
            *out = reply;
            return 1;
        }
        int left = (int)(deadline - it_mono_ms());
        if (left < 0)
            left = 0; /* one look at the socket even then: a timeout of 0 means "what is there now" */
        struct pollfd p = {.fd = s->c->fd, .events = POLLIN};
        int n = poll(&p, 1, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            return 0;
        cr_assert_eq(redisBufferRead(s->c), REDIS_OK, "subscriber read: %s", s->c->errstr);
    }
}

struct it_sub *it_sub_open(int port, const char *const *channels)
{
    struct it_sub *s = calloc(1, sizeof(*s));
    cr_assert_not_null(s);
    s->port = port;
    s->c = it_rconnect(port, 0);
    const char *argv[17] = {"SUBSCRIBE"};
    int n = 1;
    for (; channels[n - 1] != NULL; n++)
        argv[n] = channels[n - 1];
    cr_assert(n > 1 && n <= 16);
    cr_assert_eq(redisAppendCommandArgv(s->c, n, argv, NULL), REDIS_OK);
    int done = 0;
    while (!done)
        cr_assert_eq(redisBufferWrite(s->c, &done), REDIS_OK, "subscribe: %s", s->c->errstr);
    for (int i = 1; i < n; i++) {
        redisReply *r = NULL;
        cr_assert_eq(sub_read(s, &r, 5000), 1, "no SUBSCRIBE confirmation");
        cr_assert(r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
                      strcmp(r->element[0]->str, "subscribe") == 0,
                  "unexpected reply to SUBSCRIBE");
        freeReplyObject(r);
    }
    return s;
}

int it_sub_next(struct it_sub *s, struct it_msg *m, int timeout_ms)
{
    double deadline = it_mono_ms() + timeout_ms;
    for (;;) {
        int left = (int)(deadline - it_mono_ms());
        redisReply *r = NULL;
        if (left < 0 || sub_read(s, &r, left) == 0)
            return 0;
        bool is_msg = r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
                      r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "message") == 0;
        if (is_msg) {
            snprintf(m->channel, sizeof(m->channel), "%.*s", (int)r->element[1]->len, r->element[1]->str);
            m->len = r->element[2]->len;
            m->data = malloc(m->len + 1);
            cr_assert_not_null(m->data);
            memcpy(m->data, r->element[2]->str, m->len);
            m->data[m->len] = '\0';
        }
        freeReplyObject(r);
        if (is_msg)
            return 1;
    }
}

void it_sub_expect(struct it_sub *s, const char *channel, const void *data, size_t len)
{
    struct it_msg m;
    cr_assert_eq(it_sub_next(s, &m, 3000 * IT_SLOW), 1,
                 "nothing published on %s within %d ms (expected %zu bytes)", channel, 3000 * IT_SLOW, len);
    cr_assert_str_eq(m.channel, channel, "published on %s, expected on %s", m.channel, channel);
    cr_assert_eq(m.len, len, "published %zu bytes on %s ('%.*s'), expected %zu", m.len, channel,
                 (int)(m.len > 80 ? 80 : m.len), m.data, len);
    cr_assert(len == 0 || memcmp(m.data, data, len) == 0, "published bytes on %s differ", channel);
    free(m.data);
}

void it_sub_expect_nothing(struct it_sub *s, const char *channel)
{
    /* A publish the server made would be on Redis before anything we send now, give or take
     * the server's own pipelining: wait a little, then publish a marker behind it. */
    it_sleep_ms(50 * IT_SLOW);
    char sentinel[64];
    snprintf(sentinel, sizeof(sentinel), "it-sentinel-%d-%d", (int)getpid(), ++s->sentinels);
    it_rcmd(s->port, 0, "PUBLISH %s %s", channel, sentinel);
    struct it_msg m;
    cr_assert_eq(it_sub_next(s, &m, 3000 * IT_SLOW), 1, "the sentinel on %s never arrived", channel);
    bool ok = strcmp(m.channel, channel) == 0 && strcmp(m.data, sentinel) == 0;
    cr_assert(ok, "expected nothing published, but '%.*s' was published on %s",
              (int)(m.len > 80 ? 80 : m.len), m.data, m.channel);
    free(m.data);
}

void it_sub_close(struct it_sub *s)
{
    if (s == NULL)
        return;
    redisFree(s->c);
    free(s);
}

char *it_wait_file_holds(const char *path, const char *needle, int timeout_ms)
{
    double deadline = it_mono_ms() + timeout_ms;
    for (;;) {
        char *text = it_read_file(path);
        if (text != NULL && strstr(text, needle) != NULL)
            return text;
        cr_assert_lt(it_mono_ms(), deadline, "%s never showed '%s'; it holds:\n%s", path, needle,
                     text != NULL ? text : "(nothing)");
        free(text);
        it_sleep_ms(20);
    }
}
