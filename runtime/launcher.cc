// `weft run`: one thread, one poll loop. The loop watches a signalfd (SIGCHLD and the signals it
// forwards), every rank's stdout and stderr pipe, and every rank's exec-error pipe; it never blocks
// anywhere else, so a signal, a rank's death and its output are handled in the order they come.
// Ranks are forked from this thread only after everything the child needs (argv, envp, the
// resolved program path) has been built, because the store server's thread may hold locks at
// fork time: the child runs async-signal-safe calls only, up to execve.
#include "runtime/launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/deadline.h"
#include "base/env.h"
#include "base/hmac.h"
#include "base/socket_util.h"
#include "rendezvous/tcp_store.h"

extern char** environ;

namespace weft::runtime {
namespace {

WEFT_ENV_KNOB(kRunGraceMs, "WEFT_RUN_GRACE_MS", "5000",
              "weft run: ms from SIGTERM (or a forwarded signal) to SIGKILL when stopping ranks");

// Signals the launcher takes over and forwards to every rank's process group (unless the caller
// ignores them, as under nohup: then they stay ignored, for the ranks too).
constexpr int kForwardedSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
constexpr size_t kReadChunk = 64 << 10;
// Chunks read from one pipe per poll round, so that one chatty rank cannot starve the others.
constexpr int kChunksPerRound = 4;
// When a rank exits, its pipes are drained (up to this many chunks) before its exit is reported,
// so that its last words come before the launcher's verdict.
constexpr int kChunksAtExit = 256;
// A "line" longer than this is emitted in pieces rather than buffered without bound.
constexpr size_t kMaxLineBytes = 1 << 20;
// After the last rank exits, how long to keep reading pipes that its own children still hold.
constexpr int kDrainMs = 1000;
// After SIGKILL, how long to wait for ranks stuck in the kernel before giving up on them.
constexpr int kReapAfterKillMs = 5000;
constexpr int kMaxGraceMs = 3600 * 1000;
// The loop wakes at least this often and re-checks its children: a safety net, not a mechanism.
constexpr int kPollCapMs = 1000;
constexpr int kSetupErrorExit = 1;

// Variables weft run sets for each rank; --env may not override them.
constexpr const char* kOwnedEnv[] = {
    "WEFT_RANK",  "WEFT_WORLD_SIZE", "WEFT_LOCAL_RANK", "WEFT_LOCAL_SIZE",
    "WEFT_STORE", "WEFT_JOB_SECRET", "WEFT_JOB_ID",     "RANK",
    "WORLD_SIZE", "LOCAL_RANK",      "LOCAL_WORLD_SIZE"};

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

std::string Format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string Format(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  if (n < 0) return std::string();
  return std::string(buf, static_cast<size_t>(n) < sizeof(buf) ? n : sizeof(buf) - 1);
}

// Writes all of `data` to the launcher's stdout or stderr. A reader that is gone (EPIPE) or an fd
// that is otherwise broken gives false; the caller drops further output to it. A reader that
// stalls stalls the launcher, as it would any program writing to it.
bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = write(fd, data.data(), data.size());
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {  // our stdout was made non-blocking by someone else
      pollfd p{fd, POLLOUT, 0};
      poll(&p, 1, 100);
    } else {
      return false;
    }
  }
  return true;
}

// The launcher's own stdout and stderr, remembering which of them broke.
class Output {
 public:
  // False once fd is broken.
  bool Write(int fd, std::string_view data) {
    if (!data.empty() && !broken_[fd] && !WriteAll(fd, data)) broken_[fd] = true;
    return !broken_[fd];
  }
  // A launcher message on stderr.
  void Say(const std::string& line) { Write(STDERR_FILENO, "weft run: " + line + "\n"); }

 private:
  bool broken_[3] = {false, false, false};
};

