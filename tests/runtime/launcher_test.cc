// Tests of `weft run` through the real binary ($WEFT_BIN_DIR/weft) with launcher_probe as the
// rank program: environment, output prefixing, failure reporting and stopping, signal forwarding,
// argument errors. Every wait in here has a deadline; a hung launcher is killed and fails the test.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/deadline.h"
#include "base/socket_util.h"

#if !defined(WEFT_LAUNCHER_PROBE) || !defined(WEFT_BINARY)
#error "WEFT_LAUNCHER_PROBE and WEFT_BINARY must name the launcher_probe and weft binaries"
#endif

namespace weft::runtime {
namespace {

using std::chrono::milliseconds;

// $WEFT_BIN_DIR/weft as ctest sets it; the build's own binary when the test is run by hand.
std::string WeftBinary() {
  const char* dir = std::getenv("WEFT_BIN_DIR");
  return dir != nullptr ? std::string(dir) + "/weft" : std::string(WEFT_BINARY);
}

const char* Probe() { return WEFT_LAUNCHER_PROBE; }

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

size_t Count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

// True when pid no longer runs: gone, or a zombie (re-parented to an init that may not reap).
bool ProcessGone(pid_t pid) {
  if (kill(pid, 0) != 0) return errno == ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  size_t paren = text.rfind(')');
  if (paren == std::string::npos || paren + 2 >= text.size()) return true;
  char state = text[paren + 2];
  return state == 'Z' || state == 'X';
}

std::vector<pid_t> PidsIn(const std::string& out) {
  std::vector<pid_t> pids;
  std::regex re(R"(pid=(\d+))");
  for (std::sregex_iterator it(out.begin(), out.end(), re), end; it != end; ++it) {
    pids.push_back(static_cast<pid_t>(std::stol((*it)[1])));
  }
  return pids;
}

// One `weft run ...` process with its stdout and stderr captured.
class WeftRun {
 public:
  explicit WeftRun(const std::vector<std::string>& run_args) {
    std::vector<std::string> args = {WeftBinary(), "run"};
    args.insert(args.end(), run_args.begin(), run_args.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int out[2], err[2];
    EXPECT_EQ(pipe2(out, O_CLOEXEC), 0);
    EXPECT_EQ(pipe2(err, O_CLOEXEC), 0);
    start_ = Clock::now();
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      dup2(err[1], STDERR_FILENO);
      execv(argv[0], argv.data());
      std::string msg = "launcher_test: cannot execute " + args[0] + "\n";
      ssize_t ignored = write(STDERR_FILENO, msg.data(), msg.size());
      (void)ignored;
      _exit(99);
    }
    close(out[1]);
    close(err[1]);
    out_fd_.Reset(out[0]);
    err_fd_.Reset(err[0]);
  }

  ~WeftRun() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  pid_t pid() const { return pid_; }
  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

  // Reads output until done() holds or the deadline passes; returns done().
  bool ReadUntil(const std::function<bool()>& done, Deadline deadline) {
    while (!done()) {
      if (deadline.Expired() || !ReadSome(deadline)) return done();
    }
    return true;
  }

  // Reads all output and waits for the launcher to exit. Returns its exit code (128+S for a
  // signal), or -1 when it was still running at the deadline (it is then killed).
  int Wait(Deadline deadline) {
    while (out_fd_.valid() || err_fd_.valid()) {
      if (deadline.Expired() || !ReadSome(deadline)) break;
    }
    while (true) {
      int status = 0;
      pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        elapsed_ = Clock::now() - start_;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (deadline.Expired()) {
        ADD_FAILURE() << "weft run still running at the deadline; stdout:\n"
                      << out_ << "\nstderr:\n"
                      << err_;
        return -1;
      }
      std::this_thread::sleep_for(milliseconds(5));
    }
  }

  // From start to exit, once Wait() returned.
  Clock::duration elapsed() const { return elapsed_; }

