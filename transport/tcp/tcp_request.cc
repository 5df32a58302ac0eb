#include "transport/tcp/tcp_request.h"

#include <algorithm>

#include "base/env.h"
#include "transport/transport.h"

namespace weft::transport::tcp {
namespace {

WEFT_ENV_KNOB(kWaitSpinUs, "WEFT_TCP_WAIT_SPIN_US", "50",
              "microseconds a TCP request Wait() spins (polling its peer) before it sleeps; "
              "where ranks outnumber cores, at least 2000 unless set. Where ranks fit the "
              "cores, a receive of 512 KiB or more from a peer this rank has sent nothing that "
              "large to in the last millisecond (one end of a one-way stream) does not spin");

}  // namespace

int64_t TcpRequest::WaitSpinUs(bool oversubscribed) {
  static const int64_t spin_us = kWaitSpinUs.GetInt();
  static const bool set = kWaitSpinUs.IsSet();
  // Oversubscribed, the peer a waiter needs is often queued behind it on the same core: yielding
  // polls give it the core at once, while sleeping costs two thread wake-ups (the progress
  // thread's, then the waiter's) of tens of microseconds each.
  return oversubscribed && !set ? std::max<int64_t>(spin_us, kOversubscribedSpinUs) : spin_us;
}

}  // namespace weft::transport::tcp
