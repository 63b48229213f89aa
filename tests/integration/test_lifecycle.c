/* Contract §4-5: configuration (file, line and key on errors, exit 2; unknown keys tolerated;
 * the design's file unchanged; flags override the file; max_connections) and shutdown
 * (SIGTERM/SIGINT answer what is in flight and exit 0). */
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(lifecycle, .init = fx_init_redis, .fini = fx_fini, .timeout = IT_TIMEOUT);

#define EXIT_BOUND_MS (5000 * IT_SLOW)

static void expect_exit_0(struct it_server *s, int sig)
{
    int status = it_server_stop(s, sig, EXIT_BOUND_MS);
    cr_assert_neq(status, -1, "no exit within %d ms of signal %d", EXIT_BOUND_MS, sig);
    cr_assert(WIFEXITED(status), "died of signal %d", WTERMSIG(status));
    cr_assert_eq(WEXITSTATUS(status), 0, "exit status %d after signal %d", WEXITSTATUS(status), sig);
}

/* ---------------------------------------------------------------- shutdown */

IT(lifecycle, sigterm_answers_requests_in_flight_then_exits_0)
{
    /* Requests held up in a hung Redis are in flight when SIGTERM arrives; they must still be
     * answered (correctly) once Redis answers, and only then may the server exit. */
    it_config_set(&FX.cfg, "redis_cache", "timeout", "%d", 10000 * IT_SLOW);
    it_config_set(&FX.cfg, "redis_queue", "timeout", "%d", 10000 * IT_SLOW);
    fx_start_server();
    struct pc_client *c = it_connect();
    enum { N = 50 };
    for (int uid = 1; uid <= N; uid++) {
        char gw[32];
        snprintf(gw, sizeof(gw), "gw-%d:1", uid);
        Mpim__BindRouteResp *b = it_bind(c, uid, gw);
        cr_assert_eq(b->result->code, MPIM__CODE__OK);
        it_free(b);
    }
    it_redis_pause(&FX.cache);
    for (int uid = 1; uid <= N; uid++) {
        Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
        q.user_id = uid;
        cr_assert_eq(pc_send(c, PR_METHOD_QUERY, &q.base), 0);
    }
    cr_assert_eq(pc_flush(c), 0);
    /* The server has read them all and they wait on Redis; then SIGTERM has taken effect. */
    it_wait_metric(&FX.srv, "impresence_shard_inflight", N, 10000 * IT_SLOW);
    cr_assert_eq(kill(FX.srv.pid, SIGTERM), 0);
    it_wait_shutting_down(&FX.srv, 10000 * IT_SLOW);
    it_redis_resume(&FX.cache);
    for (int uid = 1; uid <= N; uid++) {
        ProtobufCMessage *m = NULL;
        cr_assert_eq(pc_recv(c, PR_METHOD_QUERY, &m), 0,
                     "request %d of %d in flight at SIGTERM was not answered: %s", uid, N, pc_error(c));
        Mpim__QueryRouteResp *q = (Mpim__QueryRouteResp *)m;
        char gw[32];
        snprintf(gw, sizeof(gw), "gw-%d:1", uid);
        cr_assert_eq(q->result->code, MPIM__CODE__OK, "answer %d: %s", uid, pc_code_name(q->result->code));
        cr_assert(it_bytes_eq(q->gateway_addr, gw), "answer %d is not its own", uid);
        it_free(q);
    }
    pc_close(c);
    expect_exit_0(&FX.srv, SIGTERM);
}

