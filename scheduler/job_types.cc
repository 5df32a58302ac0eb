// Job vocabulary helpers: names, validation and the persistence encoding (tagged by a version
// byte so a later layout can still read old rows).
#include "scheduler/job_types.h"

#include <cctype>
#include <cstring>

namespace weft::scheduler {

namespace {

constexpr uint8_t kEncodingVersion = 1;

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void I64(int64_t v) {
    uint64_t u = static_cast<uint64_t>(v);
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((u >> (8 * i)) & 0xff));
  }
  void Str(std::string_view s) {
    I64(static_cast<int64_t>(s.size()));
    out_.append(s.data(), s.size());
  }
  void Strs(const std::vector<std::string>& v) {
    I64(static_cast<int64_t>(v.size()));
    for (const auto& s : v) Str(s);
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool U8(uint8_t* v) {
    if (in_.size() < 1) return Fail();
    *v = static_cast<uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return true;
  }
  bool I64(int64_t* v) {
    if (in_.size() < 8) return Fail();
    uint64_t u = 0;
    for (int i = 0; i < 8; ++i) u |= static_cast<uint64_t>(static_cast<uint8_t>(in_[i])) << (8 * i);
    *v = static_cast<int64_t>(u);
    in_.remove_prefix(8);
    return true;
  }
  bool Int(int* v) {
    int64_t x;
    if (!I64(&x)) return false;
    *v = static_cast<int>(x);
    return true;
  }
  bool Str(std::string* s) {
    int64_t n;
    if (!I64(&n) || n < 0 || static_cast<uint64_t>(n) > in_.size()) return Fail();
    s->assign(in_.data(), static_cast<size_t>(n));
    in_.remove_prefix(static_cast<size_t>(n));
    return true;
  }
  bool Strs(std::vector<std::string>* v) {
    int64_t n;
    if (!I64(&n) || n < 0 || static_cast<uint64_t>(n) > in_.size()) return Fail();
    v->resize(static_cast<size_t>(n));
    for (auto& s : *v) {
      if (!Str(&s)) return false;
    }
    return true;
  }
  bool ok() const { return ok_; }
  bool done() const { return in_.empty(); }

 private:
  bool Fail() {
    ok_ = false;
    return false;
  }
  std::string_view in_;
  bool ok_ = true;
};

Status Corrupt(std::string_view what) {
  return DataLossError("scheduler state: corrupt " + std::string(what) + " record");
}

}  // namespace

std::string_view JobStateName(JobState s) {
  switch (s) {
    case JobState::kPending:
      return "PENDING";
    case JobState::kScheduled:
      return "SCHEDULED";
    case JobState::kRunning:
      return "RUNNING";
    case JobState::kSucceeded:
      return "SUCCEEDED";
    case JobState::kFailed:
      return "FAILED";
    case JobState::kCancelled:
      return "CANCELLED";
  }
  return "UNKNOWN";
}

bool ParseJobState(std::string_view text, JobState* out) {
  std::string up;
  for (char c : text) up.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  for (int i = 1; i <= 6; ++i) {
    if (JobStateName(static_cast<JobState>(i)) == up) {
      *out = static_cast<JobState>(i);
      return true;
    }
  }
  return false;
}

std::string_view NodeStateName(NodeState s) { return s == NodeState::kReady ? "READY" : "LOST"; }

std::string_view LauncherName(Launcher l) {
  switch (l) {
    case Launcher::kAgents:
      return "agents";
    case Launcher::kMpirun:
      return "mpirun";
    case Launcher::kKubernetes:
      return "kubernetes";
  }
  return "unknown";
}

bool ParseLauncher(std::string_view text, Launcher* out) {
  std::string low;
  for (char c : text) low.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  for (Launcher l : {Launcher::kAgents, Launcher::kMpirun, Launcher::kKubernetes}) {
    if (LauncherName(l) == low) {
      *out = l;
      return true;
    }
  }
  return false;
}

std::string_view RankRunStateName(RankRunState s) {
  switch (s) {
    case RankRunState::kAssigned:
      return "assigned";
    case RankRunState::kRunning:
      return "running";
    case RankRunState::kExited:
      return "exited";
  }
  return "unknown";
}

