#!/usr/bin/env bash
# Installs the Debian packages weft's build, tests and demo need. Idempotent: when everything is
# present it only checks and says nothing. Run as root (or with sudo available).
#   scripts/setup.sh          build, tests, demo
#   scripts/setup.sh bench    also the peers and tools scripts/bench.sh compares against
set -euo pipefail

packages=(
  build-essential   # g++, make
  cmake
  libgtest-dev      # GoogleTest (static libraries and CMake config)
  iproute2          # ip netns for multi-host tests
  libopenmpi-dev    # MPI bootstrap under mpirun and the mpi transport (WEFT_WITH_MPI)
  openmpi-bin       # mpirun for the MPI tests
  procps            # ps/pgrep used by a few tests' diagnostics
  gdb               # multi-host tests: every thread's stack of a rank they find hung
  libopenblas-dev   # weft train: matrix products (optional at configure: WEFT_WITH_BLAS)
  zlib1g-dev        # weft train: reads the gzip-compressed IDX files (else through gzip -dc)
  dataset-fashion-mnist  # weft train's data set (IDX files under /usr/share/datasets)
  libgrpc++-dev     # scheduler: gRPC C++ (WEFT_WITH_GRPC)
  protobuf-compiler-grpc  # scheduler: grpc_cpp_plugin
  libprotobuf-dev   # scheduler: protobuf runtime
  protobuf-compiler # scheduler: protoc
  libsqlite3-dev    # scheduler: SQLite state store
  prometheus        # scheduler tests: promtool and a real Prometheus scraping /metrics
  libucx-dev        # the ucx transport (WEFT_WITH_UCX): tcp, shared memory, InfiniBand/RoCE
)

# kubectl for the deploy/ and Kubernetes launch tests: Debian's kubernetes-client, unless some
# kubectl is already installed (a newer one from elsewhere would conflict with it).
command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)

bench_packages=(
  libopenmpi-dev openmpi-bin  # the Open MPI baseline (MPI_Allreduce, mpirun)
  libgloo-dev                 # the Gloo baseline
  gnuplot-nox                 # the benchmark plots
  python3                     # the benchmark report
)
if [ "${1:-}" = "bench" ]; then packages+=("${bench_packages[@]}"); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "setup.sh: need root to install: ${missing[*]}" >&2
    exit 1
  fi
fi
echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
