// The gRPC face of the scheduler: weft.scheduler.v1.Scheduler as a thin adapter over
// SchedulerCore (conversion, bearer-token auth, deadlines, canonical codes), plus the standard
// health service, server reflection and the /metrics HTTP endpoint. scheduler/ only.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "base/status.h"
#include "scheduler/launch_backends.h"
#include "scheduler/scheduler_core.h"

namespace grpc {
class Server;
}

namespace weft {
class HttpMetricsServer;
}

namespace weft::scheduler {

class SchedulerServiceImpl;

struct ServiceOptions {
  std::string listen = "127.0.0.1:0";  // host:port; port 0 picks one (see port())
  std::string token;                   // required: clients send "authorization: Bearer <token>"
  int max_message_bytes = 4 << 20;     // larger requests fail with RESOURCE_EXHAUSTED
  std::string metrics_listen;          // host:port for GET /metrics; empty: no HTTP server
  int tick_ms = 200;                   // how often silent nodes are checked
  // Borrowed (must outlive the server): how mpirun and Kubernetes jobs are launched, for the
  // launch previews of PlanJob and GetJob. Null: no previews.
  const LaunchOptions* launch = nullptr;
};

// Owns the gRPC server, its service, the metrics HTTP server and the thread that calls
// core.Tick(). The core is borrowed and must outlive it. Shutdown() (or destruction) stops
// accepting calls, ends open WatchJob streams and joins every thread. Start returns
// InvalidArgument for a bad option (naming it) and Unavailable when it cannot bind.
class SchedulerServer {
 public:
  static Result<std::unique_ptr<SchedulerServer>> Start(SchedulerCore& core,
                                                        ServiceOptions options);
  ~SchedulerServer();
  SchedulerServer(const SchedulerServer&) = delete;
  SchedulerServer& operator=(const SchedulerServer&) = delete;

  int port() const { return port_; }
  int metrics_port() const;
  void Shutdown();

 private:
  explicit SchedulerServer(SchedulerCore& core);
  SchedulerCore& core_;
  std::unique_ptr<SchedulerServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<HttpMetricsServer> metrics_;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread ticker_;
};

}  // namespace weft::scheduler
