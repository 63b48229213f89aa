/* core/config: defaults, INI loading with line numbers, config_set, config_print (contract §4). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "leak.h"

/* The configuration file from presence-design.zh.md, section 配置参数, byte for byte. */
static const char design_ini[] = "# Presence服务配置\n"
                                 "[presence_service]\n"
                                 "port = 6000\n"
                                 "thread_count = 4\n"
                                 "max_connections = 1000\n"
                                 "\n"
                                 "# 路由配置\n"
                                 "[route]\n"
                                 "route_ttl = 3600\n"
                                 "status_ttl = 3600\n"
                                 "max_retries = 3\n"
                                 "retry_interval = 1000\n"
                                 "\n"
                                 "# Redis配置\n"
                                 "[redis_cache]\n"
                                 "host = 127.0.0.1\n"
                                 "port = 6379\n"
                                 "database = 0\n"
                                 "timeout = 5000\n"
                                 "\n"
                                 "[redis_queue]\n"
                                 "host = 127.0.0.1\n"
                                 "port = 6379\n"
                                 "database = 1\n"
                                 "timeout = 5000\n";

static char tmp_path[64];

/* Write text to a fresh temporary file; its path is in tmp_path. */
static const char *write_tmp(const char *text)
{
    strcpy(tmp_path, "/tmp/pr-config-XXXXXX");
    int fd = mkstemp(tmp_path);
    cr_assert_geq(fd, 0);
    size_t len = strlen(text);
    cr_assert_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    return tmp_path;
}

static void remove_tmp(void)
{
    if (tmp_path[0] != '\0')
        unlink(tmp_path);
}

TestSuite(config, .fini = remove_tmp);

static void assert_redis_eq(const struct redis_conf *a, const struct redis_conf *b, const char *which)
{
    cr_assert_str_eq(a->host, b->host, "%s host", which);
    cr_assert_eq(a->port, b->port, "%s port", which);
    cr_assert_eq(a->database, b->database, "%s database", which);
    cr_assert_eq(a->timeout_ms, b->timeout_ms, "%s timeout", which);
    cr_assert_str_eq(a->username, b->username, "%s username", which);
    cr_assert_str_eq(a->password, b->password, "%s password", which);
    cr_assert_eq(a->mode, b->mode, "%s mode", which);
    cr_assert_str_eq(a->nodes, b->nodes, "%s nodes", which);
    cr_assert_str_eq(a->master_name, b->master_name, "%s master_name", which);
    cr_assert_eq(a->wait_replicas, b->wait_replicas, "%s wait_replicas", which);
}

static void assert_conf_eq(const struct presence_conf *a, const struct presence_conf *b)
{
    cr_assert_str_eq(a->host, b->host);
    cr_assert_eq(a->port, b->port);
    cr_assert_eq(a->shards, b->shards);
    cr_assert_eq(a->max_connections, b->max_connections);
    cr_assert_eq(a->max_frame_bytes, b->max_frame_bytes);
    cr_assert_eq(a->max_message_bytes, b->max_message_bytes);
    cr_assert_eq(a->max_batch, b->max_batch);
    cr_assert_eq(a->max_inflight, b->max_inflight);
    cr_assert_eq(a->queue_depth, b->queue_depth);
    cr_assert_eq(a->max_output_bytes, b->max_output_bytes);
    cr_assert_eq(a->idle_timeout, b->idle_timeout);
    cr_assert_eq(a->batch_sched_above, b->batch_sched_above);
    cr_assert_eq(a->log_level, b->log_level);
    cr_assert_str_eq(a->log_file, b->log_file);
    cr_assert_str_eq(a->metrics_host, b->metrics_host);
    cr_assert_eq(a->metrics_port, b->metrics_port);
    cr_assert_eq(a->route_ttl, b->route_ttl);
    cr_assert_eq(a->status_ttl, b->status_ttl);
    cr_assert_eq(a->max_retries, b->max_retries);
    cr_assert_eq(a->retry_interval_ms, b->retry_interval_ms);
    assert_redis_eq(&a->cache, &b->cache, "cache");
    assert_redis_eq(&a->queue, &b->queue, "queue");
    cr_assert_str_eq(a->zookeeper.hosts, b->zookeeper.hosts);
    cr_assert_eq(a->zookeeper.session_timeout_ms, b->zookeeper.session_timeout_ms);
    cr_assert_str_eq(a->zookeeper.advertise, b->zookeeper.advertise);
}

/* Load text; returns config_load's result, the error in err and what was reported in *report
 * (malloc'd, caller frees). */
static int load_text(struct presence_conf *c, const char *text, char *err, size_t errlen, char **report)
{
    const char *path = write_tmp(text);
    size_t rlen = 0;
    char *rbuf = NULL;
    FILE *rep = open_memstream(&rbuf, &rlen);
    cr_assert_not_null(rep);
    err[0] = '\0';
    int rc = config_load(c, path, rep, err, errlen);
    fclose(rep);
    if (report != NULL)
        *report = rbuf;
    else
        free(rbuf);
    return rc;
}

