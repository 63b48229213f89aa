/* Leveled one-line logs: "<time> <level> <thread> <message>". Any thread; each line is written
 * with a single write(2), so lines from different threads never interleave. */
#ifndef PR_CORE_LOG_H
#define PR_CORE_LOG_H

#include <stdint.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Set once at start-up, before threads start. */
void log_set_level(int level);
int log_get_level(void);
/* "error" | "warn" | "info" | "debug" -> level, or -1. */
int log_parse_level(const char *name);
const char *log_level_name(int level);

/* Send lines to path (appending) instead of stderr; call again to reopen it after rotation
 * (SIGHUP). Any thread; lines being written meanwhile go to the old or the new file, whole.
 * 0, or -1 with errno. */
int log_open(const char *path);

/* The calling thread's name in each line ("acceptor", "shard-3"). */
void log_set_thread(const char *name);

void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)

/* Rate limit for one repeating event, owned by one thread: at most one line per second, then
 * a "N similar suppressed" count on the next line that gets through. */
struct log_limit {
    int64_t window_ms;  /* start of the current one-second window */
    uint32_t suppressed; /* events dropped in earlier windows, not yet reported */
};

void log_limited(struct log_limit *lim, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
