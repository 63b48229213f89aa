#!/usr/bin/env bash
# bench/callgrind.sh — instructions per request, per method, counted by valgrind's callgrind:
# noise-free, so two versions can be compared on a busy machine.
#
#   bench/callgrind.sh [METHOD...]        (default: query bind deliver heartbeat unbind)
#
# Builds build/profile (RelWithDebInfo), starts a private redis-server on a free port, runs
# im-presence (2 shards) under callgrind, drives it with im-presence-bench (c=8, P=16, 1000 users,
# preloaded, 4 s), and divides the server's total instructions (every thread, start-up and
# preload included) by the requests it served. The callgrind output stays in build/profile/cg/.
# CG_NEAR_CACHE sets [route] near_cache (default: the server's, 100000; 0: every lookup reads Redis).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/build/profile
METHODS=("$@")
((${#METHODS[@]})) || METHODS=(query bind deliver heartbeat unbind)

"$ROOT/scripts/install-deps.sh" >&2
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is required (apt-get install valgrind)" >&2; exit 1; }
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPRESENCE_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target im-presence im-presence-bench im-presence-cli >/dev/null

TMP=$(mktemp -d "${TMPDIR:-/tmp}/im-presence-cg.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

# Pick below the kernel's ephemeral range, where no outgoing connection can hold the port.
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((EPHEMERAL_LOW > 11000)) || EPHEMERAL_LOW=32768
free_port() {
    local port
    for _ in $(seq 100); do
        port=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return 0; }
    done
    return 1
}
RPORT=$(free_port)
SPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
cat >"$TMP/p.ini" <<INI
[presence_service]
port = $SPORT
thread_count = 2
[route]
near_cache = ${CG_NEAR_CACHE:-100000}
[metrics]
port = 0
[redis_cache]
port = $RPORT
[redis_queue]
port = $RPORT
INI

mkdir -p "$BUILD/cg"
printf '| method | requests | instructions | instructions/request |\n|---|---:|---:|---:|\n'
for m in "${METHODS[@]}"; do
    out=$BUILD/cg/callgrind.$m
    rm -f "$out".* # an earlier run's file would be counted instead
    valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$BUILD/im-presence" -c "$TMP/p.ini" \
        >"$TMP/server.$m.log" 2>&1 &
    vpid=$!
    for _ in $(seq 100); do "$BUILD/im-presence-cli" -p "$SPORT" -t 200 query 1 >/dev/null 2>&1 && break; sleep 0.2; done
    "$BUILD/im-presence-bench" -p "$SPORT" -c 8 -P 16 -t 1 -m "$m" -u 1000 --preload -d 0 >/dev/null 2>&1
    "$BUILD/im-presence-bench" -p "$SPORT" -c 8 -P 16 -t 1 -m "$m" -u 1000 -d 4 --warmup 0 >/dev/null 2>&1
    kill -TERM "$vpid"
    wait "$vpid"
    n=$(grep -oE 'stopped served=[0-9]+' "$TMP/server.$m.log" | grep -oE '[0-9]+$')
    ir=$(callgrind_annotate "$out".* 2>/dev/null | grep 'PROGRAM TOTALS' | grep -oE '^[0-9,]+' | tr -d ,)
    printf '| %s | %s | %s | %s |\n' "$m" "$n" "$ir" "$((ir / n))"
    rm -f "$out".*.old
done
