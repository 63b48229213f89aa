#!/usr/bin/env bash
# scripts/build.sh NAME [cmake args...] — configure and build into build/NAME with -Werror.
# NAME is a preset from CMakePresets.json (debug, release, asan, tsan, fuzz); any other NAME is a
# plain configure into build/NAME with just the given args.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/build.sh NAME [cmake args...]}
shift
if cmake --list-presets 2>/dev/null | grep -q "^ *\"$name\""; then
    cmake --preset "$name" -DPRESENCE_WERROR=ON "$@"
else
    cmake -S . -B "build/$name" -DPRESENCE_WERROR=ON "$@"
fi
cmake --build "build/$name" -j "$(nproc)"
