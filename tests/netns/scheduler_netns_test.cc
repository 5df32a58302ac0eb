// The cluster scheduler end to end across network-namespace "hosts" (netns_lab.h): `weft
// scheduler` in host 0 with its SQLite state in a temp dir, three `weft agent`s of 2 slots in
// hosts 1-3, everything driven through the CLI (`weft submit/watch/job/jobs/nodes --json`) run in
// host 0. Each agent is its own host identity (its net namespace), advertises its veth address,
// and serves its jobs' stores there, so ranks on different agents meet over TCP across the bridge.
// Cases: the 4-rank training job (`weft train --cluster clusters/demo-2x2.json`, as
// scripts/demo.sh runs it) to SUCCEEDED on two agents; the host of rank 0 dying mid-training (its
// link cut, its agent SIGKILLed), its node lost and the job retried on the two others; the
// scheduler SIGKILLed with jobs queued and restarted on the same state file and address, losing
// nothing.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "base/deadline.h"
#include "base/json.h"
#include "tests/netns/netns_lab.h"

namespace weft::testing {
namespace {

const char* const kWeft = WEFT_BINARY;
constexpr int kAgents = 3;
constexpr const char* kToken = "netns-e2e-token";
// Short where a dead host must be noticed quickly; long where nodes must survive the scheduler's
// restart (agents reconnect within a few seconds on a loaded 2-core machine, see the restart case).
constexpr int kShortNodeTimeoutMs = 2000;
constexpr int kLongNodeTimeoutMs = 15000;
// Deadline of each CLI request (connecting included).
constexpr int kCliTimeoutMs = 30000;

// The training job of scripts/demo.sh on a slice of Fashion-MNIST: planned for two hosts of two
// ranks (2 stages x 2 replicas), the model and data read from paths every namespace sees.
std::vector<std::string> TrainArgs(const std::string& epochs) {
  return {kWeft,           "train",
          "--cluster",     std::string(WEFT_SOURCE_DIR) + "/clusters/demo-2x2.json",
          "--epochs",      epochs,
          "--train-limit", "2048",
          "--test-limit",  "500",
          "--quiet"};
}

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : " ") + s;
  return out;
}

// The JSON object in a CLI's output (stderr may carry log lines around it).
Result<Json> ParseOutput(const std::string& out) {
  size_t b = out.find('{'), e = out.rfind('}');
  if (b == std::string::npos || e == std::string::npos || e < b) {
    return InvalidArgumentError("no JSON object in: " + out);
  }
  return ParseJson(std::string_view(out).substr(b, e - b + 1));
}

std::string State(const Json& job) { return job.StringOr("state", "?"); }
bool Terminal(const std::string& s) {
  return s == "SUCCEEDED" || s == "FAILED" || s == "CANCELLED";
}
// The array at `key`, or an empty one.
const Json::Array& ArrayAt(const Json& j, const char* key) {
  static const Json::Array kEmpty;
  const Json* a = j.Find(key);
  return a && a->is_array() ? a->as_array() : kEmpty;
}

