// A multi-host lab on one machine for tests: network namespaces as "hosts", each with one veth
// link to a bridge that lives in a "switch" namespace of its own, so the machine's own network
// (the root namespace) gains no interface, address or route and all traffic stays between the
// namespaces the lab created. Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and iproute2.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace weft::testing {

// Output and exit status of a command run to completion (or killed at its deadline).
struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed by one; -1 if it ran past its deadline
  bool timed_out = false;
  std::string output;  // stdout and stderr interleaved
};

// Runs argv[0] (a path) with `argv`, extra environment `env` on top of this process's less its
// launcher variables (WEFT_RANK, WEFT_STORE, RANK, MASTER_ADDR, ..., WEFT_HOST_ID), and a
// deadline; kills it (SIGKILL) at the deadline. Never throws; spawn failures give exit_code 127.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::map<std::string, std::string>& env, int timeout_ms);

// A process started in the background (its own process group), with its output in a file.
class BackgroundProcess {
 public:
  BackgroundProcess(const std::vector<std::string>& argv,
                    const std::map<std::string, std::string>& env);
  ~BackgroundProcess();  // kills (SIGKILL) and reaps it if still running, removes the log
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;
  BackgroundProcess(BackgroundProcess&& o) noexcept;

  pid_t pid() const { return pid_; }
  // Waits until it exits or `timeout_ms` passes; true when it exited (then exit_code() is set).
  bool WaitExit(int timeout_ms);
  bool exited() const { return exited_; }
  int exit_code() const { return exit_code_; }
  std::string Output() const;

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_code_ = -1;
  std::string log_path_;
};

// Every thread's stack of the running process `pid` (gdb -batch, bounded at 30 s), for the
// message of a test that finds it hung; says so instead where gdb is not installed.
std::string StackDump(pid_t pid);

// The weft binary the netns tests run: $WEFT_BIN_DIR/weft, else build/bin/weft (ctest runs them
// from the source tree).
std::string WeftBinary();

// The lab. RAII: the destructor deletes every namespace it made (deleting a namespace destroys
// its veth ends and the bridge with it). Namespaces left by a lab whose process died (a crash,
// a ctest timeout's SIGKILL) carry that process's pid in their names and are removed by the next
// lab's Create(). Not thread-safe.
class NetnsLab {
 public:
  // Creates `hosts` namespaces with addresses 10.213.0.<1+i>/24 on interface "weft0", joined by a
  // bridge in a switch namespace. FailedPrecondition (saying why) when not root or when iproute2
  // cannot make namespaces; the partial lab is removed.
  static Result<std::unique_ptr<NetnsLab>> Create(int hosts);
  ~NetnsLab();
  NetnsLab(const NetnsLab&) = delete;
  NetnsLab& operator=(const NetnsLab&) = delete;

  int hosts() const { return static_cast<int>(host_ns_.size()); }
  const std::string& host_ns(int i) const { return host_ns_[i]; }
  std::string host_address(int i) const { return "10.213.0." + std::to_string(1 + i); }
  // argv prefix that runs a command inside host i: ip netns exec NS ...
  std::vector<std::string> InHost(int i) const;
  // Sets host i's link down (or up): its ranks lose every other host, as with a pulled cable.
  Status SetLink(int i, bool up);
  // Gives host i a second interface, `name`, up, with address dead_address(i) (10.214.0.<1+i>/24)
  // that no other host reaches: a bridge with no ports, so a rank offers the address like any
  // other, but a SYN sent to another host's dead address from here goes unanswered (the
  // neighbour lookup fails after about 3 s) -- a docker0 or unrouted second NIC in miniature.
  Status AddDeadInterface(int i, const std::string& name = "dead0");
  std::string dead_address(int i) const { return "10.214.0." + std::to_string(1 + i); }

 private:
  NetnsLab() = default;
  Status Ip(const std::vector<std::string>& args);
  static void RemoveStale();

  std::string prefix_;
  std::string switch_ns_;
  std::vector<std::string> host_ns_;
  std::vector<std::string> created_;  // namespaces to delete, in creation order
};

// Starts `weft ARGS...` as ranks_per_host ranks on every host of the lab (rank r in host
// r / ranks_per_host), bootstrapped torchrun-style (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR =
// host 0, MASTER_PORT 29500: the namespaces are fresh, nothing else listens there), with
// WEFT_TRANSPORT=shm,tcp, WEFT_INIT_TIMEOUT_MS=30000 and WEFT_TIMEOUT_MS=20000; `env` comes on
// top. Output is line-buffered (stdbuf) so that a test can watch a rank's progress.
std::vector<BackgroundProcess> StartWeftRanks(const NetnsLab& lab, int ranks_per_host,
                                              const std::vector<std::string>& args,
                                              const std::map<std::string, std::string>& env = {});

// What WaitForRanks saw of each rank, in rank order: its output and its exit code (-1: still
// running at the deadline).
struct RanksOutcome {
  std::vector<std::string> out;
  std::vector<int> code;
};
// Waits for every rank against one deadline, timeout_ms from now.
RanksOutcome WaitForRanks(std::vector<BackgroundProcess>& ranks, int timeout_ms);

}  // namespace weft::testing
