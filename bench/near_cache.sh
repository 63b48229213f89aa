# shellcheck shell=bash
# bench/near_cache.sh — the near-cache section of bench/run.sh (--near-cache, --near-cache-only).
# Sourced by run.sh, whose helpers, settings and cleanup trap it uses; not run on its own.
#
# Issue #11's comparisons (contract §11), all on one Redis, all users bound first:
#  - QueryRoute c=50 at P=16 and P=1 with a warm cache against redis-benchmark GET at the same c
#    and P, and against the generator's own ceiling (its in-process echo server);
#  - the same with near_cache = 0 (every query reads Redis: today's path);
#  - Deliver (route from the cache + PUBLISH) with and without the cache;
#  - a zipf workload with a cache smaller than the user set: the hit ratio;
#  - im-presence's and Redis's CPU seconds per million requests for each row.
# Hit ratios come from the instance's /metrics (impresence_near_cache_{hits,misses}_total).

declare -A NC_ECHO=()

# The sum of every sample of a metric (all label sets), from a scraped text.
metric_sum() { # text name
    awk -v k="$2" '{n = $1; sub(/\{.*$/, "", n)} n == k {s += $2; f = 1} END {printf "%s", (f ? s : "?")}' <<<"$1"
}

nc_start() { # near_cache entries per shard
    PRES_NAME=nc PRES_METRICS=1 PRES_ROUTE_EXTRA="near_cache = $1" start_presence "$SHARDS"
    log "im-presence near_cache = $1 on 127.0.0.1:$PRES_PORT, $SHARDS shards (pid $PRES_PID)"
}

# One row: runs the generator on the current instance and prints the table line.
nc_row() { # label method c P, then more generator arguments
    local label=$1 method=$2 c=$3 p=$4 s0 r0 s1 r1 n qps m0 m1 h m hit
    shift 4
    log "near cache: $label $method c=$c P=$p $*"
    m0=$(scrape "$PRES_METRICS_PORT")
    s0=$(cpu_ticks "$PRES_PID") r0=$(cpu_ticks "$REDIS_PID")
    if ! bench_json -h 127.0.0.1 -p "$PRES_PORT" -m "$method" -c "$c" -P "$p" "$@"; then
        echo "| $label | $method | $c | $p | failed: $(head -c 200 "$TMP/last.err" | tr '\n|' '  ') | | | | | | | | |"
        return 0
    fi
    s1=$(cpu_ticks "$PRES_PID") r1=$(cpu_ticks "$REDIS_PID")
    m1=$(scrape "$PRES_METRICS_PORT")
    h=$(awk -v a="$(metric_sum "$m1" impresence_near_cache_hits_total)" -v b="$(metric_sum "$m0" impresence_near_cache_hits_total)" 'BEGIN {print a - b}')
    m=$(awk -v a="$(metric_sum "$m1" impresence_near_cache_misses_total)" -v b="$(metric_sum "$m0" impresence_near_cache_misses_total)" 'BEGIN {print a - b}')
    hit=$(awk -v h="$h" -v m="$m" 'BEGIN {if (h + m > 0) printf "%.1f%%", 100 * h / (h + m); else printf "-"}')
    n=$(jq .responses_total "$TMP/last.json")
    qps=$(jq .qps "$TMP/last.json")
    local vs_get=- vs_echo=-
    [[ $method == query ]] && vs_get=$(ratio "$qps" "${REF_QPS[GET $c $p]:-0}") && vs_echo=$(ratio "$qps" "${NC_ECHO[$c $p]:-0}")
    echo "| $label | $method | $c | $p | $(fmt0 "$qps") | $(fmt0 "$(jq .latency.p50_us "$TMP/last.json")") |" \
        "$(fmt0 "$(jq .latency.p99_us "$TMP/last.json")") | $vs_get | $vs_echo | $(per_m $((s1 - s0)) "$n") |" \
        "$(per_m $((r1 - r0)) "$n") | $hit | $(outcome) |"
}

near_cache_section() {
    [[ -n ${REDIS_PID:-} ]] || {
        start_redis
        log "redis-server on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"
    }
    echo
    echo "### Near cache (contract §11): QueryRoute from memory against Redis's own GET"
    echo
    echo "| workload | c | P | req/s | p50 µs | p99 µs | redis CPU s/M |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    local cp c p
    for cp in "50 16" "50 1"; do
        read -r c p <<<"$cp"
        # Into a file, not a pipe: redis_row sets REF_QPS in this shell.
        redis_row get "$c" "$p" >"$TMP/nc-ref.md"
        awk -F'|' '{printf "|%s|%s|%s|%s|%s|%s|%s|\n", $2, $3, $4, $5, $6, $7, $10}' "$TMP/nc-ref.md"
        log "echo self-test c=$c P=$p"
        if bench_json --echo-selftest -m query -c "$c" -P "$p"; then
            NC_ECHO["$c $p"]=$(jq .qps "$TMP/last.json")
            echo "| echo (generator ceiling) | $c | $p | $(fmt0 "${NC_ECHO[$c $p]}") |" \
                "$(fmt0 "$(jq .latency.p50_us "$TMP/last.json")") | $(fmt0 "$(jq .latency.p99_us "$TMP/last.json")") | - |"
        fi
    done
    echo
    echo "| im-presence | method | c | P | req/s | p50 µs | p99 µs | vs GET | vs echo | im-presence CPU s/M | redis CPU s/M | hit ratio | outcome |"
    echo "|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---|"
    local nc first=1
    for nc in 100000 0; do
        nc_start "$nc"
        if ((first)); then
            preload
            first=0
        fi
        # Warm: every user read once (uniform draws over 2 s reach nearly all of them).
        [[ $nc != 0 ]] && bench_json -h 127.0.0.1 -p "$PRES_PORT" -m query -c 50 -P 16 >/dev/null 2>&1 || true
        for cp in "50 16" "50 1"; do
            read -r c p <<<"$cp"
            nc_row "near_cache = $nc" query "$c" "$p"
        done
        nc_row "near_cache = $nc" deliver 50 16
        stop_pid "$PRES_PID"
    done
    for nc in 1000 100000; do
        nc_start "$nc"
        nc_row "near_cache = $nc, zipf 0.99" query 50 16 --dist zipf
        stop_pid "$PRES_PID"
    done
    echo
    echo "Users 1..$USERS, all bound; $SHARDS shards, so near_cache = 1000 holds at most $((SHARDS * 1000))"
    echo "routes. Hit ratio over each row (warm-up included), from /metrics. Deliveries have no subscriber."
}
