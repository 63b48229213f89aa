/* The metrics thread only (metrics_server_open/start/stop: main thread). */
#include "metrics/http.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/thread_role.h"

#define IO_TIMEOUT_MS 2000 /* a scraper gets this long to send its request and take the answer */
#define POLL_EVERY 5.0     /* seconds between Redis INFO polls */
#define POLL_TIMEOUT_MS 200 /* at most, per Redis poll */

/* --- Redis INFO poller --- */

static uint64_t info_field(const char *info, const char *key)
{
    const char *p = strstr(info, key);
    return p != NULL ? strtoull(p + strlen(key), NULL, 10) : 0;
}

static void poll_role(struct metrics_server *m, int role)
{
    const struct redis_conf *rc = role == 0 ? &m->view.conf->cache : &m->view.conf->queue;
    /* Short: this thread also answers /healthz, which must not wait long on the Redis whose
     * hang it is there to report. A poll that times out only leaves a gauge stale. */
    int ms = rc->timeout_ms < POLL_TIMEOUT_MS ? rc->timeout_ms : POLL_TIMEOUT_MS;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    redisContext *c = m->redis[role];
    if (c == NULL) {
        c = redisConnectWithTimeout(rc->host, rc->port, tv);
        if (c == NULL || c->err) {
            redisFree(c);
            return;
        }
        redisSetTimeout(c, tv);
        redisReply *r = rc->password[0] == '\0' ? NULL
                        : rc->username[0] != '\0'
                            ? redisCommand(c, "AUTH %s %s", rc->username, rc->password)
                            : redisCommand(c, "AUTH %s", rc->password);
        freeReplyObject(r);
        r = redisCommand(c, "SELECT %d", rc->database);
        freeReplyObject(r);
        m->redis[role] = c;
    }
    redisReply *r = redisCommand(c, "INFO memory");
    if (r == NULL || c->err) {
        freeReplyObject(r);
        redisFree(c);
        m->redis[role] = NULL;
        return;
    }
    if (r->type == REDIS_REPLY_STRING)
        counter_set(&m->gauges.used_memory[role], info_field(r->str, "used_memory:"));
    freeReplyObject(r);
    if (role == 0) {
        r = redisCommand(c, "DBSIZE");
        if (r != NULL && r->type == REDIS_REPLY_INTEGER)
            counter_set(&m->gauges.cache_keys, (uint64_t)r->integer);
        freeReplyObject(r);
    }
    counter_add(&m->gauges.polled, 1);
}

static void poll_redis(struct metrics_server *m)
{
    double now = (double)clock_mono_ns() / 1e9;
    if (now < m->next_poll)
        return;
    m->next_poll = now + POLL_EVERY;
    poll_role(m, 0);
    poll_role(m, 1);
}

/* --- HTTP --- */

static int wait_fd(int fd, short events, int ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int rc;
    do
        rc = poll(&p, 1, ms);
    while (rc < 0 && errno == EINTR);
    return rc > 0 ? 0 : -1;
}

static void send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        if (wait_fd(fd, POLLOUT, IO_TIMEOUT_MS) < 0)
            return;
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

static void respond(int fd, int status, const char *reason, const char *type, const char *body, size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, reason, type, len);
    send_all(fd, head, (size_t)n);
    send_all(fd, body, len);
}

