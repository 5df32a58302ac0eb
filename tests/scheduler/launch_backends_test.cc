// Launch backends without running jobs: the launcher field's validation and persistence (new
// records round-trip, old records decode as agents), the core's handling of launcher jobs (placed
// like others, never assigned to agents, listed for backends, driven by their reports), hostfile
// rendering, and the Kubernetes manifests, checked with the real `kubectl kustomize` (offline).
#include "scheduler/launch_backends.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "scheduler/scheduler_core.h"

namespace weft::scheduler {
namespace {

Node MakeNode(const std::string& id, const std::string& host, const std::string& addr, int slots) {
  Node n;
  n.node_id = id;
  n.host_id = host;
  n.address = addr;
  n.slots = slots;
  n.switch_id = "s";
  return n;
}

Job PlacedJob(Launcher launcher, const std::vector<std::string>& rank_nodes) {
  Job j;
  j.id = "job-7";
  j.attempt = 1;
  j.spec.name = "t";
  j.spec.argv = {"/usr/local/bin/weft", "bench", "allreduce", "-b", "8"};
  j.spec.env = {"WEFT_TRANSPORT=shm,tcp", "QUOTE=a \"b\"\nc"};
  j.spec.launcher = launcher;
  j.world_size = static_cast<int>(rank_nodes.size());
  j.spec.resources.ranks = j.world_size;
  for (int r = 0; r < j.world_size; ++r) j.placement.push_back(RankPlacement{r, rank_nodes[r], 0});
  j.job_secret = "s3cr3t";
  return j;
}

TEST(LauncherSpecTest, ValidationNamesTheField) {
  JobSpec s;
  s.argv = {"/bin/true"};
  s.resources.ranks = 1;
  EXPECT_TRUE(ValidateJobSpec(s, false).ok());
  s.launcher = static_cast<Launcher>(7);
  Status st = ValidateJobSpec(s, false);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("spec.launcher: 7"), std::string::npos) << st.message();
  Launcher l;
  EXPECT_TRUE(ParseLauncher("MPIRUN", &l) && l == Launcher::kMpirun);
  EXPECT_TRUE(ParseLauncher("kubernetes", &l) && l == Launcher::kKubernetes);
  EXPECT_FALSE(ParseLauncher("slurm", &l));
}

TEST(LauncherEncodingTest, RoundTripsAndOldRecordsDecodeAsAgents) {
  for (bool with_plan : {false, true}) {
    for (Launcher l : {Launcher::kAgents, Launcher::kMpirun, Launcher::kKubernetes}) {
      Job j = PlacedJob(l, {"n1", "n1"});
      if (with_plan) {
        PlanRequest p;
        p.model_json = "models/m.json";
        p.pin_pp = 2;
        j.spec.resources.plan = p;
      }
      auto back = DecodeJob(EncodeJob(j));
      ASSERT_TRUE(back.ok()) << back.status().ToString();
      EXPECT_EQ(back->spec.launcher, l);
      EXPECT_EQ(back->placement.size(), 2u);
      if (with_plan) {
        EXPECT_EQ(back->spec.resources.plan->pin_pp, 2);
      }
    }
    // A record written before the launcher section (it ends 8 bytes earlier, before the
    // uncharged-attempts section's 8 bytes) is an agents job.
    Job j = PlacedJob(Launcher::kMpirun, {"n1"});
    if (with_plan) j.spec.resources.plan = PlanRequest{"m.json", 0, 3, 0, "", 0};
    std::string bytes = EncodeJob(j);
    auto old = DecodeJob(std::string_view(bytes).substr(0, bytes.size() - 16));
    ASSERT_TRUE(old.ok()) << old.status().ToString();
    EXPECT_EQ(old->spec.launcher, Launcher::kAgents);
    if (with_plan) {
      EXPECT_EQ(old->spec.resources.plan->pin_pp, 3);
    }
    // A launcher number this build does not know is corruption, not a silent agents job.
    bytes[bytes.size() - 16] = 9;
    EXPECT_EQ(DecodeJob(bytes).status().code(), StatusCode::kDataLoss);
  }
}

TEST(LauncherCoreTest, PlacedButNotAssignedAndDrivenByReports) {
  CoreOptions o;
  auto core = std::move(SchedulerCore::Open(o, nullptr)).value();
  auto inc = core->RegisterNode(MakeNode("n1", "h1", "10.0.0.1", 4));
  ASSERT_TRUE(inc.ok());
  JobSpec s;
  s.argv = {"/bin/true"};
  s.resources.ranks = 3;
  s.launcher = Launcher::kMpirun;
  s.retry.max_retries = 1;
  auto job = core->Submit(s);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(job->state, JobState::kScheduled);
  // Slots are held, but the agent is told nothing.
  auto a = core->Heartbeat("n1", *inc, {}, {});
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->empty());
  EXPECT_EQ(core->Cluster().nodes[0].used_slots, 3);
  int64_t gen = 0;
  std::vector<LaunchTarget> targets;
  ASSERT_TRUE(core->WaitLaunchTargets(&gen, Deadline::AfterMs(1000), &targets));
  ASSERT_EQ(targets.size(), 1u);
  EXPECT_EQ(targets[0].job.id, job->id);
  ASSERT_EQ(targets[0].nodes.size(), 1u);
  EXPECT_EQ(targets[0].nodes[0].address, "10.0.0.1");
  // Nothing changed: the wait times out.
  EXPECT_FALSE(core->WaitLaunchTargets(&gen, Deadline::AfterMs(50), &targets));

