/* Overload and resource limits (docs/failure-modes.md, "Overload and limits"; contract §6):
 * a full reorder window stops reading the socket (backpressure, nothing dropped); a full shard
 * answers OVERLOADED at once; a client that does not read is cut off at max_output_bytes and
 * nobody else notices; quiet connections close after idle_timeout; frame and message size
 * limits; Redis AUTH with a password and with an ACL user. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/frame.h"
#include "harness.h"

TestSuite(limits, .init = fx_init_redis, .fini = fx_fini, .timeout = IT_TIMEOUT);

/* Scheduling, sanitizers, a loaded CI machine: what an answer may take beyond its bound. */
#define SLACK_MS (1500.0 * IT_SLOW)

/* ------------------------------------------------------------------ helpers */

/* A growing buffer of request frames, sent in one write. */
struct frames {
    uint8_t *buf;
    size_t len, cap;
};

static void frames_add(struct frames *f, const char *method, const ProtobufCMessage *args)
{
    size_t alen = protobuf_c_message_get_packed_size(args);
    uint8_t abuf[512];
    cr_assert_leq(alen, sizeof(abuf));
    protobuf_c_message_pack(args, abuf);
    size_t n = frame_request_size(IT_SERVICE, method, alen);
    if (f->len + n > f->cap) {
        f->cap = f->cap ? f->cap * 2 : 65536;
        while (f->cap < f->len + n)
            f->cap *= 2;
        f->buf = realloc(f->buf, f->cap);
        cr_assert_not_null(f->buf);
    }
    f->len += frame_write_request(f->buf + f->len, IT_SERVICE, method, abuf, alen);
}

static void frames_add_query(struct frames *f, int64_t uid)
{
    Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
    q.user_id = uid;
    frames_add(f, "QueryRoute", &q.base);
}

static void gw_name(char *out, size_t n, int64_t uid)
{
    snprintf(out, n, "g%lld", (long long)uid);
}

/* Bind every uid in [from, to] with step `step` to g<uid>, pipelined. */
static void bind_range(struct pc_client *c, int64_t from, int64_t to, int64_t step)
{
    for (int64_t uid = from; uid <= to; uid += step) {
        char gw[32];
        gw_name(gw, sizeof(gw), uid);
        Mpim__BindRouteReq b = MPIM__BIND_ROUTE_REQ__INIT;
        b.user_id = uid;
        b.gateway_addr = it_bytes(gw);
        cr_assert_eq(pc_send(c, PR_METHOD_BIND, &b.base), 0);
    }
    cr_assert_eq(pc_flush(c), 0, "%s", pc_error(c));
    for (int64_t uid = from; uid <= to; uid += step) {
        Mpim__BindRouteResp *r = (Mpim__BindRouteResp *)it_recv(c, PR_METHOD_BIND);
        cr_assert_eq(r->result->code, MPIM__CODE__OK, "bind %lld: %s '%s'", (long long)uid,
                     pc_code_name(r->result->code), r->result->msg);
        it_free(r);
    }
}

/* The next answer is the Query of uid: OK with g<uid> if bound, else NOT_FOUND. */
static void expect_query(struct pc_client *c, int index, int64_t uid, bool bound)
{
    Mpim__QueryRouteResp *q = (Mpim__QueryRouteResp *)it_recv(c, PR_METHOD_QUERY);
    if (bound) {
        char gw[32];
        gw_name(gw, sizeof(gw), uid);
        cr_assert_eq(q->result->code, MPIM__CODE__OK, "answer %d (user %lld): got %s '%s'", index,
                     (long long)uid, pc_code_name(q->result->code), q->result->msg);
        cr_assert(it_bytes_eq(q->gateway_addr, gw), "answer %d is not user %lld's: gateway '%.*s'", index,
                  (long long)uid, (int)q->gateway_addr.len, q->gateway_addr.data);
    } else {
        cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND, "answer %d (user %lld): got %s '%s'", index,
                     (long long)uid, pc_code_name(q->result->code), q->result->msg);
    }
    it_free(q);
}

