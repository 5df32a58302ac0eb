#include <gtest/gtest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "base/auth_handshake.h"
#include "base/socket_util.h"
#include "rendezvous/file_store.h"
#include "rendezvous/store.h"
#include "rendezvous/tcp_store.h"

namespace weft::rendezvous {
namespace {

void ExerciseStore(Store& a, Store& b) {
  ASSERT_TRUE(a.Set("k1", "hello").ok());
  auto v = b.Get("k1", Deadline::AfterMs(5000));
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "hello");
  std::string big(3 << 20, 'x');
  ASSERT_TRUE(a.Set("big", big).ok());
  EXPECT_EQ(*b.Get("big", Deadline::AfterMs(5000)), big);
  // Get waits for a key set later by another thread.
  std::thread setter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    a.Set("late", "v").IgnoreError();
  });
  auto late = b.Get("late", Deadline::AfterMs(5000));
  setter.join();
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(*late, "v");
  // Missing key: DeadlineExceeded naming it, in bounded time.
  auto t0 = Clock::now();
  auto missing = b.Get("never", Deadline::AfterMs(200));
  EXPECT_EQ(missing.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(missing.status().message().find("never"), std::string::npos);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));
  EXPECT_EQ(*a.Add("ctr", 5), 5);
  EXPECT_EQ(*b.Add("ctr", -2), 3);
  EXPECT_TRUE(*a.Check("ctr"));
  EXPECT_TRUE(a.Delete("ctr").ok());
  EXPECT_FALSE(*b.Check("ctr"));
  PrefixStore pa("comm7", a), pb("comm7", b);
  ASSERT_TRUE(pa.Set("x", "1").ok());
  EXPECT_FALSE(*b.Check("x"));
  EXPECT_EQ(*pb.Get("x", Deadline::AfterMs(1000)), "1");
}

TEST(Store, HashStore) {
  HashStore s;
  ExerciseStore(s, s);
}

TEST(Store, FileStore) {
  char tmpl[] = "/tmp/weft-fs-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  auto a = FileStore::Open(std::string(tmpl) + "/store");
  auto b = FileStore::Open(std::string(tmpl) + "/store");
  ASSERT_TRUE(a.ok() && b.ok());
  ExerciseStore(**a, **b);
  std::string cmd = std::string("rm -rf ") + tmpl;
  ASSERT_EQ(system(cmd.c_str()), 0);
}

TEST(Store, TcpStoreAndBarrier) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0, "s3cret");
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  HostPort addr{"127.0.0.1", (*server)->port()};
  auto a = TcpStoreClient::Connect(addr, "s3cret", Deadline::AfterMs(5000));
  auto b = TcpStoreClient::Connect(addr, "s3cret", Deadline::AfterMs(5000));
  ASSERT_TRUE(a.ok() && b.ok()) << a.status().ToString();
  ExerciseStore(**a, **b);
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i) {
    ts.emplace_back([&] {
      auto c = TcpStoreClient::Connect(addr, "s3cret", Deadline::AfterMs(5000));
      if (c.ok() && (*c)->Barrier("b1", 4, Deadline::AfterMs(5000)).ok()) ok++;
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), 4);
}

TEST(Store, TcpStoreRefusesWrongSecretAndGarbage) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0, "right");
  ASSERT_TRUE(server.ok());
  HostPort addr{"127.0.0.1", (*server)->port()};
  auto bad = TcpStoreClient::Connect(addr, "wrong", Deadline::AfterMs(3000));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kUnauthenticated) << bad.status().ToString();
  // Random bytes: refused, and the store keeps serving.
  for (int i = 0; i < 3; ++i) {
    auto fd = ConnectTcp(addr, Deadline::AfterMs(3000));
    ASSERT_TRUE(fd.ok());
    std::string junk(1000, static_cast<char>(0x5a + i));
    WriteFull(fd->get(), junk.data(), junk.size(), Deadline::AfterMs(1000)).IgnoreError();
  }
  // A silent connection must not block others.
  auto silent = ConnectTcp(addr, Deadline::AfterMs(3000));
  ASSERT_TRUE(silent.ok());
  auto good = TcpStoreClient::Connect(addr, "right", Deadline::AfterMs(3000));
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  EXPECT_TRUE((*good)->Set("a", "b").ok());
  EXPECT_EQ(*(*good)->Get("a", Deadline::AfterMs(1000)), "b");
  // The server refuses them in its own time; wait (bounded) until it has counted all four.
  Deadline d = Deadline::AfterMs(5000);
  while ((*server)->refused_connections() < 4 && !d.Expired()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ((*server)->refused_connections(), 4);
}

TEST(Store, UnreachableStoreFailsInBoundedTime) {
  // Reserve a port and close it so nothing listens there.
  int port;
  {
    auto l = ListenTcp("127.0.0.1", 0);
    ASSERT_TRUE(l.ok());
    port = l->port;
  }
  auto t0 = Clock::now();
  auto c = OpenStore("tcp://127.0.0.1:" + std::to_string(port), "x", Deadline::AfterMs(500));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(c.status().message().find("rendezvous store"), std::string::npos) << c.status().message();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));
  EXPECT_EQ(OpenStore("http://x", "", Deadline::AfterMs(10)).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace weft::rendezvous
