// Element-wise reduction kernels used by every collective algorithm. They are written so the
// compiler vectorises them (and use F16C for half where the CPU has it); f16 and bf16 are computed
// in f32 per element and rounded to nearest-even, so results do not depend on vector width.
#pragma once

#include <cstddef>
#include <cstring>

#include "base/dtype.h"

namespace weft {

// dst[i] = a[i] op b[i] for i < count. dst may alias a or b exactly (not partially). kAvg reduces
// as kSum; the caller finishes it with DivideByCount(). Integer sum/prod wrap around.
// dtype and op must be valid (checked by the caller).
void ReduceInto(DType dtype, ReduceOp op, void* dst, const void* a, const void* b, size_t count);

// buf[i] /= divisor, the last step of kAvg (integers divide with truncation toward zero).
void DivideByCount(DType dtype, void* buf, size_t count, int divisor);

// memcpy with non-temporal (streaming) stores where the CPU has them: the destination's lines are
// written to memory without first being read into the cache (no read-for-ownership), and without
// evicting what the cache holds. For large destinations the caller does not read back soon (an
// operation's output, beyond the cache). Call StreamingCopyFence() before another thread may
// read what was copied.
void StreamingCopy(void* dst, const void* src, size_t bytes);
void StreamingCopyFence();
// StreamingCopy where `streaming`, else memcpy (the caller fences once at the end).
inline void CopyOut(bool streaming, void* dst, const void* src, size_t bytes) {
  if (streaming) {
    StreamingCopy(dst, src, bytes);
  } else if (bytes > 0) {
    std::memcpy(dst, src, bytes);
  }
}

}  // namespace weft
