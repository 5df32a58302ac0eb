// Pipeline schedules: every schedule validates over many shapes, the validator catches broken
// programs (deadlock, mismatched sends, missing work), and the simulator reproduces the known
// bubbles: (p−1)/m for GPipe and 1F1B, (p−1)/(v·m) for interleaved 1F1B.
#include "runtime/pipeline/schedule.h"

#include <gtest/gtest.h>

#include <cstdio>

namespace weft::runtime::pipeline {
namespace {

struct Shape {
  ScheduleKind kind;
  int p, m, v;
};

std::vector<Shape> AllShapes() {
  std::vector<Shape> out;
  for (int p : {1, 2, 3, 4, 5, 8}) {
    for (int m : {1, 2, 3, 4, 7, 8, 16}) {
      out.push_back({ScheduleKind::kGPipe, p, m, 1});
      out.push_back({ScheduleKind::kOneFOneB, p, m, 1});
      for (int v : {2, 3, 4}) {
        if (p >= 2 && m % p == 0) out.push_back({ScheduleKind::kInterleaved, p, m, v});
      }
    }
  }
  return out;
}

TEST(ScheduleTest, EverySchedulValidates) {
  int n = 0;
  for (const Shape& s : AllShapes()) {
    ScheduleShape shape{s.p, s.m, s.v};
    auto progs = MakeSchedule(s.kind, shape);
    ASSERT_TRUE(progs.ok()) << progs.status().ToString();
    Status st = ValidateSchedule(*progs, shape);
    EXPECT_TRUE(st.ok()) << planner::ScheduleName(s.kind) << " p=" << s.p << " m=" << s.m
                         << " v=" << s.v << ": " << st.ToString();
    ++n;
  }
  EXPECT_GT(n, 90);
}

TEST(ScheduleTest, BubbleMatchesTheoryForUniformStages) {
  const double tf = 1.0, tb = 2.0;
  for (const Shape& s : AllShapes()) {
    ScheduleShape shape{s.p, s.m, s.v};
    auto progs = MakeSchedule(s.kind, shape);
    ASSERT_TRUE(progs.ok());
    // The stage's work is split evenly over its v chunks.
    auto costs = ScheduleCosts::Uniform(shape.chunks(), tf / s.v, tb / s.v);
    auto tl = SimulateSchedule(*progs, shape, costs);
    ASSERT_TRUE(tl.ok()) << tl.status().ToString();
    double expect = double(s.p - 1) / (double(s.v) * s.m);
    EXPECT_NEAR(tl->bubble_ratio, expect, 1e-9)
        << planner::ScheduleName(s.kind) << " p=" << s.p << " m=" << s.m << " v=" << s.v << "\n"
        << tl->Gantt(tf / s.v / 2);
    EXPECT_NEAR(tl->makespan, (s.m + double(s.p - 1) / s.v) * (tf + tb), 1e-9);
  }
  auto progs = MakeSchedule(ScheduleKind::kOneFOneB, {4, 8, 1});
  auto tl = SimulateSchedule(*progs, {4, 8, 1}, ScheduleCosts::Uniform(4, 1, 2));
  std::printf("1F1B p=4 m=8, bubble %.4f (theory 3/8):\n%s", tl->bubble_ratio,
              tl->Gantt(0.5).c_str());
}

TEST(ScheduleTest, OneFOneBStashesAtMostPMinusSMicroBatches) {
  const int p = 4, m = 12;
  auto progs = Make1F1BSchedule({p, m, 1});
  auto gpipe = MakeGPipeSchedule({p, m, 1});
  for (int s = 0; s < p; ++s) {
    auto peak = [](const StageProgram& prog) {
      int live = 0, peak = 0;
      for (const Action& a : prog) {
        if (a.kind == ActionKind::kForward) peak = std::max(peak, ++live);
        if (a.kind == ActionKind::kBackward) --live;
      }
      return peak;
    };
    EXPECT_EQ(peak(progs[s]), p - s);
    EXPECT_EQ(peak(gpipe[s]), m);
  }
}

TEST(ScheduleTest, TransfersAndAllReduceShowInTheTimeline) {
  ScheduleShape shape{2, 4, 1};
  auto progs = Make1F1BSchedule(shape);
  auto tl = SimulateSchedule(progs, shape, ScheduleCosts::Uniform(2, 1, 2, 0.25, 0));
  ASSERT_TRUE(tl.ok());
  // By hand: stage 1 runs F0 1.25–2.25, B0 –4.25; stage 0 gets that gradient at 4.5 and from then
  // on every 1F1B round trip pays both transfers: B0 4.5–6.5, F2 –7.5, B1 7.5–9.5 (gradient sent
  // at 7.25), F3 –10.5, B2 11–13, B3 14–16. Without transfers it would be (4 + 1)·3 = 15.
  EXPECT_NEAR(tl->makespan, 16, 1e-9) << tl->Gantt(0.25);
  auto tl2 = SimulateSchedule(progs, shape, ScheduleCosts::Uniform(2, 1, 2, 0, 10));
  ASSERT_TRUE(tl2.ok());
  // Stage 1 finishes its backwards 2 time units before stage 0, then the all-reduce takes 10.
  EXPECT_NEAR(tl2->makespan, 15 + 10, 1e-9);
}

TEST(ScheduleTest, ValidatorCatchesBrokenPrograms) {
  ScheduleShape shape{2, 2, 1};
  auto good = Make1F1BSchedule(shape);
  auto expect_error = [&](std::vector<StageProgram> progs, const std::string& what) {
    Status s = ValidateSchedule(progs, shape);
    EXPECT_FALSE(s.ok()) << what;
    EXPECT_NE(s.message().find(what), std::string::npos) << s.ToString();
  };
  // Stage 1 waits for gradients nobody sends: move stage 0's sends after its receive.
  {
    auto p = good;
    // Both stages receive first: stage 0 expects a gradient before sending any activation.
    p[0].insert(p[0].begin(), {ActionKind::kRecvGrad, 0, 0, 1});
    expect_error(p, "gradient received twice");
  }
  {
    std::vector<StageProgram> p(2);
    p[0] = {{ActionKind::kForward, 0, 0, -1},   {ActionKind::kForward, 1, 0, -1},
            {ActionKind::kRecvGrad, 1, 0, 1},   {ActionKind::kBackward, 1, 0, -1},
            {ActionKind::kSendAct, 0, 0, 1},    {ActionKind::kSendAct, 1, 0, 1},
            {ActionKind::kRecvGrad, 0, 0, 1},   {ActionKind::kBackward, 0, 0, -1},
            {ActionKind::kAllReduce, -1, 0, -1}};
    p[1] = good[1];
    expect_error(p, "deadlock: waiting forever at stage 0, action 2 (recv-gradient micro-batch 1");
  }
  {
    auto p = good;
    std::swap(p[0][2], p[0][5]);  // stage 0 sends micro-batch 1 before micro-batch 0
    Status s = ValidateSchedule(p, shape);
    EXPECT_FALSE(s.ok());
  }
  {
    auto p = good;
    p[1].pop_back();  // no all-reduce on stage 1
    expect_error(p, "chunk 1 has no all-reduce");
  }
  {
    auto p = good;
    for (auto it = p[1].begin(); it != p[1].end(); ++it) {
      if (it->kind == ActionKind::kBackward && it->micro == 1) {
        p[1].erase(it);
        break;
      }
    }
    Status s = ValidateSchedule(p, shape);
    EXPECT_FALSE(s.ok());
  }
  {
    auto p = good;
    p[0].push_back({ActionKind::kSendAct, 1, 0, 1});
    expect_error(p, "never received");
  }
  {
    auto p = good;
    p[0][1].peer = 0;
    expect_error(p, "activation goes to stage 1");
  }
  EXPECT_FALSE(MakeSchedule(ScheduleKind::kInterleaved, {2, 3, 2}).ok());
  EXPECT_FALSE(MakeSchedule(ScheduleKind::kGPipe, {2, 0, 1}).ok());
}

}  // namespace
}  // namespace weft::runtime::pipeline
