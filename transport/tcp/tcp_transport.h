// TCP transport: reaches any peer over non-blocking sockets, several per peer pair, with one
// background progress thread (epoll) per Transport moving all data. Every connection opens with the
// job-secret handshake (base/auth_handshake.h). Connection setup is described in
// tcp_transport.cc, the data wire format in tcp_peer.h.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "transport/transport.h"

namespace weft::transport::tcp {

// Settings that TransportConfig does not carry. Zero means "the env knob / built-in default".
struct TcpTransportOptions {
  // How long an accepted connection may take to authenticate and introduce itself before it is
  // refused (knob WEFT_TCP_HANDSHAKE_TIMEOUT_MS).
  std::chrono::milliseconds handshake_timeout{0};
  // SO_SNDBUF/SO_RCVBUF for every socket (knob WEFT_TCP_BUFFER_BYTES; 0 keeps the OS default).
  int64_t socket_buffer_bytes = 0;
  // Congestion control (knob WEFT_TCP_CONGESTION; empty: the knob): "auto", "system" or an
  // algorithm name. See CongestionPolicy in tcp_peer.h.
  std::string congestion;
};

// The concrete transport type, for callers that want its counters (tests, metrics). Everything
// else goes through the Transport interface.
//
// Contract (beyond transport.h):
//   - Listen() binds config.listen_host (empty: 0.0.0.0) on an ephemeral port and starts the
//     progress thread. It publishes "host:port" for a configured host; bound to every interface,
//     "a,b,...:port" with the IPv4 addresses of the up interfaces that WEFT_TCP_IFNAME, else
//     WEFT_SOCKET_IFNAME, selects, in preference order (base/socket_util.h CandidateAddresses),
//     loopback only when nothing else is selected (a single address reads "host:port" as
//     before). NotFound naming the knob when it selects nothing. The listener stays open for the
//     transport's lifetime, refusing (closing, logging at WARN, counting) every connection that
//     fails the handshake, stays silent, names another job or an unexpected rank or socket,
//     wants another rank, or arrives once Connect() is done.
//   - Connect() may be called once; after it fails the transport is spent. Of each pair the
//     lower rank dials the higher one with config.tcp_sockets_per_peer sockets (else
//     WEFT_TCP_SOCKETS; its default, auto, is 1 to a peer whose host id is this rank's and 2 to
//     any other); both sides must agree, and a dialer with another count is refused naming both.
//     Of several peer addresses, the first that
//     connects and authenticates as that peer is kept for all the pair's sockets (loopback ones
//     are skipped for a peer with another host_id, unless they are all it has); each attempt is
//     bounded by a few seconds and all by the deadline. Errors name the ranks that did not
//     connect and, for a dialed peer, every address tried with its own failure.
//   - Requests complete on the progress thread; Test() only observes. Wait() spins briefly
//     (WEFT_TCP_WAIT_SPIN_US), moving its peer's ready data itself while it does so (this saves
//     two thread wake-ups per small message), then sleeps on a futex. Where ranks fit the cores,
//     a wait on a receive of 512 KiB or more from a peer this rank has sent nothing that large to
//     in the last millisecond (one end of a one-way stream) sleeps at once.
//   - A peer whose socket fails (reset, truncated chunk, protocol violation) or whose sockets all
//     close fails its pending requests with Unavailable naming rank, transport and address;
//     messages that had fully arrived stay receivable. Abort() fails everything with its status,
//     closes the sockets, and refuses new requests.
//   - Endpoints must be destroyed before the transport; destroying an endpoint closes its
//     sockets and cancels its pending requests.
class TcpTransport : public Transport {
 public:
  // Connections refused by the listener so far.
  virtual int64_t refused_connections() const = 0;
};

Result<std::unique_ptr<Transport>> CreateTcpTransport(const TransportConfig& config);
Result<std::unique_ptr<Transport>> CreateTcpTransport(const TransportConfig& config,
                                                      const TcpTransportOptions& options);

}  // namespace weft::transport::tcp
