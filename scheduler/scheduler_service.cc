// gRPC adapter. Each handler: check the bearer token, convert the request (naming bad fields),
// call the core, convert back. The core does all the deciding; nothing here holds state besides
// the server objects.
#include "scheduler/scheduler_service.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <chrono>

#include "base/env.h"
#include "base/logging.h"
#include "base/socket_util.h"
#include "base/http_metrics_server.h"
#include "scheduler/proto/scheduler.grpc.pb.h"

namespace weft::scheduler {

namespace v1 = ::weft::scheduler::v1;

namespace {

grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(static_cast<int>(s.code())), s.message());
}

// Constant-time comparison: the token check must not leak how much of a guess was right.
bool SameSecret(std::string_view a, std::string_view b) {
  unsigned diff = a.size() == b.size() ? 0 : 1;
  size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

JobSpec FromProto(const v1::JobSpec& p) {
  JobSpec s;
  s.name = p.name();
  s.argv.assign(p.argv().begin(), p.argv().end());
  s.env.assign(p.env().begin(), p.env().end());
  s.resources.ranks = p.resources().ranks();
  s.resources.ranks_per_node = p.resources().ranks_per_node();
  s.resources.memory_per_rank_bytes = p.resources().memory_per_rank_bytes();
  if (p.resources().has_plan()) {
    const v1::PlanRequest& pr = p.resources().plan();
    PlanRequest plan;
    plan.model_json = pr.model_json();
    plan.max_ranks = pr.max_ranks();
    plan.pin_pp = pr.pin_pp();
    plan.pin_dp = pr.pin_dp();
    plan.pin_schedule = pr.pin_schedule();
    plan.pin_micro_batches = pr.pin_micro_batches();
    s.resources.plan = std::move(plan);
  }
  s.priority = p.priority();
  s.retry.max_retries = p.retry().max_retries();
  // Unknown numbers pass through so ValidateJobSpec names them ("spec.launcher: 7 ...").
  s.launcher = static_cast<Launcher>(static_cast<int>(p.launcher()));
  return s;
}

void ToProto(const JobSpec& s, v1::JobSpec* p) {
  p->set_name(s.name);
  for (const auto& a : s.argv) p->add_argv(a);
  for (const auto& e : s.env) p->add_env(e);
  auto* r = p->mutable_resources();
  r->set_ranks(s.resources.ranks);
  r->set_ranks_per_node(s.resources.ranks_per_node);
  r->set_memory_per_rank_bytes(s.resources.memory_per_rank_bytes);
  if (s.resources.plan) {
    r->mutable_plan()->set_model_json(s.resources.plan->model_json);
    r->mutable_plan()->set_max_ranks(s.resources.plan->max_ranks);
    r->mutable_plan()->set_pin_pp(s.resources.plan->pin_pp);
    r->mutable_plan()->set_pin_dp(s.resources.plan->pin_dp);
    r->mutable_plan()->set_pin_schedule(s.resources.plan->pin_schedule);
    r->mutable_plan()->set_pin_micro_batches(s.resources.plan->pin_micro_batches);
  }
  p->set_priority(s.priority);
  p->mutable_retry()->set_max_retries(s.retry.max_retries);
  p->set_launcher(static_cast<v1::Launcher>(static_cast<int>(s.launcher)));
}

void ToProto(const RankPlacement& r, v1::RankPlacement* p) {
  p->set_rank(r.rank);
  p->set_node_id(r.node_id);
  p->set_local_rank(r.local_rank);
}

void ToProto(const Job& j, v1::Job* p) {
  p->set_id(j.id);
  ToProto(j.spec, p->mutable_spec());
  p->set_state(static_cast<v1::JobState>(static_cast<int>(j.state)));
  p->set_reason(j.reason);
  p->set_attempt(j.attempt);
  p->set_submit_time_ms(j.submit_time_ms);
  p->set_start_time_ms(j.start_time_ms);
  p->set_end_time_ms(j.end_time_ms);
  for (const auto& r : j.placement) ToProto(r, p->add_placement());
  for (const auto& r : j.ranks) {
    auto* rs = p->add_ranks();
    rs->set_rank(r.rank);
    rs->set_node_id(r.node_id);
    rs->set_state(std::string(RankRunStateName(r.state)));
    rs->set_exit_code(r.exit_code);
    rs->set_log_tail(r.log_tail);
  }
  p->set_store_url(j.store_url);  // the job secret is never returned to clients
  p->set_plan_json(j.plan_json);
}

void ToProto(const JobEvent& e, v1::JobEvent* p) {
  p->set_job_id(e.job_id);
  p->set_seq(e.seq);
  p->set_time_ms(e.time_ms);
  p->set_kind(e.kind == EventKind::kStateChange ? v1::JobEvent::STATE_CHANGE
                                                : v1::JobEvent::RANK_EVENT);
  p->set_state(static_cast<v1::JobState>(static_cast<int>(e.state)));
  p->set_message(e.message);
  p->set_attempt(e.attempt);
  p->set_rank(e.rank);
  p->set_node_id(e.node_id);
  p->set_exit_code(e.exit_code);
  p->set_log_tail(e.log_tail);
}

void ToProto(const Node& n, v1::NodeInfo* p) {
  p->set_node_id(n.node_id);
  p->set_host_id(n.host_id);
  p->set_switch_id(n.switch_id);
  p->set_address(n.address);
  p->set_slots(n.slots);
  p->set_memory_bytes(n.memory_bytes);
  p->set_state(n.state == NodeState::kReady ? v1::NODE_READY : v1::NODE_LOST);
  p->set_incarnation(n.incarnation);
  p->set_used_slots(n.used_slots);
  p->set_last_heartbeat_ms(n.last_heartbeat_ms);
  p->set_reason(n.reason);
}

// "host:port" where port may be 0 (pick one); "[v6]:port" too.
Result<HostPort> ParseListen(const std::string& text, const char* what) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return InvalidArgumentError(std::string(what) + ": '" + text + "' is not host:port");
  }
  int64_t port;
  if (!ParseInt(std::string_view(text).substr(colon + 1), &port) || port < 0 || port > 65535) {
    return InvalidArgumentError(std::string(what) + ": '" + text + "' has no port in 0..65535");
  }
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return HostPort{host, static_cast<int>(port)};
}

}  // namespace

