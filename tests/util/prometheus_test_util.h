// Test helpers for /metrics endpoints: spawn and stop child processes (own children only, by pid),
// GET over HTTP/1.0 on loopback, `promtool check metrics` on a document, and a real Prometheus
// (Debian's) scraping given targets with a query polled until it matches. Header-only; used by
// tests/runtime/rank_metrics_test.cc (the scheduler's metrics test has its own copy for now).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "base/deadline.h"
#include "base/socket_util.h"
#include "base/status.h"

namespace weft::testing {

// Starts argv[0] (PATH lookup) with `env` added, stdout and stderr appended to `log`. The child
// gets SIGKILL if the test dies. Returns the pid (-1 if fork failed).
inline pid_t SpawnLogged(std::vector<std::string> argv, const std::string& log,
                         const std::vector<std::string>& env = {}) {
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    setpgid(0, 0);  // its own group, so Stop() reaches what it starts (weft run's ranks)
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    for (const auto& kv : env) putenv(const_cast<char*>(kv.c_str()));
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    execvp(a[0], a.data());
    _exit(127);
  }
  return pid;
}

// SIGTERM to a child started by SpawnLogged, then waits for it; SIGKILL to its group after
// `grace_ms`. Returns its wait status.
inline int StopChild(pid_t pid, int grace_ms = 10000) {
  if (pid <= 0) return -1;
  kill(pid, SIGTERM);
  int status = 0;
  Deadline d = Deadline::AfterMs(grace_ms);
  while (true) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid || r < 0) break;
    if (d.Expired()) {
      kill(-pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return status;
}

// GET over plain HTTP/1.0 on loopback: the body of a 200 answer, or an error.
inline Result<std::string> HttpGet(int port, const std::string& path) {
  WEFT_ASSIGN_OR_RETURN(UniqueFd fd,
                        ConnectTcp(HostPort{"127.0.0.1", port}, Deadline::AfterMs(2000)));
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  WEFT_RETURN_IF_ERROR(WriteFull(fd.get(), req.data(), req.size(), Deadline::AfterMs(2000)));
  std::string resp;
  char buf[4096];
  Deadline d = Deadline::AfterMs(5000);
  while (!d.Expired()) {
    ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n > 0) {
      resp.append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EAGAIN && errno != EINTR) {
      return ErrnoError("read", errno);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  size_t body = resp.find("\r\n\r\n");
  if (resp.compare(0, 12, "HTTP/1.0 200") != 0 && resp.compare(0, 12, "HTTP/1.1 200") != 0) {
    return UnavailableError("GET " + path + ": " + resp.substr(0, resp.find('\r')));
  }
  return body == std::string::npos ? std::string() : resp.substr(body + 4);
}

// A loopback port free right now (closed on return, for a server to bind next).
inline int FreePort() {
  auto l = ListenTcp("127.0.0.1", 0);
  return l.ok() ? l->port : 0;
}

// A port p with p .. p+count-1 all free right now.
inline int FreePortRange(int count) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    int p = FreePort();
    if (p <= 0 || p + count > 65535) continue;
    std::vector<Listener> held;
    bool ok = true;
    for (int i = 0; i < count && ok; ++i) {
      auto l = ListenTcp("127.0.0.1", p + i);
      ok = l.ok();
      if (ok) held.push_back(std::move(*l));
    }
    if (ok) return p;
  }
  return 0;
}

inline std::string ReadFileText(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Runs `promtool check metrics` on `text` (kept in dir); OK or promtool's complaint. Fails
// (never skips) when promtool is missing.
inline Status PromtoolCheck(const std::string& text, const std::string& dir,
                            const std::string& name) {
  if (system("command -v promtool >/dev/null 2>&1") != 0) {
    return NotFoundError("promtool not found: scripts/setup.sh installs Debian's prometheus");
  }
  const std::string file = dir + "/" + name + ".txt", log = dir + "/" + name + ".promtool";
  std::ofstream(file) << text;
  std::string cmd = "promtool check metrics < " + file + " > " + log + " 2>&1";
  if (system(cmd.c_str()) != 0) {
    return InvalidArgumentError("promtool check metrics " + file + ":\n" + ReadFileText(log));
  }
  return Status::Ok();
}

// Debian's Prometheus on 127.0.0.1:port() with its own TSDB in `dir`, scraping `targets`
// (host:port) every second as job `job`. Stops on destruction.
class PrometheusProcess {
 public:
  PrometheusProcess(const std::string& dir, const std::string& job,
                    const std::vector<std::string>& targets)
      : dir_(dir) {
    if (system("command -v prometheus >/dev/null 2>&1") != 0) return;
    port_ = FreePort();
    std::ofstream cfg(dir + "/prometheus.yml");
    cfg << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        << "scrape_configs:\n  - job_name: " << job << "\n    static_configs:\n"
        << "      - targets: [";
    for (size_t i = 0; i < targets.size(); ++i) cfg << (i ? ", " : "") << "'" << targets[i] << "'";
    cfg << "]\n";
    cfg.close();
    pid_ = SpawnLogged({"prometheus", "--config.file=" + dir + "/prometheus.yml",
                        "--storage.tsdb.path=" + dir + "/tsdb",
                        "--web.listen-address=127.0.0.1:" + std::to_string(port_)},
                       dir + "/prometheus.log");
  }
  ~PrometheusProcess() { StopChild(pid_); }
  PrometheusProcess(const PrometheusProcess&) = delete;
  PrometheusProcess& operator=(const PrometheusProcess&) = delete;

  bool started() const { return pid_ > 0; }
  int port() const { return port_; }
  // Polls /api/v1/query?query=<query> (already URL-encoded) until `accept` holds for the JSON
  // answer or the deadline passes; the last answer is left in *last.
  bool QueryUntil(const std::string& query, const std::function<bool(const std::string&)>& accept,
                  Deadline deadline, std::string* last) const {
    while (!deadline.Expired()) {
      auto r = HttpGet(port_, "/api/v1/query?query=" + query);
      if (r.ok()) {
        *last = *r;
        if (accept(*r)) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return false;
  }

 private:
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace weft::testing
