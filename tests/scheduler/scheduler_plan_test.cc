// Plan requests through the real partition planner (partition_job_planner.h) over gRPC: PlanJob
// returns the plan (stages, dp, predicted step time) and its placement on the registered nodes;
// SubmitJob sizes the job from the plan; bad models and pins get INVALID_ARGUMENT naming the
// field. Also the cluster description derived from registered nodes, and placement following the
// plan: each stage's replicas (dp_inner) or each pipeline (pp_inner) on one host, the links the
// placed plan's traffic crosses recorded with the job, and the report when groups cannot be kept
// whole.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "base/json.h"
#include "scheduler/partition_job_planner.h"
#include "scheduler/scheduler_client.h"
#include "scheduler/scheduler_service.h"

namespace weft::scheduler {
namespace {

const std::string kModel = std::string(WEFT_SOURCE_DIR) + "/models/mlp-fmnist.json";

class PlanServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = ::testing::TempDir() + "/plan_" + std::to_string(getpid()) + ".db";
    std::filesystem::remove(db_);
    auto store = StateStore::Open(db_, true);
    ASSERT_TRUE(store.ok());
    CoreOptions co;
    co.node_timeout_ms = 60000;
    co.planner = &planner_;
    auto core = SchedulerCore::Open(co, std::move(store).value());
    ASSERT_TRUE(core.ok());
    core_ = std::move(core).value();
    ServiceOptions so;
    so.token = "t";
    auto server = SchedulerServer::Start(*core_, so);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    auto c = SchedulerClient::Create("127.0.0.1:" + std::to_string(server_->port()), "t");
    ASSERT_TRUE(c.ok());
    client_ = std::move(c).value();
    for (int i = 0; i < 2; ++i) {
      v1::RegisterNodeRequest reg;
      reg.mutable_node()->set_node_id("n" + std::to_string(i));
      reg.mutable_node()->set_host_id("h" + std::to_string(i));
      reg.mutable_node()->set_switch_id("s0");
      reg.mutable_node()->set_address("127.0.0.1");
      reg.mutable_node()->set_slots(2);
      reg.mutable_node()->set_memory_bytes(int64_t{8} << 30);
      ASSERT_TRUE(client_->RegisterNode(reg, D()).ok());
    }
  }
  void TearDown() override {
    server_.reset();
    core_.reset();
    std::filesystem::remove(db_);
  }
  static v1::JobSpec PlanSpec(const std::string& model) {
    v1::JobSpec s;
    s.add_argv("/bin/true");
    s.mutable_resources()->mutable_plan()->set_model_json(model);
    return s;
  }
  Deadline D() { return Deadline::AfterMs(10000); }

  PartitionJobPlanner planner_;
  std::string db_;
  std::unique_ptr<SchedulerCore> core_;
  std::unique_ptr<SchedulerServer> server_;
  std::unique_ptr<SchedulerClient> client_;
};

TEST_F(PlanServiceTest, PlanJobReturnsPlanAndPlacement) {
  v1::PlanJobRequest req;
  *req.mutable_spec() = PlanSpec(kModel);
  auto r = client_->PlanJob(req, D());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GE(r->world_size(), 1);
  EXPECT_LE(r->world_size(), 4);
  EXPECT_EQ(r->placement_size(), r->world_size());
  EXPECT_NE(r->note().find("ms/step"), std::string::npos) << r->note();
  auto plan = ParseJson(r->plan_json());
  ASSERT_TRUE(plan.ok()) << r->plan_json();
  const Json* pp = plan->Find("pp");
  const Json* dp = plan->Find("dp");
  ASSERT_TRUE(pp && dp);
  EXPECT_EQ(static_cast<int>(pp->as_number() * dp->as_number()), r->world_size());
  ASSERT_NE(plan->Find("stages"), nullptr);
  EXPECT_NE(r->plan_json().find("step_s"), std::string::npos);
  // A dry run changes nothing.
  EXPECT_EQ(client_->GetCluster(v1::GetClusterRequest(), D())->nodes(0).used_slots(), 0);
}

