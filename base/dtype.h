// Data types and reduction operators shared by every layer, and the conversions between f32 and
// the 16-bit float formats (round to nearest, ties to even).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace weft {

enum class DType : int {
  kFloat32 = 0,
  kFloat64 = 1,
  kFloat16 = 2,
  kBFloat16 = 3,
  kInt8 = 4,
  kUint8 = 5,
  kInt32 = 6,
  kInt64 = 7,
};
inline constexpr int kNumDTypes = 8;

enum class ReduceOp : int { kSum = 0, kProd = 1, kMin = 2, kMax = 3, kAvg = 4 };
inline constexpr int kNumReduceOps = 5;

// Bytes per element; 0 for a value outside the enum. Inline: every operation's entry asks.
inline constexpr size_t DTypeSize(DType dtype) {
  constexpr size_t kSizes[kNumDTypes] = {4, 8, 2, 2, 1, 1, 4, 8};
  const auto i = static_cast<unsigned>(dtype);
  return i < static_cast<unsigned>(kNumDTypes) ? kSizes[i] : 0;
}
inline constexpr bool IsValidDType(DType dtype) { return DTypeSize(dtype) != 0; }
inline constexpr bool IsValidReduceOp(ReduceOp op) {
  return static_cast<unsigned>(op) < static_cast<unsigned>(kNumReduceOps);
}
bool IsFloatingPoint(DType dtype);
// nccl-tests' short names: "float", "double", "half", "bfloat16", "int8", "uint8", "int32", "int64".
std::string_view DTypeName(DType dtype);
std::string_view ReduceOpName(ReduceOp op);
// Accepts the names above and common aliases (f32, float32, fp16, f16, bf16, i32, int, ...).
std::optional<DType> ParseDType(std::string_view name);
std::optional<ReduceOp> ParseReduceOp(std::string_view name);

inline float BitsToFloat(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
inline uint32_t FloatToBits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

inline float HalfToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in f32.
    float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return BitsToFloat(FloatToBits(v) | sign);
  }
  if (exp == 31) return BitsToFloat(sign | 0x7f800000u | (mant << 13));
  return BitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
}

inline uint16_t FloatToHalf(float f) {
  uint32_t x = FloatToBits(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) {  // inf or NaN (NaN stays a quiet NaN)
    return static_cast<uint16_t>(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0));
  }
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to infinity
  if (a < 0x38800000u) {
    // Below the smallest normal half: adding 0.5 lines the f32 ulp up with the half subnormal
    // step (2^-24), so the FPU's own round-to-nearest-even does the rounding.
    float r = BitsToFloat(a) + 0.5f;
    return static_cast<uint16_t>(sign | (FloatToBits(r) - 0x3f000000u));
  }
  uint32_t odd = (a >> 13) & 1u;
  a += 0xc8000fffu + odd;  // rebias the exponent (127 -> 15) and round the 13 dropped bits
  return static_cast<uint16_t>(sign | (a >> 13));
}

inline float BFloat16ToFloat(uint16_t b) { return BitsToFloat(static_cast<uint32_t>(b) << 16); }

inline uint16_t FloatToBFloat16(float f) {
  uint32_t x = FloatToBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

}  // namespace weft
