// Load: 10,000 jobs submitted over gRPC by 8 concurrent clients to a scheduler persisting to
// SQLite (fsync per commit). None may be lost; prints submissions/s and SubmitJob latency
// percentiles (a report, not an assertion: these machines are noisy).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <thread>

#include "scheduler/scheduler_client.h"
#include "scheduler/scheduler_service.h"

namespace weft::scheduler {
namespace {

TEST(SchedulerLoadTest, TenThousandJobsFromEightClientsNoneLost) {
  const int kClients = 8, kPerClient = 1250;
  std::string db = ::testing::TempDir() + "/load_" + std::to_string(getpid()) + ".db";
  std::filesystem::remove(db);
  auto core = SchedulerCore::Open(CoreOptions(), std::move(StateStore::Open(db, true)).value());
  ASSERT_TRUE(core.ok());
  ServiceOptions so;
  so.token = "t";
  auto server = SchedulerServer::Start(**core, so);
  ASSERT_TRUE(server.ok());
  const std::string addr = "127.0.0.1:" + std::to_string((*server)->port());

  std::vector<std::vector<double>> lat(kClients);
  std::vector<std::vector<std::string>> ids(kClients);
  std::vector<int> errors(kClients, 0);
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      auto client = std::move(SchedulerClient::Create(addr, "t")).value();  // own channel
      v1::SubmitJobRequest req;
      req.mutable_spec()->add_argv("/bin/true");
      req.mutable_spec()->mutable_resources()->set_ranks(1 + c % 4);
      req.mutable_spec()->set_priority(c % 3);
      for (int i = 0; i < kPerClient; ++i) {
        req.mutable_spec()->set_name("load-" + std::to_string(c) + "-" + std::to_string(i));
        auto s = std::chrono::steady_clock::now();
        auto r = client->SubmitJob(req, Deadline::AfterMs(30000));
        lat[c].push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s)
                .count());
        if (r.ok()) {
          ids[c].push_back(r->job().id());
        } else {
          errors[c]++;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<double> all;
  std::set<std::string> acked;
  int errs = 0;
  for (int c = 0; c < kClients; ++c) {
    all.insert(all.end(), lat[c].begin(), lat[c].end());
    acked.insert(ids[c].begin(), ids[c].end());
    errs += errors[c];
  }
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) { return all[static_cast<size_t>(p * (all.size() - 1))]; };
  std::printf(
      "[bench] %d jobs by %d clients in %.2f s: %.0f submissions/s; SubmitJob latency "
      "p50 %.2f ms, p99 %.2f ms, max %.2f ms (SQLite WAL, synchronous=FULL)\n",
      kClients * kPerClient, kClients, secs, kClients * kPerClient / secs, pct(0.5), pct(0.99),
      all.back());
  EXPECT_EQ(errs, 0);
  EXPECT_EQ(acked.size(), static_cast<size_t>(kClients * kPerClient));

  // Every acknowledged job is listed, once, through paging.
  auto client = std::move(SchedulerClient::Create(addr, "t")).value();
  std::set<std::string> listed;
  v1::ListJobsRequest l;
  l.set_page_size(1000);
  while (true) {
    auto page = client->ListJobs(l, Deadline::AfterMs(10000));
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    for (const auto& j : page->jobs()) EXPECT_TRUE(listed.insert(j.id()).second) << j.id();
    if (page->next_page_token().empty()) break;
    l.set_page_token(page->next_page_token());
  }
  EXPECT_EQ(listed, acked);
  server->reset();
  core->reset();
  // And all of them are on disk.
  auto reopened = SchedulerCore::Open(CoreOptions(), std::move(StateStore::Open(db, true)).value());
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ((*reopened)->Cluster().pending_jobs, kClients * kPerClient);
  std::filesystem::remove(db);
  std::filesystem::remove(db + "-wal");
  std::filesystem::remove(db + "-shm");
}

}  // namespace
}  // namespace weft::scheduler
