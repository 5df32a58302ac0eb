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
#include "tests/scheduler/scheduler_fixture.h"

namespace weft::scheduler {
namespace {

class E2eTest : public SchedulerFixture {
 protected:
  E2eTest() : SchedulerFixture("sched_e2e") {}
  void StartScheduler(int port = 0) { SchedulerFixture::StartScheduler({}, {}, port); }
  // Each agent is a host of its own.
  void StartAgent(const std::string& id, int slots) {
    SchedulerFixture::StartAgent(id, slots, "host-" + id);
  }
  Result<v1::Job> Submit(int ranks, std::vector<std::string> argv, int retries = 0,
                         std::vector<std::string> env = {}) {
    return SubmitJob("e2e", ranks, argv, retries, env, v1::LAUNCHER_AGENTS);
  }
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
