#include "runtime/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>

#include "base/env.h"
#include "base/reduce_kernels.h"
#include "collectives/communicator.h"

namespace weft::runtime {
namespace {

using collectives::Communicator;
using collectives::Work;

struct BenchOptions {
  std::string collective;
  int64_t min_bytes = 8;
  int64_t max_bytes = 64 << 20;
  double factor = 2;
  DType dtype = DType::kFloat32;
  ReduceOp op = ReduceOp::kSum;
  int root = 0;
  int iters = 20;
  int warmup = 5;
  bool check = true;
  bool json = false;
  bool latency = false;  // OSU style: time each iteration alone, report p50 and p99
  bool in_place = false;  // with latency: time the in-place call, not the out-of-place one
  bool explain = false;
};

const char* kUsage =
    "usage: weft bench COLLECTIVE [options]   (run it on every rank: weft run -n N -- weft bench ...)\n"
    "  COLLECTIVE: allreduce reduce broadcast allgather reducescatter alltoall gather scatter\n"
    "              sendrecv barrier\n"
    "  -b, --minbytes SIZE   smallest message (default 8; K/M/G suffixes)\n"
    "  -e, --maxbytes SIZE   largest message (default 64M)\n"
    "  -f, --stepfactor F    multiply the size by F each step (default 2)\n"
    "  -d, --datatype T      float double half bfloat16 int8 uint8 int32 int64 (default float)\n"
    "  -o, --op OP           sum prod min max avg (default sum)\n"
    "  -r, --root R          root of rooted collectives (default 0)\n"
    "  -n, --iters N         timed iterations per size (default 20)\n"
    "  -w, --warmup_iters N  untimed iterations per size (default 5)\n"
    "  -c, --check 0|1       verify results, counting wrong elements (default 1)\n"
    "  --latency             OSU-style: time every iteration on its own, report p50 and p99\n"
    "                        (time column = p50) instead of the mean of a pipelined window;\n"
    "                        10x iterations up to 64K, 2x up to 4M, half above\n"
    "  --in-place            with --latency, time the in-place call instead of the out-of-place\n"
    "                        one (as MPI_Bcast, with its single buffer, or MPI_IN_PLACE)\n"
    "  --explain             print the transport and algorithm chosen for each size and why\n"
    "  --json                one JSON object per size instead of the table\n";

// nccl-tests' definitions: the "size" column and the bus-bandwidth factor per collective.
struct Shape {
  bool reduces = false;
  bool rooted = false;
  // Elements each rank contributes, for a `bytes` row.
  std::function<int64_t(int64_t bytes, size_t es, int n)> count;
  std::function<double(int n)> busbw_factor;
};

std::map<std::string, Shape> Shapes() {
  auto per = [](int64_t b, size_t es, int) { return b / static_cast<int64_t>(es); };
  auto split = [](int64_t b, size_t es, int n) { return b / static_cast<int64_t>(es) / n; };
  auto one = [](int) { return 1.0; };
  auto nm1 = [](int n) { return n > 1 ? (n - 1.0) / n : 0.0; };
  return {
      {"allreduce", {true, false, per, [](int n) { return n > 1 ? 2.0 * (n - 1) / n : 0.0; }}},
      {"reduce", {true, true, per, one}},
      {"broadcast", {false, true, per, one}},
      {"allgather", {false, false, split, nm1}},
      {"reducescatter", {true, false, split, nm1}},
      {"alltoall", {false, false, split, nm1}},
      {"gather", {false, true, split, nm1}},
      {"scatter", {false, true, split, nm1}},
      {"sendrecv", {false, false, per, one}},
      {"barrier", {false, false, [](int64_t, size_t, int) { return int64_t{0}; }, one}},
  };
}

void Fill(uint8_t* p, DType d, ReduceOp op, int rank, int64_t count, int salt) {
  size_t es = DTypeSize(d);
  for (int64_t i = 0; i < count; ++i) {
    double v = op == ReduceOp::kProd ? 1 + ((rank + i + salt) % 2) : 1 + ((rank + i + salt) % 5);
    uint8_t* e = p + i * es;
    switch (d) {
      case DType::kFloat32: { float x = static_cast<float>(v); std::memcpy(e, &x, 4); break; }
      case DType::kFloat64: std::memcpy(e, &v, 8); break;
      case DType::kFloat16: { uint16_t x = FloatToHalf(static_cast<float>(v)); std::memcpy(e, &x, 2); break; }
      case DType::kBFloat16: { uint16_t x = FloatToBFloat16(static_cast<float>(v)); std::memcpy(e, &x, 2); break; }
      case DType::kInt8: { int8_t x = static_cast<int8_t>(v); std::memcpy(e, &x, 1); break; }
      case DType::kUint8: { uint8_t x = static_cast<uint8_t>(v); std::memcpy(e, &x, 1); break; }
      case DType::kInt32: { int32_t x = static_cast<int32_t>(v); std::memcpy(e, &x, 4); break; }
      case DType::kInt64: { int64_t x = static_cast<int64_t>(v); std::memcpy(e, &x, 8); break; }
    }
  }
}

int64_t CountWrong(const uint8_t* got, const uint8_t* want, int64_t count, size_t es) {
  int64_t wrong = 0;
  for (int64_t i = 0; i < count; ++i) wrong += std::memcmp(got + i * es, want + i * es, es) != 0;
  return wrong;
}

class Runner {
 public:
  Runner(Communicator& comm, const BenchOptions& o, const Shape& shape)
      : c_(comm), o_(o), shape_(shape), n_(comm.world_size()), rank_(comm.rank()),
        es_(DTypeSize(o.dtype)) {}

