// Metrics: the scheduler's /metrics output passes `promtool check metrics`, and a real Prometheus
// (Debian's, on loopback) scrapes a running `weft scheduler` and answers a query with the value
// the scheduler holds.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "base/socket_util.h"
#include "scheduler/scheduler_client.h"
#include "tests/util/child_process.h"
#include "tests/util/prometheus_test_util.h"

namespace weft::scheduler {
namespace {

const char* kWeft = WEFT_BINARY;

using weft::testing::FreePort;
using weft::testing::HttpGet;
using weft::testing::SpawnLogged;
using weft::testing::StopChild;

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/sched_metrics_" + std::to_string(getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    sched_ = SpawnLogged(
        {kWeft, "scheduler", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--db",
         dir_ + "/s.db", "--token", "tok", "--port-file", dir_ + "/ports"},
        dir_ + "/scheduler.log");
    weft::testing::WaitForFile(dir_ + "/ports", 20000);  // the ASSERT below says if it never came
    std::ifstream(dir_ + "/ports") >> grpc_port_ >> metrics_port_;
    ASSERT_GT(metrics_port_, 0) << "scheduler did not start; see " << dir_;
    auto client = SchedulerClient::Create("127.0.0.1:" + std::to_string(grpc_port_), "tok");
    // Two jobs that stay PENDING (no nodes) so the gauges hold a known value.
    for (int i = 0; i < 2; ++i) {
      v1::SubmitJobRequest req;
      req.mutable_spec()->add_argv("/bin/true");
      req.mutable_spec()->mutable_resources()->set_ranks(2);
      auto submitted = (*client)->SubmitJob(req, Deadline::AfterMs(5000));
      ASSERT_TRUE(submitted.ok()) << submitted.status().ToString();
    }
  }
  void TearDown() override {
    StopChild(sched_);
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }
  std::string dir_;
  pid_t sched_ = -1;
  int grpc_port_ = 0, metrics_port_ = 0;
};

TEST_F(MetricsTest, PromtoolAcceptsRealOutput) {
  auto text = HttpGet(metrics_port_, "/metrics");
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_NE(text->find("weft_scheduler_jobs{state=\"PENDING\"} 2\n"), std::string::npos) << *text;
  EXPECT_NE(text->find("weft_scheduler_queue_wait_seconds_bucket{le=\"+Inf\"}"), std::string::npos);
  EXPECT_NE(text->find("weft_scheduler_nodes{state=\"READY\"} 0"), std::string::npos);
  if (system("command -v promtool >/dev/null 2>&1") != 0) {
    FAIL() << "promtool not found: scripts/setup.sh installs Debian's prometheus, which has it";
  }
  std::ofstream(dir_ + "/metrics.txt") << *text;
  std::string cmd =
      "promtool check metrics < " + dir_ + "/metrics.txt > " + dir_ + "/promtool.log 2>&1";
  int rc = system(cmd.c_str());
  std::ifstream log(dir_ + "/promtool.log");
  std::string out((std::istreambuf_iterator<char>(log)), {});
  EXPECT_EQ(rc, 0) << "promtool check metrics:\n" << out;
  EXPECT_EQ(HttpGet(metrics_port_, "/nope").status().code(), StatusCode::kUnavailable);
}

TEST_F(MetricsTest, PrometheusScrapesAndQueries) {
  if (system("command -v prometheus >/dev/null 2>&1") != 0) {
    FAIL() << "prometheus not found: scripts/setup.sh installs Debian's prometheus";
  }
  const int prom_port = FreePort();
  std::ofstream(dir_ + "/prometheus.yml")
      << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      << "scrape_configs:\n  - job_name: weft-scheduler\n    static_configs:\n"
      << "      - targets: ['127.0.0.1:" << metrics_port_ << "']\n";
  pid_t prom = SpawnLogged({"prometheus", "--config.file=" + dir_ + "/prometheus.yml",
                            "--storage.tsdb.path=" + dir_ + "/tsdb",
                            "--web.listen-address=127.0.0.1:" + std::to_string(prom_port)},
                           dir_ + "/prometheus.log");
  std::string last;
  bool found = false;
  Deadline d = Deadline::AfterMs(45000);
  while (!d.Expired() && !found) {
    auto r =
        HttpGet(prom_port, "/api/v1/query?query=weft_scheduler_jobs%7Bstate%3D%22PENDING%22%7D");
    if (r.ok()) {
      last = *r;
      // {"status":"success","data":{"resultType":"vector","result":[{...,"value":[t,"2"]}]}}
      found = last.find("\"job\":\"weft-scheduler\"") != std::string::npos &&
              last.find(",\"2\"]") != std::string::npos;
    }
    if (!found) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  StopChild(prom);
  EXPECT_TRUE(found) << "Prometheus never returned the scheduler's PENDING gauge; last answer: "
                     << last << " (logs in " << dir_ << ")";
}

}  // namespace
}  // namespace weft::scheduler