 private:
  // Waits for and reads one chunk; false when both pipes are closed.
  bool ReadSome(Deadline deadline) {
    pollfd fds[2];
    int n = 0;
    for (UniqueFd* fd : {&out_fd_, &err_fd_}) {
      if (fd->valid()) fds[n++] = {fd->get(), POLLIN, 0};
    }
    if (n == 0) return false;
    if (poll(fds, n, deadline.RemainingMsForPoll(100)) <= 0) return true;
    for (int i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      UniqueFd& fd = fds[i].fd == out_fd_.get() ? out_fd_ : err_fd_;
      std::string& text = fds[i].fd == out_fd_.get() ? out_ : err_;
      char buf[65536];
      ssize_t got = read(fd.get(), buf, sizeof(buf));
      if (got > 0) {
        text.append(buf, static_cast<size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        fd.Reset();
      }
    }
    return true;
  }

  pid_t pid_ = -1;
  bool exited_ = false;
  Clock::time_point start_;
  Clock::duration elapsed_{};
  UniqueFd out_fd_, err_fd_;
  std::string out_, err_;
};

std::vector<std::string> ProbeArgs(std::vector<std::string> launcher_args,
                                   const std::vector<std::string>& probe_steps) {
  launcher_args.push_back("--");
  launcher_args.push_back(Probe());
  launcher_args.insert(launcher_args.end(), probe_steps.begin(), probe_steps.end());
  return launcher_args;
}

TEST(Launcher, EveryRankGetsItsEnvironment) {
  WeftRun run(
      ProbeArgs({"-n", "3", "--transport", "tcp", "--env", "PROBE_X=hello world"}, {"env"}));
  ASSERT_EQ(run.Wait(Deadline::AfterMs(20000)), 0) << run.err();
  // rank -> name -> value
  std::map<int, std::map<std::string, std::string>> env;
  std::regex re(R"(\[rank (\d+)\] ([A-Z_]+)=(.*))");
  for (const std::string& line : Lines(run.out())) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, re)) << line;
    env[std::stoi(m[1])][m[2]] = m[3];
  }
  ASSERT_EQ(env.size(), 3u);
  std::set<std::string> stores, secrets, job_ids;
  for (auto& [rank, vars] : env) {
    std::string r = std::to_string(rank);
    EXPECT_EQ(vars["WEFT_RANK"], r);
    EXPECT_EQ(vars["WEFT_LOCAL_RANK"], r);
    EXPECT_EQ(vars["RANK"], r);
    EXPECT_EQ(vars["LOCAL_RANK"], r);
    EXPECT_EQ(vars["WEFT_WORLD_SIZE"], "3");
    EXPECT_EQ(vars["WEFT_LOCAL_SIZE"], "3");
    EXPECT_EQ(vars["WORLD_SIZE"], "3");
    EXPECT_EQ(vars["LOCAL_WORLD_SIZE"], "3");
    EXPECT_EQ(vars["WEFT_TRANSPORT"], "tcp");
    EXPECT_EQ(vars["PROBE_X"], "hello world");
    EXPECT_TRUE(std::regex_match(vars["WEFT_STORE"], std::regex(R"(tcp://127\.0\.0\.1:\d+)")))
        << vars["WEFT_STORE"];
    EXPECT_TRUE(std::regex_match(vars["WEFT_JOB_SECRET"], std::regex("[0-9a-f]{64}")));
    EXPECT_TRUE(std::regex_match(vars["WEFT_JOB_ID"], std::regex("[0-9a-zA-Z_-]{4,32}")))
        << vars["WEFT_JOB_ID"];
    if (std::getenv("MASTER_ADDR") == nullptr) {
      EXPECT_EQ(vars.count("MASTER_ADDR"), 0u);
    }
    if (std::getenv("MASTER_PORT") == nullptr) {
      EXPECT_EQ(vars.count("MASTER_PORT"), 0u);
    }
    stores.insert(vars["WEFT_STORE"]);
    secrets.insert(vars["WEFT_JOB_SECRET"]);
    job_ids.insert(vars["WEFT_JOB_ID"]);
  }
  EXPECT_EQ(stores.size(), 1u);
  EXPECT_EQ(secrets.size(), 1u);
  EXPECT_EQ(job_ids.size(), 1u);
}

// The CPUs this process may run on, as launcher_probe prints them ("0,1").
std::vector<int> MyCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> out;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) out.push_back(c);
  }
  return out;
}

std::string Join(const std::vector<int>& v) {
  std::string out;
  for (int c : v) out += (out.empty() ? "" : ",") + std::to_string(c);
  return out;
}

