#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite. Exits non-zero on any failure.
#   scripts/test.sh                 everything
#   scripts/test.sh -R collectives  extra arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cd "${WEFT_BUILD_DIR:-build}"
# Sequential on purpose: the fault tests bound how fast errors surface, and the multi-rank tests
# already oversubscribe two cores.
ctest --output-on-failure --timeout 600 "$@"
