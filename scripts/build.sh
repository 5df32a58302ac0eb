#!/usr/bin/env bash
# Configures and builds weft into build/ (or $WEFT_BUILD_DIR) with two jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${WEFT_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE:-RelWithDebInfo} "$@" >/dev/null
cmake --build "$build_dir" -j2