// rank -> "cpus=..." value, from the probe's `cpus` step.
std::map<int, std::string> CpusByRank(const std::string& out) {
  std::map<int, std::string> by_rank;
  std::regex re(R"(\[rank (\d+)\] cpus=(.*))");
  for (const std::string& line : Lines(out)) {
    std::smatch m;
    if (std::regex_match(line, m, re)) by_rank[std::stoi(m[1])] = m[2];
  }
  return by_rank;
}

// Restricts this process (and so the `weft run` it starts) to its first two allowed CPUs, or its
// only one, for the life of the object; the binding rules depend on the count.
class AtMostTwoCpus {
 public:
  AtMostTwoCpus() {
    CPU_ZERO(&saved_);
    ok_ = sched_getaffinity(0, sizeof(saved_), &saved_) == 0;
    std::vector<int> all = MyCpus();
    cpu_set_t two;
    CPU_ZERO(&two);
    for (size_t i = 0; i < all.size() && i < 2; ++i) CPU_SET(all[i], &two);
    if (ok_) ok_ = sched_setaffinity(0, sizeof(two), &two) == 0;
  }
  ~AtMostTwoCpus() { sched_setaffinity(0, sizeof(saved_), &saved_); }
  bool ok() const { return ok_; }

 private:
  cpu_set_t saved_;
  bool ok_ = false;
};

// rank -> the CPUs it may run on, for `weft run -n n --bind mode` of the probe.
std::map<int, std::string> RunCpus(int n, const char* mode) {
  WeftRun run(ProbeArgs({"-n", std::to_string(n), "--bind", mode}, {"cpus"}));
  EXPECT_EQ(run.Wait(Deadline::AfterMs(20000)), 0) << run.err();
  std::map<int, std::string> got = CpusByRank(run.out());
  EXPECT_EQ(got.size(), static_cast<size_t>(n)) << run.out();
  return got;
}

TEST(Launcher, BindingRoundRobinWhereRanksFitOrDivideTheCpus) {
  AtMostTwoCpus restrict_cpus;
  ASSERT_TRUE(restrict_cpus.ok());
  const std::vector<int> cpus = MyCpus();
  ASSERT_FALSE(cpus.empty());
  const int k = static_cast<int>(cpus.size());
  auto bound = [&](const std::map<int, std::string>& got, const std::string& what) {
    for (auto& [rank, list] : got) {
      EXPECT_EQ(list, std::to_string(cpus[rank % k])) << what << " rank " << rank;
    }
  };
  auto free_of = [&](const std::map<int, std::string>& got, const std::string& what) {
    for (auto& [rank, list] : got) EXPECT_EQ(list, Join(cpus)) << what << " rank " << rank;
  };
  // auto: bound round-robin when the ranks fit the CPUs or are a whole multiple of them (4 ranks
  // on 2 CPUs: two on each), free otherwise (3 on 2 would be 2 + 1).
  bound(RunCpus(k, "auto"), "auto, fit");
  bound(RunCpus(2 * k, "auto"), "auto, twice");
  if (k == 2) free_of(RunCpus(3, "auto"), "auto, 3 on 2");
  // core: always bound; none: never.
  bound(RunCpus(2 * k + 1, "core"), "core");
  free_of(RunCpus(2 * k, "none"), "none");
}

TEST(Launcher, RanksMeetThroughTheStore) {
  WeftRun run(ProbeArgs({"-n", "8"}, {"barrier"}));
  ASSERT_EQ(run.Wait(Deadline::AfterMs(30000)), 0) << run.out() << run.err();
  for (int r = 0; r < 8; ++r) {
    EXPECT_EQ(Count(run.out(), "[rank " + std::to_string(r) + "] barrier ok\n"), 1u) << run.out();
  }
}

