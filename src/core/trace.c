/* Request tracing (PRESENCE_TRACE builds only): see trace.h. Each function says which thread
 * calls it; the only memory two threads share is the per-shard wake-up stamps (atomics). */
#include "core/trace.h"

#ifdef PRESENCE_TRACE

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/request.h"

#define TRACE_SHARDS 256 /* thread_count's upper bound */
#define TRACE_HELD 256   /* encoded, not yet written (acceptor) */

static const char *const segment_names[TRACE_HOPS - 1] = {
    "read->pushed (acceptor dispatch)",
    "pushed->wake (acceptor turn end)",
    "wake->popped (shard wake-up)",
    "popped->sent (shard builds cmd)",
    "sent->reply (Redis round trip)",
    "reply->answered (shard)",
    "answered->notify (shard turn end)",
    "notify->taken (acceptor wake-up)",
    "taken->encoded (reorder window)",
    "encoded->written (acceptor send)",
};

/* Both: the first wake-up sent since the receiver took the last one; 0 = none pending. */
static _Atomic uint64_t wake_ns[TRACE_SHARDS];
static _Atomic uint64_t notify_ns[TRACE_SHARDS];

/* Per thread: what the current callback took or saw. */
static _Thread_local uint64_t tl_woken_ns, tl_notified_ns, tl_reply_ns;

/* Acceptor thread only. */
static uint32_t sample_counter;
static struct held {
    const void *conn;
    uint64_t t[TRACE_HOPS];
} held[TRACE_HELD];
static int nheld;
static uint64_t dropped;
struct done {
    uint32_t seg[TRACE_HOPS - 1]; /* ns */
    uint32_t total;               /* ns, read -> written */
};
static struct done *keep; /* ring of TRACE_KEEP */
static uint64_t ndone;

static bool sampled(const struct pr_request *req)
{
    return req->trace[TRACE_READ] != 0;
}

static uint64_t at_least(uint64_t t, uint64_t floor)
{
    return t >= floor ? t : floor;
}

/* --- acceptor thread --- */

void trace_read(struct pr_request *req)
{
    if (++sample_counter % TRACE_SAMPLE == 0)
        req->trace[TRACE_READ] = clock_mono_ns();
}

void trace_stamp(struct pr_request *req, int hop)
{
    if (sampled(req))
        req->trace[hop] = clock_mono_ns();
}

void trace_wake_sent(int shard)
{
    uint64_t none = 0;
    atomic_compare_exchange_strong(&wake_ns[shard], &none, clock_mono_ns());
}

void trace_notified(int shard)
{
    tl_notified_ns = atomic_exchange(&notify_ns[shard], 0);
}

void trace_taken(struct pr_request *req)
{
    if (!sampled(req))
        return;
    req->trace[TRACE_NOTIFY] = at_least(tl_notified_ns, req->trace[TRACE_ANSWERED]);
    req->trace[TRACE_TAKEN] = clock_mono_ns();
}

void trace_encoded(const void *conn, struct pr_request *req)
{
    if (!sampled(req) || req->trace[TRACE_TAKEN] == 0) /* answered by the acceptor itself */
        return;
    if (nheld == TRACE_HELD) {
        dropped++;
        return;
    }
    req->trace[TRACE_ENCODED] = clock_mono_ns();
    held[nheld].conn = conn;
    memcpy(held[nheld].t, req->trace, sizeof(held[nheld].t));
    nheld++;
}

static uint32_t ns32(uint64_t ns)
{
    return ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static void finish(const uint64_t *t)
{
    if (keep == NULL && (keep = calloc(TRACE_KEEP, sizeof(*keep))) == NULL)
        return;
    struct done *d = &keep[ndone++ % TRACE_KEEP];
    for (int i = 0; i < TRACE_HOPS - 1; i++)
        d->seg[i] = ns32(t[i + 1] >= t[i] ? t[i + 1] - t[i] : 0);
    d->total = ns32(t[TRACE_WRITTEN] - t[TRACE_READ]);
}

void trace_written(const void *conn)
{
    if (nheld == 0)
        return;
    uint64_t now = 0;
    for (int i = 0; i < nheld;) {
        if (held[i].conn != conn) {
            i++;
            continue;
        }
        if (now == 0)
            now = clock_mono_ns();
        held[i].t[TRACE_WRITTEN] = now;
        finish(held[i].t);
        held[i] = held[--nheld];
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(const uint32_t *sorted, size_t n, double p)
{
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return sorted[i] / 1000.0;
}

void trace_dump(void)
{
    size_t n = ndone < TRACE_KEEP ? (size_t)ndone : TRACE_KEEP;
    if (n == 0)
        return;
    uint32_t *v = malloc(n * sizeof(*v));
    if (v == NULL)
        return;
    /* The slowest 1 % by total: their mean per segment says where a slow request waits. */
    for (size_t k = 0; k < n; k++)
        v[k] = keep[k].total;
    qsort(v, n, sizeof(*v), cmp_u32);
    uint32_t slow_from = v[n - 1 - (n - 1) / 100];
    log_info("trace: %zu requests (1 in %d, last %d kept), %llu dropped; total read->written us "
             "p50=%.1f p90=%.1f p99=%.1f max=%.1f",
             n, TRACE_SAMPLE, TRACE_KEEP, (unsigned long long)dropped, pct_us(v, n, 0.5), pct_us(v, n, 0.9),
             pct_us(v, n, 0.99), v[n - 1] / 1000.0);
    for (int s = 0; s < TRACE_HOPS - 1; s++) {
        double slow_sum = 0;
        size_t nslow = 0;
        for (size_t k = 0; k < n; k++) {
            v[k] = keep[k].seg[s];
            if (keep[k].total >= slow_from) {
                slow_sum += keep[k].seg[s];
                nslow++;
            }
        }
        qsort(v, n, sizeof(*v), cmp_u32);
        log_info("trace: %-34s us p50=%7.1f p90=%7.1f p99=%7.1f max=%8.1f | slowest 1%% mean=%7.1f", segment_names[s],
                 pct_us(v, n, 0.5), pct_us(v, n, 0.9), pct_us(v, n, 0.99), v[n - 1] / 1000.0,
                 nslow ? slow_sum / (double)nslow / 1000.0 : 0.0);
    }
    free(v);
    free(keep);
    keep = NULL;
    ndone = 0;
}

/* --- shard thread --- */

void trace_woken(int shard)
{
    tl_woken_ns = atomic_exchange(&wake_ns[shard], 0);
}

void trace_popped(struct pr_request *req)
{
    if (!sampled(req))
        return;
    req->trace[TRACE_WAKE] = at_least(tl_woken_ns, req->trace[TRACE_PUSHED]);
    req->trace[TRACE_POPPED] = clock_mono_ns();
}

void trace_sent(struct pr_request *req)
{
    if (sampled(req) && req->trace[TRACE_SENT] == 0)
        req->trace[TRACE_SENT] = clock_mono_ns();
}

void trace_reply_seen(void)
{
    tl_reply_ns = clock_mono_ns();
}

void trace_answered(struct pr_request *req)
{
    if (!sampled(req))
        return;
    uint64_t *t = req->trace;
    t[TRACE_SENT] = at_least(t[TRACE_SENT], t[TRACE_POPPED]); /* none sent: answered at once */
    t[TRACE_REPLY] = at_least(tl_reply_ns, t[TRACE_SENT]);
    t[TRACE_ANSWERED] = clock_mono_ns();
}

void trace_notify_sent(int shard)
{
    uint64_t none = 0;
    atomic_compare_exchange_strong(&notify_ns[shard], &none, clock_mono_ns());
}

#endif
