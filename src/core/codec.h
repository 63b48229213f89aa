/* Request decoding + validation and response encoding (contract §1–3). Pure, any thread;
 * in the server the acceptor calls it. */
#ifndef PR_CORE_CODEC_H
#define PR_CORE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "core/request.h"

/* Accepted service names: "PresenceService" and "mpim.PresenceService". */
#define CODEC_SERVICE "PresenceService"

/* Method id for a service/method name pair, or -1 (request_set_result says why). */
int codec_lookup(const ProtobufCBinaryData *service, const ProtobufCBinaryData *method,
                 struct pr_request *req);

/* The response message type of a method (NULL for an unknown one). */
const ProtobufCMessageDescriptor *codec_response_descriptor(int method);

/* Decode args for req->method into req (args, user_id, gateway, message) and validate them.
 * dialect (enum dialect, core/config.h) says where a Deliver's payload is: field 2 (seed) or
 * field 3 (mpim, whose DeliverReq is { int64 to = 1; bytes payload = 3; }).
 * Returns 0, or -1 with req->code = INVALID and req->msg naming the field. */
int codec_decode_request(struct pr_request *req, const uint8_t *args, size_t len,
                         size_t max_message_bytes, int dialect);

/* Validation rules shared with clients: user_id > 0; gateway 1-255 printable ASCII bytes
 * (0x20-0x7e); GatewayHeartbeat's lease_ms in [CODEC_LEASE_MIN_MS, CODEC_LEASE_MAX_MS]. */
#define CODEC_LEASE_MIN_MS 1000
#define CODEC_LEASE_MAX_MS 600000
const char *codec_check_user_id(int64_t user_id);
const char *codec_check_gateway(const uint8_t *gw, size_t len);

/* The response frame for a finished request: u32le length + message.
 * codec_response_bound is a cheap upper bound of its size (no packing pass): reserve that much,
 * then codec_encode_response writes the frame and returns its exact size. */
size_t codec_response_size(const struct pr_request *req);
size_t codec_response_bound(const struct pr_request *req);
size_t codec_encode_response(const struct pr_request *req, uint8_t *out);

#endif