IT(lifecycle, sigterm_during_large_pipeline_every_answer_correct_and_exit_0)
{
    fx_start_server();
    struct pc_client *c = it_connect();
    for (int uid = 1; uid <= 100; uid += 2) {
        Mpim__BindRouteResp *b = it_bind(c, uid, "gw-odd:1");
        cr_assert_eq(b->result->code, MPIM__CODE__OK);
        it_free(b);
    }
    enum { N = 3000 };
    for (int i = 0; i < N; i++) {
        Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
        q.user_id = 1 + i % 100;
        cr_assert_eq(pc_send(c, PR_METHOD_QUERY, &q.base), 0);
    }
    cr_assert_eq(pc_flush(c), 0);
    cr_assert_eq(kill(FX.srv.pid, SIGTERM), 0);
    int answered = 0;
    for (int i = 0; i < N; i++) {
        ProtobufCMessage *m = NULL;
        if (pc_recv(c, PR_METHOD_QUERY, &m) < 0)
            break; /* closed after the server's last answer */
        Mpim__QueryRouteResp *q = (Mpim__QueryRouteResp *)m;
        int uid = 1 + i % 100;
        if (uid % 2 == 1) {
            cr_assert_eq(q->result->code, MPIM__CODE__OK, "answer %d: %s", i, pc_code_name(q->result->code));
            cr_assert(it_bytes_eq(q->gateway_addr, "gw-odd:1"));
        } else {
            cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND, "answer %d: %s", i,
                         pc_code_name(q->result->code));
        }
        it_free(q);
        answered++;
    }
    cr_log_info("%d of %d pipelined requests answered after SIGTERM", answered, N);
    pc_close(c);
    expect_exit_0(&FX.srv, SIGTERM);
}

IT(lifecycle, sigterm_never_executes_a_request_it_does_not_answer)
{
    /* A pipeline of Binds cut by SIGTERM: every Bind that ran was answered, and every Bind that
     * was not answered left no route behind (so a client may safely resend it). */
    fx_start_server();
    struct pc_client *c = it_connect();
    enum { N = 3000 };
    for (int uid = 1; uid <= N; uid++) {
        char gw[32];
        snprintf(gw, sizeof(gw), "gw-%d:1", uid);
        Mpim__BindRouteReq b = MPIM__BIND_ROUTE_REQ__INIT;
        b.user_id = uid;
        b.gateway_addr = it_bytes(gw);
        cr_assert_eq(pc_send(c, PR_METHOD_BIND, &b.base), 0);
    }
    cr_assert_eq(pc_flush(c), 0);
    cr_assert_eq(kill(FX.srv.pid, SIGTERM), 0);
    int answered = 0;
    for (int uid = 1; uid <= N; uid++) {
        ProtobufCMessage *m = NULL;
        if (pc_recv(c, PR_METHOD_BIND, &m) < 0)
            break;
        Mpim__BindRouteResp *b = (Mpim__BindRouteResp *)m;
        cr_assert_eq(b->result->code, MPIM__CODE__OK, "answer %d: %s '%s'", uid,
                     pc_code_name(b->result->code), b->result->msg);
        it_free(b);
        answered++;
    }
    pc_close(c);
    expect_exit_0(&FX.srv, SIGTERM);
    cr_log_info("%d of %d pipelined binds answered after SIGTERM", answered, N);
    /* route, status and sessions per user, and its gateway's session index (one gateway each) */
    long long routes = it_rdbsize(FX.cache.port, 0) / 4;
    cr_assert_eq(routes, answered, "%lld binds ran but only %d were answered", routes, answered);
    for (int uid = answered + 1; uid <= N; uid += 97) {
        char key[48];
        snprintf(key, sizeof(key), "user:route:%d", uid);
        cr_assert_not(it_rexists(FX.cache.port, 0, key), "unanswered bind %d ran", uid);
    }
}

IT(lifecycle, sigint_exits_0)
{
    fx_start_server();
    struct pc_client *c = it_connect();
    Mpim__QueryRouteResp *q = it_query(c, 1);
    it_free(q);
    pc_close(c);
    expect_exit_0(&FX.srv, SIGINT);
}

IT(lifecycle, sigterm_with_idle_connections_open_exits_0)
{
    fx_start_server();
    struct pc_client *c[5];
    for (int i = 0; i < 5; i++)
        c[i] = it_connect();
    int raw = it_tcp_connect(FX.srv.port);
    static const uint8_t half[] = {20, 0, 0}; /* half a length prefix, never finished */
    it_write_all(raw, half, sizeof(half));
    expect_exit_0(&FX.srv, SIGTERM);
    for (int i = 0; i < 5; i++)
        pc_close(c[i]);
    close(raw);
}

IT(lifecycle, sigterm_stops_accepting)
{
    fx_start_server();
    int port = FX.srv.port;
    expect_exit_0(&FX.srv, SIGTERM);
    const char *err = NULL;
    struct pc_client *c = pc_connect("127.0.0.1", port, 1000, &err);
    cr_assert_null(c, "still accepting after exit");
}

