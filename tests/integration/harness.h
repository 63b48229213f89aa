/* Integration-test harness: real redis-server processes on free loopback ports, the real
 * im-presence binary with a generated config, and helpers to look at Redis directly.
 *
 * Criterion runs every test in its own forked worker. A suite's .init starts what the test needs
 * into the worker-global FX, .fini (fx_fini) kills whatever is still running, and every child is
 * spawned with PR_SET_PDEATHSIG so that a crashed or timed-out worker leaks nothing. Each test
 * gets its own directory ($base/<suite>.<test>); the runner prints the tail of the server logs
 * there when a test fails and removes the directory afterwards (PRESENCE_IT_KEEP=1 keeps it).
 *
 * Tests are written with IT(suite, name) instead of Test(): after the body returns, the server
 * is stopped with SIGTERM and must exit 0 within a bound (a .fini cannot fail a test). */
#ifndef PR_TESTS_INTEGRATION_HARNESS_H
#define PR_TESTS_INTEGRATION_HARNESS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <criterion/criterion.h>
#include <hiredis/hiredis.h>

#include "client/presence_client.h"
#include "core/request.h"
#include "cluster.h"
#include "presence.pb-c.h"
#include "proc.h"

/* Sanitized builds run several times slower: every bound below is multiplied by IT_SLOW, the
 * build's own factor unless PRESENCE_IT_SLOW says otherwise (e.g. when PRESENCE_SERVER_BIN
 * points at a ThreadSanitizer server: Criterion itself cannot run under TSan). */
#if defined(__SANITIZE_THREAD__)
#define IT_SLOW_BUILD 6
#elif defined(__SANITIZE_ADDRESS__)
#define IT_SLOW_BUILD 3
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define IT_SLOW_BUILD 6
#elif __has_feature(address_sanitizer)
#define IT_SLOW_BUILD 3
#endif
#endif
#ifndef IT_SLOW_BUILD
#define IT_SLOW_BUILD 1
#endif
int it_slow(void);
#define IT_SLOW (it_slow())

/* Criterion timeout of one test, seconds: only a guard that turns a hang into a failure. */
#define IT_TIMEOUT 60.0

#define IT_SERVICE "PresenceService"

/* The binaries under test: the build's, unless the environment variables PRESENCE_SERVER_BIN /
 * PRESENCE_CLI_BIN name others (to run this suite against another build, e.g. a TSan server). */
const char *it_server_bin(void);
const char *it_cli_bin(void);

/* ---------------------------------------------------------------- processes */

/* The Redis servers are tp_redis (tests/common/proc.h); these wrappers assert. */
/* Start on a free port (retrying on a port race) and wait until PING answers. Asserts. */
void it_redis_start(struct tp_redis *r, const char *name);
/* Start again on the same port (after it_redis_kill/it_redis_stop). Asserts. */
void it_redis_restart(struct tp_redis *r);
/* SIGTERM, bounded wait, then SIGKILL. */
void it_redis_stop(struct tp_redis *r);
/* SIGKILL at once: the fault tests' "Redis died". */
void it_redis_kill(struct tp_redis *r);
/* SIGSTOP / SIGCONT: a hung Redis whose port still accepts connections. */
void it_redis_pause(struct tp_redis *r);
void it_redis_resume(struct tp_redis *r);

/* A settled Redis Cluster / Sentinel set in it_dir() (tests/common/cluster.h), deadlines scaled
 * by IT_SLOW; asserts, printing the logs that say why. Stopped by fx_fini if in FX. */
void it_cluster_start(struct tp_cluster *c, int masters, int replicas_per_master);
void it_sentinel_start(struct tp_sentinel_set *s, const char *name);

#define IT_MAX_KV 64

struct it_kv {
    char section[32];
    char key[48];
    char value[256];
};

/* A server config file: an ordered list of section/key/value, written out as INI. */
struct it_config {
    struct it_kv kv[IT_MAX_KV];
    int n;
};

/* The test defaults: listen on port (0: pick a free one at start), cache db 0 on cache_port,
 * queue db 1 on queue_port, 2 shards, Redis timeouts of 2 s. */
