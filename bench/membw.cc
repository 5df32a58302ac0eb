// The machine's memory-bandwidth limit: a STREAM-like copy (a = b) and add (a = b + c) run by
// `threads` threads at once, each on its own arrays, reporting the median per-thread bandwidth in
// GB/s (bytes read plus written). This is the physical bound the shared-memory results are held to.
//   bench_membw THREADS MiB_PER_ARRAY REPEATS
#include <cstring>
#include <thread>
#include <vector>

#include "bench/bench_common.h"

using namespace weft::bench;

int main(int argc, char** argv) {
  int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  size_t mib = argc > 2 ? std::atoi(argv[2]) : 64;
  int reps = argc > 3 ? std::atoi(argv[3]) : 7;
  size_t n = mib * (1 << 20) / sizeof(float);
  std::vector<std::vector<double>> copy_bw(threads), add_bw(threads);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::vector<float> a(n, 1.0f), b(n, 2.0f), c(n, 3.0f);
      for (int r = 0; r < reps; ++r) {
        double t0 = NowUs();
        std::memcpy(a.data(), b.data(), n * sizeof(float));
        double t1 = NowUs();
        float* __restrict pa = a.data();
        const float* __restrict pb = b.data();
        const float* __restrict pc = c.data();
        for (size_t i = 0; i < n; ++i) pa[i] = pb[i] + pc[i];
        double t2 = NowUs();
        copy_bw[t].push_back(2.0 * n * sizeof(float) / (t1 - t0) / 1e3);
        add_bw[t].push_back(3.0 * n * sizeof(float) / (t2 - t1) / 1e3);
      }
    });
  }
  for (auto& t : ts) t.join();
  std::vector<double> all_copy, all_add;
  for (int t = 0; t < threads; ++t) {
    all_copy.insert(all_copy.end(), copy_bw[t].begin(), copy_bw[t].end());
    all_add.insert(all_add.end(), add_bw[t].begin(), add_bw[t].end());
  }
  Stats c = Summarise(all_copy), a = Summarise(all_add);
  std::printf("{\"lib\":\"membw\",\"threads\":%d,\"copy_gbps\":%.3f,\"add_gbps\":%.3f}\n", threads,
              c.p50, a.p50);
  return 0;
}
