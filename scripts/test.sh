#!/usr/bin/env bash
# scripts/test.sh — THE test command (README, .ci/run). On a fresh Debian 12 machine it installs
# what is missing, then builds and runs every suite:
#   release  unit + integration tests, a short im-presence-bench run, a 75 s soak with Redis faults
#   asan     ASan+UBSan: unit + integration tests
#   tsan     ThreadSanitizer on the threaded parts: the integration suite against the TSan-built
#            server, and the ring stress test (build/tsan/tests/ring_stress)
#   fuzz     clang/libFuzzer: fuzz_frame and fuzz_codec, ~60 s each on a copy of their seed corpus
#            (tests/fuzz/corpus/frame, .../codec) with tests/fuzz/frame.dict
# Stops at the first failing step (non-zero exit). Ends with a per-step timing table and, alone on
# the last line, "tests: P passed, F failed" summed over every Criterion run. A failure that is not
# a Criterion test (build, sanitizer report, fuzz crash, smoke) counts as one failed test, so a
# failed run never reports "0 failed".
#
# Why the TSan step does not run Criterion binaries built with TSan: Criterion (BoxFort) maps its
# shared arena at a random address in 0x2000_0000_0000..0x7f00_0000_0000, all of which the TSan
# runtime reserves, so every TSan-linked Criterion binary dies at start-up ("Could not initialize
# inheritable arena", Snaipe/Criterion#274). The integration tests are only the client, so the
# plain release binary drives the TSan server (PRESENCE_SERVER_BIN, PRESENCE_IT_SLOW), and the
# ring's cross-thread test is a plain program.
#
# Sanitizer reports of every process a test run starts (the tests, the servers they spawn) are
# written to files (log_path) and any report fails the run, even if the test itself passed.
#
# Knobs (environment): TEST_JOBS (Criterion --jobs, default 2), TEST_TIMEOUT (seconds per test,
# default 300), TEST_RUN_TIMEOUT (seconds per test binary, default 1800), FUZZ_SECONDS (per fuzz
# target, default 60), SOAK_SECONDS (default 75).
set -euo pipefail
cd "$(dirname "$0")/.."

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
# Leaks inside Criterion's own runner are not ours to fix (tests/lsan.supp says which and why).
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
# TSan suppressions, if the project ever needs a file of them.
if [[ -f tests/tsan.supp ]]; then
    TSAN_OPTIONS+=":suppressions=$PWD/tests/tsan.supp"
fi

jobs=${TEST_JOBS:-2}
per_test_timeout=${TEST_TIMEOUT:-300}
run_timeout=${TEST_RUN_TIMEOUT:-1800}
fuzz_seconds=${FUZZ_SECONDS:-60}
soak_seconds=${SOAK_SECONDS:-75}

passed=0          # Criterion tests passed, all runs
failed=0          # Criterion tests failed or crashed, all runs
timings=()        # "step  seconds" lines for the summary
current=""        # the step running now, for the failure message
step_t0=0
pids=()           # background processes (bench smoke) to stop on exit
runs=0            # test runs so far, names their sanitizer report directory
tmp=$(mktemp -d "${TMPDIR:-/tmp}/im-presence-test.XXXXXX")

# In a terminal, keep test processes in the foreground group so that Ctrl-C reaches them; without
# one (CI), timeout gets its own process group and kills the whole tree when it fires.
limit=(timeout -k 30)
[[ -t 0 ]] && limit+=(--foreground)

