// BootstrapFromEnv under Open MPI's variables: with no store in the environment the ranks take
// the MPI exchange (WEFT_WITH_MPI builds); a store or MASTER_ADDR/MASTER_PORT still wins.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "rendezvous/bootstrap.h"

namespace weft::rendezvous {
namespace {

Result<BootstrapInfo> From(const std::map<std::string, std::string>& env) {
  return BootstrapFromEnv([&](const char* n) -> const char* {
    auto it = env.find(n);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(MpiBootstrapEnv, OpenMpiWithoutAStoreTakesTheMpiExchange) {
  auto i = From({{"OMPI_COMM_WORLD_RANK", "2"},
                 {"OMPI_COMM_WORLD_SIZE", "4"},
                 {"OMPI_COMM_WORLD_LOCAL_RANK", "0"}});
  ASSERT_TRUE(i.ok()) << i.status().ToString();
  EXPECT_TRUE(i->mpi_exchange);
  EXPECT_TRUE(i->store_url.empty());
  EXPECT_FALSE(i->serve_store);
  EXPECT_EQ(i->rank, 2);
  EXPECT_EQ(i->world_size, 4);
  EXPECT_EQ(i->source, "Open MPI");
}

TEST(MpiBootstrapEnv, AStoreOrMasterAddrWins) {
  auto s = From({{"OMPI_COMM_WORLD_RANK", "0"},
                 {"OMPI_COMM_WORLD_SIZE", "2"},
                 {"WEFT_STORE", "tcp://127.0.0.1:9"}});
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->mpi_exchange);
  EXPECT_EQ(s->store_url, "tcp://127.0.0.1:9");
  auto m = From({{"OMPI_COMM_WORLD_RANK", "0"},
                 {"OMPI_COMM_WORLD_SIZE", "2"},
                 {"MASTER_ADDR", "10.0.0.1"},
                 {"MASTER_PORT", "29500"}});
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->mpi_exchange);
  EXPECT_TRUE(m->serve_store);
}

TEST(MpiBootstrapEnv, OtherLaunchersStillNeedAStore) {
  auto t = From({{"RANK", "0"}, {"WORLD_SIZE", "2"}});
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("no rendezvous store"), std::string::npos);
}

}  // namespace
}  // namespace weft::rendezvous
