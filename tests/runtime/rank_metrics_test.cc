// Rank metrics end to end: `weft run -n 2 -- weft bench allreduce` with WEFT_METRICS_PORT set;
// each rank serves /metrics at the base port + its local rank, the real text passes
// `promtool check metrics`, and Debian's Prometheus on loopback scrapes both ranks and answers a
// query for weft_collective_latency_seconds_count with nonzero samples from each. promtool and
// prometheus come from scripts/setup.sh; without them the test fails.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "tests/util/prometheus_test_util.h"

namespace weft {
namespace {

using testing::HttpGet;

const char* kWeft = WEFT_BINARY;

// Whether a Prometheus query answer holds a sample labelled rank="<rank>" whose value is not 0.
bool HasNonzeroSample(const std::string& json, int rank) {
  const std::string label = "\"rank\":\"" + std::to_string(rank) + "\"";
  size_t at = 0;
  while ((at = json.find(label, at)) != std::string::npos) {
    size_t v = json.find("\"value\":[", at);
    if (v == std::string::npos) return false;
    size_t q = json.find(",\"", v);
    size_t end = q == std::string::npos ? q : json.find('"', q + 2);
    if (end == std::string::npos) return false;
    const std::string value = json.substr(q + 2, end - q - 2);
    if (value != "0") return true;
    at = end;
  }
  return false;
}

class RankMetrics : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/rank_metrics_" + std::to_string(getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    if (job_ > 0) testing::StopChild(job_);
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }
  // True while the job runs; false (with its log) once it has exited.
  bool JobRunning(std::string* why) {
    int status = 0;
    if (waitpid(job_, &status, WNOHANG) != job_) return true;
    job_ = -1;
    *why = "the job exited (status " + std::to_string(status) + "):\n" +
           testing::ReadFileText(dir_ + "/job.log");
    return false;
  }
  std::string dir_;
  pid_t job_ = -1;
};

TEST_F(RankMetrics, RanksServeMetricsThatPromtoolAndPrometheusAccept) {
  const int base = testing::FreePortRange(2);
  ASSERT_GT(base, 0);
  // Runs until stopped (2 x 10^8 8-byte all-reduces through the shared-memory arena take over a
  // minute even at their fastest).
  job_ = testing::SpawnLogged({kWeft, "run", "-n", "2", "--", kWeft, "bench", "allreduce", "-b",
                               "8", "-e", "8", "-n", "100000000", "-w", "100000000", "-c", "0"},
                              dir_ + "/job.log",
                              {"WEFT_METRICS_PORT=" + std::to_string(base), "WEFT_LOG_LEVEL=info"});
  ASSERT_GT(job_, 0);

  for (int rank = 0; rank < 2; ++rank) {
    const int port = base + rank;  // local rank == rank on one host
    std::string text, why;
    Deadline d = Deadline::AfterMs(60000);
    while (!d.Expired()) {
      ASSERT_TRUE(JobRunning(&why)) << why;
      auto got = HttpGet(port, "/metrics");
      if (got.ok() && got->find("weft_collective_latency_seconds_count{op=\"allreduce\"") !=
                          std::string::npos) {
        text = *got;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_FALSE(text.empty()) << "rank " << rank << " served no all-reduce latency on port "
                               << port << "; job log:\n"
                               << testing::ReadFileText(dir_ + "/job.log");
    const std::string job_labels = "rank=\"" + std::to_string(rank) + "\",world_size=\"2\"";
    EXPECT_NE(text.find("weft_collective_latency_seconds_bucket{op=\"allreduce\",algorithm=\""
                        "shm_direct\",transport=\"arena\"," +
                        job_labels + ",le=\"2.5e-07\"}"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("weft_transport_sent_bytes_total{transport=\"arena\",peer_class=\""
                        "same_host\"," +
                        job_labels + "}"),
              std::string::npos)
        << text;
    Status promtool = testing::PromtoolCheck(text, dir_, "rank" + std::to_string(rank));
    EXPECT_TRUE(promtool.ok()) << promtool.ToString();
  }

  testing::PrometheusProcess prom(
      dir_, "weft-ranks",
      {"127.0.0.1:" + std::to_string(base), "127.0.0.1:" + std::to_string(base + 1)});
  ASSERT_TRUE(prom.started())
      << "prometheus not found: scripts/setup.sh installs Debian's prometheus";
  std::string last;
  bool found = prom.QueryUntil(
      "weft_collective_latency_seconds_count",
      [](const std::string& json) {
        return json.find("\"status\":\"success\"") != std::string::npos &&
               json.find("\"job\":\"weft-ranks\"") != std::string::npos &&
               HasNonzeroSample(json, 0) && HasNonzeroSample(json, 1);
      },
      Deadline::AfterMs(60000), &last);
  EXPECT_TRUE(found) << "Prometheus never returned nonzero weft_collective_latency_seconds_count "
                        "samples from both ranks; last answer: "
                     << last << " (logs in " << dir_ << ")";
  std::string why;
  EXPECT_TRUE(JobRunning(&why)) << why;
}

}  // namespace
}  // namespace weft
