// The node agent. One thread runs everything: heartbeat, reconcile, poll the ranks' output pipes,
// reap exits, escalate kills. Ranks are forked only after argv/envp are built; the child calls
// async-signal-safe functions only until execvpe (gRPC's threads exist in this process).
#include "scheduler/node_agent.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "base/host_identity.h"
#include "base/logging.h"
#include "base/socket_util.h"
#include "rendezvous/tcp_store.h"
#include "scheduler/scheduler_client.h"

extern char** environ;

namespace weft::scheduler {

namespace {

using Key = std::pair<std::string, int>;            // job id, attempt
using TaskKey = std::tuple<std::string, int, int>;  // job id, attempt, rank

struct Task {
  std::string job_id;
  int attempt = 0;
  int rank = 0;
  pid_t pid = -1;
  UniqueFd out;
  std::string tail;
  std::string partial;
  bool exited = false;
  int exit_code = 0;
  bool kill_sent = false;
  Clock::time_point kill_at;
};

struct ServedStore {
  std::unique_ptr<rendezvous::TcpStoreServer> server;
  std::string url;
};

class Agent {
 public:
  Agent(AgentOptions o, std::unique_ptr<SchedulerClient> client)
      : o_(std::move(o)), client_(std::move(client)) {}

  Status Run(const std::atomic<bool>* stop);

 private:
  Status Register(const std::atomic<bool>* stop);
  // OK, or the fatal error; `reregister` is set when the scheduler no longer knows this
  // incarnation.
  Status HeartbeatOnce(bool* reregister);
  void Apply(const v1::HeartbeatResponse& resp);
  void Spawn(const v1::Assignment& a, const v1::RankPlacement& r, const std::string& store_url);
  void PollOutput(int timeout_ms);
  void Drain(Task& t);
  void Reap();
  void KillAll(bool wait);
  void AppendOutput(Task& t, const char* data, size_t n);