class SchedulerNetns : public ::testing::Test {
 protected:
  void SetUp() override {
    auto lab = NetnsLab::Create(1 + kAgents);
    ASSERT_TRUE(lab.ok()) << "cannot build the multi-host lab: " << lab.status().ToString();
    lab_ = std::move(*lab);
    dir_ = ::testing::TempDir() + "/sched_netns_" + std::to_string(getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }

  void TearDown() override {
    if (HasFailure()) std::fprintf(stderr, "%s", Logs().c_str());
    agents_.clear();  // processes first, then their namespaces
    scheduler_.reset();
    lab_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Every process's output, for failure messages.
  std::string Logs() const {
    std::string out = earlier_logs_;
    if (scheduler_) out += "---- scheduler ----\n" + scheduler_->Output();
    for (int i = 0; i < static_cast<int>(agents_.size()); ++i) {
      if (agents_[i])
        out += "---- agent" + std::to_string(i + 1) + " ----\n" + agents_[i]->Output();
    }
    return out;
  }

  // Starts the scheduler in host 0 on `port` (0: any), returns once it serves.
  void StartScheduler(int port, int node_timeout_ms) {
    if (scheduler_) {
      earlier_logs_ += "---- scheduler before its restart ----\n" + scheduler_->Output();
      scheduler_.reset();
    }
    const std::string ports = dir_ + "/ports";
    std::filesystem::remove(ports);
    std::vector<std::string> argv = lab_->InHost(0);
    argv.insert(argv.end(),
                {kWeft, "scheduler", "--listen", lab_->host_address(0) + ":" + std::to_string(port),
                 "--db", dir_ + "/state.db", "--token", kToken, "--port-file", ports,
                 "--heartbeat-ms", "100", "--node-timeout-ms", std::to_string(node_timeout_ms),
                 // Commits survive a killed process (the case here) without an fsync each.
                 "--db-sync", "normal"});
    scheduler_ = std::make_unique<BackgroundProcess>(argv, std::map<std::string, std::string>{});
    Deadline d = Deadline::AfterMs(20000);
    while (!std::filesystem::exists(ports)) {  // written atomically once it serves
      ASSERT_FALSE(d.Expired()) << "the scheduler did not start within 20 s";
      ASSERT_FALSE(scheduler_->WaitExit(0)) << "the scheduler exited";
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::ifstream(ports) >> port_;
    ASSERT_GT(port_, 0);
    ASSERT_TRUE(port == 0 || port_ == port);
    addr_ = lab_->host_address(0) + ":" + std::to_string(port_);
  }

  // Agent i (1-based) in host i; its address is left for it to find (the one it reaches the
  // scheduler from: its veth address).
  void StartAgents() {
    for (int i = 1; i <= kAgents; ++i) {
      std::vector<std::string> argv = lab_->InHost(i);
      argv.insert(argv.end(), {kWeft, "agent", "--scheduler", addr_, "--token", kToken, "--node-id",
                               AgentId(i), "--slots", "2", "--switch", "sw0", "--grace-ms", "500"});
      agents_.push_back(
          std::make_unique<BackgroundProcess>(argv, std::map<std::string, std::string>{}));
    }
  }
  static std::string AgentId(int i) { return "agent" + std::to_string(i); }
  // i for "agent<i>", else 0.
  static int AgentIndex(const std::string& id) {
    for (int i = 1; i <= kAgents; ++i) {
      if (id == AgentId(i)) return i;
    }
    return 0;
  }

  // `weft COMMAND --scheduler ADDR --token T ARGS...` run in host 0.
  CommandResult Cli(const std::string& command, const std::vector<std::string>& args,
                    int timeout_ms = kCliTimeoutMs + 10000) {
    std::vector<std::string> argv = lab_->InHost(0);
    argv.insert(argv.end(), {kWeft, command, "--scheduler", addr_, "--token", kToken});
    if (command != "watch") {
      argv.push_back("--timeout-ms");
      argv.push_back(std::to_string(kCliTimeoutMs));
    }
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, {}, timeout_ms);
  }

  // A CLI command's JSON answer; failures record what ran and what it said.
  Json CliJson(const std::string& command, const std::vector<std::string>& args) {
    std::vector<std::string> full = args;
    full.push_back("--json");
    CommandResult r = Cli(command, full);
    EXPECT_EQ(r.exit_code, 0) << "weft " << command << " " << Join(args) << ":\n" << r.output;
    if (r.exit_code != 0) return Json();
    auto j = ParseOutput(r.output);
    EXPECT_TRUE(j.ok()) << j.status().ToString();
    return j.ok() ? std::move(*j) : Json();
  }

  // Submits a 4-rank job running `program` with `weft submit --json`; returns its id ("" on
  // failure, recorded).
  std::string Submit(const std::string& name, const std::vector<std::string>& program,
                     int retries) {
    // The transports every build has (shm inside a host, TCP across) and bounded waits, so that
    // a broken job fails rather than hangs. Submit's options go before "--".
    std::vector<std::string> args = {"--json",
                                     "-n",
                                     "4",
                                     "--name",
                                     name,
                                     "--retries",
                                     std::to_string(retries),
                                     "--env",
                                     "WEFT_TRANSPORT=shm,tcp",
                                     "--env",
                                     "WEFT_INIT_TIMEOUT_MS=30000",
                                     "--env",
                                     "WEFT_TIMEOUT_MS=20000",
                                     "--"};
    args.insert(args.end(), program.begin(), program.end());
    CommandResult r = Cli("submit", args);
    EXPECT_EQ(r.exit_code, 0) << "weft submit:\n" << r.output;
    auto j = ParseOutput(r.output);
    EXPECT_TRUE(j.ok()) << j.status().ToString();
    return j.ok() ? j->StringOr("id", "") : "";
  }

  // `weft job ID --json`: {"job": {...}, "events": [...]}.
  Json GetJob(const std::string& id) { return CliJson("job", {id}); }

  // Waits (bounded) until `n` agents are READY; checks what they registered.
  void WaitAgents(int n) {
    Deadline d = Deadline::AfterMs(30000);
    while (true) {
      Json c = CliJson("nodes", {});
      int ready = 0;
      for (const Json& node : ArrayAt(c, "nodes")) ready += State(node) == "NODE_READY";
      if (ready == n) {
        std::set<std::string> hosts;
        for (const Json& node : ArrayAt(c, "nodes")) {
          int i = AgentIndex(node.StringOr("node_id", ""));
          ASSERT_GT(i, 0) << c.Dump();
          // The address its peers reach it at is its namespace's, not loopback.
          EXPECT_EQ(node.StringOr("address", ""), lab_->host_address(i)) << c.Dump();
          EXPECT_EQ(node.StringOr("switch_id", ""), "sw0");
          hosts.insert(node.StringOr("host_id", ""));
        }
        // Each namespace is a host of its own: ranks on two agents never pair over shm.
        EXPECT_EQ(hosts.size(), static_cast<size_t>(n)) << c.Dump();
        return;
      }
      ASSERT_FALSE(d.Expired()) << n << " agents not ready within 30 s: " << c.Dump();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  // `weft watch ID --json` to the job's end: its events, one JSON object a line.
  std::vector<Json> Watch(const std::string& id, int timeout_ms) {
    CommandResult r =
        Cli("watch", {id, "--json", "--timeout-ms", std::to_string(timeout_ms)}, timeout_ms + 5000);
    std::vector<Json> events;
    std::istringstream in(r.output);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] != '{') continue;
      auto e = ParseJson(line);
      if (e.ok()) events.push_back(std::move(*e));
    }
    EXPECT_FALSE(events.empty()) << "weft watch " << id << ":\n" << r.output;
    if (!events.empty()) {
      EXPECT_TRUE(Terminal(State(events.back())))
          << "job " << id << " did not end within " << timeout_ms << " ms:\n"
          << r.output;
      // The watch's exit status says whether the job succeeded.
      EXPECT_EQ(r.exit_code == 0, State(events.back()) == "SUCCEEDED") << r.output;
    }
    return events;
  }

  // Checks a finished job: SUCCEEDED on attempt `attempt`, 4 ranks on 2 agents (2 each), rank 0's
  // log tail ending with the trainer's result line. Returns its nodes.
  std::set<std::string> ExpectTrained(const Json& got, int attempt) {
    std::set<std::string> nodes;
    const Json* job = got.Find("job");
    EXPECT_TRUE(job) << got.Dump();
    if (!job) return nodes;
    EXPECT_EQ(State(*job), "SUCCEEDED") << job->StringOr("reason", "");
    EXPECT_EQ(job->NumberOr("attempt", -1), attempt);
    const Json::Array& placement = ArrayAt(*job, "placement");
    EXPECT_EQ(placement.size(), 4u) << job->Dump();
    std::map<std::string, int> per_node;
    for (const Json& p : placement) per_node[p.StringOr("node_id", "")]++;
    for (const auto& [n, count] : per_node) {
      nodes.insert(n);
      EXPECT_EQ(count, 2) << n << " in " << job->Dump();
    }
    EXPECT_EQ(nodes.size(), 2u) << "packed onto two agents: " << job->Dump();
    const Json::Array& ranks = ArrayAt(*job, "ranks");
    EXPECT_EQ(ranks.size(), 4u) << job->Dump();
    if (ranks.size() != 4) return nodes;
    for (const Json& r : ranks) {
      EXPECT_EQ(r.NumberOr("exit_code", -1), 0) << r.Dump();
      EXPECT_EQ(r.StringOr("state", ""), "exited");
    }
    const std::string tail = ranks[0].StringOr("log_tail", "");
    EXPECT_NE(tail.find("epoch 1: loss"), std::string::npos) << tail;
    EXPECT_NE(tail.find("RESULT samples_per_s="), std::string::npos) << tail;
    EXPECT_NE(tail.find("ranks=4 pp=2 dp=2"), std::string::npos) << tail;
    return nodes;
  }

  std::unique_ptr<NetnsLab> lab_;
  std::string dir_, addr_, earlier_logs_;
  int port_ = 0;
  std::unique_ptr<BackgroundProcess> scheduler_;
  std::vector<std::unique_ptr<BackgroundProcess>> agents_;  // agent i at [i - 1]
};

TEST_F(SchedulerNetns, TrainingJobRunsOnTwoAgentsAcrossHosts) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler(0, kShortNodeTimeoutMs));
  StartAgents();
  ASSERT_NO_FATAL_FAILURE(WaitAgents(kAgents));
  std::string id = Submit("train", TrainArgs("1"), 0);
  ASSERT_FALSE(id.empty());
  auto events = Watch(id, 60000);
  ASSERT_FALSE(events.empty());
  ASSERT_EQ(State(events.back()), "SUCCEEDED") << events.back().Dump();
  ExpectTrained(GetJob(id), 0);
}

