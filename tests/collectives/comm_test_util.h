// Test helpers: run N ranks as threads of this process, each with its own Communicator over
// real transports, sharing one in-process rendezvous store.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "collectives/communicator.h"
#include "rendezvous/store.h"

namespace weft::collectives::testing {

// Options that make every chunking and fragmentation path run with small buffers.
inline CommOptions SmallOptions(const std::string& transport) {
  CommOptions o;
  o.transports = {transport};
  o.chunk_bytes = 512;
  o.shm_ring_bytes = 64 << 10;
  o.shm_eager_bytes = 2 << 10;
  o.tcp_sockets_per_peer = 2;
  o.tcp_chunk_bytes = 4 << 10;
  o.listen_host = "127.0.0.1";
  o.shm_coll_chunk_bytes = 1024;
  o.timeout_ms = 60000;
  o.init_timeout_ms = 30000;
  return o;
}

// Runs fn(rank, comms) on n threads; `comms` are the communicators made for each options entry.
inline void RunRanks(int n, const std::vector<CommOptions>& options,
                     const std::function<void(int, std::vector<std::unique_ptr<Communicator>>&)>& fn) {
  rendezvous::HashStore store;
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      std::vector<std::unique_ptr<Communicator>> comms;
      for (const auto& o : options) {
        auto c = Communicator::Create(store, r, n, o);
        ASSERT_TRUE(c.ok()) << "rank " << r << ": " << c.status().ToString();
        comms.push_back(std::move(*c));
      }
      fn(r, comms);
    });
  }
  for (auto& t : threads) t.join();
}

}  // namespace weft::collectives::testing
