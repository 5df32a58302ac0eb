// `weft run`: the local launcher, like `torchrun --standalone`. Starts a rendezvous store and a
// fresh job secret, spawns N ranks with their environment, prefixes each output line with its
// rank, forwards Ctrl-C/SIGTERM, and when a rank fails stops the rest and reports which rank
// failed and how. Sits in runtime/; depends on base and rendezvous only.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace weft::runtime {

struct LaunchOptions {
  int nprocs = 1;
  std::string transport;          // exported as WEFT_TRANSPORT when non-empty
  std::vector<std::string> argv;  // the program and its arguments
  bool prefix_output = true;      // "[rank N] " before each line
  int grace_ms = 5000;            // SIGTERM -> SIGKILL grace when stopping the other ranks
  std::vector<std::string> extra_env;  // "K=V" added to every rank
};

// Runs the job to completion. Returns the process exit code for `weft run`: 0 when every rank
// exited 0; otherwise non-zero, having printed which rank failed and how (exit code or signal).
int Launch(const LaunchOptions& options);

// Parses `weft run` arguments (everything after "run") and launches. Prints usage errors.
int RunCommand(const std::vector<std::string>& args);

}  // namespace weft::runtime
