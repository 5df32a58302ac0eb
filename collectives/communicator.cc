#include "collectives/communicator.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include "base/env.h"
#include "base/hmac.h"
#include "base/logging.h"
#include "collectives/algorithms.h"
#include "collectives/internal/comm_impl.h"
#include "collectives/internal/power_of_two.h"
#include "collectives/link_probe.h"
#include "collectives/metrics.h"
#include "collectives/tuner.h"
#include "rendezvous/bootstrap.h"
#include "rendezvous/tcp_store.h"

namespace weft::collectives {

using internal::CommImpl;
using internal::CommShared;
using internal::WorkState;

// ---------------------------------------------------------------------------------------------
// Work

bool Work::Test() const {
  if (!state_) return true;
  if (!state_->done()) {
    if (auto c = state_->comm.lock()) c->TryRunInline(state_.get());
  }
  return state_->done();
}

Status Work::Wait(Deadline deadline) const {
  if (!state_) return Status::Ok();
  return state_->Wait(deadline);
}

Status Work::Wait() const { return Wait(Deadline::Infinite()); }

Status Work::status() const { return state_ ? state_->status() : Status::Ok(); }

// ---------------------------------------------------------------------------------------------
// Creation

namespace {

uint32_t RootCommId(const std::string& job_id) {
  Digest256 d = Sha256Of("weft-comm/" + job_id);
  uint32_t v = (uint32_t{d[0]} << 16) | (uint32_t{d[1]} << 8) | d[2];
  return v % internal::kMaxCommId;
}

// Processes that called GetUniqueId serve the store for the ids they handed out until exit.
std::mutex g_id_servers_mu;
std::vector<std::unique_ptr<rendezvous::TcpStoreServer>>& IdServers() {
  static auto* servers = new std::vector<std::unique_ptr<rendezvous::TcpStoreServer>>();
  return *servers;
}

}  // namespace

Communicator::Communicator(std::shared_ptr<internal::CommImpl> impl) : impl_(std::move(impl)) {}

Communicator::~Communicator() {
  if (impl_) impl_->Shutdown();
}

Result<std::unique_ptr<Communicator>> Communicator::Create(rendezvous::Store& store, int rank,
                                                           int world_size, CommOptions options) {
  if (world_size < 1) {
    return InvalidArgumentError("world size " + std::to_string(world_size) + " must be at least 1");
  }
  if (rank < 0 || rank >= world_size) {
    return InvalidArgumentError("rank " + std::to_string(rank) + " is outside world size " +
                                std::to_string(world_size));
  }
  SetLogRank(rank);
  WEFT_ASSIGN_OR_RETURN(auto shared, CommShared::Create(store, rank, world_size, options));
  {
    // The first root communicator of the process names its rank in the metrics and, with
    // WEFT_METRICS_PORT set, starts serving them at that port + its local rank.
    int local_rank = 0;
    for (int r = 0; r < rank; ++r) local_rank += shared->host_of(r) == shared->host_of(rank);
    metrics::StartFromEnvironment(rank, world_size, local_rank);
  }
  std::vector<int> group(world_size);
  for (int i = 0; i < world_size; ++i) group[i] = i;
  auto impl = std::make_shared<CommImpl>(shared, std::move(group), rank, RootCommId(shared->job_id()));
  impl->SetArena(shared->TakeRootArena());
  {
    auto h = internal::BuildHierarchy(*impl, Deadline::AfterMs(shared->options().init_timeout_ms));
    if (!h.ok()) return h.status().WithContext("rank " + std::to_string(rank) + ": hierarchy");
    impl->SetHierarchy(std::move(*h));
  }
  impl->StartWorker();
  std::unique_ptr<Communicator> comm(new Communicator(std::move(impl)));
  if (ProbeLinksRequested() && world_size > 1) {
    auto transports = TransportMatrix(*comm);
    if (!transports.ok()) return transports.status().WithContext("probing links");
    auto models = ProbeLinks(*comm, *transports);
    if (!models.ok()) return models.status().WithContext("probing links");
    comm->SetLinkModels(std::move(*models));
  }
  return comm;
}

Result<std::unique_ptr<Communicator>> Communicator::FromEnvironment(CommOptions options) {
  WEFT_ASSIGN_OR_RETURN(rendezvous::BootstrapInfo info, rendezvous::BootstrapFromEnv());
  SetLogRank(info.rank);
  int64_t init_ms = options.init_timeout_ms;
  if (init_ms <= 0) {
    // Same knob CommShared reads; resolved here too because the store comes first.
    const char* v = std::getenv("WEFT_INIT_TIMEOUT_MS");
    int64_t x;
    init_ms = (v && ParseInt(v, &x) && x > 0) ? x : 120000;
  }
  auto bs = rendezvous::OpenBootstrapStore(info, Deadline::AfterMs(init_ms));
  if (!bs.ok()) return bs.status().WithContext("rank " + std::to_string(info.rank) + " (" + info.source + ")");
  if (options.secret.empty()) options.secret = info.secret;
  if (options.job_id.empty()) options.job_id = info.job_id;
  auto comm = Create(*(*bs)->store, info.rank, info.world_size, options);
  if (!comm.ok()) return comm.status();
  (*comm)->impl_->shared().KeepAlive(std::shared_ptr<void>(std::move(*bs)));
  return comm;
}

Result<UniqueId> Communicator::GetUniqueId() {
  WEFT_ASSIGN_OR_RETURN(std::string secret, NewSecretHex());
  WEFT_ASSIGN_OR_RETURN(auto server, rendezvous::TcpStoreServer::Start("127.0.0.1", 0, secret));
  UniqueId id;
  std::string text = "tcp://127.0.0.1:" + std::to_string(server->port()) + "|" + secret;
  std::memcpy(id.bytes, text.data(), std::min(text.size(), sizeof(id.bytes) - 1));
  std::lock_guard<std::mutex> lock(g_id_servers_mu);
  IdServers().push_back(std::move(server));
  return id;
}

Result<std::unique_ptr<Communicator>> Communicator::FromUniqueId(const UniqueId& id, int rank,
                                                                 int world_size,
                                                                 CommOptions options) {
  std::string text(id.bytes, strnlen(id.bytes, sizeof(id.bytes)));
  size_t bar = text.find('|');
  if (bar == std::string::npos || text.rfind("tcp://", 0) != 0) {
    return InvalidArgumentError("malformed unique id");
  }
  std::string url = text.substr(0, bar), secret = text.substr(bar + 1);
  int64_t init_ms = options.init_timeout_ms > 0 ? options.init_timeout_ms : 120000;
  WEFT_ASSIGN_OR_RETURN(auto store, rendezvous::OpenStore(url, secret, Deadline::AfterMs(init_ms)));
  if (options.secret.empty()) options.secret = secret;
  auto comm = Create(*store, rank, world_size, options);
  if (!comm.ok()) return comm.status();
  (*comm)->impl_->shared().KeepAlive(std::shared_ptr<void>(std::move(store)));
  return comm;
}

// ---------------------------------------------------------------------------------------------
// Queries

int Communicator::rank() const { return impl_->rank(); }
int Communicator::world_size() const { return impl_->size(); }

int Communicator::local_rank() const {
  const auto& me = impl_->shared().host_of(impl_->world_rank_of(impl_->rank()));
  int lr = 0;
  for (int r = 0; r < impl_->rank(); ++r) {
    if (impl_->shared().host_of(impl_->world_rank_of(r)) == me) ++lr;
  }
  return lr;
}

int Communicator::local_size() const {
  const auto& me = impl_->shared().host_of(impl_->world_rank_of(impl_->rank()));
  int n = 0;
  for (int r = 0; r < impl_->size(); ++r) {
    if (impl_->shared().host_of(impl_->world_rank_of(r)) == me) ++n;
  }
  return n;
}

int Communicator::world_rank_of(int rank) const {
  if (rank < 0 || rank >= impl_->size()) return -1;
  return impl_->world_rank_of(rank);
}

std::string Communicator::transport_of(int peer) const {
  if (peer < 0 || peer >= impl_->size()) return "";
  return impl_->shared().transport_name(impl_->world_rank_of(peer));
}

std::string Communicator::host_of(int rank) const {
  if (rank < 0 || rank >= impl_->size()) return "";
  return impl_->shared().host_of(impl_->world_rank_of(rank));
}

TunerInput Communicator::TunerFor(int64_t count, DType dtype) const {
  TunerInput in = impl_->tuner_base();
  in.bytes = static_cast<size_t>(std::max<int64_t>(count, 0)) * DTypeSize(dtype);
  return in;
}

std::string Communicator::AllReduceAlgorithmFor(int64_t count, DType dtype) const {
  return AllReduceAlgoName(ChooseAllReduce(TunerFor(count, dtype)));
}

bool Communicator::UseHierarchicalAllGather() const {
  // WEFT_ALGO=ring (or any flat all-reduce choice) keeps the all-gather flat too.
  const std::string& forced = impl_->shared().options().algorithm;
  return impl_->hierarchy() != nullptr && (forced.empty() || forced == "hierarchical");
}

metrics::Algo Communicator::ChooseAllGather(int64_t sendcount, DType dtype) const {
  if (UseHierarchicalAllGather()) return metrics::Algo::kHierarchical;
  if (impl_->arena() != nullptr) return metrics::Algo::kShm;
  const int n = world_size();
  const bool rd = n > 2 && internal::IsPowerOfTwo(n) &&
                  static_cast<size_t>(sendcount) * DTypeSize(dtype) * static_cast<size_t>(n) <=
                      impl_->shared().options().allgather_rd_max_bytes;
  return rd ? metrics::Algo::kRecursiveDoubling : metrics::Algo::kRing;
}

std::string Communicator::AllGatherAlgorithmFor(int64_t sendcount, DType dtype) const {
  return metrics::kAlgoNames[static_cast<int>(ChooseAllGather(sendcount, dtype))];
}

void Communicator::SetLinkModels(LinkModels models) { impl_->SetLinkModels(std::move(models)); }
const LinkModels& Communicator::link_models() const { return impl_->link_models(); }

std::string Communicator::ExplainAllReduce(int64_t count, DType dtype) const {
  return ExplainAllReduceChoice(TunerFor(count, dtype));
}

Status Communicator::GetAsyncError() const { return impl_->error(); }

void Communicator::Abort() { impl_->Abort(); }

void Communicator::GroupStart() { impl_->GroupStart(); }
Result<Work> Communicator::GroupEnd() { return impl_->GroupEnd(); }

// ---------------------------------------------------------------------------------------------
// Argument checks: every message names the operation, the argument and this rank.

namespace {

// Argument checks at every operation's entry. The checks themselves are inline compares; the
// messages are built out of line, on the cold path, so the latency path carries none of it.
class Checker {
 public:
  Checker(const char* op, int rank) : op_(op), rank_(rank) {}
  Status Count(int64_t count, const char* what = "count") const {
    if (count < 0) [[unlikely]] return BadCount(count, what);
    return Status::Ok();
  }
  Status Type(DType d) const {
    if (!IsValidDType(d)) [[unlikely]] return BadType(d);
    return Status::Ok();
  }
  Status Op(ReduceOp o) const {
    if (!IsValidReduceOp(o)) [[unlikely]] return BadOp(o);
    return Status::Ok();
  }
  Status Buffer(const void* p, int64_t count, const char* what) const {
    if (p == nullptr && count > 0) [[unlikely]] return NullBuffer(what, count);
    return Status::Ok();
  }
  Status Rank(int r, int size, const char* what) const {
    if (r < 0 || r >= size) [[unlikely]] return BadRank(r, size, what);
    return Status::Ok();
  }
  // sendbuf and recvbuf either coincide exactly where the call allows it or do not overlap.
  Status Overlap(const void* a, size_t a_bytes, const void* b, size_t b_bytes,
                 const void* allowed_a) const {
    if (a == nullptr || b == nullptr || a_bytes == 0 || b_bytes == 0) return Status::Ok();
    auto x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
    bool overlap = x < y + b_bytes && y < x + a_bytes;
    if (overlap && a != allowed_a) [[unlikely]] {
      return Bad("sendbuf and recvbuf overlap without being the in-place layout");
    }
    return Status::Ok();
  }
  [[gnu::cold, gnu::noinline]] Status Bad(const std::string& what) const {
    return InvalidArgumentError(what + " for " + op_ + " on rank " + std::to_string(rank_));
  }

