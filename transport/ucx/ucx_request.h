// UcxRequest: the Request returned by UCX sends and receives — a SpinWaitRequest whose spinning
// waiter drives the UCP worker itself (transport/spin_wait_request.h). The transport completes it
// exactly once, from whichever thread is driving the worker, or from an abort.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "transport/spin_wait_request.h"

namespace weft::transport::ucx {

// What a spinning waiter may drive: the transport's UCP worker.
using Progressor = ProgressHook;

// Thread-safe. Holds no buffer; refers to its transport only weakly, so it may outlive it.
class UcxRequest final : public SpinWaitRequest {
 public:
  UcxRequest(Kind kind, int peer, uint64_t tag, size_t size, std::weak_ptr<Progressor> progressor)
      : SpinWaitRequest("ucx", kind, peer, tag, size, std::move(progressor), WaitSpinUs()) {}
  // WEFT_UCX_WAIT_SPIN_US, read once.
  static int64_t WaitSpinUs();
};

}  // namespace weft::transport::ucx
