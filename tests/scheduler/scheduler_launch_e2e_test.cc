// The scheduler's launch backends end to end with real processes: `weft scheduler` and two
// `weft agent`s on this host (one host identity, so the hostfile is one line), jobs launched by
// the scheduler with the real mpirun (Open MPI; ranks bootstrap from its environment) or rendered
// for Kubernetes and applied with the real kubectl. There is no Kubernetes API server on these
// machines: the apply test points kubectl at a closed 127.0.0.1 port and expects a clean failure.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/socket_util.h"
#include "scheduler/scheduler_client.h"
#include "tests/scheduler/scheduler_fixture.h"

namespace weft::scheduler {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Runs a shell command; returns its exit code and output.
int Sh(const std::string& cmd, std::string* out) {
  out->clear();
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out->append(buf, n);
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// A process that is gone or a zombie (orphans may wait for a reaper that never comes in a
// container) is dead.
bool Dead(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!f || !std::getline(f, line)) return true;
  size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

class LaunchE2eTest : public SchedulerFixture {
 protected:
  LaunchE2eTest() : SchedulerFixture("sched_launch") {}
  void StartScheduler(std::vector<std::string> extra = {}, std::vector<std::string> env = {},
                      int port = 0) {
    extra.insert(extra.begin(), {"--mpirun", "/usr/bin/mpirun"});
    SchedulerFixture::StartScheduler(extra, env, port);
  }
  // Agents share one host identity: both are this machine.
  void StartAgent(const std::string& id, int slots) {
    SchedulerFixture::StartAgent(id, slots, "this-host", {"--quiet"});
  }
  Result<v1::Job> Submit(int ranks, std::vector<std::string> argv, v1::Launcher launcher,
                         int retries = 0, std::vector<std::string> env = {}) {
    return SubmitJob("launch", ranks, argv, retries, env, launcher);
  }
  void WaitState(const std::string& id, v1::JobState state, int timeout_ms) {
    Deadline d = Deadline::AfterMs(timeout_ms);
    while (Get(id).state() != state && !d.Expired()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_EQ(Get(id).state(), state) << Get(id).reason() << "; logs in " << dir_;
  }
  // Ranks that write "<dir>/rank.<N>" with their pid, then sleep: the pids once all are there.
  std::vector<pid_t> WaitRankPids(int n) {
    std::vector<pid_t> pids;
    Deadline d = Deadline::AfterMs(30000);
    while (!d.Expired()) {
      pids.clear();
      for (int r = 0; r < n; ++r) {
        std::ifstream f(dir_ + "/rank." + std::to_string(r));
        long pid = 0;
        if (f >> pid && pid > 0) pids.push_back(static_cast<pid_t>(pid));
      }
      if (static_cast<int>(pids.size()) == n) return pids;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "ranks did not start; logs in " << dir_;
    return pids;
  }
  std::vector<std::string> SleepingRank() {
    return {"/bin/sh", "-c",
            "echo $$ > " + dir_ + "/rank.$OMPI_COMM_WORLD_RANK.tmp && mv " + dir_ +
                "/rank.$OMPI_COMM_WORLD_RANK.tmp " + dir_ + "/rank.$OMPI_COMM_WORLD_RANK; " +
                "case $WEFT_JOB_ID in *.a0) exec sleep 60;; esac"};
  }
  void ExpectAllDead(const std::vector<pid_t>& pids, int timeout_ms) {
    Deadline d = Deadline::AfterMs(timeout_ms);
    for (pid_t p : pids) {
      while (!Dead(p) && !d.Expired()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      EXPECT_TRUE(Dead(p)) << "rank pid " << p << " still running";
    }
  }
};

TEST_F(LaunchE2eTest, MpirunFourRankAllReduceSucceeds) {
  StartScheduler();
  StartAgent("n1", 2);
  StartAgent("n2", 2);
  WaitNodes(2);
  auto job = Submit(4, {kWeft, "bench", "allreduce", "-b", "8", "-e", "64K", "-n", "5", "-w", "1"},
                    v1::LAUNCHER_MPIRUN, 0, {"WEFT_TRANSPORT=shm,tcp"});
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  auto events = Watch(job->id(), 90000);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::SUCCEEDED) << events.back().message() << "; " << dir_;
  bool started = false;
  for (const auto& e : events) started |= e.message().find("mpirun started") != std::string::npos;
  EXPECT_TRUE(started);
  v1::Job j = Get(job->id());
  EXPECT_EQ(j.spec().launcher(), v1::LAUNCHER_MPIRUN);
  ASSERT_EQ(j.placement_size(), 4);
  // Both nodes are one host: one hostfile line holding all four ranks.
  const std::string base = dir_ + "/mpirun/" + job->id() + ".a0";
  EXPECT_EQ(ReadFile(base + ".hostfile"), "127.0.0.1 slots=4\n");
  std::string out = ReadFile(base + ".log");
  EXPECT_NE(out.find("# weft bench allreduce: 4 ranks"), std::string::npos) << out;
  EXPECT_NE(out.find("Out of bounds values : 0 OK"), std::string::npos) << out;
  // The agents never ran a rank of it.
  for (const char* n : {"n1", "n2"}) {
    EXPECT_EQ(ReadFile(dir_ + "/agent-" + n + ".log").find("started " + job->id()),
              std::string::npos);
  }
}

TEST_F(LaunchE2eTest, MpirunFailingRankFailsTheJobWithItsExitCode) {
  StartScheduler();
  StartAgent("n1", 2);
  StartAgent("n2", 2);
  WaitNodes(2);
  // Through the CLI: weft submit --launcher mpirun, weft job shows it.
  std::string out;
  int rc = Sh(std::string(kWeft) + " submit --scheduler " + addr_ +
                  " --token tok -n 4 --launcher mpirun --json -- /bin/sh -c "
                  "'echo rank $OMPI_COMM_WORLD_RANK; [ $OMPI_COMM_WORLD_RANK = 2 ] && exit 3; "
                  "exit 0'",
              &out);
  ASSERT_EQ(rc, 0) << out;
  size_t at = out.find("\"id\": \"");
  ASSERT_NE(at, std::string::npos) << out;
  std::string id = out.substr(at + 7, out.find('"', at + 7) - at - 7);
  EXPECT_NE(out.find("\"launcher\": \"LAUNCHER_MPIRUN\""), std::string::npos) << out;
  auto events = Watch(id, 60000);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::FAILED);
  v1::Job j = Get(id);
  EXPECT_EQ(j.state(), v1::FAILED);
  EXPECT_NE(j.reason().find("mpirun exited with code 3"), std::string::npos) << j.reason();
  // Open MPI names the failed rank only when others still ran; then the reason says so.
  ASSERT_EQ(j.ranks_size(), 4);
  EXPECT_EQ(j.ranks(2).state(), "exited");
  EXPECT_EQ(j.ranks(2).exit_code(), 3);
  // An event carries mpirun's output tail.
  bool tail = false;
  for (const auto& e : events) {
    tail |= e.exit_code() == 3 && e.log_tail().find("rank 2") != std::string::npos &&
            e.log_tail().find("non-zero exit code") != std::string::npos;
  }
  EXPECT_TRUE(tail);
  // Bad launchers are refused, naming the field (service) or the flag (CLI).
  auto bad = Submit(1, {"/bin/true"}, static_cast<v1::Launcher>(7));
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("spec.launcher: 7"), std::string::npos)
      << bad.status().ToString();
  EXPECT_EQ(Sh(std::string(kWeft) + " submit --scheduler " + addr_ +
                   " --token tok --launcher slurm -- /bin/true",
               &out),
            2);
  EXPECT_NE(out.find("--launcher: 'slurm'"), std::string::npos) << out;
  rc = Sh(std::string(kWeft) + " job " + id + " --scheduler " + addr_ + " --token tok", &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("launcher:  mpirun"), std::string::npos) << out;
  EXPECT_NE(out.find("FAILED"), std::string::npos) << out;
  rc = Sh(std::string(kWeft) + " job " + id + " --manifest --scheduler " + addr_ + " --token tok",
          &out);
  // A finished job still has its placement: the preview shows what ran.
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("127.0.0.1 slots=4"), std::string::npos) << out;
  EXPECT_NE(out.find("mpirun --hostfile"), std::string::npos) << out;
}

TEST_F(LaunchE2eTest, MpirunCancelKillsEveryRank) {
  StartScheduler();
  StartAgent("n1", 2);
  StartAgent("n2", 2);
  WaitNodes(2);
  auto job = Submit(4, SleepingRank(), v1::LAUNCHER_MPIRUN);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  WaitState(job->id(), v1::RUNNING, 20000);
  std::vector<pid_t> pids = WaitRankPids(4);
  ASSERT_EQ(pids.size(), 4u);
  v1::CancelJobRequest c;
  c.set_job_id(job->id());
  ASSERT_TRUE(client_->CancelJob(c, Deadline::AfterMs(5000)).ok());
  ExpectAllDead(pids, 10000);
  EXPECT_EQ(Get(job->id()).state(), v1::CANCELLED);
  // Its slots are free again: a 4-rank agents job fits at once.
  auto next = Submit(4, {"/bin/true"}, v1::LAUNCHER_AGENTS);
  ASSERT_TRUE(next.ok());
  auto events = Watch(next->id(), 30000);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::SUCCEEDED);
}

