// The scheduling core without gRPC: validation, queue order (priority, FIFO), backfill with
// reservations (a large job is not starved), the state machine driven by agent reports, retries,
// lost nodes, cancel, paging, and reloading state from SQLite.
#include "scheduler/scheduler_core.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

namespace weft::scheduler {
namespace {

struct Clock {
  std::atomic<int64_t> ms{1000000};
};

class CoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<SchedulerCore> Make(std::unique_ptr<StateStore> store = nullptr) {
    CoreOptions o;
    o.node_timeout_ms = 5000;
    o.now_ms = [this] { return clock_.ms.load(); };
    o.mono_ms = [this] { return clock_.ms.load(); };
    auto core = SchedulerCore::Open(o, std::move(store));
    EXPECT_TRUE(core.ok()) << core.status().ToString();
    return std::move(core).value();
  }
  static Node MakeNode(const std::string& id, int slots, const std::string& sw = "s") {
    Node n;
    n.node_id = id;
    n.address = "127.0.0.1";
    n.slots = slots;
    n.switch_id = sw;
    return n;
  }
  static JobSpec Spec(int ranks, int priority = 0, int retries = 0, std::string name = "j") {
    JobSpec s;
    s.name = std::move(name);
    s.argv = {"/bin/true"};
    s.resources.ranks = ranks;
    s.priority = priority;
    s.retry.max_retries = retries;
    return s;
  }
  // Reports every assigned rank of `node` as running (or exited with `code`).
  static void Report(SchedulerCore& core, const std::string& node, int64_t inc, bool exited,
                     int code = 0) {
    auto a = core.Heartbeat(node, inc, {}, {});
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    std::vector<TaskReport> tasks;
    for (const Assignment& as : *a) {
      for (const RankPlacement& p : as.ranks) {
        tasks.push_back(TaskReport{as.job_id, as.attempt, p.rank, exited, code, "tail"});
      }
    }
    ASSERT_TRUE(core.Heartbeat(node, inc, tasks, {}).ok());
  }
  JobState StateOf(SchedulerCore& core, const std::string& id) {
    auto j = core.GetJob(id, nullptr);
    EXPECT_TRUE(j.ok());
    return j.ok() ? j->state : JobState::kPending;
  }
  Clock clock_;
};

TEST_F(CoreTest, ValidationNamesTheField) {
  auto core = Make();
  JobSpec s = Spec(4);
  s.argv.clear();
  auto r = core->Submit(s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("spec.argv"), std::string::npos);
  r = core->Submit(Spec(-3));
  EXPECT_NE(r.status().message().find("spec.resources.ranks: -3"), std::string::npos);
  r = core->Submit(Spec(0));
  EXPECT_NE(r.status().message().find("spec.resources.ranks: missing"), std::string::npos);
  s = Spec(4);
  s.resources.ranks_per_node = 3;
  EXPECT_NE(core->Submit(s).status().message().find("ranks_per_node"), std::string::npos);
  s = Spec(4);
  s.env = {"NOEQUALS"};
  EXPECT_NE(core->Submit(s).status().message().find("spec.env[0]"), std::string::npos);
  s = Spec(0);
  s.resources.plan = PlanRequest{"{}", 0};
  EXPECT_EQ(core->Submit(s).status().code(), StatusCode::kUnimplemented);
  EXPECT_EQ(core->GetJob("job-999", nullptr).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(core->Heartbeat("ghost", 1, {}, {}).status().code(), StatusCode::kNotFound);
  Node bad = MakeNode("n", 0);
  EXPECT_NE(core->RegisterNode(bad).status().message().find("node.slots"), std::string::npos);
}

TEST_F(CoreTest, PriorityThenFifo) {
  auto core = Make();
  auto a = core->Submit(Spec(2, 0, 0, "a"));
  auto b = core->Submit(Spec(2, 5, 0, "b"));
  auto c = core->Submit(Spec(2, 0, 0, "c"));
  auto d = core->Submit(Spec(2, 5, 0, "d"));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && d.ok());
  EXPECT_EQ(a->state, JobState::kPending);
  // Room for exactly one 2-rank job at a time: order must be b, d (priority 5, FIFO), a, c.
  auto inc = core->RegisterNode(MakeNode("n1", 2));
  ASSERT_TRUE(inc.ok());
  std::vector<std::string> order;
  for (int i = 0; i < 4; ++i) {
    for (const auto& id : {a->id, b->id, c->id, d->id}) {
      if (StateOf(*core, id) == JobState::kScheduled) order.push_back(id);
    }
    Report(*core, "n1", *inc, /*exited=*/true, 0);
  }
  EXPECT_EQ(order, (std::vector<std::string>{b->id, d->id, a->id, c->id}));
  for (const auto& id : {a->id, b->id, c->id, d->id}) {
    EXPECT_EQ(StateOf(*core, id), JobState::kSucceeded);
  }
}

TEST_F(CoreTest, BackfillNeverStarvesALargeJob) {
  auto core = Make();
  auto n1 = core->RegisterNode(MakeNode("n1", 2));
  auto n2 = core->RegisterNode(MakeNode("n2", 2));
  ASSERT_TRUE(n1.ok() && n2.ok());
  // A small job occupies n1; then a 4-rank job waits for both nodes.
  auto small1 = core->Submit(Spec(2, 0, 0, "small1"));
  ASSERT_EQ(small1->state, JobState::kScheduled);
  auto big = core->Submit(Spec(4, 0, 0, "big"));
  ASSERT_EQ(big->state, JobState::kPending);
  auto g = core->GetJob(big->id, nullptr);
  EXPECT_NE(g->reason.find("holding 2 nodes"), std::string::npos) << g->reason;
  // A stream of small jobs: n2 is free, but reserved for big, so none may start there.
  std::vector<std::string> smalls;
  for (int i = 0; i < 5; ++i) {
    auto s = core->Submit(Spec(1, 0, 0, "small"));
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(s->state, JobState::kPending) << "small job " << i << " jumped the reservation";
    smalls.push_back(s->id);
  }
  // small1 finishes: big runs next, before any of the later small jobs.
  Report(*core, "n1", *n1, true, 0);
  EXPECT_EQ(StateOf(*core, small1->id), JobState::kSucceeded);
  EXPECT_EQ(StateOf(*core, big->id), JobState::kScheduled);
  for (const auto& id : smalls) EXPECT_EQ(StateOf(*core, id), JobState::kPending);
}

TEST_F(CoreTest, BackfillUsesNodesOutsideTheReservation) {
  auto core = Make();
  auto n1 = core->RegisterNode(MakeNode("n1", 4, "s1"));
  auto n2 = core->RegisterNode(MakeNode("n2", 2, "s2"));
  ASSERT_TRUE(n1.ok() && n2.ok());
  auto first = core->Submit(Spec(2, 0, 0, "first"));
  ASSERT_EQ(first->state, JobState::kScheduled);  // tightest fit: n2
  auto big = core->Submit(Spec(4, 0, 0, "big"));
  // big fits n1 right now (4 free): placed at once.
  EXPECT_EQ(big->state, JobState::kScheduled);
  auto big2 = core->Submit(Spec(4, 0, 0, "big2"));
  EXPECT_EQ(big2->state, JobState::kPending);  // reserves n1
  auto small = core->Submit(Spec(1, 0, 0, "small"));
  EXPECT_EQ(small->state, JobState::kPending);  // n2 is full, n1 reserved
  Report(*core, "n2", *n2, true, 0);            // first finishes: n2 frees, not reserved
  EXPECT_EQ(StateOf(*core, small->id), JobState::kScheduled);  // backfilled onto n2
  EXPECT_EQ(StateOf(*core, big2->id), JobState::kPending);
}

TEST_F(CoreTest, StateMachineToSuccessWithEvents) {
  auto core = Make();
  auto n1 = core->RegisterNode(MakeNode("n1", 2));
  auto n2 = core->RegisterNode(MakeNode("n2", 2));
  auto job = core->Submit(Spec(4));
  ASSERT_EQ(job->state, JobState::kScheduled);
  // Assignments: n1 or n2 hosts rank 0 and serves the store; the other waits for its URL.
  auto a1 = core->Heartbeat("n1", *n1, {}, {});
  auto a2 = core->Heartbeat("n2", *n2, {}, {});
  ASSERT_EQ(a1->size(), 1u);
  ASSERT_EQ(a2->size(), 1u);
  const Assignment& r0 = (*a1)[0].serve_store ? (*a1)[0] : (*a2)[0];
  const std::string r0_node = (*a1)[0].serve_store ? "n1" : "n2";
  EXPECT_EQ(r0.ranks[0].rank, 0);
  EXPECT_EQ(r0.world_size, 4);
  EXPECT_FALSE(r0.job_secret.empty());
  ASSERT_TRUE(core->Heartbeat(r0_node, r0_node == "n1" ? *n1 : *n2, {},
                              {StoreReport{job->id, 0, "tcp://127.0.0.1:1234"}})
                  .ok());
  auto again = core->Heartbeat("n2", *n2, {}, {});
  EXPECT_EQ((*again)[0].store_url, "tcp://127.0.0.1:1234");
  Report(*core, "n1", *n1, false);
  EXPECT_EQ(StateOf(*core, job->id), JobState::kScheduled);
  Report(*core, "n2", *n2, false);
  EXPECT_EQ(StateOf(*core, job->id), JobState::kRunning);
  Report(*core, "n1", *n1, true, 0);
  Report(*core, "n2", *n2, true, 0);
  std::vector<JobEvent> events;
  auto done = core->GetJob(job->id, &events);
  EXPECT_EQ(done->state, JobState::kSucceeded);
  std::vector<JobState> states;
  for (const auto& e : events) {
    if (e.kind == EventKind::kStateChange) states.push_back(e.state);
  }
  EXPECT_EQ(states, (std::vector<JobState>{JobState::kPending, JobState::kScheduled,
                                           JobState::kRunning, JobState::kSucceeded}));
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq, static_cast<int64_t>(i + 1));
  // Nothing is assigned any more; slots are free again.
  EXPECT_TRUE(core->Heartbeat("n1", *n1, {}, {})->empty());
  for (const Node& n : core->Cluster().nodes) EXPECT_EQ(n.used_slots, 0);
}

