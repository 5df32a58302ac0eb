// `weft train`: planning, communicators, data sharding, the epoch loop, reporting.
#include "runtime/train/train_command.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>

#include "base/env.h"
#include "collectives/communicator.h"
#include "runtime/pipeline/schedule.h"
#include "runtime/planner/planner.h"
#include "runtime/train/blas_gemm.h"
#include "runtime/train/fashion_mnist.h"
#include "runtime/train/pipeline_executor.h"

namespace weft::runtime::train {

namespace {

using collectives::Communicator;
using Clock = std::chrono::steady_clock;

struct Args {
  MlpShape shape;
  int64_t batch = 128;
  int epochs = 3;
  float lr = 1e-3f;
  float momentum = 0.9f;
  std::string optimizer = "adam";
  uint64_t seed = 1;
  std::string cluster;
  std::string plan_file;
  std::string plan_out;
  planner::PlanOptions pins;
  int64_t train_limit = 0, test_limit = 0;
  int64_t bucket_bytes = 256 << 10;
  std::string loss_log;
  int fail_rank = -1;
  int64_t fail_step = -1;
  bool quiet = false;
};

void TrainUsage(FILE* out) {
  std::fprintf(
      out,
      "usage: weft train [options]            (under weft run -n N, or alone as one rank)\n"
      "  --depth D --width W        hidden layers and units (3, 256)\n"
      "  --batch B --epochs E       global batch over all replicas, epochs (128, 3)\n"
      "  --optimizer adam|sgd --lr LR --momentum MU --seed S   (adam, 1e-3, 0.9, 1)\n"
      "  --cluster FILE             cluster description to plan for (default: this machine,\n"
      "                             N ranks joined by shared memory)\n"
      "  --pp N --dp N --micro-batches M --schedule gpipe|1f1b|interleaved  planner pins\n"
      "  --plan FILE                run this plan instead of planning; --plan-out FILE saves it\n"
      "  --train-limit N --test-limit N   use the first N samples\n"
      "  --bucket-bytes N           gradient all-reduce bucket (256K)\n"
      "  --loss-log FILE            rank 0 writes the loss of every step\n"
      "  --fail-rank R --fail-step S   fault injection: rank R kills itself at step S\n"
      "  --quiet                    no progress bar\n");
}

bool ParseArgs(const std::vector<std::string>& a, Args* o, std::string* err) {
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string& k = a[i];
    auto next = [&](std::string* v) {
      if (i + 1 >= a.size()) {
        *err = k + " needs a value";
        return false;
      }
      *v = a[++i];
      return true;
    };
    auto integer = [&](int64_t* v, int64_t lo) {
      std::string s;
      if (!next(&s)) return false;
      int64_t x;
      if (!ParseBytes(s, &x) || x < lo) {
        *err = k + " wants an integer >= " + std::to_string(lo) + ", got '" + s + "'";
        return false;
      }
      *v = x;
      return true;
    };
    auto real = [&](float* v) {
      std::string s;
      if (!next(&s)) return false;
      char* end = nullptr;
      double x = std::strtod(s.c_str(), &end);
      if (s.empty() || *end || !(x >= 0)) {
        *err = k + " wants a non-negative number, got '" + s + "'";
        return false;
      }
      *v = static_cast<float>(x);
      return true;
    };
    int64_t x = 0;
    bool ok = true;
    if (k == "--depth")
      ok = integer(&x, 1), o->shape.depth = int(x);
    else if (k == "--width")
      ok = integer(&x, 1), o->shape.width = int(x);
    else if (k == "--batch")
      ok = integer(&o->batch, 1);
    else if (k == "--epochs")
      ok = integer(&x, 1), o->epochs = int(x);
    else if (k == "--lr")
      ok = real(&o->lr);
    else if (k == "--momentum")
      ok = real(&o->momentum);
    else if (k == "--optimizer")
      ok = next(&o->optimizer);
    else if (k == "--seed")
      ok = integer(&x, 0), o->seed = uint64_t(x);
    else if (k == "--cluster")
      ok = next(&o->cluster);
    else if (k == "--plan")
      ok = next(&o->plan_file);
    else if (k == "--plan-out")
      ok = next(&o->plan_out);
    else if (k == "--pp")
      ok = integer(&x, 1), o->pins.pin_pp = int(x);
    else if (k == "--dp")
      ok = integer(&x, 1), o->pins.pin_dp = int(x);
    else if (k == "--micro-batches")
      ok = integer(&x, 1), o->pins.pin_micro_batches = int(x);
    else if (k == "--schedule")
      ok = next(&o->pins.pin_schedule);
    else if (k == "--train-limit")
      ok = integer(&o->train_limit, 1);
    else if (k == "--test-limit")
      ok = integer(&o->test_limit, 1);
    else if (k == "--bucket-bytes")
      ok = integer(&o->bucket_bytes, 1);
    else if (k == "--loss-log")
      ok = next(&o->loss_log);
    else if (k == "--fail-rank")
      ok = integer(&x, 0), o->fail_rank = int(x);
    else if (k == "--fail-step")
      ok = integer(&o->fail_step, 0);
    else if (k == "--quiet")
      o->quiet = true;
    else {
      *err = "unknown argument '" + k + "'";
      return false;
    }
    if (!ok) return false;
  }
  if (o->optimizer != "adam" && o->optimizer != "sgd") {
    *err = "--optimizer must be adam or sgd, got '" + o->optimizer + "'";
    return false;
  }
  return true;
}

bool UnderLauncher() {
  for (const char* v : {"WEFT_RANK", "RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID",
                        "JOB_COMPLETION_INDEX"}) {
    if (std::getenv(v)) return true;
  }
  return false;
}

// This machine as a cluster: `n` ranks joined by shared memory, with the chip speed and the
// link figures measured on the 2-vCPU development machines (README).
planner::ClusterDesc LocalCluster(int n) {
  planner::ClusterDesc c;
  c.name = "local-" + std::to_string(n);
  c.hosts = 1;
  c.chips_per_host = n;
  c.chip_flops = 2e10;
  c.chip_efficiency = 0.5;
  c.chip_memory_bytes = 4e9;
  c.layer_overhead_s = 40e-6;
  c.links.push_back({"shm", n, 25e-6, 1 / 2e9});
  return c;
}

// When one rank dies, the launcher stops the others with SIGTERM; a survivor blocked on the dead
// stage learns of it within milliseconds and should get to say so. So the first SIGTERM/SIGINT
// only arms a 2 s alarm (whose default action ends the process); a second one ends it at once.
std::atomic<int> g_stop_signals{0};  // lock-free, so safe in a signal handler
void OnStopSignal(int sig) {
  if (g_stop_signals.fetch_add(1) > 0) _exit(128 + sig);
  alarm(2);
}
void InstallStopHandler() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

std::string Bar(double frac) {
  int n = static_cast<int>(frac * 30 + 0.5);
  return "[" + std::string(n, '#') + std::string(30 - n, '.') + "]";
}

class Trainer {
 public:
  explicit Trainer(Args a) : a_(std::move(a)) {}
  int Run();