class SchedulerServiceImpl final : public v1::Scheduler::Service {
 public:
  SchedulerServiceImpl(SchedulerCore& core, std::string token, std::atomic<bool>& stop,
                       const LaunchOptions* launch)
      : core_(core), token_(std::move(token)), stop_(stop), launch_(launch) {}

  grpc::Status SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                         v1::SubmitJobResponse* resp) override {
    if (auto s = Auth(ctx); !s.ok()) return s;
    if (!req->has_spec()) return Bad("spec: missing");
    auto job = core_.Submit(FromProto(req->spec()));
    if (!job.ok()) return ToGrpc(job.status());
    ToProto(*job, resp->mutable_job());
    return grpc::Status::OK;
  }

  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req,
                      v1::GetJobResponse* resp) override {
    if (auto s = Auth(ctx); !s.ok()) return s;
    std::vector<JobEvent> events;
    auto job = core_.GetJob(req->job_id(), &events);
    if (!job.ok()) return ToGrpc(job.status());
    ToProto(*job, resp->mutable_job());
    for (const auto& e : events) ToProto(e, resp->add_events());
    if (req->launch_preview()) resp->set_launch_preview(Preview(*job));
    return grpc::Status::OK;
  }

  grpc::Status ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                        v1::ListJobsResponse* resp) override {
    if (auto s = Auth(ctx); !s.ok()) return s;
    ListQuery q;
    for (int i = 0; i < req->states_size(); ++i) {
      int st = req->states(i);
      if (st < 1 || st > 6) {
        return Bad("states[" + std::to_string(i) + "]: " + std::to_string(st) +
                   " is not a job state");
      }
      q.states.push_back(static_cast<JobState>(st));
    }
    q.name_prefix = req->name_prefix();
    q.page_size = req->page_size();
    q.page_token = req->page_token();
    auto page = core_.ListJobs(q);
    if (!page.ok()) return ToGrpc(page.status());
    for (const auto& j : page->jobs) ToProto(j, resp->add_jobs());
    resp->set_next_page_token(page->next_page_token);
    return grpc::Status::OK;
  }

  grpc::Status CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req,
                         v1::CancelJobResponse* resp) override {
    if (auto s = Auth(ctx); !s.ok()) return s;
    auto job = core_.Cancel(req->job_id(), req->reason());
    if (!job.ok()) return ToGrpc(job.status());
    ToProto(*job, resp->mutable_job());
    return grpc::Status::OK;
  }

  grpc::Status WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    if (auto s = Auth(ctx); !s.ok()) return s;
    int64_t after = req->after_seq();
    const auto call_deadline = ctx->deadline();
    while (true) {
      if (ctx->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
      if (stop_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "scheduler shutting down");
      // Wake at least every 200 ms to notice a cancelled call or a shutdown.
      auto slice = std::chrono::system_clock::now() + std::chrono::milliseconds(200);
      auto wait = std::min(slice, call_deadline);
      Deadline d = Deadline::After(std::chrono::duration_cast<std::chrono::nanoseconds>(
          wait - std::chrono::system_clock::now()));
      bool finished = false;
      auto events = core_.WaitEvents(req->job_id(), after, d, &finished);
      if (!events.ok()) return ToGrpc(events.status());
      for (const JobEvent& e : *events) {
        v1::JobEvent pe;
        ToProto(e, &pe);
        if (!writer->Write(pe)) {
          return grpc::Status(grpc::StatusCode::CANCELLED, "watcher went away");
        }
        after = e.seq;
      }
      if (finished) return grpc::Status::OK;
      if (std::chrono::system_clock::now() >= call_deadline) {
        return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                            "watch deadline passed before job " + req->job_id() + " finished");
      }
    }
  }

  grpc::Status PlanJob(grpc::ServerContext* ctx, const v1::PlanJobRequest* req,
                       v1::PlanJobResponse* resp) override {
    if (auto s = Auth(ctx); !s.ok()) return s;
    if (!req->has_spec()) return Bad("spec: missing");
    auto plan = core_.Plan(FromProto(req->spec()));
    if (!plan.ok()) return ToGrpc(plan.status());
    resp->set_world_size(plan->world_size);
    for (const auto& r : plan->placement.ranks) ToProto(r, resp->add_placement());
    resp->set_plan_json(plan->plan_json);
    resp->set_note(plan->note);
    resp->set_placement_time_us(plan->placement_time_us);
    if (!plan->placement.ranks.empty()) {
      Job job;
      job.spec = FromProto(req->spec());
      job.world_size = plan->world_size;
      job.placement = plan->placement.ranks;
      resp->set_launch_preview(Preview(job));
    }
    return grpc::Status::OK;
  }

  grpc::Status RegisterNode(grpc::ServerContext* ctx, const v1::RegisterNodeRequest* req,
                            v1::RegisterNodeResponse* resp) override {
    if (auto s = Auth(ctx); !s.ok()) return s;
    if (!req->has_node()) return Bad("node: missing");
    const auto& p = req->node();
    Node n;
    n.node_id = p.node_id();
    n.host_id = p.host_id();
    n.switch_id = p.switch_id();
    n.address = p.address();
    n.slots = p.slots();
    n.memory_bytes = p.memory_bytes();
    auto inc = core_.RegisterNode(n);
    if (!inc.ok()) return ToGrpc(inc.status());
    resp->set_incarnation(*inc);
    resp->set_heartbeat_interval_ms(core_.heartbeat_interval_ms());
    WEFT_LOG(INFO) << "node " << n.node_id << " registered (incarnation " << *inc << ", " << n.slots
                   << " slots, switch " << n.switch_id << ")";
    return grpc::Status::OK;
  }

  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override {
    if (auto s = Auth(ctx); !s.ok()) return s;
    std::vector<TaskReport> tasks;
    for (const auto& t : req->tasks()) {
      tasks.push_back(TaskReport{t.job_id(), t.attempt(), t.rank(),
                                 t.state() == v1::TaskStatus::EXITED, t.exit_code(), t.log_tail()});
    }
    std::vector<StoreReport> stores;
    for (const auto& s : req->stores()) stores.push_back({s.job_id(), s.attempt(), s.url()});
    auto assignments = core_.Heartbeat(req->node_id(), req->incarnation(), tasks, stores);
    if (!assignments.ok()) return ToGrpc(assignments.status());
    for (const Assignment& a : *assignments) {
      auto* p = resp->add_assignments();
      p->set_job_id(a.job_id);
      p->set_attempt(a.attempt);
      p->set_world_size(a.world_size);
      for (const auto& r : a.ranks) ToProto(r, p->add_ranks());
      p->set_local_size(a.local_size);
      for (const auto& s : a.argv) p->add_argv(s);
      for (const auto& s : a.env) p->add_env(s);
      p->set_job_secret(a.job_secret);
      p->set_store_url(a.store_url);
      p->set_serve_store(a.serve_store);
    }
    resp->set_heartbeat_interval_ms(core_.heartbeat_interval_ms());
    return grpc::Status::OK;
  }

  grpc::Status GetCluster(grpc::ServerContext* ctx, const v1::GetClusterRequest*,
                          v1::GetClusterResponse* resp) override {
    if (auto s = Auth(ctx); !s.ok()) return s;
    ClusterView v = core_.Cluster();
    for (const auto& n : v.nodes) ToProto(n, resp->add_nodes());
    resp->set_pending_jobs(v.pending_jobs);
    resp->set_running_jobs(v.running_jobs);
    return grpc::Status::OK;
  }

 private:
  // The launch preview of an mpirun or Kubernetes job ("" for agents jobs, jobs not placed, or
  // without launch options); a rendering error becomes the preview's text.
  std::string Preview(const Job& job) {
    if (!launch_ || job.spec.launcher == Launcher::kAgents || job.placement.empty()) return "";
    ClusterView v = core_.Cluster();
    auto p = LaunchPreview(*launch_, job, v.nodes);
    return p.ok() ? *p : "# no preview: " + p.status().message() + "\n";
  }

  static grpc::Status Bad(std::string msg) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::move(msg));
  }

  grpc::Status Auth(grpc::ServerContext* ctx) const {
    const auto& md = ctx->client_metadata();
    auto it = md.find("authorization");
    if (it == md.end()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "authorization: missing; send 'authorization: Bearer <token>'");
    }
    std::string_view v(it->second.data(), it->second.size());
    constexpr std::string_view kBearer = "Bearer ";
    if (v.substr(0, kBearer.size()) != kBearer || !SameSecret(v.substr(kBearer.size()), token_)) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "authorization: bearer token rejected");
    }
    return grpc::Status::OK;
  }

  SchedulerCore& core_;
  std::string token_;
  std::atomic<bool>& stop_;
  const LaunchOptions* launch_;
};

