// The gRPC service over loopback: auth, bad requests (missing fields, impossible resources,
// unknown ids, oversized messages) get the right canonical code and a message naming the field;
// deadlines are honoured; health checking answers; a full round trip with a watch.
#include "scheduler/scheduler_service.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "scheduler/scheduler_client.h"

namespace weft::scheduler {
namespace {

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = ::testing::TempDir() + "/svc_" + std::to_string(getpid()) + ".db";
    std::filesystem::remove(db_);
    auto store = StateStore::Open(db_, true);
    ASSERT_TRUE(store.ok());
    CoreOptions co;
    co.node_timeout_ms = 60000;
    auto core = SchedulerCore::Open(co, std::move(store).value());
    ASSERT_TRUE(core.ok());
    core_ = std::move(core).value();
    ServiceOptions so;
    so.token = "s3cret";
    so.max_message_bytes = 1 << 20;
    auto server = SchedulerServer::Start(*core_, so);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    addr_ = "127.0.0.1:" + std::to_string(server_->port());
    client_ = Client("s3cret");
  }
  void TearDown() override {
    server_.reset();
    core_.reset();
    std::filesystem::remove(db_);
  }
  std::unique_ptr<SchedulerClient> Client(const std::string& token) {
    auto c = SchedulerClient::Create(addr_, token);
    EXPECT_TRUE(c.ok());
    return std::move(c).value();
  }
  static v1::SubmitJobRequest Submit(int ranks) {
    v1::SubmitJobRequest r;
    r.mutable_spec()->add_argv("/bin/true");
    r.mutable_spec()->mutable_resources()->set_ranks(ranks);
    return r;
  }
  static void ExpectError(const Status& s, StatusCode code, const std::string& needle) {
    EXPECT_EQ(s.code(), code) << s.ToString();
    EXPECT_NE(s.message().find(needle), std::string::npos)
        << "message '" << s.message() << "' does not name '" << needle << "'";
  }
  Deadline D() { return Deadline::AfterMs(5000); }

  std::string db_, addr_;
  std::unique_ptr<SchedulerCore> core_;
  std::unique_ptr<SchedulerServer> server_;
  std::unique_ptr<SchedulerClient> client_;
};

TEST_F(ServiceTest, MissingOrWrongTokenIsUnauthenticated) {
  auto none = Client("");
  ExpectError(none->SubmitJob(Submit(1), D()).status(), StatusCode::kUnauthenticated,
              "authorization: missing");
  auto wrong = Client("s3creT");
  ExpectError(wrong->SubmitJob(Submit(1), D()).status(), StatusCode::kUnauthenticated,
              "bearer token rejected");
  ExpectError(wrong->GetCluster(v1::GetClusterRequest(), D()).status(),
              StatusCode::kUnauthenticated, "authorization");
  v1::RegisterNodeRequest reg;
  reg.mutable_node()->set_node_id("n");
  ExpectError(wrong->RegisterNode(reg, D()).status(), StatusCode::kUnauthenticated,
              "authorization");
  // Nothing was created by the rejected calls.
  EXPECT_EQ(core_->Cluster().nodes.size(), 0u);
  EXPECT_TRUE(core_->ListJobs(ListQuery())->jobs.empty());
  EXPECT_TRUE(client_->SubmitJob(Submit(1), D()).ok());
}

