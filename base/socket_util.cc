#include "base/socket_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "base/env.h"

namespace weft {
namespace {

WEFT_ENV_KNOB(kSocketIfnameKnob, "WEFT_SOCKET_IFNAME", "",
              "interfaces whose IPv4 addresses a rank offers its peers (TCP transport; rank 0's "
              "store under mpirun), which try them in order and keep the first that connects: "
              "comma list of name prefixes in order of preference, or ^ in front to exclude "
              "them (default: every up interface, loopback last)");

// The prefixes of a spec, without the ^.
std::vector<std::string_view> SpecPrefixes(std::string_view spec) {
  if (!spec.empty() && spec[0] == '^') spec.remove_prefix(1);
  std::vector<std::string_view> out;
  while (true) {
    size_t comma = spec.find(',');
    std::string_view p = spec.substr(0, comma);
    if (!p.empty()) out.push_back(p);
    if (comma == std::string_view::npos) break;
    spec.remove_prefix(comma + 1);
  }
  return out;
}

// Index of the first prefix `name` starts with; prefixes.size() when none.
size_t FirstMatch(const std::vector<std::string_view>& prefixes, std::string_view name) {
  size_t k = 0;
  while (k < prefixes.size() && name.substr(0, prefixes[k].size()) != prefixes[k]) ++k;
  return k;
}

// Whether an interface whose first match is `match` passes a non-empty spec.
bool Passes(std::string_view spec, const std::vector<std::string_view>& prefixes, size_t match) {
  return spec[0] == '^' ? match == prefixes.size() : match < prefixes.size();
}

}  // namespace

const std::string& SocketIfnameSpec() { return kSocketIfnameKnob.Get(); }

void UniqueFd::Reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

std::string HostPort::ToString() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

Result<HostPort> ParseHostPort(std::string_view text) {
  HostPort out;
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon + 1 >= text.size()) {
    return InvalidArgumentError("address '" + std::string(text) + "' is not host:port");
  }
  std::string_view host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::string_view port = text.substr(colon + 1);
  int p = 0;
  for (char c : port) {
    if (c < '0' || c > '9' || p > 65535) {
      return InvalidArgumentError("address '" + std::string(text) + "' has a bad port");
    }
    p = p * 10 + (c - '0');
  }
  if (p <= 0 || p > 65535) {
    return InvalidArgumentError("address '" + std::string(text) + "' has port out of range");
  }
  out.host = host.empty() ? "127.0.0.1" : std::string(host);
  out.port = p;
  return out;
}

std::string FormatHostPortList(const std::vector<std::string>& hosts, int port) {
  std::string out;
  for (const std::string& h : hosts) {
    if (!out.empty()) out += ',';
    out += h.find(':') != std::string::npos ? "[" + h + "]" : h;
  }
  return out + ":" + std::to_string(port);
}

Result<std::vector<HostPort>> ParseHostPortList(std::string_view text) {
  // The port follows the last colon outside brackets; commas separate the hosts before it.
  size_t colon = text.rfind(':');
  size_t close = text.rfind(']');
  if (colon != std::string_view::npos && close != std::string_view::npos && colon < close) {
    colon = std::string_view::npos;
  }
  std::string_view hosts = colon == std::string_view::npos ? text : text.substr(0, colon);
  if (hosts.find(',') == std::string_view::npos) {
    WEFT_ASSIGN_OR_RETURN(HostPort one, ParseHostPort(text));
    return std::vector<HostPort>{one};
  }
  auto bad = [&](const std::string& why) {
    return InvalidArgumentError("address list '" + std::string(text) + "' " + why +
                                " (want host,host,...:port)");
  };
  if (colon == std::string_view::npos) return bad("has no port");
  std::string probe(1, 'x');  // one host with the list's port, for ParseHostPort's checks
  probe.append(text.substr(colon));
  auto port_only = ParseHostPort(probe);
  if (!port_only.ok()) return bad("has a bad port");
  std::vector<HostPort> out;
  while (true) {
    size_t comma = hosts.find(',');
    std::string_view h = hosts.substr(0, comma);
    if (!h.empty() && h.front() == '[') {
      if (h.size() < 3 || h.back() != ']') return bad("has a malformed bracketed host");
      h = h.substr(1, h.size() - 2);
    }
    if (h.empty()) return bad("has an empty host");
    for (char c : h) {
      if (c == '[' || c == ']' || c == ' ' || c == '\t' || c == '/') {
        return bad("has a malformed host '" + std::string(h) + "'");
      }
    }
    out.push_back(HostPort{std::string(h), port_only->port});
    if (comma == std::string_view::npos) break;
    hosts.remove_prefix(comma + 1);
  }
  return out;
}

