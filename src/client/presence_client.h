/* A small blocking client for im-presence, for gateways, the CLI, tests and the bench.
 * One struct pc_client per connection, used by one thread at a time.
 *
 * Two ways to call:
 *   - one call at a time: pc_call() sends a request and waits for its response;
 *   - pipelined: pc_send() any number of requests (buffered), pc_flush(), then pc_recv() the
 *     responses, which arrive in the order the requests were sent.
 *
 * Responses are returned as protobuf-c messages of the method's response type, unpacked with
 * the default allocator: free them with protobuf_c_message_free_unpacked(msg, NULL).
 * Every function returns 0 on success or -1 on a transport error (connection refused, closed,
 * timeout, malformed response); pc_error() then says what happened. */
#ifndef PR_CLIENT_PRESENCE_CLIENT_H
#define PR_CLIENT_PRESENCE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "core/request.h"
#include "presence.pb-c.h"

struct pc_client;

/* Connect to host:port. timeout_ms bounds the connect and every later wait (0: no limit).
 * Returns NULL with *err (may be NULL) set to a static description on failure. */
struct pc_client *pc_connect(const char *host, int port, int timeout_ms, const char **err);
void pc_close(struct pc_client *c);
const char *pc_error(const struct pc_client *c);
int pc_fd(const struct pc_client *c);

/* Queue a request (method: enum pr_method, req: the method's *Req message). */
int pc_send(struct pc_client *c, int method, const ProtobufCMessage *req);
/* Queue raw bytes exactly as given (tests use this for malformed frames). */
int pc_send_raw(struct pc_client *c, const void *bytes, size_t len);
/* Write everything queued. */
int pc_flush(struct pc_client *c);
/* Wait for the next response and unpack it as method's response type (*Resp). */
int pc_recv(struct pc_client *c, int method, ProtobufCMessage **resp);
/* Wait for the next response frame and hand back its raw body (valid until the next call). */
int pc_recv_raw(struct pc_client *c, const uint8_t **body, size_t *len);

/* pc_send + pc_flush + pc_recv. */
int pc_call(struct pc_client *c, int method, const ProtobufCMessage *req, ProtobufCMessage **resp);

/* Typed helpers built on pc_call; the caller frees *resp. */
int pc_bind(struct pc_client *c, int64_t uid, const char *gw, Mpim__BindRouteResp **resp);
int pc_query(struct pc_client *c, int64_t uid, Mpim__QueryRouteResp **resp);
int pc_deliver(struct pc_client *c, int64_t uid, const void *msg, size_t len, const char *type,
               Mpim__DeliverResp **resp);
int pc_unbind(struct pc_client *c, int64_t uid, const char *gw, Mpim__UnbindRouteResp **resp);
int pc_heartbeat(struct pc_client *c, int64_t uid, const char *gw, Mpim__HeartbeatResp **resp);

/* The descriptor of method's response message. */
const ProtobufCMessageDescriptor *pc_response_descriptor(int method);
/* The name of a Mpim__Code ("OK", "INVALID", ...; "UNKNOWN" otherwise): request_code_name. */
const char *pc_code_name(int code);

#endif
