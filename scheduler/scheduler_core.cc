// The scheduling core. One mutex guards everything; each public call builds a WriteBatch of what
// it changed and commits it before returning (and before waking watchers), which is what makes an
// acknowledged change durable. Scheduling passes run inside the calls that can change what fits:
// submit, heartbeat (ranks exit), register, cancel and node loss.
#include "scheduler/scheduler_core.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "base/logging.h"

namespace weft::scheduler {

namespace {

int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t SteadyNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string NewSecretHex() {
  std::random_device rd;
  std::string out;
  static const char* kHex = "0123456789abcdef";
  for (int i = 0; i < 16; ++i) {
    unsigned v = rd();
    out.push_back(kHex[v & 15]);
    out.push_back(kHex[(v >> 4) & 15]);
  }
  return out;
}

void Touch(WriteBatch& b, const Job* j) {
  if (std::find(b.jobs.begin(), b.jobs.end(), j) == b.jobs.end()) b.jobs.push_back(j);
}
void Touch(WriteBatch& b, const Node* n) {
  if (std::find(b.nodes.begin(), b.nodes.end(), n) == b.nodes.end()) b.nodes.push_back(n);
}

// "n1: ranks 0-1, n2: ranks 2-3"
std::string DescribePlacement(const std::vector<RankPlacement>& ranks) {
  std::string out;
  size_t i = 0;
  int groups = 0;
  while (i < ranks.size()) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1].node_id == ranks[i].node_id) ++j;
    if (groups++ == 8) {
      out += ", ...";
      break;
    }
    if (!out.empty()) out += ", ";
    out +=
        ranks[i].node_id + ": " +
        (i == j ? "rank " + std::to_string(ranks[i].rank)
                : "ranks " + std::to_string(ranks[i].rank) + "-" + std::to_string(ranks[j].rank));
    i = j + 1;
  }
  return out;
}

// The rank groups the job's plan wants kept whole on one host (1 without a plan).
int PlanGroup(const JobPlanner* planner, const Job& job) {
  return planner && !job.plan_json.empty() ? planner->PlacementGroup(job.plan_json) : 1;
}

// Records in *plan_json the links the placed plan's traffic crosses; returns the remarks for the
// job's events: the placement's note (groups not kept whole) and the planner's summary.
std::string RecordPlacement(const JobPlanner* planner,
                            const std::map<std::string, std::unique_ptr<Node>>& nodes,
                            const GangPlacement& placement, std::string* plan_json) {
  std::string out = placement.note;
  if (!planner || plan_json->empty()) return out;
  std::vector<const Node*> rank_nodes;
  rank_nodes.reserve(placement.ranks.size());
  for (const RankPlacement& p : placement.ranks) rank_nodes.push_back(nodes.at(p.node_id).get());
  std::string links = planner->RecordPlacement(placement, rank_nodes, plan_json);
  if (!links.empty()) out += (out.empty() ? "" : "; ") + links;
  return out;
}

std::vector<double> QueueWaitBuckets() {
  return {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600};
}
std::vector<double> PlacementBuckets() {
  return {1e-5, 5e-5, 1e-4, 5e-4, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5};
}

}  // namespace

SchedulerCore::SchedulerCore(CoreOptions options, std::unique_ptr<StateStore> store)
    : options_(std::move(options)),
      store_(std::move(store)),
      queue_wait_seconds_(QueueWaitBuckets()),
      placement_seconds_(PlacementBuckets()) {
  if (!options_.now_ms) options_.now_ms = SystemNowMs;
  if (!options_.mono_ms) options_.mono_ms = SteadyNowMs;
}

SchedulerCore::~SchedulerCore() { Shutdown(); }

Result<std::unique_ptr<SchedulerCore>> SchedulerCore::Open(CoreOptions options,
                                                           std::unique_ptr<StateStore> store) {
  if (options.node_timeout_ms <= 0) {
    return InvalidArgumentError("node_timeout_ms: " + std::to_string(options.node_timeout_ms) +
                                " must be positive");
  }
  if (options.heartbeat_interval_ms <= 0) {
    return InvalidArgumentError("heartbeat_interval_ms: must be positive");
  }
  std::unique_ptr<SchedulerCore> core(new SchedulerCore(std::move(options), std::move(store)));
  std::lock_guard<std::mutex> lock(core->mu_);
  WEFT_RETURN_IF_ERROR(core->LoadLocked());
  return core;
}

