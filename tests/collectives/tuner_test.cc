// The tuner's all-reduce choice across transports: recursive doubling for small vectors,
// Rabenseifner for mid-sized ones on a power-of-two number of ranks, the ring above that, and
// the link model's predictions where links were probed.
#include "collectives/tuner.h"

#include <gtest/gtest.h>

#include <string>

namespace weft::collectives {
namespace {

TunerInput Input(int world, size_t bytes) {
  TunerInput in;
  in.world_size = world;
  in.bytes = bytes;
  in.rd_max_bytes = 64 << 10;
  in.rab_min_bytes = 32 << 10;
  in.rab_max_bytes = 4 << 20;
  return in;
}

TEST(Tuner, RabenseifnerBetweenRecursiveDoublingAndRingOnPowersOfTwo) {
  for (int world : {4, 8, 16}) {
    EXPECT_EQ(ChooseAllReduce(Input(world, 32 << 10)), AllReduceAlgo::kRecursiveDoubling);
    EXPECT_EQ(ChooseAllReduce(Input(world, (32 << 10) + 4)), AllReduceAlgo::kRabenseifner);
    EXPECT_EQ(ChooseAllReduce(Input(world, 64 << 10)), AllReduceAlgo::kRabenseifner);
    EXPECT_EQ(ChooseAllReduce(Input(world, 4 << 20)), AllReduceAlgo::kRabenseifner);
    EXPECT_EQ(ChooseAllReduce(Input(world, (4 << 20) + 4)), AllReduceAlgo::kRing);
  }
  // Two ranks: the same schedule as the ring, which pipelines deeper. Not a power of two: the
  // fold moves the vector twice more than the ring.
  for (int world : {2, 3, 6}) {
    EXPECT_EQ(ChooseAllReduce(Input(world, 64 << 10)), AllReduceAlgo::kRecursiveDoubling) << world;
    EXPECT_EQ(ChooseAllReduce(Input(world, 1 << 20)), AllReduceAlgo::kRing) << world;
  }
  TunerInput off = Input(4, 1 << 20);
  off.rab_max_bytes = 0;
  EXPECT_EQ(ChooseAllReduce(off), AllReduceAlgo::kRing);
}

TEST(Tuner, RabenseifnerReachesFurtherOnFourRanksByDefault) {
  EXPECT_EQ(DefaultRabMaxBytes(4), size_t{8} << 20);
  EXPECT_EQ(DefaultRabMaxBytes(8), size_t{4} << 20);
  EXPECT_EQ(DefaultRabMaxBytes(16), size_t{4} << 20);
  TunerInput four = Input(4, 8 << 20);
  four.rab_max_bytes = DefaultRabMaxBytes(4);
  EXPECT_EQ(ChooseAllReduce(four), AllReduceAlgo::kRabenseifner);
  four.bytes = (8 << 20) + 4;
  EXPECT_EQ(ChooseAllReduce(four), AllReduceAlgo::kRing);
  TunerInput eight = Input(8, 8 << 20);
  eight.rab_max_bytes = DefaultRabMaxBytes(8);
  EXPECT_EQ(ChooseAllReduce(eight), AllReduceAlgo::kRing);
}

TEST(Tuner, ForcedAlgorithmWins) {
  TunerInput in = Input(3, 8);
  in.forced = "rabenseifner";
  EXPECT_EQ(ChooseAllReduce(in), AllReduceAlgo::kRabenseifner);
  EXPECT_EQ(ExplainAllReduceChoice(in), "rabenseifner: forced by WEFT_ALGO");
  in.forced = "ring";
  EXPECT_EQ(ChooseAllReduce(in), AllReduceAlgo::kRing);
}

TEST(Tuner, LinkModelPicksAmongTheThree) {
  // 8 ranks: recursive doubling 3(α + Nβ), Rabenseifner 6α + 1.75Nβ, ring 14α + 1.75Nβ.
  TunerInput in = Input(8, 1 << 20);
  in.have_link_model = true;
  in.alpha_us = 20;
  in.beta_us_per_byte = 1e-3;  // 1 GB/s: N·β = 1049 us, far above 2.4α
  EXPECT_DOUBLE_EQ(PredictRabenseifnerUs(in), 6 * 20 + 1.75 * (1 << 20) * 1e-3);
  EXPECT_EQ(ChooseAllReduce(in), AllReduceAlgo::kRabenseifner);
  in.bytes = 1024;  // N·β = 1 us: latency-bound, recursive doubling
  EXPECT_EQ(ChooseAllReduce(in), AllReduceAlgo::kRecursiveDoubling);
  in.bytes = 64 << 20;  // above WEFT_ALGO_RAB_MAX_BYTES: the ring
  EXPECT_EQ(ChooseAllReduce(in), AllReduceAlgo::kRing);
  // 6 ranks: the fold (two more copies of the vector) keeps Rabenseifner out; the model never
  // prefers it there (see UsesRabenseifner), and the tuner does not ask.
  TunerInput six = Input(6, 1 << 20);
  six.have_link_model = true;
  six.alpha_us = 20;
  six.beta_us_per_byte = 1e-3;
  EXPECT_GT(PredictRabenseifnerUs(six), PredictRingUs(six));
  EXPECT_EQ(ChooseAllReduce(six), AllReduceAlgo::kRing);
}

TEST(Tuner, ExplanationsSayWhy) {
  EXPECT_NE(ExplainAllReduceChoice(Input(4, 1 << 20)).find("2 log2(n) steps"), std::string::npos);
  EXPECT_NE(ExplainAllReduceChoice(Input(3, 1 << 20)).find("not a power of two"),
            std::string::npos);
  EXPECT_NE(ExplainAllReduceChoice(Input(4, 8 << 20)).find("WEFT_ALGO_RAB_MAX_BYTES"),
            std::string::npos);
  EXPECT_NE(ExplainAllReduceChoice(Input(2, 8 << 20)).find("same schedule"), std::string::npos);
}

TEST(Tuner, DirectArenaAllReduceShrinksWithTheRanks) {
  // (n-1) x size within 4 KiB where the ranks fit the cores, 16 KiB where they do not, <= 16 KiB.
  EXPECT_EQ(DefaultShmDirectMaxBytes(2, true), size_t{4096});
  EXPECT_EQ(DefaultShmDirectMaxBytes(8, true), size_t{585});
  EXPECT_EQ(DefaultShmDirectMaxBytes(16, true), size_t{273});
  EXPECT_EQ(DefaultShmDirectMaxBytes(2, false), size_t{16384});
  EXPECT_EQ(DefaultShmDirectMaxBytes(4, false), size_t{5461});
  EXPECT_EQ(DefaultShmDirectMaxBytes(1, true), size_t{16384});
  TunerInput in = Input(16, 256);
  in.local_arena = true;
  in.shm_direct_max_bytes = DefaultShmDirectMaxBytes(16, true);
  in.shm_slot_bytes = 1 << 20;
  EXPECT_EQ(ChooseAllReduce(in), AllReduceAlgo::kShmDirect);
  in.bytes = 512;
  EXPECT_EQ(ChooseAllReduce(in), AllReduceAlgo::kShmChunked);
  EXPECT_NE(ExplainAllReduceChoice(in).find("512 B > WEFT_SHM_COLL_DIRECT_MAX_BYTES (273)"),
            std::string::npos)
      << ExplainAllReduceChoice(in);
  // Forced, the direct all-reduce runs up to what one slot holds.
  in.forced = "shm_direct";
  in.bytes = 1 << 20;
  EXPECT_EQ(ChooseAllReduce(in), AllReduceAlgo::kShmDirect);
  in.bytes = (1 << 20) + 4;
  EXPECT_NE(ChooseAllReduce(in), AllReduceAlgo::kShmDirect);
}

}  // namespace
}  // namespace weft::collectives
