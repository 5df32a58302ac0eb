// Launch backends. One thread: snapshot the core's launch targets when they change, start and stop
// child processes (mpirun, kubectl) to match, reap them and report. Children are forked only after
// argv/envp are built; the child calls async-signal-safe functions only until exec (gRPC's threads
// exist in this process). Each child leads its own session, because Open MPI puts every rank in a
// process group of its own: the session is what holds mpirun and all its local ranks.
#include "scheduler/launch_backends.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "base/json.h"
#include "base/logging.h"

extern char** environ;

namespace weft::scheduler {

namespace {

constexpr size_t kLogTailBytes = 4096;

// Variables another launcher sets for ranks: never leaked from the scheduler's own environment
// into the ranks mpirun starts (they would override Open MPI's), nor the scheduler's token.
constexpr const char* kScrubbed[] = {
    "WEFT_RANK",   "WEFT_WORLD_SIZE", "WEFT_LOCAL_RANK",  "WEFT_LOCAL_SIZE",
    "WEFT_STORE",  "WEFT_JOB_SECRET", "WEFT_JOB_ID",      "RANK",
    "WORLD_SIZE",  "LOCAL_RANK",      "LOCAL_WORLD_SIZE", "MASTER_ADDR",
    "MASTER_PORT", "WEFT_SCHED_TOKEN"};

std::string EnvName(const std::string& kv) { return kv.substr(0, kv.find('=')); }

// kubectl gets the scheduler's environment as it is (KUBECONFIG, in-cluster credentials).
std::vector<std::string> Environ() {
  std::vector<std::string> env;
  for (char** p = environ; *p; ++p) env.push_back(*p);
  return env;
}

std::string JobAttemptId(const Job& job) {
  return (job.id.empty() ? std::string("dry-run") : job.id) + ".a" + std::to_string(job.attempt);
}

// A JSON string literal, which YAML reads as a double-quoted scalar.
std::string Q(std::string_view s) { return JsonQuote(s); }

std::string QList(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + Q(v[i]);
  return out + "]";
}

// For messages and previews: a command line a shell would read back.
std::string ShellJoin(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    bool plain = !a.empty() && a.find_first_not_of(
                                   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU"
                                   "VWXYZ0123456789-_./=:,+@%") == std::string::npos;
    if (plain) {
      out += a;
      continue;
    }
    out += '\'';
    for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += '\'';
  }
  return out;
}

std::string ReadTail(const std::string& path, size_t n) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return "";
  f.seekg(0, std::ios::end);
  std::streamoff size = f.tellg();
  std::streamoff from =
      size > static_cast<std::streamoff>(n) ? size - static_cast<std::streamoff>(n) : 0;
  f.seekg(from);
  std::string out(static_cast<size_t>(size - from), '\0');
  f.read(out.data(), static_cast<std::streamsize>(out.size()));
  return out;
}

// The last non-empty line, for one-line messages.
std::string LastLine(const std::string& text) {
  size_t end = text.find_last_not_of(" \n\r\t");
  if (end == std::string::npos) return "";
  size_t start = text.rfind('\n', end);
  start = start == std::string::npos ? 0 : start + 1;
  return text.substr(start, end - start + 1);
}

std::string OneLine(std::string text, size_t max) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  size_t end = text.find_last_not_of(' ');
  text = end == std::string::npos ? "" : text.substr(0, end + 1);
  return text.size() <= max ? text : text.substr(0, max - 3) + "...";
}

Status WriteFileAtomic(const std::string& path, const std::string& data, mode_t mode) {
  std::string tmp = path + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoError("writing " + tmp, errno);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t w = write(fd, data.data() + off, data.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      int e = errno;
      close(fd);
      return ErrnoError("writing " + tmp, e);
    }
    off += static_cast<size_t>(w);
  }
  close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoError("renaming " + tmp, errno);
  return Status::Ok();
}

// /proc/<pid>/stat fields after the command name: state ppid pgrp session ... starttime (22nd).
bool ProcStat(pid_t pid, pid_t* session, unsigned long long* start_time) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!f || !std::getline(f, line)) return false;
  size_t paren = line.rfind(')');
  if (paren == std::string::npos) return false;
  std::istringstream in(line.substr(paren + 1));
  std::string field;
  std::vector<std::string> fields;
  while (in >> field) fields.push_back(field);
  // fields[0] is state (field 3), so field k is fields[k - 3].
  if (fields.size() < 20) return false;
  *session = static_cast<pid_t>(std::stoll(fields[6 - 3]));
  *start_time = std::stoull(fields[22 - 3]);
  return true;
}

// Signals every process in session `sid` (mpirun and the ranks it started, each in its own
// process group).
void KillSession(pid_t sid, int sig) {
  if (sid <= 1) return;
  DIR* d = opendir("/proc");
  if (d == nullptr) return;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || pid <= 1) continue;
    pid_t s = 0;
    unsigned long long st = 0;
    if (ProcStat(static_cast<pid_t>(pid), &s, &st) && s == sid) kill(static_cast<pid_t>(pid), sig);
  }
  closedir(d);
}

