// Interleaved 1F1B (Megatron-LM): the model is cut into p·v chunks, chunk c on stage c % p, so a
// stage holds v chunks and a micro-batch visits every stage v times. Stage s processes forward
// steps k = 0 … m·v−1 of (chunk (k/p)%v·p + s, micro-batch (k/(p·v))·p + k%p), backward steps the
// same with the chunk order reversed; it runs w = min((p − s − 1)·2 + (v − 1)·p, m·v) warm-up
// forwards, then alternates forward and backward, then drains. Messages go to the stage of the
// next (forward) or previous (backward) chunk, wrapping from stage p−1 to stage 0. Each chunk's
// all-reduce starts after its last backward.
// Time with per-stage t_f, t_b (split evenly over the chunks): (m + (p − 1)/v)(t_f + t_b) plus
// transfers, bubble (p − 1)/(v·m); v times the messages of 1F1B. Needs m a multiple of p.
#include <algorithm>

#include "runtime/pipeline/schedule.h"

namespace weft::runtime::pipeline {

std::vector<StageProgram> MakeInterleavedSchedule(const ScheduleShape& shape) {
  const int p = shape.pp, m = shape.micro_batches, v = shape.virtual_stages;
  const int C = p * v, total = m * v;
  std::vector<StageProgram> out(p);
  for (int s = 0; s < p; ++s) {
    StageProgram& prog = out[s];
    auto micro_of = [&](int k) { return (k / (p * v)) * p + k % p; };
    auto fwd = [&](int k) {
      int c = ((k / p) % v) * p + s, mb = micro_of(k);
      if (c > 0) prog.push_back({ActionKind::kRecvAct, mb, c, (c - 1) % p});
      prog.push_back({ActionKind::kForward, mb, c, -1});
      if (c < C - 1) prog.push_back({ActionKind::kSendAct, mb, c, (c + 1) % p});
    };
    std::vector<int> backwards_left(v, m);
    auto bwd = [&](int k) {
      int local = v - 1 - (k / p) % v;
      int c = local * p + s, mb = micro_of(k);
      if (c < C - 1) prog.push_back({ActionKind::kRecvGrad, mb, c, (c + 1) % p});
      prog.push_back({ActionKind::kBackward, mb, c, -1});
      if (c > 0) prog.push_back({ActionKind::kSendGrad, mb, c, (c - 1) % p});
      if (--backwards_left[local] == 0) prog.push_back({ActionKind::kAllReduce, -1, c, -1});
    };
    const int warmup = std::min((p - s - 1) * 2 + (v - 1) * p, total);
    for (int k = 0; k < warmup; ++k) fwd(k);
    for (int k = 0; k < total - warmup; ++k) {
      fwd(warmup + k);
      bwd(k);
    }
    for (int k = total - warmup; k < total; ++k) bwd(k);
  }
  return out;
}

}  // namespace weft::runtime::pipeline