void it_config_defaults(struct it_config *c, int cache_port, int queue_port);
/* Set (or replace) one key. */
void it_config_set(struct it_config *c, const char *section, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void it_config_unset(struct it_config *c, const char *section, const char *key);
const char *it_config_get(const struct it_config *c, const char *section, const char *key);
/* Write c to path (asserts). */
void it_config_write(const struct it_config *c, const char *path);

struct it_server {
    pid_t pid;           /* running im-presence, 0 if none */
    int port;            /* the port it listens on */
    char conf[PATH_MAX]; /* generated config file */
    char log[PATH_MAX];  /* its stdout+stderr */
};

/* Write the config (choosing a free port if [presence_service] port is 0 or absent), spawn
 * `im-presence -c CONF extra_args...` with output to a log, wait until the port accepts
 * connections. Asserts that it started. extra_args is NULL-terminated or NULL. */
void it_server_start(struct it_server *s, struct it_config *c, const char *const *extra_args);
/* Only spawn; returns the pid. */
pid_t it_server_spawn(struct it_server *s, const struct it_config *c, const char *const *extra_args);
/* Spawn on a config file the test wrote itself; port is where it is expected to listen. */
pid_t it_server_spawn_file(struct it_server *s, const char *conf, int port, const char *const *extra_args);
/* Wait until s->port accepts a connection or the process exits. 0 ready, -1 not. */
int it_server_wait_ready(struct it_server *s, int timeout_ms);
/* Send sig, wait up to timeout_ms. Returns the wait status, or -1 if it had to be SIGKILLed. */
int it_server_stop(struct it_server *s, int sig, int timeout_ms);
/* SIGTERM and assert a clean exit 0 within a few seconds. */
void it_server_stop_clean(struct it_server *s);

/* A loopback port nobody listens on right now. */
int it_free_port(void);

/* Wait for pid with a bound. Returns the wait status, or -1 on timeout (the process is left). */
int it_wait_pid(pid_t pid, int timeout_ms);

/* Run argv to completion with stdout/stderr captured (malloc'd, NUL-terminated; may be NULL
 * pointers if not wanted). Returns the exit code, 128+signal, or -1 after a timeout kill. */
int it_run(const char *const *argv, char **out, char **err, int timeout_ms);
/* Spawn argv in the background, stdout to out_path and stderr to err_path (NULL: the same
 * file). The child dies with this worker; fx_fini kills it if it is still running. Reap it
 * with it_wait_pid. */
pid_t it_spawn(const char *const *argv, const char *out_path, const char *err_path);

/* --------------------------------------------------------------- the fixture */

struct it_fixture {
    struct tp_redis cache; /* always started by the fx_init_* */
    struct tp_redis queue; /* started only by fx_init_split (else pid 0, port = cache.port) */
    struct it_server srv;  /* the server under test */
    struct tp_cluster cluster;       /* started only by fx_init_cluster (else n = 0) */
    struct tp_sentinel_set sentinel; /* started only by fx_init_sentinel (else no pids) */
    struct it_config cfg;  /* what fx_start_server starts it with */
};
extern struct it_fixture FX;

/* This test's private directory. */
const char *it_dir(void);
/* it_dir()/name, in a static rotating buffer. */
const char *it_path(const char *name);

/* .init variants: one Redis (cache and queue share it) + the server with FX.cfg defaults;
 * one Redis only (the test adjusts FX.cfg, then calls fx_start_server); two Redis servers,
 * cache and queue separate, no server yet. */
void fx_init_server(void);
void fx_init_redis(void);
void fx_init_split(void);
/* A 3-master + 3-replica cluster, FX.cfg set for it (§10: mode = cluster, nodes, database 0 in
 * both sections); a 1 master + 1 replica + 3 sentinel set watching "presence", FX.cfg set for it
 * (mode = sentinel, nodes = the sentinels, master_name). No server yet: fx_start_server. */
void fx_init_cluster(void);
void fx_init_sentinel(void);
void fx_start_server(void);
/* fx_start_server, then wait until /healthz says every shard's Redis links are up. A port that
 * accepts means the threads exist; a test that changes Redis's state (a busy script, a replica
 * switch) must also know every link has finished connecting, or a link caught mid-set-up sees it
 * differently from the others. */
void fx_start_server_linked(void);
/* .fini: kill everything this worker started. */
void fx_fini(void);
/* After the body: stop the server (if still running) and require a clean exit 0. */
void fx_check_clean_exit(void);

#define IT(suite, name)                                                                                      \
    static void it_body_##suite##_##name(void);                                                              \
    Test(suite, name)                                                                                        \
    {                                                                                                        \
        it_body_##suite##_##name();                                                                          \
        fx_check_clean_exit();                                                                               \
    }                                                                                                        \
    static void it_body_##suite##_##name(void)

/* ------------------------------------------------------- metrics over HTTP */

/* The [metrics] port s was started with, read back from its config file (asserts there is one). */
int it_metrics_port(const struct it_server *s);
/* GET path from 127.0.0.1:port, HTTP/1.0 on a fresh connection, within 5 s (a refused connection
 * is retried for 2 s: the metrics port opens just after the service port). Returns the status
 * code, or -1 if the connection or the response failed. *head (status line and headers) and
 * *body are malloc'd and NUL-terminated if wanted (NULL: not wanted), NULL after a failure. */
int it_http_get(int port, const char *path, char **head, char **body);
/* GET path until it answers status want or timeout_ms passes; returns the last status (-1: no
 * answer). *body (if wanted) holds the last body, malloc'd. */
int it_http_wait_status(int port, const char *path, int want, int timeout_ms, char **body);
/* The value of the sample `series` (name and labels exactly as exposed, e.g.
 * `impresence_requests_total{method="Deliver",code="OK"}`) in a Prometheus text body; NAN if
 * no line holds that series. */
double it_metric(const char *text, const char *series);
/* The sum of every sample of `family` (any labels), e.g. impresence_shard_inflight over all
 * shards; NAN if there is none. */
double it_metric_sum(const char *text, const char *family);
/* it_metric of one scrape of s's /metrics: one series, name and labels exactly as exposed;
 * NAN if absent. */
double it_metric_series(const struct it_server *s, const char *series);
/* it_metric_sum of one scrape of s's /metrics (asserts the family is there). */
double it_metric_now(const struct it_server *s, const char *family);
/* Scrape s's /metrics until the sum of family equals want; asserts within timeout_ms. The way a
 * test waits for the server to reach a state (requests read, retries made, connections gone). */
void it_wait_metric(const struct it_server *s, const char *family, double want, int timeout_ms);
/* Wait until s's /readyz says "shutting down" (SIGTERM has been handled); asserts. */
void it_wait_shutting_down(const struct it_server *s, int timeout_ms);

/* ------------------------------------------------------------------- client */

/* Connect to the server under test (asserts). */
struct pc_client *it_connect(void);
struct pc_client *it_connect_port(int port);

/* Typed calls that assert the transport worked; the caller frees with it_free. */
Mpim__BindRouteResp *it_bind(struct pc_client *c, int64_t uid, const char *gw);
Mpim__QueryRouteResp *it_query(struct pc_client *c, int64_t uid);
Mpim__DeliverResp *it_deliver(struct pc_client *c, int64_t uid, const void *msg, size_t len,
                              const char *type);
Mpim__UnbindRouteResp *it_unbind(struct pc_client *c, int64_t uid, const char *gw);
Mpim__HeartbeatResp *it_heartbeat(struct pc_client *c, int64_t uid, const char *gw);
#define it_free(resp) protobuf_c_message_free_unpacked(&(resp)->base, NULL)
/* Any method's call (asserts the transport worked): the response, as method's type. */
void *it_call(struct pc_client *c, int method, const ProtobufCMessage *req);

/* A whole request frame for any service/method name and message (NULL: no args), malloc'd. */
uint8_t *it_frame(const char *service, const char *method, const ProtobufCMessage *args, size_t *len);
/* Queue a frame built by it_frame (asserts). */
void it_send_frame(struct pc_client *c, const char *service, const char *method,
                   const ProtobufCMessage *args);
/* Receive the next response as method's type (asserts on transport error). */
ProtobufCMessage *it_recv(struct pc_client *c, int method);
/* The Result of any response, decoded as the bare ErrorResp (asserts). */
Mpim__ErrorResp *it_recv_error(struct pc_client *c);

/* Gateway / bytes fields from C strings. */
ProtobufCBinaryData it_bytes(const char *s);
bool it_bytes_eq(ProtobufCBinaryData b, const char *s);

/* A raw TCP connection to 127.0.0.1:port (asserts); a read() on it times out after 5 s. */
int it_tcp_connect(int port);
/* Write all of buf (asserts). */
void it_write_all(int fd, const void *buf, size_t len);
/* Wait for fd to be closed by the peer: 1 closed (EOF/ECONNRESET) with no data before it,
 * 0 data arrived instead (bytes read are discarded), -1 timed out. */
int it_wait_closed(int fd, int timeout_ms);

/* -------------------------------------------------------------- Redis direct */

redisContext *it_rconnect(int port, int db);
/* GET: malloc'd value (NUL-terminated, *len if non-NULL) or NULL if missing. */
char *it_rget(int port, int db, const char *key, size_t *len);
long long it_rttl(int port, int db, const char *key);
bool it_rexists(int port, int db, const char *key);
long long it_rdbsize(int port, int db);
/* Any command, reply checked for not-an-error (asserts); format as redisCommand. */
void it_rcmd(int port, int db, const char *fmt, ...);
/* Total DBSIZE over databases 0-15. */
long long it_rdbsize_all(int port);

/* A subscriber on its own connection, read with timeouts (no threads). */
struct it_sub;
struct it_msg {
    char channel[128];
    char *data; /* malloc'd, NUL-terminated for convenience */
    size_t len;
};
/* SUBSCRIBE to channels (NULL-terminated); returns after every subscription is confirmed. */
struct it_sub *it_sub_open(int port, const char *const *channels);
/* Next message within timeout_ms: 1 got one (free m->data), 0 timed out. */
int it_sub_next(struct it_sub *s, struct it_msg *m, int timeout_ms);
/* Assert nothing was published on channel: publish a sentinel there and require that it is the
 * very next message this subscriber sees. */
void it_sub_expect_nothing(struct it_sub *s, const char *channel);
/* Assert the next message is exactly (channel, data, len). */
void it_sub_expect(struct it_sub *s, const char *channel, const void *data, size_t len);
void it_sub_close(struct it_sub *s);

/* ------------------------------------------------------------------- time */

int64_t it_now_ms(void); /* wall clock, ms since the epoch */
double it_mono_ms(void); /* monotonic, ms */
void it_sleep_ms(int ms);

/* Read a whole file (malloc'd, NUL-terminated; NULL if unreadable). */
char *it_read_file(const char *path);
/* Wait until the file at path holds needle; returns its text (malloc'd). Asserts within timeout_ms. */
char *it_wait_file_holds(const char *path, const char *needle, int timeout_ms);

#endif