Status ValidateJobSpec(const JobSpec& spec, bool planner_available) {
  if (spec.name.size() > kMaxNameBytes) {
    return InvalidArgumentError("spec.name: " + std::to_string(spec.name.size()) +
                                " bytes, at most " + std::to_string(kMaxNameBytes));
  }
  if (spec.argv.empty() || spec.argv[0].empty()) {
    return InvalidArgumentError("spec.argv: missing; give the program and its arguments");
  }
  size_t argv_bytes = 0;
  for (const auto& a : spec.argv) argv_bytes += a.size() + 1;
  for (const auto& e : spec.env) argv_bytes += e.size() + 1;
  if (argv_bytes > kMaxArgvBytes) {
    return InvalidArgumentError("spec.argv/spec.env: " + std::to_string(argv_bytes) +
                                " bytes, at most " + std::to_string(kMaxArgvBytes));
  }
  for (size_t i = 0; i < spec.env.size(); ++i) {
    const std::string& e = spec.env[i];
    size_t eq = e.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgumentError("spec.env[" + std::to_string(i) + "]: '" + e + "' is not K=V");
    }
  }
  const Resources& r = spec.resources;
  if (r.ranks < 0 || r.ranks > kMaxRanks) {
    return InvalidArgumentError("spec.resources.ranks: " + std::to_string(r.ranks) +
                                " is outside 1.." + std::to_string(kMaxRanks));
  }
  if (r.ranks == 0) {
    if (!r.plan.has_value()) {
      return InvalidArgumentError(
          "spec.resources.ranks: missing (0); give ranks or a plan request");
    }
    if (!planner_available) {
      return UnimplementedError(
          "spec.resources.plan: no partition planner is linked into this scheduler; give "
          "spec.resources.ranks");
    }
    if (r.plan->model_json.empty()) {
      return InvalidArgumentError("spec.resources.plan.model_json: missing");
    }
    if (r.plan->max_ranks < 0 || r.plan->max_ranks > kMaxRanks) {
      return InvalidArgumentError(
          "spec.resources.plan.max_ranks: " + std::to_string(r.plan->max_ranks) +
          " is outside 0.." + std::to_string(kMaxRanks));
    }
    const PlanRequest& p = *r.plan;
    if (p.pin_pp < 0 || p.pin_pp > kMaxRanks) {
      return InvalidArgumentError("spec.resources.plan.pin_pp: " + std::to_string(p.pin_pp) +
                                  " is outside 0.." + std::to_string(kMaxRanks));
    }
    if (p.pin_dp < 0 || p.pin_dp > kMaxRanks) {
      return InvalidArgumentError("spec.resources.plan.pin_dp: " + std::to_string(p.pin_dp) +
                                  " is outside 0.." + std::to_string(kMaxRanks));
    }
    if (p.pin_micro_batches < 0 || p.pin_micro_batches > (1 << 20)) {
      return InvalidArgumentError("spec.resources.plan.pin_micro_batches: " +
                                  std::to_string(p.pin_micro_batches) + " is outside 0..1048576");
    }
    if (!p.pin_schedule.empty() && p.pin_schedule != "gpipe" && p.pin_schedule != "1f1b" &&
        p.pin_schedule != "interleaved") {
      return InvalidArgumentError("spec.resources.plan.pin_schedule: '" +
                                  p.pin_schedule.substr(0, 64) +
                                  "' is not gpipe, 1f1b or interleaved");
    }
  }
  if (r.ranks_per_node < 0 || (r.ranks > 0 && r.ranks_per_node > r.ranks) ||
      (r.ranks > 0 && r.ranks_per_node > 0 && r.ranks % r.ranks_per_node != 0)) {
    return InvalidArgumentError(
        "spec.resources.ranks_per_node: " + std::to_string(r.ranks_per_node) +
        " does not divide ranks " + std::to_string(r.ranks));
  }
  if (r.memory_per_rank_bytes < 0) {
    return InvalidArgumentError("spec.resources.memory_per_rank_bytes: " +
                                std::to_string(r.memory_per_rank_bytes) + " is negative");
  }
  if (spec.priority < -kMaxPriority || spec.priority > kMaxPriority) {
    return InvalidArgumentError("spec.priority: " + std::to_string(spec.priority) +
                                " is outside +-" + std::to_string(kMaxPriority));
  }
  if (spec.retry.max_retries < 0 || spec.retry.max_retries > kMaxRetries) {
    return InvalidArgumentError(
        "spec.retry.max_retries: " + std::to_string(spec.retry.max_retries) + " is outside 0.." +
        std::to_string(kMaxRetries));
  }
  const int launcher = static_cast<int>(spec.launcher);
  if (launcher < 0 || launcher > static_cast<int>(Launcher::kKubernetes)) {
    return InvalidArgumentError("spec.launcher: " + std::to_string(launcher) +
                                " is not agents (0), mpirun (1) or kubernetes (2)");
  }
  return Status::Ok();
}