bool IsEnvName(std::string_view name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  for (char c : name) {
    bool ok =
        (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

Status ValidateOptions(const LaunchOptions& o) {
  if (o.nprocs < 1 || o.nprocs > kMaxLaunchProcs) {
    return InvalidArgumentError("-n " + std::to_string(o.nprocs) + " is out of range (1.." +
                                std::to_string(kMaxLaunchProcs) + ")");
  }
  if (o.argv.empty() || o.argv[0].empty()) {
    return InvalidArgumentError("no program given (put it after '--')");
  }
  if (o.grace_ms < 0 || o.grace_ms > kMaxGraceMs) {
    return InvalidArgumentError("grace " + std::to_string(o.grace_ms) + " ms is out of range (0.." +
                                std::to_string(kMaxGraceMs) + ")");
  }
  for (char c : o.transport) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == ',' || c == '_' || c == '-';
    if (!ok) {
      return InvalidArgumentError("--transport '" + o.transport + "' is not a transport name");
    }
  }
  for (const std::string& kv : o.extra_env) {
    size_t eq = kv.find('=');
    std::string_view name = std::string_view(kv).substr(0, eq);
    if (eq == std::string::npos || !IsEnvName(name)) {
      return InvalidArgumentError("--env '" + kv + "' is not NAME=VALUE");
    }
    for (const char* owned : kOwnedEnv) {
      if (name == owned) {
        return InvalidArgumentError("--env may not set " + std::string(name) +
                                    ": weft run sets it for each rank");
      }
    }
  }
  return Status::Ok();
}

// 0 when `path` names a file execve may run, else the errno execve would most likely give.
int CheckExecutable(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return errno;
  if (S_ISDIR(st.st_mode)) return EISDIR;  // execve says EACCES; this is what the user needs
  if (access(path.c_str(), X_OK) != 0) return errno;
  return 0;
}

// Finds the file execvp would run, here in the parent: "not found" is then reported once before
// anything starts, and the child needs only execve.
int ResolveProgram(const std::string& name, std::string* path) {
  if (name.find('/') != std::string::npos) {
    *path = name;
    return CheckExecutable(name);
  }
  const char* env_path = std::getenv("PATH");
  std::string_view dirs = env_path != nullptr ? env_path : "/bin:/usr/bin";
  int err = ENOENT;
  while (true) {
    size_t colon = dirs.find(':');
    std::string_view dir = dirs.substr(0, colon);
    std::string candidate = (dir.empty() ? std::string(".") : std::string(dir)) + "/" + name;
    int e = CheckExecutable(candidate);
    if (e == 0) {
      *path = candidate;
      return 0;
    }
    if (e == EACCES || e == EISDIR) err = EACCES;  // found but not runnable: report that
    if (colon == std::string_view::npos) break;
    dirs.remove_prefix(colon + 1);
  }
  return err;
}

int ExecErrorExitCode(int err) { return err == ENOENT ? 127 : 126; }

// Blocks the launcher's signals in this thread and reads them from a signalfd. On destruction
// discards what is still pending (a late Ctrl-C, or SIGPIPE from writing to a closed stdout, must
// not kill the process after Launch chose its exit code), then restores the mask and SIGCHLD.
class SignalScope {
 public:
  SignalScope() = default;
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;
  ~SignalScope() {
    if (masked_) {
      timespec zero{0, 0};
      while (sigtimedwait(&set_, nullptr, &zero) > 0) {
      }
      pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
    }
    if (chld_changed_) sigaction(SIGCHLD, &old_chld_, nullptr);
  }

  Status Init() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGCHLD);
    sigaddset(&set_, SIGPIPE);
    for (int sig : kForwardedSignals) {
      struct sigaction sa;
      if (sigaction(sig, nullptr, &sa) == 0 && sa.sa_handler == SIG_IGN) continue;
      sigaddset(&set_, sig);
    }
    // With SIGCHLD ignored the kernel reaps children itself and waitid() cannot report them.
    if (sigaction(SIGCHLD, nullptr, &old_chld_) != 0) return ErrnoError("sigaction", errno);
    if (old_chld_.sa_handler == SIG_IGN || (old_chld_.sa_flags & SA_NOCLDWAIT) != 0) {
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      sigemptyset(&dfl.sa_mask);
      if (sigaction(SIGCHLD, &dfl, nullptr) != 0) return ErrnoError("sigaction", errno);
      chld_changed_ = true;
    }
    int rc = pthread_sigmask(SIG_BLOCK, &set_, &old_mask_);
    if (rc != 0) return ErrnoError("pthread_sigmask", rc);
    masked_ = true;
    fd_.Reset(signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!fd_.valid()) return ErrnoError("signalfd", errno);
    return Status::Ok();
  }

  int fd() const { return fd_.get(); }
  // The mask to give children: the one the caller had.
  const sigset_t& original_mask() const { return old_mask_; }

 private:
  sigset_t set_;
  sigset_t old_mask_;
  struct sigaction old_chld_ {};
  bool masked_ = false;
  bool chld_changed_ = false;
  UniqueFd fd_;
};

// fds 0-2 must be open: otherwise a pipe could land on fd 1 and dup2(1, 1) in the child would
// leave it close-on-exec.
void EnsureStdFdsOpen() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
      int null_fd = open("/dev/null", O_RDWR);  // takes the lowest free number: this one
      if (null_fd > 2) close(null_fd);
    }
  }
}

struct RankStream {
  UniqueFd fd;          // read end, non-blocking; reset at EOF
  int out_fd = 1;       // the launcher's stdout or stderr
  std::string partial;  // the unfinished last line
};