TEST_F(PlanServiceTest, PinsAndMaxRanksAreHonoured) {
  v1::PlanJobRequest req;
  *req.mutable_spec() = PlanSpec(kModel);
  req.mutable_spec()->mutable_resources()->mutable_plan()->set_pin_pp(2);
  req.mutable_spec()->mutable_resources()->mutable_plan()->set_pin_dp(2);
  auto r = client_->PlanJob(req, D());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->world_size(), 4);
  EXPECT_EQ(r->placement_size(), 4);
  EXPECT_NE(r->note().find("2 stages x 2 replicas"), std::string::npos) << r->note();

  *req.mutable_spec() = PlanSpec(kModel);
  req.mutable_spec()->mutable_resources()->mutable_plan()->set_max_ranks(1);
  r = client_->PlanJob(req, D());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->world_size(), 1);
}

TEST_F(PlanServiceTest, SubmitSizesRanksFromThePlan) {
  v1::SubmitJobRequest sub;
  *sub.mutable_spec() = PlanSpec(kModel);
  sub.mutable_spec()->mutable_resources()->mutable_plan()->set_pin_pp(1);
  sub.mutable_spec()->mutable_resources()->mutable_plan()->set_pin_dp(2);
  auto s = client_->SubmitJob(sub, D());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  v1::GetJobRequest get;
  get.set_job_id(s->job().id());
  auto j = client_->GetJob(get, D());
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->job().placement_size(), 2);
  EXPECT_NE(j->job().plan_json().find("\"dp\""), std::string::npos);
  // Pins survive the round trip through the store and the API.
  EXPECT_EQ(j->job().spec().resources().plan().pin_dp(), 2);
}

TEST_F(PlanServiceTest, BadModelIsInvalidArgumentNamingTheField) {
  for (const std::string& model :
       {std::string("/nonexistent/model.json"), std::string("{\"name\": \"x\", \"layers\": 3}"),
        std::string("{not json")}) {
    v1::PlanJobRequest req;
    *req.mutable_spec() = PlanSpec(model);
    auto r = client_->PlanJob(req, D());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
    EXPECT_NE(r.status().message().find("spec.resources.plan.model_json"), std::string::npos)
        << r.status().message();
    v1::SubmitJobRequest sub;
    *sub.mutable_spec() = PlanSpec(model);
    EXPECT_EQ(client_->SubmitJob(sub, D()).status().code(), StatusCode::kInvalidArgument);
  }
  v1::PlanJobRequest req;
  *req.mutable_spec() = PlanSpec(kModel);
  req.mutable_spec()->mutable_resources()->mutable_plan()->set_pin_schedule("zigzag");
  auto r = client_->PlanJob(req, D());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("spec.resources.plan.pin_schedule"), std::string::npos)
      << r.status().message();
}

// A core with the real partition planner and no state store.
class PlanPlacementTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CoreOptions co;
    co.node_timeout_ms = 60000;
    co.planner = &planner_;
    auto core = SchedulerCore::Open(co, nullptr);
    ASSERT_TRUE(core.ok()) << core.status().ToString();
    core_ = std::move(core).value();
  }
  void AddNode(const std::string& id, const std::string& sw, int slots) {
    Node n;
    n.node_id = id;
    n.host_id = "host-" + id;
    n.switch_id = sw;
    n.address = "127.0.0.1";
    n.slots = slots;
    n.memory_bytes = int64_t{8} << 30;
    ASSERT_TRUE(core_->RegisterNode(n).ok());
  }
  // Occupies slots with a plain job so that the free slots are uneven.
  void Fill(int ranks, int ranks_per_node) {
    JobSpec s;
    s.argv = {"/bin/true"};
    s.resources.ranks = ranks;
    s.resources.ranks_per_node = ranks_per_node;
    auto j = core_->Submit(s);
    ASSERT_TRUE(j.ok()) << j.status().ToString();
    ASSERT_EQ(j->state, JobState::kScheduled) << j->reason;
  }
  static JobSpec PlanSpec(int pp, int dp) {
    JobSpec s;
    s.argv = {"/bin/true"};
    PlanRequest p;
    p.model_json = kModel;
    p.pin_pp = pp;
    p.pin_dp = dp;
    s.resources.plan = p;
    return s;
  }
  static std::vector<std::string> Strings(const Json& placed, const char* key) {
    std::vector<std::string> out;
    const Json* a = placed.Find(key);
    EXPECT_TRUE(a && a->is_array()) << key;
    if (!a || !a->is_array()) return out;
    for (const Json& x : a->as_array()) out.push_back(x.as_string());
    return out;
  }

  PartitionJobPlanner planner_;
  std::unique_ptr<SchedulerCore> core_;
};

