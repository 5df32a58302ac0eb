#include "runtime/launcher.h"

#include <cstdio>

namespace weft::runtime {

int Launch(const LaunchOptions& options) {
  std::fprintf(stderr, "weft run: not implemented yet\n");
  return 1;
}

int RunCommand(const std::vector<std::string>& args) { return Launch(LaunchOptions{}); }

}  // namespace weft::runtime
