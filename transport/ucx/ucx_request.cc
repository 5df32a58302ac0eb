#include "transport/ucx/ucx_request.h"

#include "base/env.h"

namespace weft::transport::ucx {
namespace {

WEFT_ENV_KNOB(kWaitSpinUs, "WEFT_UCX_WAIT_SPIN_US", "50",
              "microseconds a UCX request Wait() spins (driving the UCP worker) before it sleeps");

}  // namespace

int64_t UcxRequest::WaitSpinUs() {
  static const int64_t spin_us = kWaitSpinUs.GetInt();
  return spin_us;
}

}  // namespace weft::transport::ucx
