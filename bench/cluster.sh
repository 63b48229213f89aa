# shellcheck shell=bash
# bench/cluster.sh — the Redis Cluster section of bench/run.sh (--cluster, --cluster-only).
# Sourced by run.sh, whose helpers, settings and cleanup trap it uses; not run on its own.
#
# Starts a 3-master Redis Cluster and one plain redis-server, and three im-presence instances with
# $SHARDS shards each: standalone on the plain Redis, cluster with pubsub = sharded, cluster with
# pubsub = global. At each c/P of CONFIGS it measures redis-benchmark (with --cluster on the
# cluster) and QueryRoute/BindRoute/Deliver through im-presence, standalone and cluster rows next
# to each other, and prints one table with the ratios cluster/standalone and im-presence/
# redis-benchmark. Then the cluster router's counters, scraped from the instances' /metrics.

CLUSTER_MASTERS=3
CL_PIDS=() CL_PORTS=()

# One cluster node on a free port, with its bus on another: appends to CL_PIDS and CL_PORTS.
start_cluster_node() { # index
    local i=$1 dir="$TMP/cluster-$1" port bus pid
    mkdir -p "$dir"
    for _ in 1 2 3 4 5; do
        port=$(free_port) bus=$(free_port)
        [[ $port != "$bus" ]] || continue
        rm -f "$dir/nodes.conf"
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
            --logfile "$dir/redis.log" --daemonize no --protected-mode yes \
            --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" --cluster-port "$bus" \
            --cluster-node-timeout 2000 &
        pid=$!
        PIDS+=("$pid")
        for _ in $(seq 50); do
            if [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]]; then
                CL_PIDS+=("$pid") CL_PORTS+=("$port")
                return 0
            fi
            alive "$pid" || break
            sleep 0.1
        done
        stop_pid "$pid"
    done
    tail -n 20 "$dir/redis.log" >&2
    die "cluster node $i did not start"
}

# A node's CLUSTER INFO field.
cluster_info() { # port field
    redis-cli -p "$1" cluster info 2>/dev/null | tr -d '\r' | awk -F: -v k="$2" '$1 == k {print $2}'
}

start_cluster() {
    local i port addrs=() ok
    for i in $(seq "$CLUSTER_MASTERS"); do start_cluster_node "$i"; done
    for port in "${CL_PORTS[@]}"; do addrs+=("127.0.0.1:$port"); done
    log "redis cluster create ${addrs[*]}"
    if ! timeout 60 redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes \
        >"$TMP/cluster-create.log" 2>&1; then
        tail -n 20 "$TMP/cluster-create.log" >&2
        die "redis-cli --cluster create failed"
    fi
    # Every node must see every slot served and know every master, or the first requests redirect.
    for _ in $(seq 300); do
        ok=1
        for port in "${CL_PORTS[@]}"; do
            if [[ $(cluster_info "$port" cluster_state) != ok ||
                $(cluster_info "$port" cluster_known_nodes) != "$CLUSTER_MASTERS" ]]; then
                ok=0
                break
            fi
        done
        ((ok == 0)) || return 0
        sleep 0.1
    done
    for port in "${CL_PORTS[@]}"; do redis-cli -p "$port" cluster info >&2 || true; done
    die "the cluster did not reach cluster_state:ok on every node within 30 s"
}

# The [redis_cache] and [redis_queue] sections of an instance on the cluster.
cluster_ini() { # pubsub
    local nodes port
    nodes=$(for port in "${CL_PORTS[@]}"; do printf '127.0.0.1:%s,' "$port"; done)
    nodes=${nodes%,}
    printf '[redis_cache]\nmode = cluster\nnodes = %s\ntimeout = 2000\n\n' "$nodes"
    printf '[redis_queue]\nmode = cluster\nnodes = %s\npubsub = %s\ntimeout = 2000\n' "$nodes" "$1"
}

sum_ticks() { # pid...
    local pid sum=0
    for pid in "$@"; do sum=$((sum + $(cpu_ticks "$pid"))); done
    echo "$sum"
}

# Measurements land in M_QPS, M_P50, M_P99, M_PCPU (im-presence CPU s/M), M_RCPU (Redis CPU s/M,
# summed over the nodes), M_OUT (outcome); M_FAIL is non-empty when the run failed.
clear_m() { M_QPS=0 M_P50=0 M_P99=0 M_PCPU=- M_RCPU=- M_OUT='' M_FAIL=''; }

