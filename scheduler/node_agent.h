// The node agent (`weft agent`): registers this host with the scheduler, heartbeats, and runs the
// ranks the scheduler assigns it as child processes with the WEFT_* environment (as `weft run`
// does), serving the job's rendezvous store when it hosts rank 0. Each heartbeat reports every
// rank's state, exit code and log tail; the reply is the node's full desired set, so the agent
// starts what is missing and stops what is no longer wanted (level-triggered reconciliation that
// survives scheduler restarts).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "base/status.h"

namespace weft::scheduler {

struct AgentOptions {
  std::string scheduler;  // host:port
  std::string token;
  std::string node_id;       // default: hostname
  std::string switch_id;     // topology label (rack / leaf switch); default "default"
  std::string address;       // advertised to ranks for the store; default: the local address
                             // this host uses to reach the scheduler
  int slots = 0;             // default: online CPUs
  int64_t memory_bytes = 0;  // default: physical memory
  int grace_ms = 3000;       // SIGTERM -> SIGKILL when stopping a rank
  size_t log_tail_bytes = 2048;
  bool echo_output = true;  // copy ranks' output to our stdout as "[job-1 r0] ..."
};

// Runs until `*stop` becomes true (checked at least every 100 ms) or a fatal error
// (Unauthenticated, bad options). Then stops every rank (SIGTERM, SIGKILL after grace) and
// returns. The scheduler being unreachable is not fatal: ranks keep running and the agent keeps
// trying. Call from one thread; it forks children and reaps only its own pids.
Status RunNodeAgent(const AgentOptions& options, const std::atomic<bool>* stop);

}  // namespace weft::scheduler
