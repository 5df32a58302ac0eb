#include <gtest/gtest.h>

#include <map>

#include "rendezvous/bootstrap.h"

namespace weft::rendezvous {
namespace {

Result<BootstrapInfo> From(const std::map<std::string, std::string>& env) {
  return BootstrapFromEnv([&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(Bootstrap, WeftRun) {
  auto i = From({{"WEFT_RANK", "2"}, {"WEFT_WORLD_SIZE", "4"}, {"WEFT_LOCAL_RANK", "2"},
                 {"WEFT_STORE", "tcp://127.0.0.1:555"}, {"WEFT_JOB_SECRET", "s"},
                 {"RANK", "9"}, {"WORLD_SIZE", "99"}});
  ASSERT_TRUE(i.ok()) << i.status().ToString();
  EXPECT_EQ(i->rank, 2);
  EXPECT_EQ(i->world_size, 4);
  EXPECT_EQ(i->local_rank, 2);
  EXPECT_EQ(i->store_url, "tcp://127.0.0.1:555");
  EXPECT_FALSE(i->serve_store);
  EXPECT_EQ(i->secret, "s");
  EXPECT_EQ(i->source, "weft run");
}

TEST(Bootstrap, TorchrunRankZeroServesTheStore) {
  auto i0 = From({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "0"},
                  {"MASTER_ADDR", "10.1.2.3"}, {"MASTER_PORT", "29500"}});
  ASSERT_TRUE(i0.ok());
  EXPECT_EQ(i0->store_url, "tcp://10.1.2.3:29500");
  EXPECT_TRUE(i0->serve_store);
  EXPECT_EQ(i0->source, "torchrun");
  auto i1 = From({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}});
  ASSERT_TRUE(i1.ok());
  EXPECT_FALSE(i1->serve_store);
}

TEST(Bootstrap, OpenMpiSlurmAndKubernetes) {
  auto m = From({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "8"},
                 {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"WEFT_STORE", "file:///tmp/x"}});
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->rank, 3);
  EXPECT_EQ(m->local_rank, 1);
  EXPECT_EQ(m->source, "Open MPI");
  auto s = From({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "6"}, {"SLURM_LOCALID", "1"},
                 {"MASTER_ADDR", "n1"}, {"MASTER_PORT", "7000"}});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->rank, 5);
  EXPECT_EQ(s->world_size, 6);
  EXPECT_EQ(s->source, "Slurm");
  auto k = From({{"JOB_COMPLETION_INDEX", "0"}, {"WORLD_SIZE", "4"},
                 {"MASTER_ADDR", "train-0.train"}, {"MASTER_PORT", "29500"}});
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->source, "Kubernetes Indexed Job");
  EXPECT_TRUE(k->serve_store);
}

TEST(Bootstrap, ClearErrors) {
  auto none = From({});
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(none.status().message().find("no rank"), std::string::npos);
  auto no_size = From({{"RANK", "1"}});
  EXPECT_NE(no_size.status().message().find("WORLD_SIZE"), std::string::npos);
  auto bad = From({{"WEFT_RANK", "x"}, {"WEFT_WORLD_SIZE", "2"}});
  EXPECT_NE(bad.status().message().find("WEFT_RANK='x'"), std::string::npos);
  auto outside = From({{"WEFT_RANK", "4"}, {"WEFT_WORLD_SIZE", "4"}, {"WEFT_STORE", "tcp://a:1"}});
  EXPECT_NE(outside.status().message().find("outside world size 4"), std::string::npos);
  auto no_store = From({{"WEFT_RANK", "0"}, {"WEFT_WORLD_SIZE", "1"}});
  EXPECT_NE(no_store.status().message().find("no rendezvous store"), std::string::npos);
  auto bad_port = From({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"MASTER_ADDR", "a"},
                        {"MASTER_PORT", "http"}});
  EXPECT_NE(bad_port.status().message().find("MASTER_PORT='http'"), std::string::npos);
}

}  // namespace
}  // namespace weft::rendezvous
