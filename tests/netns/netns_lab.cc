#include "tests/netns/netns_lab.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/deadline.h"

namespace weft::testing {
namespace {

constexpr const char* kIp = "/usr/sbin/ip";
constexpr const char* kNamePrefix = "weftlab-";

std::string NewLogPath() {
  static std::atomic<int> counter{0};
  return "/tmp/weft-netns-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + ".log";
}

pid_t Spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
            const std::string& log_path) {
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    // Ranks get their launcher variables from `env` only, never from the test's environment.
    for (const char* v :
         {"WEFT_RANK", "WEFT_WORLD_SIZE", "WEFT_LOCAL_RANK", "WEFT_STORE", "RANK", "WORLD_SIZE",
          "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "WEFT_JOB_SECRET", "WEFT_JOB_ID",
          "WEFT_HOST_ID", "WEFT_TRANSPORT", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID",
          "JOB_COMPLETION_INDEX"}) {
      unsetenv(v);
    }
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> a;
    for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    execv(a[0], a.data());
    _exit(127);
  }
  return pid;
}

int DecodeStatus(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st); }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::map<std::string, std::string>& env, int timeout_ms) {
  BackgroundProcess p(argv, env);
  CommandResult r;
  r.timed_out = !p.WaitExit(timeout_ms);
  r.exit_code = r.timed_out ? -1 : p.exit_code();
  r.output = p.Output();
  return r;
}

BackgroundProcess::BackgroundProcess(const std::vector<std::string>& argv,
                                     const std::map<std::string, std::string>& env)
    : log_path_(NewLogPath()) {
  pid_ = Spawn(argv, env, log_path_);
  if (pid_ < 0) {
    exited_ = true;
    exit_code_ = 127;
  }
}

BackgroundProcess::BackgroundProcess(BackgroundProcess&& o) noexcept
    : pid_(o.pid_), exited_(o.exited_), exit_code_(o.exit_code_), log_path_(o.log_path_) {
  o.pid_ = -1;
  o.exited_ = true;
  o.log_path_.clear();
}

BackgroundProcess::~BackgroundProcess() {
  if (pid_ > 0 && !exited_) {
    kill(-pid_, SIGKILL);  // its group: the process and anything it started
    kill(pid_, SIGKILL);
    int st = 0;
    waitpid(pid_, &st, 0);
  }
  if (!log_path_.empty()) unlink(log_path_.c_str());
}

bool BackgroundProcess::WaitExit(int timeout_ms) {
  if (exited_) return true;
  Deadline d = Deadline::AfterMs(timeout_ms);
  while (true) {
    int st = 0;
    pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      exit_code_ = DecodeStatus(st);
      return true;
    }
    if (r < 0) {
      exited_ = true;
      exit_code_ = -1;
      return true;
    }
    if (d.Expired()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::string BackgroundProcess::Output() const { return ReadFile(log_path_); }

std::string StackDump(pid_t pid) {
  const std::string gdb = "/usr/bin/gdb";
  if (access(gdb.c_str(), X_OK) != 0) return "(no stacks: " + gdb + " is not installed)\n";
  CommandResult r = RunCommand({gdb, "-batch", "-nx", "-p", std::to_string(pid), "-ex",
                                "thread apply all bt"},
                               {}, 30000);
  return "stacks of pid " + std::to_string(pid) + (r.timed_out ? " (gdb timed out)" : "") +
         ":\n" + r.output;
}

// ---------------------------------------------------------------------------------------------

Status NetnsLab::Ip(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {kIp};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = RunCommand(argv, {}, 10000);
  if (r.exit_code != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
    return FailedPreconditionError("`" + cmd + "` failed (exit " + std::to_string(r.exit_code) +
                                   "): " + r.output);
  }
  return Status::Ok();
}

// Namespaces are named weftlab-<pid>-...; those of a pid that no longer runs are leftovers.
void NetnsLab::RemoveStale() {
  DIR* d = opendir("/run/netns");
  if (d == nullptr) return;
  std::vector<std::string> stale;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind(kNamePrefix, 0) != 0) continue;
    pid_t owner = static_cast<pid_t>(std::atol(name.c_str() + std::strlen(kNamePrefix)));
    if (owner > 0 && kill(owner, 0) != 0 && errno == ESRCH) stale.push_back(name);
  }
  closedir(d);
  for (const auto& ns : stale) RunCommand({kIp, "netns", "delete", ns}, {}, 10000);
}

