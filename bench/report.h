/* The end of a run: per-thread stats merged, printed as text or as one JSON object. */
#ifndef BENCH_REPORT_H
#define BENCH_REPORT_H

#include <stdbool.h>
#include <stdio.h>

#include "worker.h"

struct run_info {
    const char *target;       /* "host:port" (or "echo-selftest 127.0.0.1:port") */
    bool echo;                /* against the in-process echo server */
    const char *method;       /* -m as given back by mix_name */
    const char *dist;         /* keydist_name */
    long long users;          /* -u */
    int connections, threads, pipeline;
    double rate;              /* -R total, 0 for closed loop */
    int max_outstanding;      /* open loop cap per connection */
    size_t message_bytes;     /* -s */
    double warmup_s, duration_s;
    /* preload, if any */
    bool preloaded;
    double preload_s;         /* how long the preload took */
    unsigned long long preload_ok, preload_failed;
};

/* Add src into dst (counters summed, histograms merged, first error kept). */
void stats_merge(struct worker_stats *dst, const struct worker_stats *src);

void report_text(FILE *out, const struct run_info *info, const struct worker_stats *st);
void report_json(FILE *out, const struct run_info *info, const struct worker_stats *st);
/* --preload -d 0: only the preload's outcome, as JSON. */
void report_preload_json(FILE *out, const struct run_info *info);

#endif
