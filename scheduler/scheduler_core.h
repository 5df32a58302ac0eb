// The scheduling core: the job queue, the state machine, gang placement over registered nodes,
// reconciliation with node agents, and failover. Plain C++ (the gRPC service in
// scheduler_service.h is a thin adapter over it). Every state change is committed to the
// StateStore before the call that made it returns, so an acknowledged change survives a crash.
//
// States: PENDING -> SCHEDULED (placed; agents told, or for launcher mpirun/kubernetes the launch
// backend, see WaitLaunchTargets) -> RUNNING (every rank started, or the launcher started) ->
// SUCCEEDED (every rank exited 0) | FAILED (a rank failed or a node was lost, retries spent) |
// CANCELLED. A failed attempt with retries left goes back to PENDING with attempt + 1 and the
// reason recorded. Queue: priority (higher first), FIFO within a priority; a job that cannot be
// placed reserves the nodes it will run on, and later jobs backfill only around reservations, so
// a large job is never starved by a stream of small ones.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/deadline.h"
#include "base/status.h"
#include "scheduler/job_planner.h"
#include "scheduler/job_types.h"
#include "base/metrics_text.h"
#include "scheduler/placement.h"
#include "scheduler/state_store.h"

namespace weft::scheduler {

struct CoreOptions {
  int64_t node_timeout_ms = 10000;   // a node silent this long is LOST
  int heartbeat_interval_ms = 1000;  // told to agents
  JobPlanner* planner = nullptr;     // borrowed; must outlive the core; null: no plan requests
  std::function<int64_t()> now_ms;   // wall clock for timestamps; default: system clock
  std::function<int64_t()> mono_ms;  // heartbeat clock; default: steady clock
};

struct ListQuery {
  std::vector<JobState> states;  // empty: all
  std::string name_prefix;
  int page_size = 100;     // 1..1000 (0 means 100)
  std::string page_token;  // "" or a token from a previous page
};

struct ListPage {
  std::vector<Job> jobs;
  std::string next_page_token;
};

struct DryRun {
  int world_size = 0;
  GangPlacement placement;  // empty ranks when it does not fit now
  std::string plan_json;
  std::string note;
  int64_t placement_time_us = 0;
};

// A job a launch backend (scheduler/launch_backends.h) starts: launcher mpirun or kubernetes,
// state SCHEDULED or RUNNING.
struct LaunchTarget {
  Job job;                  // a copy, as of the snapshot
  std::vector<Node> nodes;  // the nodes of job.placement, in the order of their first rank
};

// What a launch backend reports about one attempt of a job.
struct LaunchReport {
  enum class Kind {
    kNote,     // an event; the job's reason becomes `message`; the state stays
    kStarted,  // the launcher runs (mpirun started, manifest applied): SCHEDULED -> RUNNING
    kExited,   // exit_code 0: SUCCEEDED; else the attempt failed (retried per policy)
    kFailed,   // the launch failed (kubectl error, mpirun lost): the attempt failed
  };
  std::string job_id;
  int attempt = 0;
  Kind kind = Kind::kNote;
  std::string message;  // the event's text; the reason for kNote, kStarted and kFailed
  int exit_code = 0;    // kExited
  int rank = -1;        // the rank the message is about, when known
  std::string log_tail;
};

struct ClusterView {
  std::vector<Node> nodes;
  int pending_jobs = 0;
  int running_jobs = 0;  // SCHEDULED or RUNNING
};

// Thread-safe: every public method takes one mutex; WaitEvents blocks without holding it.
// Errors: InvalidArgument naming the bad field; NotFound for unknown jobs and nodes;
// FailedPrecondition for a stale agent incarnation or cancelling a finished job; Unavailable when
// the state store failed (the core then refuses every further change: restart it).
class SchedulerCore {
 public:
  // Loads the state `store` holds (null: in-memory only, for tests and dry runs). Jobs that were
  // SCHEDULED or RUNNING stay so; their nodes get one node_timeout_ms to heartbeat again.
  static Result<std::unique_ptr<SchedulerCore>> Open(CoreOptions options,
                                                     std::unique_ptr<StateStore> store);
  ~SchedulerCore();