  AgentOptions o_;
  std::unique_ptr<SchedulerClient> client_;
  int64_t incarnation_ = 0;
  int interval_ms_ = 1000;
  bool urgent_ = false;
  std::map<TaskKey, std::unique_ptr<Task>> tasks_;
  std::map<Key, ServedStore> stores_;
  std::string last_error_;
};

Status Agent::Register(const std::atomic<bool>* stop) {
  v1::RegisterNodeRequest req;
  auto* n = req.mutable_node();
  n->set_node_id(o_.node_id);
  n->set_host_id(HostIdentity());
  n->set_switch_id(o_.switch_id);
  n->set_address(o_.address);
  n->set_slots(o_.slots);
  n->set_memory_bytes(o_.memory_bytes);
  int backoff_ms = 100;
  while (!stop->load()) {
    auto resp = client_->RegisterNode(req, Deadline::AfterMs(5000));
    if (resp.ok()) {
      incarnation_ = resp->incarnation();
      interval_ms_ = std::max(10, resp->heartbeat_interval_ms());
      WEFT_LOG(INFO) << "agent " << o_.node_id << " registered with " << client_->address()
                     << " (incarnation " << incarnation_ << ")";
      last_error_.clear();
      return Status::Ok();
    }
    StatusCode c = resp.status().code();
    if (c == StatusCode::kUnauthenticated || c == StatusCode::kPermissionDenied ||
        c == StatusCode::kInvalidArgument) {
      return resp.status();
    }
    if (resp.status().message() != last_error_) {
      WEFT_LOG(WARN) << "agent " << o_.node_id << ": " << resp.status().ToString() << "; retrying";
      last_error_ = resp.status().message();
    }
    for (int waited = 0; waited < backoff_ms && !stop->load(); waited += 50) {
      PollOutput(50);
      Reap();
    }
    backoff_ms = std::min(backoff_ms * 2, 2000);
  }
  return CancelledError("agent stopped before registering");
}

Status Agent::HeartbeatOnce(bool* reregister) {
  *reregister = false;
  v1::HeartbeatRequest req;
  req.set_node_id(o_.node_id);
  req.set_incarnation(incarnation_);
  for (const auto& [key, t] : tasks_) {
    auto* ts = req.add_tasks();
    ts->set_job_id(t->job_id);
    ts->set_attempt(t->attempt);
    ts->set_rank(t->rank);
    ts->set_state(t->exited ? v1::TaskStatus::EXITED : v1::TaskStatus::RUNNING);
    ts->set_exit_code(t->exit_code);
    if (t->exited) ts->set_log_tail(t->tail);
  }
  for (const auto& [key, s] : stores_) {
    auto* st = req.add_stores();
    st->set_job_id(key.first);
    st->set_attempt(key.second);
    st->set_url(s.url);
  }
  auto resp = client_->Heartbeat(req, Deadline::AfterMs(5000));
  if (!resp.ok()) {
    StatusCode c = resp.status().code();
    if (c == StatusCode::kUnauthenticated || c == StatusCode::kPermissionDenied) {
      return resp.status();
    }
    if (c == StatusCode::kNotFound || c == StatusCode::kFailedPrecondition) {
      WEFT_LOG(WARN) << "agent " << o_.node_id << ": " << resp.status().ToString()
                     << "; stopping its ranks and registering again";
      *reregister = true;
      return Status::Ok();
    }
    if (resp.status().message() != last_error_) {
      WEFT_LOG(WARN) << "agent " << o_.node_id << ": heartbeat failed: " << resp.status().ToString()
                     << " (ranks keep running; retrying)";
      last_error_ = resp.status().message();
    }
    return Status::Ok();
  }
  if (!last_error_.empty()) {
    WEFT_LOG(WARN) << "agent " << o_.node_id << ": scheduler reachable again";
    last_error_.clear();
  }
  interval_ms_ = std::max(10, resp->heartbeat_interval_ms());
  Apply(*resp);
  return Status::Ok();
}

void Agent::Apply(const v1::HeartbeatResponse& resp) {
  std::map<Key, std::set<int>> desired;
  for (const v1::Assignment& a : resp.assignments()) {
    Key key{a.job_id(), a.attempt()};
    auto& ranks = desired[key];
    for (const auto& r : a.ranks()) ranks.insert(r.rank());
    std::string url = a.store_url();
    if (a.serve_store()) {
      auto it = stores_.find(key);
      if (it == stores_.end()) {
        auto server = rendezvous::TcpStoreServer::Start(o_.address, 0, a.job_secret());
        if (!server.ok()) {
          WEFT_LOG(ERROR) << "agent " << o_.node_id << ": cannot serve the store for " << a.job_id()
                          << ": " << server.status().ToString();
          continue;
        }
        ServedStore s;
        s.url = "tcp://" + HostPort{o_.address, (*server)->port()}.ToString();
        s.server = std::move(server).value();
        it = stores_.emplace(key, std::move(s)).first;
        urgent_ = true;  // tell the scheduler the URL now, not a heartbeat later
      }
      url = it->second.url;
    }
    if (url.empty()) continue;  // rank 0's node has not served the store yet
    for (const auto& r : a.ranks()) {
      if (!tasks_.count({a.job_id(), a.attempt(), r.rank()})) Spawn(a, r, url);
    }
  }
  for (auto it = tasks_.begin(); it != tasks_.end();) {
    Task& t = *it->second;
    auto d = desired.find({t.job_id, t.attempt});
    bool wanted = d != desired.end() && d->second.count(t.rank);
    if (wanted) {
      ++it;
      continue;
    }
    if (t.exited) {
      it = tasks_.erase(it);
      continue;
    }
    if (!t.kill_sent) {
      WEFT_LOG(INFO) << "agent " << o_.node_id << ": stopping " << t.job_id << " rank " << t.rank
                     << " (no longer assigned)";
      kill(-t.pid, SIGTERM);
      t.kill_sent = true;
      t.kill_at = Clock::now() + std::chrono::milliseconds(o_.grace_ms);
    }
    ++it;
  }
  for (auto it = stores_.begin(); it != stores_.end();) {
    it = desired.count(it->first) ? std::next(it) : stores_.erase(it);
  }
}

void Agent::Spawn(const v1::Assignment& a, const v1::RankPlacement& r,
                  const std::string& store_url) {
  auto task = std::make_unique<Task>();
  task->job_id = a.job_id();
  task->attempt = a.attempt();
  task->rank = r.rank();
  std::vector<std::string> env;
  auto add = [&](const std::string& k, const std::string& v) { env.push_back(k + "=" + v); };
  add("WEFT_RANK", std::to_string(r.rank()));
  add("WEFT_WORLD_SIZE", std::to_string(a.world_size()));
  add("WEFT_LOCAL_RANK", std::to_string(r.local_rank()));
  add("WEFT_LOCAL_SIZE", std::to_string(a.local_size()));
  add("WEFT_STORE", store_url);
  add("WEFT_JOB_SECRET", a.job_secret());
  // Unique per attempt: a retry must not meet the previous attempt's keys in a store.
  add("WEFT_JOB_ID", a.job_id() + ".a" + std::to_string(a.attempt()));
  add("RANK", std::to_string(r.rank()));
  add("WORLD_SIZE", std::to_string(a.world_size()));
  add("LOCAL_RANK", std::to_string(r.local_rank()));
  add("LOCAL_WORLD_SIZE", std::to_string(a.local_size()));
  for (const auto& e : a.env()) env.push_back(e);
  std::set<std::string> ours;
  for (const auto& e : env) ours.insert(e.substr(0, e.find('=')));
  for (char** p = environ; *p; ++p) {
    std::string e = *p;
    if (!ours.count(e.substr(0, e.find('=')))) env.push_back(e);
  }
  std::vector<std::string> argv(a.argv().begin(), a.argv().end());
  std::vector<char*> cargv, cenv;
  for (auto& s : argv) cargv.push_back(s.data());
  cargv.push_back(nullptr);
  for (auto& s : env) cenv.push_back(s.data());
  cenv.push_back(nullptr);

  int fds[2];
  if (argv.empty() || pipe2(fds, O_CLOEXEC) != 0) {
    task->exited = true;
    task->exit_code = 127;
    task->tail = argv.empty() ? "weft agent: empty argv" : "weft agent: pipe failed";
    tasks_[{task->job_id, task->attempt, task->rank}] = std::move(task);
    urgent_ = true;
    return;
  }
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    execvpe(cargv[0], cargv.data(), cenv.data());
    const char* msg = "weft agent: cannot execute the program\n";
    (void)!write(2, msg, strlen(msg));
    _exit(errno == ENOENT ? 127 : 126);
  }
  close(fds[1]);
  if (pid < 0) {
    close(fds[0]);
    task->exited = true;
    task->exit_code = 127;
    task->tail = std::string("weft agent: fork failed: ") + strerror(errno);
  } else {
    setpgid(pid, pid);
    task->pid = pid;
    task->out.Reset(fds[0]);
    fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    WEFT_LOG(INFO) << "agent " << o_.node_id << ": started " << a.job_id() << " rank " << r.rank()
                   << " (pid " << pid << ")";
  }
  tasks_[{task->job_id, task->attempt, task->rank}] = std::move(task);
  urgent_ = true;  // report "running" promptly
}

void Agent::AppendOutput(Task& t, const char* data, size_t n) {
  t.tail.append(data, n);
  if (t.tail.size() > o_.log_tail_bytes) t.tail.erase(0, t.tail.size() - o_.log_tail_bytes);
  if (!o_.echo_output) return;
  t.partial.append(data, n);
  size_t nl;
  while ((nl = t.partial.find('\n')) != std::string::npos) {
    std::string line =
        "[" + t.job_id + " r" + std::to_string(t.rank) + "] " + t.partial.substr(0, nl + 1);
    (void)!fwrite(line.data(), 1, line.size(), stdout);
    t.partial.erase(0, nl + 1);
  }
  fflush(stdout);
}

void Agent::Drain(Task& t) {
  char buf[4096];
  while (t.out.valid()) {
    ssize_t r = read(t.out.get(), buf, sizeof(buf));
    if (r > 0) {
      AppendOutput(t, buf, static_cast<size_t>(r));
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) t.out.Reset();
    break;
  }
}

void Agent::PollOutput(int timeout_ms) {
  std::vector<pollfd> fds;
  std::vector<Task*> owners;
  for (auto& [k, t] : tasks_) {
    if (t->out.valid()) {
      fds.push_back({t->out.get(), POLLIN, 0});
      owners.push_back(t.get());
    }
  }
  if (fds.empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(timeout_ms));
    return;
  }
  int n = poll(fds.data(), fds.size(), timeout_ms);
  if (n <= 0) return;
  for (size_t i = 0; i < fds.size(); ++i) {
    if (fds[i].revents) Drain(*owners[i]);
  }
}

