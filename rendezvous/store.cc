#include "rendezvous/store.h"

#include "rendezvous/file_store.h"
#include "rendezvous/tcp_store.h"

namespace weft::rendezvous {

Status Store::Wait(const std::vector<std::string>& keys, Deadline deadline) {
  for (const auto& k : keys) {
    auto v = Get(k, deadline);
    if (!v.ok()) return v.status();
  }
  return Status::Ok();
}

Status Store::Barrier(std::string_view name, int world_size, Deadline deadline) {
  std::string key = "barrier/" + std::string(name);
  WEFT_ASSIGN_OR_RETURN(int64_t n, Add(key + "/count", 1));
  if (n == world_size) WEFT_RETURN_IF_ERROR(Set(key + "/done", "1"));
  auto done = Get(key + "/done", deadline);
  if (!done.ok()) {
    auto arrived = Add(key + "/count", 0);
    return DeadlineExceededError("barrier '" + std::string(name) + "' on " + Describe() + ": " +
                                 (arrived.ok() ? std::to_string(*arrived) : std::string("?")) +
                                 " of " + std::to_string(world_size) + " ranks arrived in time");
  }
  return Status::Ok();
}

Status HashStore::Set(std::string_view key, std::string_view value) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    data_[std::string(key)] = std::string(value);
  }
  cv_.notify_all();
  return Status::Ok();
}

Result<std::string> HashStore::Get(std::string_view key, Deadline deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    auto it = data_.find(key);
    if (it != data_.end()) return it->second;
    if (deadline.Expired()) {
      return DeadlineExceededError("key '" + std::string(key) + "' did not appear in the store");
    }
    cv_.wait_until(lock, deadline.infinite() ? Clock::now() + std::chrono::seconds(1)
                                             : deadline.when());
  }
}

Result<int64_t> HashStore::Add(std::string_view key, int64_t delta) {
  int64_t v = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto& cell = data_[std::string(key)];
    if (!cell.empty()) v = std::stoll(cell);
    v += delta;
    cell = std::to_string(v);
  }
  cv_.notify_all();
  return v;
}

Result<bool> HashStore::Check(std::string_view key) {
  std::lock_guard<std::mutex> lock(mu_);
  return data_.find(key) != data_.end();
}

Status HashStore::Delete(std::string_view key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = data_.find(key);
  if (it != data_.end()) data_.erase(it);
  return Status::Ok();
}

Result<std::unique_ptr<Store>> OpenStore(std::string_view url, std::string_view secret,
                                         Deadline deadline) {
  if (url.rfind("tcp://", 0) == 0) {
    WEFT_ASSIGN_OR_RETURN(HostPort addr, ParseHostPort(url.substr(6)));
    WEFT_ASSIGN_OR_RETURN(auto client, TcpStoreClient::Connect(addr, std::string(secret), deadline));
    return std::unique_ptr<Store>(std::move(client));
  }
  if (url.rfind("file://", 0) == 0) {
    WEFT_ASSIGN_OR_RETURN(auto fs, FileStore::Open(std::string(url.substr(7))));
    return std::unique_ptr<Store>(std::move(fs));
  }
  return InvalidArgumentError("store URL '" + std::string(url) +
                              "' is neither tcp://host:port nor file:///path");
}

}  // namespace weft::rendezvous
