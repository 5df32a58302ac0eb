// A preload library for the baselines (Open MPI, Gloo), never for weft: sets the TCP congestion
// control named by WEFT_BENCH_BASELINE_CC on every TCP socket the program connects or accepts,
// so scripts/bench.sh --baseline-cc can show how much of a TCP comparison is the congestion
// control (weft uses cubic on loopback; the host's default may be bbr). Measurement only. It sets
// the option itself rather than through base/socket_util: loaded into other programs, it must
// bring no weft code or static initialisers with it.
//   LD_PRELOAD=build/bin/libbench_cc_preload.so WEFT_BENCH_BASELINE_CC=cubic mpirun ...
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstdlib>
#include <cstring>

namespace {

void SetCongestion(int fd) {
  static const char* algo = std::getenv("WEFT_BENCH_BASELINE_CC");
  if (fd < 0 || algo == nullptr || *algo == '\0') return;
  int type = 0;
  socklen_t len = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) return;
  sockaddr_storage addr{};
  len = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
      (addr.ss_family != AF_INET && addr.ss_family != AF_INET6)) {
    return;
  }
  setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, algo, static_cast<socklen_t>(std::strlen(algo)));
}

template <typename F>
F Next(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" {

int connect(int fd, const sockaddr* addr, socklen_t len) {
  static auto real = Next<int (*)(int, const sockaddr*, socklen_t)>("connect");
  SetCongestion(fd);
  return real(fd, addr, len);
}

int accept(int fd, sockaddr* addr, socklen_t* len) {
  static auto real = Next<int (*)(int, sockaddr*, socklen_t*)>("accept");
  int r = real(fd, addr, len);
  SetCongestion(r);
  return r;
}

int accept4(int fd, sockaddr* addr, socklen_t* len, int flags) {
  static auto real = Next<int (*)(int, sockaddr*, socklen_t*, int)>("accept4");
  int r = real(fd, addr, len, flags);
  SetCongestion(r);
  return r;
}

}  // extern "C"