  // Issues one operation on (send, recv) with `count` elements per rank.
  Result<Work> Issue(const uint8_t* send, uint8_t* recv, int64_t count) {
    const std::string& k = o_.collective;
    const int root = o_.root;
    if (k == "allreduce") return c_.AllReduce(send, recv, count, o_.dtype, o_.op);
    if (k == "reduce") return c_.Reduce(send, recv, count, o_.dtype, o_.op, root);
    if (k == "broadcast") return c_.Broadcast(send, recv, count, o_.dtype, root);
    if (k == "allgather") return c_.AllGather(send, recv, count, o_.dtype);
    if (k == "reducescatter") return c_.ReduceScatter(send, recv, count, o_.dtype, o_.op);
    if (k == "alltoall") return c_.AllToAll(send, recv, count, o_.dtype);
    if (k == "gather") return c_.Gather(send, recv, count, o_.dtype, root);
    if (k == "scatter") return c_.Scatter(send, recv, count, o_.dtype, root);
    if (k == "barrier") return c_.Barrier();
    // sendrecv: a ring, each rank sends to rank+1 and receives from rank-1.
    c_.GroupStart();
    if (n_ > 1) {
      auto s = c_.Send(send, count, o_.dtype, (rank_ + 1) % n_, 0);
      if (!s.ok()) return s;
      auto r = c_.Recv(recv, count, o_.dtype, (rank_ + n_ - 1) % n_, 0);
      if (!r.ok()) return r;
    } else if (count > 0) {
      std::memcpy(recv, send, count * es_);
    }
    return c_.GroupEnd();
  }

  // Buffer sizes in elements for one rank.
  int64_t SendElems(int64_t count) const {
    const std::string& k = o_.collective;
    if (k == "reducescatter" || k == "alltoall" || k == "scatter") return count * n_;
    return count;
  }
  int64_t RecvElems(int64_t count) const {
    const std::string& k = o_.collective;
    if (k == "allgather" || k == "alltoall" || k == "gather") return count * n_;
    return count;
  }

  // Where in-place puts the send buffer inside the receive buffer (nccl-tests' layout).
  const uint8_t* InPlaceSend(uint8_t* recv, int64_t count) const {
    const std::string& k = o_.collective;
    if (k == "allgather" || k == "gather") return recv + rank_ * count * es_;
    return recv;
  }