// Open MPI names the rank that failed first: "Process name: [[7753,1],2] ... Exit code: 3", or
// "process rank 2 with PID ... exited on signal 9".
void ParseMpirunFailure(const std::string& out, int* rank, int* code) {
  *rank = -1;
  *code = -1;
  size_t p = out.rfind("Process name:");
  if (p != std::string::npos) {
    size_t close = out.find("],", p);
    if (close != std::string::npos) *rank = std::atoi(out.c_str() + close + 2);
    size_t c = out.find("Exit code:", p);
    if (c != std::string::npos) *code = std::atoi(out.c_str() + c + 10);
    return;
  }
  p = out.rfind("process rank ");
  if (p != std::string::npos) *rank = std::atoi(out.c_str() + p + 13);
}

LaunchReport Rep(const std::string& job_id, int attempt, LaunchReport::Kind kind,
                 std::string message) {
  LaunchReport r;
  r.job_id = job_id;
  r.attempt = attempt;
  r.kind = kind;
  r.message = std::move(message);
  return r;
}

std::string PidFile(const std::string& dir, const Job& job) {
  return dir + "/mpirun/" + JobAttemptId(job) + ".pid";
}

}  // namespace

std::string_view K8sKindName(K8sKind k) {
  return k == K8sKind::kIndexedJob ? "indexed-job" : "mpijob";
}

bool ParseK8sKind(std::string_view text, K8sKind* out) {
  if (text == "indexed-job") {
    *out = K8sKind::kIndexedJob;
  } else if (text == "mpijob") {
    *out = K8sKind::kMpiJob;
  } else {
    return false;
  }
  return true;
}

std::vector<std::string> DefaultMpirunArgs() {
  return {"--mca", "pml", "ob1", "--mca", "btl", "tcp,vader,self", "--bind-to", "none"};
}

Status ValidateLaunchOptions(const LaunchOptions& o) {
  if (o.state_dir.empty()) return InvalidArgumentError("state_dir: empty");
  if (o.mpirun.empty()) return InvalidArgumentError("mpirun: empty");
  const std::string& ns = o.k8s_namespace;
  bool dns = !ns.empty() && ns.size() <= 63 && ns.front() != '-' && ns.back() != '-' &&
             ns.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") == std::string::npos;
  if (!dns) {
    return InvalidArgumentError("k8s_namespace: '" + ns.substr(0, 80) +
                                "' is not a DNS label (lower-case letters, digits, '-')");
  }
  if (o.k8s_image.empty() || o.k8s_image.find_first_of(" \t\n\"") != std::string::npos) {
    return InvalidArgumentError("k8s_image: '" + o.k8s_image.substr(0, 80) +
                                "' is not an image reference");
  }
  if (o.k8s_poll_ms < 10) return InvalidArgumentError("k8s_poll_ms: below 10");
  if (o.kubectl_timeout_ms < 100) return InvalidArgumentError("kubectl_timeout_ms: below 100");
  if (o.grace_ms < 0) return InvalidArgumentError("grace_ms: negative");
  if (o.k8s_store_port < 1 || o.k8s_store_port > 65535) {
    return InvalidArgumentError("k8s_store_port: outside 1..65535");
  }
  return Status::Ok();
}

Result<Hostfile> RenderHostfile(const Job& job, const std::vector<Node>& nodes) {
  std::map<std::string, const Node*> by_id;
  for (const Node& n : nodes) by_id[n.node_id] = &n;
  struct Host {
    std::string address;
    int slots = 0;
  };
  std::vector<Host> hosts;
  std::vector<std::string> rank_address;
  std::map<std::string, size_t> host_of_key;  // host_id or address -> index in hosts
  bool contiguous = true;
  for (const RankPlacement& p : job.placement) {
    auto it = by_id.find(p.node_id);
    if (it == by_id.end()) {
      return InvalidArgumentError("placement: node '" + p.node_id + "' of rank " +
                                  std::to_string(p.rank) + " is not registered");
    }
    const Node& n = *it->second;
    const std::string host_key = "h:" + (n.host_id.empty() ? n.node_id : n.host_id);
    const std::string addr_key = "a:" + n.address;
    size_t idx;
    auto h = host_of_key.find(host_key);
    if (h == host_of_key.end()) h = host_of_key.find(addr_key);
    if (h == host_of_key.end()) {
      idx = hosts.size();
      hosts.push_back(Host{n.address, 0});
    } else {
      idx = h->second;
      if (idx + 1 != hosts.size()) contiguous = false;
    }
    host_of_key[host_key] = idx;
    host_of_key[addr_key] = idx;
    hosts[idx].slots++;
    rank_address.push_back(hosts[idx].address);
  }
  Hostfile out;
  out.hosts = static_cast<int>(hosts.size());
  out.sequential = !contiguous;
  if (contiguous) {
    for (const Host& h : hosts) out.text += h.address + " slots=" + std::to_string(h.slots) + "\n";
  } else {
    for (const std::string& a : rank_address) out.text += a + "\n";
  }
  return out;
}

