#include "proc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

static char g_error[PATH_MAX + 128];

const char *tp_error(void)
{
    return g_error;
}

/* Record why a call failed; keeps errno. */
void tp_set_error(const char *fmt, ...)
{
    int e = errno;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof(g_error), fmt, ap);
    va_end(ap);
    errno = e;
}

#define set_error tp_set_error

/* ------------------------------------------------------------------- time */

double tp_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

int64_t tp_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tp_sleep_ms(double ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
                          .tv_nsec = (long)((long long)(ms * 1e6) % 1000000000LL)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------ files */

char *tp_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            cap *= 2;
            char *more = realloc(buf, cap);
            if (more == NULL)
                free(buf);
            buf = more;
        }
    }
    fclose(f);
    if (buf != NULL)
        buf[len] = '\0';
    return buf;
}

void tp_print_tail(const char *path, int lines)
{
    char *text = tp_read_file(path);
    if (text == NULL)
        return;
    size_t len = strlen(text);
    size_t start = len;
    int seen = 0;
    while (start > 0) {
        if (text[start - 1] == '\n' && start != len && ++seen >= lines)
            break;
        start--;
    }
    fprintf(stderr, "---- last %d lines of %s ----\n%s%s---- end of %s ----\n", lines, path, text + start,
            len > 0 && text[len - 1] != '\n' ? "\n" : "", path);
    free(text);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void tp_rm_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---------------------------------------------------------------- children */

/* Every child spawned and not reaped yet; volatile because tp_kill_all may run in a signal
 * handler. */
#define MAX_CHILDREN 64
static volatile pid_t g_children[MAX_CHILDREN];

static void track(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (g_children[i] == 0) {
            g_children[i] = pid;
            return;
        }
}

static void untrack(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (g_children[i] == pid)
            g_children[i] = 0;
}

pid_t tp_spawn(const char *const *argv, const char *out_path, const char *err_path)
{
    pid_t parent = getpid();
    int out = open(out_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (out < 0) {
        set_error("open %s: %s", out_path, strerror(errno));
        return -1;
    }
    int err = out;
    if (err_path != NULL) {
        err = open(err_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (err < 0) {
            set_error("open %s: %s", err_path, strerror(errno));
            close(out);
            return -1;
        }
    }
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_DFL;
        sigaction(SIGPIPE, &sa, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(out, 1);
        dup2(err, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (pid < 0)
        set_error("fork: %s", strerror(errno));
    close(out);
    if (err != out)
        close(err);
    if (devnull >= 0)
        close(devnull);
    if (pid > 0)
        track(pid);
    return pid;
}

int tp_wait_pid(pid_t pid, int timeout_ms)
{
    double deadline = tp_mono_ms() + timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            untrack(pid);
            return status;
        }
        if (r < 0 && errno != EINTR) {
            untrack(pid);
            return 0;
        }
        if (tp_mono_ms() >= deadline)
            return -1;
        tp_sleep_ms(5);
    }
}

bool tp_exited(pid_t pid, int *status)
{
    if (waitpid(pid, status, WNOHANG) != pid)
        return false;
    untrack(pid);
    return true;
}

void tp_kill_reap(pid_t pid)
{
    kill(pid, SIGCONT);
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    untrack(pid);
}

int tp_stop(pid_t pid, int sig, int timeout_ms)
{
    kill(pid, sig);
    int status = tp_wait_pid(pid, timeout_ms);
    if (status == -1)
        tp_kill_reap(pid);
    return status;
}

void tp_kill_all(const pid_t *keep, int nkeep)
{
    for (int i = 0; i < MAX_CHILDREN; i++) {
        pid_t pid = g_children[i];
        bool kept = false;
        for (int k = 0; k < nkeep; k++)
            kept |= keep[k] == pid;
        if (pid > 0 && !kept)
            tp_kill_reap(pid);
    }
}

int tp_wait_ready(pid_t *pid, bool (*ready)(void *arg), void *arg, int timeout_ms, int poll_ms)
{
    double deadline = tp_mono_ms() + timeout_ms;
    while (tp_mono_ms() < deadline) {
        int status;
        if (tp_exited(*pid, &status)) {
            *pid = 0;
            return -1;
        }
        if (ready(arg))
            return 0;
        tp_sleep_ms(poll_ms);
    }
    return -1;
}

/* ---------------------------------------------------------------- loopback */

struct sockaddr_in tp_loopback(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

int tp_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_error("socket: %s", strerror(errno));
        return -1;
    }
    struct sockaddr_in a = tp_loopback(0);
    socklen_t alen = sizeof(a);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        set_error("bind: %s", strerror(errno));
    else if (getsockname(fd, (struct sockaddr *)&a, &alen) != 0)
        set_error("getsockname: %s", strerror(errno));
    else
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

bool tp_port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in a = tp_loopback(port);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static bool port_open(void *arg)
{
    return tp_port_open(*(const int *)arg);
}

int tp_wait_port(pid_t *pid, int port, int timeout_ms)
{
    return tp_wait_ready(pid, port_open, &port, timeout_ms, 10);
}

/* ------------------------------------------------------------------- Redis */

int tp_redis_init(struct tp_redis *r, const char *parent, const char *name)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->ready_ms = 5000;
    int n = snprintf(r->dir, sizeof(r->dir), "%s/%s", parent, name);
    int m = snprintf(r->log, sizeof(r->log), "%s/%s.log", parent, name);
    if (n < 0 || (size_t)n >= sizeof(r->dir) || m < 0 || (size_t)m >= sizeof(r->log)) {
        set_error("path too long: %s/%s", parent, name);
        return -1;
    }
    if (mkdir(r->dir, 0700) != 0 && errno != EEXIST) {
        set_error("mkdir %s: %s", r->dir, strerror(errno));
        return -1;
    }
    return 0;
}

bool tp_redis_ping(int port)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c == NULL)
        return false;
    bool ok = false;
    if (!c->err) {
        redisReply *r = redisCommand(c, "PING");
        ok = r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
        if (r != NULL)
            freeReplyObject(r);
    }
    redisFree(c);
    return ok;
}

