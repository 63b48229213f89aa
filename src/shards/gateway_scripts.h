/* The Lua scripts behind gateway leases and drains (contract §8). Read-only data; see
 * gateway_scripts.c for what each takes and returns. The shards load them with the session
 * scripts (handlers_cache_setup) and run them by SHA (gateways.c). */
#ifndef PR_SHARDS_GATEWAY_SCRIPTS_H
#define PR_SHARDS_GATEWAY_SCRIPTS_H

enum gw_script {
    GW_SCRIPT_LEASE,  /* GatewayHeartbeat: set the lease's end */
    GW_SCRIPT_DRAIN,  /* one bounded step of a drain, on one index key */
    GW_SCRIPT_FINISH, /* a drain's end: the lease and the lock */
    GW_SCRIPT_CLAIM,  /* the lease watcher: lock the first lapsed gateway nobody drains */
    GW_SCRIPT_RENEW,  /* keep that lock while the drain runs */
    GW_SCRIPTS
};

extern const char *const GW_SCRIPT_LUA[GW_SCRIPTS];

#endif
