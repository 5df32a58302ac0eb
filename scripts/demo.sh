#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs a 4-rank all-reduce benchmark through
# `weft run` (shared memory between the ranks), checking every result.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec build/bin/weft run -n 4 -- build/bin/weft bench allreduce -b 8 -e 64M -f 4 -n 10 -w 3 "$@"
