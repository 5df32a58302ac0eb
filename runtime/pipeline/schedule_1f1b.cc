// 1F1B (PipeDream-Flush): stage s runs w = min(p − s − 1, m) warm-up forwards, then alternates one
// forward and one backward, then drains the remaining w backwards:
//   warm-up   i < w:      recv act(i) · F(i) · send act(i)
//   steady    i < m − w:  recv act(w+i) · F(w+i) · send act(w+i) ·
//                         recv grad(i) · B(i) · send grad(i)
//   cool-down i ≥ m − w:  recv grad(i) · B(i) · send grad(i)
//   then the all-reduce
// (no receive on stage 0's activations or the last stage's gradients, no send past the ends).
// Same time as GPipe, (m + p − 1)(t_f + t_b), bubble (p − 1)/m, but at most p − s micro-batches
// of activations are stashed on stage s instead of m.
#include <algorithm>

#include "runtime/pipeline/schedule.h"

namespace weft::runtime::pipeline {

std::vector<StageProgram> Make1F1BSchedule(const ScheduleShape& shape) {
  const int p = shape.pp, m = shape.micro_batches;
  std::vector<StageProgram> out(p);
  for (int s = 0; s < p; ++s) {
    StageProgram& prog = out[s];
    auto fwd = [&](int mb) {
      if (s > 0) prog.push_back({ActionKind::kRecvAct, mb, s, s - 1});
      prog.push_back({ActionKind::kForward, mb, s, -1});
      if (s < p - 1) prog.push_back({ActionKind::kSendAct, mb, s, s + 1});
    };
    auto bwd = [&](int mb) {
      if (s < p - 1) prog.push_back({ActionKind::kRecvGrad, mb, s, s + 1});
      prog.push_back({ActionKind::kBackward, mb, s, -1});
      if (s > 0) prog.push_back({ActionKind::kSendGrad, mb, s, s - 1});
    };
    const int warmup = std::min(p - s - 1, m);
    for (int i = 0; i < warmup; ++i) fwd(i);
    for (int i = 0; i < m - warmup; ++i) {
      fwd(warmup + i);
      bwd(i);
    }
    for (int i = m - warmup; i < m; ++i) bwd(i);
    prog.push_back({ActionKind::kAllReduce, -1, s, -1});
  }
  return out;
}

}  // namespace weft::runtime::pipeline
