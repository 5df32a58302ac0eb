// NameThisThread(): gives the calling thread a name that `top -H`, `ps -L`, gdb and
// /proc/<pid>/task/<tid>/comm show ("weft-tcp", "weft-worker"), so a user looking at a busy or
// stuck rank can tell weft's threads apart. Linux keeps at most 15 characters.
#pragma once

#include <pthread.h>

namespace weft {

inline void NameThisThread(const char* name) { pthread_setname_np(pthread_self(), name); }

}  // namespace weft
