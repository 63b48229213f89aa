/* Child processes and throw-away Redis servers for the test programs: what the Criterion
 * integration harness and the plain soak program share. Nothing here asserts or exits: a
 * function that can fail returns -1 (a pid or port otherwise) and leaves its reason in
 * tp_error(); the caller turns that into a Criterion assertion or a soak failure.
 *
 * Every child is spawned with PR_SET_PDEATHSIG and tracked until it is reaped, so that
 * tp_kill_all can end whatever is left, from a signal handler if need be. Single-threaded:
 * spawn, wait and kill from one thread only. REDIS_SERVER_BIN names the redis-server binary. */
#ifndef PR_TESTS_COMMON_PROC_H
#define PR_TESTS_COMMON_PROC_H

#include <limits.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Why the last failing tp_ call failed, e.g. "open /tmp/x/server.log: No such file or directory". */
const char *tp_error(void);
/* Set that reason (for the other tests/common files); keeps errno. */
void tp_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ------------------------------------------------------------------- time */

double tp_mono_ms(void);     /* monotonic, ms */
int64_t tp_wall_ms(void);    /* wall clock, ms since the epoch */
void tp_sleep_ms(double ms); /* nothing if ms <= 0; resumes after a signal */

/* ------------------------------------------------------------------ files */

/* A whole file, malloc'd and NUL-terminated; NULL if unreadable. */
char *tp_read_file(const char *path);
/* Print the last lines of a file to stderr, between marker lines. */
void tp_print_tail(const char *path, int lines);
/* Remove a directory tree (best effort). */
void tp_rm_tree(const char *path);

/* ---------------------------------------------------------------- children */

/* fork + exec argv with stdin from /dev/null, stdout appended to out_path and stderr to
 * err_path (NULL: the same file). The child dies with this process (PR_SET_PDEATHSIG), with
 * SIGPIPE at its default and no signal blocked. Returns its pid, tracked, or -1. */
pid_t tp_spawn(const char *const *argv, const char *out_path, const char *err_path);
/* Wait for pid up to timeout_ms: its wait status (0 if it cannot be waited for), or -1 if it is
 * still running. Untracks it once reaped. */
int tp_wait_pid(pid_t pid, int timeout_ms);
/* Reap pid if it has exited: true and *status (untracked), false if it is still running. */
bool tp_exited(pid_t pid, int *status);
/* SIGCONT (a stopped child must be able to die), SIGKILL, reap. */
void tp_kill_reap(pid_t pid);
/* Send sig, wait up to timeout_ms, SIGKILL and reap if it has not exited by then. Returns the
 * wait status, or -1 if it had to be killed. */
int tp_stop(pid_t pid, int sig, int timeout_ms);
/* SIGKILL and reap every tracked child but the nkeep pids in keep. Async-signal-safe. */
void tp_kill_all(const pid_t *keep, int nkeep);
/* Poll every poll_ms until ready(arg) holds (0), the child *pid exits (-1; reaped, *pid set to
 * 0) or timeout_ms passes (-1; the child is left running). */
int tp_wait_ready(pid_t *pid, bool (*ready)(void *arg), void *arg, int timeout_ms, int poll_ms);

/* ---------------------------------------------------------------- loopback */

/* 127.0.0.1:port. */
struct sockaddr_in tp_loopback(int port);
/* A loopback port nobody listens on right now (the kernel's pick for an ephemeral bind), or -1. */
int tp_free_port(void);
/* Does 127.0.0.1:port accept a connection? */
bool tp_port_open(int port);
/* tp_wait_ready until port accepts a connection, polling every 10 ms. */
int tp_wait_port(pid_t *pid, int port, int timeout_ms);

/* ------------------------------------------------------------------- Redis */

struct tp_redis {
    pid_t pid;                     /* running redis-server, 0 if none */
    int port;                      /* its port; kept across stop/kill so it can restart there */
    char name[32];                 /* "redis", "cache", "queue": names its dir and log */
    char dir[PATH_MAX];            /* its --dir */
    char log[PATH_MAX];            /* its stdout/stderr */
    const char *const *extra_args; /* more redis-server arguments, NULL-terminated; NULL: none */
    const char *conf;              /* config file, the first argument (a sentinel needs one); NULL: none */
    int ready_ms;                  /* how long a start waits for PING */
};

/* Name r, make its directory parent/name (an existing one will do), log to parent/name.log;
 * no extra arguments, 5 s for PING. Nothing is started. 0, or -1. */
int tp_redis_init(struct tp_redis *r, const char *parent, const char *name);
/* Does PING on 127.0.0.1:port answer PONG within 200 ms? */
bool tp_redis_ping(int port);
/* Up to `attempts` spawns, each on a fresh free port (new_port) or on r->port, each waiting
 * r->ready_ms for PING, pausing pause_ms after a failed one (an old socket on a restart port may
 * linger for a moment). 0 running, or -1 (r->pid 0). */
int tp_redis_start(struct tp_redis *r, bool new_port, int attempts, int pause_ms);
/* SIGCONT + SIGTERM, up to timeout_ms, then SIGKILL. Nothing if it is not running. */
void tp_redis_stop(struct tp_redis *r, int timeout_ms);
/* SIGSTOP, and wait until it is really stopped (a hung Redis whose port still accepts
 * connections); SIGCONT. 0, or -1. */
int tp_redis_pause(struct tp_redis *r);
int tp_redis_resume(struct tp_redis *r);

#endif