TEST_F(SchedulerNetns, HostOfRankZeroDiesMidTrainingAndTheJobRetriesElsewhere) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler(0, kShortNodeTimeoutMs));
  StartAgents();
  ASSERT_NO_FATAL_FAILURE(WaitAgents(kAgents));
  // The first attempt trains for long (it is killed); the retry trains one epoch.
  std::vector<std::string> train = TrainArgs("$E");
  std::string script = "E=1; case \"$WEFT_JOB_ID\" in *.a0) E=500;; esac; exec " + Join(train);
  std::string id = Submit("train-retry", {"/bin/sh", "-c", script}, 1);
  ASSERT_FALSE(id.empty());

  // Mid-job: the first epoch is done. The agent hosting rank 0 echoes its output.
  std::string victim;
  Deadline d = Deadline::AfterMs(60000);
  while (true) {
    Json got = GetJob(id);
    const Json* job = got.Find("job");
    ASSERT_TRUE(job) << got.Dump();
    ASSERT_FALSE(Terminal(State(*job))) << job->Dump();
    const Json::Array& placement = ArrayAt(*job, "placement");
    if (State(*job) == "RUNNING" && !placement.empty()) {
      victim = placement[0].StringOr("node_id", "");
      int i = AgentIndex(victim);
      ASSERT_GT(i, 0) << victim;
      if (agents_[i - 1]->Output().find("[" + id + " r0] epoch 1: loss") != std::string::npos) {
        // The host dies: no packet leaves it any more (so its ranks' sockets send no resets to
        // the survivors, which learn of it from the scheduler), then its agent is SIGKILLed
        // (its ranks die with it).
        ASSERT_TRUE(lab_->SetLink(i, false).ok());
        ASSERT_EQ(kill(agents_[i - 1]->pid(), SIGKILL), 0);
        ASSERT_TRUE(agents_[i - 1]->WaitExit(5000));
        break;
      }
    }
    ASSERT_FALSE(d.Expired()) << "the first epoch did not finish within 60 s: " << got.Dump();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const auto killed = Clock::now();

  auto events = Watch(id, 90000);
  ASSERT_FALSE(events.empty());
  ASSERT_EQ(State(events.back()), "SUCCEEDED") << events.back().Dump();
  Json got = GetJob(id);
  std::set<std::string> nodes = ExpectTrained(got, 1);
  EXPECT_FALSE(nodes.count(victim)) << victim << " hosts the retry";

  // The history: attempt 0 failed because the node was lost, naming it; then the retry.
  bool lost = false, retried = false;
  for (const Json& e : ArrayAt(got, "events")) {
    const std::string msg = e.StringOr("message", "");
    if (msg.find("node " + victim + " lost") != std::string::npos &&
        msg.find("retrying") != std::string::npos) {
      lost = true;
      EXPECT_EQ(e.NumberOr("attempt", -1), 0) << e.Dump();
      EXPECT_EQ(State(e), "PENDING") << e.Dump();
      EXPECT_NE(msg.find("attempt 1 of 2 failed"), std::string::npos) << msg;
    }
    retried |= e.NumberOr("attempt", -1) == 1 && State(e) == "RUNNING";
  }
  EXPECT_TRUE(lost) << "no event names node " << victim << " lost: " << got.Dump();
  EXPECT_TRUE(retried) << "attempt 2 never ran: " << got.Dump();

  Json cluster = CliJson("nodes", {});
  EXPECT_EQ(ArrayAt(cluster, "nodes").size(), static_cast<size_t>(kAgents)) << cluster.Dump();
  for (const Json& n : ArrayAt(cluster, "nodes")) {
    EXPECT_EQ(State(n) == "NODE_LOST", n.StringOr("node_id", "") == victim) << n.Dump();
    if (n.StringOr("node_id", "") == victim) {
      EXPECT_NE(n.StringOr("reason", "").find("no heartbeat"), std::string::npos) << n.Dump();
    }
  }
  std::printf("killed %s; the retry succeeded %.1f s later\n", victim.c_str(),
              std::chrono::duration<double>(Clock::now() - killed).count());
}

