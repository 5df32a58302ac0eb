// CLI front ends over SchedulerClient, SchedulerServer and RunNodeAgent.
#include "scheduler/scheduler_cli.h"

#include <google/protobuf/util/json_util.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "base/env.h"
#include "base/logging.h"
#include "scheduler/launch_backends.h"
#include "scheduler/node_agent.h"
#include "scheduler/partition_job_planner.h"
#include "scheduler/scheduler_client.h"
#include "scheduler/scheduler_core.h"
#include "scheduler/scheduler_service.h"

namespace weft::scheduler {

WEFT_ENV_KNOB(kSchedulerAddr, "WEFT_SCHEDULER", "127.0.0.1:7070",
              "scheduler address used by weft submit/jobs/job/cancel/watch/agent");
WEFT_ENV_KNOB(kSchedToken, "WEFT_SCHED_TOKEN", "",
              "bearer token for the scheduler API (or --token / --token-file)");
WEFT_ENV_KNOB(kSchedDb, "WEFT_SCHED_DB", "weft-scheduler.db",
              "SQLite file holding the scheduler's state (weft scheduler --db)");
WEFT_ENV_KNOB(kSchedDbSync, "WEFT_SCHED_DB_SYNC", "full",
              "full: fsync every commit (survives power loss); normal: survives a killed process");
WEFT_ENV_KNOB(kSchedNodeTimeoutMs, "WEFT_SCHED_NODE_TIMEOUT_MS", "10000",
              "a node that has not heartbeated for this long is lost and its jobs fail over");
WEFT_ENV_KNOB(kSchedHeartbeatMs, "WEFT_SCHED_HEARTBEAT_MS", "1000",
              "heartbeat interval the scheduler asks its agents for");
WEFT_ENV_KNOB(kSchedMaxMessage, "WEFT_SCHED_MAX_MESSAGE_BYTES", "4M",
              "largest request the scheduler accepts (RESOURCE_EXHAUSTED above)");
WEFT_ENV_KNOB(kSchedMpirun, "WEFT_SCHED_MPIRUN", "mpirun",
              "mpirun the scheduler runs for --launcher mpirun jobs (weft scheduler --mpirun)");
WEFT_ENV_KNOB(kSchedMpirunArgs, "WEFT_SCHED_MPIRUN_ARGS",
              "--mca pml ob1 --mca btl tcp,vader,self --bind-to none",
              "mpirun options the scheduler adds for mpirun jobs (weft scheduler --mpirun-args)");
WEFT_ENV_KNOB(kSchedKubectl, "WEFT_SCHED_KUBECTL", "",
              "kubectl that applies --launcher kubernetes jobs; empty: render manifests only");

namespace {

constexpr int kUsage = 2;

std::atomic<bool> g_stop{false};
void OnStopSignal(int) { g_stop.store(true); }

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::vector<std::string>> opts;  // --name -> values
  std::vector<std::string> rest;                         // after --
  std::string error;
};

// Flags that take no value.
bool IsSwitch(const std::string& name) {
  return name == "--json" || name == "--wait" || name == "--quiet" || name == "--dry-run" ||
         name == "--manifest";
}

Args Parse(const std::vector<std::string>& in, const std::vector<std::string>& known) {
  Args a;
  for (size_t i = 0; i < in.size(); ++i) {
    const std::string& s = in[i];
    if (s == "--") {
      a.rest.assign(in.begin() + static_cast<long>(i) + 1, in.end());
      break;
    }
    if (s.size() > 1 && s[0] == '-') {
      std::string name = s, value;
      size_t eq = s.find('=');
      if (eq != std::string::npos) {
        name = s.substr(0, eq);
        value = s.substr(eq + 1);
      }
      if (std::find(known.begin(), known.end(), name) == known.end()) {
        a.error = "unknown option '" + name + "'";
        return a;
      }
      if (IsSwitch(name)) {
        a.opts[name].push_back("1");
        continue;
      }
      if (eq == std::string::npos) {
        if (i + 1 >= in.size()) {
          a.error = "option " + name + " needs a value";
          return a;
        }
        value = in[++i];
      }
      a.opts[name].push_back(value);
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

std::string Opt(const Args& a, const std::string& name, const std::string& def = "") {
  auto it = a.opts.find(name);
  return it == a.opts.end() ? def : it->second.back();
}
bool Has(const Args& a, const std::string& name) { return a.opts.count(name) > 0; }

bool IntOpt(const Args& a, const std::string& name, int64_t def, int64_t lo, int64_t hi,
            int64_t* out, std::string* err) {
  if (!Has(a, name)) {
    *out = def;
    return true;
  }
  int64_t v;
  if (!ParseInt(Opt(a, name), &v) || v < lo || v > hi) {
    *err = name + ": '" + Opt(a, name) + "' is not an integer in " + std::to_string(lo) + ".." +
           std::to_string(hi);
    return false;
  }
  *out = v;
  return true;
}

int UsageError(const std::string& cmd, const std::string& msg) {
  std::fprintf(stderr, "weft %s: %s (see weft help)\n", cmd.c_str(), msg.c_str());
  return kUsage;
}

int Fail(const std::string& cmd, const Status& s) {
  std::fprintf(stderr, "weft %s: %s\n", cmd.c_str(), s.ToString().c_str());
  return 1;
}

Result<std::string> Token(const Args& a) {
  if (Has(a, "--token-file")) {
    std::ifstream f(Opt(a, "--token-file"));
    if (!f) return InvalidArgumentError("--token-file: cannot read " + Opt(a, "--token-file"));
    std::string t;
    std::getline(f, t);
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
    return t;
  }
  if (Has(a, "--token")) return Opt(a, "--token");
  return kSchedToken.Get();
}

const std::vector<std::string> kClientOpts = {"--scheduler", "--token", "--token-file",
                                              "--timeout-ms", "--json"};

std::vector<std::string> With(std::vector<std::string> extra) {
  extra.insert(extra.end(), kClientOpts.begin(), kClientOpts.end());
  return extra;
}

struct ClientCtx {
  std::unique_ptr<SchedulerClient> client;
  int64_t timeout_ms = 10000;
  bool json = false;
  Deadline deadline() const { return Deadline::AfterMs(timeout_ms); }
};

Result<ClientCtx> MakeClient(const Args& a) {
  ClientCtx c;
  std::string err;
  if (!IntOpt(a, "--timeout-ms", 10000, 1, 86400000, &c.timeout_ms, &err)) {
    return InvalidArgumentError(err);
  }
  WEFT_ASSIGN_OR_RETURN(std::string token, Token(a));
  WEFT_ASSIGN_OR_RETURN(
      c.client, SchedulerClient::Create(Opt(a, "--scheduler", kSchedulerAddr.Get()), token));
  c.json = Has(a, "--json");
  return c;
}

std::string Json(const google::protobuf::Message& m, bool multiline = true) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  o.add_whitespace = multiline;
  o.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  if (!multiline && !out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string StateName(v1::JobState s) { return v1::JobState_Name(s); }

std::string Age(int64_t since_ms) {
  if (since_ms <= 0) return "-";
  int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  int64_t s = std::max<int64_t>(0, (now - since_ms) / 1000);
  if (s < 120) return std::to_string(s) + "s";
  if (s < 7200) return std::to_string(s / 60) + "m";
  if (s < 172800) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
}

std::string Clip(const std::string& s, size_t n) {
  std::string one = s;
  for (char& c : one) {
    if (c == '\n') c = ' ';
  }
  return one.size() <= n ? one : one.substr(0, n - 3) + "...";
}

int WorldSize(const v1::Job& j) {
  return j.placement_size() > 0 ? j.placement_size() : j.spec().resources().ranks();
}

void PrintEvent(const v1::JobEvent& e, bool json) {
  if (json) {
    std::printf("%s\n", Json(e, false).c_str());
  } else {
    std::printf("%-4lld %-10s a%-2d %s\n", static_cast<long long>(e.seq()),
                StateName(e.state()).c_str(), e.attempt(), e.message().c_str());
    if (!e.log_tail().empty() && e.exit_code() != 0) {
      if (e.rank() >= 0) {
        std::printf("     log tail of rank %d:\n", e.rank());
      } else {
        std::printf("     log tail:\n");
      }
      std::istringstream in(e.log_tail());
      std::string line;
      while (std::getline(in, line)) std::printf("     | %s\n", line.c_str());
    }
  }
  std::fflush(stdout);
}

// ---- weft scheduler -------------------------------------------------------------------------

int SchedulerCmd(const std::vector<std::string>& argv) {
  const std::string cmd = "scheduler";
  Args a =
      Parse(argv, {"--listen", "--db", "--token", "--token-file", "--metrics-listen", "--port-file",
                   "--node-timeout-ms", "--heartbeat-ms", "--max-message-bytes", "--db-sync",
                   "--state-dir", "--mpirun", "--mpirun-args", "--kubectl", "--k8s-namespace",
                   "--k8s-image", "--k8s-kind", "--k8s-poll-ms", "--kubectl-timeout-ms"});
  if (!a.error.empty()) return UsageError(cmd, a.error);
  if (!a.positional.empty()) return UsageError(cmd, "unexpected '" + a.positional[0] + "'");
  auto token = Token(a);
  if (!token.ok()) return UsageError(cmd, token.status().message());
  if (token->empty()) return UsageError(cmd, "--token, --token-file or WEFT_SCHED_TOKEN required");
  std::string err;
  int64_t timeout_ms, hb_ms, max_msg;
  if (!IntOpt(a, "--node-timeout-ms", kSchedNodeTimeoutMs.GetInt(), 10, 86400000, &timeout_ms,
              &err) ||
      !IntOpt(a, "--heartbeat-ms", kSchedHeartbeatMs.GetInt(), 10, 600000, &hb_ms, &err)) {
    return UsageError(cmd, err);
  }
  max_msg = kSchedMaxMessage.GetBytes();
  if (Has(a, "--max-message-bytes") && !ParseBytes(Opt(a, "--max-message-bytes"), &max_msg)) {
    return UsageError(cmd,
                      "--max-message-bytes: '" + Opt(a, "--max-message-bytes") + "' is not a size");
  }
  std::string sync = Opt(a, "--db-sync", kSchedDbSync.Get());
  if (sync != "full" && sync != "normal") {
    return UsageError(cmd, "--db-sync: '" + sync + "' is not full or normal");
  }
  // Launch backends: hostfiles, mpirun output and manifests go next to the database.
  std::string db = Opt(a, "--db", kSchedDb.Get());
  LaunchOptions lo;
  {
    std::string parent = std::filesystem::path(db).parent_path().string();
    lo.state_dir = Opt(a, "--state-dir", parent.empty() ? "." : parent);
    lo.mpirun = Opt(a, "--mpirun", kSchedMpirun.Get());
    std::istringstream words(Opt(a, "--mpirun-args", kSchedMpirunArgs.Get()));
    lo.mpirun_args.clear();
    for (std::string w; words >> w;) lo.mpirun_args.push_back(w);
    lo.kubectl = Opt(a, "--kubectl", kSchedKubectl.Get());
    lo.k8s_namespace = Opt(a, "--k8s-namespace", lo.k8s_namespace);
    lo.k8s_image = Opt(a, "--k8s-image", lo.k8s_image);
    if (Has(a, "--k8s-kind") && !ParseK8sKind(Opt(a, "--k8s-kind"), &lo.k8s_kind)) {
      return UsageError(cmd,
                        "--k8s-kind: '" + Opt(a, "--k8s-kind") + "' is not indexed-job or mpijob");
    }
    int64_t poll, kt;
    if (!IntOpt(a, "--k8s-poll-ms", lo.k8s_poll_ms, 10, 86400000, &poll, &err) ||
        !IntOpt(a, "--kubectl-timeout-ms", lo.kubectl_timeout_ms, 100, 86400000, &kt, &err)) {
      return UsageError(cmd, err);
    }
    lo.k8s_poll_ms = static_cast<int>(poll);
    lo.kubectl_timeout_ms = static_cast<int>(kt);
    Status v = ValidateLaunchOptions(lo);
    if (!v.ok()) return UsageError(cmd, v.message());
  }
  // Block the stop signals before any thread starts so only sigwait below sees them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto store = StateStore::Open(db, sync == "full");
  if (!store.ok()) return Fail(cmd, store.status());
  CoreOptions co;
  co.node_timeout_ms = timeout_ms;
  co.heartbeat_interval_ms = static_cast<int>(hb_ms);
  // Plan requests go to the partition planner over the registered nodes (defaults documented in
  // partition_job_planner.h). Declared before the core, which borrows it.
  PartitionJobPlanner planner;
  co.planner = &planner;
  auto core = SchedulerCore::Open(co, std::move(store).value());
  if (!core.ok()) return Fail(cmd, core.status());
  auto launcher = LaunchBackends::Start(**core, lo);
  if (!launcher.ok()) return Fail(cmd, launcher.status());
  ServiceOptions so;
  so.listen = Opt(a, "--listen", "127.0.0.1:7070");
  so.token = *token;
  so.max_message_bytes = static_cast<int>(std::min<int64_t>(max_msg, 1 << 30));
  so.metrics_listen = Opt(a, "--metrics-listen");
  so.tick_ms = static_cast<int>(std::clamp<int64_t>(timeout_ms / 5, 10, 1000));
  so.launch = &(*launcher)->options();
  auto server = SchedulerServer::Start(**core, so);
  if (!server.ok()) return Fail(cmd, server.status());
  std::fprintf(stderr, "weft scheduler: serving gRPC on port %d (metrics on %d), state in %s\n",
               (*server)->port(), (*server)->metrics_port(), db.c_str());
  if (Has(a, "--port-file")) {
    std::string path = Opt(a, "--port-file"), tmp = path + ".tmp";
    {
      std::ofstream f(tmp);
      f << (*server)->port() << " " << (*server)->metrics_port() << "\n";
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      return Fail(cmd, ErrnoError("--port-file " + path, errno));
    }
  }
  int sig = 0;
  sigwait(&set, &sig);
  std::fprintf(stderr, "weft scheduler: %s, shutting down\n", strsignal(sig));
  (*server)->Shutdown();
  (*launcher)->Shutdown();  // stops the mpiruns it started; restarts fail those jobs over
  return 0;
}

// ---- weft agent -----------------------------------------------------------------------------

int AgentCmd(const std::vector<std::string>& argv) {
  const std::string cmd = "agent";
  Args a = Parse(argv, {"--scheduler", "--token", "--token-file", "--node-id", "--switch",
                        "--address", "--slots", "--memory", "--grace-ms", "--quiet"});
  if (!a.error.empty()) return UsageError(cmd, a.error);
  AgentOptions o;
  o.scheduler = Opt(a, "--scheduler", kSchedulerAddr.Get());
  auto token = Token(a);
  if (!token.ok()) return UsageError(cmd, token.status().message());
  o.token = *token;
  o.node_id = Opt(a, "--node-id");
  o.switch_id = Opt(a, "--switch");
  o.address = Opt(a, "--address");
  std::string err;
  int64_t slots, grace;
  if (!IntOpt(a, "--slots", 0, 1, 4096, &slots, &err) ||
      !IntOpt(a, "--grace-ms", 3000, 0, 600000, &grace, &err)) {
    return UsageError(cmd, err);
  }
  o.slots = static_cast<int>(slots);
  o.grace_ms = static_cast<int>(grace);
  if (Has(a, "--memory") && !ParseBytes(Opt(a, "--memory"), &o.memory_bytes)) {
    return UsageError(cmd, "--memory: '" + Opt(a, "--memory") + "' is not a size (e.g. 64G)");
  }
  o.echo_output = !Has(a, "--quiet");
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  Status s = RunNodeAgent(o, &g_stop);
  if (!s.ok()) return Fail(cmd, s);
  return 0;
}

// ---- client commands ------------------------------------------------------------------------

int SubmitCmd(const std::vector<std::string>& argv) {
  const std::string cmd = "submit";
  Args a = Parse(argv, With({"-n", "--ranks", "--name", "--priority", "--retries",
                             "--ranks-per-node", "--memory-per-rank", "--env", "--wait",
                             "--dry-run", "--model", "--max-ranks", "--launcher"}));
  if (!a.error.empty()) return UsageError(cmd, a.error);
  if (a.rest.empty()) return UsageError(cmd, "give the program after --: weft submit -n 4 -- PROG");
  v1::JobSpec spec;
  spec.set_name(Opt(a, "--name", a.rest[0]));
  for (const auto& s : a.rest) spec.add_argv(s);
  if (a.opts.count("--env")) {
    for (const auto& e : a.opts.at("--env")) spec.add_env(e);
  }
  std::string err;
  int64_t ranks, prio, retries, rpn;
  std::string ranks_opt = Has(a, "-n") ? "-n" : "--ranks";
  if (!IntOpt(a, ranks_opt, 1, 1, kMaxRanks, &ranks, &err) ||
      !IntOpt(a, "--priority", 0, -kMaxPriority, kMaxPriority, &prio, &err) ||
      !IntOpt(a, "--retries", 0, 0, kMaxRetries, &retries, &err) ||
      !IntOpt(a, "--ranks-per-node", 0, 0, kMaxRanks, &rpn, &err)) {
    return UsageError(cmd, err);
  }
  if (Has(a, "--model")) {
    // The planner chooses the world size; the model file is read on the scheduler's host.
    if (Has(a, "-n") || Has(a, "--ranks")) return UsageError(cmd, "give -n or --model, not both");
    int64_t max_ranks;
    if (!IntOpt(a, "--max-ranks", 0, 0, kMaxRanks, &max_ranks, &err)) return UsageError(cmd, err);
    ranks = 0;
    spec.mutable_resources()->mutable_plan()->set_model_json(Opt(a, "--model"));
    spec.mutable_resources()->mutable_plan()->set_max_ranks(static_cast<int>(max_ranks));
  }
  spec.mutable_resources()->set_ranks(static_cast<int>(ranks));
  spec.mutable_resources()->set_ranks_per_node(static_cast<int>(rpn));
  if (Has(a, "--memory-per-rank")) {
    int64_t m;
    if (!ParseBytes(Opt(a, "--memory-per-rank"), &m)) {
      return UsageError(cmd,
                        "--memory-per-rank: '" + Opt(a, "--memory-per-rank") + "' is not a size");
    }
    spec.mutable_resources()->set_memory_per_rank_bytes(m);
  }
  spec.set_priority(static_cast<int>(prio));
  spec.mutable_retry()->set_max_retries(static_cast<int>(retries));
  if (Has(a, "--launcher")) {
    Launcher l;
    if (!ParseLauncher(Opt(a, "--launcher"), &l)) {
      return UsageError(
          cmd, "--launcher: '" + Opt(a, "--launcher") + "' is not agents, mpirun or kubernetes");
    }
    spec.set_launcher(static_cast<v1::Launcher>(static_cast<int>(l)));
  }
  auto c = MakeClient(a);
  if (!c.ok()) return UsageError(cmd, c.status().message());
  if (Has(a, "--dry-run")) {
    v1::PlanJobRequest req;
    *req.mutable_spec() = spec;
    auto r = c->client->PlanJob(req, c->deadline());
    if (!r.ok()) return Fail(cmd, r.status());
    if (c->json) {
      std::printf("%s", Json(*r).c_str());
      return 0;
    }
    std::printf("world size %d, placement computed in %lld us%s%s\n", r->world_size(),
                static_cast<long long>(r->placement_time_us()), r->note().empty() ? "" : ": ",
                r->note().c_str());
    for (const auto& p : r->placement()) {
      std::printf("  rank %-5d node %-24s local rank %d\n", p.rank(), p.node_id().c_str(),
                  p.local_rank());
    }
    if (!r->launch_preview().empty()) std::printf("\n%s", r->launch_preview().c_str());
    return 0;
  }
  v1::SubmitJobRequest req;
  *req.mutable_spec() = spec;
  auto r = c->client->SubmitJob(req, c->deadline());
  if (!r.ok()) return Fail(cmd, r.status());
  if (c->json) {
    std::printf("%s", Json(r->job()).c_str());
  } else {
    std::printf("%s submitted (%s)\n", r->job().id().c_str(), StateName(r->job().state()).c_str());
  }
  std::fflush(stdout);
  if (!Has(a, "--wait")) return 0;
  v1::WatchJobRequest w;
  w.set_job_id(r->job().id());
  v1::JobState last = r->job().state();
  Status s = c->client->WatchJob(w, Deadline::Infinite(), [&](const v1::JobEvent& e) {
    if (!c->json) PrintEvent(e, false);
    last = e.state();
    return true;
  });
  if (!s.ok()) return Fail(cmd, s);
  return last == v1::SUCCEEDED ? 0 : 1;
}

int JobsCmd(const std::vector<std::string>& argv) {
  const std::string cmd = "jobs";
  Args a = Parse(argv, With({"--state", "--name-prefix", "--limit", "--page-token"}));
  if (!a.error.empty()) return UsageError(cmd, a.error);
  v1::ListJobsRequest req;
  if (a.opts.count("--state")) {
    for (const auto& s : a.opts.at("--state")) {
      JobState st;
      if (!ParseJobState(s, &st)) return UsageError(cmd, "--state: '" + s + "' is not a state");
      req.add_states(static_cast<v1::JobState>(static_cast<int>(st)));
    }
  }
  req.set_name_prefix(Opt(a, "--name-prefix"));
  std::string err;
  int64_t limit;
  if (!IntOpt(a, "--limit", 100, 1, 1000, &limit, &err)) return UsageError(cmd, err);
  req.set_page_size(static_cast<int>(limit));
  req.set_page_token(Opt(a, "--page-token"));
  auto c = MakeClient(a);
  if (!c.ok()) return UsageError(cmd, c.status().message());
  auto r = c->client->ListJobs(req, c->deadline());
  if (!r.ok()) return Fail(cmd, r.status());
  if (c->json) {
    std::printf("%s", Json(*r).c_str());
    return 0;
  }
  std::printf("%-12s %-20s %-10s %6s %5s %4s %6s  %s\n", "ID", "NAME", "STATE", "RANKS", "PRI",
              "TRY", "AGE", "REASON");
  for (const auto& j : r->jobs()) {
    std::printf("%-12s %-20s %-10s %6d %5d %4d %6s  %s\n", j.id().c_str(),
                Clip(j.spec().name(), 20).c_str(), StateName(j.state()).c_str(), WorldSize(j),
                j.spec().priority(), j.attempt() + 1, Age(j.submit_time_ms()).c_str(),
                Clip(j.reason(), 60).c_str());
  }
  if (!r->next_page_token().empty()) {
    std::printf("(more: --page-token %s)\n", r->next_page_token().c_str());
  }
  return 0;
}

int JobCmd(const std::vector<std::string>& argv) {
  const std::string cmd = "job";
  Args a = Parse(argv, With({"--manifest"}));
  if (!a.error.empty()) return UsageError(cmd, a.error);
  if (a.positional.size() != 1) return UsageError(cmd, "give one job id: weft job ID");
  auto c = MakeClient(a);
  if (!c.ok()) return UsageError(cmd, c.status().message());
  v1::GetJobRequest req;
  req.set_job_id(a.positional[0]);
  req.set_launch_preview(Has(a, "--manifest"));
  auto r = c->client->GetJob(req, c->deadline());
  if (!r.ok()) return Fail(cmd, r.status());
  if (c->json) {
    std::printf("%s", Json(*r).c_str());
    return 0;
  }
  if (Has(a, "--manifest")) {
    // What the scheduler runs for the job: the Kubernetes manifest, or mpirun's hostfile and
    // command line (secrets redacted).
    if (r->launch_preview().empty()) {
      return Fail(
          cmd, FailedPreconditionError("job " + r->job().id() + " has nothing to show: launcher " +
                                       std::string(LauncherName(static_cast<Launcher>(
                                           static_cast<int>(r->job().spec().launcher())))) +
                                       ", state " + StateName(r->job().state())));
    }
    std::printf("%s", r->launch_preview().c_str());
    return 0;
  }
  const v1::Job& j = r->job();
  std::string argv_text;
  for (const auto& s : j.spec().argv()) argv_text += (argv_text.empty() ? "" : " ") + s;
  std::printf(
      "id:        %s\nname:      %s\nstate:     %s\nreason:    %s\nattempt:   %d of %d\n"
      "ranks:     %d\npriority:  %d\nlauncher:  %s\nprogram:   %s\nsubmitted: %s ago\n",
      j.id().c_str(), j.spec().name().c_str(), StateName(j.state()).c_str(), j.reason().c_str(),
      j.attempt() + 1, j.spec().retry().max_retries() + 1, WorldSize(j), j.spec().priority(),
      std::string(LauncherName(static_cast<Launcher>(static_cast<int>(j.spec().launcher()))))
          .c_str(),
      argv_text.c_str(), Age(j.submit_time_ms()).c_str());
  if (!j.store_url().empty()) std::printf("store:     %s\n", j.store_url().c_str());
  if (j.ranks_size() > 0) {
    std::printf("\n%-6s %-20s %-9s %s\n", "RANK", "NODE", "STATE", "EXIT");
    for (const auto& rs : j.ranks()) {
      std::printf("%-6d %-20s %-9s %s\n", rs.rank(), rs.node_id().c_str(), rs.state().c_str(),
                  rs.state() == "exited" ? std::to_string(rs.exit_code()).c_str() : "-");
    }
  }
  std::printf("\nevents:\n");
  for (const auto& e : r->events()) PrintEvent(e, false);
  return 0;
}

int CancelCmd(const std::vector<std::string>& argv) {
  const std::string cmd = "cancel";
  Args a = Parse(argv, With({"--reason"}));
  if (!a.error.empty()) return UsageError(cmd, a.error);
  if (a.positional.size() != 1) return UsageError(cmd, "give one job id: weft cancel ID");
  auto c = MakeClient(a);
  if (!c.ok()) return UsageError(cmd, c.status().message());
  v1::CancelJobRequest req;
  req.set_job_id(a.positional[0]);
  req.set_reason(Opt(a, "--reason"));
  auto r = c->client->CancelJob(req, c->deadline());
  if (!r.ok()) return Fail(cmd, r.status());
  if (c->json) {
    std::printf("%s", Json(r->job()).c_str());
  } else {
    std::printf("%s %s\n", r->job().id().c_str(), StateName(r->job().state()).c_str());
  }
  return 0;
}

int WatchCmd(const std::vector<std::string>& argv) {
  const std::string cmd = "watch";
  Args a = Parse(argv, With({"--after"}));
  if (!a.error.empty()) return UsageError(cmd, a.error);
  if (a.positional.size() != 1) return UsageError(cmd, "give one job id: weft watch ID");
  std::string err;
  int64_t after;
  if (!IntOpt(a, "--after", 0, 0, INT64_MAX, &after, &err)) return UsageError(cmd, err);
  auto c = MakeClient(a);
  if (!c.ok()) return UsageError(cmd, c.status().message());
  v1::WatchJobRequest req;
  req.set_job_id(a.positional[0]);
  req.set_after_seq(after);
  v1::JobState last = v1::JOB_STATE_UNSPECIFIED;
  // A watch lasts as long as the job unless --timeout-ms bounds it.
  Deadline d = Has(a, "--timeout-ms") ? c->deadline() : Deadline::Infinite();
  Status s = c->client->WatchJob(req, d, [&](const v1::JobEvent& e) {
    PrintEvent(e, c->json);
    last = e.state();
    return true;
  });
  if (!s.ok()) return Fail(cmd, s);
  return last == v1::SUCCEEDED ? 0 : 1;
}

int NodesCmd(const std::vector<std::string>& argv) {
  const std::string cmd = "nodes";
  Args a = Parse(argv, With({}));
  if (!a.error.empty()) return UsageError(cmd, a.error);
  auto c = MakeClient(a);
  if (!c.ok()) return UsageError(cmd, c.status().message());
  auto r = c->client->GetCluster(v1::GetClusterRequest(), c->deadline());
  if (!r.ok()) return Fail(cmd, r.status());
  if (c->json) {
    std::printf("%s", Json(*r).c_str());
    return 0;
  }
  std::printf("%-20s %-10s %-12s %-16s %5s %5s  %s\n", "NODE", "STATE", "SWITCH", "ADDRESS",
              "SLOTS", "USED", "REASON");
  for (const auto& n : r->nodes()) {
    std::printf("%-20s %-10s %-12s %-16s %5d %5d  %s\n", Clip(n.node_id(), 20).c_str(),
                n.state() == v1::NODE_READY ? "READY" : "LOST", Clip(n.switch_id(), 12).c_str(),
                n.address().c_str(), n.slots(), n.used_slots(), Clip(n.reason(), 40).c_str());
  }
  std::printf("%d pending, %d running\n", r->pending_jobs(), r->running_jobs());
  return 0;
}

}  // namespace

void PrintSchedulerUsage(FILE* out) {
  std::fprintf(
      out,
      "  scheduler [--listen H:P] [--db FILE] --token T [--metrics-listen H:P] [--port-file F]\n"
      "            [--state-dir D] [--mpirun PATH] [--mpirun-args \"ARGS\"] [--kubectl PATH]\n"
      "            [--k8s-namespace NS] [--k8s-image IMG] [--k8s-kind indexed-job|mpijob]\n"
      "                                             serve the cluster scheduler (gRPC)\n"
      "  agent --scheduler H:P --token T [--node-id ID] [--switch S] [--slots N] [--memory B]\n"
      "                                             run a node agent\n"
      "  submit -n N|--model FILE [--max-ranks N] [--priority P] [--retries R] [--wait]\n"
      "         [--launcher agents|mpirun|kubernetes] [--dry-run] -- PROGRAM ARGS\n"
      "                                             submit a job to the scheduler\n"
      "  jobs [--state S] [--json]                  list jobs\n"
      "  job ID [--json] [--manifest]               show one job with its events (--manifest:\n"
      "                                             its mpirun command or Kubernetes manifest)\n"
      "  cancel ID                                  cancel a job\n"
      "  watch ID [--json]                          stream a job's events until it ends\n"
      "  nodes [--json]                             the scheduler's nodes\n"
      "    (client commands take --scheduler H:P, --token T | --token-file F, --timeout-ms MS;\n"
      "     defaults from WEFT_SCHEDULER and WEFT_SCHED_TOKEN)\n");
}

int SchedulerCliMain(const std::string& command, const std::vector<std::string>& args,
                     bool* handled) {
  *handled = true;
  if (command == "scheduler") return SchedulerCmd(args);
  if (command == "agent") return AgentCmd(args);
  if (command == "submit") return SubmitCmd(args);
  if (command == "jobs") return JobsCmd(args);
  if (command == "job") return JobCmd(args);
  if (command == "cancel") return CancelCmd(args);
  if (command == "watch") return WatchCmd(args);
  if (command == "nodes") return NodesCmd(args);
  *handled = false;
  return kUsage;
}

}  // namespace weft::scheduler
