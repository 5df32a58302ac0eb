// CpuRelax(): the spin-wait hint (x86 `pause`, Arm `yield`): tells the core this is a busy-wait
// loop, so it saves power and yields pipeline resources to its SMT sibling; a no-op elsewhere.
#pragma once

namespace weft {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace weft