Result<std::unique_ptr<SchedulerServer>> SchedulerServer::Start(SchedulerCore& core,
                                                                ServiceOptions options) {
  if (options.token.empty()) {
    return InvalidArgumentError("token: missing; the scheduler refuses to serve without one");
  }
  if (options.max_message_bytes < 1024) {
    return InvalidArgumentError("max_message_bytes: " + std::to_string(options.max_message_bytes) +
                                " is below 1024");
  }
  WEFT_ASSIGN_OR_RETURN(HostPort listen, ParseListen(options.listen, "listen"));
  std::unique_ptr<SchedulerServer> s(new SchedulerServer(core));
  s->service_ =
      std::make_unique<SchedulerServiceImpl>(core, options.token, s->stop_, options.launch);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen.ToString(), grpc::InsecureServerCredentials(), &s->port_);
  builder.RegisterService(s->service_.get());
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(64 << 20);
  s->server_ = builder.BuildAndStart();
  if (!s->server_ || s->port_ == 0) {
    return UnavailableError("listen: cannot serve gRPC on " + options.listen);
  }
  if (auto* health = s->server_->GetHealthCheckService()) {
    health->SetServingStatus("weft.scheduler.v1.Scheduler", true);
    health->SetServingStatus("", true);
  }
  if (!options.metrics_listen.empty()) {
    WEFT_ASSIGN_OR_RETURN(HostPort m, ParseListen(options.metrics_listen, "metrics_listen"));
    WEFT_ASSIGN_OR_RETURN(s->metrics_, HttpMetricsServer::Start(
                                           m.host, m.port, [&core] { return core.MetricsText(); }));
  }
  const int tick_ms = options.tick_ms;
  SchedulerServer* raw = s.get();
  s->ticker_ = std::thread([raw, tick_ms] {
    bool was_healthy = true;
    while (!raw->stop_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(tick_ms));
      raw->core_.Tick();
      bool healthy = raw->core_.healthy();
      if (healthy != was_healthy) {
        if (auto* health = raw->server_->GetHealthCheckService()) {
          health->SetServingStatus("weft.scheduler.v1.Scheduler", healthy);
          health->SetServingStatus("", healthy);
        }
        was_healthy = healthy;
      }
    }
  });
  return s;
}

SchedulerServer::SchedulerServer(SchedulerCore& core) : core_(core) {}

int SchedulerServer::metrics_port() const { return metrics_ ? metrics_->port() : 0; }

void SchedulerServer::Shutdown() {
  if (stop_.exchange(true)) return;
  if (ticker_.joinable()) ticker_.join();
  core_.Shutdown();  // wakes WatchJob handlers so server shutdown does not wait on them
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  metrics_.reset();
}

SchedulerServer::~SchedulerServer() { Shutdown(); }

}  // namespace weft::scheduler
