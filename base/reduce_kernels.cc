#include "base/reduce_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace weft {
namespace {

template <typename T>
struct Sum {
  static T Apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      using U = std::make_unsigned_t<T>;
      return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));  // wrap, no UB
    } else {
      return a + b;
    }
  }
};
template <typename T>
struct Prod {
  static T Apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      using U = std::make_unsigned_t<T>;
      using W = std::conditional_t<(sizeof(T) < sizeof(unsigned)), unsigned, U>;
      return static_cast<T>(static_cast<W>(static_cast<U>(a)) * static_cast<W>(static_cast<U>(b)));
    } else {
      return a * b;
    }
  }
};
template <typename T>
struct Min {
  static T Apply(T a, T b) { return b < a ? b : a; }
};
template <typename T>
struct Max {
  static T Apply(T a, T b) { return a < b ? b : a; }
};

template <typename T, template <typename> class Op>
void Loop(void* dst, const void* a, const void* b, size_t n) {
  T* d = static_cast<T*>(dst);
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) d[i] = Op<T>::Apply(x[i], y[i]);
}

template <typename T>
void Dispatch(ReduceOp op, void* dst, const void* a, const void* b, size_t n) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: Loop<T, Sum>(dst, a, b, n); return;
    case ReduceOp::kProd: Loop<T, Prod>(dst, a, b, n); return;
    case ReduceOp::kMin: Loop<T, Min>(dst, a, b, n); return;
    case ReduceOp::kMax: Loop<T, Max>(dst, a, b, n); return;
  }
}

// 16-bit floats: widen to f32, apply, round back. Portable path first.
template <uint16_t (*ToBits)(float), float (*FromBits)(uint16_t), template <typename> class Op>
void Loop16(void* dst, const void* a, const void* b, size_t n) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  const uint16_t* x = static_cast<const uint16_t*>(a);
  const uint16_t* y = static_cast<const uint16_t*>(b);
  for (size_t i = 0; i < n; ++i) d[i] = ToBits(Op<float>::Apply(FromBits(x[i]), FromBits(y[i])));
}

template <uint16_t (*ToBits)(float), float (*FromBits)(uint16_t)>
void Dispatch16(ReduceOp op, void* dst, const void* a, const void* b, size_t n) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: Loop16<ToBits, FromBits, Sum>(dst, a, b, n); return;
    case ReduceOp::kProd: Loop16<ToBits, FromBits, Prod>(dst, a, b, n); return;
    case ReduceOp::kMin: Loop16<ToBits, FromBits, Min>(dst, a, b, n); return;
    case ReduceOp::kMax: Loop16<ToBits, FromBits, Max>(dst, a, b, n); return;
  }
}

#if defined(__x86_64__)
// F16C converts eight halves per instruction with the same nearest-even rounding as FloatToHalf.
__attribute__((target("avx,f16c"))) size_t HalfF16c(ReduceOp op, void* dst, const void* a,
                                                    const void* b, size_t n) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  const uint16_t* x = static_cast<const uint16_t*>(a);
  const uint16_t* y = static_cast<const uint16_t*>(b);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 vx = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    __m256 vy = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(y + i)));
    __m256 r;
    switch (op) {
      case ReduceOp::kProd: r = _mm256_mul_ps(vx, vy); break;
      case ReduceOp::kMin: r = _mm256_min_ps(vy, vx); break;  // vy < vx ? vy : vx
      case ReduceOp::kMax: r = _mm256_max_ps(vy, vx); break;  // vx < vy ? vy : vx
      default: r = _mm256_add_ps(vx, vy); break;
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i),
                     _mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  return i;
}
bool HaveF16c() {
  static const bool have = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  return have;
}
#endif

template <typename T>
void DivideLoop(void* buf, size_t n, int divisor) {
  T* p = static_cast<T*>(buf);
  if constexpr (std::is_integral_v<T>) {
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<T>(p[i] / static_cast<T>(divisor));
  } else {
    const T div = static_cast<T>(divisor);
    for (size_t i = 0; i < n; ++i) p[i] = p[i] / div;
  }
}

}  // namespace

void ReduceInto(DType dtype, ReduceOp op, void* dst, const void* a, const void* b, size_t n) {
  switch (dtype) {
    case DType::kFloat32: Dispatch<float>(op, dst, a, b, n); return;
    case DType::kFloat64: Dispatch<double>(op, dst, a, b, n); return;
    case DType::kInt8: Dispatch<int8_t>(op, dst, a, b, n); return;
    case DType::kUint8: Dispatch<uint8_t>(op, dst, a, b, n); return;
    case DType::kInt32: Dispatch<int32_t>(op, dst, a, b, n); return;
    case DType::kInt64: Dispatch<int64_t>(op, dst, a, b, n); return;
    case DType::kFloat16: {
      size_t done = 0;
#if defined(__x86_64__)
      if (HaveF16c()) done = HalfF16c(op, dst, a, b, n);
#endif
      Dispatch16<FloatToHalf, HalfToFloat>(op, static_cast<uint16_t*>(dst) + done,
                                           static_cast<const uint16_t*>(a) + done,
                                           static_cast<const uint16_t*>(b) + done, n - done);
      return;
    }
    case DType::kBFloat16:
      Dispatch16<FloatToBFloat16, BFloat16ToFloat>(op, dst, a, b, n);
      return;
  }
}

void DivideByCount(DType dtype, void* buf, size_t n, int divisor) {
  switch (dtype) {
    case DType::kFloat32: DivideLoop<float>(buf, n, divisor); return;
    case DType::kFloat64: DivideLoop<double>(buf, n, divisor); return;
    case DType::kInt8: DivideLoop<int8_t>(buf, n, divisor); return;
    case DType::kUint8: DivideLoop<uint8_t>(buf, n, divisor); return;
    case DType::kInt32: DivideLoop<int32_t>(buf, n, divisor); return;
    case DType::kInt64: DivideLoop<int64_t>(buf, n, divisor); return;
    case DType::kFloat16: {
      uint16_t* p = static_cast<uint16_t*>(buf);
      for (size_t i = 0; i < n; ++i) p[i] = FloatToHalf(HalfToFloat(p[i]) / static_cast<float>(divisor));
      return;
    }
    case DType::kBFloat16: {
      uint16_t* p = static_cast<uint16_t*>(buf);
      for (size_t i = 0; i < n; ++i) {
        p[i] = FloatToBFloat16(BFloat16ToFloat(p[i]) / static_cast<float>(divisor));
      }
      return;
    }
  }
}

void StreamingCopy(void* dst, const void* src, size_t bytes) {
#if defined(__x86_64__)
  auto* d = static_cast<uint8_t*>(dst);
  const auto* s = static_cast<const uint8_t*>(src);
  // Up to the first 16-byte boundary of the destination the ordinary way, then 64 bytes (a cache
  // line) per iteration with streaming stores, the tail the ordinary way.
  const size_t head = std::min(bytes, (16 - reinterpret_cast<uintptr_t>(d) % 16) % 16);
  std::memcpy(d, s, head);
  d += head;
  s += head;
  bytes -= head;
  for (; bytes >= 64; bytes -= 64, d += 64, s += 64) {
    __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16));
    __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 32));
    __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(d), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 48), e);
  }
  std::memcpy(d, s, bytes);
#else
  std::memcpy(dst, src, bytes);
#endif
}

void StreamingCopyFence() {
#if defined(__x86_64__)
  _mm_sfence();
#endif
}

}  // namespace weft