std::string EncodeJob(const Job& j) {
  Writer w;
  w.U8(kEncodingVersion);
  w.Str(j.id);
  w.I64(j.seq);
  w.Str(j.spec.name);
  w.Strs(j.spec.argv);
  w.Strs(j.spec.env);
  w.I64(j.spec.resources.ranks);
  w.I64(j.spec.resources.ranks_per_node);
  w.I64(j.spec.resources.memory_per_rank_bytes);
  w.U8(j.spec.resources.plan.has_value() ? 1 : 0);
  if (j.spec.resources.plan) {
    w.Str(j.spec.resources.plan->model_json);
    w.I64(j.spec.resources.plan->max_ranks);
  }
  w.I64(j.spec.priority);
  w.I64(j.spec.retry.max_retries);
  w.I64(static_cast<int>(j.state));
  w.Str(j.reason);
  w.I64(j.attempt);
  w.I64(j.world_size);
  w.I64(j.submit_time_ms);
  w.I64(j.queued_time_ms);
  w.I64(j.start_time_ms);
  w.I64(j.end_time_ms);
  w.I64(static_cast<int64_t>(j.placement.size()));
  for (const auto& p : j.placement) {
    w.I64(p.rank);
    w.Str(p.node_id);
    w.I64(p.local_rank);
  }
  w.I64(static_cast<int64_t>(j.ranks.size()));
  for (const auto& r : j.ranks) {
    w.I64(r.rank);
    w.Str(r.node_id);
    w.I64(static_cast<int>(r.state));
    w.I64(r.exit_code);
    w.Str(r.log_tail);
  }
  w.Str(j.job_secret);
  w.Str(j.store_url);
  w.Str(j.plan_json);
  w.I64(j.next_event_seq);
  // Plan pins: a trailing section (records written before it existed end here).
  if (j.spec.resources.plan) {
    const PlanRequest& p = *j.spec.resources.plan;
    w.I64(p.pin_pp);
    w.I64(p.pin_dp);
    w.Str(p.pin_schedule);
    w.I64(p.pin_micro_batches);
  }
  // Launcher: a trailing section after the pins (records written before it decode as agents).
  w.I64(static_cast<int>(j.spec.launcher));
  // Uncharged attempts: a trailing section after the launcher (older records decode as 0).
  w.I64(j.uncharged_attempts);
  return w.Take();
}

