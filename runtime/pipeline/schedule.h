// Pipeline schedules as data: pure functions that give each stage its ordered list of actions
// (forward, backward, send, receive, all-reduce), a validator that runs the lists under the
// executor's blocking semantics, and a timeline simulator. Part of weft_pipeline (base + planner).
//
// Semantics (those of the executor, runtime/train/pipeline_executor.h): a send is posted and
// never blocks; messages of one kind (activation or gradient) between two stages arrive in the
// order they were sent; a receive blocks until its message has arrived. Compute runs one action
// at a time per stage. An all-reduce starts the data-parallel gradient exchange of one chunk and
// runs in the background; the step ends when every stage's compute and all-reduces are done.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "runtime/planner/planner.h"

namespace weft::runtime::pipeline {

using planner::ScheduleKind;

enum class ActionKind { kForward, kBackward, kSendAct, kRecvAct, kSendGrad, kRecvGrad, kAllReduce };
const char* ActionName(ActionKind k);

// One action. `chunk` is the global model chunk (0 … pp·v−1; chunk c runs on stage c % pp);
// `peer` is the other stage of a send or receive (-1 otherwise).
struct Action {
  ActionKind kind;
  int micro = -1;
  int chunk = 0;
  int peer = -1;
  friend bool operator==(const Action&, const Action&) = default;
};

struct ScheduleShape {
  int pp = 1;
  int micro_batches = 1;
  int virtual_stages = 1;
  int chunks() const { return pp * virtual_stages; }
};

using StageProgram = std::vector<Action>;

// The programs of every stage (index = stage). InvalidArgument when the shape does not suit the
// schedule (interleaved needs v >= 2, pp >= 2 and micro-batches a multiple of pp).
Result<std::vector<StageProgram>> MakeSchedule(ScheduleKind kind, const ScheduleShape& shape);
std::vector<StageProgram> MakeGPipeSchedule(const ScheduleShape& shape);  // schedule_gpipe.cc
std::vector<StageProgram> Make1F1BSchedule(const ScheduleShape& shape);   // schedule_1f1b.cc
std::vector<StageProgram> MakeInterleavedSchedule(
    const ScheduleShape& shape);  // schedule_interleaved.cc

// Checks that every micro-batch runs forward then backward on every chunk, on the chunk's stage;
// that sends and receives match (same kind, micro-batch and chunk, in order per channel); that
// every chunk's all-reduce follows its last backward; and, by running the programs under the
// semantics above, that no stage waits forever. InvalidArgument naming the stage and action.
Status ValidateSchedule(const std::vector<StageProgram>& programs, const ScheduleShape& shape);

// Costs for the simulator, in seconds: per chunk, one micro-batch's forward and backward; per
// chunk, the transfer of its output activation (and of the gradient coming back) to the next
// chunk's stage; per chunk, its gradient all-reduce.
struct ScheduleCosts {
  std::vector<double> fwd, bwd, transfer, allreduce;
  // Same costs for every chunk.
  static ScheduleCosts Uniform(int chunks, double fwd, double bwd, double transfer = 0,
                               double allreduce = 0);
};

struct Interval {
  ActionKind kind;
  int micro, chunk;
  double start, end;
};

struct Timeline {
  double makespan = 0;       // the step: last compute or all-reduce end over stages
  std::vector<double> busy;  // per stage: compute time
  std::vector<double> idle;  // per stage: makespan − busy
  std::vector<std::vector<Interval>> intervals;  // per stage: compute and all-reduce intervals
  // Bubble relative to the ideal compute time (the convention of the GPipe/Megatron papers:
  // (p−1)/m for GPipe and 1F1B, (p−1)/(v·m) for interleaved), on the busiest stage.
  double bubble_ratio = 0;
  // Idle share of the step on the busiest stage: bubble_ratio / (1 + bubble_ratio).
  double idle_fraction = 0;
  std::string Gantt(double seconds_per_char) const;  // one text row per stage
};

// Runs the programs against `costs`. Fails like ValidateSchedule on a deadlock.
Result<Timeline> SimulateSchedule(const std::vector<StageProgram>& programs,
                                  const ScheduleShape& shape, const ScheduleCosts& costs);

}  // namespace weft::runtime::pipeline