/* Wait until series reaches want (counters move a moment after the event they count). */
static void expect_metric(const char *series, double want)
{
    it_wait_metric(&FX.srv, series, want, 2000 * IT_SLOW);
}

/* Write as much of buf as the peer takes; stops at the first error (the peer closed). Returns
 * the bytes written. */
static size_t write_until_error(int fd, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    return off;
}

/* ----------------------------------------------------------- backpressure */

IT(limits, full_reorder_window_stops_reading_and_drops_nothing)
{
    /* max_inflight = 4: the server holds at most 4 of this connection's requests and leaves the
     * rest in the socket until answers go out. All 1000 must still come back, right, in order. */
    it_config_set(&FX.cfg, "presence_service", "max_inflight", "4");
    fx_start_server();
    enum { N = 1000, USERS = 100 };
    struct pc_client *c = it_connect();
    bind_range(c, 1, USERS, 2); /* odd users have routes */
    struct frames f = {0};
    for (int i = 0; i < N; i++)
        frames_add_query(&f, 1 + i % USERS);
    cr_assert_eq(pc_send_raw(c, f.buf, f.len), 0);
    cr_assert_eq(pc_flush(c), 0, "%s", pc_error(c));
    free(f.buf);
    for (int i = 0; i < N; i++) {
        int64_t uid = 1 + i % USERS;
        expect_query(c, i, uid, uid % 2 == 1);
    }
    /* The connection is in step afterwards. */
    Mpim__QueryRouteResp *q = it_query(c, 1);
    cr_assert(q->result->code == MPIM__CODE__OK && it_bytes_eq(q->gateway_addr, "g1"));
    it_free(q);
    pc_close(c);
}

IT(limits, full_shard_queue_answers_overloaded_at_once_and_keeps_order)
{
    /* One shard that may hold one request. With its Redis hung, the first Query sits in the
     * shard; every later one is answered OVERLOADED at once, queued behind the first in the
     * reply order of its connection; nothing waits or spins. */
    it_config_set(&FX.cfg, "presence_service", "thread_count", "1");
    it_config_set(&FX.cfg, "presence_service", "queue_depth", "1");
    it_config_set(&FX.cfg, "redis_cache", "timeout", "%d", 3000 * IT_SLOW);
    it_config_set(&FX.cfg, "redis_queue", "timeout", "%d", 3000 * IT_SLOW);
    fx_start_server();
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 1, "gw-1:1");
    cr_assert_eq(b->result->code, MPIM__CODE__OK);
    it_free(b);

    it_redis_pause(&FX.cache);
    enum { N = 50 };
    for (int i = 0; i < N; i++) {
        Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
        q.user_id = 1;
        cr_assert_eq(pc_send(c, PR_METHOD_QUERY, &q.base), 0);
    }
    cr_assert_eq(pc_flush(c), 0);
    /* All read: the first is held by the hung Redis, the others were answered OVERLOADED. */
    it_wait_metric(&FX.srv, "impresence_requests_total{method=\"QueryRoute\",code=\"OVERLOADED\"}", N - 1,
                   10000 * IT_SLOW);
    it_wait_metric(&FX.srv, "impresence_shard_inflight", 1, 10000 * IT_SLOW);

    /* Another connection is refused at once, not after the Redis timeout. */
    struct pc_client *other = it_connect();
    double t0 = it_mono_ms();
    Mpim__QueryRouteResp *q = it_query(other, 1);
    double ms = it_mono_ms() - t0;
    cr_assert_eq(q->result->code, MPIM__CODE__OVERLOADED, "a request to a full shard got %s '%s'",
                 pc_code_name(q->result->code), q->result->msg);
    cr_assert_not_null(strstr(q->result->msg, "queue full"), "OVERLOADED msg '%s'", q->result->msg);
    cr_assert_lt(ms, 1000.0 * IT_SLOW, "OVERLOADED took %.0f ms: the acceptor waited for the shard", ms);
    it_free(q);

    it_redis_resume(&FX.cache);
    for (int i = 0; i < N; i++) {
        q = (Mpim__QueryRouteResp *)it_recv(c, PR_METHOD_QUERY);
        if (i == 0) {
            cr_assert_eq(q->result->code, MPIM__CODE__OK, "the held request got %s '%s'",
                         pc_code_name(q->result->code), q->result->msg);
            cr_assert(it_bytes_eq(q->gateway_addr, "gw-1:1"));
        } else {
            cr_assert_eq(q->result->code, MPIM__CODE__OVERLOADED, "answer %d: got %s '%s'", i,
                         pc_code_name(q->result->code), q->result->msg);
            cr_assert_str_eq(q->result->msg, "shard 0 queue full, retry later", "answer %d", i);
        }
        it_free(q);
    }
    /* Served normally again once the shard has room. */
    q = it_query(other, 1);
    cr_assert_eq(q->result->code, MPIM__CODE__OK, "after the overload: %s '%s'",
                 pc_code_name(q->result->code), q->result->msg);
    it_free(q);
    pc_close(other);
    pc_close(c);
    expect_metric("impresence_requests_total{method=\"QueryRoute\",code=\"OVERLOADED\"}", N);
}