  struct Row {
    double us = 0;
    double p99_us = 0;
    int64_t wrong = 0;
    bool failed = false;
    std::string error;
  };

  Row Measure(int64_t count, bool in_place) {
    Row row;
    const int64_t send_elems = SendElems(count), recv_elems = RecvElems(count);
    // In place, reduce-scatter and scatter read from the bigger buffer and write a block of it.
    const bool big_send = o_.collective == "reducescatter" || o_.collective == "scatter";
    std::vector<uint8_t> sendv(send_elems * es_), recvv(std::max(recv_elems, in_place && big_send ? send_elems : 0) * es_);
    uint8_t* recv = recvv.data();
    const uint8_t* send = sendv.data();
    uint8_t* out = recv;
    if (in_place) {
      if (big_send) {
        send = recv;
        out = recv + rank_ * count * es_;
      } else {
        send = InPlaceSend(recv, count);
      }
    }
    auto fill_inputs = [&]() {
      uint8_t* dst = const_cast<uint8_t*>(send);
      if (o_.collective == "allgather" || o_.collective == "gather") {
        Fill(dst, o_.dtype, o_.op, rank_, count, 0);
      } else {
        Fill(dst, o_.dtype, o_.op, rank_, send_elems, 0);
      }
    };
    fill_inputs();
    auto run_once = [&]() -> Status {
      auto w = Issue(send, out, count);
      if (!w.ok()) return w.status();
      return w->Wait();
    };
    for (int i = 0; i < o_.warmup; ++i) {
      Status s = run_once();
      if (!s.ok()) return Fail(s);
    }
    auto t0 = std::chrono::steady_clock::now();
    if (o_.latency) {
      // Each iteration alone, as OSU does; the previous iteration synchronises the ranks. Many
      // iterations for small messages, few for large (the baselines in bench/ do the same).
      const int64_t bytes = count * static_cast<int64_t>(es_);
      const int iters = bytes <= (64 << 10) ? o_.iters * 10
                        : bytes <= (4 << 20) ? o_.iters * 2
                                             : std::max(3, o_.iters / 2);
      std::vector<double> t(iters);
      for (int i = 0; i < iters; ++i) {
        auto a = std::chrono::steady_clock::now();
        Status s = run_once();
        t[i] = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count();
        if (!s.ok()) return Fail(s);
      }
      std::sort(t.begin(), t.end());
      double local[2] = {t[t.size() / 2], t[std::min(t.size() - 1, t.size() * 99 / 100)]};
      double worst[2] = {0, 0};
      auto w = c_.AllReduce(local, worst, 2, DType::kFloat64, ReduceOp::kMax);
      if (!w.ok() || !w->Wait().ok()) return Fail(w.ok() ? w->status() : w.status());
      row.us = worst[0];
      row.p99_us = worst[1];
      return Check(row, run_once, fill_inputs, out, count);
    }
    // Issue ahead of completion, as a training step would, but keep a bounded window in flight.
    constexpr size_t kWindow = 32;
    std::deque<Work> works;
    for (int i = 0; i < o_.iters; ++i) {
      auto w = Issue(send, out, count);
      if (!w.ok()) return Fail(w.status());
      works.push_back(*w);
      if (works.size() >= kWindow) {
        Status s = works.front().Wait();
        if (!s.ok()) return Fail(s);
        works.pop_front();
      }
    }
    for (auto& w : works) {
      Status s = w.Wait();
      if (!s.ok()) return Fail(s);
    }
    double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
                std::max(1, o_.iters);
    // The slowest rank's time is the collective's time.
    double max_us = 0;
    auto w = c_.AllReduce(&us, &max_us, 1, DType::kFloat64, ReduceOp::kMax);
    if (!w.ok() || !w->Wait().ok()) return Fail(w.ok() ? w->status() : w.status());
    row.us = max_us;
    return Check(row, run_once, fill_inputs, out, count);
  }