TEST_F(CoreTest, RankFailureRetriesThenFails) {
  auto core = Make();
  auto n1 = core->RegisterNode(MakeNode("n1", 2));
  auto job = core->Submit(Spec(2, 0, /*retries=*/1));
  Report(*core, "n1", *n1, true, 3);  // attempt 0 fails -> retried, placed again
  auto j = core->GetJob(job->id, nullptr);
  EXPECT_EQ(j->attempt, 1);
  EXPECT_EQ(j->state, JobState::kScheduled);
  Report(*core, "n1", *n1, true, 3);
  std::vector<JobEvent> events;
  j = core->GetJob(job->id, &events);
  EXPECT_EQ(j->state, JobState::kFailed);
  EXPECT_NE(j->reason.find("exited with code 3"), std::string::npos) << j->reason;
  EXPECT_NE(j->reason.find("no retries left"), std::string::npos) << j->reason;
  bool saw_retry = false;
  for (const auto& e : events) saw_retry |= e.message.find("retrying") != std::string::npos;
  EXPECT_TRUE(saw_retry);
}

TEST_F(CoreTest, LostNodeFailsOverToAnotherNode) {
  auto core = Make();
  auto n1 = core->RegisterNode(MakeNode("n1", 2));
  auto job = core->Submit(Spec(2, 0, 1));
  Report(*core, "n1", *n1, false);
  EXPECT_EQ(StateOf(*core, job->id), JobState::kRunning);
  auto n2 = core->RegisterNode(MakeNode("n2", 2));
  clock_.ms += 3000;
  ASSERT_TRUE(core->Heartbeat("n2", *n2, {}, {}).ok());
  clock_.ms += 3000;  // n1 silent for 6 s > 5 s timeout; n2 for 3 s
  core->Tick();
  auto j = core->GetJob(job->id, nullptr);
  EXPECT_EQ(j->attempt, 1);
  EXPECT_EQ(j->state, JobState::kScheduled);
  ASSERT_EQ(j->placement.size(), 2u);
  EXPECT_EQ(j->placement[0].node_id, "n2");
  auto cluster = core->Cluster();
  EXPECT_EQ(cluster.nodes[0].state, NodeState::kLost);
  EXPECT_NE(cluster.nodes[0].reason.find("no heartbeat"), std::string::npos);
  std::vector<JobEvent> events;
  core->GetJob(job->id, &events).status().IgnoreError();
  bool saw = false;
  for (const auto& e : events) saw |= e.message.find("node n1 lost") != std::string::npos;
  EXPECT_TRUE(saw);
  // n1 comes back with its old incarnation: READY again, and its stale ranks are not desired.
  auto back = core->Heartbeat("n1", *n1, {TaskReport{job->id, 0, 0, false, 0, ""}}, {});
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->empty());
}

