// Executes a stage's action list; see pipeline_executor.h for the protocol.
#include "runtime/train/pipeline_executor.h"

#include <chrono>
#include <cstring>

namespace weft::runtime::train {

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Tags: activations and gradients of a chunk's micro-batch; evaluation batches apart.
int Tag(int chunk, int micro) { return chunk * 65536 + micro; }
int EvalTag(int chunk, int batch) { return (1 << 30) + chunk * 65536 + (batch % 65536); }

// Every pipeline message carries its send time in two trailing floats (one double).
constexpr size_t kStampFloats = 2;
double Now() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }
void Stamp(std::vector<float>& buf) {
  double t = Now();
  std::memcpy(buf.data() + buf.size() - kStampFloats, &t, sizeof(t));
}
double StampOf(const std::vector<float>& buf) {
  double t;
  std::memcpy(&t, buf.data() + buf.size() - kStampFloats, sizeof(t));
  return t;
}

}  // namespace

std::vector<Channel> PipelineChannels(int pp, bool interleaved) {
  std::vector<Channel> out;
  for (int s = 0; s + 1 < pp; ++s) {
    out.push_back({false, s, s + 1, 0, nullptr});
    out.push_back({true, s + 1, s, 0, nullptr});
  }
  if (interleaved && pp > 1) {
    out.push_back({false, pp - 1, 0, 0, nullptr});
    out.push_back({true, 0, pp - 1, 0, nullptr});
  }
  return out;
}

void StepTimes::Add(const StepTimes& o) {
  compute += o.compute;
  optimizer += o.optimizer;
  transfer_wait += o.transfer_wait;
  allreduce_wait += o.allreduce_wait;
  pipeline_wall += o.pipeline_wall;
  wall += o.wall;
}

Result<std::unique_ptr<PipelineExecutor>> PipelineExecutor::Create(const planner::Plan& plan,
                                                                   int stage, int replica,
                                                                   const MlpShape& shape,
                                                                   StageComms comms,
                                                                   const ExecutorOptions& options) {
  const int p = plan.config.pp, C = plan.config.chunks();
  if (stage < 0 || stage >= p || replica < 0 || replica >= plan.config.dp) {
    return InvalidArgumentError("stage " + std::to_string(stage) + " / replica " +
                                std::to_string(replica) + " outside the plan");
  }
  if (plan.boundaries.size() != size_t(C) + 1 || plan.boundaries.back() != shape.layers()) {
    return InvalidArgumentError("plan cuts " + std::to_string(plan.boundaries.back()) +
                                " layers but the MLP has " + std::to_string(shape.layers()));
  }
  if (!comms.dp || comms.dp->world_size() != plan.config.dp) {
    return InvalidArgumentError("the data-parallel communicator does not match the plan");
  }
  for (const Channel& ch : comms.channels) {
    if (!ch.comm || ch.comm->world_size() != 2) {
      return InvalidArgumentError("pipeline channels must be two-rank communicators");
    }
  }
  std::unique_ptr<PipelineExecutor> e(new PipelineExecutor());
  e->plan_ = plan;
  e->stage_ = stage;
  e->replica_ = replica;
  e->chunks_total_ = C;
  e->shape_ = shape;
  e->comms_ = comms;
  e->options_ = options;
  e->micro_rows_ = static_cast<int>(plan.micro_batch_size);
  pipeline::ScheduleShape sh{p, plan.config.micro_batches, plan.config.virtual_stages};
  WEFT_ASSIGN_OR_RETURN(auto programs, pipeline::MakeSchedule(plan.config.schedule, sh));
  WEFT_RETURN_IF_ERROR(pipeline::ValidateSchedule(programs, sh));
  e->program_ = programs[stage];
  for (const pipeline::Action& a : e->program_) {
    bool grad =
        a.kind == pipeline::ActionKind::kSendGrad || a.kind == pipeline::ActionKind::kRecvGrad;
    bool send =
        a.kind == pipeline::ActionKind::kSendGrad || a.kind == pipeline::ActionKind::kSendAct;
    bool recv =
        a.kind == pipeline::ActionKind::kRecvGrad || a.kind == pipeline::ActionKind::kRecvAct;
    if ((send && !e->ChannelOf(grad, stage, a.peer)) ||
        (recv && !e->ChannelOf(grad, a.peer, stage))) {
      return InvalidArgumentError("no pipeline channel for " +
                                  std::string(pipeline::ActionName(a.kind)) + " between stages " +
                                  std::to_string(stage) + " and " + std::to_string(a.peer));
    }
  }
  const int m = plan.config.micro_batches, b = e->micro_rows_;
  for (int c = stage; c < C; c += p) {
    Chunk ch;
    ch.index = c;
    ch.model =
        std::make_unique<MlpChunk>(shape, plan.boundaries[c], plan.boundaries[c + 1], options.seed);
    ch.opt = std::make_unique<Optimizer>(options.optimizer, options.lr, options.momentum,
                                         ch.model->param_count());
    ch.stash.resize(m);
    ch.act_in.assign(m, std::vector<float>(size_t(b) * ch.model->in_features() + kStampFloats));
    ch.grad_out.assign(m, std::vector<float>(size_t(b) * ch.model->out_features() + kStampFloats));
    ch.act_out.assign(m, std::vector<float>(size_t(b) * ch.model->out_features() + kStampFloats));
    if (c > 0) {
      ch.grad_in.assign(m, std::vector<float>(size_t(b) * ch.model->in_features() + kStampFloats));
    }
    e->chunks_.push_back(std::move(ch));
  }
  return e;
}