finish() {
    local rc=$?
    set +e
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    rm -rf "$tmp"
    if [[ -n $current ]]; then
        timings+=("$(printf '%-40s %5ds  FAILED' "$current" $((SECONDS - step_t0)))")
    fi
    echo
    echo "=== timings"
    printf '  %s\n' "${timings[@]}"
    printf '  %-40s %5ds\n' total "$SECONDS"
    if ((rc != 0)); then
        echo "test.sh: FAILED${current:+ in step '$current'} (exit $rc)" >&2
        ((failed > 0)) || failed=1
    fi
    echo "tests: $passed passed, $failed failed"
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# step NAME COMMAND...: run one step, timed. Called as a plain command so that set -e applies
# inside it: the first failing command ends the script through finish().
step() {
    current=$1
    shift
    step_t0=$SECONDS
    echo
    echo "=== $current"
    "$@"
    local dt=$((SECONDS - step_t0))
    timings+=("$(printf '%-40s %5ds' "$current" "$dt")")
    echo "=== $current: ok (${dt}s)"
    current=""
}

# criterion BINARY [args...]: run a Criterion test binary (optionally under a prefix command in
# the array `prefix`) and add its "Synthesis" counts to the totals. Fails on a non-zero exit, any
# failing or crashing test, a missing Synthesis line, or zero tests run.
prefix=()
criterion() {
    local bin=$1
    shift
    if [[ ! -x $bin ]]; then
        echo "test.sh: $bin was not built" >&2
        return 1
    fi
    local log=$tmp/criterion.log rc=0
    runs=$((runs + 1))
    local san=$tmp/sanitizer-reports.$runs
    mkdir -p "$san"
    ASAN_OPTIONS="$ASAN_OPTIONS:log_path=$san/asan" UBSAN_OPTIONS="$UBSAN_OPTIONS:log_path=$san/ubsan" \
        TSAN_OPTIONS="$TSAN_OPTIONS:log_path=$san/tsan" \
        "${limit[@]}" "$run_timeout" "${prefix[@]}" "$bin" --jobs "$jobs" --timeout "$per_test_timeout" \
        --short-filename "$@" 2>&1 | tee "$log" || rc=$?
    local reports=0
    for f in "$san"/*; do
        [[ -f $f ]] || continue
        reports=$((reports + 1))
        echo "----- sanitizer report $(basename "$f")" >&2
        cat "$f" >&2
    done
    local line
    line=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep 'Synthesis: Tested:' | tail -n 1 || true)
    local re='Tested: *([0-9]+) *\| *Passing: *([0-9]+) *\| *Failing: *([0-9]+) *\| *Crashing: *([0-9]+)'
    if [[ ! $line =~ $re ]]; then
        failed=$((failed + 1))
        local why="exit $rc"
        ((rc != 124)) || why="timed out after ${run_timeout}s"
        echo "test.sh: $bin ended without a Criterion summary ($why)" >&2
        return 1
    fi
    local tested=${BASH_REMATCH[1]} bad=$((BASH_REMATCH[3] + BASH_REMATCH[4])) why=""
    passed=$((passed + BASH_REMATCH[2]))
    failed=$((failed + bad))
    if ((reports > 0)); then
        why="$reports sanitizer report(s), see above"
    elif ((bad > 0)); then
        why="$bad failing/crashing test(s)"
    elif ((rc != 0)); then
        why="exit $rc"
    elif ((tested == 0)); then
        why="no tests ran"
    fi
    if [[ -n $why ]]; then
        ((bad > 0)) || failed=$((failed + 1))
        echo "test.sh: $bin: $why" >&2
        return 1
    fi
}

# The sanitizers of gcc 12 / LLVM 14 cannot lay out their shadow memory when the kernel randomises
# mmap with more than 28 bits (google/sanitizers#1716): there, run tests with ASLR off.
prefix=()
aslr_workaround() {
    local bits
    bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28)
    if ((bits > 28)) && setarch "$(uname -m)" -R true 2>/dev/null; then
        echo "vm.mmap_rnd_bits=$bits: running tests under 'setarch -R' (ASLR off)"
        prefix=(setarch "$(uname -m)" -R)
    fi
}

# The integration suite (plain release build, only a client) against the TSan-built server.
tsan_integration() {
    local bin=build/release/tests/integration_tests
    if ! grep -qa PRESENCE_SERVER_BIN "$bin"; then
        echo "test.sh: $bin does not read \$PRESENCE_SERVER_BIN, so it cannot test the TSan server" >&2
        return 1
    fi
    # PRESENCE_IT_SLOW: the harness's time bounds, scaled for a TSan server.
    PRESENCE_SERVER_BIN=$PWD/build/tsan/im-presence PRESENCE_IT_SLOW=${PRESENCE_IT_SLOW:-6} criterion "$bin"
}

# The ring's producer/consumer threads under TSan, as a plain program (see the top comment).
tsan_ring() {
    local bin=build/tsan/tests/ring_stress
    if [[ ! -x $bin ]]; then
        echo '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!' >&2
        echo "!!! RING UNDER TSAN SKIPPED: $bin was not built" >&2
        echo '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!' >&2
        return 0
    fi
    "${limit[@]}" 600 "${prefix[@]}" "$bin"
}

# free_port: print a TCP port on 127.0.0.1 that nothing listens on now.
# Pick below the kernel's ephemeral range, where no outgoing connection can hold the port.
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((EPHEMERAL_LOW > 11000)) || EPHEMERAL_LOW=32768
free_port() {
    local port
    for _ in $(seq 100); do
        port=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# wait_listen PORT PID: wait up to 10 s for PID to listen on PORT.
wait_listen() {
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# The bench, if built: build/release/im-presence-bench (or build/release/bench/...).
bench_bin() {
    local b
    for b in build/release/im-presence-bench build/release/bench/im-presence-bench; do
        [[ -x $b ]] && { echo "$b"; return 0; }
    done
    return 1
}

# Bench smoke: a throw-away redis-server and release server on free ports, a one-second mixed
# load from the bench, then the server must stop cleanly (exit 0) on SIGTERM.
bench_smoke() {
    local bench rport sport
    bench=$(bench_bin)
    sport=$(free_port)
    mkdir -p "$tmp/bench-redis"
    local redis_pid="" try
    for try in 1 2 3 4 5; do # a port found free can be taken before redis binds it
        rport=$(free_port)
        redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
            --dir "$tmp/bench-redis" >"$tmp/bench-redis.log" 2>&1 &
        redis_pid=$!
        wait_listen "$rport" "$redis_pid" && break
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
        redis_pid=""
    done
    [[ -n $redis_pid ]] || { cat "$tmp/bench-redis.log" >&2; return 1; }
    pids+=("$redis_pid")
    cat >"$tmp/bench.ini" <<EOF
[presence_service]
host = 127.0.0.1
port = $sport
thread_count = 2
[metrics]
port = 0
[redis_cache]
host = 127.0.0.1
port = $rport
[redis_queue]
host = 127.0.0.1
port = $rport
EOF
    build/release/im-presence -c "$tmp/bench.ini" >"$tmp/bench-server.log" 2>&1 &
    local server_pid=$!
    pids+=("$server_pid")
    wait_listen "$sport" "$server_pid" || { cat "$tmp/bench-server.log" >&2; return 1; }
    "${limit[@]}" 300 "$bench" -h 127.0.0.1 -p "$sport" -c 4 -t 1 -P 8 -u 1000 --preload \
        -m mix=query:80,bind:10,deliver:10 --warmup 0.2 -d 1 --drain 5
    kill -TERM "$server_pid"
    local rc=0
    wait "$server_pid" || rc=$?
    if ((rc != 0)); then
        cat "$tmp/bench-server.log" >&2
        echo "test.sh: server exited $rc after SIGTERM" >&2
        return 1
    fi
    kill "$redis_pid"
    wait "$redis_pid" || true
    pids=()
}

# Soak: mixed load on a 4-shard release server for soak_seconds while the cache Redis restarts
# and the queue Redis pauses; its closing line "soak: N passed, N failed" joins the totals.
soak_run() {
    local log=$tmp/soak.log rc=0
    "${limit[@]}" $((soak_seconds + 300)) build/release/tests/soak --seconds "$soak_seconds" 2>&1 | tee "$log" ||
        rc=$?
    local line
    line=$(grep -E '^soak: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 || true)
    if [[ $line =~ ^soak:\ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
        passed=$((passed + BASH_REMATCH[1]))
        failed=$((failed + BASH_REMATCH[2]))
        ((BASH_REMATCH[2] == 0 && rc == 0)) && return 0
    fi
    echo "test.sh: soak failed (exit $rc)" >&2
    ((BASH_REMATCH[2] > 0)) 2>/dev/null || failed=$((failed + 1))
    return 1
}

# fuzz_run NAME: run one libFuzzer target for fuzz_seconds on a temp copy of its seed corpus.
fuzz_run() {
    local name=$1 bin=build/fuzz/tests/fuzz/$1
    [[ -x $bin ]] || bin=$(find build/fuzz -type f -name "$name" -perm -u+x | head -n 1)
    if [[ -z $bin || ! -x $bin ]]; then
        echo "test.sh: fuzz target $name was not built" >&2
        return 1
    fi
    local corpus=$tmp/corpus-$name seeds=tests/fuzz/corpus/${name#fuzz_}
    mkdir -p "$corpus"
    [[ -d $seeds ]] || seeds=tests/fuzz/corpus/$name
    if [[ -d $seeds ]]; then
        cp -R "$seeds/." "$corpus/"
    else
        echo "test.sh: warning: no seed corpus for $name in tests/fuzz/corpus/" >&2
    fi
    local args=()
    local dict=tests/fuzz/${name#fuzz_}.dict
    [[ -f $dict ]] || dict=tests/fuzz/frame.dict
    [[ -f $dict ]] && args+=("-dict=$dict")
    mkdir -p build/fuzz/artifacts # crash inputs stay here for inspection
    local rc=0
    touch "$tmp/start-$name" # artifacts newer than this are from this run
    "${limit[@]}" $((fuzz_seconds + 300)) "${prefix[@]}" "$bin" -max_total_time="$fuzz_seconds" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="build/fuzz/artifacts/$name-" \
        "${args[@]}" "$corpus" || rc=$?
    if ((rc != 0)); then
        # CI keeps only the log: put the failing inputs in it.
        find build/fuzz/artifacts -name "$name-*" -newer "$tmp/start-$name" -type f | while read -r f; do
            echo "----- $f (hex)" >&2
            od -An -tx1 -v "$f" | head -n 256 >&2
        done
        return "$rc"
    fi
}

fuzz_all() {
    if [[ ! -f tests/fuzz/CMakeLists.txt ]]; then
        echo '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!' >&2
        echo '!!! FUZZING SKIPPED: tests/fuzz/CMakeLists.txt does not exist        !!!' >&2
        echo '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!' >&2
        return 0
    fi
    scripts/build.sh fuzz
    fuzz_run fuzz_frame
    fuzz_run fuzz_codec
}

versions() {
    echo "cores: $(nproc)  CI=${CI:-}"
    gcc --version | head -n 1
    clang --version | head -n 1
    cmake --version | head -n 1
    redis-server --version
}

step "install dependencies" scripts/install-deps.sh
step "tool versions" versions
aslr_workaround

step "build release" scripts/build.sh release
step "release: unit tests" criterion build/release/tests/unit_tests
step "release: integration tests" criterion build/release/tests/integration_tests
if bench_bin >/dev/null; then
    step "release: bench smoke" bench_smoke
fi
step "release: soak (${soak_seconds}s)" soak_run

step "build asan" scripts/build.sh asan
step "asan: unit tests" criterion build/asan/tests/unit_tests
step "asan: integration tests" criterion build/asan/tests/integration_tests

step "build tsan" scripts/build.sh tsan
step "tsan: integration tests" tsan_integration
step "tsan: ring stress" tsan_ring

step "fuzz: build + fuzz_frame, fuzz_codec" fuzz_all