/* ------------------------------------------------------------ slow reader */

/* A client connection whose receive buffer (and so TCP window) is small: the server's answers
 * back up in the server, not in our kernel. */
static int connect_small_rcvbuf(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0, "socket: %s", strerror(errno));
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "connect :%d: %s", port, strerror(errno));
    return fd;
}

IT(limits, client_that_never_reads_is_closed_past_max_output_bytes_others_unaffected)
{
    it_config_set(&FX.cfg, "presence_service", "max_output_bytes", "65536");
    fx_start_server();
    struct pc_client *other = it_connect();
    /* Answers ~7x the size of their requests: a 255-byte gateway. */
    char gw[256];
    memset(gw, 'x', 255);
    gw[255] = '\0';
    Mpim__BindRouteResp *b = it_bind(other, 1, gw);
    cr_assert_eq(b->result->code, MPIM__CODE__OK);
    it_free(b);

    int fd = connect_small_rcvbuf(FX.srv.port);

    enum { CHUNK = 1000, MAX_QUERIES = 400000 };
    struct frames f = {0};
    for (int i = 0; i < CHUNK; i++)
        frames_add_query(&f, 1);
    size_t frame_len = f.len / CHUNK;
    /* Write queries and never read, until the server closes the connection. */
    size_t sent = 0;
    bool closed = false;
    double deadline = it_mono_ms() + 30000.0 * IT_SLOW;
    while (!closed && sent < (size_t)MAX_QUERIES * frame_len && it_mono_ms() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, 100) <= 0)
            continue;
        size_t at = sent % f.len;
        ssize_t n = send(fd, f.buf + at, f.len - at, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0)
            sent += (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            closed = true; /* EPIPE / ECONNRESET */
    }
    free(f.buf);
    cr_log_info("slow reader: %zu queries written before the close", sent / frame_len);

    /* Reading now finds what the kernel still holds, then the end. */
    size_t got = 0;
    bool ended = false;
    deadline = it_mono_ms() + 10000.0 * IT_SLOW;
    while (!ended && it_mono_ms() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        char buf[65536];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0)
            got += (size_t)n;
        else if (n == 0 || (errno != EAGAIN && errno != EINTR))
            ended = true;
    }
    close(fd);
    cr_assert(ended,
              "the server did not close a client that never reads (%zu requests written, "
              "%zu bytes of answers read afterwards)",
              sent / frame_len, got);
    size_t answer_len = 4 + 2 + 3 + 255 + 2; /* prefix, result{}, gateway, is_online */
    cr_assert_lt(got, sent / frame_len * answer_len, "every answer arrived: the connection was not cut");
    expect_metric("impresence_connections_output_overflow_total", 1);

    /* The other client never noticed. */
    Mpim__QueryRouteResp *q = it_query(other, 1);
    cr_assert_eq(q->result->code, MPIM__CODE__OK);
    cr_assert(it_bytes_eq(q->gateway_addr, gw));
    it_free(q);
    pc_close(other);
    char *log = it_read_file(FX.srv.log);
    cr_assert_not_null(strstr(log, "max_output_bytes"), "the close was not logged");
    free(log);
}

