// The scheduler client.
#include "scheduler/scheduler_client.h"

#include <grpcpp/grpcpp.h>

#include <chrono>

namespace weft::scheduler {

Status FromGrpcStatus(const grpc::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  return Status(static_cast<StatusCode>(static_cast<int>(s.error_code())),
                std::string(what) + ": " + s.error_message());
}

Result<std::unique_ptr<SchedulerClient>> SchedulerClient::Create(const std::string& address,
                                                                 std::string token,
                                                                 int max_message_bytes) {
  if (address.empty()) return InvalidArgumentError("scheduler address: empty");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(max_message_bytes);
  args.SetMaxSendMessageSize(max_message_bytes);
  // Reconnect quickly after a scheduler restart (the default backoff grows to two minutes). No
  // GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: it also caps each connect attempt, and on a loaded machine
  // 100 ms attempts were abandoned mid-handshake for seconds.
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  if (!channel) return InvalidArgumentError("scheduler address: cannot use '" + address + "'");
  return std::unique_ptr<SchedulerClient>(
      new SchedulerClient(address, std::move(token), v1::Scheduler::NewStub(channel)));
}

void SchedulerClient::Prepare(grpc::ClientContext* ctx, Deadline deadline) const {
  if (!token_.empty()) ctx->AddMetadata("authorization", "Bearer " + token_);
  if (!deadline.infinite()) {
    ctx->set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::duration_cast<std::chrono::system_clock::duration>(deadline.Remaining()));
  }
}

#define WEFT_SCHED_UNARY(Method)                                                       \
  Result<v1::Method##Response> SchedulerClient::Method(const v1::Method##Request& req, \
                                                       Deadline deadline) {            \
    grpc::ClientContext ctx;                                                           \
    Prepare(&ctx, deadline);                                                           \
    v1::Method##Response resp;                                                         \
    grpc::Status s = stub_->Method(&ctx, req, &resp);                                  \
    if (!s.ok()) return FromGrpcStatus(s, #Method " at " + address_);                  \
    return resp;                                                                       \
  }

WEFT_SCHED_UNARY(SubmitJob)
WEFT_SCHED_UNARY(GetJob)
WEFT_SCHED_UNARY(ListJobs)
WEFT_SCHED_UNARY(CancelJob)
WEFT_SCHED_UNARY(PlanJob)
WEFT_SCHED_UNARY(RegisterNode)
WEFT_SCHED_UNARY(Heartbeat)
WEFT_SCHED_UNARY(GetCluster)
#undef WEFT_SCHED_UNARY

Status SchedulerClient::WatchJob(const v1::WatchJobRequest& req, Deadline deadline,
                                 const std::function<bool(const v1::JobEvent&)>& on_event) {
  grpc::ClientContext ctx;
  Prepare(&ctx, deadline);
  auto reader = stub_->WatchJob(&ctx, req);
  v1::JobEvent ev;
  bool stopped = false;
  while (reader->Read(&ev)) {
    if (!on_event(ev)) {
      stopped = true;
      ctx.TryCancel();
      break;
    }
  }
  grpc::Status s = reader->Finish();
  if (stopped) return CancelledError("WatchJob: stopped by the caller");
  return FromGrpcStatus(s, "WatchJob at " + address_);
}

}  // namespace weft::scheduler