  // Runs once more on fresh inputs and counts wrong elements over all ranks.
  template <typename Run, typename FillFn>
  Row Check(Row row, Run& run_once, FillFn& fill_inputs, const uint8_t* out, int64_t count) {
    if (!o_.check || o_.collective == "barrier") return row;
    fill_inputs();
    Status s = run_once();
    if (!s.ok()) return Fail(s);
    row.wrong = Verify(out, count);
    int64_t total = 0;
    auto w2 = c_.AllReduce(&row.wrong, &total, 1, DType::kInt64, ReduceOp::kSum);
    if (!w2.ok() || !w2->Wait().ok()) return Fail(w2.ok() ? w2->status() : w2.status());
    row.wrong = total;
    return row;
  }

 private:
  Row Fail(const Status& s) {
    Row r;
    r.failed = true;
    r.error = s.ToString();
    return r;
  }

  // Counts wrong elements in this rank's output against what the inputs imply.
  int64_t Verify(const uint8_t* out, int64_t count) {
    const std::string& k = o_.collective;
    std::vector<uint8_t> want, tmp;
    auto input_of = [&](int r, int64_t elems) {
      std::vector<uint8_t> v(elems * es_);
      Fill(v.data(), o_.dtype, o_.op, r, elems, 0);
      return v;
    };
    if (k == "allreduce" || (k == "reduce" && rank_ == o_.root) || k == "reducescatter") {
      int64_t elems = k == "reducescatter" ? count * n_ : count;
      want = input_of(0, elems);
      for (int r = 1; r < n_; ++r) {
        tmp = input_of(r, elems);
        ReduceInto(o_.dtype, o_.op, want.data(), want.data(), tmp.data(), elems);
      }
      if (o_.op == ReduceOp::kAvg) DivideByCount(o_.dtype, want.data(), elems, n_);
      const uint8_t* w = k == "reducescatter" ? want.data() + rank_ * count * es_ : want.data();
      return CountWrong(out, w, count, es_);
    }
    if (k == "broadcast") {
      want = input_of(o_.root, count);
      return CountWrong(out, want.data(), count, es_);
    }
    if (k == "allgather" || (k == "gather" && rank_ == o_.root)) {
      int64_t wrong = 0;
      for (int r = 0; r < n_; ++r) {
        want = input_of(r, count);
        wrong += CountWrong(out + r * count * es_, want.data(), count, es_);
      }
      return wrong;
    }
    if (k == "scatter") {
      want = input_of(o_.root, count * n_);
      return CountWrong(out, want.data() + rank_ * count * es_, count, es_);
    }
    if (k == "alltoall") {
      int64_t wrong = 0;
      for (int r = 0; r < n_; ++r) {
        want = input_of(r, count * n_);
        wrong += CountWrong(out + r * count * es_, want.data() + rank_ * count * es_, count, es_);
      }
      return wrong;
    }
    if (k == "sendrecv") {
      want = input_of((rank_ + n_ - 1) % n_, count);
      return CountWrong(out, want.data(), count, es_);
    }
    return 0;
  }

