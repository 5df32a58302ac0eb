// File descriptors and TCP sockets: an RAII fd, listening on port 0, connecting with a deadline
// (retrying while the listener is not up yet), and whole-buffer reads and writes with deadlines on
// non-blocking sockets. Shared by the rendezvous store and the TCP transport.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/deadline.h"
#include "base/status.h"

namespace weft {

// Owns one file descriptor; closes it on destruction. Movable, not copyable.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

struct HostPort {
  std::string host;
  int port = 0;
  std::string ToString() const;
};

// Parses "host:port", "[v6]:port"; InvalidArgument naming the text otherwise.
Result<HostPort> ParseHostPort(std::string_view text);

// Several hosts sharing one port, as a process that listens on every interface publishes them:
// "10.0.0.1,192.168.1.5:29500" (IPv6 hosts in brackets). One host gives exactly
// HostPort::ToString(), and ParseHostPortList accepts everything ParseHostPort does, so a
// single-address string reads the same either way. InvalidArgument naming the text for an empty
// list, an empty or malformed host ("a,,b:1", "[::1,a:1") or a bad port.
std::string FormatHostPortList(const std::vector<std::string>& hosts, int port);
Result<std::vector<HostPort>> ParseHostPortList(std::string_view text);

// Interface choice, shared by everything that offers this process's addresses to peers (the TCP
// transport's listener, rank 0's store under mpirun). A spec in the WEFT_SOCKET_IFNAME syntax is
// a comma list of interface name prefixes ("ib,eth": those interfaces, in that order of
// preference) or, with ^ in front, prefixes to exclude ("^docker,veth"); empty selects every
// interface.
struct InterfaceAddress {
  std::string ifname;
  std::string address;  // numeric IPv4
  bool loopback = false;
};

// Whether interface `name` passes `spec`.
bool IfnameSelected(std::string_view spec, std::string_view name);

// The entries of `interfaces` (in the kernel's order) that `spec` selects, ordered: by the first
// prefix each matches when the spec lists prefixes, else in the given order; loopback ones last in
// either case (they reach only this host). Pure, for tests; CandidateAddresses() feeds it.
std::vector<InterfaceAddress> SelectInterfaces(std::string_view spec,
                                               const std::vector<InterfaceAddress>& interfaces);

// The IPv4 addresses of this host's up interfaces that `spec` selects, in SelectInterfaces()
// order. NotFound naming `knob` and the spec when none does (or when no interface is up).
Result<std::vector<InterfaceAddress>> CandidateAddresses(
    std::string_view spec, std::string_view knob = "WEFT_SOCKET_IFNAME");

// The value of WEFT_SOCKET_IFNAME (declared in socket_util.cc, read once).
const std::string& SocketIfnameSpec();

// A listening, non-blocking TCP socket bound to host (empty = all interfaces) and port (0 = any).
struct Listener {
  UniqueFd fd;
  int port = 0;
};
Result<Listener> ListenTcp(const std::string& host, int port, int backlog = 512);

// Connects to host:port, retrying refused/unreachable attempts with backoff until the deadline.
// The returned socket is non-blocking with TCP_NODELAY set.
Result<UniqueFd> ConnectTcp(const HostPort& addr, Deadline deadline);

// One connect attempt to host:port, no retry: whatever the first failure is (refused, unreachable,
// DeadlineExceeded when no answer came before the deadline) is returned at once. For callers
// that have other addresses to try. Same socket options as ConnectTcp.
Result<UniqueFd> ConnectTcpOnce(const HostPort& addr, Deadline deadline);

// Accepts one connection (non-blocking, TCP_NODELAY); Unavailable with EAGAIN when none is ready.
Result<UniqueFd> AcceptTcp(int listen_fd);

Status SetNonBlocking(int fd);
Status SetNoDelay(int fd);

// Whether `host` names this host's loopback: "localhost", 127.0.0.0/8, ::1, or 127/8 mapped into
// IPv6 ("::ffff:127.0.0.1").
bool IsLoopbackHost(const std::string& host);
// Sets the socket's TCP congestion control algorithm (TCP_CONGESTION, e.g. "cubic"). Error naming
// the algorithm when the kernel has no such algorithm (ENOENT) or refuses it to this process
// (EPERM: not in net.ipv4.tcp_allowed_congestion_control).
Status SetCongestionControl(int fd, const std::string& algorithm);

// Whole-buffer I/O on a non-blocking socket, waiting with poll() until the deadline. A peer that
// closes mid-read gives Unavailable("connection closed by peer ...").
Status WriteFull(int fd, const void* data, size_t len, Deadline deadline);
Status ReadFull(int fd, void* data, size_t len, Deadline deadline);

// The local address a connected socket uses (to publish an address peers can reach).
Result<std::string> LocalAddressOf(int fd);
// The address of a connected socket's peer, as LocalAddressOf writes it.
Result<std::string> PeerAddressOf(int fd);
// The same with the peer's port.
Result<HostPort> PeerHostPortOf(int fd);

}  // namespace weft