struct RankProcess {
  int rank = 0;
  pid_t pid = -1;
  bool alive = false;      // forked and not yet reaped
  bool signalled = false;  // we sent it a stop signal
  std::string prefix;      // "[rank N] " or empty
  RankStream streams[2];   // stdout, stderr
  UniqueFd exec_error;     // CLOEXEC pipe: EOF once execve succeeded, an errno if it failed
  int exec_errno = 0;
};

// What the child needs, built before fork.
struct ChildSetup {
  const char* path;
  char* const* argv;
  char* const* envp;
  int stdin_fd;
  int stdout_fd;
  int stderr_fd;
  int exec_error_fd;
  pid_t parent_pid;
  const sigset_t* mask;
  rlimit nofile;
  int cpu;  // -1: no binding
};

[[noreturn]] void RunChild(const ChildSetup& s) {
  // Async-signal-safe calls only from here to execve.
  // Its own process group: terminal Ctrl-C reaches only the launcher, which forwards it, and the
  // launcher can signal the rank together with any children it starts.
  setpgid(0, 0);
  // Die with the launcher. If it died before prctl took effect we were re-parented already.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != s.parent_pid) _exit(1);
  int err = 0;
  if (s.stdin_fd != STDIN_FILENO && dup2(s.stdin_fd, STDIN_FILENO) < 0) err = errno;
  if (err == 0 && dup2(s.stdout_fd, STDOUT_FILENO) < 0) err = errno;
  if (err == 0 && dup2(s.stderr_fd, STDERR_FILENO) < 0) err = errno;
  if (err == 0 && s.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(s.cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);  // best effort: a refused binding is no failure
  }
  if (err == 0) {
    setrlimit(RLIMIT_NOFILE, &s.nofile);
    sigprocmask(SIG_SETMASK, s.mask, nullptr);
    execve(s.path, s.argv, s.envp);
    err = errno;
  }
  ssize_t ignored = write(s.exec_error_fd, &err, sizeof(err));
  (void)ignored;
  _exit(ExecErrorExitCode(err));
}

class Launcher {
 public:
  explicit Launcher(const LaunchOptions& options) : options_(options) {}
  Launcher(const Launcher&) = delete;
  Launcher& operator=(const Launcher&) = delete;

  int Run();

 private:
  enum class Phase { kRunning, kStopping };

  Status Setup();
  Status RaiseFdLimit();
  void BuildEnv(const std::string& store_url, const std::string& secret, const std::string& job_id);
  Status Spawn(RankProcess& r, const rlimit& child_nofile);
  void Loop();
  void ReadSignals();
  void HandleSignal(int sig);
  void ReadStream(RankProcess& r, RankStream& s, int max_chunks);
  void Emit(RankProcess& r, RankStream& s, const char* data, size_t n);
  void WriteRankOutput(int fd, const std::string& data);
  void FlushPartial(RankProcess& r, RankStream& s);
  void ReadExecError(RankProcess& r);
  void ReapExited();
  void OnExit(RankProcess& r, const siginfo_t& info);
  void StopAll(int sig);
  void KillAll();
  bool AnyStreamOpen() const;

  const LaunchOptions& options_;
  Output out_;
  SignalScope signals_;  // declared before store_: outlives the store's thread
  std::unique_ptr<rendezvous::TcpStoreServer> store_;
  std::string program_path_;
  std::vector<std::string> common_env_;  // inherited and job-wide "K=V"
  rlimit original_nofile_{};
  UniqueFd dev_null_;
  std::vector<RankProcess> ranks_;
  std::vector<char> buf_ = std::vector<char>(kReadChunk);

  Phase phase_ = Phase::kRunning;
  int exit_code_ = 0;
  int live_ = 0;
  bool check_children_ = false;
  bool killed_ = false;                          // SIGKILL sent to the remaining ranks
  Deadline kill_at_ = Deadline::Infinite();      // when stopping: SIGKILL then
  Deadline give_up_at_ = Deadline::Infinite();   // after SIGKILL: stop waiting then
  Deadline drain_until_ = Deadline::Infinite();  // after the last exit: stop reading then
};

Status Launcher::RaiseFdLimit() {
  // Two pipes per rank, an exec-error pipe while it starts, and its store connection.
  rlim_t needed = static_cast<rlim_t>(4 * options_.nprocs + 64);
  if (getrlimit(RLIMIT_NOFILE, &original_nofile_) != 0) return ErrnoError("getrlimit", errno);
  if (original_nofile_.rlim_cur != RLIM_INFINITY && original_nofile_.rlim_cur < needed) {
    if (original_nofile_.rlim_max != RLIM_INFINITY && original_nofile_.rlim_max < needed) {
      return ResourceExhaustedError("-n " + std::to_string(options_.nprocs) + " needs about " +
                                    std::to_string(needed) +
                                    " file descriptors but the hard limit is " +
                                    std::to_string(original_nofile_.rlim_max) + " (ulimit -Hn)");
    }
    rlimit raised = original_nofile_;
    raised.rlim_cur = needed;
    if (setrlimit(RLIMIT_NOFILE, &raised) != 0) return ErrnoError("setrlimit", errno);
  }
  return Status::Ok();
}

