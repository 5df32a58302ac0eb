#!/usr/bin/env bash
# Runs weft side by side with Open MPI and Gloo on this machine, interleaved (A B A B ...) and
# repeated, and writes a markdown table, a JSON summary and PNG plots (medians with min-max):
#   float32 sum all-reduce, 2 and 4 ranks, shared memory and TCP over loopback, 8 B .. 256 MiB;
#   broadcast, all-gather and reduce-scatter at 1 MiB and 64 MiB (--pairs back-to-back pairs of
#   runs, default 5); the machine's limits (memory bandwidth with two streams, loopback TCP
#   throughput).
#   scripts/bench.sh [--repeats N] [--pairs N] [--quick] [--out DIR] [--ucx] [--netns [RATE]] [--baseline-cc CC]
# --ucx adds weft over UCX against Open MPI's pml ucx with the same UCX_TLS (scripts/bench_ucx.sh,
# into OUT/ucx.md); --netns adds the multi-host run over network namespaces, hierarchical against
# the flat ring (scripts/bench_netns.sh into OUT/netns, links shaped to RATE when given, e.g.
# 2gbit). Each adds a few minutes to the run. --baseline-cc sets TCP congestion control CC (e.g.
# cubic, what weft's TCP transport uses on loopback) on Open MPI's and Gloo's sockets through a
# preload library (bench/cc_preload.cc); by default they keep the host's.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=3
cell_repeats=5
max=256M
out=bench/results/latest
ucx=0
netns=0
netns_rate=""
baseline_cc=""
while [ $# -gt 0 ]; do
  case "$1" in
    --ucx) ucx=1; shift ;;
    --netns)
      netns=1
      if [ $# -gt 1 ] && [[ "$2" == *bit ]]; then netns_rate=$2; shift; fi
      shift ;;
    --repeats) repeats=$2; shift 2 ;;
    --quick) repeats=1; cell_repeats=1; max=16M; shift ;;
    --pairs) cell_repeats=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --baseline-cc) baseline_cc=$2; shift 2 ;;
    *) echo "usage: scripts/bench.sh [--repeats N] [--pairs N] [--quick] [--out DIR] [--ucx] [--netns [RATE]] [--baseline-cc CC]" >&2
       exit 2 ;;
  esac
done

scripts/setup.sh bench
scripts/build.sh
bin=build/bin
mkdir -p "$out"
raw="$out/raw.jsonl"
: > "$raw"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Open MPI in its usual single-node configuration (ob1 with the shared-memory or TCP BTL), so the
# UCX PML installed for other benchmarks does not take over.
mpi_shm=(mpirun --oversubscribe -np NP --mca pml ob1 --mca btl vader,self)
mpi_tcp=(mpirun --oversubscribe -np NP --mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include lo)
gloo_env=()
if [ -n "$baseline_cc" ]; then
  preload="$PWD/$bin/libbench_cc_preload.so"
  mpi_tcp+=(-x "LD_PRELOAD=$preload" -x "WEFT_BENCH_BASELINE_CC=$baseline_cc")
  gloo_env=(env "LD_PRELOAD=$preload" "WEFT_BENCH_BASELINE_CC=$baseline_cc")
fi
export BENCH_BASELINE_CC="$baseline_cc"  # for the report
sweep=(-b 8 -e "$max" -f 2)

# Adds the transport and repeat to each JSON line a program prints.
# (PHASE, when set, is recorded too: the paired runs carry "phase":"pairs".)
tag() { sed -n "s/^{/{\"transport\":\"$1\",\"repeat\":$2,${PHASE:+\"phase\":\"$PHASE\",}/p" >> "$raw"; }

weft_run() {  # np transport repeat collective args...
  local np=$1 t=$2 r=$3 coll=$4; shift 4
  timeout 600 "$bin/weft" run -n "$np" --no-prefix --transport "$t" -- \
    "$bin/weft" bench "$coll" --latency --json -n 10 -w 3 "$@" | tag "$t" "$r"
}
mpi_run() {  # np transport repeat collective args...
  local np=$1 t=$2 r=$3 coll=$4; shift 4
  local cmd
  if [ "$t" = shm ]; then cmd=("${mpi_shm[@]}"); else cmd=("${mpi_tcp[@]}"); fi
  cmd=("${cmd[@]/NP/$np}")
  timeout 600 "${cmd[@]}" "$bin/bench_mpi" "$coll" -n 10 "$@" | tag "$t" "$r"
}
gloo_run() {  # np repeat collective args...
  local np=$1 r=$2 coll=$3; shift 3
  local dir
  dir=$(mktemp -d)
  local pids=()
  for ((i = 0; i < np; i++)); do
    timeout 600 "${gloo_env[@]}" "$bin/bench_gloo" "$i" "$np" "$dir" "$coll" -n 10 "$@" > "$dir/out.$i" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  tag tcp "$r" < "$dir/out.0"
  rm -rf "$dir"
}

