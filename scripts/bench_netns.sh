#!/usr/bin/env bash
# Multi-host all-reduce and all-gather benchmark on one machine: 3 network namespaces as "hosts"
# x 2 ranks each, the same layout as tests/netns (each host has one veth link to a bridge living in
# a "switch" namespace of its own, so the root namespace gains no interface, address or route and
# all traffic stays between the namespaces this script creates). Needs root and iproute2.
# Runs, interleaved (A B A B ...) and repeated, float32 all-reduce (sum) and all-gather, 1 MiB ..
# 64 MiB (x4), with the tuner's choice (hierarchical when ranks span hosts) and with WEFT_ALGO=ring
# (flat ring), WEFT_TRANSPORT=shm,tcp; writes raw JSON lines, the tuner's --explain output and a
# markdown table (medians with min-max over the repeats) to OUT (default bench/results/netns).
# --link-rate RATE (tc rate: 1gbit, 2gbit, 500mbit) shapes each host's link in both directions
# with a token bucket (tc tbf), so crossing hosts costs what it does on a real cluster's network
# rather than a memcpy on the same two cores (unshaped veth runs as fast as shared memory here).
#   scripts/bench_netns.sh [--repeats N] [--iters N] [--link-rate RATE] [--out DIR] [--bin DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=3
iters=10
out=bench/results/netns
bin=${WEFT_BIN_DIR:-build/bin}
rate=""
while [ $# -gt 0 ]; do
  case "$1" in
    --repeats) repeats=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --link-rate) rate=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    *) echo "usage: scripts/bench_netns.sh [--repeats N] [--iters N] [--link-rate RATE] [--out DIR] [--bin DIR]" >&2
       exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "bench_netns: needs root to create network namespaces" >&2; exit 1; }
[ -x "$bin/weft" ] || { echo "bench_netns: $bin/weft not built" >&2; exit 1; }
bin=$(cd "$bin" && pwd)