void Launcher::BuildEnv(const std::string& store_url, const std::string& secret,
                        const std::string& job_id) {
  std::set<std::string, std::less<>> replaced(std::begin(kOwnedEnv), std::end(kOwnedEnv));
  if (!options_.transport.empty()) replaced.insert("WEFT_TRANSPORT");
  for (const std::string& kv : options_.extra_env) replaced.insert(kv.substr(0, kv.find('=')));
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view kv(*e);
    if (replaced.count(kv.substr(0, kv.find('='))) == 0) common_env_.emplace_back(kv);
  }
  for (const std::string& kv : options_.extra_env) common_env_.push_back(kv);
  if (!options_.transport.empty()) common_env_.push_back("WEFT_TRANSPORT=" + options_.transport);
  std::string n = std::to_string(options_.nprocs);
  common_env_.push_back("WEFT_WORLD_SIZE=" + n);
  common_env_.push_back("WEFT_LOCAL_SIZE=" + n);
  common_env_.push_back("WORLD_SIZE=" + n);
  common_env_.push_back("LOCAL_WORLD_SIZE=" + n);
  common_env_.push_back("WEFT_STORE=" + store_url);
  common_env_.push_back("WEFT_JOB_SECRET=" + secret);
  common_env_.push_back("WEFT_JOB_ID=" + job_id);
}

Status Launcher::Setup() {
  EnsureStdFdsOpen();
  WEFT_RETURN_IF_ERROR(signals_.Init());  // before the store's thread starts: it inherits the mask
  WEFT_RETURN_IF_ERROR(RaiseFdLimit());

  WEFT_ASSIGN_OR_RETURN(std::string secret, NewSecretHex());
  unsigned char id_bytes[6];
  WEFT_RETURN_IF_ERROR(RandomBytes(id_bytes, sizeof(id_bytes)));
  std::string job_id = ToHex(id_bytes, sizeof(id_bytes));
  auto store = rendezvous::TcpStoreServer::Start("127.0.0.1", 0, secret);
  if (!store.ok()) return store.status().WithContext("starting the rendezvous store");
  store_ = std::move(store).value();
  BuildEnv("tcp://127.0.0.1:" + std::to_string(store_->port()), secret, job_id);

  // A rank outside the terminal's foreground process group that reads the terminal would be
  // stopped by SIGTTIN; give it /dev/null instead.
  dev_null_.Reset(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!dev_null_.valid()) return ErrnoError("open /dev/null", errno);

  std::fflush(stdout);  // launcher output so far comes before the ranks'
  std::fflush(stderr);
  ranks_.resize(options_.nprocs);
  for (int i = 0; i < options_.nprocs; ++i) {
    RankProcess& r = ranks_[i];
    r.rank = i;
    if (options_.prefix_output) r.prefix = "[rank " + std::to_string(i) + "] ";
    r.streams[0].out_fd = STDOUT_FILENO;
    r.streams[1].out_fd = STDERR_FILENO;
    WEFT_RETURN_IF_ERROR(
        Spawn(r, original_nofile_).WithContext("starting rank " + std::to_string(i)));
  }
  return Status::Ok();
}

