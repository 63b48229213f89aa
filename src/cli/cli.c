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
    {"bind", PR_METHOD_BIND, 2, 6},
    {"query", PR_METHOD_QUERY, 1, 1},
    {"deliver", PR_METHOD_DELIVER, 2, 3},
    {"unbind", PR_METHOD_UNBIND, 2, 6},
    {"heartbeat", PR_METHOD_HEARTBEAT, 2, 6},
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " [-h HOST] [-p PORT] [-t TIMEOUT_MS] COMMAND ...\n"
            "\n"
            "commands:\n"
            "  bind UID GW [--device D] [--platform P]\n"
            "                              bind device D (default \"\") of user UID to gateway GW\n"
            "  query UID                   show the gateway of user UID and each live session\n"
            "  deliver UID MESSAGE [TYPE]  publish MESSAGE to user UID\n"
            "  unbind UID GW [--device D] [--epoch E]\n"
            "                              end the session if it is still on GW (and holds epoch E)\n"
            "  heartbeat UID GW [--device D] [--epoch E]\n"
            "                              renew the session if it is still on GW (and holds epoch E)\n"
            "  batch-query UID...          query every UID in one call: one line per UID, in order\n"
            "  batch-deliver MESSAGE UID...\n"
            "                              publish MESSAGE to every UID in one call, one line per UID\n"
            "  gateway-heartbeat GW MS     register or renew gateway GW's lease: it ends MS ms from now\n"
            "                              (1000-600000); a lapsed lease drains the gateway\n"
            "  drain GW                    end every session on gateway GW, as their unbind would, and\n"
            "                              its lease (waits as long as the drain takes unless -t is given)\n"
            "  stats [--all]               the server's counters as a table (--all: with histogram buckets)\n"
            "  watch [-n COUNT] [-s] [UID] follow presence:route, presence:kick (and user:UID) on the\n"
            "                              queue Redis; -s: user:UID by SSUBSCRIBE on its slot master\n"
            "                              (pubsub = sharded; a MOVED from -r's node is followed)\n"
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
        if (r->epoch != 0)
            printf(" epoch=%lld", (long long)r->epoch);
        if (r->n_displaced > 0)
            printf(" displaced=%zu", r->n_displaced);
        break;
    }
    case PR_METHOD_QUERY: {
        const Mpim__QueryRouteResp *r = (const Mpim__QueryRouteResp *)m;
        if (r->gateway_addr.len > 0) {
            fputs(" gateway=", stdout);
            print_value(r->gateway_addr.data, r->gateway_addr.len);
        }
        printf(" online=%s", yes_no(r->is_online));
        if (r->n_sessions > 0)
            printf(" sessions=%zu", r->n_sessions);
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

/* "  <what> device=D gateway=G platform=P epoch=E last_seen_ms=T", one line per session. */
static void print_sessions(const char *what, Mpim__Session *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const Mpim__Session *x = list[i];
        printf("  %s device=", what);
        print_value((const uint8_t *)x->device_id, strlen(x->device_id));
        fputs(" gateway=", stdout);
        print_value((const uint8_t *)x->gateway_addr, strlen(x->gateway_addr));
        printf(" platform=%d epoch=%lld last_seen_ms=%lld\n", (int)x->platform, (long long)x->epoch,
               (long long)x->last_seen_ms);
    }
}

/* Print the answer on one line (then one line per session listed) and map its code to the exit
 * status. Error replies carry only
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
    if (answer && method == PR_METHOD_BIND) /* the sessions this Bind ended, one per line */
        print_sessions("displaced", ((const Mpim__BindRouteResp *)m)->displaced,
                       ((const Mpim__BindRouteResp *)m)->n_displaced);
    if (answer && method == PR_METHOD_QUERY)
        print_sessions("session", ((const Mpim__QueryRouteResp *)m)->sessions,
                       ((const Mpim__QueryRouteResp *)m)->n_sessions);
    return answer ? EXIT_ANSWER : EXIT_REFUSED;
}

