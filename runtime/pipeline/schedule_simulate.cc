// The schedule validator and timeline simulator: both run the stage programs under the
// executor's semantics (schedule.h), one with unit costs to find deadlocks and mismatches, the
// other with real costs to predict the step and its bubble.
#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <tuple>

#include "runtime/pipeline/schedule.h"

namespace weft::runtime::pipeline {

const char* ActionName(ActionKind k) {
  switch (k) {
    case ActionKind::kForward:
      return "forward";
    case ActionKind::kBackward:
      return "backward";
    case ActionKind::kSendAct:
      return "send-activation";
    case ActionKind::kRecvAct:
      return "recv-activation";
    case ActionKind::kSendGrad:
      return "send-gradient";
    case ActionKind::kRecvGrad:
      return "recv-gradient";
    case ActionKind::kAllReduce:
      return "all-reduce";
  }
  return "?";
}

Result<std::vector<StageProgram>> MakeSchedule(ScheduleKind kind, const ScheduleShape& shape) {
  if (shape.pp < 1 || shape.micro_batches < 1 || shape.virtual_stages < 1) {
    return InvalidArgumentError("schedule needs pp, micro-batches and virtual stages >= 1, got " +
                                std::to_string(shape.pp) + ", " +
                                std::to_string(shape.micro_batches) + ", " +
                                std::to_string(shape.virtual_stages));
  }
  switch (kind) {
    case ScheduleKind::kGPipe:
    case ScheduleKind::kOneFOneB:
      if (shape.virtual_stages != 1) {
        return InvalidArgumentError(std::string(planner::ScheduleName(kind)) +
                                    " runs one chunk per stage (virtual stages 1)");
      }
      return kind == ScheduleKind::kGPipe ? MakeGPipeSchedule(shape) : Make1F1BSchedule(shape);
    case ScheduleKind::kInterleaved:
      if (shape.virtual_stages < 2 || shape.pp < 2 || shape.micro_batches % shape.pp != 0) {
        return InvalidArgumentError(
            "interleaved needs virtual stages >= 2, pp >= 2 and micro-batches a multiple of pp "
            "(got v " +
            std::to_string(shape.virtual_stages) + ", pp " + std::to_string(shape.pp) + ", m " +
            std::to_string(shape.micro_batches) + ")");
      }
      return MakeInterleavedSchedule(shape);
  }
  return InvalidArgumentError("unknown schedule");
}

ScheduleCosts ScheduleCosts::Uniform(int chunks, double fwd, double bwd, double transfer,
                                     double allreduce) {
  ScheduleCosts c;
  c.fwd.assign(chunks, fwd);
  c.bwd.assign(chunks, bwd);
  c.transfer.assign(chunks, transfer);
  c.allreduce.assign(chunks, allreduce);
  return c;
}

namespace {

std::string Where(int stage, size_t index, const Action& a) {
  std::string s = "stage " + std::to_string(stage) + ", action " + std::to_string(index) + " (" +
                  ActionName(a.kind);
  if (a.micro >= 0) s += " micro-batch " + std::to_string(a.micro);
  s += " chunk " + std::to_string(a.chunk);
  if (a.peer >= 0) s += " peer " + std::to_string(a.peer);
  return s + ")";
}

// Per-stage structural checks: chunks on their stage, peers right, data before use, each
// forward/backward once, all-reduce after the chunk's last backward.
Status CheckStructure(const std::vector<StageProgram>& programs, const ScheduleShape& shape) {
  const int p = shape.pp, m = shape.micro_batches, C = shape.chunks();
  if (static_cast<int>(programs.size()) != p) {
    return InvalidArgumentError("schedule has " + std::to_string(programs.size()) +
                                " stage programs for " + std::to_string(p) + " stages");
  }
  for (int s = 0; s < p; ++s) {
    // state per (chunk, micro): 1 activation in, 2 forward done, 4 grad in, 8 backward done.
    std::map<std::pair<int, int>, int> st;
    std::map<int, int> backwards, allreduces;
    for (size_t i = 0; i < programs[s].size(); ++i) {
      const Action& a = programs[s][i];
      auto bad = [&](const std::string& why) {
        return InvalidArgumentError(Where(s, i, a) + ": " + why);
      };
      if (a.chunk < 0 || a.chunk >= C || a.chunk % p != s) return bad("chunk not on this stage");
      if (a.kind != ActionKind::kAllReduce && (a.micro < 0 || a.micro >= m)) {
        return bad("micro-batch out of range");
      }
      int& f = st[{a.chunk, a.micro}];
      const int c = a.chunk;
      switch (a.kind) {
        case ActionKind::kRecvAct:
          if (c == 0) return bad("the first chunk has no activation to receive");
          if (a.peer != (c - 1) % p)
            return bad("activation comes from stage " + std::to_string((c - 1) % p));
          if (f & 1) return bad("activation received twice");
          f |= 1;
          break;
        case ActionKind::kForward:
          if (f & 2) return bad("forward runs twice");
          if (c > 0 && !(f & 1)) return bad("forward before its activation arrived");
          f |= 2;
          break;
        case ActionKind::kSendAct:
          if (c == C - 1) return bad("the last chunk sends no activation");
          if (a.peer != (c + 1) % p)
            return bad("activation goes to stage " + std::to_string((c + 1) % p));
          if (!(f & 2)) return bad("activation sent before the forward");
          break;
        case ActionKind::kRecvGrad:
          if (c == C - 1) return bad("the last chunk has no gradient to receive");
          if (a.peer != (c + 1) % p)
            return bad("gradient comes from stage " + std::to_string((c + 1) % p));
          if (f & 4) return bad("gradient received twice");
          f |= 4;
          break;
        case ActionKind::kBackward:
          if (f & 8) return bad("backward runs twice");
          if (!(f & 2)) return bad("backward before forward");
          if (c < C - 1 && !(f & 4)) return bad("backward before its gradient arrived");
          f |= 8;
          ++backwards[c];
          break;
        case ActionKind::kSendGrad:
          if (c == 0) return bad("the first chunk sends no gradient");
          if (a.peer != (c - 1) % p)
            return bad("gradient goes to stage " + std::to_string((c - 1) % p));
          if (!(f & 8)) return bad("gradient sent before the backward");
          break;
        case ActionKind::kAllReduce:
          if (backwards[c] != m) return bad("all-reduce before the chunk's last backward");
          if (allreduces[c]++) return bad("all-reduce twice");
          break;
      }
    }
    for (int c = s; c < C; c += p) {
      for (int mb = 0; mb < m; ++mb) {
        int f = st[{c, mb}];
        if (!(f & 2) || !(f & 8)) {
          return InvalidArgumentError("stage " + std::to_string(s) + ": micro-batch " +
                                      std::to_string(mb) + " of chunk " + std::to_string(c) +
                                      " is missing its " + ((f & 2) ? "backward" : "forward"));
        }
      }
      if (allreduces[c] != 1) {
        return InvalidArgumentError("stage " + std::to_string(s) + ": chunk " + std::to_string(c) +
                                    " has no all-reduce");
      }
    }
  }
  return Status();
}

}  // namespace

Result<Timeline> SimulateSchedule(const std::vector<StageProgram>& programs,
                                  const ScheduleShape& shape, const ScheduleCosts& costs) {
  WEFT_RETURN_IF_ERROR(CheckStructure(programs, shape));
  const int p = shape.pp, C = shape.chunks();
  for (const auto* v : {&costs.fwd, &costs.bwd, &costs.transfer, &costs.allreduce}) {
    if (static_cast<int>(v->size()) != C) {
      return InvalidArgumentError("simulator costs need one entry per chunk (" + std::to_string(C) +
                                  ")");
    }
  }
  struct Msg {
    int micro, chunk;
    double arrival;
  };
  // Channel (from, to, is_gradient) → messages in flight, in send order.
  std::map<std::tuple<int, int, int>, std::deque<Msg>> channels;
  std::vector<size_t> pc(p, 0);
  std::vector<double> t(p, 0), ar_free(p, 0);
  Timeline tl;
  tl.busy.assign(p, 0);
  tl.intervals.resize(p);
  bool progress = true;
  while (progress) {
    progress = false;
    for (int s = 0; s < p; ++s) {
      while (pc[s] < programs[s].size()) {
        const Action& a = programs[s][pc[s]];
        if (a.kind == ActionKind::kRecvAct || a.kind == ActionKind::kRecvGrad) {
          bool grad = a.kind == ActionKind::kRecvGrad;
          auto& q = channels[{a.peer, s, grad}];
          if (q.empty()) break;  // blocked until the peer sends
          Msg msg = q.front();
          int want_chunk = grad ? a.chunk + 1 : a.chunk - 1;
          if (msg.micro != a.micro || msg.chunk != want_chunk) {
            return InvalidArgumentError(
                Where(s, pc[s], a) + ": the next message from stage " + std::to_string(a.peer) +
                " is micro-batch " + std::to_string(msg.micro) + " of chunk " +
                std::to_string(msg.chunk) + " (sends and receives are out of order)");
          }
          q.pop_front();
          t[s] = std::max(t[s], msg.arrival);
        } else if (a.kind == ActionKind::kSendAct) {
          channels[{s, a.peer, 0}].push_back({a.micro, a.chunk, t[s] + costs.transfer[a.chunk]});
        } else if (a.kind == ActionKind::kSendGrad) {
          channels[{s, a.peer, 1}].push_back(
              {a.micro, a.chunk, t[s] + costs.transfer[a.chunk - 1]});
        } else if (a.kind == ActionKind::kAllReduce) {
          double start = std::max(t[s], ar_free[s]);
          ar_free[s] = start + costs.allreduce[a.chunk];
          tl.intervals[s].push_back({a.kind, a.micro, a.chunk, start, ar_free[s]});
        } else {
          double d = a.kind == ActionKind::kForward ? costs.fwd[a.chunk] : costs.bwd[a.chunk];
          tl.intervals[s].push_back({a.kind, a.micro, a.chunk, t[s], t[s] + d});
          t[s] += d;
          tl.busy[s] += d;
        }
        ++pc[s];
        progress = true;
      }
    }
  }
  std::string stuck;
  for (int s = 0; s < p; ++s) {
    if (pc[s] < programs[s].size()) {
      if (!stuck.empty()) stuck += "; ";
      stuck += Where(s, pc[s], programs[s][pc[s]]);
    }
  }
  if (!stuck.empty()) return InvalidArgumentError("deadlock: waiting forever at " + stuck);
  for (const auto& [key, q] : channels) {
    if (!q.empty()) {
      return InvalidArgumentError("stage " + std::to_string(std::get<0>(key)) + " sends " +
                                  std::to_string(q.size()) + " message(s) to stage " +
                                  std::to_string(std::get<1>(key)) + " that are never received");
    }
  }
  for (int s = 0; s < p; ++s) tl.makespan = std::max({tl.makespan, t[s], ar_free[s]});
  int busiest = 0;
  for (int s = 0; s < p; ++s) {
    tl.idle.push_back(tl.makespan - tl.busy[s]);
    if (tl.busy[s] > tl.busy[busiest]) busiest = s;
  }
  if (tl.busy[busiest] > 0) {
    tl.bubble_ratio = tl.idle[busiest] / tl.busy[busiest];
    tl.idle_fraction = tl.idle[busiest] / tl.makespan;
  }
  return tl;
}

Status ValidateSchedule(const std::vector<StageProgram>& programs, const ScheduleShape& shape) {
  Result<Timeline> r =
      SimulateSchedule(programs, shape, ScheduleCosts::Uniform(shape.chunks(), 1, 2, 0.5, 0));
  return r.ok() ? Status() : r.status();
}

std::string Timeline::Gantt(double seconds_per_char) const {
  std::string out;
  size_t width = static_cast<size_t>(std::ceil(makespan / seconds_per_char)) + 1;
  for (size_t s = 0; s < intervals.size(); ++s) {
    std::string row(width, '.');
    for (const Interval& iv : intervals[s]) {
      if (iv.kind == ActionKind::kAllReduce) continue;
      size_t a = static_cast<size_t>(iv.start / seconds_per_char);
      size_t b = static_cast<size_t>(iv.end / seconds_per_char);
      // Forwards print their micro-batch as a digit, backwards as a letter.
      char ch = iv.kind == ActionKind::kForward ? static_cast<char>('0' + iv.micro % 10)
                                                : static_cast<char>('a' + iv.micro % 26);
      for (size_t x = a; x < b && x < width; ++x) row[x] = ch;
    }
    out += "stage " + std::to_string(s) + " |" + row + "|\n";
  }
  return out;
}

}  // namespace weft::runtime::pipeline
