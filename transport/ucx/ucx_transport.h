// UCX transport: reaches peers through UCP (tcp, shared memory, InfiniBand/RoCE: whatever UCX
// finds and UCX_TLS allows, with no code change), one UCP context and worker per Transport.
// Tagged messages ride on ucp_tag_send_nbx/ucp_tag_recv_nbx; how weft's (peer, 64-bit tag)
// matching maps onto UCP's per-worker tags is described in ucx_wire.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "transport/transport.h"

namespace weft::transport::ucx {

// Settings that TransportConfig does not carry; empty/zero means "environment / default".
struct UcxTransportOptions {
  // UCX transports to use, in UCX_TLS syntax ("tcp", "posix,cma,self", "sm", "rc,ud"...). Empty
  // leaves UCX's own UCX_TLS environment variable (default: all) in charge. There is deliberately
  // no WEFT_ knob for this: UCX_TLS, UCX_NET_DEVICES, UCX_RNDV_THRESH, UCX_KEEPALIVE_INTERVAL and
  // the other UCX_* variables configure UCX directly.
  std::string tls;
  // Messages up to this many bytes travel inside their control message; larger ones follow as a
  // separate UCP message that UCP sends eager or by zero-copy rendezvous as it sees fit. 0: knob
  // WEFT_UCX_INLINE_BYTES, whose default (auto) is 8000 to peers reached through shared memory
  // and 64 KiB to others.
  size_t inline_bytes = 0;
};

// Contract (beyond transport.h):
//   - CreateUcxTransport makes the UCP context and worker (InvalidArgument for a bad rank or
//     world size, Unavailable when UCX cannot start). Listen() starts the progress thread and
//     returns the worker address, hex-encoded; CanConnect() is true for any peer that published
//     one. Connect() may be called once.
//   - Connect() creates one UCP endpoint per peer and authenticates each pair: both sides send a
//     hello with a fresh nonce, then an HMAC-SHA256 proof of the job secret over both nonces
//     (ucx_wire.h). A peer that fails is refused (its endpoint closed): Unauthenticated naming
//     the rank for a wrong secret, FailedPrecondition for another job or world size,
//     DeadlineExceeded for silence. Errors name every rank that did not connect.
//   - Endpoints to peers on another host use UCP_ERR_HANDLING_MODE_PEER: a UCS error on the
//     endpoint fails its pending and later requests with Unavailable("ucx: rank R failed: ...").
//     UCX 1.13's shared-memory transports cannot handle peer failure, so peers on this host (same
//     host_id, pid known) use UCP's default mode, which lets UCX pick shared memory, and a pidfd
//     watches the process instead: Unavailable("ucx: rank R (pid P) exited"). Messages that had
//     wholly arrived before the failure stay receivable.
//   - Requests complete on whichever thread drives the worker: the progress thread (which sleeps
//     on ucp_worker_get_efd/ucp_worker_arm via epoll when idle) or a waiter spinning in Wait()
//     (WEFT_UCX_WAIT_SPIN_US). A small send that UCP can send at once (eager short) is complete
//     when PostSend returns. Test() only observes.
//   - Abort() fails every pending request with its status, closes the UCP endpoints and refuses
//     new requests. Destroying an Endpoint aborts that peer (Cancelled). Endpoints must be
//     destroyed before the transport; requests may outlive both.
//   - Memory registration is left to UCP: its rendezvous protocol registers user buffers through
//     its own registration cache (UCX_RCACHE_*), so RegisterMemory keeps nothing.
Result<std::unique_ptr<Transport>> CreateUcxTransport(const TransportConfig& config);
Result<std::unique_ptr<Transport>> CreateUcxTransport(const TransportConfig& config,
                                                      const UcxTransportOptions& options);

// Counters for tests and benchmarks.
struct UcxStats {
  uint64_t inline_sends = 0;       // messages sent inside their control message
  uint64_t data_sends = 0;         // messages sent as a separate (eager or rendezvous) UCP message
  uint64_t immediate_sends = 0;    // sends complete on return from PostSend (UCP sent them inline)
  uint64_t dropped_ctrl = 0;       // control messages refused (bad token, magic or unknown sender)
  uint64_t early_ctrl = 0;         // control messages held until their sender's handshake ended
  uint64_t exchanges_in_call = 0;  // Exchange() receives answered within the call
  uint64_t exchanges_late = 0;     // Exchange() receives handed back as a pending request
  bool peer_failure_mode = false;  // some endpoint uses UCP_ERR_HANDLING_MODE_PEER
};
// The counters of a transport made by CreateUcxTransport; InvalidArgument for any other.
Result<UcxStats> GetUcxStats(const Transport& transport);

}  // namespace weft::transport::ucx
