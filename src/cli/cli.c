/* im-presence-cli: one request to an im-presence server, answered on one line.
 *
 * Exit status: 0 the server answered OK or NOT_FOUND; 1 it answered any other code;
 * 2 usage error; 3 transport error (cannot connect, timeout, connection lost). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_stats.h"
#include "client/presence_client.h"

#define PROG "im-presence-cli"

enum cli_exit {
    EXIT_ANSWER = 0,    /* OK or NOT_FOUND */
    EXIT_REFUSED = 1,   /* any other Result code */
    EXIT_USAGE = 2,     /* bad or missing arguments */
    EXIT_TRANSPORT = 3, /* connect, timeout, closed, malformed response */
};

struct command {
    const char *name; /* as typed on the command line */
    int method;       /* enum pr_method */
    int min_args;     /* arguments after the command name, UID included */
    int max_args;
};

static const struct command commands[] = {
    {"bind", PR_METHOD_BIND, 2, 2},
    {"query", PR_METHOD_QUERY, 1, 1},
    {"deliver", PR_METHOD_DELIVER, 2, 3},
    {"unbind", PR_METHOD_UNBIND, 2, 2},
    {"heartbeat", PR_METHOD_HEARTBEAT, 2, 2},
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " [-h HOST] [-p PORT] [-t TIMEOUT_MS] COMMAND ...\n"
            "\n"
            "commands:\n"
            "  bind UID GW                 bind user UID to gateway GW (host:port)\n"
            "  query UID                   show the gateway of user UID\n"
            "  deliver UID MESSAGE [TYPE]  publish MESSAGE to user UID\n"
            "  unbind UID GW               remove the route if it still names GW\n"
            "  heartbeat UID GW            renew the route if it still names GW\n"
            "  stats [--all]               the server's counters as a table (--all: with histogram buckets)\n"
            "  watch [-n COUNT] [UID]      follow presence:route (and user:UID) on the queue Redis\n"
            "\n"
            "options:\n"
            "  -h HOST        server host (default 127.0.0.1)\n"
            "  -p PORT        server port (default 6000)\n"
            "  -t TIMEOUT_MS  connect and reply timeout, 0 for none (default 5000)\n"
            "  -r HOST:PORT   queue Redis for watch (default 127.0.0.1:6379)\n"
            "  --help         show this help\n"
            "\n"
            "exit status: 0 OK or NOT_FOUND, 1 other answer, 2 usage error, 3 transport error\n");
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, PROG ": ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    usage(stderr);
    return EXIT_USAGE;
}

/* A whole decimal number in [min, max]; anything else is a usage error. */
static bool parse_ll(const char *s, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* Bytes that need no quoting: printable ASCII except space, quote and backslash. */
static bool is_bare(uint8_t b)
{
    return b > 0x20 && b < 0x7f && b != '"' && b != '\\';
}

static void print_quoted(const uint8_t *p, size_t len)
{
    putchar('"');
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '"' || p[i] == '\\')
            printf("\\%c", p[i]);
        else if (p[i] == '\n')
            fputs("\\n", stdout);
        else if (p[i] >= 0x20 && p[i] < 0x7f)
            putchar(p[i]);
        else
            printf("\\x%02x", p[i]);
    }
    putchar('"');
}

/* A value from the server: bare when it is a plain token, quoted otherwise. */
static void print_value(const uint8_t *p, size_t len)
{
    bool bare = len > 0;
    for (size_t i = 0; i < len && bare; i++)
        bare = is_bare(p[i]);
    if (bare)
        fwrite(p, 1, len, stdout);
    else
        print_quoted(p, len);
}

static const char *yes_no(protobuf_c_boolean b)
{
    return b ? "yes" : "no";
}

static const Mpim__Result *result_of(int method, const ProtobufCMessage *m)
{
    switch (method) {
    case PR_METHOD_BIND: return ((const Mpim__BindRouteResp *)m)->result;
    case PR_METHOD_QUERY: return ((const Mpim__QueryRouteResp *)m)->result;
    case PR_METHOD_DELIVER: return ((const Mpim__DeliverResp *)m)->result;
    case PR_METHOD_UNBIND: return ((const Mpim__UnbindRouteResp *)m)->result;
    default: return ((const Mpim__HeartbeatResp *)m)->result;
    }
}

