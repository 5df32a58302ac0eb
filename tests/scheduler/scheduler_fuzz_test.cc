// Bounded randomized test of request decoding: a few thousand random and mutated byte strings
// sent as the raw request of every unary Scheduler method over loopback gRPC (the real decoding
// and validation path). Each call must answer within its deadline with a canonical code that a
// bad request deserves (never UNKNOWN, which would mean an escaped exception), and the server
// must stay up. Deterministic seed; well under 10 s on two cores.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <random>

#include "scheduler/partition_job_planner.h"
#include "scheduler/scheduler_client.h"
#include "scheduler/scheduler_service.h"

namespace weft::scheduler {
namespace {

struct Method {
  std::string path;
  std::string seed;                                      // a valid serialized request to mutate
  std::shared_ptr<google::protobuf::Message> prototype;  // the request type, to parse locally
};

template <typename T>
Method M(const std::string& path, const T& seed) {
  return Method{path, seed.SerializeAsString(), std::make_shared<T>()};
}

std::vector<Method> Methods() {
  const std::string svc = "/weft.scheduler.v1.Scheduler/";
  v1::SubmitJobRequest submit;
  submit.mutable_spec()->set_name("fuzz");
  submit.mutable_spec()->add_argv("/bin/true");
  submit.mutable_spec()->add_env("A=B");
  submit.mutable_spec()->mutable_resources()->set_ranks(2);
  submit.mutable_spec()->mutable_resources()->set_memory_per_rank_bytes(1024);
  submit.mutable_spec()->set_priority(3);
  submit.mutable_spec()->mutable_retry()->set_max_retries(1);
  v1::SubmitJobRequest plan_submit;
  plan_submit.mutable_spec()->add_argv("/bin/true");
  auto* plan = plan_submit.mutable_spec()->mutable_resources()->mutable_plan();
  plan->set_model_json(
      R"({"name":"m","global_batch":8,"layers":[{"name":"a","fwd_flops":1e5,"param_bytes":1e4,)"
      R"("activation_bytes":64},{"name":"b","fwd_flops":1e5,"param_bytes":1e4,)"
      R"("activation_bytes":64}]})");
  plan->set_pin_schedule("1f1b");
  v1::PlanJobRequest plan_job;
  *plan_job.mutable_spec() = plan_submit.spec();
  v1::GetJobRequest get;
  get.set_job_id("j-000001");
  v1::ListJobsRequest list;
  list.add_states(v1::PENDING);
  list.set_name_prefix("f");
  list.set_page_size(5);
  list.set_page_token("abc");
  v1::CancelJobRequest cancel;
  cancel.set_job_id("j-000001");
  v1::RegisterNodeRequest reg;
  reg.mutable_node()->set_node_id("fz");
  reg.mutable_node()->set_host_id("h");
  reg.mutable_node()->set_switch_id("s");
  reg.mutable_node()->set_address("127.0.0.1");
  reg.mutable_node()->set_slots(2);
  reg.mutable_node()->set_memory_bytes(1 << 30);
  v1::HeartbeatRequest hb;
  hb.set_node_id("fz");
  hb.set_incarnation(1);
  return {M(svc + "SubmitJob", submit),
          M(svc + "SubmitJob", plan_submit),
          M(svc + "PlanJob", plan_job),
          M(svc + "GetJob", get),
          M(svc + "ListJobs", list),
          M(svc + "CancelJob", cancel),
          M(svc + "RegisterNode", reg),
          M(svc + "Heartbeat", hb),
          M(svc + "GetCluster", v1::GetClusterRequest())};
}

std::string Mutate(const std::string& seed, std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng() % n); };
  std::string s = seed;
  switch (rng() % 8) {
    case 0: {  // pure noise
      s.resize(pick(96));
      for (char& c : s) c = static_cast<char>(rng());
      return s;
    }
    case 1:  // truncation
      s.resize(pick(s.size() + 1));
      return s;
    default: {  // a few byte edits: flips, overwrites, inserts (varints and lengths go wrong)
      int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) {
        size_t at = pick(s.size() + 1);
        switch (rng() % 3) {
          case 0:
            if (at < s.size()) s[at] ^= static_cast<char>(1u << (rng() % 8));
            break;
          case 1:
            if (at < s.size()) s[at] = static_cast<char>(rng());
            break;
          default:
            s.insert(at, 1, static_cast<char>(rng()));
        }
      }
      return s;
    }
  }
}