static void serve(struct metrics_server *m, int fd)
{
    ASSERT_THREAD_OF(ROLE_METRICS, m);
    char req[2048];
    size_t len = 0;
    /* Read until the end of the request head, within the timeout. */
    while (len < sizeof(req) - 1) {
        if (wait_fd(fd, POLLIN, IO_TIMEOUT_MS) < 0)
            return;
        ssize_t n = recv(fd, req + len, sizeof(req) - 1 - len, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            return;
        len += (size_t)n;
        req[len] = '\0';
        if (strstr(req, "\r\n\r\n") != NULL || strstr(req, "\n\n") != NULL)
            break;
    }
    req[len] = '\0';
    char method[8], path[256];
    if (sscanf(req, "%7s %255s", method, path) != 2) {
        respond(fd, 400, "Bad Request", "text/plain", "bad request\n", 12);
        return;
    }
    if (strcmp(method, "GET") != 0) {
        respond(fd, 405, "Method Not Allowed", "text/plain", "GET only\n", 9);
        return;
    }
    char *q = strchr(path, '?');
    if (q != NULL)
        *q = '\0';
    char why[128], body[160];
    if (strcmp(path, "/metrics") == 0) {
        poll_redis(m);
        size_t n;
        char *text = metrics_render(&m->view, &n);
        if (text == NULL) {
            respond(fd, 500, "Internal Server Error", "text/plain", "out of memory\n", 14);
            return;
        }
        respond(fd, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text, n);
        free(text);
    } else if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0) {
        int rc = path[1] == 'h' ? metrics_health(&m->view, why, sizeof(why))
                                : metrics_ready(&m->view, why, sizeof(why));
        int n = snprintf(body, sizeof(body), "%s\n", why);
        respond(fd, rc == 0 ? 200 : 503, rc == 0 ? "OK" : "Service Unavailable", "text/plain", body, (size_t)n);
    } else {
        respond(fd, 404, "Not Found", "text/plain", "not found\n", 10);
    }
}

static void *metrics_main(void *arg)
{
    struct metrics_server *m = arg;
    thread_role_set(ROLE_METRICS, m);
    log_set_thread("metrics");
    for (;;) {
        struct pollfd p[2] = {{.fd = m->stop_pipe[0], .events = POLLIN}, {.fd = m->fd, .events = POLLIN}};
        int rc = poll(p, 2, 1000);
        if (rc < 0 && errno != EINTR)
            break;
        if (p[0].revents != 0)
            break;
        if (rc > 0 && (p[1].revents & POLLIN)) {
            int fd = accept4(m->fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                serve(m, fd);
                close(fd);
            }
        }
        poll_redis(m);
    }
    for (int r = 0; r < 2; r++)
        redisFree(m->redis[r]);
    return NULL;
}

int metrics_server_open(struct metrics_server *m, const struct presence_conf *conf)
{
    m->fd = -1;
    m->stop_pipe[0] = m->stop_pipe[1] = -1;
    if (conf->metrics_port == 0)
        return 0;
    char service[16];
    snprintf(service, sizeof(service), "%d", conf->metrics_port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    int rc = getaddrinfo(conf->metrics_host, service, &hints, &res);
    if (rc != 0) {
        log_error("metrics listen failed addr=%s:%d error=\"%s\"", conf->metrics_host, conf->metrics_port, gai_strerror(rc));
        return -1;
    }
    int err = 0;
    for (struct addrinfo *ai = res; ai != NULL && m->fd < 0; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0)
            m->fd = fd;
        else {
            err = errno;
            close(fd);
        }
    }
    freeaddrinfo(res);
    if (m->fd < 0) {
        log_error("metrics listen failed addr=%s:%d error=\"%s\"", conf->metrics_host, conf->metrics_port, strerror(err));
        return -1;
    }
    return 0;
}

int metrics_server_start(struct metrics_server *m)
{
    if (m->fd < 0)
        return 0;
    if (pipe2(m->stop_pipe, O_CLOEXEC) < 0)
        return -1;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&m->thread, NULL, metrics_main, m);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc == 0 ? 0 : -1;
}

void metrics_server_stop(struct metrics_server *m)
{
    if (m->fd < 0)
        return;
    if (m->stop_pipe[1] >= 0) {
        ssize_t w = write(m->stop_pipe[1], "x", 1);
        (void)w;
        pthread_join(m->thread, NULL);
        close(m->stop_pipe[0]);
        close(m->stop_pipe[1]);
    }
    close(m->fd);
    m->fd = -1;
}