TEST(Launcher, LinesArePrefixedAndWhole) {
  constexpr int kRanks = 4;
  constexpr int kLines = 3000;
  WeftRun run(ProbeArgs({"-n", std::to_string(kRanks)},
                        {"lines", std::to_string(kLines), "partial", "tail-without-newline"}));
  ASSERT_EQ(run.Wait(Deadline::AfterMs(30000)), 0) << run.err().substr(0, 2000);
  std::regex out_re(
      R"(\[rank (\d)\] out r=(\d) i=(\d+) the quick brown fox jumps over the lazy dog)");
  std::regex err_re(R"(\[rank (\d)\] err r=(\d) i=(\d+))");
  std::vector<int> next_out(kRanks, 0), next_err(kRanks, 0), tails(kRanks, 0);
  for (const std::string& line : Lines(run.out())) {
    std::smatch m;
    if (std::regex_match(line, m, std::regex(R"(\[rank (\d)\] tail-without-newline)"))) {
      ++tails[std::stoi(m[1])];
      continue;
    }
    ASSERT_TRUE(std::regex_match(line, m, out_re)) << "mangled stdout line: " << line;
    int rank = std::stoi(m[1]);
    ASSERT_EQ(m[2], m[1]) << line;
    ASSERT_EQ(std::stoi(m[3]), next_out[rank]++) << "lines of one rank out of order: " << line;
  }
  for (const std::string& line : Lines(run.err())) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, err_re)) << "mangled stderr line: " << line;
    int rank = std::stoi(m[1]);
    ASSERT_EQ(m[2], m[1]) << line;
    ASSERT_EQ(std::stoi(m[3]), next_err[rank]++) << line;
  }
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(next_out[r], kLines) << "rank " << r;
    EXPECT_EQ(next_err[r], kLines) << "rank " << r;
    EXPECT_EQ(tails[r], 1) << "rank " << r << "'s partial last line";
  }
  EXPECT_EQ(run.out().back(), '\n');
}

TEST(Launcher, NoPrefixPassesOutputThrough) {
  WeftRun run(ProbeArgs({"-n", "2", "--no-prefix"}, {"lines", "50", "partial", "END"}));
  ASSERT_EQ(run.Wait(Deadline::AfterMs(20000)), 0) << run.err();
  EXPECT_EQ(run.out().find("[rank"), std::string::npos);
  EXPECT_EQ(Count(run.out(), "out r=0 i=49 the quick brown fox jumps over the lazy dog\n"), 1u);
  EXPECT_EQ(Count(run.out(), "out r=1 i=49 the quick brown fox jumps over the lazy dog\n"), 1u);
  EXPECT_EQ(Count(run.err(), "err r=1 i=7\n"), 1u);
  EXPECT_EQ(Count(run.out(), "END"), 2u);  // bytes unchanged: no newline added
  for (const std::string& line : Lines(run.out())) {
    EXPECT_TRUE(std::regex_match(line, std::regex(R"((END)*(out r=\d i=\d+ the quick .*)?(END)*)")))
        << line;
  }
}

TEST(Launcher, FailingRankStopsTheOthers) {
  WeftRun run(ProbeArgs({"-n", "4", "--grace-ms", "3000"},
                        {"pid", "barrier", "exit-on", "2", "3", "sleep", "20000"}));
  int code = run.Wait(Deadline::AfterMs(20000));
  EXPECT_EQ(code, 3) << run.err();
  EXPECT_LT(run.elapsed(), std::chrono::seconds(8)) << "the sleeping ranks were not stopped";
  EXPECT_TRUE(std::regex_search(run.err(), std::regex(R"(rank 2 \(pid \d+\) exited with code 3)")))
      << run.err();
  // The first failure is the cause; the stopped ranks are not reported as failures.
  EXPECT_EQ(Count(run.err(), "exited with code"), 1u) << run.err();
  EXPECT_EQ(Count(run.err(), "killed by signal"), 0u) << run.err();
  std::vector<pid_t> pids = PidsIn(run.out());
  EXPECT_EQ(pids.size(), 4u);
  for (pid_t pid : pids) EXPECT_TRUE(ProcessGone(pid)) << "rank pid " << pid << " left running";
}

TEST(Launcher, RankKilledBySignalIsNamed) {
  WeftRun run(ProbeArgs({"-n", "3"}, {"kill-on", "1", "9", "sleep", "20000"}));
  EXPECT_EQ(run.Wait(Deadline::AfterMs(20000)), 128 + 9);
  EXPECT_LT(run.elapsed(), std::chrono::seconds(8));
  EXPECT_TRUE(std::regex_search(
      run.err(), std::regex(R"(rank 1 \(pid \d+\) was killed by signal 9 \(SIGKILL\))")))
      << run.err();
}