  Result<Job> Submit(JobSpec spec);
  // The job and (when `events` is non-null) its whole event history.
  Result<Job> GetJob(const std::string& job_id, std::vector<JobEvent>* events);
  Result<ListPage> ListJobs(const ListQuery& query);
  Result<Job> Cancel(const std::string& job_id, const std::string& reason);
  // Waits until the job has events after `after_seq`, it is terminal, the deadline passes or the
  // core shuts down; returns those events (maybe none). `*finished`: the job is terminal and every
  // event has been returned.
  Result<std::vector<JobEvent>> WaitEvents(const std::string& job_id, int64_t after_seq,
                                           Deadline deadline, bool* finished);
  // Plans and places `spec` against the cluster as it is now, changing nothing.
  Result<DryRun> Plan(const JobSpec& spec);

  // Registers a node (again: a new incarnation, and ranks it held are failed over).
  Result<int64_t> RegisterNode(const Node& node);
  // Applies an agent's report and returns everything the node should be running now.
  Result<std::vector<Assignment>> Heartbeat(const std::string& node_id, int64_t incarnation,
                                            const std::vector<TaskReport>& tasks,
                                            const std::vector<StoreReport>& stores);
  // Marks silent nodes LOST and fails their jobs over. Call periodically.
  void Tick();

  // For launch backends. Jobs whose launcher is not agents are placed like any other but never
  // assigned to agents; a backend polls this, starts what is SCHEDULED, stops what is no longer
  // listed (cancelled, failed over) and reports back. Returns true with every such SCHEDULED or
  // RUNNING job in `*out` when the set may have changed since `*generation` (updated); false when
  // the deadline passed or the core shut down first.
  bool WaitLaunchTargets(int64_t* generation, Deadline deadline, std::vector<LaunchTarget>* out);
  // Applies a backend's report. FailedPrecondition when the attempt is no longer current (the
  // job moved on: the backend should stop what it runs for it); NotFound for an unknown job.
  Status ReportLaunch(const LaunchReport& report);
  ClusterView Cluster();
  // Prometheus exposition of jobs by state, nodes by state, queue-wait and placement histograms.
  std::string MetricsText();
  // Wakes every WaitEvents caller; later waits return at once.
  void Shutdown();
  // False once the state store failed.
  bool healthy();
  int heartbeat_interval_ms() const { return options_.heartbeat_interval_ms; }

 private:
  explicit SchedulerCore(CoreOptions options, std::unique_ptr<StateStore> store);
  Status LoadLocked();
  Status CheckUsableLocked() const;
  Status CommitLocked(WriteBatch& batch);
  void AddEventLocked(Job& job, JobEvent ev, WriteBatch& batch);
  void SetStateLocked(Job& job, JobState state, std::string reason, WriteBatch& batch);
  void ReleaseLocked(Job& job);
  // Ends the current attempt: back to PENDING when retries are left (or `charge` is false: the
  // attempt never got going through no fault of the job), else FAILED.
  void FailAttemptLocked(Job& job, const std::string& why, WriteBatch& batch, bool charge = true);
  void ScheduleLocked(WriteBatch& batch);
  void PlaceLocked(Job& job, const GangPlacement& placement, WriteBatch& batch);
  std::vector<NodeSlot> CandidatesLocked(const Job& job, const std::set<std::string>& exclude,
                                         bool ignore_usage) const;
  std::vector<Assignment> AssignmentsLocked(const std::string& node_id) const;
  // Sets job.world_size (and plan_json); `note`, when given, gets the planner's remark.
  Status ResolveWorldSizeLocked(Job& job, std::string* note = nullptr);

  CoreOptions options_;
  std::unique_ptr<StateStore> store_;
  std::mutex mu_;
  std::condition_variable events_cv_;
  bool shutdown_ = false;
  Status store_failure_;

  std::unordered_map<std::string, std::unique_ptr<Job>> jobs_;
  std::map<int64_t, Job*> jobs_by_seq_;
  std::unordered_map<std::string, std::vector<JobEvent>> events_;
  // Pending queue: (-priority, seq).
  std::set<std::pair<int64_t, int64_t>> queue_;
  std::map<std::string, std::unique_ptr<Node>> nodes_;
  // Active (SCHEDULED/RUNNING) job ids per node.
  std::map<std::string, std::set<std::string>> active_on_node_;
  int64_t next_job_seq_ = 1;
  int64_t next_incarnation_ = 1;
  int64_t next_register_seq_ = 1;
  std::map<JobState, int64_t> state_counts_;
  Histogram queue_wait_seconds_;
  Histogram placement_seconds_;
  uint64_t submitted_total_ = 0;
  uint64_t retries_total_ = 0;
  uint64_t nodes_lost_total_ = 0;
  // Bumped whenever a job with a launch backend changes state (WaitLaunchTargets).
  int64_t launch_generation_ = 1;
};

}  // namespace weft::scheduler