Result<std::unique_ptr<NetnsLab>> NetnsLab::Create(int hosts) {
  if (geteuid() != 0) {
    return FailedPreconditionError(
        "the network-namespace lab needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create "
        "namespaces and veth links; CI runs these tests as root");
  }
  if (access(kIp, X_OK) != 0) {
    return FailedPreconditionError(std::string(kIp) + " not found: install iproute2");
  }
  RemoveStale();
  static std::atomic<int> counter{0};
  std::unique_ptr<NetnsLab> lab(new NetnsLab());
  lab->prefix_ =
      std::string(kNamePrefix) + std::to_string(getpid()) + "-" + std::to_string(counter++);
  lab->switch_ns_ = lab->prefix_ + "-sw";
  auto fail = [&](const Status& s) {
    return s.WithContext("creating the network-namespace lab (" + lab->prefix_ + ")");
  };
  Status s = lab->Ip({"netns", "add", lab->switch_ns_});
  if (!s.ok()) return fail(s);
  lab->created_.push_back(lab->switch_ns_);
  s = lab->Ip({"-n", lab->switch_ns_, "link", "add", "br0", "type", "bridge"});
  if (s.ok()) s = lab->Ip({"-n", lab->switch_ns_, "link", "set", "br0", "up"});
  if (!s.ok()) return fail(s);
  for (int i = 0; i < hosts; ++i) {
    std::string ns = lab->prefix_ + "-h" + std::to_string(i);
    std::string port = "port" + std::to_string(i);
    s = lab->Ip({"netns", "add", ns});
    if (!s.ok()) return fail(s);
    lab->created_.push_back(ns);
    lab->host_ns_.push_back(ns);
    // Both ends are made directly inside their namespaces: the root namespace never sees them.
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"link", "add", "weft0", "netns", ns, "type", "veth", "peer", "name", port, "netns",
              lab->switch_ns_},
             {"-n", lab->switch_ns_, "link", "set", port, "master", "br0"},
             {"-n", lab->switch_ns_, "link", "set", port, "up"},
             {"-n", ns, "addr", "add", lab->host_address(i) + "/24", "dev", "weft0"},
             {"-n", ns, "link", "set", "weft0", "up"},
             {"-n", ns, "link", "set", "lo", "up"}}) {
      s = lab->Ip(args);
      if (!s.ok()) return fail(s);
    }
  }
  return lab;
}

NetnsLab::~NetnsLab() {
  for (auto it = created_.rbegin(); it != created_.rend(); ++it) {
    RunCommand({kIp, "netns", "delete", *it}, {}, 10000);
  }
}

std::vector<std::string> NetnsLab::InHost(int i) const {
  return {kIp, "netns", "exec", host_ns_[i]};
}

Status NetnsLab::SetLink(int i, bool up) {
  return Ip({"-n", host_ns_[i], "link", "set", "weft0", up ? "up" : "down"});
}

Status NetnsLab::AddDeadInterface(int i, const std::string& name) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"-n", host_ns_[i], "link", "add", name, "type", "bridge"},
           {"-n", host_ns_[i], "addr", "add", dead_address(i) + "/24", "dev", name},
           {"-n", host_ns_[i], "link", "set", name, "up"}}) {
    WEFT_RETURN_IF_ERROR(Ip(args));
  }
  return Status::Ok();
}

std::string WeftBinary() {
  const char* d = std::getenv("WEFT_BIN_DIR");
  return d ? std::string(d) + "/weft" : std::string("build/bin/weft");
}

std::vector<BackgroundProcess> StartWeftRanks(const NetnsLab& lab, int ranks_per_host,
                                              const std::vector<std::string>& args,
                                              const std::map<std::string, std::string>& env) {
  const int world = lab.hosts() * ranks_per_host;
  std::vector<BackgroundProcess> ranks;
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> argv = lab.InHost(r / ranks_per_host);
    argv.push_back("/usr/bin/stdbuf");
    argv.push_back("-oL");
    argv.push_back(WeftBinary());
    argv.insert(argv.end(), args.begin(), args.end());
    std::map<std::string, std::string> e = {
        {"RANK", std::to_string(r)},
        {"WORLD_SIZE", std::to_string(world)},
        {"LOCAL_RANK", std::to_string(r % ranks_per_host)},
        {"MASTER_ADDR", lab.host_address(0)},
        {"MASTER_PORT", "29500"},
        {"WEFT_INIT_TIMEOUT_MS", "30000"},
        {"WEFT_TIMEOUT_MS", "20000"},
        {"WEFT_TRANSPORT", "shm,tcp"},
    };
    for (const auto& [k, v] : env) e[k] = v;
    ranks.emplace_back(argv, e);
  }
  return ranks;
}

RanksOutcome WaitForRanks(std::vector<BackgroundProcess>& ranks, int timeout_ms) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  RanksOutcome o;
  for (auto& rank : ranks) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    const bool exited = rank.WaitExit(std::max<int>(static_cast<int>(left.count()), 1));
    o.out.push_back(rank.Output());
    o.code.push_back(exited ? rank.exit_code() : -1);
  }
  return o;
}

}  // namespace weft::testing