 private:
  Status Setup();
  Status Epoch(int epoch);
  Status Report();
  void Say(const char* fmt, ...) __attribute__((format(printf, 2, 3)));

  Args a_;
  std::unique_ptr<Communicator> world_, dp_;
  std::vector<std::unique_ptr<Communicator>> channel_comms_;
  planner::Plan plan_;
  int rank_ = 0, stage_ = 0, replica_ = 0;
  FashionMnist data_;
  std::unique_ptr<PipelineExecutor> exec_;
  StepTimes times_;
  int64_t samples_ = 0;
  double train_s_ = 0;
  int64_t global_step_ = 0;
  std::vector<double> step_losses_;
  double last_acc_ = 0;
  std::vector<float> images_;
  std::vector<uint8_t> labels_;
};

void Trainer::Say(const char* fmt, ...) {
  if (rank_ != 0) return;
  va_list ap;
  va_start(ap, fmt);
  std::vprintf(fmt, ap);
  va_end(ap);
  std::fflush(stdout);
}

Status Trainer::Setup() {
  SetBlasThreads(1);
  InstallStopHandler();
  if (UnderLauncher()) {
    WEFT_ASSIGN_OR_RETURN(world_, Communicator::FromEnvironment());
  } else {
    // Run alone: a one-rank job with its own store.
    WEFT_ASSIGN_OR_RETURN(auto id, Communicator::GetUniqueId());
    WEFT_ASSIGN_OR_RETURN(world_, Communicator::FromUniqueId(id, 0, 1));
  }
  rank_ = world_->rank();
  const int n = world_->world_size();
  planner::ModelDesc model = planner::MlpModel(a_.shape.depth, a_.shape.width, a_.batch);
  if (!a_.plan_file.empty()) {
    WEFT_ASSIGN_OR_RETURN(Json j, ParseJsonFile(a_.plan_file));
    auto p = planner::PlanFromJson(j);
    if (!p.ok()) return p.status().WithContext(a_.plan_file);
    plan_ = *p;
    if (plan_.global_batch != a_.batch) {
      return InvalidArgumentError(a_.plan_file + " plans a global batch of " +
                                  std::to_string(plan_.global_batch) + ", --batch is " +
                                  std::to_string(a_.batch));
    }
  } else {
    planner::ClusterDesc cluster = LocalCluster(n);
    if (!a_.cluster.empty()) {
      WEFT_ASSIGN_OR_RETURN(cluster, planner::LoadCluster(a_.cluster));
    }
    a_.pins.exact_chips = n;
    auto report = planner::MakePlan(model, cluster, a_.pins);
    if (!report.ok())
      return report.status().WithContext("planning for " + std::to_string(n) + " ranks");
    plan_ = report->best;
    Say("%s\n", planner::ExplainPlan(*report).c_str());
    if (!a_.plan_out.empty() && rank_ == 0) {
      WEFT_RETURN_IF_ERROR(WriteJsonFile(a_.plan_out, planner::PlanToJson(plan_)));
    }
  }
  if (plan_.world_size() != n) {
    return InvalidArgumentError("the plan needs " + std::to_string(plan_.world_size()) +
                                " ranks (" + std::to_string(plan_.config.pp) + " stages x " +
                                std::to_string(plan_.config.dp) + " replicas), the job has " +
                                std::to_string(n));
  }
  plan_.StageReplicaOf(rank_, &stage_, &replica_);
  // Same splits in the same order on every rank: the data-parallel group, then the pipeline
  // channels, a few per Split call: a rank joins at most one channel per call (channels of
  // even-numbered links, of odd-numbered links, then the wrap-around one).
  WEFT_ASSIGN_OR_RETURN(dp_, world_->Split(stage_, replica_));
  const int p = plan_.config.pp;
  StageComms comms;
  comms.dp = dp_.get();
  std::vector<Channel> all = PipelineChannels(p, plan_.config.virtual_stages > 1);
  // Regular channels run s → s+1 (activations) or s+1 → s (gradients) over link s; the
  // interleaved wrap-around ones run the other way between stage p−1 and stage 0.
  auto call_of = [&](const Channel& c) {
    bool wrap = c.grad ? c.from < c.to : c.from > c.to;
    int parity = wrap ? 2 : std::min(c.from, c.to) % 2;
    return parity * 2 + (c.grad ? 1 : 0);
  };
  for (int call = 0; call < 6; ++call) {
    int color = -1, key = 0;
    Channel mine;
    for (int ci = 0; ci < static_cast<int>(all.size()); ++ci) {
      const Channel& c = all[ci];
      if (call_of(c) != call || (c.from != stage_ && c.to != stage_)) continue;
      WEFT_CHECK(color < 0);  // links of one parity never share a stage
      color = replica_ * static_cast<int>(all.size()) + ci;
      key = c.from == stage_ ? 0 : 1;  // the sender is rank 0 of the channel
      mine = c;
    }
    // Work-around: a rank that opts out of a Split (color < 0) does not advance the parent's
    // split counter, so the ids of later splits would differ between ranks. Ranks without a
    // channel in this call take a color of their own and drop the one-rank communicator.
    const bool in_call = color >= 0;
    if (!in_call) color = (1 << 24) + rank_;
    WEFT_ASSIGN_OR_RETURN(auto comm, world_->Split(color, key));
    if (!in_call) continue;
    mine.comm = comm.get();
    mine.world_peer =
        static_cast<int>(plan_.ChipOf(mine.from == stage_ ? mine.to : mine.from, replica_));
    comms.channels.push_back(mine);
    channel_comms_.push_back(std::move(comm));
  }
  ExecutorOptions eo;
  eo.bucket_bytes = a_.bucket_bytes;
  eo.optimizer = a_.optimizer == "sgd" ? Optimizer::Kind::kSgd : Optimizer::Kind::kAdam;
  eo.lr = a_.lr;
  eo.momentum = a_.momentum;
  eo.seed = a_.seed;
  WEFT_ASSIGN_OR_RETURN(exec_,
                        PipelineExecutor::Create(plan_, stage_, replica_, a_.shape, comms, eo));
  WEFT_ASSIGN_OR_RETURN(data_, LoadFashionMnist(FashionMnistDir()));
  if (a_.train_limit > 0 && a_.train_limit < data_.train.count()) {
    data_.train.labels.resize(a_.train_limit);
  }
  if (a_.test_limit > 0 && a_.test_limit < data_.test.count())
    data_.test.labels.resize(a_.test_limit);
  if (data_.train.count() < a_.batch) {
    return InvalidArgumentError("batch " + std::to_string(a_.batch) + " exceeds the " +
                                std::to_string(data_.train.count()) + " training samples");
  }
  Say("weft train: %d ranks, MLP %d x %d, batch %lld, %s lr %g, %s, %lld training samples\n", n,
      a_.shape.depth, a_.shape.width, static_cast<long long>(a_.batch), a_.optimizer.c_str(), a_.lr,
      BlasName(), static_cast<long long>(data_.train.count()));
  return Status();
}

Status Trainer::Epoch(int epoch) {
  const ImageSet& tr = data_.train;
  const int64_t B = a_.batch, steps = tr.count() / B;
  const int d = plan_.config.dp, ppi = tr.pixels_per_image();
  const int64_t per_replica = B / d;
  std::vector<int64_t> perm(tr.count());
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(a_.seed * 7777 + epoch);
  std::shuffle(perm.begin(), perm.end(), rng);
  images_.resize(size_t(per_replica) * ppi);
  labels_.resize(per_replica);
  std::vector<double> losses(steps + 2, 0.0);
  const auto t0 = Clock::now();
  int shown = -1;
  for (int64_t k = 0; k < steps; ++k, ++global_step_) {
    if (rank_ == a_.fail_rank && global_step_ == a_.fail_step) {
      std::fprintf(stderr,
                   "weft train: fault injection: rank %d (stage %d) kills itself at step %lld\n",
                   rank_, stage_, static_cast<long long>(global_step_));
      std::fflush(stderr);
      raise(SIGKILL);
    }
    const int64_t base = k * B + replica_ * per_replica;
    for (int64_t i = 0; i < per_replica; ++i) {
      int64_t idx = perm[base + i];
      labels_[i] = tr.labels[idx];
      if (stage_ == 0) {
        const uint8_t* px = &tr.pixels[size_t(idx) * ppi];
        float* dst = &images_[size_t(i) * ppi];
        for (int j = 0; j < ppi; ++j) dst[j] = px[j] * (1.0f / 255.0f);
      }
    }
    StepInput in{images_.data(), labels_.data(), 1.0f / static_cast<float>(B)};
    StepOutput out;
    Status s = exec_->Step(in, &out, &times_);
    if (!s.ok()) {
      return s.WithContext("rank " + std::to_string(rank_) + " (stage " + std::to_string(stage_) +
                           ", replica " + std::to_string(replica_) + "), step " +
                           std::to_string(global_step_));
    }
    losses[k] = out.loss_sum;
    losses[steps] += out.loss_sum;
    losses[steps + 1] += out.correct;
    int pct = static_cast<int>(100 * (k + 1) / steps);
    if (!a_.quiet && rank_ == 0 && pct / 10 != shown) {
      shown = pct / 10;
      double el = std::chrono::duration<double>(Clock::now() - t0).count();
      bool tty = isatty(1);
      std::printf("%sepoch %d %s %3d%%  %6.0f samples/s%s", tty ? "\r" : "", epoch + 1,
                  Bar((k + 1.0) / steps).c_str(), pct, (k + 1) * B / std::max(el, 1e-9),
                  tty ? "" : "\n");
      std::fflush(stdout);
    }
  }
  double el = std::chrono::duration<double>(Clock::now() - t0).count();
  train_s_ += el;
  samples_ += steps * B;
  if (!a_.quiet && rank_ == 0 && isatty(1)) std::printf("\n");
  // Losses live on the last stage; every rank joins one sum so that rank 0 can report them.
  if (stage_ != plan_.config.pp - 1) std::fill(losses.begin(), losses.end(), 0.0);
  WEFT_ASSIGN_OR_RETURN(
      auto w, world_->AllReduce(losses.data(), losses.data(), static_cast<int64_t>(losses.size()),
                                DType::kFloat64, ReduceOp::kSum));
  WEFT_RETURN_IF_ERROR(w.Wait().WithContext("epoch loss reduction"));
  for (int64_t k = 0; k < steps; ++k) step_losses_.push_back(losses[k] / B);
  // Test accuracy: each replica evaluates its share of the test set through the pipeline.
  const ImageSet& te = data_.test;
  int64_t lo = te.count() * replica_ / d, hi = te.count() * (replica_ + 1) / d;
  std::vector<float> timg;
  if (stage_ == 0) {
    timg.resize(size_t(hi - lo) * ppi);
    for (size_t i = 0; i < timg.size(); ++i) timg[i] = te.pixels[size_t(lo) * ppi + i] / 255.0f;
  }
  int correct = 0;
  WEFT_RETURN_IF_ERROR(
      exec_->Evaluate(timg.data(), te.labels.data() + lo, int(hi - lo), 500, &correct)
          .WithContext("rank " + std::to_string(rank_) + " (stage " + std::to_string(stage_) +
                       ") evaluating"));
  double acc[2] = {double(correct), double(stage_ == plan_.config.pp - 1 ? hi - lo : 0)};
  if (stage_ != plan_.config.pp - 1) acc[0] = 0;
  WEFT_ASSIGN_OR_RETURN(auto w2, world_->AllReduce(acc, acc, 2, DType::kFloat64, ReduceOp::kSum));
  WEFT_RETURN_IF_ERROR(w2.Wait().WithContext("accuracy reduction"));
  last_acc_ = acc[1] > 0 ? acc[0] / acc[1] : 0;
  Say("epoch %d: loss %.4f  train accuracy %.2f%%  test accuracy %.2f%%  (%.1f s, %.0f "
      "samples/s)\n",
      epoch + 1, losses[steps] / double(steps * B), 100.0 * losses[steps + 1] / double(steps * B),
      100 * last_acc_, el, steps * B / el);
  return Status();
}

Status Trainer::Report() {
  const int n = world_->world_size();
  // Per rank: compute, optimizer, transfer wait, all-reduce wait, pipeline wall, wall, and
  // the mean forward/backward time of a micro-batch on its (first) chunk.
  constexpr int kF = 10;
  std::vector<double> all(size_t(n) * kF, 0.0);
  auto ct = exec_->ChunkTimes();
  double* me = &all[size_t(rank_) * kF];
  me[0] = times_.compute;
  me[1] = times_.optimizer;
  me[2] = times_.transfer_wait;
  me[3] = times_.allreduce_wait;
  me[4] = times_.pipeline_wall;
  me[5] = times_.wall;
  me[6] = ct[0].second.first;
  me[7] = ct[0].second.second;
  me[8] = exec_->MeanTransferSeconds() * exec_->TransferSamples();
  me[9] = static_cast<double>(exec_->TransferSamples());
  WEFT_ASSIGN_OR_RETURN(auto w, world_->AllReduce(all.data(), all.data(), int64_t(all.size()),
                                                  DType::kFloat64, ReduceOp::kSum));
  WEFT_RETURN_IF_ERROR(w.Wait().WithContext("time report"));
  if (!a_.loss_log.empty() && rank_ == 0) {
    std::ofstream f(a_.loss_log);
    for (double l : step_losses_) f << std::to_string(l) << "\n";
    if (!f) return UnavailableError("cannot write " + a_.loss_log);
  }
  if (rank_ != 0) return Status();
  const int p = plan_.config.pp, d = plan_.config.dp;
  std::printf(
      "\nthroughput: %.0f samples/s (%lld samples in %.2f s of training), final test "
      "accuracy %.2f%%\n",
      samples_ / train_s_, static_cast<long long>(samples_), train_s_, 100 * last_acc_);
  std::printf("time split per rank (s): %-5s %-5s %-7s %9s %9s %10s %9s %10s\n", "rank", "stage",
              "replica", "compute", "optimizer", "transfers", "allreduce", "idle/other");
  for (int r = 0; r < n; ++r) {
    const double* x = &all[size_t(r) * kF];
    int s = 0, rep = 0;
    plan_.StageReplicaOf(r, &s, &rep);
    double other = x[5] - x[0] - x[1] - x[2] - x[3];
    std::printf("%24s %-5d %-5d %-7d %9.3f %9.3f %10.3f %9.3f %10.3f\n", "", r, s, rep, x[0], x[1],
                x[2], x[3], other);
  }
  std::printf("  (transfers: blocked on pipeline receives and sends, pipeline bubble included)\n");
  if (p > 1) {
    // Measured bubble on the busiest stage: pipeline time not spent computing, relative to the
    // compute (the simulator's convention), against the simulator run on the measured costs.
    pipeline::ScheduleShape sh{p, plan_.config.micro_batches, plan_.config.virtual_stages};
    pipeline::ScheduleCosts costs = pipeline::ScheduleCosts::Uniform(sh.chunks(), 0, 0, 0, 0);
    std::vector<double> busy(p, 0), wall(p, 0);
    double transfer_sum = 0, transfer_n = 0;
    for (int r = 0; r < n; ++r) {
      int s = 0, rep = 0;
      plan_.StageReplicaOf(r, &s, &rep);
      const double* x = &all[size_t(r) * kF];
      costs.fwd[s] += x[6] / d;
      costs.bwd[s] += x[7] / d;
      busy[s] += x[0] / d;
      wall[s] += x[4] / d;
      transfer_sum += x[8];
      transfer_n += x[9];
    }
    // One message's measured time on every cut (all cuts are the same link here).
    const double transfer = transfer_n > 0 ? transfer_sum / transfer_n : 0;
    std::fill(costs.transfer.begin(), costs.transfer.end(), transfer);
    if (sh.virtual_stages == 1) {
      auto progs = pipeline::MakeSchedule(plan_.config.schedule, sh);
      auto tl = pipeline::SimulateSchedule(*progs, sh, costs);
      int busiest = int(std::max_element(busy.begin(), busy.end()) - busy.begin());
      double measured = (wall[busiest] - busy[busiest]) / busy[busiest];
      if (tl.ok()) {
        std::printf(
            "bubble (%d stages x %d replicas, %s, m=%d): measured %.3f, simulated %.3f "
            "(ratio %.2f) from the measured costs: forward/backward per micro-batch",
            p, d, planner::ScheduleName(plan_.config.schedule), plan_.config.micro_batches,
            measured, tl->bubble_ratio, tl->bubble_ratio > 0 ? measured / tl->bubble_ratio : 0);
        for (int s = 0; s < p; ++s) {
          std::printf(" %.0f/%.0f us", costs.fwd[s] * 1e6, costs.bwd[s] * 1e6);
        }
        std::printf(", transfer %.0f us (%.0f samples); zero-cost-link theory (p-1)/m = %.3f\n",
                    transfer * 1e6, transfer_n, double(p - 1) / plan_.config.micro_batches);
      }
    }
  }
  std::printf("RESULT samples_per_s=%.1f test_accuracy=%.4f ranks=%d pp=%d dp=%d\n",
              samples_ / train_s_, last_acc_, n, p, d);
  std::fflush(stdout);
  return Status();
}

int Trainer::Run() {
  Status s = Setup();
  for (int e = 0; s.ok() && e < a_.epochs; ++e) s = Epoch(e);
  if (s.ok()) s = Report();
  if (!s.ok()) {
    std::fprintf(stderr, "weft train: %s\n", s.ToString().c_str());
    if (world_) world_->Abort();
    return 1;
  }
  return 0;
}

}  // namespace

int TrainCommand(const std::vector<std::string>& args) {
  Args a;
  std::string err;
  for (const std::string& x : args) {
    if (x == "-h" || x == "--help") {
      TrainUsage(stdout);
      return 0;
    }
  }
  if (!ParseArgs(args, &a, &err)) {
    std::fprintf(stderr, "weft train: %s\n", err.c_str());
    TrainUsage(stderr);
    return 2;
  }
  Trainer t(std::move(a));
  return t.Run();
}

}  // namespace weft::runtime::train