hosts=3
per_host=2
world=$((hosts * per_host))
# Namespace names carry this script's pid, as the test harness's do (weftlab-<pid>-...).
prefix="weftbench-$$"
sw="$prefix-sw"
created=()
pids=()
tmp=$(mktemp -d)
cleanup() {
  local i
  for i in "${pids[@]}"; do kill -9 "$i" 2>/dev/null || true; done
  for ((i = ${#created[@]} - 1; i >= 0; i--)); do ip netns delete "${created[$i]}" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$sw"; created+=("$sw")
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
for ((h = 0; h < hosts; h++)); do
  ns="$prefix-h$h"
  ip netns add "$ns"; created+=("$ns")
  # Both veth ends are created directly inside their namespaces.
  ip link add weft0 netns "$ns" type veth peer name "port$h" netns "$sw"
  ip -n "$sw" link set "port$h" master br0
  ip -n "$sw" link set "port$h" up
  ip -n "$ns" addr add "10.213.0.$((1 + h))/24" dev weft0
  ip -n "$ns" link set weft0 up
  ip -n "$ns" link set lo up
  if [ -n "$rate" ]; then
    # Token bucket on both ends of the host's link (host -> switch and switch -> host). The
    # bucket holds 4 ms of traffic (at least 64 KiB, so a whole GSO segment always fits).
    bits=$(python3 -c "
import re, sys
m = re.fullmatch(r'([0-9.]+)([kmg]?)bit', sys.argv[1].lower())
if not m: sys.exit('bench_netns: --link-rate wants a tc rate such as 2gbit or 500mbit')
print(int(float(m[1]) * {'': 1, 'k': 1e3, 'm': 1e6, 'g': 1e9}[m[2]]))" "$rate")
    burst=$(( bits / 8 / 250 > 65536 ? bits / 8 / 250 : 65536 ))
    ip netns exec "$ns" tc qdisc add dev weft0 root tbf rate "$rate" burst "$burst" latency 50ms
    ip netns exec "$sw" tc qdisc add dev "port$h" root tbf rate "$rate" burst "$burst" latency 50ms
  fi
done

port=29500
# Runs `weft ARGS...` on all ranks (rank r on host r / per_host); rank 0's stdout to $1.
# Extra environment (e.g. WEFT_ALGO=ring) comes in $2 as "K=V K=V".
run_job() {
  local out_file=$1 extra=$2; shift 2
  port=$((port + 1))  # a fresh port each job: no TIME_WAIT collisions on the store
  local r
  pids=()
  for ((r = 0; r < world; r++)); do
    # shellcheck disable=SC2086
    env -u WEFT_ALGO -u WEFT_HOST_ID -u WEFT_STORE -u WEFT_RANK \
      RANK=$r WORLD_SIZE=$world LOCAL_RANK=$((r % per_host)) MASTER_ADDR=10.213.0.1 \
      MASTER_PORT=$port WEFT_INIT_TIMEOUT_MS=30000 WEFT_TIMEOUT_MS=60000 \
      WEFT_TRANSPORT=shm,tcp $extra \
      timeout 600 ip netns exec "$prefix-h$((r / per_host))" "$bin/weft" "$@" \
      > "$tmp/out.$r" 2>&1 &
    pids+=($!)
  done
  local rc=0
  for r in "${!pids[@]}"; do wait "${pids[$r]}" || { rc=$?; echo "bench_netns: rank $r failed ($rc):" >&2; tail -5 "$tmp/out.$r" >&2; }; done
  pids=()
  cp "$tmp/out.0" "$out_file"
  return $rc
}

mkdir -p "$out"
raw="$out/raw.jsonl"
: > "$raw"
sweep=(-b 1M -e 64M -f 4)

echo "bench_netns: tuner's choice (--explain)"
run_job "$out/explain.txt" "" bench allreduce --latency --explain "${sweep[@]}" -n 3 -w 1 -c 1
cat "$out/explain.txt"

run_job "$tmp/explain.ag" "" bench allgather --latency --explain "${sweep[@]}" -n 3 -w 1 -c 1
cat "$tmp/explain.ag" >> "$out/explain.txt"

for ((rep = 1; rep <= repeats; rep++)); do
  for coll in allreduce allgather; do
    for variant in default ring; do
      echo "bench_netns: repeat $rep/$repeats, $coll, $variant"
      extra=""
      [ "$variant" = ring ] && extra="WEFT_ALGO=ring"
      run_job "$tmp/job.out" "$extra" bench "$coll" --latency --json "${sweep[@]}" \
        -n "$iters" -w 3 -c 0
      sed -n "s/^{/{\"variant\":\"$variant\",\"repeat\":$rep,\"hosts\":$hosts,\"ranks_per_host\":$per_host,/p" \
        "$tmp/job.out" >> "$raw"
    done
  done
done

python3 - "$raw" "$out/report.md" "$out/explain.txt" "$rate" <<'EOF'
import json, statistics, sys
from collections import defaultdict
raw, report, explain, rate = sys.argv[1:5]
rows = defaultdict(list)
algo = defaultdict(set)
for line in open(raw):
    j = json.loads(line)
    rows[(j["collective"], j["variant"], j["size"])].append(j["p50_us"])
    algo[(j["collective"], j["variant"])].add(j["algo"])
def fmt(v):
    return f"{statistics.median(v):,.0f} ({min(v):,.0f}–{max(v):,.0f})"
def mib(b):
    return f"{b / 2**20:.3g} MiB"
reps = max(len(v) for v in rows.values())
lines = [
    "# Multi-host collectives over network namespaces: hierarchical vs flat",
    "",
    f"3 namespace hosts × 2 ranks (6 ranks), WEFT_TRANSPORT=shm,tcp (shm inside a host, TCP over "
    f"veth + bridge across"
    + (f", each host's link shaped to {rate} both ways with tc tbf" if rate else ", links unshaped")
    + f"), float32 (all-reduce: sum), `weft bench COLLECTIVE --latency`, p50 per "
    f"run; medians over {reps} interleaved repeats with min–max. Default = the tuner's choice; "
    f"flat = WEFT_ALGO=ring (flat ring all-reduce and all-gather). Size = the all-reduce buffer or "
    f"the whole gathered buffer. Speed-up = flat p50 / default p50 (medians).",
]
for coll in ("allreduce", "allgather"):
    sizes = sorted({s for c, _, s in rows if c == coll})
    if not sizes:
        continue
    lines += ["", f"## {coll} (default reported: {', '.join(sorted(algo[(coll, 'default')]))}; "
                  f"flat: {', '.join(sorted(algo[(coll, 'ring')]))})", "",
              "| size | default p50 µs | flat p50 µs | speed-up |", "|---:|---:|---:|---:|"]
    for s in sizes:
        h, r = rows.get((coll, "default", s), []), rows.get((coll, "ring", s), [])
        if not h or not r:
            continue
        lines.append(f"| {mib(s)} | {fmt(h)} | {fmt(r)} | "
                     f"{statistics.median(r) / statistics.median(h):.2f}× |")
lines += ["", "Tuner (`weft bench allreduce|allgather --latency --explain`, rank 0):", "", "```"]
lines += [l.rstrip() for l in open(explain) if l.startswith("# explain")]
lines += ["```", ""]
open(report, "w").write("\n".join(lines))
print("\n".join(lines))
EOF
echo "bench_netns: wrote $raw, $out/explain.txt and $out/report.md"
