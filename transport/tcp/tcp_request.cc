#include "transport/tcp/tcp_request.h"

#include "base/env.h"

namespace weft::transport::tcp {
namespace {

WEFT_ENV_KNOB(kWaitSpinUs, "WEFT_TCP_WAIT_SPIN_US", "50",
              "microseconds a TCP request Wait() spins (polling its peer) before it sleeps");

}  // namespace

int64_t TcpRequest::WaitSpinUs() {
  static const int64_t spin_us = kWaitSpinUs.GetInt();
  return spin_us;
}

}  // namespace weft::transport::tcp