std::vector<std::string> MpirunArgv(const LaunchOptions& o, const Job& job,
                                    const std::string& hostfile_path, bool sequential) {
  std::vector<std::string> argv = {o.mpirun,
                                   "--hostfile",
                                   hostfile_path,
                                   "-np",
                                   std::to_string(job.world_size),
                                   "--map-by",
                                   sequential ? "seq" : "slot"};
  if (geteuid() == 0) argv.push_back("--allow-run-as-root");
  argv.insert(argv.end(), o.mpirun_args.begin(), o.mpirun_args.end());
  std::set<std::string> names;
  for (const auto& e : job.spec.env) names.insert(EnvName(e));
  names.insert("WEFT_JOB_ID");
  for (const auto& n : names) {
    argv.push_back("-x");
    argv.push_back(n);
  }
  argv.insert(argv.end(), job.spec.argv.begin(), job.spec.argv.end());
  return argv;
}

std::string KubernetesName(const Job& job) {
  std::string id = job.id.empty() ? "dry-run" : job.id;
  std::string name = "weft-";
  for (char c : id) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    name.push_back((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ? c : '-');
  }
  std::string suffix = "-a" + std::to_string(job.attempt);
  // Pods are <name>-<index> and must stay within a 63-byte DNS label.
  if (name.size() + suffix.size() > 50) name.resize(50 - suffix.size());
  return name + suffix;
}