TEST_F(ServiceTest, BadRequestsNameTheField) {
  v1::SubmitJobRequest empty;
  ExpectError(client_->SubmitJob(empty, D()).status(), StatusCode::kInvalidArgument,
              "spec: missing");
  v1::SubmitJobRequest no_argv = Submit(2);
  no_argv.mutable_spec()->clear_argv();
  ExpectError(client_->SubmitJob(no_argv, D()).status(), StatusCode::kInvalidArgument, "spec.argv");
  ExpectError(client_->SubmitJob(Submit(-1), D()).status(), StatusCode::kInvalidArgument,
              "spec.resources.ranks: -1");
  ExpectError(client_->SubmitJob(Submit(1000000), D()).status(), StatusCode::kInvalidArgument,
              "spec.resources.ranks: 1000000");
  ExpectError(client_->SubmitJob(Submit(0), D()).status(), StatusCode::kInvalidArgument,
              "spec.resources.ranks: missing");
  auto rpn = Submit(4);
  rpn.mutable_spec()->mutable_resources()->set_ranks_per_node(3);
  ExpectError(client_->SubmitJob(rpn, D()).status(), StatusCode::kInvalidArgument,
              "spec.resources.ranks_per_node: 3");
  auto mem = Submit(4);
  mem.mutable_spec()->mutable_resources()->set_memory_per_rank_bytes(-5);
  ExpectError(client_->SubmitJob(mem, D()).status(), StatusCode::kInvalidArgument,
              "spec.resources.memory_per_rank_bytes");
  auto retry = Submit(1);
  retry.mutable_spec()->mutable_retry()->set_max_retries(-1);
  ExpectError(client_->SubmitJob(retry, D()).status(), StatusCode::kInvalidArgument,
              "spec.retry.max_retries");

  v1::GetJobRequest get;
  ExpectError(client_->GetJob(get, D()).status(), StatusCode::kInvalidArgument, "job_id: missing");
  get.set_job_id("job-424242");
  ExpectError(client_->GetJob(get, D()).status(), StatusCode::kNotFound, "job-424242");
  v1::CancelJobRequest cancel;
  cancel.set_job_id("nope");
  ExpectError(client_->CancelJob(cancel, D()).status(), StatusCode::kNotFound, "job_id");
  v1::ListJobsRequest list;
  list.set_page_token("garbage!");
  ExpectError(client_->ListJobs(list, D()).status(), StatusCode::kInvalidArgument, "page_token");
  list.Clear();
  list.add_states(static_cast<v1::JobState>(42));
  ExpectError(client_->ListJobs(list, D()).status(), StatusCode::kInvalidArgument, "states[0]");
  v1::WatchJobRequest watch;
  watch.set_job_id("ghost");
  ExpectError(client_->WatchJob(watch, D(), [](const v1::JobEvent&) { return true; }),
              StatusCode::kNotFound, "ghost");

  v1::RegisterNodeRequest reg;
  ExpectError(client_->RegisterNode(reg, D()).status(), StatusCode::kInvalidArgument,
              "node: missing");
  reg.mutable_node()->set_node_id("n1");
  reg.mutable_node()->set_address("127.0.0.1");
  reg.mutable_node()->set_slots(0);
  ExpectError(client_->RegisterNode(reg, D()).status(), StatusCode::kInvalidArgument,
              "node.slots: 0");
  v1::HeartbeatRequest hb;
  hb.set_node_id("never-registered");
  ExpectError(client_->Heartbeat(hb, D()).status(), StatusCode::kNotFound, "never-registered");
  reg.mutable_node()->set_slots(2);
  auto r = client_->RegisterNode(reg, D());
  ASSERT_TRUE(r.ok());
  hb.set_node_id("n1");
  hb.set_incarnation(r->incarnation() + 7);
  ExpectError(client_->Heartbeat(hb, D()).status(), StatusCode::kFailedPrecondition, "incarnation");
  // Cancelling a finished job is a precondition failure.
  auto job = client_->SubmitJob(Submit(1), D());
  cancel.set_job_id(job->job().id());
  ASSERT_TRUE(client_->CancelJob(cancel, D()).ok());
  ExpectError(client_->CancelJob(cancel, D()).status(), StatusCode::kFailedPrecondition,
              "already CANCELLED");
}

TEST_F(ServiceTest, OversizedMessageIsResourceExhausted) {
  auto big = Submit(1);
  big.mutable_spec()->add_argv(std::string(2 << 20, 'x'));  // 2 MiB > the 1 MiB limit
  auto r = client_->SubmitJob(big, D());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
  // Under the transport limit but over the spec's own argv limit: the field is named.
  auto argv = Submit(1);
  argv.mutable_spec()->add_argv(std::string(300 * 1024, 'y'));
  ExpectError(client_->SubmitJob(argv, D()).status(), StatusCode::kInvalidArgument,
              "spec.argv/spec.env");
  EXPECT_TRUE(core_->ListJobs(ListQuery())->jobs.empty());
}

