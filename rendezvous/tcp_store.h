// The TCP rendezvous store: a server (run by `weft run`, by rank 0 under torchrun-style
// variables, or by GetUniqueId) and its client. Every connection passes the job-secret handshake
// (base/auth_handshake.h) before any request is read.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "base/socket_util.h"
#include "rendezvous/store.h"

namespace weft::rendezvous {

// Serves a store on one background thread (poll loop). Owns its listening socket and thread;
// destruction stops and joins it. Connections that fail the handshake or send malformed frames
// are closed and logged; they never affect other clients.
class TcpStoreServer {
 public:
  // Binds host:port (port 0 picks one; see port()). An empty secret accepts any client that
  // speaks the protocol.
  static Result<std::unique_ptr<TcpStoreServer>> Start(const std::string& host, int port,
                                                       std::string secret);
  ~TcpStoreServer();
  TcpStoreServer(const TcpStoreServer&) = delete;
  TcpStoreServer& operator=(const TcpStoreServer&) = delete;

  int port() const { return port_; }
  // Number of connections refused so far (failed handshake or malformed data); for tests.
  int refused_connections() const;

 private:
  struct Impl;
  TcpStoreServer() = default;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::thread thread_;
};

// A client connection. Thread-safe: one request at a time under a mutex.
class TcpStoreClient : public Store {
 public:
  // Connects (retrying until the deadline: the server may start later) and authenticates.
  static Result<std::unique_ptr<TcpStoreClient>> Connect(const HostPort& addr, std::string secret,
                                                         Deadline deadline);
  Status Set(std::string_view key, std::string_view value) override;
  Result<std::string> Get(std::string_view key, Deadline deadline) override;
  Result<int64_t> Add(std::string_view key, int64_t delta) override;
  Result<bool> Check(std::string_view key) override;
  Status Delete(std::string_view key) override;
  std::string Describe() const override { return "tcp://" + addr_.ToString(); }

 private:
  TcpStoreClient(HostPort addr, UniqueFd fd) : addr_(std::move(addr)), fd_(std::move(fd)) {}
  struct Reply {
    uint8_t status = 0;
    std::string payload;
  };
  // Sends one request frame and reads the reply.
  Result<Reply> RoundTrip(const std::string& frame, Deadline deadline);

  HostPort addr_;
  std::mutex mu_;
  UniqueFd fd_;
};

}  // namespace weft::rendezvous
