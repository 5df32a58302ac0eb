#!/usr/bin/env bash
# weft against Open MPI over shared memory with many ranks on one host: float32 sum all-reduce from
# 8 B to 64 MiB at each rank count of --ranks (default 8 and 16), the two libraries interleaved
# (weft, Open MPI, weft, ...) over --repeats repeats, medians with min-max; the machine's memory
# bandwidth with as many streams as ranks, as the limit. Writes OUT/report.md (one table per rank
# count and the verdict: weft's busbw at 64 MiB against 3x Open MPI's) and OUT/raw.jsonl.
#
#   scripts/bench_manycore.sh [--ranks "8 16"] [--repeats N] [--iters N] [--out DIR]
#                             [--build DIR] [--no-build] [--small]
#
# Meant for a machine with many cores and no gRPC or Gloo (it builds the core only, into
# build-manycore/ unless --build says otherwise: WEFT_WITH_GRPC=OFF, no tests), e.g. the 16-core
# GPU machine of the performance issue. It needs cmake, a C++20 compiler, Open MPI (mpirun and
# its headers) and python3; where they are missing it installs them with apt-get. --no-build uses
# the binaries already in --build; --small runs 8 B to 32 KiB only (a smoke test). A rank count
# above the CPUs runs oversubscribed (both libraries), and the report says so.
set -euo pipefail
cd "$(dirname "$0")/.."

ranks="8 16"
repeats=3
iters=20
out=bench/results/manycore
build=build-manycore
do_build=1
small=0
usage="usage: scripts/bench_manycore.sh [--ranks \"8 16\"] [--repeats N] [--iters N] [--out DIR] [--build DIR] [--no-build] [--small]"
while [ $# -gt 0 ]; do
  case "$1" in
    --ranks) ranks=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --small) small=1; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
for n in $ranks; do
  if ! [[ "$n" =~ ^[0-9]+$ ]] || [ "$n" -lt 2 ]; then
    echo "bench_manycore.sh: --ranks wants rank counts of 2 or more, got '$n'" >&2
    exit 2
  fi
done
for v in "$repeats" "$iters"; do
  if ! [[ "$v" =~ ^[0-9]+$ ]] || [ "$v" -lt 1 ]; then
    echo "bench_manycore.sh: --repeats and --iters want a positive number, got '$v'" >&2
    exit 2
  fi
done

if [ "$do_build" = 1 ]; then
  missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  command -v g++ >/dev/null || missing+=(g++)
  command -v mpirun >/dev/null || missing+=(openmpi-bin)
  command -v mpicxx >/dev/null || missing+=(libopenmpi-dev)
  command -v python3 >/dev/null || missing+=(python3)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bench_manycore.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWEFT_WITH_GRPC=OFF \
    -DWEFT_BUILD_TESTS=OFF >/dev/null
  cmake --build "$build" -j "$(nproc)" --target weft bench_mpi bench_membw >/dev/null
fi
bin=$build/bin
for f in weft bench_mpi bench_membw; do
  if [ ! -x "$bin/$f" ]; then
    echo "bench_manycore.sh: $bin/$f is missing (build without --no-build, with Open MPI installed)" >&2
    exit 2
  fi
done

mkdir -p "$out"
raw="$out/raw.jsonl"
: > "$raw"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cpus=$(nproc)
# Two sweeps so that the table ends exactly at 64 MiB: 8 B .. 2 MiB by 8x, then 16 and 64 MiB.
if [ "$small" = 1 ]; then sweeps=("-b 8 -e 64K -f 8"); else sweeps=("-b 8 -e 2M -f 8" "-b 16M -e 64M -f 4"); fi

tag() {  # lib-independent: adds the rank count and repeat to each JSON line
  sed -n "s/^{/{\"np\":$1,\"repeat\":$2,/p" >> "$raw"
}
weft_run() {  # np repeat
  local sweep
  for sweep in "${sweeps[@]}"; do
    # shellcheck disable=SC2086
    timeout 900 "$bin/weft" run -n "$1" --no-prefix --transport shm -- \
      "$bin/weft" bench allreduce --latency --json -n "$iters" -w 3 $sweep | tag "$1" "$2"
  done
}
mpi_run() {  # np repeat
  local sweep over=()
  if [ "$1" -gt "$cpus" ]; then over=(--oversubscribe); fi
  for sweep in "${sweeps[@]}"; do
    # shellcheck disable=SC2086
    timeout 900 mpirun "${over[@]}" -np "$1" --mca pml ob1 --mca btl vader,self \
      "$bin/bench_mpi" allreduce -n "$iters" $sweep | tag "$1" "$2"
  done
}

