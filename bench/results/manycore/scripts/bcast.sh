#!/usr/bin/env bash
# Device: 16- and 8-rank broadcast of 1 and 64 MiB, weft (defaults) against Open MPI, 5 interleaved repeats.
set -u
out=${OUT:-/tmp/out}; mkdir -p "$out"
bin=${BIN:-.dev/build/bin}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
raw=$out/bcast.jsonl; : > "$raw"
for r in 1 2 3 4 5; do
  for np in ${NPS:-16 8}; do
    over=(); [ "$np" -gt "$(nproc)" ] && over=(--oversubscribe)
    timeout 30 "$bin/weft" run -n "$np" --no-prefix --transport shm -- \
      "$bin/weft" bench broadcast --latency --json -n 10 -w 2 -b 1M -e 64M -f 64 \
      | sed -n "s/^{/{\"tag\":\"weft\",\"np\":$np,/p" >> "$raw"
    timeout 30 mpirun "${over[@]}" -np "$np" --mca pml ob1 --mca btl vader,self "$bin/bench_mpi" broadcast -n 10 -b 1M -e 64M -f 64 \
      | sed -n "s/^{/{\"tag\":\"openmpi\",\"np\":$np,/p" >> "$raw"
  done
done
python3 - "$raw" <<'PY'
import json, statistics, sys, collections
g = collections.defaultdict(list)
for l in open(sys.argv[1]):
    r = json.loads(l); g[(r["np"], int(r["size"]), r["tag"])].append(float(r["p50_us"]))
for k in sorted(g):
    v = g[k]; print(k, "p50 %.1f (%.1f-%.1f) n=%d" % (statistics.median(v), min(v), max(v), len(v)))
PY