Status SchedulerCore::LoadLocked() {
  if (!store_) return Status::Ok();
  WEFT_ASSIGN_OR_RETURN(StateSnapshot snap, store_->Load());
  next_job_seq_ = snap.next_job_seq;
  next_incarnation_ = snap.next_incarnation;
  const int64_t mono = options_.mono_ms();
  for (Node& n : snap.nodes) {
    next_register_seq_ = std::max(next_register_seq_, n.register_seq + 1);
    n.last_heartbeat_ms = mono;  // one full timeout to come back after our restart
    n.used_slots = 0;
    n.used_memory = 0;
    std::string id = n.node_id;  // the right side of `=` is evaluated first and moves n
    nodes_[id] = std::make_unique<Node>(std::move(n));
  }
  for (Job& j : snap.jobs) {
    next_job_seq_ = std::max(next_job_seq_, j.seq + 1);
    auto owned = std::make_unique<Job>(std::move(j));
    Job* job = owned.get();
    jobs_by_seq_[job->seq] = job;
    state_counts_[job->state]++;
    if (job->state == JobState::kPending) queue_.emplace(-job->spec.priority, job->seq);
    if (job->state == JobState::kScheduled || job->state == JobState::kRunning) {
      for (const RankPlacement& p : job->placement) {
        auto it = nodes_.find(p.node_id);
        if (it == nodes_.end()) continue;
        it->second->used_slots++;
        it->second->used_memory += job->spec.resources.memory_per_rank_bytes;
        active_on_node_[p.node_id].insert(job->id);
      }
    }
    jobs_[job->id] = std::move(owned);
  }
  for (JobEvent& e : snap.events) events_[e.job_id].push_back(std::move(e));
  WEFT_LOG(INFO) << "scheduler state loaded from " << store_->path() << ": " << jobs_.size()
                 << " jobs, " << nodes_.size() << " nodes";
  // Whatever fits now (nodes are READY until they miss their first timeout).
  WriteBatch batch;
  ScheduleLocked(batch);
  return CommitLocked(batch);
}

Status SchedulerCore::CheckUsableLocked() const {
  if (!store_failure_.ok()) {
    return UnavailableError("scheduler state store failed earlier (" + store_failure_.message() +
                            "); restart the scheduler");
  }
  if (shutdown_) return UnavailableError("scheduler is shutting down");
  return Status::Ok();
}

Status SchedulerCore::CommitLocked(WriteBatch& batch) {
  Status s = store_ ? store_->Commit(batch) : Status::Ok();
  if (!s.ok()) {
    // Memory now holds changes the disk does not: refuse everything from here on rather than
    // acknowledge state a restart would lose.
    WEFT_LOG(ERROR) << "scheduler state commit failed: " << s.ToString();
    store_failure_ = s;
    events_cv_.notify_all();
    return UnavailableError("scheduler state commit failed: " + s.message());
  }
  if (!batch.events.empty()) events_cv_.notify_all();
  return Status::Ok();
}

void SchedulerCore::AddEventLocked(Job& job, JobEvent ev, WriteBatch& batch) {
  ev.job_id = job.id;
  ev.seq = job.next_event_seq++;
  ev.time_ms = options_.now_ms();
  ev.state = job.state;
  ev.attempt = job.attempt;
  events_[job.id].push_back(ev);
  batch.events.push_back(std::move(ev));
  Touch(batch, &job);
}

void SchedulerCore::SetStateLocked(Job& job, JobState state, std::string reason,
                                   WriteBatch& batch) {
  state_counts_[job.state]--;
  state_counts_[state]++;
  job.state = state;
  job.reason = std::move(reason);
  if (IsTerminal(state)) job.end_time_ms = options_.now_ms();
  if (job.spec.launcher != Launcher::kAgents) launch_generation_++;
  JobEvent ev;
  ev.kind = EventKind::kStateChange;
  ev.message = job.reason;
  AddEventLocked(job, std::move(ev), batch);
}

void SchedulerCore::ReleaseLocked(Job& job) {
  for (const RankPlacement& p : job.placement) {
    auto it = nodes_.find(p.node_id);
    if (it == nodes_.end()) continue;
    it->second->used_slots--;
    it->second->used_memory -= job.spec.resources.memory_per_rank_bytes;
    auto a = active_on_node_.find(p.node_id);
    if (a != active_on_node_.end()) {
      a->second.erase(job.id);
      if (a->second.empty()) active_on_node_.erase(a);
    }
  }
}

void SchedulerCore::FailAttemptLocked(Job& job, const std::string& why, WriteBatch& batch,
                                      bool charge) {
  ReleaseLocked(job);
  const int attempts = job.spec.retry.max_retries + 1;
  const int charged = job.attempt - job.uncharged_attempts;  // attempts that used the policy
  if (!charge || charged + 1 < attempts) {
    std::string reason;
    if (charge) {
      retries_total_++;
      reason = "attempt " + std::to_string(charged + 1) + " of " + std::to_string(attempts) +
               " failed: " + why + "; retrying";
    } else {
      job.uncharged_attempts++;
      reason = why + " before this attempt's ranks started there; placing the job again (not "
               "counted as a retry)";
    }
    job.placement.clear();
    job.ranks.clear();
    job.store_url.clear();
    job.job_secret.clear();
    job.queued_time_ms = options_.now_ms();
    SetStateLocked(job, JobState::kPending, reason, batch);
    job.attempt++;
    queue_.emplace(-job.spec.priority, job.seq);
  } else {
    SetStateLocked(job, JobState::kFailed,
                   attempts > 1 ? why + " (attempt " + std::to_string(charged + 1) + " of " +
                                      std::to_string(attempts) + ", no retries left)"
                                : why,
                   batch);
  }
}