Test(config, defaults)
{
    struct presence_conf c;
    memset(&c, 0xa5, sizeof(c));
    config_defaults(&c);
    cr_assert_str_eq(c.host, "127.0.0.1");
    cr_assert_eq(c.port, 6000);
    cr_assert_eq(c.shards, 4);
    cr_assert_eq(c.max_connections, 1000);
    cr_assert_eq(c.max_frame_bytes, 1u << 20);
    cr_assert_eq(c.max_message_bytes, 256u << 10);
    cr_assert_eq(c.log_level, LOG_INFO);
    cr_assert_eq(c.idle_timeout, 0);
    cr_assert_eq(c.batch_sched_above, 16);
    cr_assert_str_eq(c.log_file, "");
    cr_assert_str_eq(c.metrics_host, "127.0.0.1");
    cr_assert_eq(c.metrics_port, 9121);
    cr_assert_eq(c.route_ttl, 3600);
    cr_assert_eq(c.status_ttl, 3600);
    cr_assert_eq(c.max_retries, 3);
    cr_assert_eq(c.retry_interval_ms, 1000);
    cr_assert_gt(c.max_inflight, 0);
    cr_assert_gt(c.queue_depth, 0);
    cr_assert_gt(c.max_output_bytes, c.max_frame_bytes);
    cr_assert_str_eq(c.cache.host, "127.0.0.1");
    cr_assert_eq(c.cache.port, 6379);
    cr_assert_eq(c.cache.database, 0);
    cr_assert_eq(c.cache.timeout_ms, 5000);
    cr_assert_str_eq(c.cache.username, "");
    cr_assert_str_eq(c.cache.password, "");
    cr_assert_str_eq(c.queue.host, "127.0.0.1");
    cr_assert_eq(c.queue.port, 6379);
    cr_assert_eq(c.queue.database, 1);
    cr_assert_eq(c.queue.timeout_ms, 5000);
    cr_assert_str_eq(c.queue.password, "");
    expect_no_leaks();
}

Test(config, design_file_loads_unchanged)
{
    struct presence_conf c, want;
    config_defaults(&c);
    config_defaults(&want);
    char err[512], *report;
    cr_assert_eq(load_text(&c, design_ini, err, sizeof(err), &report), 0, "%s", err);
    cr_assert_str_eq(report, "", "the design's file has no unknown keys: '%s'", report);
    free(report);
    assert_conf_eq(&c, &want); /* it states the defaults */
    expect_no_leaks();
}

Test(config, values_are_applied)
{
    struct presence_conf c;
    config_defaults(&c);
    char err[512];
    const char *text = "[presence_service]\n"
                       "host = 0.0.0.0\n"
                       "port = 6100\n"
                       "thread_count = 8\n"
                       "max_connections = 20\n"
                       "log_level = debug\n"
                       "idle_timeout = 120\n"
                       "batch_sched_above = 0\n"
                       "log_file = /tmp/x.log\n"
                       "[metrics]\n"
                       "host = 0.0.0.0\n"
                       "port = 0\n"
                       "[route]\n"
                       "route_ttl = 60\n"
                       "status_ttl = 30\n"
                       "max_retries = 0\n"
                       "retry_interval = 0\n"
                       "[redis_cache]\n"
                       "host = cache.local\n"
                       "port = 7000\n"
                       "database = 3\n"
                       "timeout = 250\n"
                       "username = alice\n"
                       "password = s3cret\n"
                       "[redis_queue]\n"
                       "host = queue.local\n"
                       "port = 7001\n"
                       "database = 4\n"
                       "timeout = 300\n";
    cr_assert_eq(load_text(&c, text, err, sizeof(err), NULL), 0, "%s", err);
    cr_assert_str_eq(c.host, "0.0.0.0");
    cr_assert_eq(c.port, 6100);
    cr_assert_eq(c.shards, 8);
    cr_assert_eq(c.max_connections, 20);
    cr_assert_eq(c.log_level, LOG_DEBUG);
    cr_assert_eq(c.idle_timeout, 120);
    cr_assert_eq(c.batch_sched_above, 0, "0: shards always under SCHED_BATCH");
    cr_assert_str_eq(c.log_file, "/tmp/x.log");
    cr_assert_str_eq(c.metrics_host, "0.0.0.0");
    cr_assert_eq(c.metrics_port, 0, "0 disables the metrics listener");
    cr_assert_eq(c.route_ttl, 60);
    cr_assert_eq(c.status_ttl, 30);
    cr_assert_eq(c.max_retries, 0);
    cr_assert_eq(c.retry_interval_ms, 0);
    cr_assert_str_eq(c.cache.host, "cache.local");
    cr_assert_eq(c.cache.port, 7000);
    cr_assert_eq(c.cache.database, 3);
    cr_assert_eq(c.cache.timeout_ms, 250);
    cr_assert_str_eq(c.cache.username, "alice");
    cr_assert_str_eq(c.cache.password, "s3cret");
    cr_assert_str_eq(c.queue.host, "queue.local");
    cr_assert_eq(c.queue.port, 7001);
    cr_assert_eq(c.queue.database, 4);
    cr_assert_eq(c.queue.timeout_ms, 300);
    cr_assert_str_eq(c.queue.password, "", "sections are independent");
    expect_no_leaks();
}