/* The method's own fields, each as " key=value". */
static void print_fields(int method, const ProtobufCMessage *m)
{
    switch (method) {
    case PR_METHOD_BIND: {
        const Mpim__BindRouteResp *r = (const Mpim__BindRouteResp *)m;
        if (r->route_key != NULL && r->route_key[0] != '\0') {
            fputs(" route_key=", stdout);
            print_value((const uint8_t *)r->route_key, strlen(r->route_key));
        }
        break;
    }
    case PR_METHOD_QUERY: {
        const Mpim__QueryRouteResp *r = (const Mpim__QueryRouteResp *)m;
        if (r->gateway_addr.len > 0) {
            fputs(" gateway=", stdout);
            print_value(r->gateway_addr.data, r->gateway_addr.len);
        }
        printf(" online=%s", yes_no(r->is_online));
        break;
    }
    case PR_METHOD_DELIVER: {
        const Mpim__DeliverResp *r = (const Mpim__DeliverResp *)m;
        printf(" delivered=%s timestamp=%lld", yes_no(r->delivered), (long long)r->timestamp);
        break;
    }
    case PR_METHOD_UNBIND:
        printf(" unbound=%s", yes_no(((const Mpim__UnbindRouteResp *)m)->unbound));
        break;
    default:
        printf(" refreshed=%s", yes_no(((const Mpim__HeartbeatResp *)m)->refreshed));
        break;
    }
}

/* Print the answer on one line and map its code to the exit status. Error replies carry only
 * a Result, so their method fields (all defaults) are left out. */
static int print_reply(int method, const ProtobufCMessage *m)
{
    const Mpim__Result *res = result_of(method, m);
    int code = res != NULL ? (int)res->code : MPIM__CODE__OK; /* absent Result: proto3 default */
    const char *msg = res != NULL && res->msg != NULL ? res->msg : "";
    bool answer = code == MPIM__CODE__OK || code == MPIM__CODE__NOT_FOUND;

    if (code < MPIM__CODE__OK || code > MPIM__CODE__OVERLOADED)
        printf("UNKNOWN(%d)", code);
    else
        fputs(pc_code_name(code), stdout);
    if (answer)
        print_fields(method, m);
    if (msg[0] != '\0') {
        fputs(" msg=", stdout);
        print_quoted((const uint8_t *)msg, strlen(msg));
    }
    putchar('\n');
    return answer ? EXIT_ANSWER : EXIT_REFUSED;
}

/* Send the command's request and wait for the answer. args[0] is the UID. */
static int run(struct pc_client *c, const struct command *cmd, int64_t uid, int nargs, char **args,
               ProtobufCMessage **resp)
{
    int rc;
    switch (cmd->method) {
    case PR_METHOD_BIND: {
        Mpim__BindRouteResp *r = NULL;
        rc = pc_bind(c, uid, args[1], &r);
        *resp = r != NULL ? &r->base : NULL;
        break;
    }
    case PR_METHOD_QUERY: {
        Mpim__QueryRouteResp *r = NULL;
        rc = pc_query(c, uid, &r);
        *resp = r != NULL ? &r->base : NULL;
        break;
    }
    case PR_METHOD_DELIVER: {
        Mpim__DeliverResp *r = NULL;
        rc = pc_deliver(c, uid, args[1], strlen(args[1]), nargs > 2 ? args[2] : NULL, &r);
        *resp = r != NULL ? &r->base : NULL;
        break;
    }
    case PR_METHOD_UNBIND: {
        Mpim__UnbindRouteResp *r = NULL;
        rc = pc_unbind(c, uid, args[1], &r);
        *resp = r != NULL ? &r->base : NULL;
        break;
    }
    default: {
        Mpim__HeartbeatResp *r = NULL;
        rc = pc_heartbeat(c, uid, args[1], &r);
        *resp = r != NULL ? &r->base : NULL;
        break;
    }
    }
    return rc;
}

