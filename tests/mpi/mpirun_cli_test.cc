// `mpirun -np N weft ...` end to end: ranks bootstrap from Open MPI's variables with no store in
// the environment (weft initialises MPI, rank 0 serves the store and broadcasts where it is),
// run checked collectives over the default transports and over the mpi transport, print the
// topology, and finalise MPI at exit (mpirun fails a job whose ranks do not).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "base/deadline.h"
#include "base/json.h"

namespace weft {
namespace {

std::string Weft() {
  const char* d = std::getenv("WEFT_BIN_DIR");
  return d ? std::string(d) + "/weft" : std::string("build/bin/weft");
}

std::string Mpirun() {
  const char* m = std::getenv("WEFT_MPIRUN");
  return m ? m : "/usr/bin/mpirun";
}

// Runs mpirun with `args` (after the common flags) in a clean environment (no store, no weft
// launcher variables); returns its exit code (-1 if it ran past the timeout and was killed) and
// its output.
int RunMpirun(const std::vector<std::string>& args, std::string* output, int timeout_ms = 90000) {
  static int counter = 0;
  std::string out_path =
      "/tmp/weft-mpirun-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + ".log";
  std::vector<std::string> argv = {Mpirun(), "--allow-run-as-root", "--oversubscribe"};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);  // its own group, so a timeout kills mpirun and every rank
    int fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    for (const char* v : {"WEFT_RANK", "WEFT_WORLD_SIZE", "WEFT_LOCAL_RANK", "WEFT_STORE", "RANK",
                          "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                          "WEFT_JOB_SECRET", "WEFT_JOB_ID", "WEFT_TRANSPORT", "WEFT_HOST_ID"}) {
      unsetenv(v);
    }
    std::vector<char*> a;
    for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    execv(a[0], a.data());
    _exit(127);
  }
  Deadline d = Deadline::AfterMs(timeout_ms);
  int st = 0;
  bool timed_out = false;
  while (waitpid(pid, &st, WNOHANG) == 0) {
    if (d.Expired()) {
      kill(-pid, SIGKILL);
      waitpid(pid, &st, 0);
      timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::ifstream in(out_path);
  std::stringstream s;
  s << in.rdbuf();
  *output = s.str();
  unlink(out_path.c_str());
  if (timed_out) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

TEST(Mpirun, BenchAllReduceBootstrapsWithoutAStore) {
  std::string out;
  int rc =
      RunMpirun({"-np", "4", Weft(), "bench", "allreduce", "-b", "8", "-e", "1M", "-f", "8"}, &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("# weft bench allreduce: 4 ranks"), std::string::npos) << out;
  EXPECT_NE(out.find("# Out of bounds values : 0 OK"), std::string::npos) << out;
  EXPECT_EQ(out.find("without calling \"finalize\""), std::string::npos) << out;
}

TEST(Mpirun, EveryCollectiveOverTheMpiTransport) {
  for (const char* coll : {"allreduce", "broadcast", "allgather", "reducescatter", "alltoall",
                           "reduce", "gather", "scatter", "sendrecv"}) {
    std::string out;
    int rc = RunMpirun({"-np",   "3",     "--mca",      "pml", "ob1",
                        "--mca", "btl",   "vader,self", "-x",  "WEFT_TRANSPORT=mpi",
                        Weft(),  "bench", coll,         "-b",  "8",
                        "-e",    "2M",    "-f",         "32",  "-n",
                        "2",     "-w",    "1",          "-c",  "1"},
                       &out);
    EXPECT_EQ(rc, 0) << coll << "\n" << out;
    EXPECT_NE(out.find("3 ranks, transport mpi"), std::string::npos) << coll << "\n" << out;
    EXPECT_NE(out.find("# Out of bounds values : 0 OK"), std::string::npos) << coll << "\n" << out;
  }
}

TEST(Mpirun, TopoProbeJsonDescribesOneHost) {
  std::string out;
  int rc = RunMpirun({"-np", "4", Weft(), "topo", "--probe", "--json", "--probe-iters", "40",
                      "--probe-bytes", "1M"},
                     &out);
  ASSERT_EQ(rc, 0) << out;
  size_t start = out.find('{');
  ASSERT_NE(start, std::string::npos) << out;
  auto j = ParseJson(out.substr(start));
  ASSERT_TRUE(j.ok()) << j.status().ToString() << "\n" << out;
  EXPECT_EQ(j->NumberOr("world_size", 0), 4);
  const Json* hosts = j->Find("hosts");
  ASSERT_TRUE(hosts && hosts->is_array());
  EXPECT_EQ(hosts->as_array().size(), 1u) << out;
  const Json* ranks = j->Find("ranks");
  ASSERT_TRUE(ranks && ranks->is_array() && ranks->as_array().size() == 4u) << out;
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(ranks->as_array()[r].NumberOr("local_rank", -1), r);
    EXPECT_EQ(ranks->as_array()[r].NumberOr("local_size", -1), 4);
  }
  const Json* t = j->Find("transports");
  ASSERT_TRUE(t && t->is_array() && t->as_array().size() == 4u);
  for (int a = 0; a < 4; ++a) {
    for (int b = 0; b < 4; ++b) {
      EXPECT_EQ(t->as_array()[a].as_array()[b].as_string(), a == b ? "self" : "shm");
    }
  }
  const Json* links = j->Find("links");
  ASSERT_TRUE(links && links->is_array() && links->as_array().size() == 1u) << out;
  const Json& l = links->as_array()[0];
  EXPECT_EQ(l.StringOr("class", ""), "same_host/shm");
  EXPECT_GT(l.NumberOr("alpha_us", 0), 0) << out;
  EXPECT_GT(l.NumberOr("beta_us_per_byte", 0), 0) << out;
  EXPECT_GT(l.NumberOr("bandwidth_gbps", 0), 0) << out;
}

}  // namespace
}  // namespace weft
