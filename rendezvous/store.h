// The rendezvous key-value store through which ranks find each other: the interface, an in-process
// store (threads-as-ranks tests), a prefix view (one namespace per communicator), and OpenStore()
// for "tcp://host:port" and "file:///dir" URLs. Sits above base, below transports' users.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/deadline.h"
#include "base/status.h"

namespace weft::rendezvous {

// A key-value store shared by the ranks of a job. Keys are written once in normal use (Set of an
// existing key overwrites). Implementations are thread-safe. Errors: DeadlineExceeded when a
// waited-for key does not appear in time (the message names the key), Unavailable when the
// store cannot be reached.
class Store {
 public:
  virtual ~Store() = default;
  virtual Status Set(std::string_view key, std::string_view value) = 0;
  // Waits until the key exists, then returns its value.
  virtual Result<std::string> Get(std::string_view key, Deadline deadline) = 0;
  // Atomically adds delta to the integer under key (absent = 0) and returns the new value.
  virtual Result<int64_t> Add(std::string_view key, int64_t delta) = 0;
  // True when the key exists now (does not wait).
  virtual Result<bool> Check(std::string_view key) = 0;
  virtual Status Delete(std::string_view key) = 0;
  // A description for error messages: "tcp://127.0.0.1:29500".
  virtual std::string Describe() const = 0;

  // Waits until every key exists.
  Status Wait(const std::vector<std::string>& keys, Deadline deadline);
  // A barrier of `world_size` participants on `name`: Add then wait for the count.
  Status Barrier(std::string_view name, int world_size, Deadline deadline);
};

// In-process store: ranks that are threads of one process share one. Thread-safe.
class HashStore : public Store {
 public:
  Status Set(std::string_view key, std::string_view value) override;
  Result<std::string> Get(std::string_view key, Deadline deadline) override;
  Result<int64_t> Add(std::string_view key, int64_t delta) override;
  Result<bool> Check(std::string_view key) override;
  Status Delete(std::string_view key) override;
  std::string Describe() const override { return "in-process store"; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string, std::less<>> data_;
};

// Prepends "<prefix>/" to every key of an underlying store, which must outlive it.
class PrefixStore : public Store {
 public:
  PrefixStore(std::string prefix, Store& base) : prefix_(std::move(prefix) + "/"), base_(base) {}
  Status Set(std::string_view key, std::string_view value) override {
    return base_.Set(prefix_ + std::string(key), value);
  }
  Result<std::string> Get(std::string_view key, Deadline deadline) override {
    return base_.Get(prefix_ + std::string(key), deadline);
  }
  Result<int64_t> Add(std::string_view key, int64_t delta) override {
    return base_.Add(prefix_ + std::string(key), delta);
  }
  Result<bool> Check(std::string_view key) override {
    return base_.Check(prefix_ + std::string(key));
  }
  Status Delete(std::string_view key) override { return base_.Delete(prefix_ + std::string(key)); }
  std::string Describe() const override { return base_.Describe(); }

 private:
  std::string prefix_;
  Store& base_;
};

// Opens "tcp://host:port" (a TcpStoreClient; `secret` authenticates) or "file:///dir" (a
// FileStore). The deadline bounds reaching a TCP store. InvalidArgument for other URLs.
Result<std::unique_ptr<Store>> OpenStore(std::string_view url, std::string_view secret,
                                         Deadline deadline);

}  // namespace weft::rendezvous
