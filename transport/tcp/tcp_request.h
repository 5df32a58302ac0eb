// TcpRequest: the Request returned by TCP sends and receives — a SpinWaitRequest whose spinning
// waiter helps its peer's sockets along (transport/spin_wait_request.h). The progress thread (or
// an abort) completes it exactly once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "transport/spin_wait_request.h"

namespace weft::transport::tcp {

// What a spinning waiter may help along: the peer whose sockets will complete the request.
using ProgressSource = ProgressHook;

// Thread-safe. Holds no buffer: the peer state that will complete it holds a shared_ptr to it, so
// dropping the caller's handle early is harmless; it refers back to that peer only weakly.
class TcpRequest final : public SpinWaitRequest {
 public:
  TcpRequest(Kind kind, int peer, uint64_t tag, size_t size, std::weak_ptr<ProgressSource> source,
             int64_t spin_us)
      : SpinWaitRequest("tcp", kind, peer, tag, size, std::move(source), spin_us) {}
  // WEFT_TCP_WAIT_SPIN_US, read once.
  static int64_t WaitSpinUs(bool oversubscribed);
};

inline std::string TagString(uint64_t tag) { return HexTag(tag); }

}  // namespace weft::transport::tcp