bool IfnameSelected(std::string_view spec, std::string_view name) {
  if (spec.empty()) return true;
  const std::vector<std::string_view> prefixes = SpecPrefixes(spec);
  return Passes(spec, prefixes, FirstMatch(prefixes, name));
}

std::vector<InterfaceAddress> SelectInterfaces(std::string_view spec,
                                               const std::vector<InterfaceAddress>& interfaces) {
  // Rank of each entry: the index of the first prefix it matches (a listed spec states the
  // user's preference), 0 for every entry otherwise; loopback after everything else.
  const bool listed = !spec.empty() && spec[0] != '^';
  const std::vector<std::string_view> prefixes = SpecPrefixes(spec);
  std::vector<std::pair<size_t, const InterfaceAddress*>> keyed;
  for (const InterfaceAddress& ia : interfaces) {
    const size_t match = FirstMatch(prefixes, ia.ifname);
    if (!spec.empty() && !Passes(spec, prefixes, match)) continue;
    size_t key = listed ? match : 0;
    if (ia.loopback) key += prefixes.size() + 1;
    keyed.emplace_back(key, &ia);
  }
  std::stable_sort(keyed.begin(), keyed.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<InterfaceAddress> out;
  for (const auto& [key, ia] : keyed) out.push_back(*ia);
  return out;
}

Result<std::vector<InterfaceAddress>> CandidateAddresses(std::string_view spec,
                                                         std::string_view knob) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return ErrnoError("getifaddrs", errno);
  std::vector<InterfaceAddress> up;
  for (ifaddrs* ifa = list; ifa != nullptr; ifa = ifa->ifa_next) {
    if (ifa->ifa_addr == nullptr || ifa->ifa_addr->sa_family != AF_INET) continue;
    if (!(ifa->ifa_flags & IFF_UP)) continue;
    char buf[INET_ADDRSTRLEN] = {0};
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(ifa->ifa_addr)->sin_addr, buf, sizeof(buf));
    up.push_back(InterfaceAddress{ifa->ifa_name, buf, (ifa->ifa_flags & IFF_LOOPBACK) != 0});
  }
  freeifaddrs(list);
  std::vector<InterfaceAddress> out = SelectInterfaces(spec, up);
  if (out.empty()) {
    std::string names;
    for (const auto& ia : up) names += (names.empty() ? "" : ", ") + ia.ifname;
    if (spec.empty()) return NotFoundError("no up IPv4 interface");
    return NotFoundError("no up IPv4 interface matches " + std::string(knob) + "='" +
                         std::string(spec) + "' (up: " + (names.empty() ? "none" : names) + ")");
  }
  return out;
}

Status SetNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return ErrnoError("fcntl", errno);
  return Status::Ok();
}

Status SetNoDelay(int fd) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
    return ErrnoError("setsockopt(TCP_NODELAY)", errno);
  }
  return Status::Ok();
}

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  std::string v4 = host;
  if (v4.rfind("::ffff:", 0) == 0) v4 = v4.substr(7);
  in_addr a{};
  return inet_pton(AF_INET, v4.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

Status SetCongestionControl(int fd, const std::string& algorithm) {
  if (setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, algorithm.data(),
                 static_cast<socklen_t>(algorithm.size())) < 0) {
    return ErrnoError("setsockopt(TCP_CONGESTION, \"" + algorithm + "\")", errno);
  }
  return Status::Ok();
}

Result<Listener> ListenTcp(const std::string& host, int port, int backlog) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  std::string port_str = std::to_string(port);
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port_str.c_str(), &hints, &res);
  if (rc != 0) {
    return InvalidArgumentError("cannot resolve '" + host + "': " + gai_strerror(rc));
  }
  Status last = UnavailableError("no address to listen on for '" + host + "'");
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    UniqueFd fd(socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      last = ErrnoError("socket", errno);
      continue;
    }
    int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd.get(), backlog) < 0) {
      last = ErrnoError("bind/listen on " + host + ":" + port_str, errno);
      continue;
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    Listener l;
    l.port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    Status s = SetNonBlocking(fd.get());
    if (!s.ok()) {
      freeaddrinfo(res);
      return s;
    }
    l.fd = std::move(fd);
    freeaddrinfo(res);
    return l;
  }
  freeaddrinfo(res);
  return last;
}

