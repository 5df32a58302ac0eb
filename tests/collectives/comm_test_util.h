// Test helpers: run N ranks as threads of this process, each with its own Communicator over
// real transports, sharing one in-process rendezvous store.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/dtype.h"
#include "base/reduce_kernels.h"
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

// Element i of rank r's input, chosen so every reduction is exact in every type (sums of small
// integers, products of ones and twos), so any reduction order gives the same bits.
inline std::vector<uint8_t> Input(DType d, ReduceOp op, int rank, int64_t count, int salt = 0) {
  std::vector<uint8_t> out(static_cast<size_t>(count) * DTypeSize(d));
  for (int64_t i = 0; i < count; ++i) {
    double v =
        op == ReduceOp::kProd ? 1 + ((rank + i + salt) % 2) : 1 + ((rank * 3 + i + salt) % 3);
    if (op == ReduceOp::kMin || op == ReduceOp::kMax) v = (rank * 7 + i * 3 + salt) % 11;
    uint8_t* p = out.data() + i * DTypeSize(d);
    switch (d) {
      case DType::kFloat32: {
        float x = static_cast<float>(v);
        std::memcpy(p, &x, 4);
        break;
      }
      case DType::kFloat64:
        std::memcpy(p, &v, 8);
        break;
      case DType::kFloat16: {
        uint16_t x = FloatToHalf(static_cast<float>(v));
        std::memcpy(p, &x, 2);
        break;
      }
      case DType::kBFloat16: {
        uint16_t x = FloatToBFloat16(static_cast<float>(v));
        std::memcpy(p, &x, 2);
        break;
      }
      case DType::kInt8: {
        int8_t x = static_cast<int8_t>(v);
        std::memcpy(p, &x, 1);
        break;
      }
      case DType::kUint8: {
        uint8_t x = static_cast<uint8_t>(v);
        std::memcpy(p, &x, 1);
        break;
      }
      case DType::kInt32: {
        int32_t x = static_cast<int32_t>(v);
        std::memcpy(p, &x, 4);
        break;
      }
      case DType::kInt64: {
        int64_t x = static_cast<int64_t>(v);
        std::memcpy(p, &x, 8);
        break;
      }
    }
  }
  return out;
}

inline std::vector<uint8_t> Reference(DType d, ReduceOp op, int n, int64_t count, int salt = 0) {
  std::vector<uint8_t> acc = Input(d, op, 0, count, salt);
  for (int r = 1; r < n; ++r) {
    auto in = Input(d, op, r, count, salt);
    ReduceInto(d, op, acc.data(), acc.data(), in.data(), static_cast<size_t>(count));
  }
  if (op == ReduceOp::kAvg) DivideByCount(d, acc.data(), static_cast<size_t>(count), n);
  return acc;
}

}  // namespace weft::collectives::testing
