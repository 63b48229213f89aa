#!/usr/bin/env bash
# Install the Debian 12 packages im-presence needs to build, run and test — only those missing.
# Idempotent: when everything is present it touches nothing (no apt-get update, no sudo).
set -euo pipefail

packages=(
    build-essential cmake pkg-config            # toolchain
    libhiredis-dev libev-dev                    # Redis client, event loop
    libprotobuf-c-dev protobuf-c-compiler       # wire messages
    libck-dev libinih-dev                       # SPSC rings, config file
    libcriterion-dev                            # unit and integration tests
    redis-server redis-tools                    # tests and scripts/run.sh start their own redis-server
    libzookeeper-mt-dev                         # [zookeeper] discovery: the C client (multi-threaded)
    zookeeper                                   # the server's jars (no service): tests start their own (pulls a JRE)
    clang libclang-rt-14-dev                    # libFuzzer targets (and sanitizer runtimes)
    jq                                          # bench/run.sh reads the load generator's JSON
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
    echo "install-deps: all ${#packages[@]} packages already installed"
    exit 0
fi

sudo=()
if ((EUID != 0)); then
    command -v sudo >/dev/null || { echo "install-deps: not root and no sudo; install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi

echo "install-deps: installing ${missing[*]}"

# Keep the redis-server package from starting its own service during the install: the tests and
# scripts/run.sh start redis themselves, and on a machine without a working init system the start
# could fail and abort the install. Only a policy file we created ourselves is removed again.
policy=/usr/sbin/policy-rc.d
made_policy=0
cleanup() { if ((made_policy)); then "${sudo[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# temporary, from im-presence scripts/install-deps.sh\nexit 101\n' |
        "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    made_policy=1
fi

"${sudo[@]}" apt-get update || echo "install-deps: warning: apt-get update failed; trying the install anyway" >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"
