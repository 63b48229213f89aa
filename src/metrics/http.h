/* The metrics thread: a tiny HTTP/1.0 server for GET /metrics, /healthz and /readyz, and the
 * Redis INFO poller behind the memory and key gauges. It runs on its own thread with blocking
 * sockets and short timeouts, so a slow scraper stalls only this thread, never a request. */
#ifndef PR_METRICS_HTTP_H
#define PR_METRICS_HTTP_H

#include <pthread.h>

#include "metrics/collect.h"

struct metrics_server {
    struct metrics_view view;   /* what to report; read-only */
    struct redis_gauges gauges; /* written by this thread only */
    int fd;                     /* listening socket, -1 when disabled */
    int stop_pipe[2];           /* main -> metrics thread: stop */
    pthread_t thread;
    double next_poll;           /* monotonic seconds of the next Redis INFO poll */
    void *redis[2];             /* redisContext per role, NULL until connected */
};

/* Main thread: bind the listener (port 0 in the config disables it). 0, or -1 logged. */
int metrics_server_open(struct metrics_server *m, const struct presence_conf *conf);
int metrics_server_start(struct metrics_server *m);
void metrics_server_stop(struct metrics_server *m);

#endif