TEST_F(LaunchE2eTest, MpirunLostNodeKillsTheAttemptAndRetries) {
  StartScheduler();
  StartAgent("n1", 2);
  StartAgent("n2", 2);
  WaitNodes(2);
  // Two ranks pack onto one node; the first attempt sleeps, the retry finishes at once.
  auto job = Submit(2, SleepingRank(), v1::LAUNCHER_MPIRUN, 1);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  WaitState(job->id(), v1::RUNNING, 20000);
  std::vector<pid_t> pids = WaitRankPids(2);
  const std::string victim = Get(job->id()).placement(0).node_id();
  agents_[victim]->Kill(SIGKILL);
  auto events = Watch(job->id(), 30000);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::SUCCEEDED) << events.back().message();
  v1::Job j = Get(job->id());
  EXPECT_EQ(j.attempt(), 1);
  for (const auto& p : j.placement()) EXPECT_NE(p.node_id(), victim);
  bool lost = false;
  for (const auto& e : events)
    lost |= e.message().find("node " + victim + " lost") != std::string::npos;
  EXPECT_TRUE(lost);
  ExpectAllDead(pids, 10000);
}

TEST_F(LaunchE2eTest, MpirunJobOfAKilledSchedulerFailsOverOnRestart) {
  StartScheduler();
  StartAgent("n1", 4);
  WaitNodes(1);
  auto job = Submit(2, SleepingRank(), v1::LAUNCHER_MPIRUN);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  WaitState(job->id(), v1::RUNNING, 20000);
  std::vector<pid_t> pids = WaitRankPids(2);
  scheduler_->Kill(SIGKILL);
  StartScheduler({}, {}, port_);
  auto events = Watch(job->id(), 30000);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::FAILED);
  EXPECT_NE(Get(job->id()).reason().find("lost with a scheduler restart"), std::string::npos)
      << Get(job->id()).reason();
  ExpectAllDead(pids, 10000);
}