std::vector<NodeSlot> SchedulerCore::CandidatesLocked(const Job& job,
                                                      const std::set<std::string>& exclude,
                                                      bool ignore_usage) const {
  std::vector<NodeSlot> out;
  out.reserve(nodes_.size());
  const int64_t mem = job.spec.resources.memory_per_rank_bytes;
  for (const auto& [id, n] : nodes_) {
    if (n->state != NodeState::kReady || exclude.count(id)) continue;
    int cap = ignore_usage
                  ? RanksThatFit(n->slots, n->memory_bytes, mem)
                  : RanksThatFit(n->slots - n->used_slots, n->memory_bytes - n->used_memory, mem);
    if (mem > 0 && n->memory_bytes == 0) cap = ignore_usage ? n->slots : n->slots - n->used_slots;
    if (cap > 0) out.push_back(NodeSlot{n.get(), cap});
  }
  return out;
}

Status SchedulerCore::ResolveWorldSizeLocked(Job& job, std::string* note) {
  if (job.spec.resources.ranks > 0) {
    job.world_size = job.spec.resources.ranks;
    return Status::Ok();
  }
  if (!options_.planner) {
    return UnimplementedError("spec.resources.plan: no partition planner is linked");
  }
  std::vector<const Node*> ready;
  int total_slots = 0;
  for (const auto& [id, n] : nodes_) {
    if (n->state != NodeState::kReady) continue;
    ready.push_back(n.get());
    total_slots += n->slots;
  }
  // Registration order, never the name: the planner numbers chips in this order.
  std::sort(ready.begin(), ready.end(),
            [](const Node* a, const Node* b) { return a->register_seq < b->register_seq; });
  int max_ranks = job.spec.resources.plan->max_ranks;
  if (max_ranks == 0) max_ranks = total_slots;
  if (max_ranks <= 0) {
    return FailedPreconditionError(
        "spec.resources.plan: no ready nodes to plan for and max_ranks is 0");
  }
  WEFT_ASSIGN_OR_RETURN(PlanOutcome plan,
                        options_.planner->Plan(*job.spec.resources.plan, ready, max_ranks));
  if (plan.world_size < 1 || plan.world_size > kMaxRanks) {
    return InternalError("planner returned world size " + std::to_string(plan.world_size));
  }
  job.world_size = plan.world_size;
  job.plan_json = std::move(plan.plan_json);
  if (note) *note = std::move(plan.note);
  return Status::Ok();
}

void SchedulerCore::PlaceLocked(Job& job, const GangPlacement& placement, WriteBatch& batch) {
  queue_.erase({-job.spec.priority, job.seq});
  job.placement = placement.ranks;
  job.ranks.clear();
  for (const RankPlacement& p : placement.ranks) {
    RankStatus rs;
    rs.rank = p.rank;
    rs.node_id = p.node_id;
    job.ranks.push_back(rs);
    Node& n = *nodes_.at(p.node_id);
    n.used_slots++;
    n.used_memory += job.spec.resources.memory_per_rank_bytes;
    active_on_node_[p.node_id].insert(job.id);
  }
  job.job_secret = NewSecretHex();
  job.store_url.clear();
  job.start_time_ms = options_.now_ms();
  queue_wait_seconds_.Observe(std::max<int64_t>(0, job.start_time_ms - job.queued_time_ms) /
                              1000.0);
  std::string remarks = RecordPlacement(options_.planner, nodes_, placement, &job.plan_json);
  if (!remarks.empty()) remarks = "; " + remarks;
  SetStateLocked(job, JobState::kScheduled,
                 "placed " + std::to_string(job.world_size) + " ranks on " +
                     std::to_string(placement.nodes_used) + " nodes, " +
                     std::to_string(placement.hosts_used) + " hosts, " +
                     std::to_string(placement.switches_used) + " switches (" +
                     DescribePlacement(job.placement) + ")" + remarks,
                 batch);
}