/* ------------------------------------------------------------- config */

/* Run the server on a config file expected to be refused; returns stderr (caller frees). */
static char *expect_refused(const char *path, const char *const *extra, int want_exit)
{
    const char *argv[16] = {it_server_bin(), "-c", path};
    int n = 3;
    for (int i = 0; extra != NULL && extra[i] != NULL; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    char *err = NULL;
    int code = it_run(argv, NULL, &err, 10000 * IT_SLOW);
    cr_assert_neq(code, -1, "the server kept running on a bad configuration (%s)", path);
    cr_assert_eq(code, want_exit, "exit %d on a bad configuration, want %d; stderr: %s", code, want_exit,
                 err);
    return err;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

IT(lifecycle, invalid_config_value_exits_2_naming_file_line_and_key)
{
    static const struct {
        const char *section, *key, *value;
    } bad[] = {
        {"presence_service", "thread_count", "lots"},
        {"presence_service", "thread_count", "0"},
        {"presence_service", "port", "70000"},
        {"presence_service", "max_connections", "-1"},
        {"presence_service", "log_level", "loud"},
        {"route", "route_ttl", "0"},
        {"route", "retry_interval", "1s"},
        {"redis_cache", "port", "abc"},
        {"redis_queue", "timeout", "-5"},
        {"presence_service", "max_frame_bytes", "1x"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s", it_path("bad.conf"));
        /* Line 1 a comment, line 2 the section, line 3 a good key, line 4 the bad one. */
        char text[512];
        snprintf(text, sizeof(text), "; test config\n[%s]\nhost = 127.0.0.1\n%s = %s\n", bad[i].section,
                 bad[i].key, bad[i].value);
        write_text(path, text);
        char *err = expect_refused(path, NULL, 2);
        char where[PATH_MAX + 16];
        snprintf(where, sizeof(where), "%s:4", path);
        cr_assert_not_null(strstr(err, where), "[%s] %s = %s: stderr does not name '%s': %s", bad[i].section,
                           bad[i].key, bad[i].value, where, err);
        cr_assert_not_null(strstr(err, bad[i].key), "[%s] %s = %s: stderr does not name the key: %s",
                           bad[i].section, bad[i].key, bad[i].value, err);
        free(err);
    }
}

IT(lifecycle, invalid_value_in_last_section_of_full_file_is_refused)
{
    /* A complete, otherwise good file: the bad value on its last lines is still found. */
    it_config_set(&FX.cfg, "presence_service", "port", "1");
    it_config_set(&FX.cfg, "redis_queue", "database", "minus-one");
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s", it_path("late.conf"));
    it_config_write(&FX.cfg, path);
    char *err = expect_refused(path, NULL, 2);
    cr_assert_not_null(strstr(err, path), "stderr does not name the file: %s", err);
    cr_assert_not_null(strstr(err, "database"), "stderr does not name the key: %s", err);
    cr_assert_not_null(strstr(err, "redis_queue"), "stderr does not name the section: %s", err);
    free(err);
}

IT(lifecycle, unknown_key_warns_and_server_starts)
{
    it_config_set(&FX.cfg, "presence_service", "frobnicate_level", "11");
    it_config_set(&FX.cfg, "totally_new_section", "whatever", "1");
    fx_start_server();
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 1, "gw-1:1");
    cr_assert_eq(b->result->code, MPIM__CODE__OK);
    it_free(b);
    pc_close(c);
    char *log = it_read_file(FX.srv.log);
    cr_assert_not_null(log);
    cr_assert_not_null(strstr(log, "frobnicate_level"), "no warning naming the unknown key: %s", log);
    cr_assert_not_null(strstr(log, FX.srv.conf), "the warning does not name the file: %s", log);
    free(log);
}

/* Two distinct free ports. */
static void two_free_ports(int *first, int *second)
{
    *first = it_free_port();
    do
        *second = it_free_port();
    while (*second == *first);
}

IT(lifecycle, design_config_file_works_unchanged)
{
    /* The design document's file, comments and all, with only the ports changed. */
    int port, unused;
    two_free_ports(&port, &unused);
    char text[1024];
    snprintf(text, sizeof(text),
             "# Presence服务配置\n"
             "[presence_service]\n"
             "port = %d\n"
             "thread_count = 4\n"
             "max_connections = 1000\n"
             "\n"
             "# 路由配置\n"
             "[route]\n"
             "route_ttl = 3600\n"
             "status_ttl = 3600\n"
             "max_retries = 3\n"
             "retry_interval = 1000\n"
             "\n"
             "# Redis配置\n"
             "[redis_cache]\n"
             "host = 127.0.0.1\n"
             "port = %d\n"
             "database = 0\n"
             "timeout = 5000\n"
             "\n"
             "[redis_queue]\n"
             "host = 127.0.0.1\n"
             "port = %d\n"
             "database = 1\n"
             "timeout = 5000\n",
             port, FX.cache.port, FX.cache.port);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s", it_path("design.conf"));
    write_text(path, text);
    it_server_spawn_file(&FX.srv, path, port, NULL);
    cr_assert_eq(it_server_wait_ready(&FX.srv, 10000 * IT_SLOW), 0, "did not start on the design's file");
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 1, "gw-1:1");
    cr_assert_eq(b->result->code, MPIM__CODE__OK, "%s", b->result->msg);
    it_free(b);
    pc_close(c);
    long long ttl = it_rttl(FX.cache.port, 0, "user:route:1");
    cr_assert(ttl > 3500 && ttl <= 3600, "route_ttl = 3600 not applied (TTL %lld)", ttl);
}

IT(lifecycle, port_flag_overrides_config_file)
{
    /* The file names one free port, the flag another: the flag wins. */
    int file_port, flag_port;
    two_free_ports(&file_port, &flag_port);
    it_config_set(&FX.cfg, "presence_service", "port", "%d", file_port);
    char flag[16];
    snprintf(flag, sizeof(flag), "%d", flag_port);
    const char *extra[] = {"--port", flag, NULL};
    it_server_spawn(&FX.srv, &FX.cfg, extra);
    FX.srv.port = flag_port;
    cr_assert_eq(it_server_wait_ready(&FX.srv, 10000 * IT_SLOW), 0, "not listening on --port %d", flag_port);
    struct pc_client *c = it_connect_port(flag_port);
    Mpim__QueryRouteResp *q = it_query(c, 1);
    cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND);
    it_free(q);
    pc_close(c);
    const char *err = NULL;
    c = pc_connect("127.0.0.1", file_port, 1000, &err);
    cr_assert_null(c, "also listening on the file's port %d", file_port);
}

