/* The Lua scripts of gateway leases and drains (contract §8). Constant data, any thread; the
 * shards run them (gateways.c, drain.c, lease_watch.c).
 *
 * Keys. Leases: the sorted set {gateway-leases}:expiry (member gateway, score the lease's end in
 * ms by the Redis clock) and a drain lock per gateway, {gateway-leases}:lock:<gateway>: one hash
 * tag, so one slot, so one script may touch both on a cluster. The session indexes (sets of
 * "<uid>:<device>", kept by the session scripts, session_lua.h) are gateway:sessions:<gateway>,
 * or on a cluster one per slot, gateway:sessions:{<slot tag>}:<gateway> (core/slot_tag.h). */
#include "shards/gateway_scripts.h"

#include "shards/session_lua.h"

/* The Redis clock in ms, as the session scripts read it. */
#define NOW_MS                                                                                               \
    "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "

/* KEYS: expiry set. ARGV: gateway, lease_ms. Sets the lease to end lease_ms from now, shorter or
 * longer than before; returns that end (ms since the epoch). */
static const char LEASE_LUA[] = NOW_MS
    "local expires = now + tonumber(ARGV[2]) "
    "redis.call('ZADD', KEYS[1], string.format('%.0f', expires), ARGV[1]) "
    "return expires";

/* KEYS: one index key. ARGV: gateway, step (members per call), route_ttl s, cluster (1: user keys
 * carry {uid}), index prefix (the key without the gateway). Takes up to `step` members off the
 * index (SPOP: two drains of one gateway never take the same one) and ends each session that
 * still names this gateway exactly as UnbindRoute with no epoch would; a member whose session is
 * gone or moved to another gateway is only dropped. Returns {members taken, {uid, what, gateway,
 * ...}} with one triple per session ended: what 1 logged out, 2 the route moved to gateway,
 * 0 the route unchanged (the notices UnbindRoute would publish).
 *
 * The users' keys are in the index's slot but not declared (they are read off the index): on a
 * cluster whose slot is being migrated Redis refuses a script access to such keys unless all of
 * them are on this node. So each user's keys are first probed together by redis.pcall; a refusal
 * puts the member back (it is drained by a later step, or the next drain) and changes nothing of
 * that user. Limitation: on the importing node (after an ASK) keys not moved yet look absent. */
static const char DRAIN_LUA[] = SESSION_LUA_PRELUDE
    "local now = clock() local ttl = tonumber(ARGV[3]) * 1000 IXP = ARGV[5] "
    "local function key(kind, uid) "
    "  if ARGV[4] == '1' then return 'user:' .. kind .. ':{' .. uid .. '}' end "
    "  return 'user:' .. kind .. ':' .. uid end "
    "local taken = redis.call('SPOP', KEYS[1], tonumber(ARGV[2])) local out = {} "
    "for _, m in ipairs(taken) do "
    "  local uid, dev = string.match(m, '^(%d+):(.*)$') "
    "  if uid then "
    "    UID = uid "
    "    local rk, stk, sk = key('route', uid), key('status', uid), key('sessions', uid) "
    "    local probe = redis.pcall('EXISTS', rk, stk, sk) "
    "    if type(probe) == 'table' then redis.call('SADD', KEYS[1], m) "
    "    else "
    "      local live = load(sk, now, ttl) "
    "      local mine = find(live, dev) "
    "      if mine and mine.g == ARGV[1] then "
    "        local what, gw = close_session(live, mine, now, ttl, rk, stk, sk) "
    "        out[#out + 1] = uid out[#out + 1] = what out[#out + 1] = gw "
    "      end "
    "    end "
    "  end "
    "end "
    "return {#taken, out}";

/* KEYS: expiry set, the gateway's lock. ARGV: gateway, the lapsed end a lease drain claimed ("" for
 * DrainGateway), this instance's id. DrainGateway ends the lease whatever it is; a lease drain
 * only the lapsed one it claimed (a gateway back with a new lease keeps it). The lock goes: always
 * for DrainGateway, a lease drain's only while it is still its own. Returns 1 if the lease ended. */
static const char FINISH_LUA[] =
    "local ended = 0 "
    "if ARGV[2] == '' then "
    "  ended = redis.call('ZREM', KEYS[1], ARGV[1]) redis.call('DEL', KEYS[2]) return ended "
    "end "
    "local score = redis.call('ZSCORE', KEYS[1], ARGV[1]) "
    "if score and tonumber(score) == tonumber(ARGV[2]) then ended = redis.call('ZREM', KEYS[1], ARGV[1]) end "
    "if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end "
    "return ended";

/* KEYS: expiry set. ARGV: lock key prefix, this instance's id, lock ms, candidates. Of the first
 * `candidates` lapsed leases (end <= now), locks the first one nobody holds (SET NX PX): exactly
 * one instance gets it. Returns {gateway, its lapsed end} or nil. */
static const char CLAIM_LUA[] = NOW_MS
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now), "
    "  'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4])) "
    "for i = 1, #due, 2 do "
    "  if redis.call('SET', ARGV[1] .. due[i], ARGV[2], 'NX', 'PX', ARGV[3]) then "
    "    return {due[i], due[i + 1]} "
    "  end "
    "end "
    "return false";

/* KEYS: a lock. ARGV: this instance's id, lock ms. Extends the lock if it is still ours: 1, else 0. */
static const char RENEW_LUA[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end "
    "return 0";

const char *const GW_SCRIPT_LUA[GW_SCRIPTS] = {
    [GW_SCRIPT_LEASE] = LEASE_LUA,
    [GW_SCRIPT_DRAIN] = DRAIN_LUA,
    [GW_SCRIPT_FINISH] = FINISH_LUA,
    [GW_SCRIPT_CLAIM] = CLAIM_LUA,
    [GW_SCRIPT_RENEW] = RENEW_LUA,
};
