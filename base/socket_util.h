// File descriptors and TCP sockets: an RAII fd, listening on port 0, connecting with a deadline
// (retrying while the listener is not up yet), and whole-buffer reads and writes with deadlines on
// non-blocking sockets. Shared by the rendezvous store and the TCP transport.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

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

// A listening, non-blocking TCP socket bound to host (empty = all interfaces) and port (0 = any).
struct Listener {
  UniqueFd fd;
  int port = 0;
};
Result<Listener> ListenTcp(const std::string& host, int port, int backlog = 512);

// Connects to host:port, retrying refused/unreachable attempts with backoff until the deadline.
// The returned socket is non-blocking with TCP_NODELAY set.
Result<UniqueFd> ConnectTcp(const HostPort& addr, Deadline deadline);

// Accepts one connection (non-blocking, TCP_NODELAY); Unavailable with EAGAIN when none is ready.
Result<UniqueFd> AcceptTcp(int listen_fd);

Status SetNonBlocking(int fd);
Status SetNoDelay(int fd);

// Whole-buffer I/O on a non-blocking socket, waiting with poll() until the deadline. A peer that
// closes mid-read gives Unavailable("connection closed by peer ...").
Status WriteFull(int fd, const void* data, size_t len, Deadline deadline);
Status ReadFull(int fd, void* data, size_t len, Deadline deadline);

// The local address a connected socket uses (to publish an address peers can reach).
Result<std::string> LocalAddressOf(int fd);

}  // namespace weft