/* Each invalid value is reported as "file:LINE: [section] key:" with the right line. */
Test(config, invalid_value_reports_file_line_key)
{
    struct {
        const char *text;
        int line;
        const char *section, *key;
    } cases[] = {
        {"[presence_service]\nport = abc\n", 2, "presence_service", "port"},
        {"[presence_service]\nport = 70000\n", 2, "presence_service", "port"},
        {"[presence_service]\nport = 0\n", 2, "presence_service", "port"},
        {"[presence_service]\nport = 6000x\n", 2, "presence_service", "port"},
        {"[presence_service]\nport = 6k\n", 2, "presence_service", "port"},
        {"# c\n\n[presence_service]\nport = 6000\nthread_count = 0\n", 5, "presence_service", "thread_count"},
        {"[presence_service]\nmax_connections = -1\n", 2, "presence_service", "max_connections"},
        {"[presence_service]\nmax_frame_bytes = 1x\n", 2, "presence_service", "max_frame_bytes"},
        {"[presence_service]\nmax_frame_bytes = -1k\n", 2, "presence_service", "max_frame_bytes"},
        {"[presence_service]\nmax_frame_bytes = 4g\n", 2, "presence_service", "max_frame_bytes"},
        {"[presence_service]\nmax_frame_bytes = k\n", 2, "presence_service", "max_frame_bytes"},
        {"[presence_service]\nmax_message_bytes = 1kb\n", 2, "presence_service", "max_message_bytes"},
        {"[presence_service]\nlog_level = verbose\n", 2, "presence_service", "log_level"},
        {"[presence_service]\nidle_timeout = -1\n", 2, "presence_service", "idle_timeout"},
        {"[presence_service]\nbatch_sched_above = -1\n", 2, "presence_service", "batch_sched_above"},
        {"[metrics]\nport = 65536\n", 2, "metrics", "port"},
        {"[route]\n; comment\nroute_ttl = 0\n", 3, "route", "route_ttl"},
        {"[route]\nmax_retries = 101\n", 2, "route", "max_retries"},
        {"[route]\nretry_interval = 1.5\n", 2, "route", "retry_interval"},
        {"[redis_cache]\nhost = h\nport = 65536\n", 3, "redis_cache", "port"},
        {"[redis_queue]\n\n\n\ntimeout = 0\n", 5, "redis_queue", "timeout"},
        {"[redis_queue]\ndatabase = 99999999999999999999\n", 2, "redis_queue", "database"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct presence_conf c;
        config_defaults(&c);
        char err[512];
        int rc = load_text(&c, cases[i].text, err, sizeof(err), NULL);
        cr_assert_eq(rc, -1, "case %zu accepted", i);
        char want[256];
        snprintf(want, sizeof(want), "%s:%d: [%s] %s:", tmp_path, cases[i].line, cases[i].section,
                 cases[i].key);
        cr_assert_eq(strncmp(err, want, strlen(want)), 0, "case %zu: '%s', want prefix '%s'", i, err, want);
        cr_assert_gt(strlen(err), strlen(want) + 1, "case %zu: no reason given: '%s'", i, err);
        remove_tmp();
    }
    expect_no_leaks();
}

Test(config, invalid_value_in_design_file_has_its_line)
{
    /* Line 23 of the design's file is the queue's "port = 6379". */
    char text[sizeof(design_ini) + 8];
    strcpy(text, design_ini);
    char *p = strstr(text, "[redis_queue]\nhost = 127.0.0.1\nport = 6379");
    cr_assert_not_null(p);
    memcpy(strstr(p, "6379"), "63x9", 4);
    struct presence_conf c;
    config_defaults(&c);
    char err[512];
    cr_assert_eq(load_text(&c, text, err, sizeof(err), NULL), -1);
    char want[128];
    snprintf(want, sizeof(want), "%s:23: [redis_queue] port:", tmp_path);
    cr_assert_eq(strncmp(err, want, strlen(want)), 0, "'%s', want prefix '%s'", err, want);
    expect_no_leaks();
}

Test(config, first_invalid_value_wins)
{
    struct presence_conf c;
    config_defaults(&c);
    char err[512];
    cr_assert_eq(load_text(&c, "[presence_service]\nport = x\nthread_count = y\n", err, sizeof(err), NULL),
                 -1);
    char want[128];
    snprintf(want, sizeof(want), "%s:2: [presence_service] port:", tmp_path);
    cr_assert_eq(strncmp(err, want, strlen(want)), 0, "'%s'", err);
    expect_no_leaks();
}

Test(config, unknown_key_reported_and_skipped)
{
    struct presence_conf c;
    config_defaults(&c);
    char err[512], *report;
    const char *text = "[presence_service]\n"
                       "port = 6001\n"
                       "bogus_key = 1\n"
                       "[no_such_section]\n"
                       "port = 1\n"
                       "[route]\n"
                       "route_ttl = 10\n";
    cr_assert_eq(load_text(&c, text, err, sizeof(err), &report), 0, "%s", err);
    cr_assert_eq(c.port, 6001);
    cr_assert_eq(c.route_ttl, 10);
    char want[128];
    snprintf(want, sizeof(want), "%s:3: [presence_service] bogus_key", tmp_path);
    cr_assert_not_null(strstr(report, want), "report '%s' lacks '%s'", report, want);
    snprintf(want, sizeof(want), "%s:5: [no_such_section] port", tmp_path);
    cr_assert_not_null(strstr(report, want), "report '%s' lacks '%s'", report, want);
    /* One line per unknown key. */
    int lines = 0;
    for (const char *s = report; *s; s++)
        lines += *s == '\n';
    cr_assert_eq(lines, 2, "report '%s'", report);
    free(report);
    expect_no_leaks();
}

Test(config, unknown_key_without_report_stream)
{
    struct presence_conf c;
    config_defaults(&c);
    char err[256];
    const char *path = write_tmp("[presence_service]\nbogus = 1\nport = 6002\n");
    cr_assert_eq(config_load(&c, path, NULL, err, sizeof(err)), 0);
    cr_assert_eq(c.port, 6002);
    expect_no_leaks();
}

Test(config, size_suffixes)
{
    struct presence_conf c;
    config_defaults(&c);
    char err[512];
    const char *text = "[presence_service]\n"
                       "max_frame_bytes = 2m\n"
                       "max_message_bytes = 512k\n"
                       "max_output_bytes = 1G\n";
    cr_assert_eq(load_text(&c, text, err, sizeof(err), NULL), 0, "%s", err);
    cr_assert_eq(c.max_frame_bytes, 2u << 20);
    cr_assert_eq(c.max_message_bytes, 512u << 10);
    cr_assert_eq(c.max_output_bytes, (size_t)1 << 30);

    cr_assert_eq(config_set(&c, "presence_service", "max_frame_bytes", "64K", err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_eq(c.max_frame_bytes, 64u << 10);
    cr_assert_eq(config_set(&c, "presence_service", "max_frame_bytes", "3M", err, sizeof(err)), 0);
    cr_assert_eq(c.max_frame_bytes, 3u << 20);
    cr_assert_eq(config_set(&c, "presence_service", "max_frame_bytes", "4096", err, sizeof(err)), 0);
    cr_assert_eq(c.max_frame_bytes, 4096);
    cr_assert_eq(config_set(&c, "presence_service", "max_message_bytes", "0", err, sizeof(err)), 0);
    cr_assert_eq(c.max_message_bytes, 0);
    /* Below the minimum, or an unknown suffix. */
    cr_assert_eq(config_set(&c, "presence_service", "max_frame_bytes", "63", err, sizeof(err)), -1);
    cr_assert_eq(config_set(&c, "presence_service", "max_frame_bytes", "1t", err, sizeof(err)), -1);
    cr_assert_eq(c.max_frame_bytes, 4096, "a refused value leaves the old one");
    expect_no_leaks();
}

Test(config, config_set)
{
    struct presence_conf c;
    config_defaults(&c);
    char err[256];
    cr_assert_eq(config_set(&c, "presence_service", "port", "6001", err, sizeof(err)), 0);
    cr_assert_eq(c.port, 6001);
    cr_assert_eq(config_set(&c, "presence_service", "thread_count", "16", err, sizeof(err)), 0);
    cr_assert_eq(c.shards, 16);
    cr_assert_eq(config_set(&c, "presence_service", "log_level", "warn", err, sizeof(err)), 0);
    cr_assert_eq(c.log_level, LOG_WARN);
    cr_assert_eq(config_set(&c, "redis_queue", "host", "10.0.0.9", err, sizeof(err)), 0);
    cr_assert_str_eq(c.queue.host, "10.0.0.9");
    cr_assert_str_eq(c.cache.host, "127.0.0.1");

    cr_assert_eq(config_set(&c, "presence_service", "port", "0", err, sizeof(err)), -1);
    cr_assert_not_null(strstr(err, "[presence_service] port:"), "'%s'", err);
    cr_assert_eq(c.port, 6001);
    cr_assert_eq(config_set(&c, "presence_service", "nope", "1", err, sizeof(err)), -1);
    cr_assert_not_null(strstr(err, "nope"), "'%s'", err);
    cr_assert_not_null(strstr(err, "unknown key"), "'%s'", err);
    cr_assert_eq(config_set(&c, "route", "port", "1", err, sizeof(err)), -1, "keys are per section");
    cr_assert_eq(config_set(&c, "presence_service", "log_level", "INFO", err, sizeof(err)), -1);

    /* Strings longer than their buffer are refused, not truncated. */
    char big[300];
    memset(big, 'h', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cr_assert_eq(config_set(&c, "redis_cache", "host", big, err, sizeof(err)), -1);
    cr_assert_str_eq(c.cache.host, "127.0.0.1");
    big[181] = '\0'; /* CONFIG_VALUE_MAX: a value must fit on a line inih reads */
    cr_assert_eq(config_set(&c, "redis_cache", "host", big, err, sizeof(err)), -1);
    big[180] = '\0';
    cr_assert_eq(config_set(&c, "redis_cache", "host", big, err, sizeof(err)), 0);
    cr_assert_eq(strlen(c.cache.host), 180);
    expect_no_leaks();
}

Test(config, bounds_inclusive)
{
    struct presence_conf c;
    config_defaults(&c);
    char err[256];
    cr_assert_eq(config_set(&c, "presence_service", "port", "1", err, sizeof(err)), 0);
    cr_assert_eq(config_set(&c, "presence_service", "port", "65535", err, sizeof(err)), 0);
    cr_assert_eq(c.port, 65535);
    cr_assert_eq(config_set(&c, "presence_service", "thread_count", "256", err, sizeof(err)), 0);
    cr_assert_eq(config_set(&c, "presence_service", "thread_count", "257", err, sizeof(err)), -1);
    cr_assert_eq(config_set(&c, "route", "max_retries", "100", err, sizeof(err)), 0);
    cr_assert_eq(config_set(&c, "presence_service", "max_frame_bytes", "256m", err, sizeof(err)), 0);
    cr_assert_eq(config_set(&c, "presence_service", "max_frame_bytes", "257m", err, sizeof(err)), -1);
    expect_no_leaks();
}

Test(config, missing_file)
{
    struct presence_conf c;
    config_defaults(&c);
    char err[256];
    cr_assert_eq(config_load(&c, "/nonexistent/im-presence.ini", NULL, err, sizeof(err)), -1);
    cr_assert_not_null(strstr(err, "/nonexistent/im-presence.ini"), "'%s'", err);
    expect_no_leaks();
}

Test(config, syntax_error_reported)
{
    struct presence_conf c;
    config_defaults(&c);
    char err[256];
    cr_assert_eq(
        load_text(&c, "[presence_service]\nport = 6001\nthis line has no equals\n", err, sizeof(err), NULL),
        -1);
    char want[128];
    snprintf(want, sizeof(want), "%s:3:", tmp_path);
    cr_assert_eq(strncmp(err, want, strlen(want)), 0, "'%s'", err);
    expect_no_leaks();
}

/* Print a configuration in which every field differs from its default, load the text over
 * fresh defaults: every field must come back. */
Test(config, print_round_trip)
{
    struct presence_conf a, b;
    config_defaults(&a);
    strcpy(a.host, "10.9.8.7");
    a.port = 6123;
    a.shards = 7;
    a.max_connections = 77;
    a.max_frame_bytes = 3u << 20;
    a.max_message_bytes = 12345;
    a.max_batch = 500;
    a.max_inflight = 99;
    a.queue_depth = 4321;
    a.max_output_bytes = 5u << 20;
    a.idle_timeout = 300;
    a.batch_sched_above = 5;
    a.log_level = LOG_DEBUG;
    strcpy(a.log_file, "/var/log/im-presence.log");
    strcpy(a.metrics_host, "0.0.0.0");
    a.metrics_port = 9200;
    a.route_ttl = 61;
    a.status_ttl = 62;
    a.max_retries = 5;
    a.retry_interval_ms = 250;
    strcpy(a.cache.host, "cache.example");
    a.cache.port = 7379;
    a.cache.database = 5;
    a.cache.timeout_ms = 1500;
    strcpy(a.cache.username, "cacheuser");
    strcpy(a.queue.host, "queue.example");
    a.queue.port = 8379;
    a.queue.database = 6;
    a.queue.timeout_ms = 2500;
    strcpy(a.queue.username, "queueuser");
    a.cache.wait_replicas = 2;
    a.queue.mode = REDIS_SENTINEL;
    strcpy(a.queue.nodes, "10.0.0.1:26379,10.0.0.2:26379");
    strcpy(a.queue.master_name, "presence-queue");
    strcpy(a.zookeeper.hosts, "zk1.example:2181,zk2.example:2181");
    a.zookeeper.session_timeout_ms = 4000;
    strcpy(a.zookeeper.advertise, "10.1.2.3:6123");

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    config_print(&a, f);
    fclose(f);

    config_defaults(&b);
    char err[512], *report;
    cr_assert_eq(load_text(&b, text, err, sizeof(err), &report), 0, "%s\n%s", err, text);
    cr_assert_str_eq(report, "", "printed keys must all be known: %s", report);
    free(report);
    assert_conf_eq(&a, &b);
    free(text);
    expect_no_leaks();
}

Test(config, print_hides_password)
{
    struct presence_conf c;
    config_defaults(&c);
    strcpy(c.cache.password, "hunter2");
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    config_print(&c, f);
    fclose(f);
    cr_assert_null(strstr(text, "hunter2"), "the password leaked: %s", text);
    cr_assert_not_null(strstr(text, "password = (set)"), "%s", text);
    /* The queue has no password: printed empty, not "(set)". */
    const char *q = strstr(text, "[redis_queue]");
    cr_assert_not_null(q);
    cr_assert_null(strstr(q, "(set)"), "%s", q);
    free(text);
    expect_no_leaks();
}

/* inih (Debian's build) reads lines of at most 200 bytes and would parse the tail of a longer
 * one as a line of its own. A long line is refused with its own line number instead, and no
 * string value can be so long that config_print writes a line that cannot be loaded back. */
Test(config, long_lines_are_refused_with_their_line_number)
{
    struct presence_conf a, b;
    config_defaults(&a);
    char err[512];
    char host[251];
    memset(host, 'h', 250);
    host[250] = '\0';
    cr_assert_neq(config_set(&a, "redis_cache", "host", host, err, sizeof(err)), 0,
                  "a value that cannot be written back on one line is refused");
    host[180] = '\0';
    cr_assert_eq(config_set(&a, "redis_cache", "host", host, err, sizeof(err)), 0, "%s", err);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    config_print(&a, f);
    fclose(f);
    config_defaults(&b);
    cr_assert_eq(load_text(&b, text, err, sizeof(err), NULL), 0, "%s", err);
    cr_assert_str_eq(b.cache.host, host);
    free(text);

    char comment[260];
    memset(comment, 'c', sizeof(comment) - 1);
    comment[sizeof(comment) - 1] = '\0';
    text = NULL;
    f = open_memstream(&text, &len);
    fprintf(f, "[route]\nroute_ttl = 10\n# %s\nstatus_ttl = 20\n", comment);
    fclose(f);
    config_defaults(&b);
    cr_assert_neq(load_text(&b, text, err, sizeof(err), NULL), 0);
    cr_assert_not_null(strstr(err, ":3: line longer than"), "%s", err);
    free(text);
    expect_no_leaks();
}

/* ------------------------------------------------------------------ sentinel (contract §10) */

Test(config, sentinel_mode_parses_its_sentinels)
{
    struct presence_conf c;
    config_defaults(&c);
    cr_assert_eq(c.cache.mode, REDIS_STANDALONE, "standalone by default");
    char err[512];
    cr_assert_eq(load_text(&c,
                           "[redis_cache]\nmode = sentinel\nmaster_name = mymaster\n"
                           "nodes = 127.0.0.1:26379, 127.0.0.1:26380,[::1]:26381\n",
                           err, sizeof(err), NULL),
                 0, "%s", err);
    cr_assert_eq(c.cache.mode, REDIS_SENTINEL);
    cr_assert_str_eq(c.cache.master_name, "mymaster");
    cr_assert_eq(c.cache.nnodes, 3);
    cr_assert_str_eq(c.cache.node[2].host, "::1");
    cr_assert_eq(c.cache.node[2].port, 26381);
    cr_assert_eq(c.queue.mode, REDIS_STANDALONE, "the other section keeps its own mode");
}

Test(config, sentinel_mode_needs_sentinels_and_a_master_name)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"[redis_cache]\nmode = sentinel\nnodes = 127.0.0.1:26379\n", "[redis_cache] master_name"},
        {"[redis_queue]\nmode = sentinel\nmaster_name = m\n", "[redis_queue] nodes"},
        {"[redis_cache]\nmode = sentinel\nmaster_name = m\nnodes = 127.0.0.1\n", "is not host:port"},
        {"[redis_cache]\nmode = sentinel\nmaster_name = m\nnodes = a:1,b:70000\n", "port"},
        {"[redis_cache]\nmode = replica\n", "'replica' is not one of standalone, cluster, sentinel"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct presence_conf c;
        config_defaults(&c);
        char err[512];
        cr_assert_eq(load_text(&c, cases[i].text, err, sizeof(err), NULL), -1, "accepted:\n%s", cases[i].text);
        cr_assert_not_null(strstr(err, cases[i].want), "error '%s' does not say '%s'", err, cases[i].want);
    }
}

/* §10: a cluster needs seed nodes and has database 0 only; both sections default to 0 there. */
Test(config, cluster_mode_needs_seed_nodes_and_database_0)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"[redis_queue]\nmode = cluster\n", "[redis_queue] nodes"},
        {"[redis_cache]\nmode = cluster\nnodes = 127.0.0.1\n", "is not host:port"},
        {"[redis_cache]\nmode = cluster\nnodes = 127.0.0.1:7000\ndatabase = 2\n",
         "[redis_cache] database: 2, but a Redis Cluster has only database 0"},
        {"[redis_queue]\nmode = cluster\nnodes = 127.0.0.1:7000\ndatabase = 1\n", "[redis_queue] database"},
        {"[redis_queue]\npubsub = broadcast\n", "'broadcast' is not one of global, sharded"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct presence_conf c;
        config_defaults(&c);
        char err[512];
        cr_assert_eq(load_text(&c, cases[i].text, err, sizeof(err), NULL), -1, "accepted:\n%s", cases[i].text);
        cr_assert_not_null(strstr(err, cases[i].want), "error '%s' does not say '%s'", err, cases[i].want);
    }
    struct presence_conf c;
    config_defaults(&c);
    char err[512];
    cr_assert_eq(load_text(&c,
                           "[redis_cache]\nmode = cluster\nnodes = 127.0.0.1:7000,127.0.0.1:7001\n"
                           "[redis_queue]\nmode = cluster\nnodes = 127.0.0.1:7000\ndatabase = 0\npubsub = sharded\n",
                           err, sizeof(err), NULL),
                 0, "%s", err);
    cr_assert_eq(c.cache.mode, REDIS_CLUSTER);
    cr_assert_eq(c.cache.nnodes, 2);
    cr_assert_eq(c.cache.node[1].port, 7001);
    cr_assert_eq(c.cache.database, 0);
    cr_assert_eq(c.queue.database, 0, "the queue's default 1 becomes 0 on a cluster");
    cr_assert_eq(c.queue.pubsub, PUBSUB_SHARDED);
    cr_assert_eq(c.cache.pubsub, PUBSUB_GLOBAL);
}

