/* core/log: level names and the one-line-per-second limiter. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "leak.h"

Test(log, parse_and_name_levels)
{
    cr_assert_eq(log_parse_level("error"), LOG_ERROR);
    cr_assert_eq(log_parse_level("warn"), LOG_WARN);
    cr_assert_eq(log_parse_level("info"), LOG_INFO);
    cr_assert_eq(log_parse_level("debug"), LOG_DEBUG);
    cr_assert_eq(log_parse_level(""), -1);
    cr_assert_eq(log_parse_level("warning"), -1);
    cr_assert_eq(log_parse_level("INFO"), -1);
    cr_assert_eq(log_parse_level("trace"), -1);
    for (int l = LOG_ERROR; l <= LOG_DEBUG; l++)
        cr_assert_eq(log_parse_level(log_level_name(l)), l);
    cr_assert_str_eq(log_level_name(LOG_WARN), "warn");
    cr_assert_str_eq(log_level_name(-1), "?");
    cr_assert_str_eq(log_level_name(4), "?");
    log_set_level(LOG_DEBUG);
    cr_assert_eq(log_get_level(), LOG_DEBUG);
    expect_no_leaks();
}

/* stderr goes to a temporary file for the test (each Criterion test runs in its own process). */
static FILE *capture;
static int saved_stderr = -1;

static void capture_start(void)
{
    capture = tmpfile();
    cr_assert_not_null(capture);
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    cr_assert_geq(saved_stderr, 0);
    cr_assert_geq(dup2(fileno(capture), STDERR_FILENO), 0);
}

/* Stop capturing; returns what was written (malloc'd) and its line count in *lines. */
static char *capture_stop(int *lines)
{
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    fseek(capture, 0, SEEK_END);
    long n = ftell(capture);
    rewind(capture);
    char *text = calloc(1, (size_t)n + 1);
    cr_assert_eq(fread(text, 1, (size_t)n, capture), (size_t)n);
    fclose(capture);
    *lines = 0;
    for (char *p = text; *p; p++)
        *lines += *p == '\n';
    return text;
}

Test(log, write_filters_by_level_and_formats)
{
    log_set_level(LOG_INFO);
    log_set_thread("shard-3");
    capture_start();
    log_debug("hidden %d", 1);
    log_info("hello %s", "world");
    log_warn("careful");
    log_error("broken %d", 42);
    int lines;
    char *text = capture_stop(&lines);
    cr_assert_eq(lines, 3, "'%s'", text);
    cr_assert_null(strstr(text, "hidden"));
    cr_assert_not_null(strstr(text, " info  shard-3 hello world\n"), "'%s'", text);
    cr_assert_not_null(strstr(text, " warn  shard-3 careful\n"), "'%s'", text);
    cr_assert_not_null(strstr(text, " error shard-3 broken 42\n"), "'%s'", text);
    /* "YYYY-MM-DDTHH:MM:SS.mmmZ " */
    cr_assert_eq(text[4], '-');
    cr_assert_eq(text[10], 'T');
    cr_assert_eq(text[19], '.');
    cr_assert_eq(text[23], 'Z');
    free(text);
    expect_no_leaks();
}

Test(log, long_message_is_one_clipped_line)
{
    log_set_level(LOG_INFO);
    char big[4000];
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    capture_start();
    log_info("%s", big);
    struct log_limit lim = {0};
    log_limited(&lim, LOG_INFO, "%s", big);
    int lines;
    char *text = capture_stop(&lines);
    cr_assert_eq(lines, 2);
    char *second = strchr(text, '\n') + 1;
    cr_assert_leq((size_t)(second - text), 1024);
    cr_assert_leq(strlen(second), 1024);
    cr_assert_eq(second[strlen(second) - 1], '\n');
    free(text);
    expect_no_leaks();
}

Test(log, limited_suppresses_within_a_second, .timeout = 10)
{
    log_set_level(LOG_INFO);
    struct log_limit lim = {0};
    capture_start();
    for (int i = 0; i < 5; i++)
        log_limited(&lim, LOG_WARN, "redis down %d", i);
    /* Below the level: neither printed nor counted. */
    log_limited(&lim, LOG_DEBUG, "debug noise");
    struct timespec ts = {1, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    log_limited(&lim, LOG_WARN, "redis down %d", 5);
    log_limited(&lim, LOG_WARN, "redis down %d", 6); /* a new window: suppressed again */
    int lines;
    char *text = capture_stop(&lines);
    cr_assert_eq(lines, 2, "'%s'", text);
    cr_assert_not_null(strstr(text, "redis down 0\n"), "'%s'", text);
    cr_assert_null(strstr(text, "redis down 1"), "'%s'", text);
    cr_assert_not_null(strstr(text, "redis down 5 (4 similar suppressed)\n"), "'%s'", text);
    cr_assert_null(strstr(text, "redis down 6"), "'%s'", text);
    cr_assert_eq(lim.suppressed, 1);
    free(text);
    expect_no_leaks();
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    char *text = calloc(1, 4096);
    size_t n = fread(text, 1, 4095, f);
    text[n] = '\0';
    fclose(f);
    return text;
}

/* log_file: lines go to the file; after a rotation (rename + log_open again) new lines go to the
 * new file and none are lost or split. */
Test(log, log_open_and_reopen_after_rotation)
{
    char dir[] = "/tmp/pr-log-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[64], rotated[64];
    snprintf(path, sizeof(path), "%s/presence.log", dir);
    snprintf(rotated, sizeof(rotated), "%s/presence.log.1", dir);
    log_set_level(LOG_INFO);
    capture_start();
    cr_assert_eq(log_open(path), 0);
    log_info("first %d", 1);
    cr_assert_eq(rename(path, rotated), 0);
    log_info("second %d", 2); /* still the renamed file until reopened */
    cr_assert_eq(log_open(path), 0);
    log_info("third %d", 3);
    cr_assert_eq(log_open("/nonexistent-dir/x.log"), -1);
    log_info("fourth %d", 4); /* a failed reopen keeps the current file */
    int lines;
    char *err = capture_stop(&lines);
    cr_assert_eq(lines, 0, "nothing may reach stderr once a log file is open: '%s'", err);
    free(err);

    char *old = read_file(rotated), *cur = read_file(path);
    cr_assert_not_null(strstr(old, " first 1\n"), "'%s'", old);
    cr_assert_not_null(strstr(old, " second 2\n"), "'%s'", old);
    cr_assert_null(strstr(old, "third"), "'%s'", old);
    cr_assert_not_null(strstr(cur, " third 3\n"), "'%s'", cur);
    cr_assert_not_null(strstr(cur, " fourth 4\n"), "'%s'", cur);
    cr_assert_null(strstr(cur, "first"), "'%s'", cur);
    free(old);
    free(cur);
    unlink(rotated);
    unlink(path);
    rmdir(dir);
    expect_no_leaks();
}
