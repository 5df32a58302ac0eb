#!/usr/bin/env bash
# Device confirm: the many-core all-reduce comparison at the new defaults, then broadcast,
# all-gather and reduce-scatter at 8 and 16 ranks: weft with 1 MiB slots (new auto) and 256 KiB
# (old), and Open MPI, 1 MiB and 64 MiB, interleaved.
set -u
out=${OUT:-/tmp/out}
mkdir -p "$out/manycore"
exec > >(tee "$out/log.txt") 2>&1
bin=${BIN:-.dev/build/bin}
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ldd "$bin/weft" | grep 'not found'
stamp "bench_manycore"
timeout 200 scripts/bench_manycore.sh --no-build --build "${bin%/bin}" --out "$out/manycore" ${MC_ARGS:-}
stamp "bench_manycore rc=$?"
cat "$out/manycore/report.md"
raw=$out/colls.jsonl
: > "$raw"
sizes=${SIZES:-"-b 1M -e 64M -f 64"}
for r in 1 2 3; do
  stamp "collectives repeat $r"
  for np in ${NPS:-8 16}; do
    for c in broadcast allgather reducescatter; do
      for chunk in 1M 256K; do
        # shellcheck disable=SC2086
        timeout 60 "$bin/weft" run -n "$np" --no-prefix --transport shm \
          --env WEFT_SHM_COLL_CHUNK_BYTES=$chunk -- \
          "$bin/weft" bench $c --latency --json -n 10 -w 2 $sizes \
          | sed -n "s/^{/{\"tag\":\"weft-$chunk\",\"np\":$np,/p" >> "$raw"
      done
      # shellcheck disable=SC2086
      over=(); [ "$np" -gt "$(nproc)" ] && over=(--oversubscribe)
      timeout 60 mpirun "${over[@]}" -np "$np" --mca pml ob1 --mca btl vader,self "$bin/bench_mpi" $c -n 10 $sizes \
        | sed -n "s/^{/{\"tag\":\"openmpi\",\"np\":$np,/p" >> "$raw"
    done
  done
done
stamp "done"
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