const Channel* PipelineExecutor::ChannelOf(bool grad, int from, int to) const {
  for (const Channel& c : comms_.channels) {
    if (c.grad == grad && c.from == from && c.to == to) return &c;
  }
  return nullptr;
}

std::string PipelineExecutor::PeerName(bool grad, int from, int to) const {
  int peer = from == stage_ ? to : from;
  const Channel* c = ChannelOf(grad, from, to);
  return "stage " + std::to_string(peer) + " (rank " + std::to_string(c ? c->world_peer : -1) + ")";
}

void PipelineExecutor::LaunchBucket(Chunk& ch, int lo, int hi) {
  if (plan_.config.dp == 1 || lo >= hi || !launch_error_.ok()) return;
  float* g = ch.model->grads() + ch.model->LayerOffset(lo);
  size_t n =
      ch.model->LayerOffset(hi - 1) + ch.model->LayerSize(hi - 1) - ch.model->LayerOffset(lo);
  auto w = comms_.dp->AllReduce(g, g, static_cast<int64_t>(n), DType::kFloat32, ReduceOp::kSum);
  if (!w.ok()) {
    launch_error_ = w.status();
    return;
  }
  pending_allreduces_.push_back(*w);
}

Status PipelineExecutor::Step(const StepInput& in, StepOutput* out, StepTimes* times) {
  const auto step_start = Clock::now();
  const int m = plan_.config.micro_batches, b = micro_rows_, C = chunks_total_;
  StepTimes t;
  for (Chunk& ch : chunks_) {
    ch.backwards_done = 0;
    ch.bucket_hi = ch.model->end();
  }
  launch_error_ = Status();
  for (size_t i = 0; i < program_.size(); ++i) {
    const pipeline::Action& a = program_[i];
    Chunk* ch = ChunkOf(a.chunk);
    const int mb = a.micro;
    switch (a.kind) {
      case pipeline::ActionKind::kRecvAct:
      case pipeline::ActionKind::kRecvGrad: {
        bool grad = a.kind == pipeline::ActionKind::kRecvGrad;
        std::vector<float>& buf = grad ? ch->grad_out[mb] : ch->act_in[mb];
        // Received on this thread when needed (Wait runs the operation inline): a message that
        // already arrived costs no thread hand-off, and one still on its way wakes this thread
        // directly. Leaving receives to the communicator's worker costs a wake-up of that
        // thread per message, which on busy cores is a scheduling delay.
        const Channel* c = ChannelOf(grad, a.peer, stage_);
        int src_chunk = grad ? a.chunk + 1 : a.chunk - 1;
        auto start = Clock::now();
        double waiting_since = Now();
        auto w = c->comm->Recv(buf.data(), static_cast<int64_t>(buf.size()), DType::kFloat32,
                               1 - c->comm->rank(), Tag(src_chunk, mb));
        Status s = w.ok() ? w->Wait() : w.status();
        t.transfer_wait += Since(start);
        // A receive that waited from before the send measures the transfer itself.
        if (s.ok() && StampOf(buf) >= waiting_since) {
          transfer_s_ += Now() - StampOf(buf);
          ++transfer_n_;
        }
        if (!s.ok()) {
          return s.WithContext(std::string(pipeline::ActionName(a.kind)) + " of micro-batch " +
                               std::to_string(mb) + " from " + PeerName(grad, a.peer, stage_));
        }
        break;
      }
      case pipeline::ActionKind::kSendAct:
      case pipeline::ActionKind::kSendGrad: {
        bool grad = a.kind == pipeline::ActionKind::kSendGrad;
        std::vector<float>& buf = grad ? ch->grad_in[mb] : ch->act_out[mb];
        const Channel* c = ChannelOf(grad, stage_, a.peer);
        if (!grad) {
          const std::vector<float>& y = ch->stash[mb].outputs.back();
          std::memcpy(buf.data(), y.data(), y.size() * sizeof(float));
        }
        Stamp(buf);
        auto w = c->comm->Send(buf.data(), static_cast<int64_t>(buf.size()), DType::kFloat32,
                               1 - c->comm->rank(), Tag(a.chunk, mb));
        if (!w.ok()) {
          return w.status().WithContext(std::string(pipeline::ActionName(a.kind)) + " to " +
                                        PeerName(grad, stage_, a.peer));
        }
        // Start it now on this thread: left to the communicator's worker, an operation nobody
        // waits on starts only after WEFT_PROGRESS_POLL_US. Below the transport's eager size
        // this returns at once; above it, once the receiver (which posted its receives at the
        // start of the step) has taken the message.
        w->Test();
        pending_sends_.push_back(*w);
        break;
      }
      case pipeline::ActionKind::kForward: {
        auto start = Clock::now();
        const float* x =
            a.chunk == 0 ? in.images + size_t(mb) * b * shape_.inputs : ch->act_in[mb].data();
        ch->model->Forward(x, b, &ch->stash[mb]);
        if (a.chunk == C - 1) {
          const std::vector<float>& logits = ch->stash[mb].outputs.back();
          out->loss_sum +=
              SoftmaxCrossEntropy(logits.data(), in.labels + size_t(mb) * b, b, shape_.classes,
                                  in.loss_scale, ch->grad_out[mb].data(), &out->correct);
        }
        double d = Since(start);
        t.compute += d;
        ch->fwd_s += d;
        ++ch->fwd_n;
        break;
      }
      case pipeline::ActionKind::kBackward: {
        auto start = Clock::now();
        bool last = ++ch->backwards_done == m;
        float* dx = a.chunk > 0 ? ch->grad_in[mb].data() : nullptr;
        std::function<void(int)> done;
        if (last && plan_.config.dp > 1) {
          // Gradients of layer l are final: close the bucket once it is big enough.
          done = [&, ch](int l) {
            size_t bytes =
                4 * (ch->model->LayerOffset(ch->bucket_hi - 1) +
                     ch->model->LayerSize(ch->bucket_hi - 1) - ch->model->LayerOffset(l));
            if (static_cast<int64_t>(bytes) >= options_.bucket_bytes) {
              LaunchBucket(*ch, l, ch->bucket_hi);
              ch->bucket_hi = l;
            }
          };
        }
        ch->model->Backward(ch->stash[mb], ch->grad_out[mb].data(), dx, done);
        double d = Since(start);
        t.compute += d;
        ch->bwd_s += d;
        ++ch->bwd_n;
        break;
      }
      case pipeline::ActionKind::kAllReduce:
        LaunchBucket(*ch, ch->model->first(), ch->bucket_hi);
        ch->bucket_hi = ch->model->first();
        break;
    }
  }
  auto wait_start = Clock::now();
  for (const collectives::Work& w : pending_sends_) {
    Status s = w.Wait();
    if (!s.ok()) return s.WithContext("pipeline send from stage " + std::to_string(stage_));
  }
  pending_sends_.clear();
  t.transfer_wait += Since(wait_start);
  t.pipeline_wall = Since(step_start);
  if (!launch_error_.ok()) return launch_error_.WithContext("gradient all-reduce");
  wait_start = Clock::now();
  for (const collectives::Work& w : pending_allreduces_) {
    Status s = w.Wait();
    if (!s.ok()) {
      return s.WithContext("gradient all-reduce of stage " + std::to_string(stage_) +
                           " across its " + std::to_string(plan_.config.dp) + " replicas");
    }
  }
  pending_allreduces_.clear();
  t.allreduce_wait += Since(wait_start);
  auto opt_start = Clock::now();
  for (Chunk& ch : chunks_) {
    ch.opt->Step(ch.model->params(), ch.model->grads());
    ch.model->ZeroGrads();
  }
  t.optimizer += Since(opt_start);
  t.wall = Since(step_start);
  times->Add(t);
  return Status();
}