static bool redis_ready(void *arg)
{
    return tp_redis_ping(*(const int *)arg);
}

/* Spawn on r->port and wait for PING. 0 ready, -1 it exited or never answered (reaped). */
static int redis_spawn(struct tp_redis *r)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", r->port);
    const char *argv[33] = {REDIS_SERVER_BIN};
    int n = 1;
    if (r->conf != NULL)
        argv[n++] = r->conf;
    const char *common[] = {"--port", port,  "--bind",      "127.0.0.1", "--save", "", "--appendonly", "no",
                            "--dir",  r->dir, "--daemonize", "no",        "--protected-mode", "no"};
    for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++)
        argv[n++] = common[i];
    for (int i = 0; r->extra_args != NULL && r->extra_args[i] != NULL && n < 32; i++)
        argv[n++] = r->extra_args[i];
    argv[n] = NULL;
    r->pid = tp_spawn(argv, r->log, NULL);
    if (r->pid < 0) {
        r->pid = 0;
        return -1;
    }
    if (tp_wait_ready(&r->pid, redis_ready, &r->port, r->ready_ms, 10) == 0)
        return 0;
    if (r->pid != 0)
        tp_kill_reap(r->pid);
    r->pid = 0;
    return -1;
}

int tp_redis_start(struct tp_redis *r, bool new_port, int attempts, int pause_ms)
{
    for (int attempt = 0; attempt < attempts; attempt++) {
        if (new_port && (r->port = tp_free_port()) < 0)
            return -1;
        if (redis_spawn(r) == 0)
            return 0;
        tp_sleep_ms(pause_ms);
    }
    return -1;
}

void tp_redis_stop(struct tp_redis *r, int timeout_ms)
{
    if (r->pid == 0)
        return;
    kill(r->pid, SIGCONT);
    tp_stop(r->pid, SIGTERM, timeout_ms);
    r->pid = 0;
}

int tp_redis_pause(struct tp_redis *r)
{
    if (r->pid == 0 || kill(r->pid, SIGSTOP) != 0)
        return -1;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)r->pid);
    for (int i = 0; i < 200; i++) {
        char *s = tp_read_file(path);
        char *p = s != NULL ? strrchr(s, ')') : NULL;
        bool stopped = p != NULL && (p[2] == 'T' || p[2] == 't');
        free(s);
        if (stopped)
            return 0;
        tp_sleep_ms(5);
    }
    return -1;
}

int tp_redis_resume(struct tp_redis *r)
{
    return r->pid != 0 ? kill(r->pid, SIGCONT) : -1;
}
