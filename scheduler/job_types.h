// The scheduling core's vocabulary: job specs, states, placements, nodes and events. Plain C++
// values (no gRPC or protobuf types); the gRPC adapter (scheduler_service.h) converts at the edge.
// Sits in scheduler/, above base; used by the core, its persistence and the agent.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace weft::scheduler {

// Numbers match weft.scheduler.v1.JobState.
enum class JobState : int {
  kPending = 1,
  kScheduled = 2,
  kRunning = 3,
  kSucceeded = 4,
  kFailed = 5,
  kCancelled = 6,
};
std::string_view JobStateName(JobState s);                 // "PENDING", ...
bool ParseJobState(std::string_view text, JobState* out);  // case-insensitive names
inline bool IsTerminal(JobState s) {
  return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled;
}

enum class NodeState : int { kReady = 1, kLost = 2 };
std::string_view NodeStateName(NodeState s);

struct PlanRequest {
  std::string model_json;  // JSON text (starts with '{') or a model file path on the scheduler
  int max_ranks = 0;
  int pin_pp = 0;  // 0 / "": the planner searches
  int pin_dp = 0;
  std::string pin_schedule;
  int pin_micro_batches = 0;
};

struct Resources {
  int ranks = 0;           // 0: the planner chooses (plan must be set)
  int ranks_per_node = 0;  // 0: pack; N: exactly N ranks on each node used
  int64_t memory_per_rank_bytes = 0;
  std::optional<PlanRequest> plan;
};

struct RetryPolicy {
  int max_retries = 0;
};

// Who starts a placed job's ranks. Numbers match weft.scheduler.v1.Launcher. Every launcher's jobs
// are queued and placed alike (gang, topology-aware, slots held); only the start differs:
// node agents (Heartbeat assignments), `mpirun` run by the scheduler over a hostfile of the
// placement, or Kubernetes objects rendered (and applied with kubectl) by the scheduler
// (scheduler/launch_backends.h).
enum class Launcher : int { kAgents = 0, kMpirun = 1, kKubernetes = 2 };
std::string_view LauncherName(Launcher l);                 // "agents", "mpirun", "kubernetes"
bool ParseLauncher(std::string_view text, Launcher* out);  // those names, case-insensitive

struct JobSpec {
  std::string name;
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "K=V"
  Resources resources;
  int priority = 0;
  RetryPolicy retry;
  Launcher launcher = Launcher::kAgents;
};

// Limits enforced by ValidateJobSpec (and documented in the CLI).
inline constexpr int kMaxRanks = 65536;
inline constexpr size_t kMaxNameBytes = 256;
inline constexpr size_t kMaxArgvBytes = 256 * 1024;
inline constexpr int kMaxRetries = 100;
inline constexpr int kMaxPriority = 1000000;

// InvalidArgument naming the first bad field ("spec.resources.ranks: -3 ..."). With
// `planner_available` false, a plan request without ranks is Unimplemented.
Status ValidateJobSpec(const JobSpec& spec, bool planner_available);

struct RankPlacement {
  int rank = 0;
  std::string node_id;
  int local_rank = 0;
};

enum class RankRunState : int { kAssigned = 0, kRunning = 1, kExited = 2 };
std::string_view RankRunStateName(RankRunState s);

struct RankStatus {
  int rank = 0;
  std::string node_id;
  RankRunState state = RankRunState::kAssigned;
  int exit_code = 0;
  std::string log_tail;
};

struct Job {
  std::string id;
  int64_t seq = 0;  // submission order; also the queue's FIFO key
  JobSpec spec;
  JobState state = JobState::kPending;
  std::string reason;
  int attempt = 0;
  // Attempts that ended because a node was lost before the attempt's ranks started there (the
  // placement raced the node's death): they do not use up the retry policy.
  int uncharged_attempts = 0;
  int world_size = 0;  // spec ranks, or the plan's
  int64_t submit_time_ms = 0;
  int64_t queued_time_ms = 0;  // when it last entered PENDING (queue-wait metric)
  int64_t start_time_ms = 0;
  int64_t end_time_ms = 0;
  std::vector<RankPlacement> placement;  // current attempt, rank order
  std::vector<RankStatus> ranks;         // current attempt
  std::string job_secret;                // current attempt
  std::string store_url;                 // current attempt, once rank 0's node serves it
  std::string plan_json;
  int64_t next_event_seq = 1;
};

enum class EventKind : int { kStateChange = 1, kRankEvent = 2 };

struct JobEvent {
  std::string job_id;
  int64_t seq = 0;
  int64_t time_ms = 0;
  EventKind kind = EventKind::kStateChange;
  JobState state = JobState::kPending;
  std::string message;
  int attempt = 0;
  int rank = -1;
  std::string node_id;
  int exit_code = 0;
  std::string log_tail;
};

struct Node {
  std::string node_id;
  std::string host_id;
  std::string switch_id;
  std::string address;
  int slots = 0;
  int64_t memory_bytes = 0;
  NodeState state = NodeState::kReady;
  int64_t incarnation = 0;
  int64_t register_seq = 0;  // registration order: the tie-break in placement (never the name)
  int64_t last_heartbeat_ms = 0;
  std::string reason;
  // Derived, not persisted: slots and memory held by placed ranks.
  int used_slots = 0;
  int64_t used_memory = 0;
};

// What an agent reports about one of its ranks.
struct TaskReport {
  std::string job_id;
  int attempt = 0;
  int rank = 0;
  bool exited = false;
  int exit_code = 0;
  std::string log_tail;
};

struct StoreReport {
  std::string job_id;
  int attempt = 0;
  std::string url;
};

// One job's ranks on one node: what the node's agent should be running.
struct Assignment {
  std::string job_id;
  int attempt = 0;
  int world_size = 0;
  std::vector<RankPlacement> ranks;
  int local_size = 0;
  std::vector<std::string> argv;
  std::vector<std::string> env;
  std::string job_secret;
  std::string store_url;
  bool serve_store = false;
};

// A small length-prefixed binary encoding for persistence (not a wire format for others).
std::string EncodeJob(const Job& job);
Result<Job> DecodeJob(std::string_view data);
std::string EncodeEvent(const JobEvent& ev);
Result<JobEvent> DecodeEvent(std::string_view data);
std::string EncodeNode(const Node& node);
Result<Node> DecodeNode(std::string_view data);

}  // namespace weft::scheduler
