# shellcheck shell=bash
# bench/drain.sh — the gateway drain section of bench/run.sh (--drain, --drain-only). Sourced by
# run.sh, whose helpers, settings and cleanup trap it uses; not run on its own.
#
# Issue #10's drain benchmark (contract §8): one DrainGateway of one gateway's N sessions (100,000;
# 10,000 with --quick) while Q other connections each keep sending QueryRoute, one at a time, for
# a user of another gateway on the drain's own shard; the drain's wall time, sessions per second,
# im-presence's CPU seconds (utime + stime) during it, and the latency of the queries answered
# meanwhile. im-presence-drain-bench (bench/drain.c) drives it; a fresh im-presence with $SHARDS
# shards serves each row.

DRAIN_BENCH="$BUILD/im-presence-drain-bench"

drain_row() { # sessions queriers
    local n=$1 qn=$2 out="$TMP/drain.tsv"
    PRES_NAME=drain start_presence "$SHARDS"
    log "drain bench: $n sessions, $qn querying connections (im-presence pid $PRES_PID, $SHARDS shards)"
    if ! timeout 600 "$DRAIN_BENCH" -p "$PRES_PORT" -n "$n" -s "$SHARDS" -q "$qn" --server-pid "$PRES_PID" \
        --tsv >"$out" 2>"$TMP/drain.err"; then
        echo "| $n | $qn | failed: $(head -c 200 "$TMP/drain.err" | tr '\n|' '  ') | | | | | | |"
        stop_pid "$PRES_PID"
        return 0
    fi
    # sessions code removed bind_ms drain_ms per_s cpu queries p50 p99 max wrong
    awk -F'\t' -v q="$qn" '{
        printf "| %d | %d | %d | %d | %.0f | %.2f | %d | %.2f | %.2f | %.2f |\n", $3, q, $4, $5, $6, $7, $8, $9, $10, $11
    }' "$out"
    stop_pid "$PRES_PID"
}

drain_section() {
    [[ -x $DRAIN_BENCH ]] || die "$DRAIN_BENCH was not built"
    [[ -n ${REDIS_PID:-} ]] || {
        start_redis
        log "redis-server on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"
    }
    local n=100000
    [[ $QUICK == 1 ]] && n=10000
    echo
    echo "### Gateway drain (contract §8): one DrainGateway of N sessions while other connections query"
    echo
    echo "| sessions removed | querying connections | bind, ms | drain, ms | sessions/s | im-presence CPU, s |" \
        "queries during the drain | p50, ms | p99, ms | max, ms |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    drain_row "$n" 1
    drain_row "$n" 4
    echo
    echo "Bind: the N sessions bound beforehand through im-presence, pipelined in rounds of 1000. The queries"
    echo "are each connection's QueryRoute of a user on the drain's own shard, one at a time; a query waits for"
    echo "at most one drain step (256 sessions, one Lua script) in Redis and on the shard."
}
