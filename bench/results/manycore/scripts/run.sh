#!/usr/bin/env bash
# Device-machine wrapper for #3's many-core comparison (not committed: lives in .dev, carried).
# Builds the core there when a compiler, cmake and Open MPI's headers are present, else uses the
# binaries carried in .dev/build; uses the machine's Open MPI when it has one, else the Debian 12
# Open MPI 4.1.4 runtime carried in .dev/ompi.tgz (relocated with OPAL_PREFIX).
set -u
out=${OUT:-/tmp/out}
mkdir -p "$out/manycore"
exec > >(tee "$out/log.txt") 2>&1
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

stamp "environment"
{
  date -u
  uname -a
  nproc
  lscpu | grep -E 'Model name|Socket|Core|Thread|NUMA|MHz|L3'
  free -g
  df -h /dev/shm /tmp
  cat /etc/os-release | head -3
  for c in g++ cmake mpirun mpicxx python3 ompi_info; do echo "$c: $(command -v $c)"; done
  g++ --version | head -1
  cmake --version | head -1
  mpirun --version 2>&1 | head -2
  ompi_info 2>/dev/null | grep -E 'MCA (btl|pml)'
  ldconfig -p | grep -E 'libmpi\.so|libucp\.so|libopen-pal|libhwloc\.so|libevent_core'
} > "$out/manycore/env.txt" 2>&1
cat "$out/manycore/env.txt"

mkdir -p /tmp/ompi && tar -C /tmp/ompi -xzf .dev/ompi.tgz
# Debian's mpirun/mpicxx/... are alternatives links to /etc/alternatives: point them at the real files.
for l in /tmp/ompi/usr/bin/*.openmpi; do ln -sf "$(readlink "$l")" "${l%.openmpi}"; done
ompi=device
if ! command -v mpirun >/dev/null || ! mpirun --version 2>&1 | grep -q 'Open MPI'; then
  ompi=carried
  export OPAL_PREFIX=/tmp/ompi/usr PATH=/tmp/ompi/usr/bin:$PATH
  export LD_LIBRARY_PATH=/tmp/ompi/usr/lib/x86_64-linux-gnu:/tmp/ompi/usr/lib/x86_64-linux-gnu/openmpi/lib
  export OMPI_MCA_mca_base_param_files=/tmp/ompi/etc-openmpi/openmpi-mca-params.conf
fi
stamp "Open MPI: $ompi ($(mpirun --version 2>&1 | head -1))"

build=.dev/build
if [ "$ompi" = device ] && command -v g++ >/dev/null && command -v cmake >/dev/null \
   && command -v mpicxx >/dev/null; then
  stamp "building the core here"
  if timeout 200 cmake -S . -B build-manycore -DCMAKE_BUILD_TYPE=RelWithDebInfo \
       -DWEFT_WITH_GRPC=OFF -DWEFT_BUILD_TESTS=OFF > "$out/manycore/build.txt" 2>&1 \
     && timeout 200 cmake --build build-manycore -j "$(nproc)" --target weft bench_mpi bench_membw bench_cacheline \
       >> "$out/manycore/build.txt" 2>&1; then
    build=build-manycore
  else
    stamp "build failed (tail below); using the carried binaries"
    tail -20 "$out/manycore/build.txt"
  fi
fi
if [ "$build" = .dev/build ]; then
  mkdir -p /tmp/fb
  for f in .dev/build/bin/*; do
    ldd "$f" | awk '/not found/ {print $1}' | while read -r so; do
      ln -sf "/tmp/ompi/usr/lib/x86_64-linux-gnu/$so" /tmp/fb/ 2>/dev/null
      ln -sf "/tmp/ompi/usr/lib/x86_64-linux-gnu/openmpi/lib/$so" /tmp/fb/ 2>/dev/null
    done
  done
  ls /tmp/fb
  export LD_LIBRARY_PATH=/tmp/fb${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
stamp "binaries: $build"
for f in "$build"/bin/*; do ldd "$f" | grep -E 'not found|libmpi\.so' | sed "s|^|$f: |"; done

stamp "cache-line round trip between CPU pairs"
timeout 30 "$build/bin/bench_cacheline" 2>&1 | tail -5 | tee "$out/manycore/cacheline.txt"

stamp "correctness: 16 ranks, -c, 8 B .. 64 MiB"
timeout 120 "$build/bin/weft" run -n 16 --no-prefix --transport shm -- \
  "$build/bin/weft" bench allreduce -c 1 -b 8 -e 64M -f 8 -n 2 -w 1 2>&1 | tee "$out/manycore/check16.txt"

stamp "bench_manycore"
timeout 400 scripts/bench_manycore.sh --no-build --build "$build" --out "$out/manycore" ${MC_ARGS:-}
stamp "done rc=$?"
cat "$out/manycore/report.md"