/* ----------------------------------------------------------- idle timeout */

IT(limits, idle_connection_closed_after_idle_timeout_busy_one_kept)
{
    it_config_set(&FX.cfg, "presence_service", "idle_timeout", "1");
    fx_start_server();
    int idle = it_tcp_connect(FX.srv.port);
    struct pc_client *busy = it_connect();
    double t0 = it_mono_ms(), idle_closed_ms = -1;
    int requests = 0;
    while (it_mono_ms() - t0 < 3000) {
        Mpim__QueryRouteResp *q = NULL;
        cr_assert_eq(pc_query(busy, 1, &q), 0,
                     "a connection sending every 300 ms was closed after %.0f ms: %s", it_mono_ms() - t0,
                     pc_error(busy));
        cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND);
        it_free(q);
        requests++;
        if (idle_closed_ms < 0) {
            int rc = it_wait_closed(idle, 300);
            cr_assert_neq(rc, 0, "data on a connection that asked nothing");
            if (rc == 1)
                idle_closed_ms = it_mono_ms() - t0;
        } else {
            it_sleep_ms(300);
        }
    }
    close(idle);
    cr_assert_geq(idle_closed_ms, 0, "an idle connection was still open after %.0f ms (idle_timeout 1 s)",
                  it_mono_ms() - t0);
    cr_assert_geq(idle_closed_ms, 900, "an idle connection was closed after %.0f ms, before idle_timeout",
                  idle_closed_ms);
    cr_assert_leq(idle_closed_ms, 3000.0 * IT_SLOW,
                  "an idle connection took %.0f ms to close (idle_timeout 1 s, checked every second)",
                  idle_closed_ms);
    cr_log_info("idle connection closed after %.0f ms; %d requests on the busy one", idle_closed_ms,
                requests);
    Mpim__QueryRouteResp *q = it_query(busy, 1);
    it_free(q);
    pc_close(busy);
    expect_metric("impresence_connections_idle_closed_total", 1);
}

IT(limits, idle_timeout_never_cuts_a_request_in_flight)
{
    /* Quiet but waiting for an answer is not idle: the answer is written, then the close. */
    it_config_set(&FX.cfg, "presence_service", "idle_timeout", "1");
    it_config_set(&FX.cfg, "redis_cache", "timeout", "%d", 6000 * IT_SLOW);
    it_config_set(&FX.cfg, "redis_queue", "timeout", "%d", 6000 * IT_SLOW);
    fx_start_server();
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 1, "gw-1:1");
    it_free(b);
    it_redis_pause(&FX.cache);
    Mpim__QueryRouteReq req = MPIM__QUERY_ROUTE_REQ__INIT;
    req.user_id = 1;
    cr_assert_eq(pc_send(c, PR_METHOD_QUERY, &req.base), 0);
    cr_assert_eq(pc_flush(c), 0);
    it_wait_metric(&FX.srv, "impresence_shard_inflight", 1, 10000 * IT_SLOW);
    /* A witness, quiet since after c's last byte: once the idle sweep has closed it, the sweep
     * has also judged c, which had been quiet at least as long. */
    int witness = it_tcp_connect(FX.srv.port);
    cr_assert_eq(it_wait_closed(witness, 5000 * IT_SLOW), 1, "the idle witness was never closed");
    close(witness);
    it_redis_resume(&FX.cache);
    Mpim__QueryRouteResp *q = (Mpim__QueryRouteResp *)it_recv(c, PR_METHOD_QUERY);
    cr_assert_eq(q->result->code, MPIM__CODE__OK, "got %s '%s'", pc_code_name(q->result->code),
                 q->result->msg);
    cr_assert(it_bytes_eq(q->gateway_addr, "gw-1:1"));
    it_free(q);
    /* Now it is idle, and quiet for longer than idle_timeout: closed soon. */
    cr_assert_eq(it_wait_closed(pc_fd(c), 3000 * IT_SLOW), 1, "not closed once idle");
    pc_close(c);
}

