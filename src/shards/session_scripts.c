/* The Lua scripts behind Bind, Unbind and Heartbeat (contract §6). Constant data, any thread;
 * the shards load and run them (handlers.c).
 *
 * Every script gets KEYS = route, status, sessions of ONE user (on a cluster all three carry the
 * user's {uid} hash tag, so they share a slot) and does all of its reads and writes in one atomic
 * step: one round trip per call, and no interleaving of two gateways' calls for the same user.
 *
 * The sessions hash (core/session_list.h): field device_id, value
 * "<epoch>|<platform>|<last_seen_ms>|<gateway>". Each script first reads the whole hash and drops
 * the sessions that are no longer live (Redis 7.0 has no per-field expiry), so the hash holds at
 * most the live sessions plus those that lapsed since the user was last touched. The hash itself
 * expires with the longest-lived session; the route key with the session it names.
 *
 * Bind returns a third element 0, and Heartbeat a fourth, when the index of their gateway could
 * not be written (session_lua.h): the caller then writes it itself (gateways_index_fallback).
 *
 * Epochs come from Redis's clock: max(TIME in microseconds, highest epoch in the hash + 1). So
 * they grow across logouts and expiry (the clock moved on), restarts and every instance sharing
 * the Redis (one clock), and within one microsecond (the +1). A failover to a replica whose clock
 * is behind is covered while the user has a session (the +1); after the hash expired, only if
 * the clocks differ by less than route_ttl (NTP-synchronised hosts do).
 *
 * Each script also keeps the gateways' session indexes (contract §8, shards/session_lua.h): its
 * last two ARGV are the index key prefix and the user id. Every index key it touches carries the
 * user's slot (the prefix's tag on a cluster), so this stays one atomic step on one node. */
#include "shards/session_scripts.h"

#include "shards/session_lua.h"

#define PRELUDE SESSION_LUA_PRELUDE

/* KEYS: route, status, sessions. ARGV: device, gateway, platform, route_ttl s, status_ttl s,
 * policy (multi | single | per_platform), index prefix, uid. Returns {epoch, {device, gateway,
 * platform, epoch, last_seen_ms, ...}} listing every live session this Bind ended (the replaced
 * one of the same device included), for BindRouteResp.displaced and the kicks. */
const char SESSION_BIND_LUA[] = PRELUDE
    "IXP, UID = ARGV[7], ARGV[8] "
    "local now, now_us = clock() local ttl = tonumber(ARGV[4]) * 1000 "
    "local live, maxep = load(KEYS[3], now, ttl) "
    "local epoch = math.max(now_us, maxep + 1) local plat = tonumber(ARGV[3]) local out = {} "
    "for _, s in ipairs(live) do "
    "  if s.d == ARGV[1] or ARGV[6] == 'single' or (ARGV[6] == 'per_platform' and plat ~= 0 and s.p == plat) then "
    "    if s.d ~= ARGV[1] then redis.call('HDEL', KEYS[3], s.d) end "
    "    unindex(s.g, s.d) "
    "    out[#out + 1] = s.d out[#out + 1] = s.g out[#out + 1] = s.p "
    "    out[#out + 1] = string.format('%.0f', s.e) out[#out + 1] = string.format('%.0f', s.t) "
    "  end "
    "end "
    "redis.call('HSET', KEYS[3], ARGV[1], enc({e = epoch, p = plat, t = now, g = ARGV[2]})) "
    "redis.call('PEXPIRE', KEYS[3], ttl) "
    "redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[4]) "
    "redis.call('SET', KEYS[2], 'online', 'EX', ARGV[5]) "
    "if not index(ARGV[2], ARGV[1], ttl) then return {string.format('%.0f', epoch), out, 0} end "
    "return {string.format('%.0f', epoch), out}";

/* KEYS: route, status, sessions. ARGV: device, gateway, epoch (0: any), route_ttl s, index prefix,
 * uid. Returns {unbound 0|1, what: 0 route unchanged | 1 last session: logged out | 2 route moved,
 * gateway the route now names}. A user without a sessions hash (a route written before sessions
 * existed, or by hand) follows §3: device "" and no epoch compare the route itself. */
const char SESSION_UNBIND_LUA[] = PRELUDE
    "IXP, UID = ARGV[5], ARGV[6] "
    "local now = clock() local ttl = tonumber(ARGV[4]) * 1000 local epoch = tonumber(ARGV[3]) "
    "if redis.call('EXISTS', KEYS[3]) == 0 then "
    "  if ARGV[1] == '' and epoch == 0 and redis.call('GET', KEYS[1]) == ARGV[2] then "
    "    redis.call('DEL', KEYS[1], KEYS[2]) unindex(ARGV[2], '') return {1, 1, ''} end "
    "  return {0, 0, ''} "
    "end "
    "local live = load(KEYS[3], now, ttl) "
    "local mine = find(live, ARGV[1]) "
    "if fenced(mine, ARGV[2], epoch) then return {0, 0, ''} end "
    "local what, gw = close_session(live, mine, now, ttl, KEYS[1], KEYS[2], KEYS[3]) "
    "return {1, what, gw}";

/* KEYS: route, status, sessions. ARGV: device, gateway, epoch (0: any), route_ttl s, status_ttl s,
 * index prefix, uid. Returns {refreshed 0|1, what: 0 route unchanged | 2 route moved, gateway the
 * route names}. Renews the session, the status, and the route (moved to the highest live epoch if
 * the session it named has lapsed); and the gateway's index, so that it outlives the sessions it
 * lists (the SADD also indexes a session bound before the indexes existed). Without a sessions
 * hash: §3's compare-and-renew of the route. */
const char SESSION_HEARTBEAT_LUA[] = PRELUDE
    "IXP, UID = ARGV[6], ARGV[7] "
    "local now = clock() local ttl = tonumber(ARGV[4]) * 1000 local epoch = tonumber(ARGV[3]) "
    "if redis.call('EXISTS', KEYS[3]) == 0 then "
    "  if ARGV[1] == '' and epoch == 0 and redis.call('GET', KEYS[1]) == ARGV[2] then "
    "    redis.call('EXPIRE', KEYS[1], ARGV[4]) redis.call('SET', KEYS[2], 'online', 'EX', ARGV[5]) "
    "    return {1, 0, ARGV[2]} end "
    "  return {0, 0, ''} "
    "end "
    "local live = load(KEYS[3], now, ttl) "
    "local mine = find(live, ARGV[1]) "
    "if fenced(mine, ARGV[2], epoch) then return {0, 0, ''} end "
    "mine.t = now redis.call('HSET', KEYS[3], ARGV[1], enc(mine)) "
    "redis.call('SET', KEYS[2], 'online', 'EX', ARGV[5]) "
    "local indexed = index(ARGV[2], ARGV[1], ttl) "
    "local what, gw = follow(live, now, ttl, KEYS[1], KEYS[3]) "
    "if not indexed then return {1, what, gw, 0} end "
    "return {1, what, gw}";
