// A rank program for launcher_test: runs the steps named on its command line, in order, so a test
// can make ranks print, fail, die by a signal, sleep or wait for a signal. Its rank comes from
// WEFT_RANK. Steps:
//   env               print WEFT_*, PROBE_* and the torchrun variables as K=V, sorted
//   pid               print "pid=<pid>"
//   cpus              print "cpus=<c1,c2,...>": the CPUs this process may run on
//   ready             print "ready"
//   lines N           print N lines to stdout and N to stderr, each written in two pieces
//   partial TEXT      print TEXT to stdout with no newline
//   exit C            exit with code C;        exit-on R C: only on rank R
//   kill S            raise signal S;          kill-on R S: only on rank R
//   sleep MS          sleep;                   sleep-on R MS: only on rank R
//   ignore S          ignore signal S
//   wait-signal MS    print "ready", then wait up to MS for SIGINT or SIGTERM: prints
//                     "got SIGINT" and exits 130 (SIGTERM: "got SIGTERM", 143); else "no signal"
//   barrier           meet the other ranks through the job's store (WEFT_STORE, WEFT_JOB_SECRET)
//                     and print "barrier ok"
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "base/deadline.h"
#include "rendezvous/store.h"

extern char** environ;

namespace {

// "0,1": the CPUs sched_getaffinity allows this process, ascending.
std::string AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return "error";
  std::string out;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) out += (out.empty() ? "" : ",") + std::to_string(c);
  }
  return out;
}

volatile sig_atomic_t g_signal = 0;

void OnSignal(int sig) { g_signal = sig; }

void Write(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = write(fd, s.data() + done, s.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

void Say(const std::string& line) { Write(STDOUT_FILENO, line + "\n"); }

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::atoi(v) : fallback;
}

void SleepMs(long ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

void PrintEnv() {
  static const char* kExact[] = {"RANK",        "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                                 "MASTER_ADDR", "MASTER_PORT"};
  std::vector<std::string> out;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv(*e);
    std::string name = kv.substr(0, kv.find('='));
    bool keep = name.rfind("WEFT_", 0) == 0 || name.rfind("PROBE_", 0) == 0;
    for (const char* x : kExact) keep = keep || name == x;
    if (keep) out.push_back(kv);
  }
  std::sort(out.begin(), out.end());
  for (const std::string& kv : out) Say(kv);
}

void PrintLines(int rank, int n) {
  for (int i = 0; i < n; ++i) {
    // Two writes per line, so the launcher sees partial lines and must put them back together.
    std::string out = "out r=" + std::to_string(rank) + " i=" + std::to_string(i) +
                      " the quick brown fox jumps over the lazy dog\n";
    std::string err = "err r=" + std::to_string(rank) + " i=" + std::to_string(i) + "\n";
    Write(STDOUT_FILENO, out.substr(0, 7));
    Write(STDERR_FILENO, err.substr(0, 5));
    Write(STDOUT_FILENO, out.substr(7));
    Write(STDERR_FILENO, err.substr(5));
  }
}

int WaitSignal(long ms) {
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  Say("ready");
  for (long waited = 0; waited < ms && g_signal == 0; waited += 10) SleepMs(10);
  if (g_signal == SIGINT) {
    Say("got SIGINT");
    return 130;
  }
  if (g_signal == SIGTERM) {
    Say("got SIGTERM");
    return 143;
  }
  Say("no signal");
  return 0;
}

int Barrier(int rank) {
  const char* url = std::getenv("WEFT_STORE");
  const char* secret = std::getenv("WEFT_JOB_SECRET");
  if (url == nullptr || secret == nullptr) {
    Say("barrier: WEFT_STORE or WEFT_JOB_SECRET missing");
    return 4;
  }
  auto store = weft::rendezvous::OpenStore(url, secret, weft::Deadline::AfterMs(10000));
  if (!store.ok()) {
    Say("barrier: " + store.status().ToString());
    return 4;
  }
  int world = EnvInt("WEFT_WORLD_SIZE", 1);
  weft::Status st = (*store)->Set("probe/rank" + std::to_string(rank), std::to_string(rank));
  if (st.ok()) st = (*store)->Barrier("probe", world, weft::Deadline::AfterMs(20000));
  if (!st.ok()) {
    Say("barrier: " + st.ToString());
    return 4;
  }
  // Every rank's key is there once the barrier is passed.
  for (int r = 0; r < world; ++r) {
    auto v = (*store)->Get("probe/rank" + std::to_string(r), weft::Deadline::AfterMs(1000));
    if (!v.ok() || *v != std::to_string(r)) {
      Say("barrier: rank " + std::to_string(r) + "'s key is missing");
      return 4;
    }
  }
  Say("barrier ok");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int rank = EnvInt("WEFT_RANK", 0);
  std::vector<std::string> args(argv + 1, argv + argc);
  auto arg = [&](size_t i) -> long {
    if (i >= args.size()) {
      std::fprintf(stderr, "launcher_probe: missing argument\n");
      std::exit(64);
    }
    return std::atol(args[i].c_str());
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& step = args[i];
    if (step == "env") {
      PrintEnv();
    } else if (step == "pid") {
      Say("pid=" + std::to_string(getpid()));
    } else if (step == "cpus") {
      Say("cpus=" + AllowedCpus());
    } else if (step == "ready") {
      Say("ready");
    } else if (step == "lines") {
      PrintLines(rank, static_cast<int>(arg(++i)));
    } else if (step == "partial") {
      ++i;
      Write(STDOUT_FILENO, i < args.size() ? args[i] : "");
    } else if (step == "exit") {
      return static_cast<int>(arg(++i));
    } else if (step == "exit-on") {
      long r = arg(++i), code = arg(++i);
      if (r == rank) return static_cast<int>(code);
    } else if (step == "kill") {
      raise(static_cast<int>(arg(++i)));
    } else if (step == "kill-on") {
      long r = arg(++i), sig = arg(++i);
      if (r == rank) raise(static_cast<int>(sig));
    } else if (step == "sleep") {
      SleepMs(arg(++i));
    } else if (step == "sleep-on") {
      long r = arg(++i), ms = arg(++i);
      if (r == rank) SleepMs(ms);
    } else if (step == "ignore") {
      signal(static_cast<int>(arg(++i)), SIG_IGN);
    } else if (step == "wait-signal") {
      return WaitSignal(arg(++i));
    } else if (step == "barrier") {
      int rc = Barrier(rank);
      if (rc != 0) return rc;
    } else {
      std::fprintf(stderr, "launcher_probe: unknown step '%s'\n", step.c_str());
      return 64;
    }
  }
  return 0;
}