void SchedulerCore::ScheduleLocked(WriteBatch& batch) {
  if (queue_.empty()) return;
  int free_total = 0, ready = 0;
  for (const auto& [id, n] : nodes_) {
    if (n->state != NodeState::kReady) continue;
    ready++;
    free_total += std::max(0, n->slots - n->used_slots);
  }
  std::set<std::string> reserved;
  auto it = queue_.begin();
  while (it != queue_.end() && free_total > 0 && static_cast<int>(reserved.size()) < ready) {
    Job& job = *jobs_by_seq_.at(it->second);
    ++it;  // PlaceLocked erases the current entry
    GangRequest req{job.world_size, job.spec.resources.ranks_per_node,
                    PlanGroup(options_.planner, job)};
    GangPlacement placement;
    std::string why;
    auto t0 = std::chrono::steady_clock::now();
    bool placed = job.world_size <= free_total &&
                  PlaceGang(req, CandidatesLocked(job, reserved, false), &placement, &why);
    if (placed) {
      placement_seconds_.Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      PlaceLocked(job, placement, batch);
      free_total -= job.world_size;
      continue;
    }
    // Blocked: hold the nodes it will run on once their current jobs end, so later (smaller)
    // jobs backfill only around them and cannot starve it.
    GangPlacement hold;
    std::string hold_why;
    if (PlaceGang(req, CandidatesLocked(job, reserved, true), &hold, &hold_why)) {
      std::set<std::string> held;
      for (const RankPlacement& p : hold.ranks) held.insert(p.node_id);
      for (const std::string& id : held) {
        free_total -= std::max(0, nodes_.at(id)->slots - nodes_.at(id)->used_slots);
        reserved.insert(id);
      }
      job.reason = "waiting for " + std::to_string(job.world_size) + " ranks; holding " +
                   std::to_string(held.size()) + " nodes until they free up";
    } else {
      job.reason = "waiting for resources: " + hold_why;
    }
  }
}

Result<Job> SchedulerCore::Submit(JobSpec spec) {
  std::lock_guard<std::mutex> lock(mu_);
  WEFT_RETURN_IF_ERROR(CheckUsableLocked());
  WEFT_RETURN_IF_ERROR(ValidateJobSpec(spec, options_.planner != nullptr));
  auto owned = std::make_unique<Job>();
  Job& job = *owned;
  job.spec = std::move(spec);
  WEFT_RETURN_IF_ERROR(ResolveWorldSizeLocked(job));
  job.seq = next_job_seq_++;
  job.id = "job-" + std::to_string(job.seq);
  job.submit_time_ms = job.queued_time_ms = options_.now_ms();
  job.state = JobState::kPending;
  job.reason = "queued";
  jobs_by_seq_[job.seq] = &job;
  queue_.emplace(-job.spec.priority, job.seq);
  state_counts_[JobState::kPending]++;
  submitted_total_++;
  Job* jp = owned.get();
  jobs_[job.id] = std::move(owned);
  WriteBatch batch;
  batch.next_job_seq = next_job_seq_;
  JobEvent ev;
  ev.kind = EventKind::kStateChange;
  ev.message = "submitted: " + std::to_string(jp->world_size) + " ranks, priority " +
               std::to_string(jp->spec.priority);
  AddEventLocked(*jp, std::move(ev), batch);
  ScheduleLocked(batch);
  WEFT_RETURN_IF_ERROR(CommitLocked(batch));
  return *jp;
}

Result<Job> SchedulerCore::GetJob(const std::string& job_id, std::vector<JobEvent>* events) {
  std::lock_guard<std::mutex> lock(mu_);
  if (job_id.empty()) return InvalidArgumentError("job_id: missing");
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return NotFoundError("job_id: no job '" + job_id + "'");
  if (events) *events = events_[job_id];
  return *it->second;
}

Result<ListPage> SchedulerCore::ListJobs(const ListQuery& q) {
  if (q.page_size < 0 || q.page_size > 1000) {
    return InvalidArgumentError("page_size: " + std::to_string(q.page_size) +
                                " is outside 0..1000");
  }
  int64_t after = 0;
  if (!q.page_token.empty()) {
    bool digits =
        q.page_token.size() <= 18 && std::all_of(q.page_token.begin(), q.page_token.end(),
                                                 [](char c) { return c >= '0' && c <= '9'; });
    if (!digits) {
      return InvalidArgumentError("page_token: '" + q.page_token.substr(0, 40) +
                                  "' is not a token ListJobs returned");
    }
    after = std::stoll(q.page_token);
  }
  const size_t size = q.page_size == 0 ? 100 : static_cast<size_t>(q.page_size);
  std::lock_guard<std::mutex> lock(mu_);
  ListPage page;
  for (auto it = jobs_by_seq_.upper_bound(after); it != jobs_by_seq_.end(); ++it) {
    const Job& j = *it->second;
    if (!q.states.empty() &&
        std::find(q.states.begin(), q.states.end(), j.state) == q.states.end()) {
      continue;
    }
    if (j.spec.name.compare(0, q.name_prefix.size(), q.name_prefix) != 0) continue;
    if (page.jobs.size() == size) {
      page.next_page_token = std::to_string(page.jobs.back().seq);
      break;
    }
    page.jobs.push_back(j);
  }
  return page;
}

