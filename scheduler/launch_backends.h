// Launch backends for jobs that node agents do not start: `mpirun` (the scheduler writes a hostfile
// of the placement and runs mpirun over it) and Kubernetes (the scheduler renders an Indexed Job
// with a headless Service, or a Kubeflow MPIJob, and applies it with kubectl when configured).
// Sits in scheduler/ above the core (scheduler_core.h), which it polls and reports to; the
// `weft scheduler` CLI owns it. Renderers are pure functions, shared with previews and tests.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/deadline.h"
#include "base/status.h"
#include "scheduler/job_types.h"
#include "scheduler/scheduler_core.h"

namespace weft::scheduler {

enum class K8sKind { kIndexedJob, kMpiJob };
std::string_view K8sKindName(K8sKind k);                 // "indexed-job", "mpijob"
bool ParseK8sKind(std::string_view text, K8sKind* out);  // those names

// "--mca pml ob1 --mca btl tcp,vader,self --bind-to none": Open MPI's TCP and shared-memory paths
// (never pml ucx, which needs extra setup) and no core binding (the scheduler's slots are not
// cores). WEFT_SCHED_MPIRUN_ARGS / --mpirun-args replace them.
std::vector<std::string> DefaultMpirunArgs();

struct LaunchOptions {
  std::string state_dir = ".";    // <state_dir>/mpirun/ and <state_dir>/k8s/ hold what is written
  std::string mpirun = "mpirun";  // a path, or a name looked up in PATH
  std::vector<std::string> mpirun_args = DefaultMpirunArgs();
  std::string kubectl;  // empty: Kubernetes manifests are rendered, never applied
  std::string k8s_namespace = "default";
  std::string k8s_image = "weft";
  K8sKind k8s_kind = K8sKind::kIndexedJob;
  int k8s_poll_ms = 5000;          // how often an applied job's status is read with kubectl
  int kubectl_timeout_ms = 60000;  // a kubectl call running longer is killed (and fails)
  int grace_ms = 3000;             // SIGTERM -> SIGKILL when stopping mpirun
  int k8s_store_port = 29500;      // where rank 0's pod serves the rendezvous store
};

// InvalidArgument naming the bad option.
Status ValidateLaunchOptions(const LaunchOptions& o);

// The hostfile of a placement: one line per host ("ADDRESS slots=N"), hosts in rank order, nodes
// sharing a host_id (or an address) merged. When some host's ranks are not contiguous in rank
// order (slot mapping could not reproduce the placement) it is one line per rank for
// `--map-by seq` instead (`sequential`).
struct Hostfile {
  std::string text;
  bool sequential = false;
  int hosts = 0;
};
// `nodes` must hold every node of job.placement. InvalidArgument when one is missing.
Result<Hostfile> RenderHostfile(const Job& job, const std::vector<Node>& nodes);

// mpirun --hostfile F -np N --map-by slot|seq [--allow-run-as-root] ARGS -x NAME... PROGRAM...
// (-x exports the job's env names and WEFT_JOB_ID; values travel in mpirun's environment).
std::vector<std::string> MpirunArgv(const LaunchOptions& o, const Job& job,
                                    const std::string& hostfile_path, bool sequential);

// Object name for an attempt of a job: "weft-job-3-a0" (a DNS label).
std::string KubernetesName(const Job& job);
// The manifest (a YAML stream) for the job's current placement: Secret (the job secret) +
// headless Service + Indexed Job, or Secret + MPIJob, per o.k8s_kind. `redact_secret` writes
// "<redacted>" instead of the secret (previews).
Result<std::string> RenderKubernetes(const LaunchOptions& o, const Job& job,
                                     const std::vector<Node>& nodes, bool redact_secret);

// What the scheduler would run for `job` on `nodes` (hostfile + command line, or the manifest),
// secrets redacted. InvalidArgument for an agents job or one without a placement.
Result<std::string> LaunchPreview(const LaunchOptions& o, const Job& job,
                                  const std::vector<Node>& nodes);

// Runs the mpirun and Kubernetes jobs of `core`: one thread polls core.WaitLaunchTargets, starts
// what is SCHEDULED, stops what is no longer listed (cancel, node lost, retry) and reports
// through core.ReportLaunch; it never holds the core's mutex while it forks, waits or reads
// files. Child processes (mpirun, kubectl) run in their own sessions with output in files under
// state_dir; mpirun gets SIGTERM if the thread (and so the scheduler) dies. A RUNNING mpirun job
// found after a scheduler restart has lost its mpirun: its session's leftovers are killed and the
// attempt fails over (retried per policy). Applied Kubernetes jobs are followed by polling their
// status and deleted (kubectl delete) when cancelled.
// The core is borrowed and must outlive this object. Shutdown (or destruction) joins the thread
// and stops every mpirun it started (SIGTERM, SIGKILL after grace_ms); Kubernetes objects stay.
class LaunchBackends {
 public:
  static Result<std::unique_ptr<LaunchBackends>> Start(SchedulerCore& core, LaunchOptions o);
  ~LaunchBackends();
  LaunchBackends(const LaunchBackends&) = delete;
  LaunchBackends& operator=(const LaunchBackends&) = delete;

  void Shutdown();
  const LaunchOptions& options() const { return o_; }

 private:
  enum class Role { kMpirun, kApply, kStatus, kDelete };
  struct Child {
    pid_t pid = -1;
    Role role = Role::kMpirun;
    std::string job_id;
    int attempt = 0;
    std::string log;
    Clock::time_point deadline = Clock::time_point::max();  // killed (and failed) after it
    bool timed_out = false;
    bool orphaned = false;  // its launch was stopped: reap it, report nothing
    bool term_sent = false;
    Clock::time_point kill_at = Clock::time_point::max();
  };
  struct Launch {
    Launcher launcher = Launcher::kAgents;
    int attempt = 0;
    std::string name;      // Kubernetes object name
    std::string manifest;  // Kubernetes manifest path
    bool applied = false;  // Kubernetes objects exist (or may)
    bool done = false;     // reported its end; waits for the core to drop it
    Clock::time_point next_poll;
    std::string last_poll_error;
  };

  LaunchBackends(SchedulerCore& core, LaunchOptions o) : core_(core), o_(std::move(o)) {}
  void Loop();
  void Reconcile(const std::vector<LaunchTarget>& targets);
  void Begin(const LaunchTarget& t);
  void StartMpirun(const LaunchTarget& t, Launch& l);
  void BeginKubernetes(const LaunchTarget& t, Launch& l);
  void Stop(const std::string& job_id, Launch& l);
  void Reap();
  void OnExit(Child& c, int code);
  void Poll();
  Child* Run(Role role, const std::string& job_id, int attempt,
             const std::vector<std::string>& argv, const std::vector<std::string>& env,
             const std::string& log, int timeout_ms, std::string* error);
  void Report(LaunchReport r);
  std::vector<std::string> KubectlArgv(std::vector<std::string> args) const;

  SchedulerCore& core_;
  const LaunchOptions o_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  // Owned by thread_ alone.
  std::map<std::string, Launch> launches_;  // by job id
  std::vector<std::unique_ptr<Child>> children_;
};

}  // namespace weft::scheduler
