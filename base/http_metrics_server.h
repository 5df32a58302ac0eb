// A small HTTP/1.0 server for Prometheus scrapes: GET /metrics answers with a document produced
// by a callback, GET /healthz with "ok". One thread, one request per connection, bounded reads.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "base/socket_util.h"
#include "base/status.h"

namespace weft {

// Owns its listening socket and thread; destruction stops and joins it. `render` is called on the
// server thread and must be thread-safe with respect to its owner.
class HttpMetricsServer {
 public:
  static Result<std::unique_ptr<HttpMetricsServer>> Start(const std::string& host, int port,
                                                          std::function<std::string()> render);
  ~HttpMetricsServer();
  HttpMetricsServer(const HttpMetricsServer&) = delete;
  HttpMetricsServer& operator=(const HttpMetricsServer&) = delete;
  int port() const { return port_; }

 private:
  HttpMetricsServer() = default;
  void Loop();
  void Serve(int fd);
  UniqueFd listen_;
  UniqueFd wake_[2];
  int port_ = 0;
  std::function<std::string()> render_;
  std::thread thread_;
};

}  // namespace weft
