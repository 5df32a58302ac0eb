// The pipeline executor: runs one stage of a plan (planner.h) on weft communicators, step by
// step, following the stage's action list from the plan's schedule (runtime/pipeline). Part of
// weft_train.
//
// Activations go to the next stage and gradients come back by tagged send/recv, each directed
// channel (kind, from stage, to stage) on its own two-rank communicator, so that a receive
// waiting on one channel never holds up a send on another (a communicator runs its operations in
// order); sends and receives run on the calling thread; each chunk's gradients are all-reduced
// (sum) across the stage's replicas in buckets of whole layers, started during the last
// micro-batch's backward as soon as each bucket is final, so they overlap the rest of the backward
// pass; the optimizer steps after every bucket is done.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "collectives/communicator.h"
#include "runtime/pipeline/schedule.h"
#include "runtime/planner/planner.h"
#include "runtime/train/mlp_chunk.h"

namespace weft::runtime::train {

// A directed pipeline channel of this rank: a two-rank communicator holding this rank and the
// stage `to` (if this rank sends) or `from` (if it receives) of the same replica.
struct Channel {
  bool grad = false;  // gradients (backward) or activations (forward)
  int from = 0, to = 0;
  int world_peer = 0;  // the other end's world rank, for messages
  collectives::Communicator* comm = nullptr;
};

// Communicators of one rank, borrowed; they must outlive the executor. `dp` holds the stage's
// replicas (rank = replica); `channels` every channel this rank sends or receives on.
struct StageComms {
  collectives::Communicator* dp = nullptr;
  std::vector<Channel> channels;
};

// The channels a schedule needs for one pipeline of `pp` stages: activations s → s+1 and
// gradients s+1 → s, plus the wrap-around pair between stage pp−1 and stage 0 when interleaved.
// Each entry: {grad, from, to}.
std::vector<Channel> PipelineChannels(int pp, bool interleaved);

struct ExecutorOptions {
  int64_t bucket_bytes = 256 << 10;
  Optimizer::Kind optimizer = Optimizer::Kind::kAdam;
  float lr = 1e-3f;
  float momentum = 0.9f;
  uint64_t seed = 1;
};

// Time spent in one or more steps, seconds.
struct StepTimes {
  double compute = 0;  // forward, backward and loss
  double optimizer = 0;
  double transfer_wait = 0;   // blocked on pipeline receives (bubble included) and send completion
  double allreduce_wait = 0;  // blocked on gradient all-reduces after the last backward
  double pipeline_wall = 0;   // from step start to the end of the last backward's transfers
  double wall = 0;            // whole steps
  void Add(const StepTimes& o);
};

// One micro-batch's inputs for a step: images (rows × 784, only read by the stage holding the
// first chunk) and labels (only read by the stage holding the last chunk).
struct StepInput {
  const float* images = nullptr;  // the replica's batch, micro-batch mb at rows [mb·b, (mb+1)·b)
  const uint8_t* labels = nullptr;
  float loss_scale = 1;  // 1 / global batch
};

struct StepOutput {
  double loss_sum = 0;  // summed over the replica's samples (last stage only)
  int correct = 0;
};

// Not thread-safe: one per rank, driven by the rank's main thread.
// Errors: whatever a communicator returns, with context naming the action and the peer stage and
// rank (for example "recv-gradient of micro-batch 3 from stage 1 (rank 2): ...").
class PipelineExecutor {
 public:
  static Result<std::unique_ptr<PipelineExecutor>> Create(const planner::Plan& plan, int stage,
                                                          int replica, const MlpShape& shape,
                                                          StageComms comms,
                                                          const ExecutorOptions& options);

  Status Step(const StepInput& in, StepOutput* out, StepTimes* times);
  // Forward only over `rows` samples in batches of `batch` (the replica's share of a test set);
  // counts correct predictions on the last stage.
  Status Evaluate(const float* images, const uint8_t* labels, int rows, int batch, int* correct);

  int stage() const { return stage_; }
  // Mean time of one pipeline message, from its send to the end of a receive that was already
  // waiting for it (so the wait is the transfer, not the bubble). Senders stamp each message with
  // the monotonic clock, which all ranks of one host share; ranks on other hosts give no samples.
  double MeanTransferSeconds() const { return transfer_n_ ? transfer_s_ / transfer_n_ : 0; }
  int64_t TransferSamples() const { return transfer_n_; }
  // Mean forward and backward seconds of one micro-batch per chunk of this stage (index: chunk).
  std::vector<std::pair<int, std::pair<double, double>>> ChunkTimes() const;
  const std::vector<pipeline::Action>& program() const { return program_; }

 private:
  PipelineExecutor() = default;
  struct Chunk {
    int index = 0;
    std::unique_ptr<MlpChunk> model;
    std::unique_ptr<Optimizer> opt;
    std::vector<Stash> stash;                  // per micro-batch
    std::vector<std::vector<float>> act_in;    // received activations (chunk > 0)
    std::vector<std::vector<float>> grad_out;  // gradient of the chunk's output
    std::vector<std::vector<float>> grad_in;   // gradient of its input, to send back
    std::vector<std::vector<float>> act_out;   // the output, to send on
    // (message buffers end with a send-time stamp: kStampFloats floats)
    int backwards_done = 0;
    int bucket_hi = 0;  // layer end of the bucket being filled
    double fwd_s = 0, bwd_s = 0;
    int64_t fwd_n = 0, bwd_n = 0;
  };
  Chunk* ChunkOf(int c) { return &chunks_[(c - stage_) / plan_.config.pp]; }
  const Channel* ChannelOf(bool grad, int from, int to) const;
  std::string PeerName(bool grad, int from, int to) const;
  void LaunchBucket(Chunk& ch, int lo_layer, int hi_layer);

  planner::Plan plan_;
  int stage_ = 0, replica_ = 0, chunks_total_ = 0, micro_rows_ = 0;
  MlpShape shape_;
  StageComms comms_;
  ExecutorOptions options_;
  std::vector<Chunk> chunks_;
  std::vector<pipeline::Action> program_;
  std::vector<collectives::Work> pending_sends_, pending_allreduces_;
  Status launch_error_;
  std::string host_;
  double transfer_s_ = 0;
  int64_t transfer_n_ = 0;
};

}  // namespace weft::runtime::train
