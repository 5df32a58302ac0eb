#!/usr/bin/env bash
# The main job: installs what is missing, builds, and trains the reference MLP on Fashion-MNIST on
# 4 ranks through `weft run`: the planner splits them into 2 pipeline stages x 2 data-parallel
# replicas for clusters/demo-2x2.json (two hosts of two chips joined by Ethernet, which is how the
# 4 local ranks are described to it). Prints loss and test accuracy per epoch, then throughput and
# the time split. Extra arguments go to `weft train`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec build/bin/weft run -n 4 -- build/bin/weft train --cluster clusters/demo-2x2.json --epochs 3 "$@"
