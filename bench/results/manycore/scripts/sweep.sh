#!/usr/bin/env bash
# Device sweep of the intra-host all-reduce knobs at 8 and 16 ranks (carried binaries).
set -u
out=${OUT:-/tmp/out}
mkdir -p "$out"
exec > >(tee "$out/sweep_log.txt") 2>&1
bin=${BIN:-.dev/build/bin}
nps=${NPS:-"8 16"}
reps=${REPS:-3}
big=${BIG:-"-b 16M -e 64M -f 4"}
small=${SMALL:-"-b 512 -e 32K -f 2"}
chunks=${CHUNKS:-"64K 128K 256K 512K 1M"}
raw=$out/sweep.jsonl
: > "$raw"
ldd "$bin/weft" | grep 'not found'
t0=$(date +%s)
one() {  # tag np env... -- bench args
  local tag=$1 np=$2; shift 2
  local envs=()
  while [ "$1" != -- ]; do envs+=(--env "$1"); shift; done
  shift
  # shellcheck disable=SC2068
  timeout 120 "$bin/weft" run -n "$np" --no-prefix --transport shm ${envs[@]} -- \
    "$bin/weft" bench allreduce --latency --json "$@" \
    | sed -n "s/^{/{\"tag\":\"$tag\",\"np\":$np,/p" >> "$raw"
}
for r in $(seq "$reps"); do
  echo "[$(( $(date +%s) - t0 )) s] repeat $r"
  for np in $nps; do
    for d in 16K 0; do
      # shellcheck disable=SC2086
      one "direct=$d" "$np" "WEFT_SHM_COLL_DIRECT_MAX_BYTES=$d" -- -n 20 -w 3 $small
    done
    for c in $chunks; do
      for s in 8M 0; do
        # shellcheck disable=SC2086
        one "chunk=$c,stream=$s" "$np" "WEFT_SHM_COLL_CHUNK_BYTES=$c" \
          "WEFT_SHM_COLL_STREAMING_MIN_BYTES=$s" -- -n 10 -w 2 $big
      done
    done
  done
done
echo "[$(( $(date +%s) - t0 )) s] done"
python3 - "$raw" <<'EOF'
import json, statistics, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1])]
g = collections.defaultdict(list)
for r in rows:
    g[(r["np"], int(r["size"]), r["tag"])].append(float(r["p50_us"]))
last = None
for (np, size, tag), v in sorted(g.items()):
    if (np, size) != last:
        print(f"-- np {np} size {size}")
        last = (np, size)
    print(f"   {tag:24s} p50 {statistics.median(v):10.2f} us  ({min(v):.2f}-{max(v):.2f}, n={len(v)})")
EOF