// Four 4-slot hosts with one slot each taken (3 free on each): the plan (2 stages x 2 replicas)
// was made for 4 chips per host. Packed contiguously, ranks 0-2 would share a host and rank 3 sit
// alone, splitting one group; placed by the plan, each group of 2 shares a host, the inner
// traffic stays on the host link, and the cut the planner expected on one host is reported as
// crossing the switch.
TEST_F(PlanPlacementTest, EachGroupLandsOnOneHostAndTheLinksAreRecorded) {
  for (int i = 0; i < 4; ++i) AddNode("n" + std::to_string(i), "s0", 4);
  Fill(4, 1);
  // The dry run and the submitted job agree.
  auto dry = core_->Plan(PlanSpec(2, 2));
  ASSERT_TRUE(dry.ok()) << dry.status().ToString();
  EXPECT_NE(dry->note.find("plan traffic as placed"), std::string::npos) << dry->note;
  EXPECT_NE(dry->plan_json.find("\"placed\""), std::string::npos);
  auto sub = core_->Submit(PlanSpec(2, 2));
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  std::vector<JobEvent> events;
  auto job = core_->GetJob(sub->id, &events);
  ASSERT_TRUE(job.ok());
  ASSERT_EQ(job->state, JobState::kScheduled) << job->reason;
  ASSERT_EQ(job->placement.size(), 4u);
  auto plan = ParseJson(job->plan_json);
  ASSERT_TRUE(plan.ok()) << job->plan_json;
  const bool dp_inner = plan->StringOr("layout", "") == "dp_inner";
  // dp_inner: ranks {0,1} are stage 0's replicas; pp_inner: ranks {0,1} are pipeline 0.
  EXPECT_EQ(job->placement[0].node_id, job->placement[1].node_id);
  EXPECT_EQ(job->placement[2].node_id, job->placement[3].node_id);
  EXPECT_NE(job->placement[1].node_id, job->placement[2].node_id);
  const Json* placed = plan->Find("placed");
  ASSERT_NE(placed, nullptr) << job->plan_json;
  EXPECT_EQ(placed->NumberOr("group_size", 0), 2);
  ASSERT_NE(placed->Find("aligned"), nullptr);
  EXPECT_TRUE(placed->Find("aligned")->as_bool());
  const std::vector<std::string> inner =
      Strings(*placed, dp_inner ? "allreduce_links" : "cut_links");
  const std::vector<std::string> outer =
      Strings(*placed, dp_inner ? "cut_links" : "allreduce_links");
  EXPECT_EQ(inner, std::vector<std::string>(dp_inner ? 2 : 1, "host")) << job->plan_json;
  EXPECT_EQ(outer, std::vector<std::string>(dp_inner ? 1 : 2, "switch")) << job->plan_json;
  // The planner saw 4 chips per host and put all 4 ranks on one; the free slots did not allow it.
  ASSERT_NE(placed->Find("matches_plan"), nullptr);
  EXPECT_FALSE(placed->Find("matches_plan")->as_bool());
  const std::vector<std::string> diff = Strings(*placed, "differences");
  ASSERT_FALSE(diff.empty());
  EXPECT_NE(diff[0].find("placed switch, planned host"), std::string::npos) << diff[0];
  // Users see it in the job's reason and events (weft job).
  EXPECT_NE(job->reason.find("plan traffic as placed: "), std::string::npos) << job->reason;
  EXPECT_NE(job->reason.find("differs from the plan"), std::string::npos) << job->reason;
  EXPECT_EQ(events.back().message, job->reason);
}

