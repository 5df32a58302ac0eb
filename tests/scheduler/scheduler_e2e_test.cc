// End to end over loopback with real processes: `weft scheduler`, three `weft agent`s (each its
// own host identity), jobs launched by the agents. A 4-rank `weft bench allreduce` job runs to
// SUCCEEDED; an agent killed mid-job makes its node lost and the job retries elsewhere; a
// scheduler killed with SIGKILL mid-queue and restarted on the same database loses nothing.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "scheduler/scheduler_client.h"
#include "tests/util/child_process.h"

namespace weft::scheduler {
namespace {

const char* kWeft = WEFT_BINARY;

using Proc = weft::testing::ChildProcess;

class E2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/sched_e2e_" + std::to_string(getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    agents_.clear();
    scheduler_.reset();
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }
  void StartScheduler(int port = 0) {
    std::string ports = dir_ + "/ports";
    std::filesystem::remove(ports);
    scheduler_ = std::make_unique<Proc>(
        std::vector<std::string>{kWeft, "scheduler", "--listen",
                                 "127.0.0.1:" + std::to_string(port), "--db", dir_ + "/s.db",
                                 "--token", "tok", "--port-file", ports, "--heartbeat-ms", "100",
                                 "--node-timeout-ms", "1000"},
        std::vector<std::string>{}, dir_ + "/scheduler.log");
    // The scheduler writes the port file (atomically) once it serves.
    ASSERT_TRUE(weft::testing::WaitForFile(ports, 20000))
        << "scheduler did not start; see " << dir_;
    std::ifstream(ports) >> port_;
    addr_ = "127.0.0.1:" + std::to_string(port_);
    client_ = std::move(SchedulerClient::Create(addr_, "tok")).value();
  }
  void StartAgent(const std::string& id, int slots) {
    agents_[id] = std::make_unique<Proc>(
        std::vector<std::string>{kWeft, "agent", "--scheduler", addr_, "--token", "tok",
                                 "--node-id", id, "--slots", std::to_string(slots), "--address",
                                 "127.0.0.1", "--grace-ms", "500"},
        std::vector<std::string>{"WEFT_HOST_ID=host-" + id}, dir_ + "/agent-" + id + ".log");
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
  Result<v1::Job> Submit(int ranks, std::vector<std::string> argv, int retries = 0,
                         std::vector<std::string> env = {}) {
    v1::SubmitJobRequest req;
    for (auto& e : env) req.mutable_spec()->add_env(e);
    for (auto& a : argv) req.mutable_spec()->add_argv(a);
    req.mutable_spec()->mutable_resources()->set_ranks(ranks);
    req.mutable_spec()->mutable_retry()->set_max_retries(retries);
    req.mutable_spec()->set_name("e2e");
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
  v1::Job Get(const std::string& id) {
    v1::GetJobRequest g;
    g.set_job_id(id);
    auto r = client_->GetJob(g, Deadline::AfterMs(5000));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->job() : v1::Job();
  }

  std::string dir_, addr_;
  int port_ = 0;
  std::unique_ptr<Proc> scheduler_;
  std::map<std::string, std::unique_ptr<Proc>> agents_;
  std::unique_ptr<SchedulerClient> client_;
};

TEST_F(E2eTest, FourRankAllReduceJobSucceeds) {
  StartScheduler();
  for (const char* id : {"n1", "n2", "n3"}) StartAgent(id, 2);
  WaitNodes(3);
  // Transports pinned to the ones every build has (shm within a host, TCP across).
  auto job = Submit(4, {kWeft, "bench", "allreduce", "-b", "8", "-e", "64K", "-n", "5", "-w", "1"},
                    0, {"WEFT_TRANSPORT=shm,tcp"});
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  auto events = Watch(job->id(), 60000);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::SUCCEEDED) << events.back().message();
  v1::Job j = Get(job->id());
  EXPECT_EQ(j.state(), v1::SUCCEEDED);
  ASSERT_EQ(j.ranks_size(), 4);
  std::set<std::string> nodes;
  for (const auto& r : j.ranks()) {
    EXPECT_EQ(r.exit_code(), 0);
    nodes.insert(r.node_id());
  }
  EXPECT_EQ(nodes.size(), 2u);  // packed: two 2-slot nodes, not three
  // Rank 0's log tail ends with the benchmark's verdict.
  EXPECT_NE(j.ranks(0).log_tail().find("Out of bounds values : 0 OK"), std::string::npos)
      << j.ranks(0).log_tail();
}

TEST_F(E2eTest, KilledAgentFailsOverAndRetries) {
  StartScheduler();
  for (const char* id : {"n1", "n2", "n3"}) StartAgent(id, 2);
  WaitNodes(3);
  // The first attempt blocks; later attempts finish at once.
  auto job = Submit(4, {"/bin/sh", "-c", "case $WEFT_JOB_ID in *.a0) sleep 60;; esac"}, 1);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  Deadline d = Deadline::AfterMs(20000);
  while (Get(job->id()).state() != v1::RUNNING && !d.Expired()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  v1::Job running = Get(job->id());
  ASSERT_EQ(running.state(), v1::RUNNING);
  const std::string victim = running.placement(0).node_id();
  agents_[victim]->Kill(SIGKILL);
  auto events = Watch(job->id(), 30000);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::SUCCEEDED);
  v1::Job j = Get(job->id());
  EXPECT_EQ(j.attempt(), 1);
  for (const auto& p : j.placement()) EXPECT_NE(p.node_id(), victim);
  bool lost = false, retry = false;
  for (const auto& e : events) {
    lost |= e.message().find("node " + victim + " lost") != std::string::npos;
    retry |= e.message().find("retrying") != std::string::npos;
  }
  EXPECT_TRUE(lost && retry) << "no lost/retry event";
  auto c = client_->GetCluster(v1::GetClusterRequest(), Deadline::AfterMs(2000));
  for (const auto& n : c->nodes()) {
    EXPECT_EQ(n.state() == v1::NODE_LOST, n.node_id() == victim) << n.node_id();
  }
}

TEST_F(E2eTest, SchedulerKilledMidQueueLosesNothing) {
  StartScheduler();
  StartAgent("n1", 2);
  WaitNodes(1);
  // Submit from a thread while the scheduler is SIGKILLed: every acknowledged job must survive.
  std::vector<std::string> acked;
  std::atomic<bool> stop{false};
  std::thread submitter([&] {
    while (!stop) {
      auto j = Submit(2, {"/bin/sh", "-c", "sleep 0.1"});
      if (j.ok()) acked.push_back(j->id());
      if (acked.size() >= 6) break;
    }
  });
  while (acked.size() < 6) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  scheduler_->Kill(SIGKILL);  // jobs are queued, one is placed or running
  stop = true;
  submitter.join();
  StartScheduler(port_);  // same database, same port: the agent reconnects by itself
  for (const std::string& id : acked) {
    auto events = Watch(id, 60000);
    ASSERT_FALSE(events.empty()) << id << " lost";
    EXPECT_EQ(events.back().state(), v1::SUCCEEDED) << id << ": " << events.back().message();
    for (size_t i = 0; i < events.size(); ++i) {
      EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 1)) << id;  // no gap in history
    }
  }
  v1::ListJobsRequest l;
  auto list = client_->ListJobs(l, Deadline::AfterMs(5000));
  ASSERT_TRUE(list.ok());
  EXPECT_GE(list->jobs_size(), static_cast<int>(acked.size()));
}

}  // namespace
}  // namespace weft::scheduler
