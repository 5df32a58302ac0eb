// NamedThread(): a std::thread whose name `top -H`, `ps -L`, gdb and /proc/<pid>/task/<tid>/comm
// show ("weft-tcp", "weft-worker"), so a user looking at a busy or stuck rank can tell weft's
// threads apart. Linux keeps at most 15 characters of a name.
#pragma once

#include <pthread.h>

#include <thread>
#include <utility>

namespace weft {

template <typename F>
std::thread NamedThread(const char* name, F&& body) {
  return std::thread([name, body = std::forward<F>(body)]() mutable {
    pthread_setname_np(pthread_self(), name);
    body();
  });
}

}  // namespace weft