TEST_F(ServiceTest, DeadlinesAreHonoured) {
  auto job = client_->SubmitJob(Submit(4), D());  // no nodes: stays PENDING
  ASSERT_TRUE(job.ok());
  v1::WatchJobRequest w;
  w.set_job_id(job->job().id());
  int events = 0;
  auto t0 = std::chrono::steady_clock::now();
  Status s = client_->WatchJob(w, Deadline::AfterMs(400), [&](const v1::JobEvent&) {
    ++events;
    return true;
  });
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
  EXPECT_EQ(events, 1);  // the history: "submitted"
  EXPECT_LT(ms, 3000);
  // An unreachable scheduler: Unavailable or DeadlineExceeded, within the deadline.
  auto dead = SchedulerClient::Create("127.0.0.1:1", "x");
  t0 = std::chrono::steady_clock::now();
  auto r = (*dead)->GetCluster(v1::GetClusterRequest(), Deadline::AfterMs(300));
  EXPECT_FALSE(r.ok());
  double dead_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(dead_ms, 3000);
}

TEST_F(ServiceTest, HealthServiceReportsServing) {
  // grpc.health.v1.Health/Check with a hand-encoded HealthCheckRequest{service=...}.
  auto channel = grpc::CreateChannel(addr_, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  const std::string service = "weft.scheduler.v1.Scheduler";
  std::string req = std::string("\x0a", 1) + static_cast<char>(service.size()) + service;
  grpc::Slice slice(req);
  grpc::ByteBuffer in(&slice, 1), out;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", in, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&out, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(out.Dump(&slices).ok());
  std::string bytes;
  for (auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));  // status: SERVING
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

TEST_F(ServiceTest, RoundTripListAndWatch) {
  v1::RegisterNodeRequest reg;
  reg.mutable_node()->set_node_id("n1");
  reg.mutable_node()->set_address("127.0.0.1");
  reg.mutable_node()->set_slots(2);
  auto inc = client_->RegisterNode(reg, D());
  ASSERT_TRUE(inc.ok());
  auto job = client_->SubmitJob(Submit(2), D());
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->job().state(), v1::SCHEDULED);
  std::vector<v1::JobState> seen;
  std::thread watcher([&] {
    v1::WatchJobRequest w;
    w.set_job_id(job->job().id());
    Status s = client_->WatchJob(w, Deadline::AfterMs(10000), [&](const v1::JobEvent& e) {
      seen.push_back(e.state());
      return true;
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
  });
  // Play the agent: heartbeat, report both ranks running, then exited 0.
  v1::HeartbeatRequest hb;
  hb.set_node_id("n1");
  hb.set_incarnation(inc->incarnation());
  auto a = client_->Heartbeat(hb, D());
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->assignments_size(), 1);
  EXPECT_TRUE(a->assignments(0).serve_store());
  for (bool exited : {false, true}) {
    hb.clear_tasks();
    for (const auto& r : a->assignments(0).ranks()) {
      auto* t = hb.add_tasks();
      t->set_job_id(job->job().id());
      t->set_rank(r.rank());
      t->set_state(exited ? v1::TaskStatus::EXITED : v1::TaskStatus::RUNNING);
    }
    ASSERT_TRUE(client_->Heartbeat(hb, D()).ok());
  }
  watcher.join();
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back(), v1::SUCCEEDED);
  v1::ListJobsRequest list;
  list.add_states(v1::SUCCEEDED);
  auto l = client_->ListJobs(list, D());
  ASSERT_EQ(l->jobs_size(), 1);
  EXPECT_EQ(l->jobs(0).ranks_size(), 2);
  auto c = client_->GetCluster(v1::GetClusterRequest(), D());
  ASSERT_EQ(c->nodes_size(), 1);
  EXPECT_EQ(c->nodes(0).used_slots(), 0);
  v1::PlanJobRequest plan;
  *plan.mutable_spec() = Submit(3).spec();
  auto p = client_->PlanJob(plan, D());
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->placement_size(), 0);
  EXPECT_NE(p->note().find("needs 3 ranks; 2 fit"), std::string::npos) << p->note();
}

}  // namespace
}  // namespace weft::scheduler