Result<Job> SchedulerCore::Cancel(const std::string& job_id, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  WEFT_RETURN_IF_ERROR(CheckUsableLocked());
  if (job_id.empty()) return InvalidArgumentError("job_id: missing");
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return NotFoundError("job_id: no job '" + job_id + "'");
  Job& job = *it->second;
  if (IsTerminal(job.state)) {
    return FailedPreconditionError("job_id: job '" + job_id + "' already " +
                                   std::string(JobStateName(job.state)));
  }
  WriteBatch batch;
  if (job.state == JobState::kPending) {
    queue_.erase({-job.spec.priority, job.seq});
  } else {
    ReleaseLocked(job);  // agents stop its ranks at their next heartbeat
  }
  SetStateLocked(job, JobState::kCancelled,
                 reason.empty() ? "cancelled by request" : "cancelled: " + reason, batch);
  ScheduleLocked(batch);
  WEFT_RETURN_IF_ERROR(CommitLocked(batch));
  return job;
}

Result<std::vector<JobEvent>> SchedulerCore::WaitEvents(const std::string& job_id,
                                                        int64_t after_seq, Deadline deadline,
                                                        bool* finished) {
  *finished = false;
  std::unique_lock<std::mutex> lock(mu_);
  if (job_id.empty()) return InvalidArgumentError("job_id: missing");
  if (after_seq < 0) return InvalidArgumentError("after_seq: negative");
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return NotFoundError("job_id: no job '" + job_id + "'");
  const Job& job = *it->second;
  while (true) {
    std::vector<JobEvent> out;
    for (const JobEvent& e : events_[job_id]) {
      if (e.seq > after_seq) out.push_back(e);
    }
    // Events are committed before they are visible here, so terminal + all returned is final.
    if (IsTerminal(job.state)) *finished = true;
    if (!out.empty() || *finished || shutdown_ || !store_failure_.ok() || deadline.Expired()) {
      return out;
    }
    if (deadline.infinite()) {
      events_cv_.wait(lock);
    } else {
      events_cv_.wait_until(lock, deadline.when());
    }
  }
}

Result<DryRun> SchedulerCore::Plan(const JobSpec& spec) {
  std::lock_guard<std::mutex> lock(mu_);
  WEFT_RETURN_IF_ERROR(ValidateJobSpec(spec, options_.planner != nullptr));
  Job job;
  job.spec = spec;
  std::string plan_note;
  WEFT_RETURN_IF_ERROR(ResolveWorldSizeLocked(job, &plan_note));
  DryRun out;
  out.world_size = job.world_size;
  out.plan_json = job.plan_json;
  out.note = plan_note;
  auto t0 = std::chrono::steady_clock::now();
  GangRequest req{job.world_size, spec.resources.ranks_per_node, PlanGroup(options_.planner, job)};
  std::string why;
  const bool placed = PlaceGang(req, CandidatesLocked(job, {}, false), &out.placement, &why);
  out.placement_time_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  std::string remarks =
      placed ? RecordPlacement(options_.planner, nodes_, out.placement, &out.plan_json)
             : "does not fit now: " + why;
  if (!remarks.empty()) out.note = (out.note.empty() ? "" : out.note + "; ") + remarks;
  return out;
}

Result<int64_t> SchedulerCore::RegisterNode(const Node& in) {
  if (in.node_id.empty()) return InvalidArgumentError("node.node_id: missing");
  if (in.node_id.size() > 253) return InvalidArgumentError("node.node_id: longer than 253 bytes");
  if (in.slots < 1 || in.slots > 4096) {
    return InvalidArgumentError("node.slots: " + std::to_string(in.slots) + " is outside 1..4096");
  }
  if (in.memory_bytes < 0) return InvalidArgumentError("node.memory_bytes: negative");
  if (in.address.empty()) return InvalidArgumentError("node.address: missing");
  std::lock_guard<std::mutex> lock(mu_);
  WEFT_RETURN_IF_ERROR(CheckUsableLocked());
  WriteBatch batch;
  auto& slot = nodes_[in.node_id];
  if (slot) {
    // A new incarnation: whatever ran under the old one is gone (the agent restarted).
    std::set<std::string> active = active_on_node_[in.node_id];
    for (const std::string& id : active) {
      FailAttemptLocked(*jobs_.at(id), "node " + in.node_id + " re-registered (agent restarted)",
                        batch);
    }
  } else {
    slot = std::make_unique<Node>();
    slot->register_seq = next_register_seq_++;
  }
  Node& n = *slot;
  const int used = n.used_slots;
  const int64_t used_mem = n.used_memory;
  const int64_t seq = n.register_seq;
  n = in;
  n.register_seq = seq;
  n.used_slots = used;
  n.used_memory = used_mem;
  if (n.host_id.empty()) n.host_id = n.node_id;
  if (n.switch_id.empty()) n.switch_id = "default";
  n.state = NodeState::kReady;
  n.reason = "registered";
  n.incarnation = next_incarnation_++;
  n.last_heartbeat_ms = options_.mono_ms();
  batch.next_incarnation = next_incarnation_;
  Touch(batch, &n);
  ScheduleLocked(batch);
  WEFT_RETURN_IF_ERROR(CommitLocked(batch));
  return n.incarnation;
}