 private:
  [[gnu::cold, gnu::noinline]] Status BadCount(int64_t count, const char* what) const {
    return Bad(std::string(what) + " " + std::to_string(count));
  }
  [[gnu::cold, gnu::noinline]] Status BadType(DType d) const {
    return Bad("unknown data type " + std::to_string(static_cast<int>(d)));
  }
  [[gnu::cold, gnu::noinline]] Status BadOp(ReduceOp o) const {
    return Bad("unknown reduce op " + std::to_string(static_cast<int>(o)));
  }
  [[gnu::cold, gnu::noinline]] Status NullBuffer(const char* what, int64_t count) const {
    return Bad(std::string("null ") + what + " with count " + std::to_string(count));
  }
  [[gnu::cold, gnu::noinline]] Status BadRank(int r, int size, const char* what) const {
    return Bad(std::string(what) + " " + std::to_string(r) + " outside the group of " +
               std::to_string(size));
  }

  const char* op_;
  int rank_;
};

size_t Bytes(int64_t count, DType d) { return static_cast<size_t>(count) * DTypeSize(d); }

metrics::Algo MetricsAlgo(AllReduceAlgo a) {
  switch (a) {
    case AllReduceAlgo::kRing:
      return metrics::Algo::kRing;
    case AllReduceAlgo::kRecursiveDoubling:
      return metrics::Algo::kRecursiveDoubling;
    case AllReduceAlgo::kRabenseifner:
      return metrics::Algo::kRabenseifner;
    case AllReduceAlgo::kShmDirect:
      return metrics::Algo::kShmDirect;
    case AllReduceAlgo::kShmChunked:
      return metrics::Algo::kShmChunked;
    case AllReduceAlgo::kHierarchical:
      return metrics::Algo::kHierarchical;
  }
  return metrics::Algo::kUnspecified;
}

}  // namespace

Result<std::unique_ptr<Communicator>> Communicator::Split(int color, int key) {
  int32_t mine[2] = {color, key};
  std::vector<int32_t> all(2 * world_size());
  WEFT_ASSIGN_OR_RETURN(Work w, AllGather(mine, all.data(), 2, DType::kInt32));
  WEFT_RETURN_IF_ERROR(w.Wait().WithContext("split"));
  // Every rank counts the split, opted out or not, so later splits derive the same ids.
  const uint32_t split_index = impl_->NextSplitIndex();
  if (color < 0) return std::unique_ptr<Communicator>();
  std::vector<std::pair<int32_t, int>> members;  // (key, rank)
  for (int r = 0; r < world_size(); ++r) {
    if (all[2 * r] == color) members.emplace_back(all[2 * r + 1], r);
  }
  std::sort(members.begin(), members.end());
  std::vector<int> group;
  int new_rank = -1;
  for (const auto& [k, r] : members) {
    if (r == rank()) new_rank = static_cast<int>(group.size());
    group.push_back(impl_->world_rank_of(r));
  }
  // Every member derives the same id from the parent's id, how many splits the parent has done
  // (all ranks split in the same order) and the color.
  std::string seed = std::to_string(impl_->comm_id()) + "/" +
                     std::to_string(split_index) + "/" + std::to_string(color);
  Digest256 d = Sha256Of(seed);
  uint32_t id = ((uint32_t{d[0]} << 16) | (uint32_t{d[1]} << 8) | d[2]) % internal::kMaxCommId;
  const bool local = impl_->shared().WantsArena(group);
  std::vector<int> members_world = group;
  auto child = std::make_shared<CommImpl>(impl_->shared_ptr(), std::move(group), new_rank, id);
  child->StartWorker();
  std::unique_ptr<Communicator> out(new Communicator(std::move(child)));
  if (local) {
    // Every member decides the same way (same group, same transports), so all attach or none.
    auto arena = impl_->shared().AttachArena(
        "/weft-" + impl_->shared().job_id() + "-arena-" + std::to_string(impl_->comm_id()) + "-" +
            std::to_string(id),
        new_rank, members_world, Deadline::AfterMs(impl_->shared().options().init_timeout_ms));
    if (!arena.ok()) return arena.status().WithContext("split: shared-memory arena");
    // The barrier runs over the transports, before the arena serves anything.
    WEFT_ASSIGN_OR_RETURN(Work b, out->Barrier());
    WEFT_RETURN_IF_ERROR(b.Wait().WithContext("split"));
    (*arena)->Unlink();
    out->impl_->SetArena(std::move(*arena));
  } else if (out->world_size() > 1) {
    auto h = internal::BuildHierarchy(*out->impl_,
                                      Deadline::AfterMs(impl_->shared().options().init_timeout_ms));
    if (!h.ok()) return h.status().WithContext("split: hierarchy");
    out->impl_->SetHierarchy(std::move(*h));
  }
  return out;
}

Result<Work> Communicator::AllReduce(const void* sendbuf, void* recvbuf, int64_t count,
                                     DType dtype, ReduceOp op) {
  Checker c("allreduce", rank());
  WEFT_RETURN_IF_ERROR(c.Count(count));
  WEFT_RETURN_IF_ERROR(c.Type(dtype));
  WEFT_RETURN_IF_ERROR(c.Op(op));
  WEFT_RETURN_IF_ERROR(c.Buffer(sendbuf, count, "sendbuf"));
  WEFT_RETURN_IF_ERROR(c.Buffer(recvbuf, count, "recvbuf"));
  size_t bytes = Bytes(count, dtype);
  WEFT_RETURN_IF_ERROR(c.Overlap(sendbuf, bytes, recvbuf, bytes, recvbuf));
  AllReduceAlgo algo = ChooseAllReduce(TunerFor(count, dtype));
  return impl_->Issue("allreduce", MetricsAlgo(algo), [=](internal::OpContext& ctx) {
    switch (algo) {
      case AllReduceAlgo::kShmDirect:
        return AllReduceShmDirect(ctx, sendbuf, recvbuf, count, dtype, op);
      case AllReduceAlgo::kShmChunked:
        return AllReduceShmChunked(ctx, sendbuf, recvbuf, count, dtype, op);
      case AllReduceAlgo::kRing:
        return AllReduceRing(ctx, sendbuf, recvbuf, count, dtype, op);
      case AllReduceAlgo::kRabenseifner:
        return AllReduceRabenseifner(ctx, sendbuf, recvbuf, count, dtype, op);
      case AllReduceAlgo::kHierarchical:
        return AllReduceHierarchical(ctx, sendbuf, recvbuf, count, dtype, op);
      case AllReduceAlgo::kRecursiveDoubling:
        break;
    }
    return AllReduceRecursiveDoubling(ctx, sendbuf, recvbuf, count, dtype, op);
  });
}

Result<Work> Communicator::Reduce(const void* sendbuf, void* recvbuf, int64_t count, DType dtype,
                                  ReduceOp op, int root) {
  Checker c("reduce", rank());
  WEFT_RETURN_IF_ERROR(c.Count(count));
  WEFT_RETURN_IF_ERROR(c.Type(dtype));
  WEFT_RETURN_IF_ERROR(c.Op(op));
  WEFT_RETURN_IF_ERROR(c.Rank(root, world_size(), "root"));
  WEFT_RETURN_IF_ERROR(c.Buffer(sendbuf, count, "sendbuf"));
  if (rank() == root) {
    WEFT_RETURN_IF_ERROR(c.Buffer(recvbuf, count, "recvbuf"));
    size_t bytes = Bytes(count, dtype);
    WEFT_RETURN_IF_ERROR(c.Overlap(sendbuf, bytes, recvbuf, bytes, recvbuf));
  }
  return impl_->Issue("reduce", metrics::Algo::kBinomial, [=](internal::OpContext& ctx) {
    return ReduceBinomial(ctx, sendbuf, recvbuf, count, dtype, op, root);
  });
}

Result<Work> Communicator::Broadcast(const void* sendbuf, void* recvbuf, int64_t count,
                                     DType dtype, int root) {
  Checker c("broadcast", rank());
  WEFT_RETURN_IF_ERROR(c.Count(count));
  WEFT_RETURN_IF_ERROR(c.Type(dtype));
  WEFT_RETURN_IF_ERROR(c.Rank(root, world_size(), "root"));
  if (rank() == root) WEFT_RETURN_IF_ERROR(c.Buffer(sendbuf, count, "sendbuf"));
  WEFT_RETURN_IF_ERROR(c.Buffer(recvbuf, count, "recvbuf"));
  if (rank() == root) {
    size_t bytes = Bytes(count, dtype);
    WEFT_RETURN_IF_ERROR(c.Overlap(sendbuf, bytes, recvbuf, bytes, recvbuf));
  }
  if (impl_->hierarchy() != nullptr) {
    RankPlace place = PlaceOf(*impl_, root);
    return impl_->Issue("broadcast", metrics::Algo::kHierarchical, [=](internal::OpContext& ctx) {
      return BroadcastHierarchical(ctx, sendbuf, recvbuf, count, dtype, place);
    });
  }
  const auto bcast_algo = impl_->arena() ? metrics::Algo::kShm : metrics::Algo::kBinomial;
  return impl_->Issue("broadcast", bcast_algo, [=](internal::OpContext& ctx) {
    return ctx.arena() ? BroadcastShm(ctx, sendbuf, recvbuf, count, dtype, root)
                       : BroadcastBinomial(ctx, sendbuf, recvbuf, count, dtype, root);
  });
}

Result<Work> Communicator::AllGather(const void* sendbuf, void* recvbuf, int64_t sendcount,
                                     DType dtype) {
  Checker c("allgather", rank());
  WEFT_RETURN_IF_ERROR(c.Count(sendcount, "sendcount"));
  WEFT_RETURN_IF_ERROR(c.Type(dtype));
  WEFT_RETURN_IF_ERROR(c.Buffer(sendbuf, sendcount, "sendbuf"));
  WEFT_RETURN_IF_ERROR(c.Buffer(recvbuf, sendcount, "recvbuf"));
  size_t block = Bytes(sendcount, dtype);
  WEFT_RETURN_IF_ERROR(c.Overlap(sendbuf, block, recvbuf, block * world_size(),
                                 static_cast<uint8_t*>(recvbuf) + block * rank()));
  const metrics::Algo algo = ChooseAllGather(sendcount, dtype);
  return impl_->Issue("allgather", algo, [=](internal::OpContext& ctx) {
    switch (algo) {
      case metrics::Algo::kHierarchical:
        return AllGatherHierarchical(ctx, sendbuf, recvbuf, sendcount, dtype);
      case metrics::Algo::kShm:
        return AllGatherShm(ctx, sendbuf, recvbuf, sendcount, dtype);
      case metrics::Algo::kRecursiveDoubling:
        return AllGatherRecursiveDoubling(ctx, sendbuf, recvbuf, sendcount, dtype);
      default:
        return AllGatherRing(ctx, sendbuf, recvbuf, sendcount, dtype);
    }
  });
}

Result<Work> Communicator::ReduceScatter(const void* sendbuf, void* recvbuf, int64_t recvcount,
                                         DType dtype, ReduceOp op) {
  Checker c("reducescatter", rank());
  WEFT_RETURN_IF_ERROR(c.Count(recvcount, "recvcount"));
  WEFT_RETURN_IF_ERROR(c.Type(dtype));
  WEFT_RETURN_IF_ERROR(c.Op(op));
  WEFT_RETURN_IF_ERROR(c.Buffer(sendbuf, recvcount, "sendbuf"));
  WEFT_RETURN_IF_ERROR(c.Buffer(recvbuf, recvcount, "recvbuf"));
  size_t block = Bytes(recvcount, dtype);
  WEFT_RETURN_IF_ERROR(c.Overlap(recvbuf, block, sendbuf, block * world_size(),
                                 static_cast<const uint8_t*>(sendbuf) + block * rank()));
  const auto rs_algo = impl_->arena() ? metrics::Algo::kShm : metrics::Algo::kRing;
  return impl_->Issue("reducescatter", rs_algo, [=](internal::OpContext& ctx) {
    return ctx.arena() ? ReduceScatterShm(ctx, sendbuf, recvbuf, recvcount, dtype, op)
                       : ReduceScatterRing(ctx, sendbuf, recvbuf, recvcount, dtype, op);
  });
}

Result<Work> Communicator::AllToAll(const void* sendbuf, void* recvbuf, int64_t count,
                                    DType dtype) {
  Checker c("alltoall", rank());
  WEFT_RETURN_IF_ERROR(c.Count(count));
  WEFT_RETURN_IF_ERROR(c.Type(dtype));
  WEFT_RETURN_IF_ERROR(c.Buffer(sendbuf, count, "sendbuf"));
  WEFT_RETURN_IF_ERROR(c.Buffer(recvbuf, count, "recvbuf"));
  size_t all = Bytes(count, dtype) * world_size();
  WEFT_RETURN_IF_ERROR(c.Overlap(sendbuf, all, recvbuf, all, recvbuf));
  return impl_->Issue("alltoall", metrics::Algo::kPairwise, [=](internal::OpContext& ctx) {
    return AllToAllPairwise(ctx, sendbuf, recvbuf, count, dtype);
  });
}

Result<Work> Communicator::Gather(const void* sendbuf, void* recvbuf, int64_t sendcount,
                                  DType dtype, int root) {
  Checker c("gather", rank());
  WEFT_RETURN_IF_ERROR(c.Count(sendcount, "sendcount"));
  WEFT_RETURN_IF_ERROR(c.Type(dtype));
  WEFT_RETURN_IF_ERROR(c.Rank(root, world_size(), "root"));
  WEFT_RETURN_IF_ERROR(c.Buffer(sendbuf, sendcount, "sendbuf"));
  if (rank() == root) {
    WEFT_RETURN_IF_ERROR(c.Buffer(recvbuf, sendcount, "recvbuf"));
    size_t block = Bytes(sendcount, dtype);
    WEFT_RETURN_IF_ERROR(c.Overlap(sendbuf, block, recvbuf, block * world_size(),
                                   static_cast<uint8_t*>(recvbuf) + block * rank()));
  }
  return impl_->Issue("gather", metrics::Algo::kLinear, [=](internal::OpContext& ctx) {
    return GatherLinear(ctx, sendbuf, recvbuf, sendcount, dtype, root);
  });
}

Result<Work> Communicator::Scatter(const void* sendbuf, void* recvbuf, int64_t recvcount,
                                   DType dtype, int root) {
  Checker c("scatter", rank());
  WEFT_RETURN_IF_ERROR(c.Count(recvcount, "recvcount"));
  WEFT_RETURN_IF_ERROR(c.Type(dtype));
  WEFT_RETURN_IF_ERROR(c.Rank(root, world_size(), "root"));
  WEFT_RETURN_IF_ERROR(c.Buffer(recvbuf, recvcount, "recvbuf"));
  if (rank() == root) {
    WEFT_RETURN_IF_ERROR(c.Buffer(sendbuf, recvcount, "sendbuf"));
    size_t block = Bytes(recvcount, dtype);
    WEFT_RETURN_IF_ERROR(c.Overlap(recvbuf, block, sendbuf, block * world_size(),
                                   static_cast<const uint8_t*>(sendbuf) + block * rank()));
  }
  return impl_->Issue("scatter", metrics::Algo::kLinear, [=](internal::OpContext& ctx) {
    return ScatterLinear(ctx, sendbuf, recvbuf, recvcount, dtype, root);
  });
}

Result<Work> Communicator::Barrier() {
  const auto barrier_algo = impl_->arena() ? metrics::Algo::kShm : metrics::Algo::kDissemination;
  return impl_->Issue("barrier", barrier_algo, [](internal::OpContext& ctx) {
    return ctx.arena() ? BarrierShm(ctx) : BarrierDissemination(ctx);
  });
}

Result<Work> Communicator::Send(const void* buf, int64_t count, DType dtype, int peer, int tag) {
  Checker c("send", rank());
  WEFT_RETURN_IF_ERROR(c.Count(count));
  WEFT_RETURN_IF_ERROR(c.Type(dtype));
  WEFT_RETURN_IF_ERROR(c.Rank(peer, world_size(), "peer"));
  WEFT_RETURN_IF_ERROR(c.Buffer(buf, count, "buffer"));
  if (peer == rank()) return c.Bad("send to self (peer " + std::to_string(peer) + ")");
  if (tag < 0) return c.Bad("tag " + std::to_string(tag) + " (tags are 0..2^31-1)");
  internal::P2POp op{true, peer, const_cast<void*>(buf), Bytes(count, dtype), impl_->UserTag(tag)};
  return impl_->Issue(
      "send", false,
      [op](internal::OpContext& ctx) -> Status {
        WEFT_ASSIGN_OR_RETURN(internal::Pending p, ctx.SendTagged(op.peer, op.buf, op.bytes, op.tag));
        std::vector<internal::Pending> ps{p};
        return ctx.WaitAll(ps);
      },
      op);
}

Result<Work> Communicator::Recv(void* buf, int64_t count, DType dtype, int peer, int tag) {
  Checker c("recv", rank());
  WEFT_RETURN_IF_ERROR(c.Count(count));
  WEFT_RETURN_IF_ERROR(c.Type(dtype));
  WEFT_RETURN_IF_ERROR(c.Rank(peer, world_size(), "peer"));
  WEFT_RETURN_IF_ERROR(c.Buffer(buf, count, "buffer"));
  if (peer == rank()) return c.Bad("receive from self (peer " + std::to_string(peer) + ")");
  if (tag < 0) return c.Bad("tag " + std::to_string(tag) + " (tags are 0..2^31-1)");
  internal::P2POp op{false, peer, buf, Bytes(count, dtype), impl_->UserTag(tag)};
  return impl_->Issue(
      "recv", false,
      [op](internal::OpContext& ctx) -> Status {
        WEFT_ASSIGN_OR_RETURN(internal::Pending p, ctx.RecvTagged(op.peer, op.buf, op.bytes, op.tag));
        std::vector<internal::Pending> ps{p};
        return ctx.WaitAll(ps);
      },
      op);
}

}  // namespace weft::collectives