echo "bench_manycore: $cpus CPUs, ranks: $ranks, $repeats repeats, $iters iterations a size"
for n in $ranks; do
  "$bin/bench_membw" "$n" 64 3 | tag "$n" 0
done
for r in $(seq "$repeats"); do
  for n in $ranks; do
    echo "bench_manycore: repeat $r/$repeats, $n ranks"
    # The library that goes first alternates, so neither always meets a warmer machine.
    if ((r % 2)); then weft_run "$n" "$r"; mpi_run "$n" "$r"; else mpi_run "$n" "$r"; weft_run "$n" "$r"; fi
  done
done

python3 - "$raw" "$cpus" "$repeats" "$iters" > "$out/report.md" <<'EOF'
import json, statistics, sys
raw, cpus, repeats, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(l) for l in open(raw) if l.startswith("{")]

def size_name(b):
    for unit, div in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= div and b % div == 0:
            return f"{b // div} {unit}"
    return f"{b} B"

def cell(v, fmt):
    if not v:
        return "—"
    return f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))}–{fmt.format(max(v))})"

print(f"# weft against Open MPI, shared memory, many ranks\n")
print(f"float32 sum all-reduce, `scripts/bench_manycore.sh`, {cpus} CPUs, {repeats} interleaved "
      f"repeats of {iters} timed iterations a size; p50 per iteration of the slowest rank, "
      "busbw as nccl-tests defines it, medians with min–max; Open MPI with ob1 and vader "
      "(its shared-memory default), each library launched its own default way.\n")
verdicts = []
for n in sorted({r["np"] for r in rows}):
    membw = [r for r in rows if r["np"] == n and r.get("lib") == "membw"]
    weft = [r for r in rows if r["np"] == n and r.get("collective") == "allreduce"
            and r.get("lib", "weft") == "weft"]
    mpi = [r for r in rows if r["np"] == n and r.get("lib") == "openmpi"]
    note = " (oversubscribed)" if n > cpus else ""
    print(f"## {n} ranks{note}\n")
    if membw:
        m = membw[0]
        print(f"Memory bandwidth, {n} streams: copy {m['copy_gbps']:.1f} GB/s per stream "
              f"({m['copy_gbps'] * n:.1f} GB/s together).\n")
    print("| size | weft p50 µs | Open MPI p50 µs | weft busbw GB/s | Open MPI busbw GB/s | weft / Open MPI |")
    print("|---:|---:|---:|---:|---:|---:|")
    for s in sorted({int(r["size"]) for r in weft + mpi}):
        wl = [float(r["p50_us"]) for r in weft if int(r["size"]) == s]
        ml = [float(r["p50_us"]) for r in mpi if int(r["size"]) == s]
        wb = [float(r["busbw"]) for r in weft if int(r["size"]) == s]
        mb = [float(r["busbw"]) for r in mpi if int(r["size"]) == s]
        ratio = f"{statistics.median(ml) / statistics.median(wl):.2f}×" if wl and ml else "—"
        print(f"| {size_name(s)} | {cell(wl, '{:.2f}')} | {cell(ml, '{:.2f}')} | "
              f"{cell(wb, '{:.3f}')} | {cell(mb, '{:.3f}')} | {ratio} |")
    print()
    big = 64 << 20
    wb = [float(r["busbw"]) for r in weft if int(r["size"]) == big]
    mb = [float(r["busbw"]) for r in mpi if int(r["size"]) == big]
    if wb and mb:
        w, m = statistics.median(wb), statistics.median(mb)
        ok = "met" if w >= 3 * m else "MISSED"
        verdicts.append(f"- {ok}: {n} ranks: busbw at 64 MiB >= 3x Open MPI — {w / m:.2f}x "
                        f"({w:.2f} vs {m:.2f} GB/s){note}")
    if not weft or not mpi:
        verdicts.append(f"- {n} ranks: a library produced no results (weft {len(weft)} rows, "
                        f"Open MPI {len(mpi)})")
print("Targets:\n")
print("\n".join(verdicts) if verdicts else "- none judged (64 MiB not in this run)")
EOF
echo "bench_manycore: wrote $out/report.md and $out/raw.jsonl"
