// The loopback TCP limit: one sender thread streams a buffer over `sockets` TCP connections to a
// receiver thread on 127.0.0.1 and reports GB/s (median of repeats). The physical bound the TCP
// results are held to.
//   bench_tcp_throughput SOCKETS MiB REPEATS [CC]
// CC: the sockets' congestion control, default cubic (what weft's TCP transport uses on loopback,
// WEFT_TCP_CONGESTION=auto), or "system" for the host's default.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "base/socket_util.h"
#include "bench/bench_common.h"

using namespace weft::bench;

int main(int argc, char** argv) {
  int socks = argc > 1 ? std::atoi(argv[1]) : 1;
  size_t mib = argc > 2 ? std::atoi(argv[2]) : 256;
  int reps = argc > 3 ? std::atoi(argv[3]) : 5;
  std::string cc = argc > 4 ? argv[4] : "cubic";
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  listen(lfd, 64);
  socklen_t len = sizeof(addr);
  getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::vector<int> out(socks), in(socks);
  for (int i = 0; i < socks; ++i) {
    out[i] = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(out[i], reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return 1;
    in[i] = accept(lfd, nullptr, nullptr);
    if (cc != "system") {
      for (int fd : {out[i], in[i]}) {
        weft::Status st = weft::SetCongestionControl(fd, cc);
        if (!st.ok()) {
          std::fprintf(stderr, "bench_tcp_throughput: %s\n", st.ToString().c_str());
          return 1;
        }
      }
    }
  }
  size_t total = mib << 20, per = total / socks;
  std::vector<char> src(per, 1);
  std::vector<double> gbps;
  for (int r = 0; r < reps; ++r) {
    double t0 = NowUs();
    std::vector<std::thread> ts;
    for (int i = 0; i < socks; ++i) {
      ts.emplace_back([&, i] {
        size_t left = per;
        while (left > 0) {
          ssize_t k = send(out[i], src.data() + (per - left), left, 0);
          if (k <= 0) return;
          left -= k;
        }
      });
      ts.emplace_back([&, i] {
        std::vector<char> dst(1 << 20);
        size_t left = per;
        while (left > 0) {
          ssize_t k = recv(in[i], dst.data(), std::min(left, dst.size()), 0);
          if (k <= 0) return;
          left -= k;
        }
      });
    }
    for (auto& t : ts) t.join();
    gbps.push_back(total / (NowUs() - t0) / 1e3);
  }
  std::printf("{\"lib\":\"tcp_loopback\",\"sockets\":%d,\"cc\":\"%s\",\"gbps\":%.3f}\n", socks,
              cc.c_str(), Summarise(gbps).p50);
  return 0;
}
