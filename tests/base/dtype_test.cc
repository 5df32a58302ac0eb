#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "base/dtype.h"
#include "base/reduce_kernels.h"

namespace weft {
namespace {

// Reference f32 -> f16 via exhaustive nearest search over all 65536 halves would be slow per call;
// instead check against the exact rounding rule on the f64 value.
uint16_t SlowHalf(float f) {
  if (std::isnan(f)) return 0x7e00;
  double x = f;
  uint16_t best = 0;
  double best_err = std::numeric_limits<double>::infinity();
  bool sign = std::signbit(f);
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    double v = HalfToFloat(static_cast<uint16_t>(h));
    double err = std::fabs(std::fabs(x) - v);
    if (err < best_err || (err == best_err && (h & 1) == 0)) {
      best_err = err;
      best = static_cast<uint16_t>(h);
    }
  }
  // Beyond max half + half an ulp the result is infinity.
  if (std::fabs(x) >= 65520.0) best = 0x7c00;
  return static_cast<uint16_t>(best | (sign ? 0x8000 : 0));
}

TEST(DType, NamesParseAndSizes) {
  for (int i = 0; i < kNumDTypes; ++i) {
    DType d = static_cast<DType>(i);
    EXPECT_EQ(ParseDType(DTypeName(d)), d);
    EXPECT_GT(DTypeSize(d), 0u);
  }
  for (int i = 0; i < kNumReduceOps; ++i) {
    ReduceOp op = static_cast<ReduceOp>(i);
    EXPECT_EQ(ParseReduceOp(ReduceOpName(op)), op);
  }
  EXPECT_FALSE(ParseDType("float128").has_value());
  EXPECT_FALSE(IsValidDType(static_cast<DType>(99)));
}

TEST(DType, HalfRoundTripIsExactForAllHalves) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    uint16_t x = static_cast<uint16_t>(h);
    float f = HalfToFloat(x);
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToHalf(f), x) << std::hex << h;
  }
}

TEST(DType, HalfRoundsToNearestEven) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-70000.f, 70000.f);
  std::uniform_real_distribution<float> tiny(-1e-4f, 1e-4f);
  for (int i = 0; i < 300; ++i) {
    float f = (i % 2) ? dist(rng) : tiny(rng);
    EXPECT_EQ(FloatToHalf(f), SlowHalf(f)) << f;
  }
  // Ties: 1 + 2^-11 is halfway between 1 and 1+2^-10 -> rounds to even (1.0).
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
}

TEST(DType, BFloat16RoundsToNearestEven) {
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBFloat16(BitsToFloat(0x3f808000)), 0x3f80);  // tie -> even
  EXPECT_EQ(FloatToBFloat16(BitsToFloat(0x3f818000)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(FloatToBFloat16(BitsToFloat(0x3f808001)), 0x3f81);
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(std::nanf("")))));
}

template <typename T>
void CheckKernel(DType d) {
  constexpr size_t kN = 1003;  // odd: exercises vector tails
  std::vector<T> a(kN), b(kN), out(kN);
  for (size_t i = 0; i < kN; ++i) {
    a[i] = static_cast<T>(static_cast<int>(i % 7) - 3);
    b[i] = static_cast<T>(static_cast<int>(i % 5) - 2);
  }
  ReduceInto(d, ReduceOp::kSum, out.data(), a.data(), b.data(), kN);
  for (size_t i = 0; i < kN; ++i) EXPECT_EQ(out[i], static_cast<T>(a[i] + b[i]));
  ReduceInto(d, ReduceOp::kProd, out.data(), a.data(), b.data(), kN);
  for (size_t i = 0; i < kN; ++i) EXPECT_EQ(out[i], static_cast<T>(a[i] * b[i]));
  ReduceInto(d, ReduceOp::kMin, out.data(), a.data(), b.data(), kN);
  for (size_t i = 0; i < kN; ++i) EXPECT_EQ(out[i], std::min(a[i], b[i]));
  ReduceInto(d, ReduceOp::kMax, a.data(), a.data(), b.data(), kN);  // in place
  for (size_t i = 0; i < kN; ++i) EXPECT_EQ(a[i], std::max(static_cast<T>(static_cast<int>(i % 7) - 3), b[i]));
}

TEST(ReduceKernels, NativeTypes) {
  CheckKernel<float>(DType::kFloat32);
  CheckKernel<double>(DType::kFloat64);
  CheckKernel<int8_t>(DType::kInt8);
  CheckKernel<int32_t>(DType::kInt32);
  CheckKernel<int64_t>(DType::kInt64);
}

TEST(ReduceKernels, SixteenBitFloatsRoundPerElement) {
  constexpr size_t kN = 1001;
  for (DType d : {DType::kFloat16, DType::kBFloat16}) {
    auto to = d == DType::kFloat16 ? FloatToHalf : FloatToBFloat16;
    auto from = d == DType::kFloat16 ? HalfToFloat : BFloat16ToFloat;
    std::vector<uint16_t> a(kN), b(kN), out(kN);
    for (size_t i = 0; i < kN; ++i) {
      a[i] = to(0.1f * static_cast<float>(i) - 30.f);
      b[i] = to(1.0f / static_cast<float>(i + 1));
    }
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kProd, ReduceOp::kMin, ReduceOp::kMax}) {
      ReduceInto(d, op, out.data(), a.data(), b.data(), kN);
      for (size_t i = 0; i < kN; ++i) {
        float x = from(a[i]), y = from(b[i]), r;
        switch (op) {
          case ReduceOp::kSum: r = x + y; break;
          case ReduceOp::kProd: r = x * y; break;
          case ReduceOp::kMin: r = std::min(x, y); break;
          default: r = std::max(x, y); break;
        }
        ASSERT_EQ(out[i], to(r)) << "dtype " << DTypeName(d) << " op " << ReduceOpName(op) << " i " << i;
      }
    }
  }
}

TEST(ReduceKernels, IntegerWrapAndAverage) {
  int8_t a[2] = {127, -128}, b[2] = {1, -1}, out[2];
  ReduceInto(DType::kInt8, ReduceOp::kSum, out, a, b, 2);
  EXPECT_EQ(out[0], -128);
  EXPECT_EQ(out[1], 127);
  int32_t v[3] = {7, -7, 9};
  DivideByCount(DType::kInt32, v, 3, 2);
  EXPECT_EQ(v[0], 3);
  EXPECT_EQ(v[1], -3);
  EXPECT_EQ(v[2], 4);
  float f[1] = {1.0f};
  DivideByCount(DType::kFloat32, f, 1, 3);
  EXPECT_EQ(f[0], 1.0f / 3.0f);
}

}  // namespace
}  // namespace weft