Status Launcher::Spawn(RankProcess& r, const rlimit& child_nofile) {
  UniqueFd write_ends[3];
  UniqueFd* read_ends[3] = {&r.streams[0].fd, &r.streams[1].fd, &r.exec_error};
  for (int k = 0; k < 3; ++k) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return ErrnoError("pipe2", errno);
    read_ends[k]->Reset(p[0]);
    write_ends[k].Reset(p[1]);
    // Only our end is non-blocking: the rank's stdout stays an ordinary blocking pipe.
    if (fcntl(p[0], F_SETFL, O_NONBLOCK) != 0) return ErrnoError("fcntl", errno);
  }

  std::vector<char*> argv;
  for (const std::string& a : options_.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::string rank = std::to_string(r.rank);
  std::vector<std::string> own_env = {"WEFT_RANK=" + rank, "WEFT_LOCAL_RANK=" + rank,
                                      "RANK=" + rank, "LOCAL_RANK=" + rank};
  std::vector<char*> envp;
  for (const std::string& kv : common_env_) envp.push_back(const_cast<char*>(kv.c_str()));
  for (const std::string& kv : own_env) envp.push_back(const_cast<char*>(kv.c_str()));
  envp.push_back(nullptr);

  ChildSetup setup;
  setup.path = program_path_.c_str();
  setup.argv = argv.data();
  setup.envp = envp.data();
  setup.stdin_fd = (r.rank == 0 && !isatty(STDIN_FILENO)) ? STDIN_FILENO : dev_null_.get();
  setup.stdout_fd = write_ends[0].get();
  setup.stderr_fd = write_ends[1].get();
  setup.exec_error_fd = write_ends[2].get();
  setup.parent_pid = getpid();
  setup.mask = &signals_.original_mask();
  setup.nofile = child_nofile;
  setup.cpu = -1;
  {
    // Binding keeps each rank on its own core, so ranks that spin on shared-memory flags never
    // queue behind each other on one core (mpirun binds to cores by default for the same reason).
    // Where the ranks outnumber the CPUs by a whole multiple, round-robin binding shares them out
    // evenly: left to itself the kernel sometimes kept three of 4 ranks on one of 2 CPUs for 100 ms
    // and more, and every small collective then took about twice as long. Measured, 4 ranks on 2
    // CPUs, all-reduce p50, 3 interleaved runs (bound / unbound): 8 B over shm 3 / 6-7 us, 2 MiB
    // 601-762 / 775-995 us, over tcp 8 B 37-38 / 41-48 us; 16 and 64 MiB level. Runs of the
    // benchmark's shape (8 runs of 10 sizes, 100 iterations each) over tcp: unbound 20-36 of the 80
    // sizes at 75-100 us in 4 such sets, bound 0 in 3. 8 ranks: shm 8 B 8 / 14-16 us, tcp 112-135 /
    // 136-157 us. Not where they do not divide evenly: 3 ranks on 2 CPUs bound 2 + 1 were faster
    // for small messages (shm 8 B 4 / 5-6 us, tcp 22-24 / 27 us) but slower for large ones, the
    // lone rank's CPU idling while the pair's is short (tcp 8 MiB 12.2-12.4 / 8.0-10.6 ms), so auto
    // leaves those to the kernel.
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    std::vector<int> cpus;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0) {
      for (int c = 0; c < CPU_SETSIZE; ++c) {
        if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
      }
    }
    const size_t n = static_cast<size_t>(options_.nprocs);
    const bool bind = options_.bind == "core" ||
                      (options_.bind == "auto" && !cpus.empty() &&
                       (n <= cpus.size() || n % cpus.size() == 0));
    if (bind && !cpus.empty()) setup.cpu = cpus[r.rank % cpus.size()];
  }

  pid_t pid = fork();
  if (pid < 0) return ErrnoError("fork", errno);
  if (pid == 0) RunChild(setup);
  // Also here: whichever of us runs first, the group exists before we ever signal it. EACCES
  // (the child already ran execve, after its own setpgid) is fine.
  setpgid(pid, pid);
  r.pid = pid;
  r.alive = true;
  ++live_;
  return Status::Ok();
}

bool Launcher::AnyStreamOpen() const {
  for (const RankProcess& r : ranks_) {
    if (r.streams[0].fd.valid() || r.streams[1].fd.valid()) return true;
  }
  return false;
}

void Launcher::Emit(RankProcess& r, RankStream& s, const char* data, size_t n) {
  std::string out;
  size_t start = 0;
  while (start < n) {
    const void* nl = memchr(data + start, '\n', n - start);
    if (nl == nullptr) break;
    size_t end = static_cast<size_t>(static_cast<const char*>(nl) - data) + 1;
    out += r.prefix;
    out += s.partial;
    out.append(data + start, end - start);
    s.partial.clear();
    start = end;
  }
  s.partial.append(data + start, n - start);
  if (s.partial.size() >= kMaxLineBytes) {
    out += r.prefix;
    out += s.partial;
    if (options_.prefix_output) out += '\n';
    s.partial.clear();
  }
  WriteRankOutput(s.out_fd, out);
}

void Launcher::FlushPartial(RankProcess& r, RankStream& s) {
  if (s.partial.empty()) return;
  // With prefixes the next line must start on a line of its own; without, bytes pass unchanged.
  std::string out = r.prefix + s.partial;
  if (options_.prefix_output) out += '\n';
  s.partial.clear();
  WriteRankOutput(s.out_fd, out);
}

void Launcher::WriteRankOutput(int fd, const std::string& data) {
  if (out_.Write(fd, data)) return;
  // Our reader is gone (`weft run ... | head`). Close the ranks' end of that stream too, so that
  // they see the broken pipe (SIGPIPE or EPIPE) just as if they wrote to it directly, rather than
  // running on with their output silently dropped.
  for (RankProcess& r : ranks_) {
    for (RankStream& s : r.streams) {
      if (s.out_fd != fd) continue;
      s.fd.Reset();
      s.partial.clear();
    }
  }
}