TEST(SchedulerFuzzTest, RandomRequestsGetCanonicalCodes) {
  const std::string db = ::testing::TempDir() + "/fuzz_" + std::to_string(getpid()) + ".db";
  std::filesystem::remove(db);
  auto store = StateStore::Open(db, false);
  ASSERT_TRUE(store.ok());
  PartitionJobPlanner planner;
  CoreOptions co;
  co.node_timeout_ms = 60000;
  co.planner = &planner;
  auto core = SchedulerCore::Open(co, std::move(store).value());
  ASSERT_TRUE(core.ok());
  ServiceOptions so;
  so.token = "t";
  so.max_message_bytes = 1 << 16;
  auto server = SchedulerServer::Start(**core, so);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const std::string addr = "127.0.0.1:" + std::to_string((*server)->port());

  auto channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  const std::vector<Method> methods = Methods();
  std::mt19937_64 rng(0x5eedf00d);
  std::map<int, int> codes;
  const auto t0 = std::chrono::steady_clock::now();
  constexpr int kIterations = 5000;
  int done = 0;
  for (; done < kIterations; ++done) {
    // Stay inside the time bound on a loaded machine: stop early rather than time out.
    if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(7)) break;
    const Method& m = methods[rng() % methods.size()];
    std::string bytes = (done % 10 == 0) ? m.seed : Mutate(m.seed, rng);
    grpc::Slice slice(bytes);
    grpc::ByteBuffer in(&slice, 1), out;
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer t");
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    auto call = stub.PrepareUnaryCall(&ctx, m.path, in, &cq);
    call->StartCall();
    grpc::Status status;
    call->Finish(&out, &status, reinterpret_cast<void*>(1));
    void* tag = nullptr;
    bool ok = false;
    ASSERT_EQ(cq.AsyncNext(&tag, &ok, std::chrono::system_clock::now() + std::chrono::seconds(10)),
              grpc::CompletionQueue::GOT_EVENT)
        << m.path << ": no answer";
    const grpc::StatusCode code = status.error_code();
    codes[code]++;
    switch (code) {
      case grpc::StatusCode::OK:
      case grpc::StatusCode::INVALID_ARGUMENT:
      case grpc::StatusCode::NOT_FOUND:
      case grpc::StatusCode::ALREADY_EXISTS:
      case grpc::StatusCode::FAILED_PRECONDITION:
      case grpc::StatusCode::RESOURCE_EXHAUSTED:
      case grpc::StatusCode::OUT_OF_RANGE:
        break;
      case grpc::StatusCode::INTERNAL: {
        // Only gRPC's own answer to bytes that do not parse as the request message; anything
        // that parses must reach the service's validation and get a proper code.
        std::unique_ptr<google::protobuf::Message> msg(m.prototype->New());
        EXPECT_FALSE(msg->ParseFromString(bytes))
            << m.path << ": INTERNAL for a request that parses: " << status.error_message();
        break;
      }
      default:
        ADD_FAILURE() << m.path << ": unexpected code " << code << ": " << status.error_message();
    }
    if (code != grpc::StatusCode::OK && code != grpc::StatusCode::INTERNAL) {
      // A validation answer names what was wrong.
      EXPECT_FALSE(status.error_message().empty()) << m.path << " code " << code;
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string summary;
  for (auto [c, n] : codes) summary += " code" + std::to_string(c) + "=" + std::to_string(n);
  std::printf("fuzz: %d requests in %.2f s:%s\n", done, secs, summary.c_str());
  EXPECT_GE(done, 500) << "too few requests in the time bound";
  EXPECT_GT(codes[grpc::StatusCode::OK], 0);
  EXPECT_GT(codes[grpc::StatusCode::INVALID_ARGUMENT], 0);
  // Still serving.
  auto client = SchedulerClient::Create(addr, "t");
  ASSERT_TRUE(client.ok());
  EXPECT_TRUE((*client)->GetCluster(v1::GetClusterRequest(), Deadline::AfterMs(5000)).ok());
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.AsyncNext(&tag, &ok, std::chrono::system_clock::now() + std::chrono::seconds(5)) ==
         grpc::CompletionQueue::GOT_EVENT) {
  }
  server->reset();
  core->reset();
  std::filesystem::remove(db);
}

}  // namespace
}  // namespace weft::scheduler