TEST(Launcher, RanksIgnoringSigtermAreKilledAfterTheGrace) {
  WeftRun run(ProbeArgs({"-n", "3", "--grace-ms", "300"},
                        {"ignore", "15", "barrier", "exit-on", "0", "5", "sleep", "20000"}));
  EXPECT_EQ(run.Wait(Deadline::AfterMs(20000)), 5) << run.err();
  EXPECT_LT(run.elapsed(), std::chrono::seconds(6));
  EXPECT_NE(run.err().find("rank 0 (pid"), std::string::npos) << run.err();
  EXPECT_NE(run.err().find("SIGKILL"), std::string::npos) << run.err();
}

TEST(Launcher, SigintIsForwardedToEveryRank) {
  WeftRun run(ProbeArgs({"-n", "3"}, {"wait-signal", "20000"}));
  ASSERT_TRUE(
      run.ReadUntil([&] { return Count(run.out(), "] ready\n") == 3; }, Deadline::AfterMs(15000)))
      << run.out() << run.err();
  auto t0 = Clock::now();
  ASSERT_EQ(kill(run.pid(), SIGINT), 0);
  EXPECT_EQ(run.Wait(Deadline::AfterMs(15000)), 130) << run.err();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(Count(run.out(), "[rank " + std::to_string(r) + "] got SIGINT\n"), 1u) << run.out();
  }
  EXPECT_NE(run.err().find("SIGINT"), std::string::npos);
  EXPECT_EQ(run.err().find("exited with code"), std::string::npos) << run.err();
}

TEST(Launcher, SigtermIsForwardedToEveryRank) {
  WeftRun run(ProbeArgs({"-n", "2"}, {"wait-signal", "20000"}));
  ASSERT_TRUE(
      run.ReadUntil([&] { return Count(run.out(), "] ready\n") == 2; }, Deadline::AfterMs(15000)))
      << run.out() << run.err();
  ASSERT_EQ(kill(run.pid(), SIGTERM), 0);
  EXPECT_EQ(run.Wait(Deadline::AfterMs(15000)), 128 + SIGTERM) << run.err();
  EXPECT_EQ(Count(run.out(), "] got SIGTERM\n"), 2u) << run.out();
}

TEST(Launcher, GraceComesFromTheEnvironmentKnob) {
  ASSERT_EQ(setenv("WEFT_RUN_GRACE_MS", "200", 1), 0);
  WeftRun run(
      ProbeArgs({"-n", "2"}, {"ignore", "15", "barrier", "exit-on", "1", "6", "sleep", "20000"}));
  unsetenv("WEFT_RUN_GRACE_MS");
  EXPECT_EQ(run.Wait(Deadline::AfterMs(20000)), 6) << run.err();
  EXPECT_LT(run.elapsed(), std::chrono::seconds(5));
  EXPECT_NE(run.err().find("200 ms after being told to stop; sending SIGKILL"), std::string::npos)
      << run.err();
}

TEST(Launcher, SecondSigintKillsRanksThatIgnoreTheFirst) {
  WeftRun run(ProbeArgs({"-n", "2", "--grace-ms", "60000"},
                        {"ignore", "2", "pid", "ready", "sleep", "20000"}));
  ASSERT_TRUE(
      run.ReadUntil([&] { return Count(run.out(), "] ready\n") == 2; }, Deadline::AfterMs(15000)))
      << run.out() << run.err();
  ASSERT_EQ(kill(run.pid(), SIGINT), 0);
  ASSERT_TRUE(run.ReadUntil([&] { return run.err().find("forwarding") != std::string::npos; },
                            Deadline::AfterMs(5000)))
      << run.err();
  ASSERT_EQ(kill(run.pid(), SIGINT), 0);
  EXPECT_EQ(run.Wait(Deadline::AfterMs(15000)), 130) << run.err();
  EXPECT_LT(run.elapsed(), std::chrono::seconds(8));
  for (pid_t pid : PidsIn(run.out())) EXPECT_TRUE(ProcessGone(pid));
}

