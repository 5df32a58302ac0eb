// Gloo baseline: times Gloo's all-reduce algorithms (ring, ring_chunked, halving_doubling,
// bcube) and broadcast over Gloo's TCP transport, rendezvous through Gloo's file store, with the
// same conventions as `weft bench`. One JSON line per size and algorithm on rank 0.
//   bench_gloo RANK SIZE STORE_DIR allreduce -b 8 -e 64M -f 4 -n 20 [-a ring,halving_doubling]
#include <gloo/allreduce_bcube.h>
#include <gloo/allreduce_halving_doubling.h>
#include <gloo/allreduce_ring.h>
#include <gloo/allreduce_ring_chunked.h>
#include <gloo/broadcast_one_to_all.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_common.h"

using namespace weft::bench;

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: bench_gloo RANK SIZE STORE_DIR COLLECTIVE [-b] [-e] [-f] [-n] [-a]\n");
    return 2;
  }
  int rank = std::atoi(argv[1]), n = std::atoi(argv[2]);
  std::string dir = argv[3], coll = argv[4];
  int64_t lo = 8, hi = 64 << 20;
  double f = 2;
  int iters = 20;
  std::string algos = "ring,ring_chunked,halving_doubling,bcube";
  for (int i = 5; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "-b") lo = ParseSize(argv[i + 1]);
    if (a == "-e") hi = ParseSize(argv[i + 1]);
    if (a == "-f") f = std::atof(argv[i + 1]);
    if (a == "-n") iters = std::atoi(argv[i + 1]);
    if (a == "-a") algos = argv[i + 1];
  }
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = "127.0.0.1";
    auto dev = gloo::transport::tcp::CreateDevice(attr);
    gloo::rendezvous::FileStore store(dir);
    auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, n);
    ctx->connectFullMesh(store, dev);
    std::vector<std::string> list;
    std::stringstream ss(algos);
    for (std::string a; std::getline(ss, a, ',');) list.push_back(a);
    if (coll == "broadcast") list = {"one_to_all"};
    for (int64_t bytes : Sizes(lo, hi, f)) {
      int64_t count = std::max<int64_t>(1, bytes / 4);
      std::vector<float> buf(count, 1.0f);
      std::vector<float*> ptrs{buf.data()};
      for (const auto& algo : list) {
        std::unique_ptr<gloo::Algorithm> alg;
        double factor = n > 1 ? 2.0 * (n - 1) / n : 0;
        if (coll == "broadcast") {
          alg.reset(new gloo::BroadcastOneToAll<float>(ctx, ptrs, static_cast<int>(count)));
          factor = 1;
        } else if (algo == "ring") {
          alg.reset(new gloo::AllreduceRing<float>(ctx, ptrs, static_cast<int>(count)));
        } else if (algo == "ring_chunked") {
          alg.reset(new gloo::AllreduceRingChunked<float>(ctx, ptrs, static_cast<int>(count)));
        } else if (algo == "halving_doubling") {
          alg.reset(new gloo::AllreduceHalvingDoubling<float>(ctx, ptrs, static_cast<int>(count)));
        } else if (algo == "bcube") {
          alg.reset(new gloo::AllreduceBcube<float>(ctx, ptrs, static_cast<int>(count)));
        } else {
          std::fprintf(stderr, "unknown algorithm %s\n", algo.c_str());
          return 2;
        }
        int it = ItersFor(bytes, iters);
        for (int i = 0; i < std::max(2, it / 5); ++i) alg->run();
        std::vector<double> times;
        for (int i = 0; i < it; ++i) {
          double t0 = NowUs();
          alg->run();
          times.push_back(NowUs() - t0);
        }
        // The slowest rank's p50/p99, as the other programs report.
        Stats local = Summarise(times);
        std::vector<double> worst{local.mean, local.p50, local.p99};
        std::vector<double*> wp{worst.data()};
        gloo::AllreduceRing<double> reduce_max(ctx, wp, 3, gloo::ReductionFunction<double>::max);
        reduce_max.run();
        Stats st{worst[0], worst[1], worst[2]};
        if (rank == 0) PrintRow("gloo", coll, algo, n, bytes, st, factor);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gloo rank %d: %s\n", rank, e.what());
    return 1;
  }
  return 0;
}