// A host dies: its peers' ranks fail at once (connection reset), before the node's heartbeat
// timeout, so the retry is placed on the dead node too. When that node is then marked lost, the
// retry never started there: the job is placed again without using up a retry.
TEST_F(CoreTest, RetryPlacedOnANodeThatWasAlreadyDeadIsNotCharged) {
  auto core = Make();
  auto n1 = core->RegisterNode(MakeNode("n1", 2));
  auto n2 = core->RegisterNode(MakeNode("n2", 2));
  auto job = core->Submit(Spec(4, 0, /*retries=*/1));
  Report(*core, "n1", *n1, false);
  Report(*core, "n2", *n2, false);
  EXPECT_EQ(StateOf(*core, job->id), JobState::kRunning);
  // n1 dies silently; n2's ranks lose their peers and exit 1: attempt 1 of 2 fails, and the
  // retry goes to n1 and n2 again (n1 still looks ready).
  Report(*core, "n2", *n2, true, 1);
  auto j = core->GetJob(job->id, nullptr);
  ASSERT_EQ(j->attempt, 1);
  ASSERT_EQ(j->state, JobState::kScheduled);
  auto n3 = core->RegisterNode(MakeNode("n3", 2));
  clock_.ms += 3000;
  ASSERT_TRUE(core->Heartbeat("n2", *n2, {}, {}).ok());
  ASSERT_TRUE(core->Heartbeat("n3", *n3, {}, {}).ok());
  clock_.ms += 3000;  // n1 silent for 6 s > 5 s
  core->Tick();
  std::vector<JobEvent> events;
  j = core->GetJob(job->id, &events);
  EXPECT_EQ(j->state, JobState::kScheduled) << j->reason;
  EXPECT_EQ(j->attempt, 2);
  EXPECT_EQ(j->uncharged_attempts, 1);
  for (const RankPlacement& p : j->placement) EXPECT_NE(p.node_id, "n1");
  bool saw = false;
  for (const auto& e : events) saw |= e.message.find("not counted as a retry") != std::string::npos;
  EXPECT_TRUE(saw);
  Report(*core, "n2", *n2, true, 0);
  Report(*core, "n3", *n3, true, 0);
  EXPECT_EQ(StateOf(*core, job->id), JobState::kSucceeded);
  // The retry budget is still honest: a charged failure now would be the last one.
  auto j2 = core->GetJob(job->id, nullptr);
  EXPECT_EQ(j2->attempt - j2->uncharged_attempts, 1);
}