TEST_F(LaunchE2eTest, KubernetesWithoutKubectlRendersAndWaits) {
  StartScheduler({"--k8s-namespace", "train", "--k8s-image", "weft:test"});
  StartAgent("n1", 2);
  StartAgent("n2", 2);
  WaitNodes(2);
  auto job = Submit(4, {"/usr/local/bin/weft", "bench", "allreduce"}, v1::LAUNCHER_KUBERNETES);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  const std::string manifest = dir_ + "/k8s/" + job->id() + ".yaml";
  Deadline d = Deadline::AfterMs(10000);
  while (Get(job->id()).reason().find("nothing applied it") == std::string::npos && !d.Expired()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  v1::Job j = Get(job->id());
  EXPECT_EQ(j.state(), v1::SCHEDULED);
  EXPECT_NE(j.reason().find(manifest), std::string::npos) << j.reason();
  std::string y = ReadFile(manifest);
  EXPECT_NE(y.find("completions: 4"), std::string::npos) << y;
  EXPECT_NE(y.find("namespace: train"), std::string::npos) << y;
  std::string preview;
  Get(job->id(), &preview);
  EXPECT_NE(preview.find("completionMode: Indexed"), std::string::npos) << preview;
  EXPECT_NE(preview.find("<redacted>"), std::string::npos) << preview;
  EXPECT_EQ(y.find("<redacted>"), std::string::npos);  // the applied file has the real secret
  // The rendered file passes kubectl's own rendering.
  std::string kdir = dir_ + "/kustomize";
  std::filesystem::create_directories(kdir);
  std::filesystem::copy_file(manifest, kdir + "/job.yaml");
  std::ofstream(kdir + "/kustomization.yaml") << "resources:\n  - job.yaml\n";
  std::string out;
  EXPECT_EQ(Sh("kubectl kustomize " + kdir, &out), 0) << out;
  EXPECT_NE(out.find("parallelism: 4"), std::string::npos) << out;
  // Cancelling frees the slots.
  v1::CancelJobRequest c;
  c.set_job_id(job->id());
  ASSERT_TRUE(client_->CancelJob(c, Deadline::AfterMs(5000)).ok());
}

TEST_F(LaunchE2eTest, KubernetesApplyAgainstAnUnreachableApiServerFails) {
  // A port nothing listens on: bind one, note it, close it.
  int closed_port = 0;
  {
    auto l = ListenTcp("127.0.0.1", 0);
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    closed_port = l->port;
  }
  const std::string kubeconfig = dir_ + "/kubeconfig";
  std::ofstream(kubeconfig) << "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n"
                               "    server: https://127.0.0.1:"
                            << closed_port
                            << "\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\n"
                               "current-context: x\nusers:\n- name: u\n  user: {token: t}\n";
  StartScheduler({"--kubectl", "/usr/bin/kubectl", "--kubectl-timeout-ms", "20000"},
                 {"KUBECONFIG=" + kubeconfig});
  StartAgent("n1", 2);
  WaitNodes(1);
  auto job = Submit(2, {"/usr/local/bin/weft", "bench", "allreduce"}, v1::LAUNCHER_KUBERNETES);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  auto events = Watch(job->id(), 30000);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::FAILED);
  std::string reason = Get(job->id()).reason();
  EXPECT_NE(reason.find("kubectl apply -f " + dir_ + "/k8s/" + job->id() + ".yaml failed"),
            std::string::npos)
      << reason;
  EXPECT_NE(reason.find("127.0.0.1:" + std::to_string(closed_port)), std::string::npos) << reason;
}

}  // namespace
}  // namespace weft::scheduler