/* watch [-n COUNT] [UID]: argv[0] is "watch". */
static int watch_command(const char *redis_addr, int argc, char **argv)
{
    long long count = 0, uid = 0;
    int i = 1;
    if (i < argc && strcmp(argv[i], "-n") == 0) {
        if (i + 1 >= argc || !parse_ll(argv[i + 1], 1, LLONG_MAX, &count))
            return usage_error("%s", "watch: -n takes a positive count");
        i += 2;
    }
    if (i < argc && !parse_ll(argv[i++], 1, LLONG_MAX, &uid))
        return usage_error("invalid UID '%s'", argv[i - 1]);
    if (i < argc)
        return usage_error("%s", "usage: watch [-n COUNT] [UID]");
    char host[256];
    long long port = 6379;
    const char *colon = strrchr(redis_addr, ':');
    size_t hlen = colon != NULL ? (size_t)(colon - redis_addr) : strlen(redis_addr);
    if (hlen == 0 || hlen >= sizeof(host) || (colon != NULL && !parse_ll(colon + 1, 1, 65535, &port)))
        return usage_error("invalid -r address '%s' (HOST:PORT)", redis_addr);
    memcpy(host, redis_addr, hlen);
    host[hlen] = '\0';
    return cli_watch(host, (int)port, uid, count);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    long long port = 6000, timeout_ms = 5000;
    static const struct option longopts[] = {{"help", no_argument, NULL, 'H'}, {NULL, 0, NULL, 0}};

    /* '+': options end at the command, so "query -5" sends -5 for the server to judge. */
    int opt;
    const char *redis_addr = "127.0.0.1:6379";
    while ((opt = getopt_long(argc, argv, "+h:p:t:r:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'r':
            redis_addr = optarg;
            break;
        case 'h':
            host = optarg;
            break;
        case 'p':
            if (!parse_ll(optarg, 1, 65535, &port))
                return usage_error("invalid port '%s'", optarg);
            break;
        case 't':
            if (!parse_ll(optarg, 0, INT_MAX, &timeout_ms))
                return usage_error("invalid timeout '%s'", optarg);
            break;
        case 'H':
            usage(stdout);
            return EXIT_ANSWER;
        default:
            usage(stderr); /* getopt already said what was wrong */
            return EXIT_USAGE;
        }
    }
    if (optind >= argc)
        return usage_error("%s", "missing command");
    if (strcmp(argv[optind], "watch") == 0)
        return watch_command(redis_addr, argc - optind, argv + optind);
    bool stats = strcmp(argv[optind], "stats") == 0;
    if (stats && (argc - optind > 2 || (argc - optind == 2 && strcmp(argv[optind + 1], "--all") != 0)))
        return usage_error("%s", "usage: stats [--all]");
    const struct command *cmd = stats ? NULL : find_command(argv[optind]);
    if (cmd == NULL && !stats)
        return usage_error("unknown command '%s'", argv[optind]);
    char **args = argv + optind + 1;
    int nargs = argc - optind - 1;
    long long uid = 0;
    if (!stats) {
        if (nargs < cmd->min_args || nargs > cmd->max_args)
            return usage_error("wrong number of arguments for '%s'", cmd->name);
        if (!parse_ll(args[0], LLONG_MIN, LLONG_MAX, &uid))
            return usage_error("invalid UID '%s'", args[0]);
    }

    /* IPv6 literals get brackets so the port stays readable. */
    char where[300];
    if (strchr(host, ':') != NULL)
        snprintf(where, sizeof(where), "[%s]:%lld", host, port);
    else
        snprintf(where, sizeof(where), "%s:%lld", host, port);

    const char *err = NULL;
    struct pc_client *c = pc_connect(host, (int)port, (int)timeout_ms, &err);
    if (c == NULL) {
        fprintf(stderr, PROG ": cannot connect to %s: %s\n", where, err);
        return EXIT_TRANSPORT;
    }
    if (stats) {
        int status = cli_stats(c, where, nargs == 1);
        pc_close(c);
        return status;
    }
    ProtobufCMessage *resp = NULL;
    int status;
    if (run(c, cmd, (int64_t)uid, nargs, args, &resp) < 0) {
        fprintf(stderr, PROG ": %s request to %s failed: %s\n", cmd->name, where, pc_error(c));
        status = EXIT_TRANSPORT;
    } else {
        status = print_reply(cmd->method, resp);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    pc_close(c);
    return status;
}
