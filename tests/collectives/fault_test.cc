// Faults across real processes: this binary re-executes itself as the ranks (WEFT_FAULT_CHILD
// names the scenario) over a TCP store served by the test. A rank SIGKILLed mid-collective must
// give every survivor an error naming it within twice the timeout; hostile connections to a
// rank's port must be refused without disturbing the job.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/auth_handshake.h"
#include "base/socket_util.h"
#include "collectives/communicator.h"
#include "rendezvous/tcp_store.h"

namespace weft::collectives {
namespace {

constexpr int kTimeoutMs = 3000;
constexpr int kVictim = 1;

int ChildMain(const std::string& scenario) {
  auto comm = Communicator::FromEnvironment();
  if (!comm.ok()) {
    std::printf("INIT FAILED: %s\n", comm.status().ToString().c_str());
    return 2;
  }
  Communicator& c = **comm;
  if (scenario == "kill") {
    std::thread killer;
    if (c.rank() == kVictim) {
      killer = std::thread([] {
        std::this_thread::sleep_for(std::chrono::milliseconds(400));
        raise(SIGKILL);
      });
    }
    std::vector<float> buf(1 << 18, 1.0f);
    for (int i = 0; i < 1000000; ++i) {
      auto w = c.AllReduce(buf.data(), buf.data(), static_cast<int64_t>(buf.size()),
                           DType::kFloat32, ReduceOp::kMax);
      Status s = w.ok() ? w->Wait() : w.status();
      if (!s.ok()) {
        std::printf("ERROR: %s\n", s.ToString().c_str());
        std::fflush(stdout);
        _exit(3);
      }
    }
    if (killer.joinable()) killer.join();
    return 0;
  }
  if (scenario == "steady") {
    const int64_t n = 1 << 16;
    std::vector<float> buf(n);
    for (int i = 0; i < 300; ++i) {
      for (int64_t j = 0; j < n; ++j) buf[j] = static_cast<float>(c.rank() + j % 5);
      auto w = c.AllReduce(buf.data(), buf.data(), n, DType::kFloat32, ReduceOp::kSum);
      Status s = w.ok() ? w->Wait() : w.status();
      if (!s.ok()) {
        std::printf("ERROR: %s\n", s.ToString().c_str());
        return 3;
      }
      float want0 = static_cast<float>(c.world_size() * (c.world_size() - 1) / 2);
      if (buf[0] != want0 || buf[3] != want0 + 3 * c.world_size()) {
        std::printf("WRONG RESULT at iteration %d\n", i);
        return 4;
      }
    }
    return 0;
  }
  std::printf("unknown scenario %s\n", scenario.c_str());
  return 2;
}

struct Child {
  pid_t pid = -1;
  std::string log;
  int status = 0;
  Clock::time_point ended;
};

class Job {
 public:
  Job(int n, const std::string& scenario, const std::string& transport) : n_(n) {
    auto s = rendezvous::TcpStoreServer::Start("127.0.0.1", 0, secret_);
    EXPECT_TRUE(s.ok());
    server_ = std::move(*s);
    for (int r = 0; r < n; ++r) {
      Child c;
      c.log = "/tmp/weft-fault-" + std::to_string(getpid()) + "-" + std::to_string(r) + ".log";
      c.pid = fork();
      if (c.pid == 0) {
        int fd = open(c.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        setenv("WEFT_FAULT_CHILD", scenario.c_str(), 1);
        setenv("WEFT_RANK", std::to_string(r).c_str(), 1);
        setenv("WEFT_WORLD_SIZE", std::to_string(n).c_str(), 1);
        setenv("WEFT_STORE", ("tcp://127.0.0.1:" + std::to_string(server_->port())).c_str(), 1);
        setenv("WEFT_JOB_SECRET", secret_.c_str(), 1);
        setenv("WEFT_TRANSPORT", transport.c_str(), 1);
        setenv("WEFT_TIMEOUT_MS", std::to_string(kTimeoutMs).c_str(), 1);
        setenv("WEFT_INIT_TIMEOUT_MS", "20000", 1);
        execl("/proc/self/exe", "fault_test", nullptr);
        _exit(127);
      }
      children_.push_back(c);
    }
  }
  ~Job() {
    for (auto& c : children_) {
      if (c.pid > 0) kill(c.pid, SIGKILL);
    }
    for (auto& c : children_) {
      if (c.pid > 0) waitpid(c.pid, nullptr, 0);
      unlink(c.log.c_str());
    }
  }
  int port() const { return server_->port(); }
  // Reaps every child, killing all of them at the deadline. False if the deadline hit.
  bool WaitAll(Deadline deadline) {
    int left = n_;
    while (left > 0) {
      for (auto& c : children_) {
        if (c.pid <= 0) continue;
        int st;
        pid_t p = waitpid(c.pid, &st, WNOHANG);
        if (p == c.pid) {
          c.status = st;
          c.ended = Clock::now();
          c.pid = -1;
          --left;
        }
      }
      if (left == 0) break;
      if (deadline.Expired()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }
  const Child& child(int r) const { return children_[r]; }
  std::string Log(int r) const {
    std::ifstream in(children_[r].log);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  int n_;
  std::string secret_ = "fault-test-secret";
  std::unique_ptr<rendezvous::TcpStoreServer> server_;
  std::vector<Child> children_;
};

class Faults : public ::testing::TestWithParam<std::string> {};

TEST_P(Faults, KilledRankIsNamedByEverySurvivor) {
  const int n = 4;
  Job job(n, "kill", GetParam());
  ASSERT_TRUE(job.WaitAll(Deadline::AfterMs(60000))) << "ranks hung";
  const Child& victim = job.child(kVictim);
  ASSERT_TRUE(WIFSIGNALED(victim.status)) << job.Log(kVictim);
  EXPECT_EQ(WTERMSIG(victim.status), SIGKILL);
  for (int r = 0; r < n; ++r) {
    if (r == kVictim) continue;
    const Child& c = job.child(r);
    std::string log = job.Log(r);
    ASSERT_TRUE(WIFEXITED(c.status)) << log;
    EXPECT_EQ(WEXITSTATUS(c.status), 3) << log;
    EXPECT_NE(log.find("rank " + std::to_string(kVictim)), std::string::npos) << log;
    auto after = std::chrono::duration_cast<std::chrono::milliseconds>(c.ended - victim.ended);
    EXPECT_LT(after.count(), 2 * kTimeoutMs) << "rank " << r << " took " << after.count()
                                             << " ms after the kill: " << log;
  }
}

TEST_P(Faults, HostileConnectionsAreRefusedAndTheJobIsUnaffected) {
  const int n = 3;
  Job job(n, "steady", GetParam());
  // Find rank 0's published addresses and attack every network address in them.
  auto store = rendezvous::TcpStoreClient::Connect({"127.0.0.1", job.port()}, "fault-test-secret",
                                                   Deadline::AfterMs(10000));
  ASSERT_TRUE(store.ok());
  auto rec = (*store)->Get("weft/c1/peer/0", Deadline::AfterMs(20000));
  ASSERT_TRUE(rec.ok()) << rec.status().ToString();
  int attacks = 0;
  size_t pos = 0;
  while ((pos = rec->find("tcp=", pos)) != std::string::npos) {
    size_t end = rec->find(';', pos);
    // The first of the addresses the rank publishes (all of them lead to its one listener).
    auto hps = ParseHostPortList(rec->substr(pos + 4, end - pos - 4));
    pos = end;
    ASSERT_TRUE(hps.ok() && !hps->empty());
    const HostPort hp = hps->front();
    for (int i = 0; i < 3; ++i) {
      auto fd = ConnectTcp(hp, Deadline::AfterMs(3000));
      ASSERT_TRUE(fd.ok());
      std::string junk(4096, static_cast<char>(i * 77 + 1));
      WriteFull(fd->get(), junk.data(), junk.size(), Deadline::AfterMs(1000)).IgnoreError();
      ++attacks;
    }
    auto fd = ConnectTcp(hp, Deadline::AfterMs(3000));
    ASSERT_TRUE(fd.ok());
    Status hs = ClientHandshake(fd->get(), "wrong-secret", "rank=1", Deadline::AfterMs(5000));
    EXPECT_EQ(hs.code(), StatusCode::kUnauthenticated) << hs.ToString();
    ++attacks;
  }
  if (GetParam() == "tcp") {
    EXPECT_GT(attacks, 0);
  }
  ASSERT_TRUE(job.WaitAll(Deadline::AfterMs(90000))) << "ranks hung";
  for (int r = 0; r < n; ++r) {
    const Child& c = job.child(r);
    ASSERT_TRUE(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0) << "rank " << r << ": " << job.Log(r);
  }
}

INSTANTIATE_TEST_SUITE_P(Transports, Faults, ::testing::Values("shm", "tcp"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace weft::collectives

int main(int argc, char** argv) {
  if (const char* scenario = std::getenv("WEFT_FAULT_CHILD")) {
    return weft::collectives::ChildMain(scenario);
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