# im-presence through the instance at port (process pid); Redis processes after the fifth argument.
pres_measure() { # pid port method c P redis-pid...
    local pid=$1 port=$2 method=$3 c=$4 p=$5 s0 r0 s1 r1 n
    shift 5
    clear_m
    log "cluster section: im-presence $method c=$c P=$p on :$port"
    s0=$(cpu_ticks "$pid") r0=$(sum_ticks "$@")
    if ! bench_json -h 127.0.0.1 -p "$port" -m "$method" -c "$c" -P "$p"; then
        M_FAIL="failed: $(head -c 200 "$TMP/last.err" | tr '\n|' '  ')"
        return 0
    fi
    s1=$(cpu_ticks "$pid") r1=$(sum_ticks "$@")
    n=$(jq .responses_total "$TMP/last.json")
    M_QPS=$(jq .qps "$TMP/last.json")
    M_P50=$(jq .latency.p50_us "$TMP/last.json")
    M_P99=$(jq .latency.p99_us "$TMP/last.json")
    M_PCPU=$(per_m $((s1 - s0)) "$n")
    M_RCPU=$(per_m $((r1 - r0)) "$n")
    M_OUT=$(outcome)
}

# redis-benchmark against the Redis at port, with --cluster when cluster is 1. {tag} in a key is
# redis-benchmark's cluster placeholder (a hash tag of the client's node; literal otherwise).
# With --cluster it runs a thread per master and times in 250 ms steps, so a short probe says
# little: -n starts at RB_PROBE and is sized again from each run until a run lasts ~DUR seconds.
rb_measure() { # port cluster test c P redis-pid...
    local port=$1 cl=$2 test=$3 c=$4 p=$5 mode=() args n=$RB_PROBE line r0 r1 try
    shift 5
    clear_m
    [[ $cl == 1 ]] && mode=(--cluster)
    case $test in
    get | set) args=(-t "$test" -r "$USERS" -d ${#GW}) ;;
    *) args=(-r "$USERS" "$test" "user:{tag}:__rand_int__" "$(head -c "$MSG_BYTES" /dev/zero | tr '\0' x)") ;;
    esac
    log "cluster section: redis-benchmark ${mode[*]:-} $test c=$c P=$p"
    for try in 1 2 3 4; do
        r0=$(sum_ticks "$@")
        line=$(timeout 300 redis-benchmark -h 127.0.0.1 -p "$port" "${mode[@]}" -c "$c" -P "$p" -n "$n" \
            --csv "${args[@]}" | tail -n 1 | tr -d '"') || true
        r1=$(sum_ticks "$@")
        M_QPS=$(awk -F, '{print $2 + 0}' <<<"$line")
        awk -v n="$n" -v r="$M_QPS" -v d="$DUR" -v t="$try" 'BEGIN {exit !(r <= 0 || (t > 1 && n / r >= 0.7 * d))}' &&
            break
        ((try == 4)) ||
            n=$(awk -v r="$M_QPS" -v d="$DUR" 'BEGIN {n = int(r * d * 1.1); if (n < 10000) n = 10000; print n}')
    done
    M_P50=$(awk -F, '{print $5 * 1000}' <<<"$line")
    M_P99=$(awk -F, '{print $7 * 1000}' <<<"$line")
    M_RCPU=$(per_m $((r1 - r0)) "$n")
    M_OUT="$n requests"
    awk -v r="$M_QPS" 'BEGIN {exit !(r > 0)}' || M_FAIL="failed: no CSV line from redis-benchmark"
}