  Communicator& c_;
  const BenchOptions& o_;
  const Shape& shape_;
  int n_, rank_;
  size_t es_;
};

// The one algorithm each non-all-reduce collective runs today.
const char* FixedAlgorithm(const std::string& collective) {
  if (collective == "reduce") return "binomial tree";
  if (collective == "broadcast") return "binomial tree, pipelined chunks";
  if (collective == "allgather" || collective == "reducescatter") return "ring, pipelined chunks";
  if (collective == "alltoall") return "pairwise exchange";
  if (collective == "gather" || collective == "scatter") return "linear";
  if (collective == "barrier") return "dissemination";
  return "direct";
}

const char* ExplainAllGather(const std::string& algo) {
  if (algo == "hierarchical") {
    return "hierarchical: ranks span hosts evenly: each local rank's blocks cross hosts once "
           "(one ring per local rank, in parallel), then the hosts' ranks exchange them through "
           "shared memory";
  }
  if (algo == "shm") return "shm: all ranks share a host: through the shared-memory arena";
  if (algo == "recursive_doubling") {
    return "recursive_doubling: a power-of-two number of ranks and at most "
           "WEFT_ALLGATHER_RD_MAX_BYTES gathered: log2(n) exchanges instead of the ring's n-1";
  }
  return "ring, pipelined chunks";
}

bool ParseArgs(const std::vector<std::string>& args, BenchOptions* o, std::string* err) {
  if (args.empty()) {
    *err = "missing COLLECTIVE";
    return false;
  }
  o->collective = args[0];
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](std::string* v) {
      if (i + 1 >= args.size()) {
        *err = a + " needs a value";
        return false;
      }
      *v = args[++i];
      return true;
    };
    std::string v;
    int64_t x;
    if (a == "--json") {
      o->json = true;
    } else if (a == "--latency") {
      o->latency = true;
    } else if (a == "--in-place") {
      o->in_place = true;
    } else if (a == "--explain") {
      o->explain = true;
    } else if (a == "-b" || a == "--minbytes" || a == "-e" || a == "--maxbytes") {
      if (!value(&v)) return false;
      if (!ParseBytes(v, &x)) {
        *err = a + " " + v + " is not a size";
        return false;
      }
      (a == "-b" || a == "--minbytes" ? o->min_bytes : o->max_bytes) = x;
    } else if (a == "-f" || a == "--stepfactor") {
      if (!value(&v)) return false;
      char* end = nullptr;
      o->factor = std::strtod(v.c_str(), &end);
      if (*end != '\0' || o->factor <= 1.0) {
        *err = "step factor " + v + " must be a number above 1";
        return false;
      }
    } else if (a == "-d" || a == "--datatype") {
      if (!value(&v)) return false;
      auto d = ParseDType(v);
      if (!d) {
        *err = "unknown data type '" + v + "'";
        return false;
      }
      o->dtype = *d;
    } else if (a == "-o" || a == "--op") {
      if (!value(&v)) return false;
      auto op = ParseReduceOp(v);
      if (!op) {
        *err = "unknown reduce op '" + v + "'";
        return false;
      }
      o->op = *op;
    } else if (a == "-r" || a == "--root" || a == "-n" || a == "--iters" || a == "-w" ||
               a == "--warmup_iters" || a == "-c" || a == "--check") {
      if (!value(&v)) return false;
      if (!ParseInt(v, &x) || x < 0 || x > 100000000) {
        *err = a + " " + v + " is not a non-negative integer";
        return false;
      }
      if (a == "-r" || a == "--root") o->root = static_cast<int>(x);
      if (a == "-n" || a == "--iters") o->iters = static_cast<int>(std::max<int64_t>(1, x));
      if (a == "-w" || a == "--warmup_iters") o->warmup = static_cast<int>(x);
      if (a == "-c" || a == "--check") o->check = x != 0;
    } else {
      *err = "unknown option '" + a + "'";
      return false;
    }
  }
  if (o->min_bytes > o->max_bytes) {
    *err = "minbytes is larger than maxbytes";
    return false;
  }
  if (o->in_place && !o->latency) {
    *err = "--in-place goes with --latency (the table already has an in-place column)";
    return false;
  }
  return true;
}

}  // namespace

