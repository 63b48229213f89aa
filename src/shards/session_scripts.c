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
 * Epochs come from Redis's clock: max(TIME in microseconds, highest epoch in the hash + 1). So
 * they grow across logouts and expiry (the clock moved on), restarts and every instance sharing
 * the Redis (one clock), and within one microsecond (the +1). A failover to a replica whose clock
 * is behind is covered while the user has a session (the +1); after the hash expired, only if
 * the clocks differ by less than route_ttl (NTP-synchronised hosts do). */
#include "shards/session_scripts.h"

/* Shared by the three: parse, prune, pick, and keep route/hash TTLs in line. Numbers go through
 * %.0f: Lua 5.1 prints doubles above 1e14 in exponent form, and epochs are ~1.7e15 (< 2^53, so
 * exact in a double). */
#define PRELUDE                                                                                              \
    "local function clock() local t = redis.call('TIME') "                                                   \
    "return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), tonumber(t[1]) * 1000000 + tonumber(t[2]) end " \
    "local function enc(s) return string.format('%.0f|%d|%.0f|%s', s.e, s.p, s.t, s.g) end "                  \
    "local function load(key, now, ttl) "                                                                    \
    "  local all = redis.call('HGETALL', key) local live, maxep = {}, 0 "                                    \
    "  for i = 1, #all, 2 do "                                                                               \
    "    local e, p, t, g = string.match(all[i + 1], '^(%d+)|(%d+)|(%d+)|(.*)$') "                          \
    "    e, t = tonumber(e), tonumber(t) "                                                                   \
    "    if e and e > maxep then maxep = e end "                                                             \
    "    if e and t + ttl > now then live[#live + 1] = {d = all[i], e = e, p = tonumber(p), t = t, g = g} "  \
    "    else redis.call('HDEL', key, all[i]) end "                                                          \
    "  end "                                                                                                 \
    "  return live, maxep end "                                                                              \
    "local function best(live) local b = nil "                                                               \
    "  for _, s in ipairs(live) do if b == nil or s.e > b.e then b = s end end return b end "               \
    /* The route names the live session with the highest epoch and lives as long as it does; the   \
     * hash as long as its longest-lived session. 0: route unchanged, 2: moved to b.g. */           \
    "local function follow(live, now, ttl) "                                                                 \
    "  local b, last = best(live), 0 "                                                                       \
    "  for _, s in ipairs(live) do if s.t > last then last = s.t end end "                                   \
    "  redis.call('PEXPIRE', KEYS[3], last + ttl - now) "                                                    \
    "  local left = b.t + ttl - now "                                                                        \
    "  if redis.call('GET', KEYS[1]) == b.g then redis.call('PEXPIRE', KEYS[1], left) return 0, b.g end "    \
    "  redis.call('SET', KEYS[1], b.g, 'PX', left) return 2, b.g end "                                       \
    "local function find(live, dev) for _, s in ipairs(live) do if s.d == dev then return s end end end "    \
    /* Unbind/Heartbeat act only on a live session of this device on this gateway and, with an   \
     * epoch, holding it (fencing). */                                                               \
    "local function fenced(s, gw, epoch) "                                                                   \
    "  return s == nil or s.g ~= gw or (epoch ~= 0 and s.e ~= epoch) end "

/* KEYS: route, status, sessions. ARGV: device, gateway, platform, route_ttl s, status_ttl s,
 * policy (multi | single | per_platform). Returns {epoch, {device, gateway, platform, epoch,
 * last_seen_ms, ...}} listing every live session this Bind ended (the replaced one of the same
 * device included), for BindRouteResp.displaced and the kicks. */
const char SESSION_BIND_LUA[] = PRELUDE
    "local now, now_us = clock() local ttl = tonumber(ARGV[4]) * 1000 "
    "local live, maxep = load(KEYS[3], now, ttl) "
    "local epoch = math.max(now_us, maxep + 1) local plat = tonumber(ARGV[3]) local out = {} "
    "for _, s in ipairs(live) do "
    "  if s.d == ARGV[1] or ARGV[6] == 'single' or (ARGV[6] == 'per_platform' and plat ~= 0 and s.p == plat) then "
    "    if s.d ~= ARGV[1] then redis.call('HDEL', KEYS[3], s.d) end "
    "    out[#out + 1] = s.d out[#out + 1] = s.g out[#out + 1] = s.p "
    "    out[#out + 1] = string.format('%.0f', s.e) out[#out + 1] = string.format('%.0f', s.t) "
    "  end "
    "end "
    "redis.call('HSET', KEYS[3], ARGV[1], enc({e = epoch, p = plat, t = now, g = ARGV[2]})) "
    "redis.call('PEXPIRE', KEYS[3], ttl) "
    "redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[4]) "
    "redis.call('SET', KEYS[2], 'online', 'EX', ARGV[5]) "
    "return {string.format('%.0f', epoch), out}";

/* KEYS: route, status, sessions. ARGV: device, gateway, epoch (0: any), route_ttl s.
 * Returns {unbound 0|1, what: 0 route unchanged | 1 last session: logged out | 2 route moved,
 * gateway the route now names}. A user without a sessions hash (a route written before sessions
 * existed, or by hand) follows §3: device "" and no epoch compare the route itself. */
const char SESSION_UNBIND_LUA[] = PRELUDE
    "local now = clock() local ttl = tonumber(ARGV[4]) * 1000 local epoch = tonumber(ARGV[3]) "
    "if redis.call('EXISTS', KEYS[3]) == 0 then "
    "  if ARGV[1] == '' and epoch == 0 and redis.call('GET', KEYS[1]) == ARGV[2] then "
    "    redis.call('DEL', KEYS[1], KEYS[2]) return {1, 1, ''} end "
    "  return {0, 0, ''} "
    "end "
    "local live = load(KEYS[3], now, ttl) "
    "if fenced(find(live, ARGV[1]), ARGV[2], epoch) then return {0, 0, ''} end "
    "redis.call('HDEL', KEYS[3], ARGV[1]) "
    "local rest = {} for _, s in ipairs(live) do if s.d ~= ARGV[1] then rest[#rest + 1] = s end end "
    "if #rest == 0 then redis.call('DEL', KEYS[1], KEYS[2], KEYS[3]) return {1, 1, ''} end "
    "local what, gw = follow(rest, now, ttl) "
    "return {1, what, gw}";

/* KEYS: route, status, sessions. ARGV: device, gateway, epoch (0: any), route_ttl s, status_ttl s.
 * Returns {refreshed 0|1, what: 0 route unchanged | 2 route moved, gateway the route names}.
 * Renews the session, the status, and the route (moved to the highest live epoch if the session
 * it named has lapsed). Without a sessions hash: §3's compare-and-renew of the route. */
const char SESSION_HEARTBEAT_LUA[] = PRELUDE
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
    "local what, gw = follow(live, now, ttl) "
    "return {1, what, gw}";