/* Threads of a process, from /proc. */
static int thread_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

IT(lifecycle, shards_flag_overrides_thread_count)
{
    it_config_set(&FX.cfg, "presence_service", "thread_count", "1");
    fx_start_server();
    /* The server listens only once every thread exists: no need to wait for them to settle. */
    int one = thread_count(FX.srv.pid);
    it_server_stop_clean(&FX.srv);

    const char *extra[] = {"--shards", "7", NULL};
    it_config_set(&FX.cfg, "presence_service", "port", "0");
    it_server_start(&FX.srv, &FX.cfg, extra);
    int seven = thread_count(FX.srv.pid);
    cr_assert_eq(seven - one, 6, "--shards 7 over thread_count 1: %d threads vs %d", seven, one);
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 1, "gw-1:1");
    cr_assert_eq(b->result->code, MPIM__CODE__OK);
    it_free(b);
    pc_close(c);
}

IT(lifecycle, invalid_flag_values_exit_2)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s", it_path("good.conf"));
    it_config_set(&FX.cfg, "presence_service", "port", "1");
    it_config_write(&FX.cfg, path);
    static const char *const cases[][3] = {
        {"--log-level", "loud", NULL}, {"--shards", "0", NULL},  {"--shards", "many", NULL},
        {"--port", "70000", NULL},     {"--port", "http", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *err = expect_refused(path, cases[i], 2);
        cr_assert_str_neq(err, "", "%s %s: refused without a word on stderr", cases[i][0], cases[i][1]);
        free(err);
    }
}