TEST_F(CoreTest, CancelReleasesAndWakesWatchers) {
  auto core = Make();
  auto n1 = core->RegisterNode(MakeNode("n1", 2));
  auto job = core->Submit(Spec(2));
  std::atomic<bool> finished{false};
  std::thread watcher([&] {
    int64_t seq = 0;
    while (true) {
      bool fin = false;
      auto ev = core->WaitEvents(job->id, seq, Deadline::AfterMs(10000), &fin);
      ASSERT_TRUE(ev.ok());
      if (!ev->empty()) seq = ev->back().seq;
      if (fin) break;
    }
    finished = true;
  });
  auto c = core->Cancel(job->id, "test");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->state, JobState::kCancelled);
  watcher.join();
  EXPECT_TRUE(finished);
  EXPECT_EQ(core->Cancel(job->id, "").status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(core->Heartbeat("n1", *n1, {}, {})->empty());
}

TEST_F(CoreTest, ListPagingAndFilters) {
  auto core = Make();
  for (int i = 0; i < 25; ++i)
    ASSERT_TRUE(core->Submit(Spec(1, 0, 0, i % 2 ? "odd" : "even")).ok());
  ListQuery q;
  q.page_size = 10;
  std::vector<std::string> ids;
  for (int pages = 0; pages < 10; ++pages) {
    auto page = core->ListJobs(q);
    ASSERT_TRUE(page.ok());
    for (const auto& j : page->jobs) ids.push_back(j.id);
    if (page->next_page_token.empty()) break;
    q.page_token = page->next_page_token;
  }
  EXPECT_EQ(ids.size(), 25u);
  q = ListQuery();
  q.name_prefix = "odd";
  EXPECT_EQ(core->ListJobs(q)->jobs.size(), 12u);
  q = ListQuery();
  q.states = {JobState::kRunning};
  EXPECT_TRUE(core->ListJobs(q)->jobs.empty());
  q = ListQuery();
  q.page_token = "bogus";
  EXPECT_NE(core->ListJobs(q).status().message().find("page_token"), std::string::npos);
  q = ListQuery();
  q.page_size = 5000;
  EXPECT_NE(core->ListJobs(q).status().message().find("page_size"), std::string::npos);
}

