// GPipe: every stage runs all m forwards, then all m backwards.
//   stage s: for mb in 0..m-1: recv act(mb) from s-1 · F(mb) · send act(mb) to s+1
//            for mb in 0..m-1: recv grad(mb) from s+1 · B(mb) · send grad(mb) to s-1
//            all-reduce (its gradients, across replicas)
// Cost with per-stage times t_f, t_b and no transfers: (m + p − 1)(t_f + t_b), bubble
// (p − 1)/m of the ideal m(t_f + t_b). Stashes m micro-batches of activations per stage.
#include "runtime/pipeline/schedule.h"

namespace weft::runtime::pipeline {

std::vector<StageProgram> MakeGPipeSchedule(const ScheduleShape& shape) {
  const int p = shape.pp, m = shape.micro_batches;
  std::vector<StageProgram> out(p);
  for (int s = 0; s < p; ++s) {
    StageProgram& prog = out[s];
    for (int mb = 0; mb < m; ++mb) {
      if (s > 0) prog.push_back({ActionKind::kRecvAct, mb, s, s - 1});
      prog.push_back({ActionKind::kForward, mb, s, -1});
      if (s < p - 1) prog.push_back({ActionKind::kSendAct, mb, s, s + 1});
    }
    for (int mb = 0; mb < m; ++mb) {
      if (s < p - 1) prog.push_back({ActionKind::kRecvGrad, mb, s, s + 1});
      prog.push_back({ActionKind::kBackward, mb, s, -1});
      if (s > 0) prog.push_back({ActionKind::kSendGrad, mb, s, s - 1});
    }
    prog.push_back({ActionKind::kAllReduce, -1, s, -1});
  }
  return out;
}

}  // namespace weft::runtime::pipeline
