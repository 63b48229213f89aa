#include "report.h"

#include <string.h>

void stats_merge(struct worker_stats *dst, const struct worker_stats *src)
{
    for (int m = 0; m < BENCH_METHODS; m++) {
        for (int c = 0; c < CODE_SLOTS; c++)
            dst->codes[m][c] += src->codes[m][c];
        hist_merge(&dst->hist[m], &src->hist[m]);
    }
    dst->transport_errors += src->transport_errors;
    dst->unanswered += src->unanswered;
    dst->send_failed += src->send_failed;
    dst->not_sent += src->not_sent;
    dst->scheduled += src->scheduled;
    dst->responses_total += src->responses_total;
    dst->connects += src->connects;
    dst->connect_failures += src->connect_failures;
    if (src->max_lag_ns > dst->max_lag_ns)
        dst->max_lag_ns = src->max_lag_ns;
    dst->late_1ms += src->late_1ms;
    if (dst->first_error[0] == '\0')
        memcpy(dst->first_error, src->first_error, sizeof(dst->first_error));
}

/* Everything derived once, for both formats. */
struct summary {
    unsigned long long codes[CODE_SLOTS]; /* over all methods */
    unsigned long long responses;         /* measured responses with a decoded code */
    unsigned long long failed;            /* transport errors + unanswered */
    struct histogram all;                 /* all methods merged */
    double qps;                           /* responses per second of the measured window */
    double achieved, shortfall_pct;       /* open loop */
    int methods_used;                     /* methods with any response */
};

static void summarize(const struct run_info *info, const struct worker_stats *st, struct summary *s)
{
    memset(s, 0, sizeof(*s));
    hist_init(&s->all);
    for (int m = 0; m < BENCH_METHODS; m++) {
        unsigned long long n = 0;
        for (int c = 0; c < CODE_SLOTS; c++) {
            s->codes[c] += st->codes[m][c];
            n += st->codes[m][c];
        }
        s->responses += n;
        s->methods_used += n > 0;
        hist_merge(&s->all, &st->hist[m]);
    }
    s->failed = st->transport_errors + st->unanswered + st->send_failed;
    s->qps = info->duration_s > 0 ? (double)s->responses / info->duration_s : 0.0;
    if (info->rate > 0) {
        s->achieved = s->qps;
        s->shortfall_pct = 100.0 * (1.0 - s->achieved / info->rate);
        if (s->shortfall_pct < 0)
            s->shortfall_pct = 0;
    }
}

static double us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

static void text_latency(FILE *out, const char *label, const struct histogram *h)
{
    fprintf(out, "  %-10s p50 %9.1f  p90 %9.1f  p99 %9.1f  p99.9 %9.1f  max %9.1f  mean %9.1f  (n=%llu)\n",
            label, us(hist_percentile(h, 50)), us(hist_percentile(h, 90)), us(hist_percentile(h, 99)),
            us(hist_percentile(h, 99.9)), us(h->max), hist_mean(h) / 1000.0, (unsigned long long)h->count);
}

void report_text(FILE *out, const struct run_info *info, const struct worker_stats *st)
{
    struct summary s;
    summarize(info, st, &s);
    fprintf(out, "im-presence-bench  %s%s\n", info->target, info->echo ? "  (echo self-test: generator ceiling)" : "");
    fprintf(out, "  method %s, users 1..%lld %s", info->method, info->users, info->dist);
    if (strstr(info->method, "deliver") != NULL)
        fprintf(out, ", message %zu B", info->message_bytes);
    fprintf(out, "\n");
    if (info->rate > 0)
        fprintf(out, "  open loop: target %.0f req/s over %d connections x %d threads (cap %d outstanding/conn)\n",
                info->rate, info->connections, info->threads, info->max_outstanding);
    else
        fprintf(out, "  closed loop: %d connections x %d threads, %d in flight per connection\n", info->connections,
                info->threads, info->pipeline);
    fprintf(out, "  warm-up %.1f s, measured %.1f s\n", info->warmup_s, info->duration_s);
    if (info->preloaded)
        fprintf(out, "  preload: %llu users bound in %.2f s (%llu failed)\n", info->preload_ok, info->preload_s,
                info->preload_failed);
    fprintf(out, "requests: %llu answered, %llu OK", s.responses, s.codes[0]);
    for (int c = 1; c < CODE_SLOTS; c++)
        if (s.codes[c] > 0)
            fprintf(out, ", %llu %s", s.codes[c], request_code_name(c));
    fprintf(out, "\n");
    fprintf(out, "transport errors: %llu (%llu lost with a connection or undecodable, %llu unanswered at the end",
            s.failed, (unsigned long long)st->transport_errors, (unsigned long long)st->unanswered);
    if (info->rate > 0)
        fprintf(out, ", %llu not sent: connection down", (unsigned long long)st->send_failed);
    fprintf(out, ")");
    if (st->connect_failures > 0)
        fprintf(out, ", %llu failed connects", (unsigned long long)st->connect_failures);
    fprintf(out, "\n");
    if (st->first_error[0] != '\0')
        fprintf(out, "  first error: %s\n", st->first_error);
    fprintf(out, "throughput: %.0f req/s\n", s.qps);
    if (info->rate > 0) {
        fprintf(out, "open loop: target %.0f req/s, achieved %.0f req/s (%.1f%% short); %llu slots in window, "
                     "%llu not sent in time, %llu to a down connection\n",
                info->rate, s.achieved, s.shortfall_pct, (unsigned long long)st->scheduled,
                (unsigned long long)st->not_sent, (unsigned long long)st->send_failed);
        fprintf(out, "  send lag behind schedule: max %.1f us, %llu requests > 1 ms late\n", us(st->max_lag_ns),
                (unsigned long long)st->late_1ms);
    }
    fprintf(out, "latency (us%s):\n", info->rate > 0 ? ", from the scheduled send time" : "");
    text_latency(out, "all", &s.all);
    if (s.methods_used > 1)
        for (int m = 0; m < BENCH_METHODS; m++)
            if (st->hist[m].count > 0)
                text_latency(out, method_short_name(m), &st->hist[m]);
}

