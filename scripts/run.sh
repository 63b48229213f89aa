#!/usr/bin/env bash
# scripts/run.sh [im-presence args...] — THE run command (README). Installs what is missing, builds
# the release server and runs it in the foreground with conf/presence.ini (or the file given with
# -c FILE). When the configured cache or queue Redis is local (127.0.0.1/localhost) and does not
# answer PING, a throw-away redis-server (no persistence, data in a temp dir) is started on that
# port first and stopped when the server exits. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh release

# The config file: -c FILE / -cFILE among the arguments, else conf/presence.ini.
conf=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
    -c) conf=${args[i + 1]:-} ;;
    -c?*) conf=${args[i]#-c} ;;
    esac
done
if [[ -z $conf ]]; then
    conf=conf/presence.ini
    set -- -c "$conf" "$@"
fi
[[ -r $conf ]] || { echo "run.sh: cannot read config $conf" >&2; exit 2; }

# redis_addr SECTION: "host port mode" of [SECTION] in the config, with the server's defaults.
redis_addr() {
    awk -v want="$1" '
        { sub(/^[ \t]+/, ""); sub(/[ \t]+;.*$/, ""); sub(/[ \t\r]+$/, "") }
        /^[;#]/ || $0 == "" { next }
        /^\[.*\]$/ { section = substr($0, 2, length($0) - 2); next }
        section == want && index($0, "=") {
            key = substr($0, 1, index($0, "=") - 1); value = substr($0, index($0, "=") + 1)
            gsub(/[ \t]/, "", key); sub(/^[ \t]+/, "", value)
            if (key == "host") host = value
            if (key == "port") port = value
            if (key == "mode") mode = value
        }
        END { print (host == "" ? "127.0.0.1" : host), (port == "" ? 6379 : port), (mode == "" ? "standalone" : mode) }
    ' "$conf"
}

tmp=""
redis_pids=()
cleanup() {
    for pid in "${redis_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [[ -z $tmp ]] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

seen=" "
for section in redis_cache redis_queue; do
    read -r host port mode < <(redis_addr "$section")
    if [[ $mode != standalone ]]; then
        echo "run.sh: [$section] mode = $mode: the server finds its Redis itself; starting none"
        continue
    fi
    [[ $seen == *" $host:$port "* ]] && continue
    seen+="$host:$port "
    if redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1; then
        echo "run.sh: [$section] redis at $host:$port is up"
        continue
    fi
    if [[ $host != 127.0.0.1 && $host != localhost ]]; then
        echo "run.sh: warning: [$section] redis at $host:$port does not answer; not local, not starting one" >&2
        continue
    fi
    [[ -n $tmp ]] || tmp=$(mktemp -d "${TMPDIR:-/tmp}/im-presence-run.XXXXXX")
    mkdir -p "$tmp/redis-$port"
    echo "run.sh: [$section] no redis at $host:$port; starting redis-server (log: $tmp/redis-$port.log)"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
        --dir "$tmp/redis-$port" >"$tmp/redis-$port.log" 2>&1 &
    redis_pids+=($!)
    for _ in $(seq 100); do
        redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
        if ! kill -0 "${redis_pids[-1]}" 2>/dev/null; then
            cat "$tmp/redis-$port.log" >&2
            echo "run.sh: redis-server on port $port failed to start" >&2
            exit 1
        fi
        sleep 0.1
    done
    redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 || { echo "run.sh: redis on $port: no PONG" >&2; exit 1; }
done

if ((${#redis_pids[@]} == 0)); then
    exec build/release/im-presence "$@"
fi
# Not exec: the trap must stop the redis-server started above when the server exits.
rc=0
build/release/im-presence "$@" || rc=$?
exit "$rc"