TEST_F(CoreTest, StateSurvivesReopen) {
  std::string path = ::testing::TempDir() + "/core_reopen_" + std::to_string(getpid()) + ".db";
  std::filesystem::remove(path);
  std::string running_id, pending_id;
  int64_t inc = 0;
  {
    auto store = StateStore::Open(path, true);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    auto core = Make(std::move(store).value());
    inc = *core->RegisterNode(MakeNode("n1", 2));
    running_id = core->Submit(Spec(2))->id;
    pending_id = core->Submit(Spec(2, 7))->id;
    Report(*core, "n1", inc, false);
    EXPECT_EQ(StateOf(*core, running_id), JobState::kRunning);
  }
  auto store = StateStore::Open(path, true);
  ASSERT_TRUE(store.ok());
  auto core = Make(std::move(store).value());
  EXPECT_EQ(StateOf(*core, running_id), JobState::kRunning);
  EXPECT_EQ(StateOf(*core, pending_id), JobState::kPending);
  auto cluster = core->Cluster();
  ASSERT_EQ(cluster.nodes.size(), 1u);
  EXPECT_EQ(cluster.nodes[0].used_slots, 2);
  // The same agent incarnation reconciles: it still gets its running job's ranks.
  auto a = core->Heartbeat("n1", inc, {}, {});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_EQ(a->size(), 1u);
  EXPECT_EQ((*a)[0].job_id, running_id);
  Report(*core, "n1", inc, true, 0);
  EXPECT_EQ(StateOf(*core, running_id), JobState::kSucceeded);
  EXPECT_EQ(StateOf(*core, pending_id), JobState::kScheduled);
  // Ids keep growing after a restart.
  auto next = core->Submit(Spec(1));
  EXPECT_EQ(next->id, "job-3");
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace weft::scheduler
