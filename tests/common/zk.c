#include "zk.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "proc.h"

int tp_zk_init(struct tp_zk *z, const char *parent, const char *name)
{
    memset(z, 0, sizeof(*z));
    snprintf(z->name, sizeof(z->name), "%s", name);
    z->tick_ms = 200;
    z->ready_ms = 30000;
    int n = snprintf(z->dir, sizeof(z->dir), "%s/%s", parent, name);
    int m = snprintf(z->log, sizeof(z->log), "%s/%s.log", parent, name);
    if (n < 0 || (size_t)n + 16 >= sizeof(z->dir) || m < 0 || (size_t)m >= sizeof(z->log)) {
        tp_set_error("path too long: %s/%s", parent, name);
        return -1;
    }
    if (mkdir(z->dir, 0700) != 0 && errno != EEXIST) {
        tp_set_error("mkdir %s: %s", z->dir, strerror(errno));
        return -1;
    }
    return 0;
}

bool tp_zk_serving(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct timeval tv = {0, 500000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = tp_loopback(port);
    char buf[1024];
    size_t len = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && write(fd, "srvr", 4) == 4) {
        ssize_t r;
        while (len < sizeof(buf) - 1 && (r = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
            len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    /* Before its database is loaded it answers "... not currently serving requests". */
    return strstr(buf, "Mode: standalone") != NULL;
}

int tp_zk_pick_port(void)
{
    int low = 32768;
    char *range = tp_read_file("/proc/sys/net/ipv4/ip_local_port_range");
    if (range != NULL && atoi(range) > 11000)
        low = atoi(range);
    free(range);
    unsigned seed = (unsigned)getpid() ^ (unsigned)tp_mono_ms();
    for (int i = 0; i < 100; i++) {
        int port = 10000 + (int)(rand_r(&seed) % (unsigned)(low - 10000));
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            break;
        struct sockaddr_in a = tp_loopback(port);
        bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(fd);
        if (ok)
            return port;
    }
    tp_set_error("no free port below %d", low);
    return -1;
}

/* The server's own log: warnings and errors only (a port taken, a corrupt log, ...). */
static int write_logging(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        tp_set_error("fopen %s: %s", path, strerror(errno));
        return -1;
    }
    fputs("handlers=java.util.logging.ConsoleHandler\n.level=WARNING\n"
          "java.util.logging.ConsoleHandler.level=WARNING\n",
          f);
    return fclose(f) == 0 ? 0 : -1;
}

static int write_cfg(const struct tp_zk *z, const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        tp_set_error("fopen %s: %s", path, strerror(errno));
        return -1;
    }
    fprintf(f,
            "tickTime=%d\n"
            "minSessionTimeout=%d\n"
            "maxSessionTimeout=%d\n"
            "dataDir=%s/data\n"
            "clientPort=%d\n"
            "clientPortAddress=127.0.0.1\n"
            "maxClientCnxns=0\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=srvr,ruok\n",
            z->tick_ms, 2 * z->tick_ms, 100 * z->tick_ms, z->dir, z->port);
    if (fclose(f) != 0) {
        tp_set_error("write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static bool zk_ready(void *arg)
{
    return tp_zk_serving(*(const int *)arg);
}

static int zk_spawn(struct tp_zk *z)
{
    char cfg[PATH_MAX + 16], tmp[PATH_MAX + 32], logging[PATH_MAX + 32], logging_opt[PATH_MAX + 96];
    snprintf(cfg, sizeof(cfg), "%s/zoo.cfg", z->dir);
    snprintf(tmp, sizeof(tmp), "-Djava.io.tmpdir=%s", z->dir);
    snprintf(logging, sizeof(logging), "%s/logging.properties", z->dir);
    snprintf(logging_opt, sizeof(logging_opt), "-Djava.util.logging.config.file=%s", logging);
    if (write_cfg(z, cfg) < 0 || write_logging(logging) < 0)
        return -1;
    /* A small, quick-starting JVM; no fsync (a test's data need not survive a power cut); a
     * restart after SIGKILL may find a log without a snapshot, which is fine here. */
    const char *argv[] = {JAVA_BIN,
                          "-Xmx96m",
                          "-XX:+UseSerialGC",
                          "-XX:TieredStopAtLevel=1",
                          "-XX:-UsePerfData",
                          "-Djava.net.preferIPv4Stack=true",
                          tmp,
                          logging_opt,
                          "-Dzookeeper.forceSync=no",
                          "-Dzookeeper.snapshot.trust.empty=true",
                          "-cp",
                          ZOOKEEPER_CLASSPATH,
                          "org.apache.zookeeper.server.ZooKeeperServerMain",
                          cfg,
                          NULL};
    z->pid = tp_spawn(argv, z->log, NULL);
    if (z->pid < 0) {
        z->pid = 0;
        return -1;
    }
    if (tp_wait_ready(&z->pid, zk_ready, &z->port, z->ready_ms, 50) == 0)
        return 0;
    tp_set_error("zookeeper did not serve on 127.0.0.1:%d within %d ms (%s); see %s", z->port, z->ready_ms,
                 z->pid == 0 ? "it exited" : "killed", z->log);
    if (z->pid != 0)
        tp_kill_reap(z->pid);
    z->pid = 0;
    return -1;
}

int tp_zk_start(struct tp_zk *z, bool new_port, int attempts)
{
    for (int attempt = 0; attempt < attempts; attempt++) {
        if (new_port && (z->port = tp_free_port()) < 0)
            return -1;
        if (zk_spawn(z) == 0)
            return 0;
    }
    return -1;
}

void tp_zk_kill(struct tp_zk *z)
{
    if (z->pid == 0)
        return;
    tp_kill_reap(z->pid);
    z->pid = 0;
}

void tp_zk_wipe(struct tp_zk *z)
{
    char data[PATH_MAX + 8];
    snprintf(data, sizeof(data), "%s/data", z->dir);
    tp_rm_tree(data);
}