# The table: QPS and im-presence CPU of every row by "workload redis c P", for the ratios.
declare -A CL_QPS=() CL_CPU=()
cl_row() { # workload redis(standalone|cluster) c P reference-key ("" for a reference row)
    local w=$1 r=$2 c=$3 p=$4 ref=$5 vs=reference qr=- cr=- std
    if [[ -n $M_FAIL ]]; then
        echo "| $w | $r | $c | $p | $M_FAIL | | | | | | | | |"
        return 0
    fi
    CL_QPS["$w $r $c $p"]=$M_QPS CL_CPU["$w $r $c $p"]=$M_PCPU
    [[ -z $ref ]] || vs="$(ratio "$M_QPS" "${CL_QPS[$ref $r $c $p]:-0}") vs ${ref#redis-benchmark }"
    if [[ $r != standalone ]]; then
        std=${w% (pubsub=*}
        qr=$(ratio "$M_QPS" "${CL_QPS[$std standalone $c $p]:-0}")
        [[ $M_PCPU == - ]] || cr=$(ratio "$M_PCPU" "${CL_CPU[$std standalone $c $p]:-0}")
    fi
    echo "| $w | $r | $c | $p | $(fmt0 "$M_QPS") | $(fmt0 "$M_P50") | $(fmt0 "$M_P99") | $vs | $qr |" \
        "$M_PCPU | $cr | $M_RCPU | $M_OUT |"
}

router_rows() { # label metrics-port
    local text r
    text=$(scrape "$2")
    if [[ -z $text ]]; then
        echo "| $1 | metrics not reachable | | | | | | | | |"
        return 0
    fi
    for r in cache queue; do
        echo "| $1 | $r | $(sample "$text" "impresence_redis_cluster_redirects_total{role=\"$r\",kind=\"moved\"}") |" \
            "$(sample "$text" "impresence_redis_cluster_redirects_total{role=\"$r\",kind=\"ask\"}") |" \
            "$(sample "$text" "impresence_redis_cluster_retries_total{role=\"$r\"}") |" \
            "$(sample "$text" "impresence_redis_cluster_map_refreshes_total{role=\"$r\"}") |" \
            "$(sample "$text" "impresence_redis_cluster_masters{role=\"$r\"}") |" \
            "$(sample "$text" "impresence_redis_connections_up{role=\"$r\"}") |" \
            "$(sample "$text" "impresence_redis_errors_total{role=\"$r\"}") |" \
            "$(sample "$text" "impresence_redis_reconnects_total{role=\"$r\"}") |"
    done
    # Server-side answers other than OK and NOT_FOUND (NOT_FOUND is a normal QueryRoute answer).
    awk -v l="$1" '$1 ~ /^impresence_requests_total\{/ && $1 !~ /code="(OK|NOT_FOUND)"/ && $2 > 0 {
        printf "| %s | answered %s | | | | | | | |\n", l, $0 }' <<<"$text"
}

