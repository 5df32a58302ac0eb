#!/usr/bin/env bash
# weft over UCX vs Open MPI over UCX (pml ucx), same UCX_TLS, 2 ranks on this machine: all-reduce
# (float sum) from 8 B to 64 MiB, OSU-style per-iteration latency (p50) and nccl-tests busbw.
# The two runs of each repeat are interleaved (weft, Open MPI, weft, Open MPI, ...) so drifting
# machine load hits both alike; the table shows the median over repeats with min-max.
#
#   scripts/bench_ucx.sh                 # UCX_TLS=tcp and UCX_TLS=posix,cma,self, 3 repeats
#   REPEATS=5 TLS_LIST="tcp" BUILD=build-ucx scripts/bench_ucx.sh
#   SWEEPS="-b 8 -e 8;-b 64M -e 64M" BASE=build-old scripts/bench_ucx.sh   # 8 B and 64 MiB only,
#       with a third interleaved run of BASE/bin/weft (a baseline build) in its own columns
#
# Needs a build with the ucx transport (build/bin/weft) and the Open MPI baseline (build/bin/bench_mpi).
# ratio = weft busbw / Open MPI busbw (above 1: weft is faster; equals Open MPI p50 / weft p50).
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
REPEATS=${REPEATS:-3}
TLS_LIST=${TLS_LIST:-"tcp posix,cma,self"}
ITERS=${ITERS:-20}
WEFT="$BUILD/bin/weft"
MPI_BENCH="$BUILD/bin/bench_mpi"
# Two sweeps so the table ends exactly at 64 MiB: 8 B .. 2 MiB by 8x, then 16 MiB and 64 MiB.
# SWEEPS: ';'-separated `weft bench` size options replacing them.
IFS=';' read -r -a SWEEPS <<<"${SWEEPS:-"-b 8 -e 2M -f 8;-b 16M -e 64M -f 4"}"
BASE=${BASE:-}

for f in "$WEFT" "$MPI_BENCH" ${BASE:+"$BASE/bin/weft"}; do
  if [ ! -x "$f" ]; then
    echo "bench_ucx.sh: $f is missing; build with UCX and Open MPI (scripts/setup.sh bench)" >&2
    exit 2
  fi
done
if ! "$WEFT" env 2>/dev/null | grep -q WEFT_UCX_; then
  echo "bench_ucx.sh: $WEFT was built without the ucx transport (WEFT_WITH_UCX=OFF)" >&2
  exit 2
fi

OUT=$(mktemp -d /tmp/weft-bench-ucx.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

run_weft() {  # tls repeat [binary name]
  local bin=${3:-$WEFT} name=${4:-weft}
  for sweep in "${SWEEPS[@]}"; do
    # shellcheck disable=SC2086
    timeout 600 "$bin" run -n 2 --transport ucx --no-prefix --env "UCX_TLS=$1" -- \
      "$bin" bench allreduce --latency --json -n "$ITERS" $sweep
  done | grep '^{' >"$OUT/$name.$1.$2.json" || true
}

run_mpi() {  # tls repeat
  for sweep in "${SWEEPS[@]}"; do
    # shellcheck disable=SC2086
    timeout 600 mpirun --allow-run-as-root --oversubscribe -np 2 --bind-to none \
      --mca pml ucx --mca pml_ucx_tls any --mca pml_ucx_devices any -x "UCX_TLS=$1" \
      "$MPI_BENCH" allreduce -n "$ITERS" $sweep 2>/dev/null
  done | grep '^{' >"$OUT/mpi.$1.$2.json" || true
}

echo "weft over UCX vs Open MPI pml ucx: all-reduce, float sum, 2 ranks, $REPEATS interleaved" \
     "repeats, $ITERS iterations per size; $(date -u +%Y-%m-%d), $(nproc) CPUs"
for tls in $TLS_LIST; do
  for r in $(seq 1 "$REPEATS"); do
    echo "  UCX_TLS=$tls repeat $r/$REPEATS: weft ..." >&2
    run_weft "$tls" "$r"
    echo "  UCX_TLS=$tls repeat $r/$REPEATS: Open MPI ..." >&2
    run_mpi "$tls" "$r"
    if [ -n "$BASE" ]; then
      echo "  UCX_TLS=$tls repeat $r/$REPEATS: weft baseline ($BASE) ..." >&2
      run_weft "$tls" "$r" "$BASE/bin/weft" base
    fi
  done
done

python3 - "$OUT" "$REPEATS" "$BASE" $TLS_LIST <<'EOF'
import json, statistics, sys
out, repeats, base, tls_list = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]

def load(lib, tls):
    runs = []
    for r in range(1, repeats + 1):
        rows = {}
        try:
            for line in open(f"{out}/{lib}.{tls}.{r}.json"):
                try:
                    j = json.loads(line)
                except ValueError:
                    continue
                if j.get("collective") == "allreduce":
                    rows[int(j["size"])] = (float(j["p50_us"]), float(j["busbw"]))
        except FileNotFoundError:
            pass
        runs.append(rows)
    return runs

def cell(values, fmt):
    if not values:
        return "—"
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"

def size_name(b):
    for unit, div in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= div and b % div == 0:
            return f"{b // div} {unit}"
    return f"{b} B"

for tls in tls_list:
    weft, mpi, old = load("weft", tls), load("mpi", tls), load("base", tls)
    sizes = sorted(set().union(*[set(r) for r in weft + mpi]))
    print(f"\n### UCX_TLS={tls}\n")
    extra = " baseline p50 (µs) | baseline busbw (GB/s) |" if base else ""
    print("| size | weft p50 (µs) | Open MPI p50 (µs) | weft busbw (GB/s) | Open MPI busbw (GB/s) | ratio |" + extra)
    print("|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if base else ""))
    for s in sizes:
        wl = [r[s][0] for r in weft if s in r]
        ml = [r[s][0] for r in mpi if s in r]
        wb = [r[s][1] for r in weft if s in r]
        mb = [r[s][1] for r in mpi if s in r]
        ratio = "—"
        if wl and ml:
            ratio = f"{statistics.median(ml) / statistics.median(wl):.2f}×"
        row = (f"| {size_name(s)} | {cell(wl, '{:.1f}')} | {cell(ml, '{:.1f}')} | "
               f"{cell(wb, '{:.3f}')} | {cell(mb, '{:.3f}')} | {ratio} |")
        if base:
            ol = [r[s][0] for r in old if s in r]
            ob = [r[s][1] for r in old if s in r]
            row += f" {cell(ol, '{:.1f}')} | {cell(ob, '{:.3f}')} |"
        print(row)
EOF