std::vector<Assignment> SchedulerCore::AssignmentsLocked(const std::string& node_id) const {
  std::vector<Assignment> out;
  auto a = active_on_node_.find(node_id);
  if (a == active_on_node_.end()) return out;
  for (const std::string& id : a->second) {
    const Job& job = *jobs_.at(id);
    if (job.spec.launcher != Launcher::kAgents) continue;  // a launch backend starts it
    Assignment as;
    as.job_id = job.id;
    as.attempt = job.attempt;
    as.world_size = job.world_size;
    as.argv = job.spec.argv;
    as.env = job.spec.env;
    as.job_secret = job.job_secret;
    as.store_url = job.store_url;
    as.serve_store = !job.placement.empty() && job.placement[0].node_id == node_id;
    for (const RankPlacement& p : job.placement) {
      if (p.node_id != node_id) continue;
      as.local_size++;
      if (job.ranks[p.rank].state != RankRunState::kExited) as.ranks.push_back(p);
    }
    out.push_back(std::move(as));
  }
  return out;
}

Result<std::vector<Assignment>> SchedulerCore::Heartbeat(const std::string& node_id,
                                                         int64_t incarnation,
                                                         const std::vector<TaskReport>& tasks,
                                                         const std::vector<StoreReport>& stores) {
  if (node_id.empty()) return InvalidArgumentError("node_id: missing");
  std::lock_guard<std::mutex> lock(mu_);
  WEFT_RETURN_IF_ERROR(CheckUsableLocked());
  auto nit = nodes_.find(node_id);
  if (nit == nodes_.end()) {
    return NotFoundError("node_id: unknown node '" + node_id + "'; register first");
  }
  Node& node = *nit->second;
  if (incarnation != node.incarnation) {
    return FailedPreconditionError("incarnation: " + std::to_string(incarnation) +
                                   " is stale for node '" + node_id + "' (now " +
                                   std::to_string(node.incarnation) + "); register again");
  }
  WriteBatch batch;
  node.last_heartbeat_ms = options_.mono_ms();
  if (node.state == NodeState::kLost) {
    node.state = NodeState::kReady;
    node.reason = "heartbeating again";
    Touch(batch, &node);
  }
  auto current = [&](const std::string& job_id, int attempt) -> Job* {
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return nullptr;
    Job* j = it->second.get();
    if (j->attempt != attempt ||
        (j->state != JobState::kScheduled && j->state != JobState::kRunning)) {
      return nullptr;
    }
    return j;
  };
  for (const StoreReport& s : stores) {
    Job* j = current(s.job_id, s.attempt);
    if (!j || !j->store_url.empty() || j->placement.empty() || j->placement[0].node_id != node_id) {
      continue;
    }
    j->store_url = s.url;
    JobEvent ev;
    ev.kind = EventKind::kRankEvent;
    ev.rank = 0;
    ev.node_id = node_id;
    ev.message = "store serving at " + s.url;
    AddEventLocked(*j, std::move(ev), batch);
  }
  for (const TaskReport& t : tasks) {
    Job* j = current(t.job_id, t.attempt);
    if (!j || t.rank < 0 || t.rank >= static_cast<int>(j->ranks.size())) continue;
    RankStatus& rs = j->ranks[t.rank];
    if (rs.node_id != node_id || rs.state == RankRunState::kExited) continue;
    if (!t.exited) {
      if (rs.state == RankRunState::kRunning) continue;
      rs.state = RankRunState::kRunning;
      JobEvent ev;
      ev.kind = EventKind::kRankEvent;
      ev.rank = t.rank;
      ev.node_id = node_id;
      ev.message = "rank " + std::to_string(t.rank) + " running on " + node_id;
      AddEventLocked(*j, std::move(ev), batch);
    } else {
      rs.state = RankRunState::kExited;
      rs.exit_code = t.exit_code;
      rs.log_tail = t.log_tail;
      JobEvent ev;
      ev.kind = EventKind::kRankEvent;
      ev.rank = t.rank;
      ev.node_id = node_id;
      ev.exit_code = t.exit_code;
      ev.log_tail = t.log_tail;
      ev.message = "rank " + std::to_string(t.rank) + " on " + node_id + " exited with code " +
                   std::to_string(t.exit_code);
      AddEventLocked(*j, std::move(ev), batch);
      if (t.exit_code != 0) {
        FailAttemptLocked(*j,
                          "rank " + std::to_string(t.rank) + " on node " + node_id +
                              " exited with code " + std::to_string(t.exit_code),
                          batch);
        continue;
      }
    }
    bool all_started = true, all_done = true;
    for (const RankStatus& r : j->ranks) {
      all_started &= r.state != RankRunState::kAssigned;
      all_done &= r.state == RankRunState::kExited && r.exit_code == 0;
    }
    if (all_done) {
      ReleaseLocked(*j);
      SetStateLocked(*j, JobState::kSucceeded,
                     "all " + std::to_string(j->world_size) + " ranks exited with code 0", batch);
    } else if (all_started && j->state == JobState::kScheduled) {
      SetStateLocked(*j, JobState::kRunning,
                     "all " + std::to_string(j->world_size) + " ranks started", batch);
    }
  }
  ScheduleLocked(batch);
  WEFT_RETURN_IF_ERROR(CommitLocked(batch));
  return AssignmentsLocked(node_id);
}