cluster_section() {
    local c p cp m ref w rb_std rb_cl commit cpu_model tool pid
    for tool in redis-server redis-benchmark redis-cli jq; do
        command -v "$tool" >/dev/null || die "'$tool' is required"
    done
    # Whatever the default sections left running would compete for the CPUs.
    [[ -z ${PRES_PID:-} ]] || stop_pid "$PRES_PID"
    [[ -z ${REDIS_PID:-} ]] || stop_pid "$REDIS_PID"
    start_cluster
    log "redis cluster on 127.0.0.1:${CL_PORTS[*]} (pids ${CL_PIDS[*]})"
    start_redis
    local SA_RPID=$REDIS_PID
    log "standalone redis-server on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"
    PRES_NAME=presence-standalone PRES_METRICS=1 start_presence "$SHARDS"
    local SA_PID=$PRES_PID SA_PORT=$PRES_PORT
    PRES_NAME=presence-cluster PRES_METRICS=1 PRES_REDIS_INI=$(cluster_ini sharded) start_presence "$SHARDS"
    local CS_PID=$PRES_PID CS_PORT=$PRES_PORT CS_MPORT=$PRES_METRICS_PORT
    PRES_NAME=presence-cluster-global PRES_METRICS=1 PRES_REDIS_INI=$(cluster_ini global) start_presence "$SHARDS"
    local CG_PID=$PRES_PID CG_PORT=$PRES_PORT CG_MPORT=$PRES_METRICS_PORT
    log "im-presence: standalone :$SA_PORT, cluster sharded :$CS_PORT, cluster global :$CG_PORT; $SHARDS shards each"
    PRES_PORT=$SA_PORT preload
    PRES_PORT=$CS_PORT preload # the global instance uses the same cluster, hence the same routes
    local clients=() port
    for port in "${CL_PORTS[@]}"; do clients+=("$(redis-cli -p "$port" info clients | tr -d '\r' |
        awk -F: '$1 == "connected_clients" {print $2}')"); done

    if [[ $CLUSTER == only ]]; then
        commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
        [[ -z $(git -C "$ROOT" status --porcelain 2>/dev/null) ]] || commit="$commit (dirty tree)"
        cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
        echo "## im-presence on a Redis Cluster"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit, mode: $([[ $QUICK == 1 ]] && echo quick || echo full)"
        echo "- machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}, Linux $(uname -r), load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "- $(redis-server --version | cut -d' ' -f1-3)"
        echo
    fi
    echo "### Redis Cluster: $CLUSTER_MASTERS masters against one Redis"
    echo
    echo "- cluster: $CLUSTER_MASTERS masters, no replicas, cluster-node-timeout 2000; standalone: one plain" \
        "redis-server (cache db 0, queue db 1); both running through the whole section, same machine"
    echo "- im-presence: three instances with $SHARDS shards each, all running: standalone; cluster with" \
        "pubsub = sharded (Deliver: SPUBLISH at the slot's master); cluster with pubsub = global (Deliver:" \
        "PUBLISH, which a cluster copies to every node); bind always PUBLISHes its presence:route notice"
    echo "- load: im-presence-bench $THREADS thread(s), users 1..$USERS uniform, preloaded once per Redis;" \
        "${WARM} s warm-up + ${DUR} s per im-presence row; redis-benchmark: 1 thread on one Redis, with" \
        "--cluster one thread per master (its default), clients spread over the masters, keys tagged to" \
        "the client's node"
    echo "- vs redis-benchmark: against the same Redis (query↔GET, bind↔SET, deliver↔PUBLISH/SPUBLISH);" \
        "cluster/standalone: this row against the same workload on one Redis; CPU in s per million requests" \
        "(warm-up included), Redis CPU summed over the nodes; latencies in µs"
    echo "- $(nproc) CPUs: the $CLUSTER_MASTERS masters, im-presence and the generator share them, so throughput cannot" \
        "grow with masters here; the rows show what the cluster routing costs, not the ceiling it lifts"
    echo
    echo "| workload | Redis | c | P | req/s | p50 µs | p99 µs | vs redis-benchmark | req/s cluster/standalone |" \
        "im-presence CPU s/M | im-presence CPU cluster/standalone | redis CPU s/M | outcome |"
    echo "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"
    for cp in "${CONFIGS[@]}"; do
        read -r c p <<<"$cp"
        for w in set get publish; do
            rb_std=$w rb_cl=$w
            [[ $w == publish ]] && rb_cl=spublish
            rb_measure "$REDIS_PORT" 0 "$rb_std" "$c" "$p" "$SA_RPID"
            cl_row "redis-benchmark ${rb_std^^}" standalone "$c" "$p" ""
            rb_measure "${CL_PORTS[0]}" 1 "$rb_cl" "$c" "$p" "${CL_PIDS[@]}"
            cl_row "redis-benchmark ${rb_cl^^}" cluster "$c" "$p" ""
        done
        # PUBLISH on the cluster too: the reference of pubsub = global.
        rb_measure "${CL_PORTS[0]}" 1 publish "$c" "$p" "${CL_PIDS[@]}"
        cl_row "redis-benchmark PUBLISH" cluster "$c" "$p" ""
        for m in query bind deliver; do
            case $m in query) ref=GET ;; bind) ref=SET ;; deliver) ref=PUBLISH ;; esac
            pres_measure "$SA_PID" "$SA_PORT" "$m" "$c" "$p" "$SA_RPID"
            cl_row "im-presence $m" standalone "$c" "$p" "redis-benchmark $ref"
            [[ $m == deliver ]] && ref=SPUBLISH
            pres_measure "$CS_PID" "$CS_PORT" "$m" "$c" "$p" "${CL_PIDS[@]}"
            w="im-presence $m"
            [[ $m == deliver ]] && w="$w (pubsub=sharded)"
            cl_row "$w" cluster "$c" "$p" "redis-benchmark $ref"
        done
        pres_measure "$CG_PID" "$CG_PORT" deliver "$c" "$p" "${CL_PIDS[@]}"
        cl_row "im-presence deliver (pubsub=global)" cluster "$c" "$p" "redis-benchmark PUBLISH"
    done
    echo
    echo "### Cluster router counters after the rows (scraped from /metrics)"
    echo
    echo "On a stable cluster every redirect, retry and error column stays 0; map refreshes: one per shard"
    echo "and role at start; masters and connections: summed over the shards ($SHARDS × $CLUSTER_MASTERS)."
    echo
    echo "| instance | role | MOVED | ASK | retries | map refreshes | masters | connections up | redis errors | reconnects |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    router_rows "cluster, pubsub=sharded" "$CS_MPORT"
    router_rows "cluster, pubsub=global" "$CG_MPORT"
    echo
    echo "Connections per cluster node with both cluster instances idle (CLIENT count, INFO clients):" \
        "${clients[*]}."
    for pid in "$SA_PID" "$CS_PID" "$CG_PID"; do stop_pid "$pid"; done
}