TEST_F(SchedulerNetns, SchedulerKilledWithJobsQueuedLosesNothing) {
  ASSERT_NO_FATAL_FAILURE(StartScheduler(0, kLongNodeTimeoutMs));
  StartAgents();
  ASSERT_NO_FATAL_FAILURE(WaitAgents(kAgents));
  // 6 slots, 4-rank jobs: the first runs, the others wait in the queue. The first one's ranks
  // hold at a gate until the scheduler has been killed and restarted, so that the states at the
  // kill are known exactly and its ranks run through the scheduler's absence.
  constexpr int kJobs = 3;
  const std::string gate = dir_ + "/gate";
  std::vector<std::string> ids;
  ids.push_back(
      Submit("queued-0",
             {"/bin/sh", "-c",
              "while [ ! -e " + gate + " ]; do sleep 0.1; done; exec " + Join(TrainArgs("1"))},
             0));
  for (int i = 1; i < kJobs; ++i) {
    ids.push_back(Submit("queued-" + std::to_string(i), TrainArgs("1"), 0));
  }
  for (const std::string& id : ids) ASSERT_FALSE(id.empty());
  auto states = [&](Json* list) {
    *list = CliJson("jobs", {});
    std::map<std::string, std::string> out;
    for (const Json& j : ArrayAt(*list, "jobs")) {
      out[j.StringOr("id", "")] = State(j);
      EXPECT_EQ(j.NumberOr("attempt", -1), 0) << j.Dump();
    }
    return out;
  };
  const std::map<std::string, std::string> want = {
      {ids[0], "RUNNING"}, {ids[1], "PENDING"}, {ids[2], "PENDING"}};
  Json list;
  Deadline d = Deadline::AfterMs(30000);
  while (states(&list) != want) {
    ASSERT_FALSE(d.Expired()) << "the first job did not start within 30 s: " << list.Dump();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(kill(scheduler_->pid(), SIGKILL), 0);
  ASSERT_TRUE(scheduler_->WaitExit(5000));

  const int old_port = port_;
  ASSERT_NO_FATAL_FAILURE(StartScheduler(old_port, kLongNodeTimeoutMs));  // same file, address
  // Every acknowledged job is there in the state it had, none invented; nothing can move on yet.
  EXPECT_EQ(states(&list), want) << list.Dump();
  std::ofstream(gate).put('\n');

  // The agents reconcile with the new scheduler (the first job's ranks were never stopped) and
  // the queue drains, one job at a time.
  for (const std::string& id : ids) {
    auto events = Watch(id, 60000);
    ASSERT_FALSE(events.empty()) << id;
    EXPECT_EQ(State(events.back()), "SUCCEEDED") << id << ": " << events.back().Dump();
    Json got = GetJob(id);
    ExpectTrained(got, 0);
    // No gap and no repeat in its history across the restart.
    const Json::Array& evs = ArrayAt(got, "events");
    EXPECT_FALSE(evs.empty()) << got.Dump();
    for (size_t i = 0; i < evs.size(); ++i) {
      // int64 fields are strings in protobuf's JSON.
      EXPECT_EQ(evs[i].StringOr("seq", ""), std::to_string(i + 1)) << id;
    }
  }
  // Nothing was failed over: every agent stayed READY through the restart, kept its incarnation
  // and stopped nothing.
  for (int i = 1; i <= kAgents; ++i) {
    const std::string out = agents_[i - 1]->Output();
    EXPECT_EQ(out.find("registering again"), std::string::npos) << AgentId(i) << ":\n" << out;
    EXPECT_EQ(out.find("no longer assigned"), std::string::npos) << AgentId(i) << ":\n" << out;
  }
  Json cluster = CliJson("nodes", {});
  EXPECT_EQ(ArrayAt(cluster, "nodes").size(), static_cast<size_t>(kAgents)) << cluster.Dump();
  for (const Json& n : ArrayAt(cluster, "nodes")) {
    EXPECT_EQ(State(n), "NODE_READY") << n.Dump();
  }
}

}  // namespace
}  // namespace weft::testing