void Launcher::ReadStream(RankProcess& r, RankStream& s, int max_chunks) {
  for (int i = 0; i < max_chunks && s.fd.valid(); ++i) {
    ssize_t n = read(s.fd.get(), buf_.data(), buf_.size());
    if (n > 0) {
      Emit(r, s, buf_.data(), static_cast<size_t>(n));
      if (static_cast<size_t>(n) < buf_.size()) return;  // drained for now
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    FlushPartial(r, s);  // EOF, or an error that ends the stream just the same
    s.fd.Reset();
  }
}

void Launcher::ReadExecError(RankProcess& r) {
  if (!r.exec_error.valid()) return;
  int err = 0;
  ssize_t n = read(r.exec_error.get(), &err, sizeof(err));
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;  // execve still on its way
  if (n == static_cast<ssize_t>(sizeof(err))) r.exec_errno = err;
  r.exec_error.Reset();
}

void Launcher::StopAll(int sig) {
  for (RankProcess& r : ranks_) {
    if (!r.alive) continue;
    // A rank that moved itself to another group (setsid) still gets it directly.
    if (kill(-r.pid, sig) != 0) kill(r.pid, sig);
    r.signalled = true;
  }
  kill_at_ = Deadline::AfterMs(options_.grace_ms);
}

void Launcher::KillAll() {
  for (RankProcess& r : ranks_) {
    if (!r.alive) continue;
    if (kill(-r.pid, SIGKILL) != 0) kill(r.pid, SIGKILL);
    r.signalled = true;
  }
  killed_ = true;
  give_up_at_ = Deadline::AfterMs(kReapAfterKillMs);
}

void Launcher::HandleSignal(int sig) {
  if (sig == SIGCHLD) {
    check_children_ = true;
    return;
  }
  // Our stdout's reader left: WriteRankOutput has dealt with it.
  if (sig == SIGPIPE) return;
  if (live_ == 0) {  // only draining output: stop that too
    if (phase_ == Phase::kRunning) exit_code_ = 128 + sig;
    phase_ = Phase::kStopping;
    drain_until_ = Deadline::AfterMs(0);
    return;
  }
  if (phase_ == Phase::kRunning) {
    phase_ = Phase::kStopping;
    exit_code_ = 128 + sig;
    out_.Say(Format("got %s; forwarding it to %d rank%s (%s)", SignalName(sig).c_str(), live_,
                    live_ == 1 ? "" : "s",
                    sig == SIGINT ? "Ctrl-C again to kill them" : "send it again to kill them"));
    StopAll(sig);
  } else if (!killed_) {
    out_.Say(Format("got %s again; killing %d rank%s", SignalName(sig).c_str(), live_,
                    live_ == 1 ? "" : "s"));
    KillAll();
  }
}

void Launcher::ReadSignals() {
  signalfd_siginfo info[16];
  while (true) {
    ssize_t n = read(signals_.fd(), info, sizeof(info));
    if (n <= 0) return;  // EAGAIN: all read
    for (size_t i = 0; i < static_cast<size_t>(n) / sizeof(info[0]); ++i) {
      HandleSignal(static_cast<int>(info[i].ssi_signo));
    }
  }
}

void Launcher::OnExit(RankProcess& r, const siginfo_t& info) {
  // The rank is a zombie still (WNOWAIT): its pid and process group cannot be reused yet.
  for (RankStream& s : r.streams) ReadStream(r, s, kChunksAtExit);
  ReadExecError(r);
  bool exited = info.si_code == CLD_EXITED;
  int status = info.si_status;
  bool failed = !exited || status != 0;
  // When the job is over, children the rank left behind in its group go with it.
  if (failed || phase_ == Phase::kStopping) kill(-r.pid, SIGKILL);
  siginfo_t reaped{};
  waitid(P_PID, static_cast<id_t>(r.pid), &reaped, WEXITED);
  r.alive = false;
  --live_;

  if (!failed) return;
  if (phase_ == Phase::kStopping) return;  // a consequence of stopping, not a cause

  if (r.exec_errno != 0) {
    out_.Say(Format("cannot execute '%s' on rank %d: %s", options_.argv[0].c_str(), r.rank,
                    strerror(r.exec_errno)));
    exit_code_ = ExecErrorExitCode(r.exec_errno);
  } else if (exited) {
    out_.Say(
        Format("rank %d (pid %d) exited with code %d", r.rank, static_cast<int>(r.pid), status));
    exit_code_ = status;
  } else {
    out_.Say(Format("rank %d (pid %d) was killed by signal %d (%s)%s", r.rank,
                    static_cast<int>(r.pid), status, SignalName(status).c_str(),
                    info.si_code == CLD_DUMPED ? ", core dumped" : ""));
    exit_code_ = 128 + status;
  }
  phase_ = Phase::kStopping;
  if (live_ > 0) StopAll(SIGTERM);
}

void Launcher::ReapExited() {
  for (RankProcess& r : ranks_) {
    if (!r.alive) continue;
    siginfo_t info{};
    if (waitid(P_PID, static_cast<id_t>(r.pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
      continue;
    }
    if (info.si_pid == 0) continue;  // still running
    OnExit(r, info);
  }
}

void Launcher::Loop() {
  std::vector<pollfd> fds;
  // What each pollfd is: the rank index and which of its fds (0, 1 stream; 2 exec error).
  std::vector<std::pair<int, int>> owners;
  while (true) {
    if (check_children_) {
      check_children_ = false;
      ReapExited();
    }
    if (live_ == 0) {
      if (drain_until_.infinite()) drain_until_ = Deadline::AfterMs(kDrainMs);
      if (!AnyStreamOpen() || drain_until_.Expired()) break;
    }
    if (phase_ == Phase::kStopping && !killed_ && live_ > 0 && kill_at_.Expired()) {
      out_.Say(Format("%d rank%s still running %d ms after being told to stop; sending SIGKILL",
                      live_, live_ == 1 ? "" : "s", options_.grace_ms));
      KillAll();
    }
    if (killed_ && live_ > 0 && give_up_at_.Expired()) {
      for (const RankProcess& r : ranks_) {
        if (r.alive) {
          out_.Say(Format("rank %d (pid %d) did not exit %d ms after SIGKILL; giving up on it",
                          r.rank, static_cast<int>(r.pid), kReapAfterKillMs));
        }
      }
      if (exit_code_ == 0) exit_code_ = kSetupErrorExit;
      break;
    }

    Deadline wake = Deadline::AfterMs(kPollCapMs);
    if (phase_ == Phase::kStopping && !killed_ && live_ > 0) wake = wake.Min(kill_at_);
    if (killed_ && live_ > 0) wake = wake.Min(give_up_at_);
    if (live_ == 0) wake = wake.Min(drain_until_);

    fds.clear();
    owners.clear();
    fds.push_back({signals_.fd(), POLLIN, 0});
    owners.push_back({-1, -1});
    for (RankProcess& r : ranks_) {
      for (int k = 0; k < 2; ++k) {
        if (!r.streams[k].fd.valid()) continue;
        fds.push_back({r.streams[k].fd.get(), POLLIN, 0});
        owners.push_back({r.rank, k});
      }
      if (r.exec_error.valid()) {
        fds.push_back({r.exec_error.get(), POLLIN, 0});
        owners.push_back({r.rank, 2});
      }
    }
    int rc = poll(fds.data(), fds.size(), wake.RemainingMsForPoll());
    if (rc < 0 && errno != EINTR) {
      out_.Say(Format("poll: %s", strerror(errno)));
      if (exit_code_ == 0) exit_code_ = kSetupErrorExit;
      if (!killed_) KillAll();
      // Reap without poll: the children were just sent SIGKILL, so this is brief.
      for (RankProcess& r : ranks_) {
        if (r.alive) waitpid(r.pid, nullptr, 0);
      }
      return;
    }
    if (rc == 0) check_children_ = true;  // the safety net
    for (size_t i = 0; rc > 0 && i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      auto [rank, which] = owners[i];
      if (rank < 0) {
        ReadSignals();
      } else if (which == 2) {
        ReadExecError(ranks_[rank]);
      } else {
        ReadStream(ranks_[rank], ranks_[rank].streams[which], kChunksPerRound);
      }
    }
  }
  for (RankProcess& r : ranks_) {
    for (RankStream& s : r.streams) FlushPartial(r, s);
  }
}

int Launcher::Run() {
  Status st = ValidateOptions(options_);
  if (!st.ok()) {
    out_.Say(st.message());
    return kLaunchUsageExit;
  }
  int err = ResolveProgram(options_.argv[0], &program_path_);
  if (err != 0) {
    out_.Say(Format("cannot execute '%s': %s", options_.argv[0].c_str(), strerror(err)));
    return ExecErrorExitCode(err);
  }
  st = Setup();
  if (!st.ok()) {
    out_.Say(st.message());
    exit_code_ = kSetupErrorExit;
    phase_ = Phase::kStopping;
    KillAll();  // the ranks that did start
  }
  Loop();
  return exit_code_;
}

void PrintUsage(FILE* out) {
  std::fprintf(
      out,
      "usage: weft run -n N [options] -- PROGRAM [ARGS...]\n"
      "\n"
      "Starts N ranks of PROGRAM on this machine with a rendezvous store and a fresh job secret.\n"
      "\n"
      "options:\n"
      "  -n, --nprocs N     number of ranks, 1..%d\n"
      "  --transport T      export WEFT_TRANSPORT=T to every rank (e.g. shm, tcp)\n"
      "  --no-prefix        pass output through without the \"[rank N] \" prefix\n"
      "  --grace-ms MS      SIGTERM-to-SIGKILL grace when stopping ranks (default: %s, from\n"
      "                     WEFT_RUN_GRACE_MS)\n"
      "  --env K=V          add K=V to every rank's environment (repeatable)\n"
      "  --bind auto|core|none  pin rank r to allowed CPU r mod #CPUs (round-robin): auto\n"
      "                     (default) does when the ranks fit the CPUs or are a whole multiple\n"
      "                     of them, core always, none never\n"
      "  -h, --help         this text\n",
      kMaxLaunchProcs, kRunGraceMs.default_value());
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "weft run: %s\n\n", message.c_str());
  PrintUsage(stderr);
  return kLaunchUsageExit;
}

// Matches "--name VALUE" and "--name=VALUE" (and "-nVALUE" for a one-letter short name). On a
// match advances *i past what it used and stores the value, or sets *missing when it is absent.
bool TakeOption(const std::vector<std::string>& args, size_t* i, std::string_view name,
                std::string* value, bool* missing) {
  std::string_view a = args[*i];
  if (a == name) {
    if (*i + 1 >= args.size()) {
      *missing = true;
      return true;
    }
    *value = args[*i + 1];
    *i += 2;
    return true;
  }
  bool is_short = name.size() == 2;
  if (a.size() > name.size() && a.substr(0, name.size()) == name &&
      (is_short || a[name.size()] == '=')) {
    *value = std::string(a.substr(name.size() + (is_short ? 0 : 1)));
    *i += 1;
    return true;
  }
  return false;
}

bool ParseIntIn(const std::string& text, int64_t lo, int64_t hi, int* out) {
  int64_t v = 0;
  if (!ParseInt(text, &v) || v < lo || v > hi) return false;
  *out = static_cast<int>(v);
  return true;
}

}  // namespace

int Launch(const LaunchOptions& options) {
  Launcher launcher(options);
  return launcher.Run();
}

int RunCommand(const std::vector<std::string>& args) {
  LaunchOptions options;
  int64_t grace = kRunGraceMs.GetInt();
  if (grace < 0 || grace > kMaxGraceMs) {
    std::fprintf(stderr, "weft run: WEFT_RUN_GRACE_MS=%lld is out of range; using %s\n",
                 static_cast<long long>(grace), kRunGraceMs.default_value());
    ParseInt(kRunGraceMs.default_value(), &grace);
  }
  options.grace_ms = static_cast<int>(grace);
  bool have_n = false;
  bool have_separator = false;
  size_t i = 0;
  while (i < args.size()) {
    const std::string& a = args[i];
    if (a == "--") {
      have_separator = true;
      options.argv.assign(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
      break;
    }
    if (a == "-h" || a == "--help") {
      PrintUsage(stdout);
      return 0;
    }
    if (a == "--no-prefix") {
      options.prefix_output = false;
      ++i;
      continue;
    }
    std::string value;
    bool missing = false;
    if (TakeOption(args, &i, "-n", &value, &missing) ||
        TakeOption(args, &i, "--nprocs", &value, &missing)) {
      if (missing) return UsageError("-n needs a number of ranks");
      if (!ParseIntIn(value, 1, kMaxLaunchProcs, &options.nprocs)) {
        return UsageError("-n '" + value + "': the number of ranks must be 1.." +
                          std::to_string(kMaxLaunchProcs));
      }
      have_n = true;
    } else if (TakeOption(args, &i, "--transport", &value, &missing)) {
      if (missing || value.empty()) return UsageError("--transport needs a name (e.g. shm, tcp)");
      options.transport = value;
    } else if (TakeOption(args, &i, "--grace-ms", &value, &missing)) {
      if (missing) return UsageError("--grace-ms needs a number of milliseconds");
      if (!ParseIntIn(value, 0, kMaxGraceMs, &options.grace_ms)) {
        return UsageError("--grace-ms '" + value + "': must be 0.." + std::to_string(kMaxGraceMs));
      }
    } else if (TakeOption(args, &i, "--bind", &value, &missing)) {
      if (missing || (value != "auto" && value != "core" && value != "none")) {
        return UsageError("--bind needs auto, core or none");
      }
      options.bind = value;
    } else if (TakeOption(args, &i, "--env", &value, &missing)) {
      if (missing) return UsageError("--env needs K=V");
      options.extra_env.push_back(value);
    } else if (!a.empty() && a[0] == '-') {
      return UsageError("unknown option '" + a + "'");
    } else {
      return UsageError("expected '--' before the program, got '" + a + "'");
    }
  }
  if (!have_n) return UsageError("missing -n N (the number of ranks)");
  if (!have_separator) return UsageError("missing '-- PROGRAM [ARGS...]'");
  if (options.argv.empty()) return UsageError("no program after '--'");
  Status st = ValidateOptions(options);
  if (!st.ok()) return UsageError(st.message());
  return Launch(options);
}

}  // namespace weft::runtime
