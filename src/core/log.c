#include "core/log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"

static int log_level = LOG_INFO;
static int log_fd = STDERR_FILENO; /* replaced in place by dup2, so writers never see it change */
static _Thread_local char thread_name[24] = "main";

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(int level)
{
    log_level = level;
}

int log_get_level(void)
{
    return log_level;
}

int log_parse_level(const char *name)
{
    for (int i = 0; i <= LOG_DEBUG; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

const char *log_level_name(int level)
{
    return level >= 0 && level <= LOG_DEBUG ? level_names[level] : "?";
}

int log_open(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    /* The first time, move off stderr onto a descriptor of our own; later, swap the file under
     * that same descriptor number. */
    if (log_fd == STDERR_FILENO) {
        log_fd = fd;
        return 0;
    }
    int rc = dup3(fd, log_fd, O_CLOEXEC);
    close(fd);
    return rc < 0 ? -1 : 0;
}

void log_set_thread(const char *name)
{
    snprintf(thread_name, sizeof(thread_name), "%s", name);
}

static void log_vwrite(int level, const char *suffix, const char *fmt, va_list ap)
{
    char line[1024];
    int64_t now = clock_now_ms();
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03dZ %-5s %s ", (int)(now % 1000),
                          level_names[level], thread_name);
    int m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    n = m < 0 ? n : (n + (size_t)m < sizeof(line) - 1 ? n + (size_t)m : sizeof(line) - 2);
    if (suffix != NULL)
        n += (size_t)snprintf(line + n, sizeof(line) - 1 - n, "%s", suffix);
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(log_fd, line, n);
    (void)w; /* nowhere left to report a failed log write */
}

void log_write(int level, const char *fmt, ...)
{
    if (level > log_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, NULL, fmt, ap);
    va_end(ap);
}

void log_limited(struct log_limit *lim, int level, const char *fmt, ...)
{
    if (level > log_level)
        return;
    int64_t now = (int64_t)(clock_mono_ns() / 1000000u); /* a clock step must not mute warnings */
    if (lim->window_ms != 0 && now - lim->window_ms < 1000) {
        lim->suppressed++;
        return;
    }
    lim->window_ms = now;
    char suffix[64] = "";
    if (lim->suppressed > 0)
        snprintf(suffix, sizeof(suffix), " (%u similar suppressed)", lim->suppressed);
    lim->suppressed = 0;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, suffix, fmt, ap);
    va_end(ap);
}
