// The weft binary end to end: `weft run` launching `weft bench` ranks, a rank killed in the
// middle of a collective, and ranks started by hand with torchrun's, Slurm's and Kubernetes'
// variables (no launcher), over TCP and file stores.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "base/deadline.h"
#include "base/socket_util.h"

namespace weft {
namespace {

std::string Bin() {
  const char* d = std::getenv("WEFT_BIN_DIR");
  return d ? std::string(d) + "/weft" : std::string("build/bin/weft");
}

struct Proc {
  pid_t pid = -1;
  std::string out_path;
};

Proc Spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
  static int counter = 0;
  Proc p;
  p.out_path = "/tmp/weft-cli-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + ".log";
  p.pid = fork();
  if (p.pid == 0) {
    int fd = open(p.out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    for (const char* v : {"WEFT_RANK", "WEFT_WORLD_SIZE", "WEFT_STORE", "RANK", "WORLD_SIZE",
                          "MASTER_ADDR", "MASTER_PORT", "WEFT_JOB_SECRET", "WEFT_JOB_ID"}) {
      unsetenv(v);
    }
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return p;
}

// Waits with a deadline; kills the process and returns -1 if it runs past it.
int WaitFor(const Proc& p, int timeout_ms, std::string* output) {
  Deadline d = Deadline::AfterMs(timeout_ms);
  int st = 0;
  while (waitpid(p.pid, &st, WNOHANG) == 0) {
    if (d.Expired()) {
      kill(p.pid, SIGKILL);
      waitpid(p.pid, &st, 0);
      st = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::ifstream in(p.out_path);
  std::stringstream s;
  s << in.rdbuf();
  *output = s.str();
  unlink(p.out_path.c_str());
  if (st == -1) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int FreePort() {
  auto l = ListenTcp("127.0.0.1", 0);
  return l.ok() ? l->port : 0;
}

TEST(Cli, RunLaunchesCheckedBenchOnEveryTransport) {
  for (const char* t : {"shm", "tcp"}) {
    std::string out;
    int rc = WaitFor(Spawn({Bin(), "run", "-n", "3", "--transport", t, "--", Bin(), "bench",
                            "allreduce", "-b", "8", "-e", "1M", "-f", "8", "-n", "3", "-w", "1"},
                           {}),
                     120000, &out);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_NE(out.find("[rank 0] # Out of bounds values : 0 OK"), std::string::npos) << out;
    EXPECT_NE(out.find(std::string("transport ") + t), std::string::npos) << out;
  }
}

#ifdef WEFT_TEST_UCX
TEST(Cli, UcxJobEndsWithoutUcxWarnings) {
  // With 4 ranks the peers' goodbyes reached each worker after its control receives were
  // cancelled, and UCP warned about every such message as the worker was destroyed ("unexpected
  // tag-receive descriptor ... was not matched"), at the end of every run; and a rank closing
  // its own connections reported the peers' ends as failures ("UCX reports rank 0 failed:
  // Endpoint timeout", in about one run in four), and flushing towards a peer whose end was
  // already going away made UCP log "error during flush: Endpoint timeout" (one run in eight).
  // Several runs, since the last two were races.
  for (int run = 0; run < 6; ++run) {
    std::string out;
    int rc = WaitFor(Spawn({Bin(), "run", "-n", "4", "--transport", "ucx", "--", Bin(), "bench",
                            "allreduce", "-b", "8", "-e", "256K", "-f", "8", "-n", "5", "-w",
                            "1"},
                           {{"UCX_TLS", "tcp"}}),
                     120000, &out);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_NE(out.find("[rank 0] # Out of bounds values : 0 OK"), std::string::npos) << out;
    EXPECT_EQ(out.find("WARN"), std::string::npos) << out;                  // UCX's own
    EXPECT_EQ(out.find("ERROR"), std::string::npos) << out;
    EXPECT_FALSE(std::regex_search(out, std::regex(R"(weft\[\d+\] W )"))) << out;  // weft's
  }
}
#endif

TEST(Cli, LargeBroadcastAndAllGatherAcrossProcesses) {
  // 768 KiB .. 12 MiB between separate processes: the arena's slots (broadcast; all-gather with
  // 3 ranks, more than this machine's 2 cores), its single-copy path with process_vm_readv
  // (all-gather blocks of 256 KiB .. 8 MiB where the ranks fit the cores: 2 ranks) and, from
  // 1 MiB, its adaptive slot copies; the bench checks every element.
  for (const char* coll : {"broadcast", "allgather"}) {
    for (const char* ranks : {"2", "3"}) {
      std::string out;
      int rc = WaitFor(Spawn({Bin(), "run", "-n", ranks, "--", Bin(), "bench", coll, "-b",
                              "768K", "-e", "12M", "-f", "4", "-n", "3", "-w", "1"},
                             {}),
                       120000, &out);
      EXPECT_EQ(rc, 0) << coll << " on " << ranks << " ranks\n" << out;
      EXPECT_NE(out.find("[rank 0] # Out of bounds values : 0 OK"), std::string::npos) << out;
    }
  }
  // The in-place broadcast timed OSU-style (how scripts/bench.sh compares it with MPI_Bcast).
  std::string out;
  int rc = WaitFor(Spawn({Bin(), "run", "-n", "3", "--", Bin(), "bench", "broadcast", "-b", "4K",
                          "-e", "1M", "-f", "16", "-n", "2", "-w", "1", "--latency", "--in-place",
                          "--json"},
                         {}),
                   120000, &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("\"in_place\":true"), std::string::npos) << out;
  EXPECT_EQ(out.find("\"in_place\":false"), std::string::npos) << out;
  EXPECT_NE(out.find("\"size\":1048576"), std::string::npos) << out;
  size_t checked = 0;
  for (size_t at = out.find("\"oop_wrong\":0,"); at != std::string::npos;
       at = out.find("\"oop_wrong\":0,", at + 1)) {
    ++checked;
  }
  EXPECT_EQ(checked, 3u) << "one checked row per size (4K, 64K, 1M)\n" << out;
}

TEST(Cli, RankKilledMidCollectiveIsNamedByTheLauncher) {
  // Rank 1 kills itself (SIGKILL) a moment into a long all-reduce loop.
  std::string script =
      "if [ \"$WEFT_RANK\" = 1 ]; then (sleep 1; kill -9 $$) & fi; exec " + Bin() +
      " bench allreduce -b 4M -e 4M -n 100000 -w 0 -c 0";
  std::string out;
  auto t0 = Clock::now();
  int rc = WaitFor(Spawn({Bin(), "run", "-n", "3", "--grace-ms", "3000", "--", "/bin/sh", "-c", script},
                         {{"WEFT_TIMEOUT_MS", "3000"}}),
                   60000, &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(rc, -1) << "weft run hung: " << out;
  EXPECT_NE(out.find("rank 1"), std::string::npos) << out;
  EXPECT_NE(out.find("SIGKILL"), std::string::npos) << out;
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(30)) << out;
}

TEST(Cli, SurvivorsReportTheKilledRankWithoutALauncher) {
  // Ranks started by hand (no launcher to stop them): each survivor must exit by itself with an
  // error that names the dead rank, within twice the timeout.
  int port = FreePort();
  std::vector<Proc> ps;
  for (int r = 0; r < 3; ++r) {
    std::string cmd = (r == 2 ? "(sleep 1; kill -9 $$) & exec " : "exec ") + Bin() +
                      " bench allreduce -b 1M -e 1M -n 1000000 -w 0 -c 0";
    ps.push_back(Spawn({"/bin/sh", "-c", cmd},
                       {{"RANK", std::to_string(r)}, {"WORLD_SIZE", "3"},
                        {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", std::to_string(port)},
                        {"WEFT_TIMEOUT_MS", "3000"}}));
  }
  std::string out;
  EXPECT_EQ(WaitFor(ps[2], 30000, &out), 128 + SIGKILL) << out;
  auto killed_at = Clock::now();
  for (int r = 0; r < 2; ++r) {
    int rc = WaitFor(ps[r], 30000, &out);
    EXPECT_NE(rc, 0) << out;
    EXPECT_NE(rc, -1) << "rank " << r << " hung: " << out;
    EXPECT_NE(out.find("rank 2"), std::string::npos) << out;
  }
  EXPECT_LT(Clock::now() - killed_at, std::chrono::milliseconds(6000));
}

TEST(Cli, TorchrunVariablesWithoutALauncher) {
  int port = FreePort();
  std::vector<Proc> ps;
  for (int r = 0; r < 2; ++r) {
    ps.push_back(Spawn({Bin(), "bench", "broadcast", "-b", "1K", "-e", "64K", "-f", "8", "-n", "2"},
                       {{"RANK", std::to_string(r)}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", std::to_string(r)},
                        {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", std::to_string(port)}}));
  }
  for (auto& p : ps) {
    std::string out;
    EXPECT_EQ(WaitFor(p, 60000, &out), 0) << out;
  }
}

TEST(Cli, SlurmAndKubernetesVariablesWithAFileStore) {
  char dir[] = "/tmp/weft-filestore-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::vector<Proc> ps;
  ps.push_back(Spawn({Bin(), "bench", "allgather", "-b", "64", "-e", "4K", "-f", "8", "-n", "2"},
                     {{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"},
                      {"WEFT_STORE", std::string("file://") + dir}}));
  ps.push_back(Spawn({Bin(), "bench", "allgather", "-b", "64", "-e", "4K", "-f", "8", "-n", "2"},
                     {{"JOB_COMPLETION_INDEX", "1"}, {"WORLD_SIZE", "2"},
                      {"WEFT_STORE", std::string("file://") + dir}}));
  for (auto& p : ps) {
    std::string out;
    EXPECT_EQ(WaitFor(p, 60000, &out), 0) << out;
  }
  ASSERT_EQ(std::system((std::string("rm -rf ") + dir).c_str()), 0);
}

TEST(Cli, UnreachableStoreFailsClearlyInBoundedTime) {
  int port = FreePort();
  std::string out;
  auto t0 = Clock::now();
  int rc = WaitFor(Spawn({Bin(), "bench", "allreduce"},
                         {{"WEFT_RANK", "1"}, {"WEFT_WORLD_SIZE", "2"},
                          {"WEFT_STORE", "tcp://127.0.0.1:" + std::to_string(port)},
                          {"WEFT_INIT_TIMEOUT_MS", "1500"}}),
                   20000, &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(rc, -1) << out;
  EXPECT_NE(out.find("rendezvous store"), std::string::npos) << out;
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(10));
}

TEST(Cli, EnvListsKnobsAndBadCommandsAreRefused) {
  std::string out;
  EXPECT_EQ(WaitFor(Spawn({Bin(), "env"}, {}), 10000, &out), 0);
  for (const char* k : {"WEFT_TRANSPORT", "WEFT_TIMEOUT_MS", "WEFT_ALGO", "WEFT_LOG_LEVEL",
                        "WEFT_SHM_RING_BYTES", "WEFT_TCP_SOCKETS", "WEFT_STORE"}) {
    EXPECT_NE(out.find(k), std::string::npos) << k << "\n" << out;
  }
  EXPECT_EQ(WaitFor(Spawn({Bin(), "frobnicate"}, {}), 10000, &out), 2);
  EXPECT_NE(out.find("unknown command"), std::string::npos);
  EXPECT_EQ(WaitFor(Spawn({Bin(), "bench", "allreduce", "-d", "float128"}, {}), 10000, &out), 2);
  EXPECT_NE(out.find("unknown data type 'float128'"), std::string::npos) << out;
  EXPECT_EQ(WaitFor(Spawn({Bin(), "bench", "broadcast", "--in-place"}, {}), 10000, &out), 2);
  EXPECT_NE(out.find("--in-place goes with --latency"), std::string::npos) << out;
  // A malformed size knob fails the job, naming the knob (no silent default).
  auto refused = [&](const char* transport, const char* knob, const char* value,
                     const std::string& want) {
    int rc = WaitFor(Spawn({Bin(), "run", "-n", "2", "--transport", transport, "--", Bin(),
                            "bench", "allreduce", "-b", "8", "-e", "8", "-n", "1", "-w", "0"},
                           {{knob, value}}),
                     60000, &out);
    EXPECT_NE(rc, 0) << out;
    EXPECT_NE(out.find(want), std::string::npos) << out;
  };
  refused("shm", "WEFT_SHM_COLL_CHUNK_BYTES", "lots",
          "WEFT_SHM_COLL_CHUNK_BYTES=lots: want a size (e.g. 256K, 1M) or auto");
  refused("shm", "WEFT_SHM_COLL_DIRECT_MAX_BYTES", "small",
          "WEFT_SHM_COLL_DIRECT_MAX_BYTES=small: want a size (e.g. 4K, 0 for never) or auto");
  refused("tcp", "WEFT_ALGO_RAB_MAX_BYTES", "huge",
          "WEFT_ALGO_RAB_MAX_BYTES=huge: want a size (e.g. 4M, 0 for never) or auto");
#ifdef WEFT_TEST_UCX
  refused("ucx", "WEFT_UCX_INLINE_BYTES", "1M",
          "WEFT_UCX_INLINE_BYTES=1M: want a size (e.g. 8000, 64K; at most 64K) or auto");
#endif
}

}  // namespace
}  // namespace weft
