/* --echo-selftest: a trivial in-process server of the framing, to measure the generator's own
 * ceiling. One thread, one libev loop: it parses each request frame (frame_parse_request) and
 * at once answers it with a canned, valid OK response of the method's type (BindRoute's
 * route_key is built from the request's user id, so the generator's checks pass). */
#ifndef BENCH_ECHO_H
#define BENCH_ECHO_H

struct echo_server;

/* Listen on 127.0.0.1, an ephemeral port (*port), and start the thread. NULL on failure. */
struct echo_server *echo_start(int *port);
/* Stop the thread, close everything, free. Returns the number of requests answered. */
unsigned long long echo_stop(struct echo_server *e);

#endif
