/* The Lua scripts that keep a user's sessions, route and status in one atomic step (contract §6).
 * Read-only data; see session_scripts.c for what each takes and returns. */
#ifndef PR_SHARDS_SESSION_SCRIPTS_H
#define PR_SHARDS_SESSION_SCRIPTS_H

extern const char SESSION_BIND_LUA[];
extern const char SESSION_UNBIND_LUA[];
extern const char SESSION_HEARTBEAT_LUA[];

#endif