void SchedulerCore::Tick() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!CheckUsableLocked().ok()) return;
  const int64_t mono = options_.mono_ms();
  WriteBatch batch;
  for (auto& [id, n] : nodes_) {
    if (n->state != NodeState::kReady) continue;
    const int64_t silent = mono - n->last_heartbeat_ms;
    if (silent <= options_.node_timeout_ms) continue;
    n->state = NodeState::kLost;
    n->reason = "no heartbeat for " + std::to_string(silent) + " ms";
    nodes_lost_total_++;
    Touch(batch, n.get());
    WEFT_LOG(WARN) << "node " << id << " lost: " << n->reason;
    std::set<std::string> active = active_on_node_[id];
    for (const std::string& job_id : active) {
      Job& job = *jobs_.at(job_id);
      // An attempt placed on a node that died before any of its ranks started there (the node
      // still looked ready when a previous attempt's failure placed this one) is not the job's
      // fault: it does not use up a retry. Agent jobs only (the others report no rank starts),
      // and a few times at most, so a flapping node cannot keep a job alive forever.
      bool started_here = false;
      for (const RankStatus& rs : job.ranks) {
        started_here = started_here || (rs.node_id == id && rs.state != RankRunState::kAssigned);
      }
      const bool charge =
          started_here || job.spec.launcher != Launcher::kAgents || job.uncharged_attempts >= 3;
      FailAttemptLocked(job, "node " + id + " lost (" + n->reason + ")", batch, charge);
    }
  }
  if (batch.empty()) return;
  ScheduleLocked(batch);
  CommitLocked(batch).IgnoreError();  // recorded in store_failure_
}

bool SchedulerCore::WaitLaunchTargets(int64_t* generation, Deadline deadline,
                                      std::vector<LaunchTarget>* out) {
  std::unique_lock<std::mutex> lock(mu_);
  while (launch_generation_ == *generation) {
    if (shutdown_ || !store_failure_.ok() || deadline.Expired()) return false;
    if (deadline.infinite()) {
      events_cv_.wait(lock);
    } else {
      events_cv_.wait_until(lock, deadline.when());
    }
  }
  *generation = launch_generation_;
  out->clear();
  for (const auto& [seq, job] : jobs_by_seq_) {
    if (job->spec.launcher == Launcher::kAgents ||
        (job->state != JobState::kScheduled && job->state != JobState::kRunning)) {
      continue;
    }
    LaunchTarget t;
    t.job = *job;
    std::set<std::string> seen;
    for (const RankPlacement& p : job->placement) {
      if (!seen.insert(p.node_id).second) continue;
      auto it = nodes_.find(p.node_id);
      if (it != nodes_.end()) t.nodes.push_back(*it->second);
    }
    out->push_back(std::move(t));
  }
  return true;
}