TEST(Launcher, RanksDieWithTheLauncher) {
  // Orphaned ranks come to this process rather than to an init that may never reap them.
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  WeftRun run(ProbeArgs({"-n", "2"}, {"pid", "ready", "sleep", "20000"}));
  ASSERT_TRUE(
      run.ReadUntil([&] { return Count(run.out(), "] ready\n") == 2; }, Deadline::AfterMs(15000)))
      << run.out() << run.err();
  std::vector<pid_t> pids = PidsIn(run.out());
  ASSERT_EQ(pids.size(), 2u);
  ASSERT_EQ(kill(run.pid(), SIGKILL), 0);
  EXPECT_EQ(run.Wait(Deadline::AfterMs(10000)), 128 + SIGKILL);
  Deadline deadline = Deadline::AfterMs(5000);
  for (pid_t pid : pids) {
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0 && !deadline.Expired()) {
      std::this_thread::sleep_for(milliseconds(10));
    }
    EXPECT_TRUE(ProcessGone(pid)) << "rank pid " << pid << " outlived the launcher";
    if (!ProcessGone(pid)) kill(pid, SIGKILL);
  }
  prctl(PR_SET_CHILD_SUBREAPER, 0);
}

TEST(Launcher, AllRanksExitingZeroExitsZero) {
  WeftRun run(ProbeArgs({"-n", "16"}, {"exit", "0"}));
  EXPECT_EQ(run.Wait(Deadline::AfterMs(20000)), 0) << run.err();
  EXPECT_EQ(run.err(), "");
}

TEST(Launcher, BadArgumentsAreUsageErrors) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  std::vector<Case> cases = {
      {{"--", Probe()}, "missing -n"},
      {{"-n", "0", "--", Probe()}, "-n '0'"},
      {{"-n", "1025", "--", Probe()}, "1..1024"},
      {{"-n", "two", "--", Probe()}, "-n 'two'"},
      {{"-n"}, "-n needs"},
      {{"-n", "2"}, "missing '-- PROGRAM"},
      {{"-n", "2", Probe()}, "expected '--' before the program"},
      {{"-n", "2", "--"}, "no program after '--'"},
      {{"-n", "2", "--bogus", "--", Probe()}, "unknown option '--bogus'"},
      {{"-n", "2", "--grace-ms", "-5", "--", Probe()}, "--grace-ms '-5'"},
      {{"-n", "2", "--env", "NOEQUALS", "--", Probe()}, "NAME=VALUE"},
      {{"-n", "2", "--env", "WEFT_RANK=7", "--", Probe()}, "may not set WEFT_RANK"},
      {{"-n", "2", "--transport", "--", Probe()}, "--transport"},
  };
  for (const Case& c : cases) {
    WeftRun run(c.args);
    EXPECT_EQ(run.Wait(Deadline::AfterMs(10000)), 2) << c.message;
    EXPECT_NE(run.err().find("weft run: "), std::string::npos) << run.err();
    EXPECT_NE(run.err().find(c.message), std::string::npos)
        << "expected '" << c.message << "' in:\n"
        << run.err();
    EXPECT_NE(run.err().find("usage: weft run"), std::string::npos);
  }
  // -n=4 and -n4 forms parse.
  WeftRun ok(ProbeArgs({"--nprocs=2"}, {"exit", "0"}));
  EXPECT_EQ(ok.Wait(Deadline::AfterMs(10000)), 0) << ok.err();
}

TEST(Launcher, ProgramThatCannotRunIsNamed) {
  {
    WeftRun run({"-n", "2", "--", "/nonexistent/weft-no-such-program"});
    EXPECT_EQ(run.Wait(Deadline::AfterMs(10000)), 127);
    EXPECT_NE(run.err().find("weft run: cannot execute '/nonexistent/weft-no-such-program': No "
                             "such file or directory"),
              std::string::npos)
        << run.err();
  }
  {
    WeftRun run({"-n", "2", "--", "weft-no-such-program-on-path"});
    EXPECT_EQ(run.Wait(Deadline::AfterMs(10000)), 127);
    EXPECT_NE(run.err().find("cannot execute 'weft-no-such-program-on-path': No such file"),
              std::string::npos)
        << run.err();
  }
  {
    WeftRun run({"-n", "1", "--", "/"});  // a directory
    EXPECT_EQ(run.Wait(Deadline::AfterMs(10000)), 126);
    EXPECT_NE(run.err().find("cannot execute '/'"), std::string::npos) << run.err();
  }
}

}  // namespace
}  // namespace weft::runtime