Result<Job> DecodeJob(std::string_view data) {
  Reader r(data);
  Job j;
  uint8_t version = 0, has_plan = 0;
  int64_t n = 0;
  int state = 0;
  r.U8(&version) && r.Str(&j.id) && r.I64(&j.seq) && r.Str(&j.spec.name) && r.Strs(&j.spec.argv) &&
      r.Strs(&j.spec.env) && r.Int(&j.spec.resources.ranks) &&
      r.Int(&j.spec.resources.ranks_per_node) && r.I64(&j.spec.resources.memory_per_rank_bytes) &&
      r.U8(&has_plan);
  if (r.ok() && has_plan) {
    PlanRequest p;
    r.Str(&p.model_json) && r.Int(&p.max_ranks);
    j.spec.resources.plan = std::move(p);
  }
  r.Int(&j.spec.priority) && r.Int(&j.spec.retry.max_retries) && r.Int(&state) &&
      r.Str(&j.reason) && r.Int(&j.attempt) && r.Int(&j.world_size) && r.I64(&j.submit_time_ms) &&
      r.I64(&j.queued_time_ms) && r.I64(&j.start_time_ms) && r.I64(&j.end_time_ms) && r.I64(&n);
  if (!r.ok() || version != kEncodingVersion || n < 0 || n > kMaxRanks) return Corrupt("job");
  j.placement.resize(static_cast<size_t>(n));
  for (auto& p : j.placement) r.Int(&p.rank) && r.Str(&p.node_id) && r.Int(&p.local_rank);
  r.I64(&n);
  if (!r.ok() || n < 0 || n > kMaxRanks) return Corrupt("job");
  j.ranks.resize(static_cast<size_t>(n));
  for (auto& s : j.ranks) {
    int rs = 0;
    r.Int(&s.rank) && r.Str(&s.node_id) && r.Int(&rs) && r.Int(&s.exit_code) && r.Str(&s.log_tail);
    s.state = static_cast<RankRunState>(rs);
  }
  r.Str(&j.job_secret) && r.Str(&j.store_url) && r.Str(&j.plan_json) && r.I64(&j.next_event_seq);
  if (r.ok() && !r.done() && j.spec.resources.plan) {
    PlanRequest& p = *j.spec.resources.plan;
    r.Int(&p.pin_pp) && r.Int(&p.pin_dp) && r.Str(&p.pin_schedule) && r.Int(&p.pin_micro_batches);
  }
  int launcher = 0;
  if (r.ok() && !r.done()) r.Int(&launcher);
  if (r.ok() && !r.done()) r.Int(&j.uncharged_attempts);
  if (!r.ok() || state < 1 || state > 6 || launcher < 0 ||
      launcher > static_cast<int>(Launcher::kKubernetes) || j.uncharged_attempts < 0 ||
      j.uncharged_attempts > j.attempt) {
    return Corrupt("job");
  }
  j.spec.launcher = static_cast<Launcher>(launcher);
  j.state = static_cast<JobState>(state);
  return j;
}

std::string EncodeEvent(const JobEvent& e) {
  Writer w;
  w.U8(kEncodingVersion);
  w.Str(e.job_id);
  w.I64(e.seq);
  w.I64(e.time_ms);
  w.I64(static_cast<int>(e.kind));
  w.I64(static_cast<int>(e.state));
  w.Str(e.message);
  w.I64(e.attempt);
  w.I64(e.rank);
  w.Str(e.node_id);
  w.I64(e.exit_code);
  w.Str(e.log_tail);
  return w.Take();
}

Result<JobEvent> DecodeEvent(std::string_view data) {
  Reader r(data);
  JobEvent e;
  uint8_t version = 0;
  int kind = 0, state = 0;
  r.U8(&version) && r.Str(&e.job_id) && r.I64(&e.seq) && r.I64(&e.time_ms) && r.Int(&kind) &&
      r.Int(&state) && r.Str(&e.message) && r.Int(&e.attempt) && r.Int(&e.rank) &&
      r.Str(&e.node_id) && r.Int(&e.exit_code) && r.Str(&e.log_tail);
  if (!r.ok() || version != kEncodingVersion || state < 1 || state > 6) return Corrupt("event");
  e.kind = static_cast<EventKind>(kind);
  e.state = static_cast<JobState>(state);
  return e;
}

std::string EncodeNode(const Node& n) {
  Writer w;
  w.U8(kEncodingVersion);
  w.Str(n.node_id);
  w.Str(n.host_id);
  w.Str(n.switch_id);
  w.Str(n.address);
  w.I64(n.slots);
  w.I64(n.memory_bytes);
  w.I64(static_cast<int>(n.state));
  w.I64(n.incarnation);
  w.I64(n.register_seq);
  w.Str(n.reason);
  return w.Take();
}

Result<Node> DecodeNode(std::string_view data) {
  Reader r(data);
  Node n;
  uint8_t version = 0;
  int state = 0;
  r.U8(&version) && r.Str(&n.node_id) && r.Str(&n.host_id) && r.Str(&n.switch_id) &&
      r.Str(&n.address) && r.Int(&n.slots) && r.I64(&n.memory_bytes) && r.Int(&state) &&
      r.I64(&n.incarnation) && r.I64(&n.register_seq) && r.Str(&n.reason);
  if (!r.ok() || version != kEncodingVersion || state < 1 || state > 2) return Corrupt("node");
  n.state = static_cast<NodeState>(state);
  return n;
}

}  // namespace weft::scheduler
