/* What handlers.c (reads, dispatch) and writes.c (Bind, Unbind, Heartbeat) share: key names,
 * sending, and turning a Redis outcome into a request's result. Shard thread only. */
#ifndef PR_SHARDS_HANDLERS_COMMON_H
#define PR_SHARDS_HANDLERS_COMMON_H

#include <stdbool.h>

#include "core/request.h"
#include "shards/redis_router.h"

struct shard;

/* The notice channels (contract §3, §6): route changes, and sessions a Bind ended. */
#define ROUTE_CHANNEL "presence:route"
#define KICK_CHANNEL "presence:kick"

struct shard_script;
/* Start s->resp as EVALSHA (EVAL while the SHA is unknown, or by_body after a NOSCRIPT, which
 * caches it again) of sc with nkeys keys, followed by nrest more arguments (keys, then ARGV). */
void resp_start_script(struct shard *s, const struct shard_script *sc, bool by_body, int nkeys, int nrest);

/* The shard a link belongs to (its owner). */
struct shard *shard_of(struct redis_link *link);
/* Send the command built in s->resp about req's user (its slot on a cluster). -1: not sent. */
int send_built(struct shard *s, struct redis_router *router, link_reply_fn *fn, struct pr_request *req);
/* The user's keys as one argument each: user:<kind>:<uid>, or user:<kind>:{<uid>} on a cluster. */
void arg_route_key(struct shard *s, const struct pr_request *req);
void arg_status_key(struct shard *s, const struct pr_request *req);
void arg_sessions_key(struct shard *s, const struct pr_request *req);
/* Record what (status, reply) means for req. true: usable, nothing recorded; false: req holds it. */
bool take_result(struct pr_request *req, const char *role, enum link_status status, const redisReply *reply);
/* The command could not be sent: answer req UNAVAILABLE. */
void answer_not_sent(struct shard *s, struct pr_request *req, const char *role);
/* Copy a string reply into req->route (flag = found). false: not a string, or out of memory. */
bool take_route(struct pr_request *req, const redisReply *reply);
/* The live sessions of an HGETALL reply into req->sessions, highest epoch first. false: not a
 * sessions hash reply, or out of memory. */
bool take_sessions(struct shard *s, struct pr_request *req, const redisReply *r);
/* The near cache found req's route (QueryRoute, Deliver): answer as a Redis read would. */
void handlers_route_known(struct shard *s, struct pr_request *req);

/* writes.c */
void writes_bind(struct shard *s, struct pr_request *req);
void writes_unbind_or_heartbeat(struct shard *s, struct pr_request *req);
/* The write's reply is in, from link: WAIT if configured, notices, answer (gateways.c resumes a
 * Bind here once its slot bit is answered too). */
void writes_done(struct shard *s, struct pr_request *req, struct redis_link *link);

#endif