Result<std::string> RenderKubernetes(const LaunchOptions& o, const Job& job,
                                     const std::vector<Node>& nodes, bool redact_secret) {
  if (job.placement.empty()) return InvalidArgumentError("job " + job.id + ": not placed");
  // Placed nodes (Kubernetes node names: the agent DaemonSet registers spec.nodeName as node_id)
  // and ranks per host, in rank order.
  std::vector<std::string> node_names;
  for (const RankPlacement& p : job.placement) {
    if (std::find(node_names.begin(), node_names.end(), p.node_id) == node_names.end()) {
      node_names.push_back(p.node_id);
    }
  }
  WEFT_ASSIGN_OR_RETURN(Hostfile hf, RenderHostfile(job, nodes));
  int max_per_host = 0;
  {
    std::map<std::string, int> per_host;
    std::map<std::string, const Node*> by_id;
    for (const Node& n : nodes) by_id[n.node_id] = &n;
    for (const RankPlacement& p : job.placement) {
      const Node& n = *by_id.at(p.node_id);
      max_per_host = std::max(max_per_host, ++per_host[n.host_id.empty() ? n.node_id : n.host_id]);
    }
  }
  const std::string name = KubernetesName(job);
  const std::string ns = o.k8s_namespace;
  const std::string n = std::to_string(job.world_size);
  auto labels = [&](const std::string& indent) {
    return indent + "app.kubernetes.io/managed-by: weft-scheduler\n" + indent +
           "weft.dev/job: " + Q(job.id.empty() ? "dry-run" : job.id) + "\n" + indent +
           "weft.dev/attempt: " + Q(std::to_string(job.attempt)) + "\n";
  };
  auto meta = [&](const std::string& obj_name) {
    return "metadata:\n  name: " + obj_name + "\n  namespace: " + ns + "\n  labels:\n" +
           labels("    ");
  };
  // Pods only on the placed nodes.
  auto affinity = [&](const std::string& in, const std::string& anti_label) {
    std::string a = in + "affinity:\n" + in + "  nodeAffinity:\n" + in +
                    "    requiredDuringSchedulingIgnoredDuringExecution:\n" + in +
                    "      nodeSelectorTerms:\n" + in + "        - matchFields:\n" + in +
                    "            - key: metadata.name\n" + in + "              operator: In\n" +
                    in + "              values: " + QList(node_names) + "\n";
    if (!anti_label.empty()) {
      // One MPI worker per placed host.
      a += in + "  podAntiAffinity:\n" + in +
           "    requiredDuringSchedulingIgnoredDuringExecution:\n" + in +
           "      - topologyKey: kubernetes.io/hostname\n" + in + "        labelSelector:\n" + in +
           "          matchLabels:\n" + in + "            weft.dev/worker-of: " + Q(anti_label) +
           "\n";
    }
    return a;
  };
  std::vector<std::pair<std::string, std::string>> env;  // name, value
  env.emplace_back("WEFT_JOB_ID", JobAttemptId(job));
  for (const auto& e : job.spec.env) {
    size_t eq = e.find('=');
    env.emplace_back(e.substr(0, eq), eq == std::string::npos ? "" : e.substr(eq + 1));
  }
  auto env_yaml = [&](const std::string& in, bool rank_vars) {
    std::string y = in + "env:\n";
    if (rank_vars) {
      // Pod i is rank i (JOB_COMPLETION_INDEX); rank 0 serves the store under its stable name.
      y += in + "  - name: WORLD_SIZE\n" + in + "    value: " + Q(n) + "\n";
      y += in + "  - name: MASTER_ADDR\n" + in + "    value: " + Q(name + "-0." + name) + "\n";
      y += in + "  - name: MASTER_PORT\n" + in +
           "    value: " + Q(std::to_string(o.k8s_store_port)) + "\n";
      y += in + "  - name: WEFT_JOB_SECRET\n" + in + "    valueFrom:\n" + in +
           "      secretKeyRef:\n" + in + "        name: " + name + "\n" + in +
           "        key: WEFT_JOB_SECRET\n";
    }
    for (const auto& [k, v] : env) {
      y += in + "  - name: " + Q(k) + "\n" + in + "    value: " + Q(v) + "\n";
    }
    return y;
  };
  std::string resources;
  if (job.spec.resources.memory_per_rank_bytes > 0) {
    const int64_t per_pod = job.spec.resources.memory_per_rank_bytes *
                            (o.k8s_kind == K8sKind::kMpiJob ? max_per_host : 1);
    resources = "resources:\n  requests:\n    memory: " + Q(std::to_string(per_pod)) + "\n";
  }
  auto indent = [](const std::string& text, const std::string& in) {
    std::string out;
    std::istringstream s(text);
    std::string line;
    while (std::getline(s, line)) out += in + line + "\n";
    return out;
  };

  std::string y = "# Rendered by weft scheduler for " + (job.id.empty() ? "a dry run" : job.id) +
                  " attempt " + std::to_string(job.attempt) + ": " + n + " ranks on " +
                  std::to_string(hf.hosts) + " hosts (" + std::to_string(node_names.size()) +
                  " nodes). Apply with: kubectl apply -f <this file>\n";
  y += "apiVersion: v1\nkind: Secret\n" + meta(name) +
       "type: Opaque\nstringData:\n  WEFT_JOB_SECRET: " +
       Q(redact_secret ? "<redacted>" : job.job_secret) + "\n";
  if (o.k8s_kind == K8sKind::kIndexedJob) {
    y += "---\napiVersion: v1\nkind: Service\n" + meta(name) +
         "spec:\n  clusterIP: None\n  publishNotReadyAddresses: true\n  selector:\n"
         "    job-name: " +
         name + "\n  ports:\n    - name: store\n      port: " + std::to_string(o.k8s_store_port) +
         "\n";
    std::vector<std::string> args(job.spec.argv.begin() + 1, job.spec.argv.end());
    y += "---\napiVersion: batch/v1\nkind: Job\n" + meta(name) +
         "spec:\n  completionMode: Indexed\n  completions: " + n + "\n  parallelism: " + n +
         "\n  backoffLimit: 0\n  template:\n    metadata:\n      labels:\n" + labels("        ") +
         "    spec:\n      subdomain: " + name + "  # pods are " + name + "-<rank>." + name +
         "\n      restartPolicy: Never\n" + affinity("      ", "") +
         "      containers:\n        - name: rank\n          image: " + Q(o.k8s_image) +
         "\n          command: " + QList({job.spec.argv[0]}) + "\n          args: " + QList(args) +
         "\n" + env_yaml("          ", true) +
         "          ports:\n            - containerPort: " + std::to_string(o.k8s_store_port) +
         "\n" + indent(resources, "          ");
  } else {
    std::vector<std::string> launcher_args = {"-np", n, "--allow-run-as-root"};
    launcher_args.insert(launcher_args.end(), o.mpirun_args.begin(), o.mpirun_args.end());
    for (const auto& [k, v] : env) {
      launcher_args.push_back("-x");
      launcher_args.push_back(k);
    }
    launcher_args.insert(launcher_args.end(), job.spec.argv.begin(), job.spec.argv.end());
    y += "---\napiVersion: kubeflow.org/v2beta1\nkind: MPIJob\n" + meta(name) +
         "spec:\n  slotsPerWorker: " + std::to_string(max_per_host) +
         "\n  runPolicy:\n    cleanPodPolicy: Running\n    backoffLimit: 0\n"
         "  mpiImplementation: OpenMPI\n  mpiReplicaSpecs:\n    Launcher:\n      replicas: 1\n"
         "      restartPolicy: Never\n      template:\n        metadata:\n          labels:\n" +
         labels("            ") +
         "        spec:\n          containers:\n"
         "            - name: launcher\n              image: " +
         Q(o.k8s_image) +
         "\n              command: [\"mpirun\"]\n              args: " + QList(launcher_args) +
         "\n" + env_yaml("              ", false) +
         "    Worker:\n      replicas: " + std::to_string(hf.hosts) +
         "\n      restartPolicy: Never\n      template:\n"
         "        metadata:\n          labels:\n" +
         labels("            ") + "            weft.dev/worker-of: " + Q(name) +
         "\n        spec:\n" + affinity("          ", name) +
         "          containers:\n            - name: worker\n"
         "              image: " +
         Q(o.k8s_image) + "\n" + indent(resources, "              ");
  }
  return y;
}