int BenchCommand(const std::vector<std::string>& args) {
  BenchOptions o;
  std::string err;
  if (!ParseArgs(args, &o, &err)) {
    std::fprintf(stderr, "weft bench: %s\n%s", err.c_str(), kUsage);
    return 2;
  }
  auto shapes = Shapes();
  auto it = shapes.find(o.collective);
  if (it == shapes.end()) {
    std::fprintf(stderr, "weft bench: unknown collective '%s'\n%s", o.collective.c_str(), kUsage);
    return 2;
  }
  const Shape& shape = it->second;
  auto comm = Communicator::FromEnvironment();
  if (!comm.ok()) {
    std::fprintf(stderr, "weft bench: %s\n", comm.status().ToString().c_str());
    return 1;
  }
  Communicator& c = **comm;
  const int n = c.world_size();
  if (o.root >= n) {
    std::fprintf(stderr, "weft bench: root %d outside the %d ranks\n", o.root, n);
    return 2;
  }
  const bool lead = c.rank() == 0;
  const size_t es = DTypeSize(o.dtype);
  if (lead && !o.json) {
    std::string transports;
    for (int p = 0; p < n; ++p) {
      std::string t = c.transport_of(p);
      if (t != "self" && transports.find(t) == std::string::npos) transports += (transports.empty() ? "" : ",") + t;
    }
    std::printf("# weft bench %s: %d ranks, transport %s, %s %s, %d iterations (%d warm-up)\n",
                o.collective.c_str(), n, transports.empty() ? "none" : transports.c_str(),
                std::string(DTypeName(o.dtype)).c_str(), std::string(ReduceOpName(o.op)).c_str(),
                o.iters, o.warmup);
    if (o.latency) {
      std::printf("#\n# %10s %12s %8s %6s %6s %9s %9s %7s %7s %6s\n", "size", "count", "type",
                  "redop", "root", "p50", "p99", "algbw", "busbw", "#wrong");
      std::printf("# %10s %12s %8s %6s %6s %9s %9s %7s %7s %6s\n", "(B)", "(elements)", "", "",
                  "", "(us)", "(us)", "(GB/s)", "(GB/s)", "");
    } else {
    std::printf("#\n# %10s %12s %8s %6s %6s %28s %28s\n", "", "", "", "", "", "out-of-place",
                "in-place");
    std::printf("# %10s %12s %8s %6s %6s %9s %7s %7s %6s %9s %7s %7s %6s\n", "size", "count", "type",
                "redop", "root", "time", "algbw", "busbw", "#wrong", "time", "algbw", "busbw",
                "#wrong");
    std::printf("# %10s %12s %8s %6s %6s %9s %7s %7s %6s %9s %7s %7s %6s\n", "(B)", "(elements)", "",
                "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)", "");
    }
  }
  Runner runner(c, o, shape);
  int64_t total_wrong = 0;
  bool failed = false;
  std::vector<int64_t> sizes;
  for (double b = static_cast<double>(o.min_bytes); b <= static_cast<double>(o.max_bytes) * 1.0000001;
       b *= o.factor) {
    sizes.push_back(static_cast<int64_t>(b));
    if (o.collective == "barrier") break;
  }
  for (int64_t bytes : sizes) {
    int64_t count = shape.count(bytes, es, n);
    int64_t row_bytes = o.collective == "barrier" ? 0
                        : (o.collective == "allgather" || o.collective == "reducescatter" ||
                           o.collective == "alltoall" || o.collective == "gather" ||
                           o.collective == "scatter")
                            ? count * n * static_cast<int64_t>(es)
                            : count * static_cast<int64_t>(es);
    auto oop = runner.Measure(count, o.in_place);  // ParseArgs: --in-place only with --latency
    if (o.explain && lead) {
      std::string peers;
      for (int p = 0; p < n; ++p) {
        if (p == c.rank()) continue;
        peers += (peers.empty() ? "" : ", ") + std::to_string(p) + ":" + c.transport_of(p);
      }
      std::printf("# explain %lld B: %s; rank 0's peers (rank:transport) %s\n",
                  static_cast<long long>(row_bytes),
                  o.collective == "allreduce"   ? c.ExplainAllReduce(count, o.dtype).c_str()
                  : o.collective == "allgather"
                      ? ExplainAllGather(c.AllGatherAlgorithmFor(count, o.dtype))
                                                : FixedAlgorithm(o.collective),
                  peers.empty() ? "none" : peers.c_str());
    }
    auto ip = o.collective == "barrier" || o.collective == "sendrecv" || oop.failed || o.latency
                  ? oop
                  : runner.Measure(count, true);
    if (oop.failed || ip.failed) {
      std::fprintf(stderr, "weft bench: rank %d: %s\n", c.rank(),
                   (oop.failed ? oop : ip).error.c_str());
      failed = true;
    }
    if (failed) break;
    total_wrong += oop.wrong + (o.latency ? 0 : ip.wrong);
    auto algbw = [&](double us) { return us > 0 ? static_cast<double>(row_bytes) / us / 1e3 : 0.0; };
    double f = shape.busbw_factor(n);
    int root = shape.rooted ? o.root : -1;
    if (!lead) continue;
    std::string algo = o.collective == "allreduce"   ? c.AllReduceAlgorithmFor(count, o.dtype)
                       : o.collective == "allgather" ? c.AllGatherAlgorithmFor(count, o.dtype)
                                                     : std::string(FixedAlgorithm(o.collective));
    if (o.json) {
      std::printf("{\"lib\":\"weft\",\"algo\":\"%s\",\"mode\":\"%s\",\"in_place\":%s,"
                  "\"p50_us\":%.3f,\"p99_us\":%.3f,\"busbw\":%.4f,",
                  algo.c_str(), o.latency ? "latency" : "throughput",
                  o.in_place ? "true" : "false", oop.us, oop.p99_us,
                  algbw(oop.us) * f);
      std::printf("\"collective\":\"%s\",\"ranks\":%d,\"size\":%lld,\"count\":%lld,\"type\":\"%s\","
                  "\"redop\":\"%s\",\"root\":%d,\"oop_us\":%.3f,\"oop_algbw\":%.4f,\"oop_busbw\":%.4f,"
                  "\"oop_wrong\":%lld,\"ip_us\":%.3f,\"ip_algbw\":%.4f,\"ip_busbw\":%.4f,\"ip_wrong\":%lld}\n",
                  o.collective.c_str(), n, static_cast<long long>(row_bytes), static_cast<long long>(count),
                  std::string(DTypeName(o.dtype)).c_str(),
                  shape.reduces ? std::string(ReduceOpName(o.op)).c_str() : "none", root, oop.us,
                  algbw(oop.us), algbw(oop.us) * f, static_cast<long long>(oop.wrong), ip.us,
                  algbw(ip.us), algbw(ip.us) * f, static_cast<long long>(ip.wrong));
    } else if (o.latency) {
      std::printf("  %10lld %12lld %8s %6s %6d %9.2f %9.2f %7.3f %7.3f %6lld\n",
                  static_cast<long long>(row_bytes), static_cast<long long>(count),
                  std::string(DTypeName(o.dtype)).c_str(),
                  shape.reduces ? std::string(ReduceOpName(o.op)).c_str() : "none", root, oop.us,
                  oop.p99_us, algbw(oop.us), algbw(oop.us) * f, static_cast<long long>(oop.wrong));
    } else {
      std::printf("  %10lld %12lld %8s %6s %6d %9.2f %7.3f %7.3f %6lld %9.2f %7.3f %7.3f %6lld\n",
                  static_cast<long long>(row_bytes), static_cast<long long>(count),
                  std::string(DTypeName(o.dtype)).c_str(),
                  shape.reduces ? std::string(ReduceOpName(o.op)).c_str() : "none", root, oop.us,
                  algbw(oop.us), algbw(oop.us) * f, static_cast<long long>(oop.wrong), ip.us,
                  algbw(ip.us), algbw(ip.us) * f, static_cast<long long>(ip.wrong));
    }
    std::fflush(stdout);
  }
  if (lead && !o.json && !failed) {
    std::printf("# Out of bounds values : %lld %s\n", static_cast<long long>(total_wrong),
                total_wrong == 0 ? "OK" : "FAILED");
  }
  if (failed) return 1;
  return total_wrong == 0 ? 0 : 3;
}

}  // namespace weft::runtime
