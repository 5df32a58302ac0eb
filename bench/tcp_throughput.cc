// The loopback TCP limit: one sender thread streams a buffer over `sockets` TCP connections to a
// receiver thread on 127.0.0.1 and reports GB/s (median of repeats). The physical bound the TCP
// results are held to.
//   bench_tcp_throughput SOCKETS MiB REPEATS [CC] [bidi]
// CC: the sockets' congestion control, default cubic (what weft's TCP transport uses on loopback,
// WEFT_TCP_CONGESTION=auto), or "system" for the host's default.
// bidi: both ends of every connection send MiB at once, as the two ranks of a 2-rank all-reduce
// do, each end one thread that writes and reads its non-blocking socket as either has room (what
// a rank's exchange does, without the reduction); GB/s is then per direction: what plain socket
// code reaches for the traffic of a 2-rank all-reduce over loopback (each rank sends N and
// receives N bytes).
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
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
  const bool bidi = argc > 5 && std::string(argv[5]) == "bidi";
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
  std::vector<char> src2(bidi ? per : 0, 2);
  auto sender = [&](int fd, const std::vector<char>& buf) {
    size_t left = per;
    while (left > 0) {
      ssize_t k = send(fd, buf.data() + (per - left), left, 0);
      if (k <= 0) return;
      left -= k;
    }
  };
  // Both directions on one thread: writes while the socket takes data, reads while it has some,
  // and polls for either when neither moves.
  auto exchange = [&](int fd, const std::vector<char>& buf) {
    std::vector<char> dst(1 << 20);
    size_t to_send = per, to_recv = per;
    while (to_send > 0 || to_recv > 0) {
      bool moved = false;
      if (to_send > 0) {
        ssize_t k = send(fd, buf.data() + (per - to_send), to_send, MSG_DONTWAIT);
        if (k > 0) to_send -= static_cast<size_t>(k), moved = true;
        else if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return;
      }
      if (to_recv > 0) {
        ssize_t k = recv(fd, dst.data(), std::min(to_recv, dst.size()), MSG_DONTWAIT);
        if (k > 0) to_recv -= static_cast<size_t>(k), moved = true;
        else if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return;
      }
      if (!moved) {
        pollfd p{fd, static_cast<short>((to_send > 0 ? POLLOUT : 0) | (to_recv > 0 ? POLLIN : 0)),
                 0};
        poll(&p, 1, 1000);
      }
    }
  };
  auto receiver = [&](int fd) {
    std::vector<char> dst(1 << 20);
    size_t left = per;
    while (left > 0) {
      ssize_t k = recv(fd, dst.data(), std::min(left, dst.size()), 0);
      if (k <= 0) return;
      left -= k;
    }
  };
  for (int r = 0; r < reps; ++r) {
    double t0 = NowUs();
    std::vector<std::thread> ts;
    for (int i = 0; i < socks; ++i) {
      if (bidi) {
        ts.emplace_back([&, i] { exchange(out[i], src); });
        ts.emplace_back([&, i] { exchange(in[i], src2); });
      } else {
        ts.emplace_back([&, i] { sender(out[i], src); });
        ts.emplace_back([&, i] { receiver(in[i]); });
      }
    }
    for (auto& t : ts) t.join();
    gbps.push_back(total / (NowUs() - t0) / 1e3);
  }
  std::printf("{\"lib\":\"tcp_loopback\",\"sockets\":%d,\"cc\":\"%s\",\"mode\":\"%s\","
              "\"gbps\":%.3f}\n",
              socks, cc.c_str(), bidi ? "bidi" : "oneway", Summarise(gbps).p50);
  return 0;
}