/* --device D, --platform P, --epoch E after UID GW (bind takes --platform, unbind and heartbeat
 * --epoch). 0, or -1 with a usage error printed. */
struct session_opts {
    const char *device;
    long long platform, epoch;
};

static int parse_session_opts(int method, int nargs, char **args, struct session_opts *o)
{
    *o = (struct session_opts){"", 0, 0};
    for (int i = 2; i < nargs; i += 2) {
        const char *opt = args[i], *val = i + 1 < nargs ? args[i + 1] : NULL;
        bool ok = val != NULL;
        if (ok && strcmp(opt, "--device") == 0)
            o->device = val;
        else if (ok && strcmp(opt, "--platform") == 0 && method == PR_METHOD_BIND)
            ok = parse_ll(val, INT32_MIN, INT32_MAX, &o->platform);
        else if (ok && strcmp(opt, "--epoch") == 0 && method != PR_METHOD_BIND)
            ok = parse_ll(val, LLONG_MIN, LLONG_MAX, &o->epoch);
        else
            ok = false;
        if (!ok) {
            usage_error("bad option '%s'", opt);
            return -1;
        }
    }
    return 0;
}

static ProtobufCBinaryData bytes_of(const char *s)
{
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

/* Send the command's request and wait for the answer. args[0] is the UID. */
static int run(struct pc_client *c, const struct command *cmd, int64_t uid, int nargs, char **args,
               const struct session_opts *o, ProtobufCMessage **resp)
{
    switch (cmd->method) {
    case PR_METHOD_BIND: {
        Mpim__BindRouteReq req = MPIM__BIND_ROUTE_REQ__INIT;
        req.user_id = uid;
        req.gateway_addr = bytes_of(args[1]);
        req.device_id = bytes_of(o->device);
        req.platform = (int32_t)o->platform;
        return pc_call(c, PR_METHOD_BIND, &req.base, resp);
    }
    case PR_METHOD_QUERY: {
        Mpim__QueryRouteResp *r = NULL;
        int rc = pc_query(c, uid, &r);
        *resp = r != NULL ? &r->base : NULL;
        return rc;
    }
    case PR_METHOD_DELIVER: {
        Mpim__DeliverResp *r = NULL;
        int rc = pc_deliver(c, uid, args[1], strlen(args[1]), nargs > 2 ? args[2] : NULL, &r);
        *resp = r != NULL ? &r->base : NULL;
        return rc;
    }
    case PR_METHOD_UNBIND: {
        Mpim__UnbindRouteReq req = MPIM__UNBIND_ROUTE_REQ__INIT;
        req.user_id = uid;
        req.gateway_addr = bytes_of(args[1]);
        req.device_id = bytes_of(o->device);
        req.epoch = o->epoch;
        return pc_call(c, PR_METHOD_UNBIND, &req.base, resp);
    }
    default: {
        Mpim__HeartbeatReq req = MPIM__HEARTBEAT_REQ__INIT;
        req.user_id = uid;
        req.gateway_addr = bytes_of(args[1]);
        req.device_id = bytes_of(o->device);
        req.epoch = o->epoch;
        return pc_call(c, PR_METHOD_HEARTBEAT, &req.base, resp);
    }
    }
}

/* batch-query UID... / batch-deliver MESSAGE UID... (contract §7): the ids, parsed before
 * connecting. */
struct batch_args {
    int method;          /* PR_METHOD_BATCH_QUERY or PR_METHOD_BATCH_DELIVER */
    const char *message; /* batch-deliver */
    int64_t *ids;        /* malloc'd */
    size_t n;
};

/* 0, or EXIT_USAGE with the error printed. args are what follows the command name. */
static int parse_batch(const char *name, int nargs, char **args, struct batch_args *b)
{
    bool deliver = strcmp(name, "batch-deliver") == 0;
    *b = (struct batch_args){deliver ? PR_METHOD_BATCH_DELIVER : PR_METHOD_BATCH_QUERY, NULL, NULL, 0};
    int first = deliver ? 1 : 0;
    if (nargs <= first)
        return usage_error("wrong number of arguments for '%s'", name);
    b->message = deliver ? args[0] : NULL;
    b->ids = malloc((size_t)(nargs - first) * sizeof(*b->ids));
    if (b->ids == NULL)
        return usage_error("%s", "out of memory");
    for (int i = first; i < nargs; i++) {
        long long uid;
        if (!parse_ll(args[i], LLONG_MIN, LLONG_MAX, &uid)) {
            free(b->ids);
            return usage_error("invalid UID '%s'", args[i]);
        }
        b->ids[b->n++] = (int64_t)uid;
    }
    return 0;
}

/* "CODE entries=N [timestamp=T] [msg=...]", then "  user=UID CODE fields" per id, in order. */
static int print_batch(int method, const ProtobufCMessage *m)
{
    const Mpim__BatchQueryRouteResp *q = method == PR_METHOD_BATCH_QUERY ? (const void *)m : NULL;
    const Mpim__BatchDeliverResp *d = method == PR_METHOD_BATCH_DELIVER ? (const void *)m : NULL;
    const Mpim__Result *res = q != NULL ? q->result : d->result;
    int code = res != NULL ? (int)res->code : MPIM__CODE__OK;
    const char *msg = res != NULL && res->msg != NULL ? res->msg : "";
    bool answer = code == MPIM__CODE__OK || code == MPIM__CODE__NOT_FOUND;
    fputs(pc_code_name(code), stdout);
    if (answer)
        printf(" entries=%zu", q != NULL ? q->n_routes : d->n_results);
    if (d != NULL)
        printf(" timestamp=%lld", (long long)d->timestamp);
    if (msg[0] != '\0') {
        fputs(" msg=", stdout);
        print_quoted((const uint8_t *)msg, strlen(msg));
    }
    putchar('\n');
    for (size_t i = 0; q != NULL && i < q->n_routes; i++) {
        const Mpim__RouteEntry *e = q->routes[i];
        printf("  user=%lld %s", (long long)e->user_id, pc_code_name(e->code));
        if (e->gateway_addr.len > 0) {
            fputs(" gateway=", stdout);
            print_value(e->gateway_addr.data, e->gateway_addr.len);
        }
        printf(" online=%s", yes_no(e->is_online));
        if (e->n_sessions > 0)
            printf(" sessions=%zu", e->n_sessions);
        putchar('\n');
    }
    for (size_t i = 0; d != NULL && i < d->n_results; i++) {
        const Mpim__DeliverEntry *e = d->results[i];
        printf("  user=%lld %s delivered=%s\n", (long long)e->user_id, pc_code_name(e->code),
               yes_no(e->delivered));
    }
    return answer ? EXIT_ANSWER : EXIT_REFUSED;
}

static int run_batch(struct pc_client *c, const char *where, const char *name, const struct batch_args *b)
{
    Mpim__BatchQueryRouteReq q = MPIM__BATCH_QUERY_ROUTE_REQ__INIT;
    Mpim__BatchDeliverReq d = MPIM__BATCH_DELIVER_REQ__INIT;
    q.n_user_ids = d.n_user_ids = b->n;
    q.user_ids = d.user_ids = b->ids;
    if (b->message != NULL)
        d.message = bytes_of(b->message);
    ProtobufCMessage *resp = NULL;
    const ProtobufCMessage *req = b->method == PR_METHOD_BATCH_QUERY ? &q.base : &d.base;
    if (pc_call(c, b->method, req, &resp) < 0) {
        fprintf(stderr, PROG ": %s request to %s failed: %s\n", name, where, pc_error(c));
        return EXIT_TRANSPORT;
    }
    int status = print_batch(b->method, resp);
    protobuf_c_message_free_unpacked(resp, NULL);
    return status;
}

/* gateway-heartbeat GW MS / drain GW (contract §8): name a gateway, no user. */
struct gateway_args {
    int method; /* PR_METHOD_GATEWAY_HEARTBEAT or PR_METHOD_DRAIN_GATEWAY */
    const char *gw;
    long long lease_ms;
};

/* 0, or EXIT_USAGE with the error printed. args are what follows the command name. */
static int parse_gateway(const char *name, int nargs, char **args, struct gateway_args *g)
{
    bool drain = strcmp(name, "drain") == 0;
    *g = (struct gateway_args){drain ? PR_METHOD_DRAIN_GATEWAY : PR_METHOD_GATEWAY_HEARTBEAT, NULL, 0};
    if (nargs != (drain ? 1 : 2))
        return usage_error("wrong number of arguments for '%s'", name);
    g->gw = args[0];
    /* Any int32 goes to the server, which judges the range (INVALID naming lease_ms). */
    if (!drain && !parse_ll(args[1], INT32_MIN, INT32_MAX, &g->lease_ms))
        return usage_error("invalid lease MS '%s'", args[1]);
    return 0;
}

/* "CODE expires_ms=T" / "CODE sessions_removed=N" [msg=...]. */
static int run_gateway(struct pc_client *c, const char *where, const char *name, const struct gateway_args *g)
{
    Mpim__GatewayHeartbeatReq hb = MPIM__GATEWAY_HEARTBEAT_REQ__INIT;
    Mpim__DrainGatewayReq dr = MPIM__DRAIN_GATEWAY_REQ__INIT;
    hb.gateway_addr = dr.gateway_addr = bytes_of(g->gw);
    hb.lease_ms = (int32_t)g->lease_ms;
    const ProtobufCMessage *req = g->method == PR_METHOD_DRAIN_GATEWAY ? &dr.base : &hb.base;
    ProtobufCMessage *resp = NULL;
    if (pc_call(c, g->method, req, &resp) < 0) {
        fprintf(stderr, PROG ": %s request to %s failed: %s\n", name, where, pc_error(c));
        return EXIT_TRANSPORT;
    }
    const Mpim__Result *res;
    long long value;
    const char *field;
    if (g->method == PR_METHOD_DRAIN_GATEWAY) {
        res = ((const Mpim__DrainGatewayResp *)resp)->result;
        value = ((const Mpim__DrainGatewayResp *)resp)->sessions_removed;
        field = "sessions_removed";
    } else {
        res = ((const Mpim__GatewayHeartbeatResp *)resp)->result;
        value = ((const Mpim__GatewayHeartbeatResp *)resp)->expires_ms;
        field = "expires_ms";
    }
    int code = res != NULL ? (int)res->code : MPIM__CODE__OK;
    const char *msg = res != NULL && res->msg != NULL ? res->msg : "";
    bool answer = code == MPIM__CODE__OK || code == MPIM__CODE__NOT_FOUND;
    fputs(pc_code_name(code), stdout);
    if (answer)
        printf(" %s=%lld", field, value);
    if (msg[0] != '\0') {
        fputs(" msg=", stdout);
        print_quoted((const uint8_t *)msg, strlen(msg));
    }
    putchar('\n');
    protobuf_c_message_free_unpacked(resp, NULL);
    return answer ? EXIT_ANSWER : EXIT_REFUSED;
}

/* watch [-n COUNT] [UID]: argv[0] is "watch". */
static int watch_command(const char *redis_addr, int argc, char **argv)
{
    long long count = 0, uid = 0;
    int sharded = 0, i = 1;
    if (i < argc && strcmp(argv[i], "-n") == 0) {
        if (i + 1 >= argc || !parse_ll(argv[i + 1], 1, LLONG_MAX, &count))
            return usage_error("%s", "watch: -n takes a positive count");
        i += 2;
    }
    if (i < argc && strcmp(argv[i], "-s") == 0) {
        sharded = 1;
        i++;
    }
    if (i < argc && !parse_ll(argv[i++], 1, LLONG_MAX, &uid))
        return usage_error("invalid UID '%s'", argv[i - 1]);
    if (i < argc || (sharded && uid == 0))
        return usage_error("%s", "usage: watch [-n COUNT] [-s UID | UID]");
    char host[256];
    long long port = 6379;
    const char *colon = strrchr(redis_addr, ':');
    size_t hlen = colon != NULL ? (size_t)(colon - redis_addr) : strlen(redis_addr);
    if (hlen == 0 || hlen >= sizeof(host) || (colon != NULL && !parse_ll(colon + 1, 1, 65535, &port)))
        return usage_error("invalid -r address '%s' (HOST:PORT)", redis_addr);
    memcpy(host, redis_addr, hlen);
    host[hlen] = '\0';
    return cli_watch(host, (int)port, uid, count, sharded);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    long long port = 6000, timeout_ms = 5000;
    bool timeout_given = false;
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
            timeout_given = true;
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
    bool batch = strcmp(argv[optind], "batch-query") == 0 || strcmp(argv[optind], "batch-deliver") == 0;
    bool gateway = strcmp(argv[optind], "gateway-heartbeat") == 0 || strcmp(argv[optind], "drain") == 0;
    const struct command *cmd = stats || batch || gateway ? NULL : find_command(argv[optind]);
    if (cmd == NULL && !stats && !batch && !gateway)
        return usage_error("unknown command '%s'", argv[optind]);
    char **args = argv + optind + 1;
    int nargs = argc - optind - 1;
    struct gateway_args gargs = {0, NULL, 0};
    if (gateway && parse_gateway(argv[optind], nargs, args, &gargs) != 0)
        return EXIT_USAGE;
    if (gateway && gargs.method == PR_METHOD_DRAIN_GATEWAY && !timeout_given)
        timeout_ms = 0; /* a drain of many sessions takes as long as it takes */
    struct batch_args bargs = {0, NULL, NULL, 0};
    if (batch && parse_batch(argv[optind], nargs, args, &bargs) != 0)
        return EXIT_USAGE;
    long long uid = 0;
    if (!stats && !batch && !gateway) {
        if (nargs < cmd->min_args || nargs > cmd->max_args)
            return usage_error("wrong number of arguments for '%s'", cmd->name);
        if (!parse_ll(args[0], LLONG_MIN, LLONG_MAX, &uid))
            return usage_error("invalid UID '%s'", args[0]);
    }
    struct session_opts opts = {"", 0, 0};
    if (!stats && !batch && !gateway && cmd->method != PR_METHOD_QUERY && cmd->method != PR_METHOD_DELIVER &&
        parse_session_opts(cmd->method, nargs, args, &opts) < 0)
        return EXIT_USAGE;

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
        free(bargs.ids);
        return EXIT_TRANSPORT;
    }
    if (gateway) {
        int status = run_gateway(c, where, argv[optind], &gargs);
        pc_close(c);
        return status;
    }
    if (batch) {
        int status = run_batch(c, where, argv[optind], &bargs);
        free(bargs.ids);
        pc_close(c);
        return status;
    }
    if (stats) {
        int status = cli_stats(c, where, nargs == 1);
        pc_close(c);
        return status;
    }
    ProtobufCMessage *resp = NULL;
    int status;
    if (run(c, cmd, (int64_t)uid, nargs, args, &opts, &resp) < 0) {
        fprintf(stderr, PROG ": %s request to %s failed: %s\n", cmd->name, where, pc_error(c));
        status = EXIT_TRANSPORT;
    } else {
        status = print_reply(cmd->method, resp);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    pc_close(c);
    return status;
}
