/* The Lua helpers every session script starts with (session_scripts.c, and the drain step in
 * gateway_scripts.c), as a string literal to paste in front of a script's body. Constant data.
 *
 * Numbers go through %.0f: Lua 5.1 prints doubles above 1e14 in exponent form, and epochs are
 * ~1.7e15 (< 2^53, so exact in a double).
 *
 * The per-gateway session index (contract §8, drain.c): a set of "<uid>:<device>" per gateway,
 * named IXP .. gateway. IXP is the prefix the script was given ("gateway:sessions:", or on a
 * cluster "gateway:sessions:{<tag>}:" with the tag of the user's slot, core/slot_tag.h) and UID
 * the user's id; a script sets both before it touches a session. Every session a script ends or
 * finds lapsed leaves its gateway's index in the same atomic step.
 *
 * The index keys are not declared in KEYS: a declared key that does not exist yet (the index of a
 * gateway new to the slot) would make a cluster node importing the slot answer TRYAGAIN until the
 * migration ends. They are in the user's slot, but while that slot is being migrated Redis refuses
 * a script's access to an undeclared key that is not on the node ("non local key"), and a key
 * cannot be created on the node the slot leaves. So every index write goes through redis.pcall:
 *  - adding the session to its own gateway's index (index()) reports a refusal, and the script
 *    tells its caller, which then adds it with plain commands that follow the slot's ASK
 *    (gateways_index_fallback): the call is answered OK only once the session is indexed;
 *  - leaving another gateway's index (sessions a Bind ends, lapsed ones) is let go: a stale member
 *    stays behind, which a drain drops. */
#ifndef PR_SHARDS_SESSION_LUA_H
#define PR_SHARDS_SESSION_LUA_H

#define SESSION_LUA_PRELUDE                                                                                  \
    "local IXP, UID = nil, nil "                                                                             \
    "local function unindex(g, d) redis.pcall('SREM', IXP .. g, UID .. ':' .. d) end "                       \
    "local function index(g, d, ttl) "                                                                       \
    "  if type(redis.pcall('SADD', IXP .. g, UID .. ':' .. d)) == 'table' then return false end "           \
    "  redis.pcall('PEXPIRE', IXP .. g, ttl) return true end "                                              \
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
    "    else redis.call('HDEL', key, all[i]) if g then unindex(g, all[i]) end end "                         \
    "  end "                                                                                                 \
    "  return live, maxep end "                                                                              \
    "local function best(live) local b = nil "                                                               \
    "  for _, s in ipairs(live) do if b == nil or s.e > b.e then b = s end end return b end "               \
    /* The route (rk) names the live session with the highest epoch and lives as long as it does;  \
     * the sessions hash (sk) as long as its longest-lived session. 0: route unchanged, 2: moved   \
     * to b.g. */                                                                                    \
    "local function follow(live, now, ttl, rk, sk) "                                                         \
    "  local b, last = best(live), 0 "                                                                       \
    "  for _, s in ipairs(live) do if s.t > last then last = s.t end end "                                   \
    "  redis.call('PEXPIRE', sk, last + ttl - now) "                                                         \
    "  local left = b.t + ttl - now "                                                                        \
    "  if redis.call('GET', rk) == b.g then redis.call('PEXPIRE', rk, left) return 0, b.g end "              \
    "  redis.call('SET', rk, b.g, 'PX', left) return 2, b.g end "                                            \
    "local function find(live, dev) for _, s in ipairs(live) do if s.d == dev then return s end end end "    \
    /* Unbind/Heartbeat act only on a live session of this device on this gateway and, with an   \
     * epoch, holding it (fencing). */                                                               \
    "local function fenced(s, gw, epoch) "                                                                   \
    "  return s == nil or s.g ~= gw or (epoch ~= 0 and s.e ~= epoch) end "                                  \
    /* End session x, one of live, of the user whose keys are rk, stk, sk (UnbindRoute): the last \
     * one logs the user out (1), else the route follows the rest (0 unchanged, 2 moved). Returns \
     * that, and the gateway the route names now. */                                              \
    "local function close_session(live, x, now, ttl, rk, stk, sk) "                                         \
    "  redis.call('HDEL', sk, x.d) unindex(x.g, x.d) "                                                       \
    "  local rest = {} for _, s in ipairs(live) do if s.d ~= x.d then rest[#rest + 1] = s end end "          \
    "  if #rest == 0 then redis.call('DEL', rk, stk, sk) return 1, '' end "                                 \
    "  return follow(rest, now, ttl, rk, sk) end "

#endif