void Agent::Reap() {
  for (auto& [k, t] : tasks_) {
    if (t->exited || t->pid <= 0) continue;
    int status = 0;
    pid_t r = waitpid(t->pid, &status, WNOHANG);
    if (r != t->pid) continue;
    Drain(*t);
    t->out.Reset();  // a grandchild holding the pipe must not keep us reading
    t->exited = true;
    t->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    kill(-t->pid, SIGKILL);  // whatever the rank left behind in its process group
    WEFT_LOG(INFO) << "agent " << o_.node_id << ": " << t->job_id << " rank " << t->rank
                   << " exited with code " << t->exit_code;
    urgent_ = true;
  }
  auto now = Clock::now();
  for (auto& [k, t] : tasks_) {
    if (!t->exited && t->kill_sent && now >= t->kill_at) {
      kill(-t->pid, SIGKILL);
      t->kill_at = now + std::chrono::hours(1);
    }
  }
}

void Agent::KillAll(bool wait) {
  for (auto& [k, t] : tasks_) {
    if (!t->exited && t->pid > 0 && !t->kill_sent) {
      kill(-t->pid, SIGTERM);
      t->kill_sent = true;
      t->kill_at = Clock::now() + std::chrono::milliseconds(o_.grace_ms);
    }
  }
  if (wait) {
    Deadline d = Deadline::AfterMs(o_.grace_ms + 2000);
    while (!d.Expired()) {
      Reap();
      bool all = true;
      for (auto& [k, t] : tasks_) all &= t->exited || t->pid <= 0;
      if (all) break;
      PollOutput(20);
    }
  }
}