Status PipelineExecutor::Evaluate(const float* images, const uint8_t* labels, int rows, int batch,
                                  int* correct) {
  const int C = chunks_total_, p = plan_.config.pp;
  std::vector<float> in;
  Stash st;
  for (int start = 0, k = 0; start < rows; start += batch, ++k) {
    int n = std::min(batch, rows - start);
    for (Chunk& ch : chunks_) {
      const int c = ch.index;
      const float* x = images + size_t(start) * shape_.inputs;
      if (c > 0) {
        in.resize(size_t(n) * ch.model->in_features());
        const Channel* cc = ChannelOf(false, (c - 1) % p, stage_);
        auto w = cc->comm->Recv(in.data(), static_cast<int64_t>(in.size()), DType::kFloat32,
                                1 - cc->comm->rank(), EvalTag(c - 1, k));
        Status s = w.ok() ? w->Wait() : w.status();
        if (!s.ok()) {
          return s.WithContext("evaluation: activations from " +
                               PeerName(false, (c - 1) % p, stage_));
        }
        x = in.data();
      }
      ch.model->Forward(x, n, &st);
      std::vector<float>& y = st.outputs.back();
      if (c == C - 1) {
        SoftmaxCrossEntropy(y.data(), labels + start, n, shape_.classes, 0, nullptr, correct);
      } else {
        // Sent synchronously: the stash is reused for the next batch.
        const Channel* cc = ChannelOf(false, stage_, (c + 1) % p);
        auto w = cc->comm->Send(y.data(), static_cast<int64_t>(y.size()), DType::kFloat32,
                                1 - cc->comm->rank(), EvalTag(c, k));
        Status s = w.ok() ? w->Wait() : w.status();
        if (!s.ok()) {
          return s.WithContext("evaluation: activations to " +
                               PeerName(false, stage_, (c + 1) % p));
        }
      }
    }
  }
  return Status();
}

std::vector<std::pair<int, std::pair<double, double>>> PipelineExecutor::ChunkTimes() const {
  std::vector<std::pair<int, std::pair<double, double>>> out;
  for (const Chunk& ch : chunks_) {
    out.push_back(
        {ch.index, {ch.fwd_n ? ch.fwd_s / ch.fwd_n : 0, ch.bwd_n ? ch.bwd_s / ch.bwd_n : 0}});
  }
  return out;
}

}  // namespace weft::runtime::train
