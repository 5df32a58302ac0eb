// A client of weft.scheduler.v1.Scheduler for the CLI, node agents and tests: adds the bearer
// token and a deadline to every call and turns gRPC statuses into weft Status values.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "base/deadline.h"
#include "base/status.h"
#include "scheduler/proto/scheduler.grpc.pb.h"

namespace weft::scheduler {

// Thread-safe (gRPC stubs are). Every call takes a deadline; a call past it fails with
// DeadlineExceeded; an unreachable scheduler gives Unavailable; server errors keep their code and
// message.
class SchedulerClient {
 public:
  // `address` is host:port. Does not connect yet (gRPC connects on the first call).
  static Result<std::unique_ptr<SchedulerClient>> Create(const std::string& address,
                                                         std::string token,
                                                         int max_message_bytes = 64 << 20);

  Result<v1::SubmitJobResponse> SubmitJob(const v1::SubmitJobRequest& req, Deadline deadline);
  Result<v1::GetJobResponse> GetJob(const v1::GetJobRequest& req, Deadline deadline);
  Result<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& req, Deadline deadline);
  Result<v1::CancelJobResponse> CancelJob(const v1::CancelJobRequest& req, Deadline deadline);
  Result<v1::PlanJobResponse> PlanJob(const v1::PlanJobRequest& req, Deadline deadline);
  Result<v1::RegisterNodeResponse> RegisterNode(const v1::RegisterNodeRequest& req,
                                                Deadline deadline);
  Result<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& req, Deadline deadline);
  Result<v1::GetClusterResponse> GetCluster(const v1::GetClusterRequest& req, Deadline deadline);
  // Streams the job's events to `on_event` until the job finishes (OK), `on_event` returns false
  // (Cancelled), or the deadline passes (DeadlineExceeded).
  Status WatchJob(const v1::WatchJobRequest& req, Deadline deadline,
                  const std::function<bool(const v1::JobEvent&)>& on_event);

  const std::string& address() const { return address_; }

 private:
  SchedulerClient(std::string address, std::string token, std::unique_ptr<v1::Scheduler::Stub> stub)
      : address_(std::move(address)), token_(std::move(token)), stub_(std::move(stub)) {}
  void Prepare(grpc::ClientContext* ctx, Deadline deadline) const;

  std::string address_;
  std::string token_;
  std::unique_ptr<v1::Scheduler::Stub> stub_;
};

// gRPC status -> weft Status (codes map one to one); `what` prefixes the message.
Status FromGrpcStatus(const grpc::Status& s, std::string_view what);

}  // namespace weft::scheduler