IT(lifecycle, log_level_flag_overrides_file)
{
    /* The file says error; --log-level debug must produce more than the error-level run. */
    it_config_set(&FX.cfg, "presence_service", "log_level", "error");
    fx_start_server();
    struct pc_client *c = it_connect();
    Mpim__QueryRouteResp *q = it_query(c, 1);
    it_free(q);
    pc_close(c);
    it_server_stop_clean(&FX.srv);
    char *quiet = it_read_file(FX.srv.log);
    cr_assert_not_null(quiet);

    const char *extra[] = {"--log-level", "debug", NULL};
    it_config_set(&FX.cfg, "presence_service", "port", "0");
    it_server_start(&FX.srv, &FX.cfg, extra);
    c = it_connect();
    q = it_query(c, 1);
    it_free(q);
    pc_close(c);
    it_server_stop_clean(&FX.srv);
    char *loud = it_read_file(FX.srv.log);
    cr_assert_not_null(loud);
    cr_assert_gt(strlen(loud), strlen(quiet), "--log-level debug logged no more than error level");
    free(quiet);
    free(loud);
}

IT(lifecycle, missing_config_file_is_refused)
{
    const char *argv[] = {it_server_bin(), "-c", "/nonexistent/im-presence.conf", NULL};
    char *err = NULL;
    int code = it_run(argv, NULL, &err, 10000 * IT_SLOW);
    cr_assert(code != 0 && code != -1, "exit %d for a missing config file", code);
    cr_assert_not_null(strstr(err, "/nonexistent/im-presence.conf"), "stderr: %s", err);
    free(err);
}

IT(lifecycle, port_in_use_fails_to_start_without_hanging)
{
    fx_start_server();
    struct it_server second;
    memset(&second, 0, sizeof(second));
    struct it_config cfg = FX.cfg; /* same port */
    it_server_spawn(&second, &cfg, NULL);
    int status = it_wait_pid(second.pid, 10000 * IT_SLOW);
    cr_assert_neq(status, -1, "a server whose port is taken kept running");
    second.pid = 0;
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0, "want a non-zero exit, got %d", status);
    /* The first one is unaffected. */
    struct pc_client *c = it_connect();
    Mpim__QueryRouteResp *q = it_query(c, 1);
    it_free(q);
    pc_close(c);
}

/* ---------------------------------------------------------- max_connections */

IT(lifecycle, connection_over_max_connections_is_closed_at_once)
{
    it_config_set(&FX.cfg, "presence_service", "max_connections", "2");
    fx_start_server();
    /* The readiness probe's connection is gone (the metrics connection is not counted). */
    it_wait_metric(&FX.srv, "impresence_connections_open", 0, 10000 * IT_SLOW);
    struct pc_client *a = it_connect();
    struct pc_client *b = it_connect();
    Mpim__QueryRouteResp *q = it_query(a, 1);
    it_free(q);
    q = it_query(b, 1);
    it_free(q);

    int third = it_tcp_connect(FX.srv.port);
    cr_assert_eq(it_wait_closed(third, 3000 * IT_SLOW), 1,
                 "a third connection over "
                 "max_connections = 2 was not closed");
    close(third);

    /* The first two keep working. */
    Mpim__BindRouteResp *bb = it_bind(a, 1, "gw-1:1");
    cr_assert_eq(bb->result->code, MPIM__CODE__OK);
    it_free(bb);
    q = it_query(b, 1);
    cr_assert_eq(q->result->code, MPIM__CODE__OK);
    it_free(q);

    /* A slot freed by a close is usable again. */
    pc_close(a);
    double deadline = it_mono_ms() + 3000.0 * IT_SLOW;
    bool served = false;
    while (!served && it_mono_ms() < deadline) {
        const char *err = NULL;
        struct pc_client *c = pc_connect("127.0.0.1", FX.srv.port, 2000, &err);
        if (c != NULL) {
            ProtobufCMessage *m = NULL;
            Mpim__QueryRouteReq req = MPIM__QUERY_ROUTE_REQ__INIT;
            req.user_id = 1;
            if (pc_call(c, PR_METHOD_QUERY, &req.base, &m) == 0) {
                served = true;
                protobuf_c_message_free_unpacked(m, NULL);
            }
            pc_close(c);
        }
        if (!served)
            it_sleep_ms(50);
    }
    cr_assert(served, "a slot freed by a closed connection was never reused");
    pc_close(b);
}