Status Agent::Run(const std::atomic<bool>* stop) {
  WEFT_RETURN_IF_ERROR(Register(stop));
  auto next = Clock::now();
  Status fatal;
  while (!stop->load()) {
    if (urgent_ || Clock::now() >= next) {
      urgent_ = false;
      bool reregister = false;
      fatal = HeartbeatOnce(&reregister);
      if (!fatal.ok()) break;
      if (reregister) {
        KillAll(/*wait=*/true);
        tasks_.clear();
        stores_.clear();
        fatal = Register(stop);
        if (!fatal.ok()) break;
      }
      next = Clock::now() + std::chrono::milliseconds(interval_ms_);
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now());
    PollOutput(static_cast<int>(std::clamp<int64_t>(left.count(), 0, 100)));
    Reap();
  }
  KillAll(/*wait=*/true);
  if (fatal.code() == StatusCode::kCancelled) return Status::Ok();
  return fatal;
}

}  // namespace

Status RunNodeAgent(const AgentOptions& in, const std::atomic<bool>* stop) {
  AgentOptions o = in;
  if (o.scheduler.empty()) return InvalidArgumentError("--scheduler: missing");
  WEFT_ASSIGN_OR_RETURN(HostPort sched, ParseHostPort(o.scheduler));
  if (o.node_id.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    o.node_id = host;
  }
  if (o.switch_id.empty()) o.switch_id = "default";
  if (o.slots <= 0) o.slots = static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  if (o.memory_bytes <= 0) {
    o.memory_bytes = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  }
  if (o.address.empty()) {
    // The address this host uses towards the scheduler is one its peers can likely reach.
    auto fd = ConnectTcp(sched, Deadline::AfterMs(5000));
    if (fd.ok()) {
      auto local = LocalAddressOf(fd->get());
      if (local.ok()) o.address = *local;
    }
    if (o.address.empty()) {
      o.address = "127.0.0.1";
      WEFT_LOG(WARN) << "agent: cannot tell this host's address; advertising 127.0.0.1 "
                        "(set --address)";
    }
  }
  signal(SIGPIPE, SIG_IGN);
  WEFT_ASSIGN_OR_RETURN(auto client, SchedulerClient::Create(o.scheduler, o.token));
  Agent agent(o, std::move(client));
  return agent.Run(stop);
}

}  // namespace weft::scheduler