/* ------------------------------------------------------------ many frames */

IT(limits, hundred_thousand_tiny_frames_in_one_write_answered_in_order)
{
    fx_start_server();
    enum { N = 100000, USERS = 700, BOUND_EVERY = 7, INVALID_EVERY = 1000 };
    struct pc_client *c = it_connect();
    bind_range(c, BOUND_EVERY, USERS, BOUND_EVERY);
    struct frames f = {0};
    for (int i = 0; i < N; i++)
        frames_add_query(&f, i % INVALID_EVERY == INVALID_EVERY - 1 ? 0 : 1 + i % USERS);
    double t0 = it_mono_ms();
    cr_assert_eq(pc_send_raw(c, f.buf, f.len), 0);
    cr_assert_eq(pc_flush(c), 0, "%s", pc_error(c));
    free(f.buf);
    for (int i = 0; i < N; i++) {
        if (i % INVALID_EVERY == INVALID_EVERY - 1) {
            Mpim__QueryRouteResp *q = (Mpim__QueryRouteResp *)it_recv(c, PR_METHOD_QUERY);
            cr_assert_eq(q->result->code, MPIM__CODE__INVALID, "answer %d: got %s", i,
                         pc_code_name(q->result->code));
            it_free(q);
            continue;
        }
        int64_t uid = 1 + i % USERS;
        expect_query(c, i, uid, uid % BOUND_EVERY == 0);
    }
    cr_log_info("100,000 pipelined queries answered in %.0f ms", it_mono_ms() - t0);
    pc_close(c);
}

/* ------------------------------------------------------- frame and message size */

static uint8_t *deliver_frame(int64_t uid, size_t payload_len, uint8_t **payload, size_t *len)
{
    uint8_t *p = malloc(payload_len);
    cr_assert_not_null(p);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < payload_len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
    Mpim__DeliverReq d = MPIM__DELIVER_REQ__INIT;
    d.user_id = uid;
    d.message.data = p;
    d.message.len = payload_len;
    d.message_type = it_bytes("blob");
    uint8_t *f = it_frame(IT_SERVICE, "Deliver", &d.base, len);
    *payload = p;
    return f;
}

IT(limits, two_mib_deliver_over_default_max_frame_closes_only_that_connection)
{
    fx_start_server();
    struct pc_client *other = it_connect();
    Mpim__BindRouteResp *b = it_bind(other, 5, "gw-5:1");
    it_free(b);
    const char *ch[] = {"user:5", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);

    uint8_t *payload;
    size_t len;
    uint8_t *f = deliver_frame(5, 2u << 20, &payload, &len);
    int fd = it_tcp_connect(FX.srv.port);
    size_t written = write_until_error(fd, f, len);
    cr_log_info("%zu of %zu bytes written before the close", written, len);
    int rc = it_wait_closed(fd, 5000 * IT_SLOW);
    cr_assert_neq(rc, 0, "the server replied to a 2 MiB frame over max_frame_bytes (1 MiB)");
    cr_assert_eq(rc, 1, "the server did not close a connection sending a 2 MiB frame");
    close(fd);
    free(f);
    free(payload);
    expect_metric("impresence_protocol_errors_total", 1);

    it_sub_expect_nothing(s, "user:5");
    it_sub_close(s);
    Mpim__QueryRouteResp *q = it_query(other, 5);
    cr_assert_eq(q->result->code, MPIM__CODE__OK);
    it_free(q);
    pc_close(other);
    struct pc_client *fresh = it_connect();
    q = it_query(fresh, 5);
    cr_assert_eq(q->result->code, MPIM__CODE__OK);
    it_free(q);
    pc_close(fresh);
}

