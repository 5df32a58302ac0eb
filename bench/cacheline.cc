// The VM's placement of its vCPUs, as the shared-memory results feel it: two threads, pinned to
// CPUs 0 and 1, hand a cache line back and forth; reports the median round trip in ns over
// REPEATS runs of ROUNDS hand-offs. On the 2-vCPU development VM this is ~100 ns when the host
// runs the two vCPUs on cores that share a cache and ~500 ns when it moves them apart, and every
// intra-host result moves with it, so scripts/bench.sh records it at the start of each repeat.
//   bench_cacheline [ROUNDS] [REPEATS]
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "bench/bench_common.h"

using namespace weft::bench;

namespace {

void Pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);  // best effort: one CPU is fine too
}

struct alignas(128) Line {
  std::atomic<long> value{0};
};

}  // namespace

int main(int argc, char** argv) {
  const long rounds = argc > 1 ? std::atol(argv[1]) : 100000;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 5;
  const int other = std::thread::hardware_concurrency() > 1 ? 1 : 0;
  std::vector<double> ns;
  for (int r = 0; r < reps; ++r) {
    Line ping, pong;
    std::thread peer([&] {
      Pin(other);
      for (long i = 1; i <= rounds; ++i) {
        while (ping.value.load(std::memory_order_acquire) != i) {
        }
        pong.value.store(i, std::memory_order_release);
      }
    });
    Pin(0);
    const double t0 = NowUs();
    for (long i = 1; i <= rounds; ++i) {
      ping.value.store(i, std::memory_order_release);
      while (pong.value.load(std::memory_order_acquire) != i) {
      }
    }
    ns.push_back((NowUs() - t0) * 1000.0 / static_cast<double>(rounds));
    peer.join();
  }
  std::printf("{\"lib\":\"cacheline\",\"cpus\":\"0,%d\",\"roundtrip_ns\":%.1f}\n", other,
              Summarise(ns).p50);
  return 0;
}