/* §9: the dialect is seed (default) or mpim; anything else names the key. */
Test(config, dialect_is_seed_or_mpim)
{
    struct presence_conf c;
    config_defaults(&c);
    cr_assert_eq(c.dialect, DIALECT_SEED);
    char err[512];
    cr_assert_eq(load_text(&c, "[presence_service]\ndialect = mpim\n", err, sizeof(err), NULL), 0, "%s", err);
    cr_assert_eq(c.dialect, DIALECT_MPIM);
    config_defaults(&c);
    cr_assert_eq(load_text(&c, "[presence_service]\ndialect = MPIM\n", err, sizeof(err), NULL), -1);
    cr_assert_not_null(strstr(err, "[presence_service] dialect: 'MPIM' is not one of seed, mpim"), "%s", err);
    cr_assert_eq(c.dialect, DIALECT_SEED, "a refused value changes nothing");
}

/* §7: [presence_service] max_batch, the ids one batch call may list: 1000 by default, 1-100000. */
Test(config, max_batch_default_and_bounds)
{
    struct presence_conf c;
    config_defaults(&c);
    cr_assert_eq(c.max_batch, 1000);
    char err[512];
    cr_assert_eq(load_text(&c, "[presence_service]\nmax_batch = 1\n", err, sizeof(err), NULL), 0, "%s", err);
    cr_assert_eq(c.max_batch, 1);
    cr_assert_eq(config_set(&c, "presence_service", "max_batch", "100000", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(c.max_batch, 100000);
    const char *bad[] = {"0", "-1", "100001", "1k", "ten"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        config_defaults(&c);
        char text[64];
        snprintf(text, sizeof(text), "[presence_service]\nmax_batch = %s\n", bad[i]);
        cr_assert_eq(load_text(&c, text, err, sizeof(err), NULL), -1, "max_batch = %s accepted", bad[i]);
        cr_assert_not_null(strstr(err, ":2: [presence_service] max_batch: "), "%s", err);
        cr_assert_eq(c.max_batch, 1000, "a refused value changes nothing");
        remove_tmp();
    }
    expect_no_leaks();
}

/* ------------------------------------------------------------------ zookeeper (contract §9) */

Test(config, zookeeper_defaults_off)
{
    struct presence_conf c;
    config_defaults(&c);
    cr_assert_str_eq(c.zookeeper.hosts, "", "off unless hosts is set");
    cr_assert_eq(c.zookeeper.session_timeout_ms, 10000);
    cr_assert_str_eq(c.zookeeper.advertise, "");
    char addr[64];
    config_zookeeper_advertise(&c, addr, sizeof(addr));
    cr_assert_str_eq(addr, "127.0.0.1:6000", "the listen address by default");
    /* The design's file (no [zookeeper]) keeps it off. */
    char err[512];
    cr_assert_eq(load_text(&c, design_ini, err, sizeof(err), NULL), 0, "%s", err);
    cr_assert_str_eq(c.zookeeper.hosts, "");
}

Test(config, zookeeper_keys_are_applied)
{
    struct presence_conf c;
    config_defaults(&c);
    char err[512], *report;
    cr_assert_eq(load_text(&c,
                           "[presence_service]\nhost = 0.0.0.0\nport = 6100\n"
                           "[zookeeper]\nhosts = 10.0.0.1:2181, zk.local:2182\nsession_timeout = 3000\n"
                           "advertise = 10.0.0.7:6100\n",
                           err, sizeof(err), &report),
                 0, "%s", err);
    cr_assert_str_eq(report, "", "all keys known: %s", report);
    free(report);
    cr_assert_str_eq(c.zookeeper.hosts, "10.0.0.1:2181, zk.local:2182", "kept as written");
    cr_assert_eq(c.zookeeper.session_timeout_ms, 3000);
    char addr[64];
    config_zookeeper_advertise(&c, addr, sizeof(addr));
    cr_assert_str_eq(addr, "10.0.0.7:6100");

    /* Without advertise on a concrete listen address: host:port, the port as finally set. */
    config_defaults(&c);
    cr_assert_eq(
        load_text(&c, "[presence_service]\nhost = 192.168.1.5\n[zookeeper]\nhosts = 127.0.0.1:2181\n", err,
                  sizeof(err), NULL),
        0, "%s", err);
    cr_assert_eq(config_set(&c, "presence_service", "port", "6001", err, sizeof(err)), 0);
    config_zookeeper_advertise(&c, addr, sizeof(addr));
    cr_assert_str_eq(addr, "192.168.1.5:6001");
    expect_no_leaks();
}

/* Bad [zookeeper] values stop the server (exit 2) with the key named. */
Test(config, zookeeper_bad_values_name_the_key)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"[zookeeper]\nhosts = 127.0.0.1\n", "[zookeeper] hosts: '127.0.0.1' is not host:port"},
        {"[zookeeper]\nhosts = 127.0.0.1:2181,\n", "[zookeeper] hosts:"},
        {"[zookeeper]\nhosts = a:1,b:99999\n", "[zookeeper] hosts:"},
        {"[zookeeper]\nhosts = :2181\n", "[zookeeper] hosts:"},
        {"[zookeeper]\nhosts = 127.0.0.1:2181\nadvertise = nowhere\n", "[zookeeper] advertise: 'nowhere'"},
        {"[zookeeper]\nadvertise = 10.0.0.1:0\n", "[zookeeper] advertise:"},
        {"[zookeeper]\nadvertise = 10.0.0.1:6000,10.0.0.2:6000\n", "[zookeeper] advertise:"},
        {"[zookeeper]\nhosts = 127.0.0.1:2181\nadvertise = 0.0.0.0:6000\n", "[zookeeper] advertise:"},
        {"[presence_service]\nhost = 0.0.0.0\n[zookeeper]\nhosts = 127.0.0.1:2181\n",
         "[zookeeper] advertise: required when [presence_service] host is 0.0.0.0"},
        {"[presence_service]\nhost = ::\n[zookeeper]\nhosts = 127.0.0.1:2181\n",
         "[zookeeper] advertise: required"},
        {"[zookeeper]\nsession_timeout = 0\n", "[zookeeper] session_timeout:"},
        {"[zookeeper]\nsession_timeout = 10s\n", "[zookeeper] session_timeout:"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct presence_conf c;
        config_defaults(&c);
        char err[512];
        cr_assert_eq(load_text(&c, cases[i].text, err, sizeof(err), NULL), -1, "accepted:\n%s",
                     cases[i].text);
        cr_assert_not_null(strstr(err, cases[i].want), "error '%s' does not say '%s'", err, cases[i].want);
    }
    /* A wildcard listen address is fine while ZooKeeper is off, or with advertise. */
    struct presence_conf c;
    config_defaults(&c);
    char err[512];
    cr_assert_eq(load_text(&c, "[presence_service]\nhost = 0.0.0.0\n", err, sizeof(err), NULL), 0, "%s", err);
    cr_assert_eq(load_text(&c,
                           "[presence_service]\nhost = 0.0.0.0\n[zookeeper]\nhosts = 127.0.0.1:2181\n"
                           "advertise = 10.0.0.7:6000\n",
                           err, sizeof(err), NULL),
                 0, "%s", err);
    expect_no_leaks();
}
