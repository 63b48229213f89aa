# shellcheck shell=bash
# bench/batch.sh — the batch-call section of bench/run.sh (--batch, --batch-only). Sourced by
# run.sh, whose helpers, settings and cleanup trap it uses; not run on its own.
#
# Issue #10's comparisons (contract §7): BatchQueryRoute of 100 ids against 100 QueryRoutes
# pipelined, and BatchDeliver to 500 users against 500 Delivers pipelined, each at c=8 on the same
# preloaded users, with im-presence's CPU seconds (utime + stime, /proc/PID/stat) per user
# answered. im-presence-batch-bench (bench/batch.c) drives both sides; one fresh instance with
# $SHARDS shards serves them.

BATCH_BENCH="$BUILD/im-presence-batch-bench"

# One comparison: prints two table lines (single, batch) and the ratio line.
batch_rows() { # method ids
    local method=$1 ids=$2 out="$TMP/batch.tsv"
    log "batch bench: $method, $ids ids per round, c=8"
    if ! timeout $((2 * (${DUR%.*} + 2) + 60)) "$BATCH_BENCH" -p "$PRES_PORT" -c 8 -n "$ids" -u "$USERS" -m "$method" \
        -s "$MSG_BYTES" --warmup "$WARM" -d "$DUR" --server-pid "$PRES_PID" --tsv >"$out" 2>"$TMP/batch.err"; then
        echo "| $method | $ids | failed: $(head -c 200 "$TMP/batch.err" | tr '\n|' '  ') | | | | |"
        return 0
    fi
    awk -F'\t' -v m="$method" -v n="$ids" '
        { users[$1] = $5; cpu[$1] = $8; refused[$1] = $9 }
        END {
            for (i = 1; i <= 2; i++) {
                k = i == 1 ? "single" : "batch"
                what = k == "single" ? n " single calls, pipelined" : "1 batch call of " n " ids"
                answers = (refused[k] > 0) ? refused[k] " refused" : "all answered"
                printf "| %s | %s | %.0f | %.2f | %s |\n", m, what, users[k], cpu[k], answers
            }
            if (cpu["batch"] > 0)
                printf "| %s | batch / single | %.2fx | %.2fx less | |\n", m, users["batch"] / users["single"], (cpu["single"] / cpu["batch"])
        }' "$out"
}

batch_section() {
    [[ -x $BATCH_BENCH ]] || die "$BATCH_BENCH was not built"
    [[ -n ${REDIS_PID:-} ]] || {
        start_redis
        log "redis-server on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"
    }
    PRES_NAME=batch start_presence "$SHARDS"
    log "im-presence for the batch rows on 127.0.0.1:$PRES_PORT, $SHARDS shards (pid $PRES_PID)"
    preload
    echo
    echo "### Batch calls (contract §7): one call of N ids against N single calls pipelined, c=8"
    echo
    echo "| method | per round | users/s | im-presence CPU µs per user | answers |"
    echo "|---|---|---:|---:|---|"
    batch_rows query 100
    batch_rows deliver 500
    echo
    echo "Users drawn uniformly from 1..$USERS, all bound; deliveries have no subscriber. CPU is the whole"
    echo "im-presence process over the measured ${DUR} s, divided by the users answered in it."
    stop_pid "$PRES_PID"
}
