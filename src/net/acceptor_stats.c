/* The acceptor's counters as other threads may read them (metrics, Stats). Any thread: it only
 * reads counter_t values, which have one writer, the acceptor thread (see core/counter.h). */
#include "net/acceptor.h"

void acceptor_stats_read(const struct acceptor *acc, struct acceptor_stats *out)
{
    const struct acceptor_counters *c = &acc->counters;
    out->accepted = counter_get(&c->accepted);
    out->rejected = counter_get(&c->rejected);
    out->open = counter_get(&c->open);
    out->protocol_errors = counter_get(&c->protocol_errors);
    out->output_overflows = counter_get(&c->output_overflows);
    out->idle_closed = counter_get(&c->idle_closed);
    out->bytes_in = counter_get(&c->bytes_in);
    out->bytes_out = counter_get(&c->bytes_out);
    out->draining = counter_get(&c->draining) != 0;
    for (int m = 0; m <= PR_METHOD_COUNT; m++)
        for (int code = 0; code < PR_CODE_COUNT; code++)
            out->answered_here[m][code] = counter_get(&c->answered_here[m][code]);
    for (int m = 0; m < PR_METHOD_COUNT; m++)
        latency_read(&c->latency[m], &out->latency[m]);
}

uint64_t acceptor_shard_inflight(const struct acceptor *acc, int shard)
{
    return counter_get(&acc->inflight[shard]);
}