// Free slots 3 (switch s0) and 1 (switch s1): no host or switch holds both groups of 2 whole, so
// the ranks are packed as before and the job says so.
TEST_F(PlanPlacementTest, GroupsThatCannotBeKeptWholeAreReported) {
  AddNode("n0", "s0", 3);
  AddNode("n1", "s1", 2);
  Fill(1, 0);  // the tightest host, n1, keeps one free slot
  auto sub = core_->Submit(PlanSpec(2, 2));
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  auto job = core_->GetJob(sub->id, nullptr);
  ASSERT_TRUE(job.ok());
  ASSERT_EQ(job->state, JobState::kScheduled) << job->reason;
  EXPECT_NE(job->reason.find("placed without keeping groups whole"), std::string::npos)
      << job->reason;
  auto plan = ParseJson(job->plan_json);
  ASSERT_TRUE(plan.ok());
  const Json* placed = plan->Find("placed");
  ASSERT_NE(placed, nullptr) << job->plan_json;
  ASSERT_NE(placed->Find("aligned"), nullptr);
  EXPECT_FALSE(placed->Find("aligned")->as_bool());
  EXPECT_NE(placed->StringOr("note", "").find("only 1 of 2 groups"), std::string::npos)
      << job->plan_json;
}

TEST(PlanRequestEncodingTest, PinsPersistAndOldRecordsStillDecode) {
  Job j;
  j.id = "j-1";
  j.spec.argv = {"/bin/true"};
  PlanRequest p;
  p.model_json = "models/m.json";
  p.max_ranks = 8;
  p.pin_pp = 2;
  p.pin_dp = 4;
  p.pin_schedule = "interleaved";
  p.pin_micro_batches = 16;
  j.spec.resources.plan = p;
  std::string bytes = EncodeJob(j);
  auto back = DecodeJob(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_TRUE(back->spec.resources.plan.has_value());
  EXPECT_EQ(back->spec.resources.plan->pin_pp, 2);
  EXPECT_EQ(back->spec.resources.plan->pin_dp, 4);
  EXPECT_EQ(back->spec.resources.plan->pin_schedule, "interleaved");
  EXPECT_EQ(back->spec.resources.plan->pin_micro_batches, 16);
  // A record written before the pins section (it ends after next_event_seq) decodes unpinned;
  // the launcher and uncharged-attempts sections (8 bytes each) follow the pins.
  const size_t pins = 8 + 8 + (8 + p.pin_schedule.size()) + 8 + 8 + 8;
  auto old = DecodeJob(std::string_view(bytes).substr(0, bytes.size() - pins));
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_EQ(old->spec.resources.plan->pin_pp, 0);
  EXPECT_EQ(old->spec.resources.plan->model_json, "models/m.json");
}

TEST(ClusterFromNodesTest, LinkClassesFollowHostsAndSwitches) {
  std::vector<Node> nodes(4);
  for (int i = 0; i < 4; ++i) {
    nodes[i].node_id = "n" + std::to_string(i);
    nodes[i].host_id = "h" + std::to_string(i);
    nodes[i].switch_id = i < 2 ? "a" : "b";
    nodes[i].slots = 4;
    nodes[i].memory_bytes = int64_t{16} << 30;
  }
  std::vector<const Node*> ptrs;
  for (const Node& n : nodes) ptrs.push_back(&n);
  auto c = ClusterFromNodes(ptrs, PartitionPlannerOptions());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->hosts, 4);
  EXPECT_EQ(c->chips_per_host, 4);
  EXPECT_DOUBLE_EQ(c->chip_memory_bytes, static_cast<double>(int64_t{4} << 30));
  ASSERT_EQ(c->links.size(), 3u);
  EXPECT_EQ(c->links[0].name, "host");
  EXPECT_EQ(c->links[1].name, "switch");
  EXPECT_EQ(c->links[1].span, 8);
  EXPECT_EQ(c->links[2].name, "spine");
  EXPECT_EQ(c->links[2].span, 16);
  // One host: a single shared-memory class.
  auto one = ClusterFromNodes({ptrs[0]}, PartitionPlannerOptions());
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  ASSERT_EQ(one->links.size(), 1u);
  EXPECT_EQ(one->links[0].name, "host");
  EXPECT_EQ(ClusterFromNodes({}, PartitionPlannerOptions()).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace weft::scheduler
