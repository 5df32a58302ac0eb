// The fixture the scheduler end-to-end tests share: a temp dir per test (kept when it fails), a
// real `weft scheduler` on loopback with its client, agents by id, and the waits every test needs
// (nodes ready, a job's events to the end, its record). Tests only; needs WEFT_BINARY.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/deadline.h"
#include "scheduler/scheduler_client.h"
#include "tests/util/child_process.h"

namespace weft::scheduler {

class SchedulerFixture : public ::testing::Test {
 protected:
  using Proc = weft::testing::ChildProcess;
  static constexpr const char* kWeft = WEFT_BINARY;

  // `prefix` names the temp dirs: <TempDir>/<prefix>_<pid>_<test>.
  explicit SchedulerFixture(std::string prefix) : prefix_(std::move(prefix)) {}

  void SetUp() override {
    dir_ = ::testing::TempDir() + "/" + prefix_ + "_" + std::to_string(getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    agents_.clear();
    scheduler_.reset();
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  // Starts `weft scheduler` (heartbeats 100 ms, nodes lost after 1 s) on `port` (0: any) with
  // `extra` flags and environment, waits for it to serve and connects the client.
  void StartScheduler(const std::vector<std::string>& extra = {},
                      const std::vector<std::string>& env = {}, int port = 0) {
    std::string ports = dir_ + "/ports";
    std::filesystem::remove(ports);
    std::vector<std::string> argv = {kWeft,
                                     "scheduler",
                                     "--listen",
                                     "127.0.0.1:" + std::to_string(port),
                                     "--db",
                                     dir_ + "/s.db",
                                     "--token",
                                     "tok",
                                     "--port-file",
                                     ports,
                                     "--heartbeat-ms",
                                     "100",
                                     "--node-timeout-ms",
                                     "1000"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    scheduler_ = std::make_unique<Proc>(argv, env, dir_ + "/scheduler.log");
    // The scheduler writes the port file (atomically) once it serves.
    ASSERT_TRUE(weft::testing::WaitForFile(ports, 20000))
        << "scheduler did not start; see " << dir_;
    std::ifstream(ports) >> port_;
    addr_ = "127.0.0.1:" + std::to_string(port_);
    client_ = std::move(SchedulerClient::Create(addr_, "tok")).value();
  }

  // Starts agent `id` with `slots` slots, host identity `host_id`, and `extra` flags.
  void StartAgent(const std::string& id, int slots, const std::string& host_id,
                  const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {kWeft,         "agent",
                                     "--scheduler", addr_,
                                     "--token",     "tok",
                                     "--node-id",   id,
                                     "--slots",     std::to_string(slots),
                                     "--address",   "127.0.0.1",
                                     "--grace-ms",  "500"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    agents_[id] = std::make_unique<Proc>(argv, std::vector<std::string>{"WEFT_HOST_ID=" + host_id},
                                         dir_ + "/agent-" + id + ".log");
  }

  // Waits (bounded) until `n` nodes are READY.
  void WaitNodes(int n) {
    Deadline d = Deadline::AfterMs(20000);
    while (!d.Expired()) {
      auto c = client_->GetCluster(v1::GetClusterRequest(), Deadline::AfterMs(2000));
      int ready = 0;
      if (c.ok()) {
        for (const auto& node : c->nodes()) ready += node.state() == v1::NODE_READY;
      }
      if (ready == n) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL() << n << " nodes did not become ready";
  }

  // Submits a job of `ranks` ranks running `argv`, named `name`.
  Result<v1::Job> SubmitJob(const std::string& name, int ranks,
                            const std::vector<std::string>& argv, int retries,
                            const std::vector<std::string>& env, v1::Launcher launcher) {
    v1::SubmitJobRequest req;
    for (const auto& e : env) req.mutable_spec()->add_env(e);
    for (const auto& a : argv) req.mutable_spec()->add_argv(a);
    req.mutable_spec()->mutable_resources()->set_ranks(ranks);
    req.mutable_spec()->mutable_retry()->set_max_retries(retries);
    req.mutable_spec()->set_name(name);
    req.mutable_spec()->set_launcher(launcher);
    WEFT_ASSIGN_OR_RETURN(auto r, client_->SubmitJob(req, Deadline::AfterMs(10000)));
    return r.job();
  }

  // Watches to the end; returns every event.
  std::vector<v1::JobEvent> Watch(const std::string& id, int timeout_ms) {
    std::vector<v1::JobEvent> events;
    v1::WatchJobRequest w;
    w.set_job_id(id);
    Status s = client_->WatchJob(w, Deadline::AfterMs(timeout_ms), [&](const v1::JobEvent& e) {
      events.push_back(e);
      return true;
    });
    EXPECT_TRUE(s.ok()) << s.ToString() << "; logs in " << dir_;
    return events;
  }

  // The job's record (and its launch preview, when asked for).
  v1::Job Get(const std::string& id, std::string* preview = nullptr) {
    v1::GetJobRequest g;
    g.set_job_id(id);
    g.set_launch_preview(preview != nullptr);
    auto r = client_->GetJob(g, Deadline::AfterMs(5000));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (preview != nullptr && r.ok()) *preview = r->launch_preview();
    return r.ok() ? r->job() : v1::Job();
  }

  std::string prefix_;
  std::string dir_, addr_;
  int port_ = 0;
  std::unique_ptr<Proc> scheduler_;
  std::map<std::string, std::unique_ptr<Proc>> agents_;
  std::unique_ptr<SchedulerClient> client_;
};

}  // namespace weft::scheduler
