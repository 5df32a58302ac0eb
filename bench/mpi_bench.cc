// Open MPI baseline: times MPI_Allreduce (and the other MPI collectives) over a size sweep with
// the same conventions as `weft bench` (median per-iteration time of the slowest rank, nccl-tests
// bus-bandwidth factors), printing one JSON line per size on rank 0.
//   mpirun -np 2 bench_mpi allreduce -b 8 -e 64M -f 4 -n 20
#include <mpi.h>

#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_common.h"

using namespace weft::bench;

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank, n;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  std::string coll = argc > 1 ? argv[1] : "allreduce";
  int64_t lo = 8, hi = 64 << 20;
  double f = 2;
  int iters = 20;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "-b") lo = ParseSize(argv[i + 1]);
    if (a == "-e") hi = ParseSize(argv[i + 1]);
    if (a == "-f") f = std::atof(argv[i + 1]);
    if (a == "-n") iters = std::atoi(argv[i + 1]);
  }
  for (int64_t bytes : Sizes(lo, hi, f)) {
    int64_t count = bytes / 4;
    int64_t per = count / n;  // elements per rank block for the split collectives
    std::vector<float> a(std::max<int64_t>(count, 1), 1.0f), b(std::max<int64_t>(count, 1), 0.0f);
    double factor = 1;
    auto once = [&]() {
      if (coll == "allreduce") {
        MPI_Allreduce(a.data(), b.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        factor = n > 1 ? 2.0 * (n - 1) / n : 0;
      } else if (coll == "broadcast") {
        MPI_Bcast(a.data(), static_cast<int>(count), MPI_FLOAT, 0, MPI_COMM_WORLD);
        factor = 1;
      } else if (coll == "reduce") {
        MPI_Reduce(a.data(), b.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM, 0, MPI_COMM_WORLD);
        factor = 1;
      } else if (coll == "allgather") {
        MPI_Allgather(a.data(), static_cast<int>(per), MPI_FLOAT, b.data(), static_cast<int>(per),
                      MPI_FLOAT, MPI_COMM_WORLD);
        factor = (n - 1.0) / n;
      } else if (coll == "reducescatter") {
        MPI_Reduce_scatter_block(a.data(), b.data(), static_cast<int>(per), MPI_FLOAT, MPI_SUM,
                                 MPI_COMM_WORLD);
        factor = (n - 1.0) / n;
      } else if (coll == "alltoall") {
        MPI_Alltoall(a.data(), static_cast<int>(per), MPI_FLOAT, b.data(), static_cast<int>(per),
                     MPI_FLOAT, MPI_COMM_WORLD);
        factor = (n - 1.0) / n;
      }
    };
    int it = ItersFor(bytes, iters);
    for (int i = 0; i < std::max(2, it / 5); ++i) once();
    // Each iteration timed on its own, as `weft bench --latency` does; the previous iteration
    // synchronises the ranks. p50 and p99 per rank, then the slowest rank's.
    std::vector<double> times;
    for (int i = 0; i < it; ++i) {
      double t0 = NowUs();
      once();
      times.push_back(NowUs() - t0);
    }
    Stats local = Summarise(times);
    double mine[3] = {local.mean, local.p50, local.p99}, worst[3];
    MPI_Allreduce(mine, worst, 3, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    Stats st{worst[0], worst[1], worst[2]};
    if (rank == 0) PrintRow("openmpi", coll, "default", n, bytes, st, factor);
  }
  MPI_Finalize();
  return 0;
}
