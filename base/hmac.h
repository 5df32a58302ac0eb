// SHA-256 and HMAC-SHA256 (FIPS 180-4, RFC 2104), random bytes from the kernel, and a
// constant-time compare: the pieces weft's connection authentication is built from.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace weft {

using Digest256 = std::array<uint8_t, 32>;

// Incremental SHA-256. Not thread-safe; cheap to copy.
class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t len);
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  Digest256 Finish();

 private:
  void Block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

Digest256 Sha256Of(std::string_view data);
Digest256 HmacSha256(std::string_view key, std::string_view message);
// True when the two byte strings are equal; time depends only on the length.
bool ConstantTimeEqual(const void* a, const void* b, size_t len);
// Fills buf from getrandom(2).
Status RandomBytes(void* buf, size_t len);
// A fresh random secret as 64 hex characters.
Result<std::string> NewSecretHex();
std::string ToHex(const void* data, size_t len);

}  // namespace weft
