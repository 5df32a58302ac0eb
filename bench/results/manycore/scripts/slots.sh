#!/usr/bin/env bash
# Device: arena slot size 1M / 512K / 256K for all-reduce (64 MiB), broadcast and reduce-scatter
# (1 and 64 MiB) at 8 and 16 ranks, Open MPI's all-reduce of 64 MiB beside them; interleaved.
set -u
out=${OUT:-/tmp/out}
mkdir -p "$out"
exec > >(tee "$out/slots_log.txt") 2>&1
bin=${BIN:-.dev/build/bin}
t0=$(date +%s)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
raw=$out/slots.jsonl
: > "$raw"
for r in 1 2 3; do
  echo "[$(( $(date +%s) - t0 )) s] repeat $r"
  for np in ${NPS:-8 16}; do
    over=(); [ "$np" -gt "$(nproc)" ] && over=(--oversubscribe)
    timeout 60 mpirun "${over[@]}" -np "$np" --mca pml ob1 --mca btl vader,self "$bin/bench_mpi" allreduce -n 10 -b 64M -e 64M \
      | sed -n "s/^{/{\"tag\":\"openmpi\",\"np\":$np,/p" >> "$raw"
    for chunk in 1M 512K 256K; do
      for c in allreduce broadcast reducescatter; do
        sz="-b 1M -e 64M -f 64"; [ $c = allreduce ] && sz="-b 64M -e 64M"
        # shellcheck disable=SC2086
        timeout 60 "$bin/weft" run -n "$np" --no-prefix --transport shm \
          --env WEFT_SHM_COLL_CHUNK_BYTES=$chunk -- \
          "$bin/weft" bench $c --latency --json -n 10 -w 2 $sz \
          | sed -n "s/^{/{\"tag\":\"weft-$chunk\",\"np\":$np,/p" >> "$raw"
      done
    done
  done
done
echo "[$(( $(date +%s) - t0 )) s] done"
python3 - "$raw" <<'PY'
import json, statistics, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1])]
g = collections.defaultdict(list)
for r in rows:
    g[(r["collective"], r["np"], int(r["size"]), r["tag"])].append((float(r["p50_us"]), float(r["busbw"])))
for k in sorted(g):
    v = g[k]
    p = [x[0] for x in v]; b = [x[1] for x in v]
    print(f"{k[0]:14s} np {k[1]:2d} {k[2]:>9d} {k[3]:12s} p50 {statistics.median(p):10.1f} us ({min(p):.1f}-{max(p):.1f}) busbw {statistics.median(b):6.2f} n={len(v)}")
PY