  LaunchReport r;
  r.job_id = job->id;
  r.attempt = 0;
  r.kind = LaunchReport::Kind::kStarted;
  r.message = "mpirun started";
  ASSERT_TRUE(core->ReportLaunch(r).ok());
  EXPECT_EQ(core->GetJob(job->id, nullptr)->state, JobState::kRunning);
  // The first attempt fails with rank 1's exit code: retried, and the old attempt is stale.
  r.kind = LaunchReport::Kind::kExited;
  r.exit_code = 3;
  r.rank = 1;
  r.message = "mpirun exited with code 3 (rank 1 exited with code 3)";
  ASSERT_TRUE(core->ReportLaunch(r).ok());
  Job now = *core->GetJob(job->id, nullptr);
  EXPECT_EQ(now.attempt, 1);
  EXPECT_EQ(now.state, JobState::kScheduled);  // placed again at once
  EXPECT_NE(now.reason.find("placed"), std::string::npos) << now.reason;
  EXPECT_EQ(core->ReportLaunch(r).code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(core->WaitLaunchTargets(&gen, Deadline::AfterMs(1000), &targets));
  ASSERT_EQ(targets.size(), 1u);
  EXPECT_EQ(targets[0].job.attempt, 1);
  r.attempt = 1;
  r.kind = LaunchReport::Kind::kExited;
  r.exit_code = 0;
  r.message = "mpirun exited with code 0";
  ASSERT_TRUE(core->ReportLaunch(r).ok());
  now = *core->GetJob(job->id, nullptr);
  EXPECT_EQ(now.state, JobState::kSucceeded);
  EXPECT_EQ(core->Cluster().nodes[0].used_slots, 0);
  ASSERT_TRUE(core->WaitLaunchTargets(&gen, Deadline::AfterMs(1000), &targets));
  EXPECT_TRUE(targets.empty());
}

TEST(HostfileTest, OneLinePerHostInRankOrderMergingSharedHosts) {
  std::vector<Node> nodes = {MakeNode("a1", "ha", "10.0.0.1", 2),
                             MakeNode("a2", "ha", "10.0.0.1", 2),
                             MakeNode("b1", "hb", "10.0.0.2", 4)};
  Job j = PlacedJob(Launcher::kMpirun, {"b1", "b1", "a1", "a1", "a2"});
  auto hf = RenderHostfile(j, nodes);
  ASSERT_TRUE(hf.ok()) << hf.status().ToString();
  EXPECT_EQ(hf->text, "10.0.0.2 slots=2\n10.0.0.1 slots=3\n");
  EXPECT_FALSE(hf->sequential);
  EXPECT_EQ(hf->hosts, 2);
  LaunchOptions o;
  auto argv = MpirunArgv(o, j, "/s/h", hf->sequential);
  std::string line;
  for (const auto& a : argv) line += a + " ";
  EXPECT_NE(line.find("--hostfile /s/h -np 5 --map-by slot"), std::string::npos) << line;
  EXPECT_NE(line.find("--mca pml ob1 --mca btl tcp,vader,self"), std::string::npos) << line;
  EXPECT_NE(line.find("-x QUOTE -x WEFT_JOB_ID -x WEFT_TRANSPORT /usr/local/bin/weft bench"),
            std::string::npos)
      << line;
  EXPECT_EQ(line.find("s3cr3t"), std::string::npos);
  // A host whose ranks are not contiguous: one line per rank for --map-by seq.
  Job k = PlacedJob(Launcher::kMpirun, {"a1", "b1", "a2"});
  hf = RenderHostfile(k, nodes);
  ASSERT_TRUE(hf.ok());
  EXPECT_TRUE(hf->sequential);
  EXPECT_EQ(hf->text, "10.0.0.1\n10.0.0.2\n10.0.0.1\n");
  // An unknown node is an error naming it.
  Job bad = PlacedJob(Launcher::kMpirun, {"zz"});
  EXPECT_NE(RenderHostfile(bad, nodes).status().message().find("'zz'"), std::string::npos);
}

// Writes `manifest` into a fresh directory with a kustomization listing it and returns what
// `kubectl kustomize` renders ("" and a test failure when kubectl fails).
std::string Kustomize(const std::string& manifest, const std::string& tag) {
  std::string dir = ::testing::TempDir() + "/k8s_" + std::to_string(getpid()) + "_" + tag;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/job.yaml") << manifest;
  std::ofstream(dir + "/kustomization.yaml")
      << "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
         "  - job.yaml\n";
  std::string out;
  FILE* p = popen(("kubectl kustomize " + dir + " 2>&1").c_str(), "r");
  EXPECT_NE(p, nullptr);
  if (p == nullptr) return "";
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int rc = pclose(p);
  EXPECT_EQ(rc, 0) << out << "\nmanifest:\n" << manifest;
  std::filesystem::remove_all(dir);
  return rc == 0 ? out : "";
}

bool HaveKubectl() { return std::system("kubectl version --client >/dev/null 2>&1") == 0; }

TEST(KubernetesManifestTest, IndexedJobWithHeadlessServiceRendersWithKustomize) {
  ASSERT_TRUE(HaveKubectl()) << "kubectl not found: run scripts/setup.sh (kubernetes-client)";
  std::vector<Node> nodes = {MakeNode("node-a", "ha", "10.0.0.1", 2),
                             MakeNode("node-b", "hb", "10.0.0.2", 2)};
  Job j = PlacedJob(Launcher::kKubernetes, {"node-a", "node-a", "node-b", "node-b"});
  j.spec.resources.memory_per_rank_bytes = 1 << 30;
  LaunchOptions o;
  o.k8s_namespace = "train";
  o.k8s_image = "registry.local/weft:1.2";
  auto y = RenderKubernetes(o, j, nodes, false);
  ASSERT_TRUE(y.ok()) << y.status().ToString();
  std::string out = Kustomize(*y, "indexed");
  ASSERT_FALSE(out.empty());
  for (const char* want : {"kind: Secret",
                           "kind: Service",
                           "clusterIP: None",
                           "kind: Job",
                           "completionMode: Indexed",
                           "completions: 4",
                           "parallelism: 4",
                           "backoffLimit: 0",
                           "subdomain: weft-job-7-a1",
                           "name: weft-job-7-a1",
                           "namespace: train",
                           "image: registry.local/weft:1.2",
                           "key: metadata.name",
                           "- node-a",
                           "- node-b",
                           "name: WORLD_SIZE",
                           "value: \"4\"",
                           "name: MASTER_ADDR",
                           "value: weft-job-7-a1-0.weft-job-7-a1",
                           "name: MASTER_PORT",
                           "name: WEFT_JOB_SECRET",
                           "key: WEFT_JOB_SECRET",
                           "name: WEFT_JOB_ID",
                           "value: job-7.a1",
                           "name: WEFT_TRANSPORT",
                           "value: shm,tcp",
                           "memory: \"1073741824\"",
                           "job-name: weft-job-7-a1",
                           "- /usr/local/bin/weft",
                           "- allreduce",
                           "WEFT_JOB_SECRET: s3cr3t"}) {
    EXPECT_NE(out.find(want), std::string::npos) << "missing '" << want << "' in\n" << out;
  }
  // The value with quotes and a newline survived YAML quoting.
  EXPECT_NE(out.find("a \"b\"\n"), std::string::npos) << out;
  // Previews never show the secret.
  auto redacted = RenderKubernetes(o, j, nodes, true);
  ASSERT_TRUE(redacted.ok());
  EXPECT_EQ(redacted->find("s3cr3t"), std::string::npos);
  EXPECT_NE(redacted->find("<redacted>"), std::string::npos);
}

TEST(KubernetesManifestTest, MpiJobRendersWithKustomize) {
  ASSERT_TRUE(HaveKubectl()) << "kubectl not found: run scripts/setup.sh (kubernetes-client)";
  std::vector<Node> nodes = {MakeNode("node-a", "ha", "10.0.0.1", 2),
                             MakeNode("node-b", "hb", "10.0.0.2", 2),
                             MakeNode("node-c", "hc", "10.0.0.3", 2)};
  Job j = PlacedJob(Launcher::kKubernetes, {"node-a", "node-a", "node-b", "node-b", "node-c"});
  LaunchOptions o;
  o.k8s_kind = K8sKind::kMpiJob;
  auto y = RenderKubernetes(o, j, nodes, false);
  ASSERT_TRUE(y.ok()) << y.status().ToString();
  std::string out = Kustomize(*y, "mpijob");
  ASSERT_FALSE(out.empty());
  for (const char* want :
       {"apiVersion: kubeflow.org/v2beta1", "kind: MPIJob", "slotsPerWorker: 2", "replicas: 3",
        "Launcher:", "Worker:", "- mpirun", "- -np", "- \"5\"", "- --allow-run-as-root",
        "- WEFT_TRANSPORT", "- WEFT_JOB_ID", "key: metadata.name", "- node-c", "podAntiAffinity",
        "weft.dev/worker-of: weft-job-7-a1", "namespace: default"}) {
    EXPECT_NE(out.find(want), std::string::npos) << "missing '" << want << "' in\n" << out;
  }
}

TEST(LaunchPreviewTest, AgentsJobsHaveNoneAndMpirunShowsTheCommand) {
  std::vector<Node> nodes = {MakeNode("n1", "h", "127.0.0.1", 4)};
  LaunchOptions o;
  o.state_dir = "/var/lib/weft";
  EXPECT_EQ(LaunchPreview(o, PlacedJob(Launcher::kAgents, {"n1"}), nodes).status().code(),
            StatusCode::kInvalidArgument);
  auto p = LaunchPreview(o, PlacedJob(Launcher::kMpirun, {"n1", "n1"}), nodes);
  ASSERT_TRUE(p.ok());
  EXPECT_NE(p->find("# hostfile /var/lib/weft/mpirun/job-7.a1.hostfile\n127.0.0.1 slots=2\n"),
            std::string::npos)
      << *p;
  EXPECT_NE(p->find("mpirun --hostfile"), std::string::npos) << *p;
  EXPECT_EQ(p->find("s3cr3t"), std::string::npos);
  LaunchOptions bad = o;
  bad.k8s_namespace = "Not_A_Label";
  EXPECT_NE(ValidateLaunchOptions(bad).message().find("k8s_namespace"), std::string::npos);
}

}  // namespace
}  // namespace weft::scheduler
