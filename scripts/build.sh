#!/usr/bin/env bash
# Configures and builds kiln into build/ (Release) or the directory and
# options given: scripts/build.sh build-asan -DKILN_SANITIZE=ON
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$dir" -j "$(nproc)"
