#include "transport/transport.h"

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

}  // namespace weft::transport