namespace {

// One non-blocking connect attempt, bounded by the deadline.
Result<UniqueFd> ConnectOnce(const addrinfo* ai, const std::string& what, Deadline deadline) {
  UniqueFd fd(
      socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
  if (!fd.valid()) return ErrnoError("socket", errno);
  if (connect(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0) {
    if (errno != EINPROGRESS) return ErrnoError("connect to " + what, errno);
    pollfd p{fd.get(), POLLOUT, 0};
    int n;
    do {
      n = poll(&p, 1, deadline.RemainingMsForPoll(100));
    } while ((n == 0 && !deadline.Expired()) || (n < 0 && errno == EINTR));
    if (n == 0) return DeadlineExceededError("connect to " + what + " timed out");
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return ErrnoError("connect to " + what, err);
  }
  WEFT_RETURN_IF_ERROR(SetNoDelay(fd.get()));
  return fd;
}

}  // namespace

Result<UniqueFd> ConnectTcp(const HostPort& addr, Deadline deadline) {
  auto backoff = std::chrono::milliseconds(5);
  Status last;
  while (true) {
    auto fd = ConnectTcpOnce(addr, deadline);
    if (fd.ok()) return fd;
    last = fd.status();
    if (deadline.Expired()) break;
    auto nap = std::min<std::chrono::nanoseconds>(backoff, deadline.Remaining());
    std::this_thread::sleep_for(nap);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(200));
  }
  return DeadlineExceededError("could not connect to " + addr.ToString() +
                               " before the deadline (last error: " + last.message() + ")");
}

Result<UniqueFd> ConnectTcpOnce(const HostPort& addr, Deadline deadline) {
  std::string what = addr.ToString();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(addr.host.c_str(), std::to_string(addr.port).c_str(), &hints, &res);
  if (rc != 0) return UnavailableError("cannot resolve '" + addr.host + "': " + gai_strerror(rc));
  Status last = UnavailableError("no address for " + what);
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    auto fd = ConnectOnce(ai, what, deadline);
    if (fd.ok()) {
      freeaddrinfo(res);
      return fd;
    }
    last = fd.status();
    if (deadline.Expired()) break;
  }
  freeaddrinfo(res);
  return last;
}

Result<UniqueFd> AcceptTcp(int listen_fd) {
  int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) return ErrnoError("accept", errno);
  UniqueFd out(fd);
  SetNoDelay(fd).IgnoreError();
  return out;
}

Status WriteFull(int fd, const void* data, size_t len, Deadline deadline) {
  const char* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL);
    if (n > 0) {
      p += n;
      len -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (deadline.Expired()) return DeadlineExceededError("write timed out");
      pollfd pf{fd, POLLOUT, 0};
      poll(&pf, 1, deadline.RemainingMsForPoll(1000));
      continue;
    }
    return ErrnoError("write", errno);
  }
  return Status::Ok();
}

Status ReadFull(int fd, void* data, size_t len, Deadline deadline) {
  char* p = static_cast<char*>(data);
  while (len > 0) {
    ssize_t n = ::recv(fd, p, len, 0);
    if (n > 0) {
      p += n;
      len -= static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return UnavailableError("connection closed by peer");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (deadline.Expired()) return DeadlineExceededError("read timed out");
      pollfd pf{fd, POLLIN, 0};
      poll(&pf, 1, deadline.RemainingMsForPoll(1000));
      continue;
    }
    return ErrnoError("read", errno);
  }
  return Status::Ok();
}

namespace {

// The numeric host (as inet_ntop writes it) and port of a socket's own address (getsockname) or
// its peer's (getpeername).
Result<HostPort> AddressOf(int fd, bool peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  auto* sa = reinterpret_cast<sockaddr*>(&ss);
  if ((peer ? getpeername(fd, sa, &len) : getsockname(fd, sa, &len)) < 0) {
    return ErrnoError(peer ? "getpeername" : "getsockname", errno);
  }
  char buf[INET6_ADDRSTRLEN] = {0};
  int port = 0;
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    port = ntohs(a->sin6_port);
  } else {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
    port = ntohs(a->sin_port);
  }
  return HostPort{buf, port};
}

}  // namespace

Result<std::string> LocalAddressOf(int fd) {
  WEFT_ASSIGN_OR_RETURN(HostPort hp, AddressOf(fd, /*peer=*/false));
  return hp.host;
}

Result<std::string> PeerAddressOf(int fd) {
  WEFT_ASSIGN_OR_RETURN(HostPort hp, AddressOf(fd, /*peer=*/true));
  return hp.host;
}

Result<HostPort> PeerHostPortOf(int fd) { return AddressOf(fd, /*peer=*/true); }

}  // namespace weft
