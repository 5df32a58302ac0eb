#include "transport/transport.h"

#include <thread>

namespace weft::transport {
namespace {

class PlainRegion : public MemoryRegion {
 public:
  PlainRegion(void* data, size_t size) : data_(data), size_(size) {}
  void* data() const override { return data_; }
  size_t size() const override { return size_; }

 private:
  void* data_;
  size_t size_;
};

}  // namespace

Result<std::unique_ptr<MemoryRegion>> Transport::RegisterMemory(void* data, size_t size) {
  if (data == nullptr && size > 0) return InvalidArgumentError("RegisterMemory: null buffer");
  return std::unique_ptr<MemoryRegion>(new PlainRegion(data, size));
}

Result<RequestPtr> Endpoint::PostRecvReduce(void*, const void*, size_t, uint64_t, DType, ReduceOp) {
  return UnimplementedError("rank " + std::to_string(peer()) +
                            ": this transport cannot reduce a receive as it lands");
}

Result<Endpoint::Exchanged> Endpoint::Exchange(const void* send, void* recv, size_t size,
                                               uint64_t tag) {
  Exchanged out;
  WEFT_ASSIGN_OR_RETURN(out.recv, PostRecv(recv, size, tag));
  WEFT_ASSIGN_OR_RETURN(out.send, PostSend(send, size, tag));
  return out;
}

bool RanksFitCores(int local_ranks) {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return cores > 0 && local_ranks <= cores;
}

Status ConnectFailure(const std::string& who, const std::map<int, Status>& failures) {
  std::string ranks, details;
  StatusCode code = StatusCode::kDeadlineExceeded;
  for (const auto& [rank, s] : failures) {
    ranks += (ranks.empty() ? "" : ", ") + std::to_string(rank);
    details += (details.empty() ? "rank " : "; rank ") + std::to_string(rank) + ": " + s.message();
    if (s.code() != StatusCode::kDeadlineExceeded && code == StatusCode::kDeadlineExceeded) {
      code = s.code();
    }
  }
  return Status(code, who + ": Connect() failed; " + (failures.size() == 1 ? "rank " : "ranks ") +
                          ranks + " did not connect (" + details + ")");
}

}  // namespace weft::transport