Result<std::string> LaunchPreview(const LaunchOptions& o, const Job& job,
                                  const std::vector<Node>& nodes) {
  if (job.placement.empty()) return InvalidArgumentError("job is not placed");
  if (job.spec.launcher == Launcher::kKubernetes) {
    std::string head = "# " + std::string(K8sKindName(o.k8s_kind)) + " manifest, written to " +
                       o.state_dir + "/k8s/" + (job.id.empty() ? "<job>" : job.id) + ".yaml" +
                       (o.kubectl.empty() ? " (no --kubectl: not applied)\n"
                                          : " and applied with " + o.kubectl + "\n");
    WEFT_ASSIGN_OR_RETURN(std::string y, RenderKubernetes(o, job, nodes, true));
    return head + y;
  }
  if (job.spec.launcher == Launcher::kMpirun) {
    WEFT_ASSIGN_OR_RETURN(Hostfile hf, RenderHostfile(job, nodes));
    std::string path = o.state_dir + "/mpirun/" + JobAttemptId(job) + ".hostfile";
    std::string out = "# hostfile " + path + "\n" + hf.text + "# command\n" +
                      ShellJoin(MpirunArgv(o, job, path, hf.sequential)) + "\n";
    std::string env;
    for (const auto& e : job.spec.env) env += " " + EnvName(e) + "=...";
    out += "# environment: WEFT_JOB_ID=" + JobAttemptId(job) + env + "\n";
    return out;
  }
  return InvalidArgumentError("spec.launcher: agents jobs have no launch preview");
}

// ---- LaunchBackends ---------------------------------------------------------------------------

Result<std::unique_ptr<LaunchBackends>> LaunchBackends::Start(SchedulerCore& core,
                                                              LaunchOptions o) {
  WEFT_RETURN_IF_ERROR(ValidateLaunchOptions(o));
  for (const char* sub : {"mpirun", "k8s"}) {
    std::error_code ec;
    std::filesystem::create_directories(o.state_dir + "/" + sub, ec);
    if (ec) {
      return InvalidArgumentError("state_dir: cannot create " + o.state_dir + "/" + sub + ": " +
                                  ec.message());
    }
  }
  std::unique_ptr<LaunchBackends> b(new LaunchBackends(core, std::move(o)));
  b->thread_ = std::thread([raw = b.get()] { raw->Loop(); });
  return b;
}

LaunchBackends::~LaunchBackends() { Shutdown(); }