IT(limits, two_mib_deliver_with_raised_limits_arrives_byte_exact)
{
    it_config_set(&FX.cfg, "presence_service", "max_frame_bytes", "4m");
    it_config_set(&FX.cfg, "presence_service", "max_message_bytes", "4m");
    fx_start_server();
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 5, "gw-5:1");
    it_free(b);
    const char *ch[] = {"user:5", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    uint8_t *payload;
    size_t len;
    uint8_t *f = deliver_frame(5, 2u << 20, &payload, &len);
    cr_assert_eq(pc_send_raw(c, f, len), 0);
    cr_assert_eq(pc_flush(c), 0, "%s", pc_error(c));
    Mpim__DeliverResp *d = (Mpim__DeliverResp *)it_recv(c, PR_METHOD_DELIVER);
    cr_assert_eq(d->result->code, MPIM__CODE__OK, "got %s '%s'", pc_code_name(d->result->code),
                 d->result->msg);
    cr_assert(d->delivered);
    it_free(d);
    it_sub_expect(s, "user:5", payload, 2u << 20);
    it_sub_close(s);
    free(f);
    free(payload);
    pc_close(c);
}

/* -------------------------------------------------------------- Redis AUTH */

/* A Redis connection that authenticates first (user NULL: the default user). */
static redisContext *auth_connect(int port, const char *user, const char *password)
{
    redisContext *r = it_rconnect(port, 0);
    redisReply *rep =
        user != NULL ? redisCommand(r, "AUTH %s %s", user, password) : redisCommand(r, "AUTH %s", password);
    cr_assert(rep != NULL && rep->type == REDIS_REPLY_STATUS, "AUTH failed: %s",
              rep != NULL && rep->str != NULL ? rep->str : r->errstr);
    freeReplyObject(rep);
    return r;
}

static redisReply *auth_cmd(redisContext *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(r, fmt, ap);
    va_end(ap);
    cr_assert_not_null(rep, "redis: %s", r->errstr);
    cr_assert_neq(rep->type, REDIS_REPLY_ERROR, "redis: %s", rep->str);
    return rep;
}

static void set_auth(const char *user, const char *password)
{
    const char *sections[] = {"redis_cache", "redis_queue"};
    for (int i = 0; i < 2; i++) {
        if (user != NULL)
            it_config_set(&FX.cfg, sections[i], "username", "%s", user);
        it_config_set(&FX.cfg, sections[i], "password", "%s", password);
    }
}

/* Bind, query and a delivered Deliver, checked against Redis through an authenticated link. */
static void expect_served_with_auth(redisContext *r)
{
    cr_assert_eq(it_http_wait_status(it_metrics_port(&FX.srv), "/healthz", 200, 5000 * IT_SLOW, NULL), 200,
                 "/healthz never 200 with the right credentials");
    redisContext *sub = auth_connect(FX.cache.port, NULL, "secret");
    freeReplyObject(auth_cmd(sub, "SUBSCRIBE user:7"));

    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 7, "gw-7:7000");
    cr_assert_eq(b->result->code, MPIM__CODE__OK, "bind: %s '%s'", pc_code_name(b->result->code),
                 b->result->msg);
    cr_assert_str_eq(b->result->msg, "", "the route notice was not published: '%s'", b->result->msg);
    it_free(b);
    redisReply *v = auth_cmd(r, "GET user:route:7");
    cr_assert(v->type == REDIS_REPLY_STRING && strcmp(v->str, "gw-7:7000") == 0, "route not written");
    freeReplyObject(v);
    Mpim__QueryRouteResp *q = it_query(c, 7);
    cr_assert_eq(q->result->code, MPIM__CODE__OK);
    cr_assert(it_bytes_eq(q->gateway_addr, "gw-7:7000"));
    it_free(q);
    Mpim__DeliverResp *d = it_deliver(c, 7, "hello", 5, NULL);
    cr_assert_eq(d->result->code, MPIM__CODE__OK, "deliver: %s '%s'", pc_code_name(d->result->code),
                 d->result->msg);
    cr_assert(d->delivered, "a subscriber was listening on user:7");
    it_free(d);
    redisReply *m = NULL;
    cr_assert_eq(redisGetReply(sub, (void **)&m), REDIS_OK, "subscriber: %s", sub->errstr);
    cr_assert(m->type == REDIS_REPLY_ARRAY && m->elements == 3 && strcmp(m->element[2]->str, "hello") == 0,
              "unexpected message on user:7");
    freeReplyObject(m);
    redisFree(sub);
    pc_close(c);
}

