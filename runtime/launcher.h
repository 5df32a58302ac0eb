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
  int nprocs = 1;                      // 1..kMaxLaunchProcs
  std::string transport;               // exported as WEFT_TRANSPORT when non-empty
  std::vector<std::string> argv;       // the program and its arguments
  bool prefix_output = true;           // "[rank N] " before each line
  int grace_ms = 5000;                 // SIGTERM -> SIGKILL grace when stopping the other ranks
  std::vector<std::string> extra_env;  // "K=V" added to every rank
  // CPU binding: "core" pins rank r to allowed CPU r mod #CPUs (round-robin), "none" leaves the
  // kernel free; "auto" binds as "core" where the ranks fit the CPUs (as mpirun binds) or are a
  // whole multiple of them (the kernel's own placement was measured uneven there), and leaves
  // other counts to the kernel (launcher.cc has the measurements).
  std::string bind = "auto";
};

inline constexpr int kMaxLaunchProcs = 1024;
// Exit code for bad arguments (options that do not parse or do not validate).
inline constexpr int kLaunchUsageExit = 2;

// Runs the job to completion. Returns the process exit code for `weft run`:
//   0            every rank exited 0;
//   C / 128+S    the first rank to fail exited with code C or was killed by signal S (printed as
//                "weft run: rank R (pid P) exited with code C" or "... was killed by signal S
//                (SIGNAME)"); the other ranks were sent SIGTERM, then SIGKILL after grace_ms;
//   128+S        the launcher got signal S (SIGINT, SIGTERM, SIGHUP, SIGQUIT), forwarded it to
//                every rank's process group, and sent SIGKILL after grace_ms or on a second one;
//   126 / 127    the program could not be executed (127: not found);
//   2            invalid options; 1 other setup errors (store, pipes, fork).
//
// Each rank runs in its own process group with PR_SET_PDEATHSIG(SIGKILL), the parent's
// environment plus WEFT_RANK, WEFT_WORLD_SIZE, WEFT_LOCAL_RANK, WEFT_LOCAL_SIZE, WEFT_STORE,
// WEFT_JOB_SECRET, WEFT_JOB_ID, WEFT_TRANSPORT (when set), RANK, WORLD_SIZE, LOCAL_RANK and
// LOCAL_WORLD_SIZE. Rank 0's stdin is the launcher's unless that is a terminal (a rank outside
// the foreground process group would stop on reading it); other ranks read /dev/null.
// Each rank's stdout and stderr lines go to the launcher's stdout and stderr, whole lines only.
//
// Every wait is bounded by the ranks' own lifetimes plus grace_ms and fixed reaping and draining
// limits; all ranks are reaped before it returns. Not reentrant: call it from one thread at a
// time. While it runs it blocks the handled signals (and SIGCHLD, SIGPIPE) in the calling thread
// and reads them from a signalfd; other threads of the process must block them too or they may
// take the signals instead. SIGCHLD's disposition is set to default for the duration.
int Launch(const LaunchOptions& options);

// Parses `weft run` arguments (everything after "run") and launches. Prints usage errors to
// stderr and returns kLaunchUsageExit for them.
int RunCommand(const std::vector<std::string>& args);

}  // namespace weft::runtime