void LaunchBackends::Shutdown() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void LaunchBackends::Loop() {
  int64_t generation = 0;
  std::vector<LaunchTarget> targets;
  while (!stop_) {
    Deadline d = Deadline::AfterMs(100);
    if (core_.WaitLaunchTargets(&generation, d, &targets)) {
      Reconcile(targets);
    } else if (!d.Expired()) {
      std::this_thread::sleep_for(d.Remaining());  // the core shut down: keep reaping only
    }
    Reap();
    Poll();
  }
  // Stop every mpirun (its ranks with it) and in-flight kubectl; Kubernetes objects stay.
  for (auto& c : children_) {
    if (c->role == Role::kMpirun) {
      kill(c->pid, SIGTERM);
      c->term_sent = true;
      c->kill_at = Clock::now() + std::chrono::milliseconds(o_.grace_ms);
    } else {
      KillSession(c->pid, SIGKILL);
      kill(c->pid, SIGKILL);
    }
    c->orphaned = true;
  }
  Deadline d = Deadline::AfterMs(o_.grace_ms + 2000);
  while (!children_.empty() && !d.Expired()) {
    Reap();
    Poll();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void LaunchBackends::Report(LaunchReport r) {
  Status s = core_.ReportLaunch(r);
  if (!s.ok() && s.code() != StatusCode::kFailedPrecondition) {
    WEFT_LOG(WARN) << "launch backends: report for " << r.job_id << " failed: " << s.ToString();
  }
}

void LaunchBackends::Reconcile(const std::vector<LaunchTarget>& targets) {
  std::map<std::string, const LaunchTarget*> want;
  for (const LaunchTarget& t : targets) want[t.job.id] = &t;
  for (auto it = launches_.begin(); it != launches_.end();) {
    auto w = want.find(it->first);
    if (w != want.end() && w->second->job.attempt == it->second.attempt) {
      ++it;
      continue;
    }
    Stop(it->first, it->second);
    it = launches_.erase(it);
  }
  for (const LaunchTarget& t : targets) {
    if (!launches_.count(t.job.id)) Begin(t);
  }
}

void LaunchBackends::Begin(const LaunchTarget& t) {
  Launch& l = launches_[t.job.id];
  l.launcher = t.job.spec.launcher;
  l.attempt = t.job.attempt;
  if (l.launcher == Launcher::kMpirun) {
    if (t.job.state == JobState::kScheduled) {
      StartMpirun(t, l);
      return;
    }
    // RUNNING but not ours: started by an earlier scheduler process. Kill what is left of its
    // session (mpirun got SIGTERM when that process died) and fail the attempt over.
    std::string why = "mpirun of attempt " + std::to_string(t.job.attempt + 1) +
                      " was lost with a scheduler restart";
    std::ifstream pf(PidFile(o_.state_dir, t.job));
    long long pid = 0;
    unsigned long long start = 0;
    if (pf >> pid >> start && pid > 1) {
      pid_t session = 0;
      unsigned long long now_start = 0;
      // A live process with that pid but another start time is not ours (the pid was reused).
      bool alive = ProcStat(static_cast<pid_t>(pid), &session, &now_start);
      if (!alive || now_start == start) {
        KillSession(static_cast<pid_t>(pid), SIGKILL);
        why += "; killed what was left of its session " + std::to_string(pid);
      }
    }
    unlink(PidFile(o_.state_dir, t.job).c_str());
    l.done = true;
    Report(Rep(t.job.id, t.job.attempt, LaunchReport::Kind::kFailed, why));
    return;
  }
  BeginKubernetes(t, l);
}

LaunchBackends::Child* LaunchBackends::Run(Role role, const std::string& job_id, int attempt,
                                           const std::vector<std::string>& argv,
                                           const std::vector<std::string>& env,
                                           const std::string& log, int timeout_ms,
                                           std::string* error) {
  std::vector<std::string> a = argv, e = env;
  std::vector<char*> cargv, cenv;
  for (auto& s : a) cargv.push_back(s.data());
  cargv.push_back(nullptr);
  for (auto& s : e) cenv.push_back(s.data());
  cenv.push_back(nullptr);
  int out = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0) {
    *error = "cannot open " + log + ": " + strerror(errno);
    return nullptr;
  }
  const pid_t parent = getpid();
  // mpirun tears its job down on SIGTERM; kubectl has nothing to tear down.
  const int death_sig = role == Role::kMpirun ? SIGTERM : SIGKILL;
  pid_t pid = fork();
  if (pid == 0) {
    setsid();
    if (prctl(PR_SET_PDEATHSIG, death_sig) != 0 || getppid() != parent) _exit(127);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    dup2(out, 1);
    dup2(out, 2);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    execvpe(cargv[0], cargv.data(), cenv.data());
    const char* msg = "weft scheduler: cannot execute ";
    (void)!write(2, msg, strlen(msg));
    (void)!write(2, cargv[0], strlen(cargv[0]));
    const char* why = errno == ENOENT ? ": not found\n" : ": exec failed\n";
    (void)!write(2, why, strlen(why));
    _exit(127);
  }
  int fork_errno = errno;
  close(out);
  if (pid < 0) {
    *error = std::string("fork failed: ") + strerror(fork_errno);
    return nullptr;
  }
  auto c = std::make_unique<Child>();
  c->pid = pid;
  c->role = role;
  c->job_id = job_id;
  c->attempt = attempt;
  c->log = log;
  if (timeout_ms > 0) c->deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  children_.push_back(std::move(c));
  return children_.back().get();
}

void LaunchBackends::StartMpirun(const LaunchTarget& t, Launch& l) {
  const Job& job = t.job;
  auto fail = [&](const std::string& why) {
    l.done = true;
    Report(Rep(job.id, job.attempt, LaunchReport::Kind::kFailed, why));
  };
  auto hf = RenderHostfile(job, t.nodes);
  if (!hf.ok()) return fail("mpirun: " + hf.status().message());
  const std::string base = o_.state_dir + "/mpirun/" + JobAttemptId(job);
  const std::string hostfile = base + ".hostfile", log = base + ".log";
  if (Status s = WriteFileAtomic(hostfile, hf->text, 0644); !s.ok()) {
    return fail("mpirun: " + s.message());
  }
  std::vector<std::string> argv = MpirunArgv(o_, job, hostfile, hf->sequential);
  // mpirun's environment: ours without other launchers' rank variables, plus the job's env
  // (exported to every rank with -x NAME, so values stay off the command line).
  std::vector<std::string> env = job.spec.env;
  env.push_back("WEFT_JOB_ID=" + JobAttemptId(job));
  std::set<std::string> ours;
  for (const auto& e : env) ours.insert(EnvName(e));
  for (const char* s : kScrubbed) ours.insert(s);
  for (char** p = environ; *p; ++p) {
    std::string e = *p;
    if (!ours.count(EnvName(e))) env.push_back(e);
  }
  std::string error;
  Child* c = Run(Role::kMpirun, job.id, job.attempt, argv, env, log, 0, &error);
  if (c == nullptr) return fail("mpirun: " + error);
  // For a scheduler restarted while this runs: which session to clean up.
  pid_t session = 0;
  unsigned long long start = 0;
  ProcStat(c->pid, &session, &start);
  WriteFileAtomic(PidFile(o_.state_dir, job),
                  std::to_string(c->pid) + " " + std::to_string(start) + "\n", 0644)
      .IgnoreError();
  WEFT_LOG(INFO) << "launch backends: " << job.id << " attempt " << job.attempt
                 << ": started mpirun (pid " << c->pid << "): " << ShellJoin(argv);
  Report(Rep(job.id, job.attempt, LaunchReport::Kind::kStarted,
             "mpirun started (pid " + std::to_string(c->pid) + ", " +
                 std::to_string(job.world_size) + " ranks on " + std::to_string(hf->hosts) +
                 " hosts; hostfile " + hostfile + ", output in " + log + ")"));
}

std::vector<std::string> LaunchBackends::KubectlArgv(std::vector<std::string> args) const {
  args.insert(args.begin(), o_.kubectl);
  args.push_back("--request-timeout=" + std::to_string(std::max(1, o_.kubectl_timeout_ms / 1000)) +
                 "s");
  return args;
}

void LaunchBackends::BeginKubernetes(const LaunchTarget& t, Launch& l) {
  const Job& job = t.job;
  l.name = KubernetesName(job);
  l.manifest = o_.state_dir + "/k8s/" + job.id + ".yaml";
  auto fail = [&](const std::string& why) {
    l.done = true;
    Report(Rep(job.id, job.attempt, LaunchReport::Kind::kFailed, why));
  };
  auto y = RenderKubernetes(o_, job, t.nodes, false);
  if (!y.ok()) return fail("kubernetes: " + y.status().message());
  // 0600: it holds the job secret.
  if (Status s = WriteFileAtomic(l.manifest, *y, 0600); !s.ok()) {
    return fail("kubernetes: " + s.message());
  }
  if (o_.kubectl.empty()) {
    l.done = true;
    std::string note = std::string(K8sKindName(o_.k8s_kind)) + " manifest rendered to " +
                       l.manifest +
                       "; no --kubectl configured, so nothing applied it (apply it "
                       "yourself; cancel the job to free its slots)";
    if (job.state == JobState::kScheduled && job.reason != note) {
      Report(Rep(job.id, job.attempt, LaunchReport::Kind::kNote, note));
    }
    return;
  }
  if (job.state == JobState::kRunning) {
    l.applied = true;  // applied by an earlier scheduler process: follow its status
    l.next_poll = Clock::now();
    return;
  }
  std::string error;
  Child* c =
      Run(Role::kApply, job.id, job.attempt, KubectlArgv({"apply", "-f", l.manifest}), Environ(),
          o_.state_dir + "/k8s/" + job.id + ".kubectl.log", o_.kubectl_timeout_ms, &error);
  if (c == nullptr) return fail("kubectl apply: " + error);
  l.applied = true;  // from now on the objects may exist
}

void LaunchBackends::Stop(const std::string& job_id, Launch& l) {
  for (auto& c : children_) {
    if (c->job_id != job_id || c->attempt != l.attempt || c->orphaned) continue;
    c->orphaned = true;
    if (c->role == Role::kMpirun) {
      WEFT_LOG(INFO) << "launch backends: stopping mpirun of " << job_id << " (pid " << c->pid
                     << ")";
      kill(c->pid, SIGTERM);
      c->term_sent = true;
      c->kill_at = Clock::now() + std::chrono::milliseconds(o_.grace_ms);
    } else if (c->role != Role::kDelete) {
      KillSession(c->pid, SIGKILL);
      kill(c->pid, SIGKILL);
    }
  }
  if (l.launcher == Launcher::kKubernetes && l.applied && !o_.kubectl.empty()) {
    std::vector<std::string> objs = {"secret/" + l.name};
    if (o_.k8s_kind == K8sKind::kIndexedJob) {
      objs.push_back("service/" + l.name);
      objs.push_back("job.batch/" + l.name);
    } else {
      objs.push_back("mpijob.kubeflow.org/" + l.name);
    }
    std::vector<std::string> args = {"delete", "-n", o_.k8s_namespace, "--ignore-not-found",
                                     "--wait=false"};
    args.insert(args.end(), objs.begin(), objs.end());
    std::string error;
    Child* c = Run(Role::kDelete, job_id, l.attempt, KubectlArgv(args), Environ(),
                   o_.state_dir + "/k8s/" + job_id + ".delete.log", o_.kubectl_timeout_ms, &error);
    if (c == nullptr) {
      WEFT_LOG(WARN) << "launch backends: kubectl delete for " << job_id << ": " << error;
    } else {
      c->orphaned = true;
      WEFT_LOG(INFO) << "launch backends: deleting Kubernetes objects " << l.name << " of "
                     << job_id;
    }
  }
}

void LaunchBackends::Reap() {
  for (size_t i = 0; i < children_.size();) {
    Child& c = *children_[i];
    int status = 0;
    pid_t r = waitpid(c.pid, &status, WNOHANG);
    if (r != c.pid) {
      ++i;
      continue;
    }
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    KillSession(c.pid, SIGKILL);  // whatever mpirun left behind (its ranks lead their own groups)
    OnExit(c, code);
    children_.erase(children_.begin() + static_cast<long>(i));
  }
}

void LaunchBackends::OnExit(Child& c, int code) {
  auto it = launches_.find(c.job_id);
  const bool current =
      !c.orphaned && it != launches_.end() && it->second.attempt == c.attempt && !it->second.done;
  const std::string output = ReadTail(c.log, kLogTailBytes);
  if (c.role == Role::kMpirun) {
    unlink(
        (o_.state_dir + "/mpirun/" + c.job_id + ".a" + std::to_string(c.attempt) + ".pid").c_str());
  }
  if (c.role == Role::kDelete) {
    if (code != 0) {
      WEFT_LOG(WARN) << "launch backends: kubectl delete for " << c.job_id << " exited with code "
                     << code << ": " << OneLine(LastLine(output), 300);
    }
    return;
  }
  if (!current) return;
  Launch& l = it->second;
  LaunchReport r;
  r.job_id = c.job_id;
  r.attempt = c.attempt;
  switch (c.role) {
    case Role::kMpirun: {
      l.done = true;
      r.kind = LaunchReport::Kind::kExited;
      r.exit_code = code;
      if (code == 0) {
        r.message = "mpirun exited with code 0";
      } else {
        int rank = -1, rank_code = -1;
        ParseMpirunFailure(output, &rank, &rank_code);
        r.rank = rank;
        r.log_tail = output;
        // Open MPI exits with the status of the rank that failed first, and names that rank
        // only when the others were still running.
        r.message = code > 128 ? "mpirun exited with code " + std::to_string(code) +
                                     " (killed by signal " + std::to_string(code - 128) + ")"
                               : "mpirun exited with code " + std::to_string(code);
        if (rank >= 0) {
          r.message += rank_code >= 0 ? " (rank " + std::to_string(rank) + " exited with code " +
                                            std::to_string(rank_code) + ")"
                                      : " (rank " + std::to_string(rank) + " failed first)";
        }
        r.message += "; output in " + c.log;
      }
      break;
    }
    case Role::kApply:
      if (code == 0) {
        l.next_poll = Clock::now() + std::chrono::milliseconds(o_.k8s_poll_ms);
        r.kind = LaunchReport::Kind::kStarted;
        r.message = "applied " + std::string(K8sKindName(o_.k8s_kind)) + " " + l.name +
                    " in namespace " + o_.k8s_namespace + " (" + l.manifest + ")";
      } else {
        l.done = true;
        r.kind = LaunchReport::Kind::kFailed;
        r.log_tail = output;
        r.message =
            "kubectl apply -f " + l.manifest +
            (c.timed_out ? " timed out after " + std::to_string(o_.kubectl_timeout_ms) + " ms"
                         : " failed (exit code " + std::to_string(code) + ")") +
            ": " + OneLine(output, 600);
      }
      break;
    case Role::kStatus: {
      l.next_poll = Clock::now() + std::chrono::milliseconds(o_.k8s_poll_ms);
      if (code != 0) {
        std::string err = OneLine(LastLine(output), 300);
        if (err != l.last_poll_error) {
          WEFT_LOG(WARN) << "launch backends: reading the status of " << l.name << " (" << c.job_id
                         << ") failed: " << err << "; retrying";
          l.last_poll_error = err;
        }
        return;
      }
      l.last_poll_error.clear();
      // Lines "TYPE\tMESSAGE" for each condition that holds.
      std::istringstream in(output);
      std::string line;
      while (std::getline(in, line)) {
        std::string type = line.substr(0, line.find('\t'));
        std::string msg =
            line.find('\t') == std::string::npos ? "" : line.substr(line.find('\t') + 1);
        if (type == "Complete" || type == "Succeeded") {
          l.done = true;
          r.kind = LaunchReport::Kind::kExited;
          r.exit_code = 0;
          r.message =
              "Kubernetes " + std::string(K8sKindName(o_.k8s_kind)) + " " + l.name + " succeeded";
          break;
        }
        if (type == "Failed") {
          l.done = true;
          r.kind = LaunchReport::Kind::kFailed;
          r.message = "Kubernetes " + std::string(K8sKindName(o_.k8s_kind)) + " " + l.name +
                      " failed" + (msg.empty() ? "" : ": " + OneLine(msg, 400));
          break;
        }
      }
      if (!l.done) return;
      break;
    }
    case Role::kDelete:
      return;
  }
  Report(std::move(r));
}

void LaunchBackends::Poll() {
  const auto now = Clock::now();
  for (auto& cp : children_) {
    Child& c = *cp;
    if (now >= c.deadline && !c.timed_out) {
      c.timed_out = true;
      KillSession(c.pid, SIGKILL);
      kill(c.pid, SIGKILL);
    }
    if (c.term_sent && now >= c.kill_at) {
      KillSession(c.pid, SIGKILL);
      kill(c.pid, SIGKILL);
      c.kill_at = Clock::time_point::max();
    }
  }
  if (o_.kubectl.empty() || stop_) return;
  for (auto& [job_id, l] : launches_) {
    if (l.launcher != Launcher::kKubernetes || !l.applied || l.done || now < l.next_poll) continue;
    bool busy = false;
    for (auto& c : children_) busy |= c->job_id == job_id && !c->orphaned;
    if (busy) continue;
    const std::string resource =
        (o_.k8s_kind == K8sKind::kIndexedJob ? "job.batch/" : "mpijob.kubeflow.org/") + l.name;
    std::string error;
    Child* c = Run(Role::kStatus, job_id, l.attempt,
                   KubectlArgv({"get", "-n", o_.k8s_namespace, resource, "-o",
                                "jsonpath={range .status.conditions[?(@.status==\"True\")]}"
                                "{.type}{\"\\t\"}{.message}{\"\\n\"}{end}"}),
                   Environ(), o_.state_dir + "/k8s/" + job_id + ".status.log",
                   o_.kubectl_timeout_ms, &error);
    if (c == nullptr) {
      l.next_poll = now + std::chrono::milliseconds(o_.k8s_poll_ms);
      WEFT_LOG(WARN) << "launch backends: kubectl get for " << job_id << ": " << error;
    }
  }
}

}  // namespace weft::scheduler