IT(limits, redis_requirepass_with_right_password_works_end_to_end)
{
    it_rcmd(FX.cache.port, 0, "CONFIG SET requirepass secret");
    set_auth(NULL, "secret");
    fx_start_server();
    redisContext *r = auth_connect(FX.cache.port, NULL, "secret");
    expect_served_with_auth(r);
    redisFree(r);
}

IT(limits, redis_wrong_password_is_unavailable_never_hangs_and_unhealthy)
{
    it_rcmd(FX.cache.port, 0, "CONFIG SET requirepass secret");
    set_auth(NULL, "not-the-password");
    fx_start_server();
    struct pc_client *c = it_connect();
    double bound = 2000.0 * IT_SLOW + SLACK_MS; /* the Redis timeout */
    for (int i = 0; i < 5; i++) {
        double t0 = it_mono_ms();
        int code;
        switch (i) {
        case 0: {
            Mpim__BindRouteResp *r = it_bind(c, 1, "gw-1:1");
            code = r->result->code;
            it_free(r);
            break;
        }
        case 1: {
            Mpim__QueryRouteResp *r = it_query(c, 1);
            code = r->result->code;
            it_free(r);
            break;
        }
        case 2: {
            Mpim__DeliverResp *r = it_deliver(c, 1, "x", 1, NULL);
            code = r->result->code;
            it_free(r);
            break;
        }
        case 3: {
            Mpim__UnbindRouteResp *r = it_unbind(c, 1, "gw-1:1");
            code = r->result->code;
            it_free(r);
            break;
        }
        default: {
            Mpim__HeartbeatResp *r = it_heartbeat(c, 1, "gw-1:1");
            code = r->result->code;
            it_free(r);
            break;
        }
        }
        double ms = it_mono_ms() - t0;
        cr_assert_eq(code, MPIM__CODE__UNAVAILABLE, "request %d with a wrong Redis password: got %s", i,
                     pc_code_name(code));
        cr_assert_lt(ms, bound, "request %d took %.0f ms", i, ms);
    }
    pc_close(c);
    char *body = NULL;
    int status = it_http_wait_status(it_metrics_port(&FX.srv), "/healthz", 503, 3000 * IT_SLOW, &body);
    cr_assert_eq(status, 503, "/healthz %d with a wrong Redis password", status);
    cr_assert_not_null(strstr(body, "redis down"), "/healthz body '%s'", body);
    free(body);
    char *log = it_read_file(FX.srv.log);
    cr_assert_not_null(strstr(log, "AUTH failed"), "the failing AUTH was not logged");
    free(log);
    /* Nothing was written by anyone. */
    redisContext *r = auth_connect(FX.cache.port, NULL, "secret");
    redisReply *n = auth_cmd(r, "DBSIZE");
    cr_assert_eq(n->integer, 0);
    freeReplyObject(n);
    redisFree(r);
}

IT(limits, redis_acl_user_and_password_work)
{
    /* Redis 7 ACL: channels need &* (resetchannels is the default). */
    it_rcmd(FX.cache.port, 0, "ACL SETUSER gw on >pw ~* &* +@all");
    it_rcmd(FX.cache.port, 0, "CONFIG SET requirepass secret");
    set_auth("gw", "pw");
    fx_start_server();
    redisContext *r = auth_connect(FX.cache.port, NULL, "secret");
    expect_served_with_auth(r);
    /* The server's links really are the ACL user's. */
    redisReply *list = auth_cmd(r, "CLIENT LIST");
    cr_assert_eq(list->type, REDIS_REPLY_STRING);
    cr_assert_not_null(strstr(list->str, "user=gw "), "no connection as user gw:\n%s", list->str);
    freeReplyObject(list);
    redisFree(r);
}