echo "bench: limits"
for r in $(seq "$repeats"); do
  "$bin/bench_membw" 2 64 5 | tag none "$r"
  "$bin/bench_tcp_throughput" 1 256 3 | tag tcp "$r"
  "$bin/bench_tcp_throughput" 4 256 3 | tag tcp "$r"
  "$bin/bench_tcp_throughput" 1 64 3 cubic bidi | tag tcp "$r"
done

for r in $(seq "$repeats"); do
  # Where the host has put the two vCPUs right now (every intra-host number moves with it).
  "$bin/bench_cacheline" | tag none "$r"
  for np in 2 4; do
    echo "bench: repeat $r/$repeats, all-reduce, $np ranks"
    weft_run "$np" shm "$r" allreduce "${sweep[@]}"
    mpi_run "$np" shm "$r" allreduce "${sweep[@]}"
    weft_run "$np" tcp "$r" allreduce "${sweep[@]}"
    mpi_run "$np" tcp "$r" allreduce "${sweep[@]}"
    gloo_run "$np" "$r" allreduce "${sweep[@]}"
  done
done

# Broadcast, all-gather and reduce-scatter at 1 MiB and 64 MiB: each cell is a pair of short runs
# back to back, repeated (cell_repeats, the library that goes first alternating), so that every
# pair sees the host in one state and the report can take the median of the pairs' ratios.
for r in $(seq "$cell_repeats"); do
  echo "bench: pair $r/$cell_repeats, broadcast / all-gather / reduce-scatter"
  "$bin/bench_cacheline" | tag cells "$r"
  # The 8-byte all-reduce of 2 ranks, the latency targets, as pairs too (2000 timed iterations).
  for t in shm tcp; do
    if ((r % 2)); then
      PHASE=pairs weft_run 2 "$t" "$r" allreduce -b 8 -e 8 -n 200
      PHASE=pairs mpi_run 2 "$t" "$r" allreduce -b 8 -e 8 -n 200
    else
      PHASE=pairs mpi_run 2 "$t" "$r" allreduce -b 8 -e 8 -n 200
      PHASE=pairs weft_run 2 "$t" "$r" allreduce -b 8 -e 8 -n 200
    fi
  done
  for np in 2 4; do
    for coll in broadcast allgather reducescatter; do
      # MPI_Bcast has one buffer: the comparable weft call is the in-place broadcast (out of
      # place, the root would also copy its input to its output).
      place=()
      if [ "$coll" = broadcast ]; then place=(--in-place); fi
      for t in shm tcp; do
        if ((r % 2)); then
          weft_run "$np" "$t" "$r" "$coll" -b 1M -e 64M -f 64 -n 20 "${place[@]}"
          mpi_run "$np" "$t" "$r" "$coll" -b 1M -e 64M -f 64 -n 20
        else
          mpi_run "$np" "$t" "$r" "$coll" -b 1M -e 64M -f 64 -n 20
          weft_run "$np" "$t" "$r" "$coll" -b 1M -e 64M -f 64 -n 20 "${place[@]}"
        fi
      done
    done
  done
done

python3 scripts/bench_report.py "$out"
echo "bench: wrote $out/report.md, $out/summary.json and $out/*.png"

if [ "$ucx" = 1 ]; then
  echo "bench: weft over UCX vs Open MPI pml ucx"
  REPEATS=$repeats scripts/bench_ucx.sh > "$out/ucx.md"
  echo "bench: wrote $out/ucx.md"
fi
if [ "$netns" = 1 ]; then
  echo "bench: multi-host over network namespaces"
  scripts/bench_netns.sh --repeats "$repeats" --out "$out/netns" ${netns_rate:+--link-rate "$netns_rate"}
fi