static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(out, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(out, "\\u%04x", ch);
        else
            fputc(ch, out);
    }
    fputc('"', out);
}

static void json_latency(FILE *out, const struct histogram *h)
{
    fprintf(out, "{\"count\":%llu,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,"
                 "\"mean_us\":%.1f}",
            (unsigned long long)h->count, us(hist_percentile(h, 50)), us(hist_percentile(h, 90)),
            us(hist_percentile(h, 99)), us(hist_percentile(h, 99.9)), us(h->max), hist_mean(h) / 1000.0);
}

void report_json(FILE *out, const struct run_info *info, const struct worker_stats *st)
{
    struct summary s;
    summarize(info, st, &s);
    fprintf(out, "{\"target\":");
    json_string(out, info->target);
    fprintf(out, ",\"echo_selftest\":%s,\"method\":", info->echo ? "true" : "false");
    json_string(out, info->method);
    fprintf(out, ",\"dist\":");
    json_string(out, info->dist);
    fprintf(out, ",\"users\":%lld,\"mode\":\"%s\",\"connections\":%d,\"threads\":%d,\"pipeline\":%d", info->users,
            info->rate > 0 ? "open" : "closed", info->connections, info->threads, info->pipeline);
    fprintf(out, ",\"message_bytes\":%zu,\"warmup_s\":%.3f,\"duration_s\":%.3f", info->message_bytes, info->warmup_s,
            info->duration_s);
    if (info->preloaded)
        fprintf(out, ",\"preload\":{\"ok\":%llu,\"failed\":%llu,\"seconds\":%.3f}", info->preload_ok,
                info->preload_failed, info->preload_s);
    fprintf(out, ",\"responses\":%llu,\"ok\":%llu,\"codes\":{", s.responses, s.codes[0]);
    for (int c = 0; c < CODE_SLOTS; c++)
        fprintf(out, "%s\"%s\":%llu", c > 0 ? "," : "", request_code_name(c), s.codes[c]);
    fprintf(out, "},\"transport_errors\":%llu,\"lost\":%llu,\"unanswered\":%llu,\"connect_failures\":%llu",
            s.failed, (unsigned long long)st->transport_errors, (unsigned long long)st->unanswered,
            (unsigned long long)st->connect_failures);
    fprintf(out, ",\"responses_total\":%llu,\"qps\":%.1f", (unsigned long long)st->responses_total, s.qps);
    if (info->rate > 0)
        fprintf(out, ",\"open_loop\":{\"target_rps\":%.1f,\"achieved_rps\":%.1f,\"shortfall_pct\":%.2f,"
                     "\"slots\":%llu,\"not_sent\":%llu,\"send_failed\":%llu,\"max_send_lag_us\":%.1f,"
                     "\"late_1ms\":%llu,\"max_outstanding\":%d}",
                info->rate, s.achieved, s.shortfall_pct, (unsigned long long)st->scheduled,
                (unsigned long long)st->not_sent, (unsigned long long)st->send_failed, us(st->max_lag_ns),
                (unsigned long long)st->late_1ms, info->max_outstanding);
    fprintf(out, ",\"latency\":");
    json_latency(out, &s.all);
    fprintf(out, ",\"per_method\":{");
    int first = 1;
    for (int m = 0; m < BENCH_METHODS; m++) {
        unsigned long long n = 0;
        for (int c = 0; c < CODE_SLOTS; c++)
            n += st->codes[m][c];
        if (n == 0)
            continue;
        fprintf(out, "%s\"%s\":{\"responses\":%llu,\"codes\":{", first ? "" : ",", method_short_name(m), n);
        for (int c = 0; c < CODE_SLOTS; c++)
            fprintf(out, "%s\"%s\":%llu", c > 0 ? "," : "", request_code_name(c), (unsigned long long)st->codes[m][c]);
        fprintf(out, "},\"latency\":");
        json_latency(out, &st->hist[m]);
        fputc('}', out);
        first = 0;
    }
    fprintf(out, "},\"first_error\":");
    json_string(out, st->first_error);
    fprintf(out, "}\n");
}

void report_preload_json(FILE *out, const struct run_info *info)
{
    fprintf(out, "{\"target\":");
    json_string(out, info->target);
    fprintf(out, ",\"users\":%lld,\"preload\":{\"ok\":%llu,\"failed\":%llu,\"seconds\":%.3f}}\n", info->users,
            info->preload_ok, info->preload_failed, info->preload_s);
}