Status SchedulerCore::ReportLaunch(const LaunchReport& r) {
  std::lock_guard<std::mutex> lock(mu_);
  WEFT_RETURN_IF_ERROR(CheckUsableLocked());
  auto it = jobs_.find(r.job_id);
  if (it == jobs_.end()) return NotFoundError("job_id: no job '" + r.job_id + "'");
  Job& job = *it->second;
  if (job.spec.launcher == Launcher::kAgents || job.attempt != r.attempt ||
      (job.state != JobState::kScheduled && job.state != JobState::kRunning)) {
    return FailedPreconditionError("job " + r.job_id + " attempt " + std::to_string(r.attempt) +
                                   " is not current (" + std::string(JobStateName(job.state)) +
                                   ", attempt " + std::to_string(job.attempt) + ")");
  }
  WriteBatch batch;
  JobEvent ev;
  ev.kind = EventKind::kRankEvent;
  ev.rank = r.rank;
  ev.message = r.message;
  ev.exit_code = r.exit_code;
  ev.log_tail = r.log_tail;
  if (r.rank >= 0 && r.rank < static_cast<int>(job.placement.size())) {
    ev.node_id = job.placement[r.rank].node_id;
  }
  switch (r.kind) {
    case LaunchReport::Kind::kNote:
      job.reason = r.message;
      AddEventLocked(job, std::move(ev), batch);
      break;
    case LaunchReport::Kind::kStarted:
      for (RankStatus& rs : job.ranks) rs.state = RankRunState::kRunning;
      if (job.state == JobState::kScheduled) {
        SetStateLocked(job, JobState::kRunning, r.message, batch);
      } else {
        job.reason = r.message;
        AddEventLocked(job, std::move(ev), batch);
      }
      break;
    case LaunchReport::Kind::kExited:
      if (r.exit_code == 0) {
        for (RankStatus& rs : job.ranks) {
          rs.state = RankRunState::kExited;
          rs.exit_code = 0;
        }
        ReleaseLocked(job);
        SetStateLocked(job, JobState::kSucceeded, r.message, batch);
        break;
      }
      // The launcher knows at best which rank failed first (the others were stopped by it);
      // when it does not, every rank carries the launcher's exit code.
      for (RankStatus& rs : job.ranks) {
        if (r.rank >= 0 && rs.rank != r.rank) continue;
        rs.state = RankRunState::kExited;
        rs.exit_code = r.exit_code;
        if (rs.rank == r.rank) rs.log_tail = r.log_tail;
      }
      AddEventLocked(job, std::move(ev), batch);
      FailAttemptLocked(job, r.message, batch);
      break;
    case LaunchReport::Kind::kFailed:
      AddEventLocked(job, ev, batch);
      FailAttemptLocked(job, r.message, batch);
      break;
  }
  ScheduleLocked(batch);
  return CommitLocked(batch);
}

ClusterView SchedulerCore::Cluster() {
  std::lock_guard<std::mutex> lock(mu_);
  ClusterView v;
  for (const auto& [id, n] : nodes_) v.nodes.push_back(*n);
  std::sort(v.nodes.begin(), v.nodes.end(),
            [](const Node& a, const Node& b) { return a.register_seq < b.register_seq; });
  v.pending_jobs = static_cast<int>(state_counts_[JobState::kPending]);
  v.running_jobs =
      static_cast<int>(state_counts_[JobState::kScheduled] + state_counts_[JobState::kRunning]);
  return v;
}

std::string SchedulerCore::MetricsText() {
  std::lock_guard<std::mutex> lock(mu_);
  MetricsWriter w;
  w.Family("weft_scheduler_jobs", "gauge", "Jobs known to the scheduler, by state.");
  for (int s = 1; s <= 6; ++s) {
    JobState st = static_cast<JobState>(s);
    w.Sample("weft_scheduler_jobs", {{"state", std::string(JobStateName(st))}},
             static_cast<double>(state_counts_[st]));
  }
  int ready = 0, lost = 0, slots = 0, used = 0;
  for (const auto& [id, n] : nodes_) {
    (n->state == NodeState::kReady ? ready : lost)++;
    if (n->state == NodeState::kReady) {
      slots += n->slots;
      used += n->used_slots;
    }
  }
  w.Family("weft_scheduler_nodes", "gauge", "Registered nodes, by state.");
  w.Sample("weft_scheduler_nodes", {{"state", "READY"}}, ready);
  w.Sample("weft_scheduler_nodes", {{"state", "LOST"}}, lost);
  w.Family("weft_scheduler_slots", "gauge", "Rank slots on ready nodes, by use.");
  w.Sample("weft_scheduler_slots", {{"state", "used"}}, used);
  w.Sample("weft_scheduler_slots", {{"state", "free"}}, slots - used);
  w.Family("weft_scheduler_jobs_submitted_total", "counter",
           "Jobs accepted since this scheduler process started.");
  w.Sample("weft_scheduler_jobs_submitted_total", {}, static_cast<double>(submitted_total_));
  w.Family("weft_scheduler_job_retries_total", "counter",
           "Failed attempts that were retried since this process started.");
  w.Sample("weft_scheduler_job_retries_total", {}, static_cast<double>(retries_total_));
  w.Family("weft_scheduler_nodes_lost_total", "counter",
           "Nodes marked lost (missed heartbeats) since this process started.");
  w.Sample("weft_scheduler_nodes_lost_total", {}, static_cast<double>(nodes_lost_total_));
  w.WriteHistogram("weft_scheduler_queue_wait_seconds",
                   "Time from entering the queue to being placed.", queue_wait_seconds_);
  w.WriteHistogram("weft_scheduler_placement_seconds",
                   "Time to compute one successful gang placement.", placement_seconds_);
  return w.text();
}

void SchedulerCore::Shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  shutdown_ = true;
  events_cv_.notify_all();
}

bool SchedulerCore::healthy() {
  std::lock_guard<std::mutex> lock(mu_);
  return store_failure_.ok() && !shutdown_;
}

}  // namespace weft::scheduler
