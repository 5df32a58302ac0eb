#include "collectives/internal/comm_impl.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <sstream>

#include "base/env.h"
#include "base/futex.h"
#include "base/hmac.h"
#include "base/host_identity.h"
#include "base/logging.h"
#include "base/recycling_allocator.h"
#include "base/thread_name.h"

namespace weft::collectives::internal {
namespace {

WEFT_ENV_KNOB(kTransportKnob, "WEFT_TRANSPORT", "",
              "comma list of transports in preference order (default: shm,tcp, with ucx before "
              "tcp when an RDMA device is present, else after)");
WEFT_ENV_KNOB(kTimeoutKnob, "WEFT_TIMEOUT_MS", "300000",
              "deadline of one collective; a stuck peer fails it with an error naming the peer");
WEFT_ENV_KNOB(kInitTimeoutKnob, "WEFT_INIT_TIMEOUT_MS", "120000",
              "deadline for creating a communicator (store rendezvous and connections)");
WEFT_ENV_KNOB(kChunkKnob, "WEFT_CHUNK_BYTES", "1M", "pipeline chunk of ring and tree algorithms");
WEFT_ENV_KNOB(kRingMaxChunksKnob, "WEFT_RING_MAX_CHUNKS", "8",
              "most pieces a ring algorithm cuts one block into: larger blocks travel in larger "
              "pieces than WEFT_CHUNK_BYTES (fewer messages, each with its own handshake over "
              "UCX); 0: no limit");
WEFT_ENV_KNOB(kRecvReduceKnob, "WEFT_RECV_REDUCE", "1",
              "ring algorithms reduce each incoming piece as it lands, from a small buffer the "
              "socket fills, where the transport can (tcp); 0: receive pieces whole into "
              "scratch memory, then reduce them");
WEFT_ENV_KNOB(kAlgoKnob, "WEFT_ALGO", "",
              "force the all-reduce algorithm: ring, recursive_doubling, rabenseifner, shm_direct, "
              "shm_chunked or hierarchical (default: the tuner); a flat choice keeps all-gather "
              "flat too");
WEFT_ENV_KNOB(kRdMaxKnob, "WEFT_ALGO_RD_MAX_BYTES", "64K",
              "largest all-reduce the tuner gives to recursive doubling");
WEFT_ENV_KNOB(kRabMinKnob, "WEFT_ALGO_RAB_MIN_BYTES", "32K",
              "on a power-of-two number of ranks above 2, all-reduces above this go to "
              "Rabenseifner instead of recursive doubling (up to WEFT_ALGO_RAB_MAX_BYTES)");
WEFT_ENV_KNOB(kAgRdMaxKnob, "WEFT_ALLGATHER_RD_MAX_BYTES", "4M",
              "largest all-gather (gathered bytes) that a power-of-two number of ranks above 2 "
              "runs by recursive doubling over the transports (log2(n) exchanges instead of the "
              "ring's n-1); 0: always the ring");
WEFT_ENV_KNOB(kRabMaxKnob, "WEFT_ALGO_RAB_MAX_BYTES", "auto",
              "largest all-reduce the tuner gives to Rabenseifner (from WEFT_ALGO_RAB_MIN_BYTES, "
              "on a power-of-two number of ranks above 2; with probed links, the largest it "
              "weighs it for); larger ones take the ring; 0: never; auto: 8M on 4 ranks, 4M on "
              "more");
WEFT_ENV_KNOB(kJobIdKnob, "WEFT_JOB_ID", "", "job id (set by launchers; else made by rank 0)");
WEFT_ENV_KNOB(kSecretKnob, "WEFT_JOB_SECRET", "",
              "per-job secret authenticating every connection (set by launchers; else made by "
              "rank 0 and shared through the store)");

WEFT_ENV_KNOB(kProgressPollKnob, "WEFT_PROGRESS_POLL_US", "500",
              "how often a communicator's worker looks for operations nobody is waiting on (it "
              "backs off to 16x this while callers run every operation themselves, and sleeps "
              "while none are queued)");

WEFT_ENV_KNOB(kShmCollKnob, "WEFT_SHM_COLL", "1",
              "1: collectives among ranks of one host use a shared-memory arena (flags and "
              "slots); 0: they go through the transports like any other");
WEFT_ENV_KNOB(kShmCollChunkKnob, "WEFT_SHM_COLL_CHUNK_BYTES", "auto",
              "slot size of the shared-memory arena, the pipeline chunk of intra-host "
              "collectives (the arena holds 2n+2 slots for n ranks): auto is 512K for up to 4 "
              "ranks on the host, 1M for 5 to 16, 256K for more");
// WEFT_SHM_COLL_CHUNK_BYTES=auto: 512 KiB slots measured faster than 256 KiB with 2 and 4 ranks
// on 2 CPUs (interleaved, vCPUs together: 2-rank all-reduce of 2, 16 and 64 MiB 8-10%,
// reduce-scatter of 1 MiB 36 against 66 us, broadcast of 64 MiB 8%, 4-rank reduce-scatter 5%;
// level elsewhere). On the 16-core machine (bench/results/manycore/sweep.jsonl, 3 interleaved
// repeats) 1 MiB slots were the fastest all-reduce of 16 and 64 MiB at 8 and 16 ranks: 64 MiB
// 31.2 ms against 256 KiB's 33.3 (8 ranks) and 41.2 against 45.4-57.3 (16 ranks). Above 16
// ranks (unmeasured) 256 KiB keeps the arena (2n+2 slots) within small /dev/shm limits such as
// a container's 64 MiB; at 16 ranks 1 MiB slots make a 34 MiB arena.
constexpr int kBigSlotMaxRanks = 4;
constexpr int kHugeSlotMaxRanks = 16;
constexpr size_t kBigSlotBytes = size_t{512} << 10;
constexpr size_t kHugeSlotBytes = size_t{1} << 20;
constexpr size_t kSlotBytes = size_t{256} << 10;
size_t ArenaSlotBytes(size_t configured, int ranks) {
  if (configured > 0) return configured;
  if (ranks <= kBigSlotMaxRanks) return kBigSlotBytes;
  return ranks <= kHugeSlotMaxRanks ? kHugeSlotBytes : kSlotBytes;
}
WEFT_ENV_KNOB(kShmDirectMaxKnob, "WEFT_SHM_COLL_DIRECT_MAX_BYTES", "auto",
              "largest intra-host all-reduce where every rank reduces every slot itself (above "
              "it: the chunked reduce-scatter/all-gather); auto keeps the bytes each rank reads "
              "from its peers, (n-1) x size, within 4K, or 16K when the host's ranks outnumber "
              "its cores, and the size within 16K");
WEFT_ENV_KNOB(kShmSingleCopyKnob, "WEFT_SHM_COLL_SINGLE_COPY_MIN_BYTES", "256K",
              "intra-host all-gathers of at least this many bytes per rank are read straight "
              "from the owner's buffer (process_vm_readv) instead of through arena slots; 0: "
              "never");
WEFT_ENV_KNOB(kShmSingleCopyMaxKnob, "WEFT_SHM_COLL_SINGLE_COPY_MAX_BYTES", "8M",
              "largest intra-host all-gather block that goes single-copy (above it the slots "
              "win: they pass through the cache, a single copy streams through memory)");
WEFT_ENV_KNOB(kShmStreamingKnob, "WEFT_SHM_COLL_STREAMING_MIN_BYTES", "8M",
              "intra-host all-reduces and all-gathers whose output has at least this many bytes "
              "write it with streaming (non-temporal) stores, sparing the memory reads that "
              "ordinary stores to lines not in the cache cost; 0: never");
WEFT_ENV_KNOB(kHierSegmentKnob, "WEFT_HIER_SEGMENT_BYTES", "4M",
              "segment of the pipelined hierarchical all-reduce: from twice this size up, one "
              "segment crosses hosts while the next is reduced inside the host; 0: no pipeline");
WEFT_ENV_KNOB(kShmCollSpinKnob, "WEFT_SHM_COLL_SPIN_US", "50",
              "microseconds an arena wait spins on the flags before sleeping on a futex");

constexpr int kSliceMs = 50;

template <typename... Args>
std::shared_ptr<WorkState> NewWorkState(Args&&... args) {
  return MakeRecycled<WorkState>(std::forward<Args>(args)...);
}

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == ',' || c == ' ') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

// "rank|host|pid|name=addr;name=addr"
std::string EncodePeer(int rank, const std::string& host, int pid,
                       const std::vector<std::pair<std::string, std::string>>& addrs) {
  std::string s = std::to_string(rank) + "|" + host + "|" + std::to_string(pid) + "|";
  for (const auto& [name, addr] : addrs) s += name + "=" + addr + ";";
  return s;
}

struct DecodedPeer {
  std::string host;
  int pid = 0;
  std::vector<std::pair<std::string, std::string>> addrs;
};

Result<DecodedPeer> DecodePeer(const std::string& s) {
  DecodedPeer p;
  size_t a = s.find('|'), b = s.find('|', a + 1), c = s.find('|', b + 1);
  if (a == std::string::npos || b == std::string::npos || c == std::string::npos) {
    return DataLossError("malformed peer record '" + s + "' in the store");
  }
  p.host = s.substr(a + 1, b - a - 1);
  p.pid = std::atoi(s.substr(b + 1, c - b - 1).c_str());
  std::string rest = s.substr(c + 1);
  size_t pos = 0;
  while (pos < rest.size()) {
    size_t end = rest.find(';', pos);
    if (end == std::string::npos) end = rest.size();
    std::string item = rest.substr(pos, end - pos);
    size_t eq = item.find('=');
    if (eq != std::string::npos) p.addrs.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    pos = end + 1;
  }
  return p;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// CommShared

Result<std::shared_ptr<CommShared>> CommShared::Create(rendezvous::Store& store, int rank,
                                                       int world_size, const CommOptions& options) {
  std::shared_ptr<CommShared> s(new CommShared());
  s->rank_ = rank;
  s->world_size_ = world_size;
  ResolvedOptions& o = s->options_;
  o.transports = options.transports;
  if (o.transports.empty()) o.transports = SplitList(kTransportKnob.Get());
  bool explicit_transports = !o.transports.empty();
  if (o.transports.empty()) o.transports = transport::AvailableTransports();
  o.timeout_ms = options.timeout_ms > 0 ? options.timeout_ms : kTimeoutKnob.GetInt();
  o.init_timeout_ms =
      options.init_timeout_ms > 0 ? options.init_timeout_ms : kInitTimeoutKnob.GetInt();
  o.chunk_bytes =
      options.chunk_bytes > 0 ? options.chunk_bytes : static_cast<size_t>(kChunkKnob.GetBytes());
  if (o.chunk_bytes < 64) o.chunk_bytes = 64;
  o.algorithm = !options.algorithm.empty() ? options.algorithm : kAlgoKnob.Get();
  if (!o.algorithm.empty() && o.algorithm != "ring" && o.algorithm != "recursive_doubling" &&
      o.algorithm != "rabenseifner" && o.algorithm != "shm_direct" &&
      o.algorithm != "shm_chunked" && o.algorithm != "hierarchical") {
    return InvalidArgumentError("unknown all-reduce algorithm '" + o.algorithm +
                                "' (WEFT_ALGO): use ring, recursive_doubling, rabenseifner, "
                                "shm_direct, shm_chunked or hierarchical");
  }
  o.rd_max_bytes = kRdMaxKnob.GetBytes();
  o.rab_min_bytes = std::max<int64_t>(0, kRabMinKnob.GetBytes());
  WEFT_ASSIGN_OR_RETURN(std::optional<int64_t> rab_max,
                        BytesOrAuto(kRabMaxKnob, 0, INT64_MAX, "(e.g. 4M, 0 for never)"));
  o.rab_max_bytes = rab_max.value_or(-1);  // -1, auto: by the communicator's size
  // WEFT_ALGO=ring keeps the flat all-gather the ring too.
  o.allgather_rd_max_bytes =
      o.algorithm == "ring" ? 0
                            : static_cast<size_t>(std::max<int64_t>(0, kAgRdMaxKnob.GetBytes()));
  o.ring_max_chunks = static_cast<int>(std::max<int64_t>(0, kRingMaxChunksKnob.GetInt()));
  o.shm_coll = options.shm_coll >= 0 ? options.shm_coll != 0 : kShmCollKnob.GetBool();
  o.recv_reduce = options.recv_reduce >= 0 ? options.recv_reduce != 0 : kRecvReduceKnob.GetBool();
  o.shm_coll_chunk_bytes = options.shm_coll_chunk_bytes;  // 0: by the arena's rank count
  if (o.shm_coll_chunk_bytes == 0) {
    WEFT_ASSIGN_OR_RETURN(std::optional<int64_t> chunk,
                          BytesOrAuto(kShmCollChunkKnob, 1, INT64_MAX, "(e.g. 256K, 1M)"));
    if (chunk) o.shm_coll_chunk_bytes = static_cast<size_t>(std::max<int64_t>(4096, *chunk));
  }
  WEFT_ASSIGN_OR_RETURN(std::optional<int64_t> direct_max,
                        BytesOrAuto(kShmDirectMaxKnob, 0, INT64_MAX, "(e.g. 4K, 0 for never)"));
  o.shm_direct_max_bytes = direct_max.value_or(-1);  // -1, auto: by the arena's rank count
  o.shm_coll_spin_us = static_cast<int>(kShmCollSpinKnob.GetInt());
  o.shm_single_copy_min_bytes = options.shm_single_copy_min_bytes > 0
                                    ? options.shm_single_copy_min_bytes
                                    : static_cast<size_t>(kShmSingleCopyKnob.GetBytes());
  o.shm_single_copy_max_bytes = static_cast<size_t>(kShmSingleCopyMaxKnob.GetBytes());
  if (options.shm_streaming_min_bytes > 0) {
    o.streaming_copy_min_bytes = options.shm_streaming_min_bytes;
  } else {
    const int64_t v = kShmStreamingKnob.GetBytes();
    o.streaming_copy_min_bytes = v > 0 ? static_cast<size_t>(v) : SIZE_MAX;
  }
  o.hier_segment_bytes =
      options.hier_segment_bytes < 0
          ? 0
          : static_cast<size_t>(options.hier_segment_bytes > 0 ? options.hier_segment_bytes
                                                               : kHierSegmentKnob.GetBytes());
  for (const auto& t : o.transports) {
    const auto avail = transport::AvailableTransports();
    if (std::find(avail.begin(), avail.end(), t) == avail.end()) {
      std::string known;
      for (const auto& a : avail) known += (known.empty() ? "" : ", ") + a;
      return InvalidArgumentError("unknown transport '" + t + "' (built: " + known + ")");
    }
  }
  (void)explicit_transports;
  Status st = s->Bootstrap(store, options);
  if (!st.ok()) return st.WithContext("rank " + std::to_string(rank) + ": creating communicator");
  return s;
}

Status CommShared::Bootstrap(rendezvous::Store& base_store, const CommOptions& options) {
  Deadline deadline = Deadline::AfterMs(options_.init_timeout_ms);
  // Each communicator created from one store gets its own key space; ranks create them in the
  // same order, so their counters agree.
  WEFT_ASSIGN_OR_RETURN(int64_t generation,
                        base_store.Add("weft/generation/" + std::to_string(rank_), 1));
  rendezvous::PrefixStore store("weft/c" + std::to_string(generation), base_store);

  std::string secret = !options.secret.empty() ? options.secret : kSecretKnob.Get();
  job_id_ = !options.job_id.empty() ? options.job_id : kJobIdKnob.Get();
  if (secret.empty() || job_id_.empty()) {
    if (rank_ == 0) {
      if (secret.empty()) {
        WEFT_ASSIGN_OR_RETURN(secret, NewSecretHex());
      }
      if (job_id_.empty()) {
        WEFT_ASSIGN_OR_RETURN(std::string r, NewSecretHex());
        job_id_ = r.substr(0, 12);
      }
      WEFT_RETURN_IF_ERROR(store.Set("secret", secret));
      WEFT_RETURN_IF_ERROR(store.Set("job_id", job_id_));
    } else {
      WEFT_ASSIGN_OR_RETURN(secret, store.Get("secret", deadline));
      WEFT_ASSIGN_OR_RETURN(job_id_, store.Get("job_id", deadline));
    }
  }
  std::string host = !options.host_id.empty() ? options.host_id : HostIdentity();
  // Transports of one job are told apart by generation too (shm segment names).
  std::string tjob = job_id_ + "g" + std::to_string(generation);

  std::vector<std::pair<std::string, std::string>> addrs;
  for (const auto& name : options_.transports) {
    transport::TransportConfig cfg;
    cfg.rank = rank_;
    cfg.world_size = world_size_;
    cfg.host_id = host;
    cfg.secret = secret;
    cfg.job_id = tjob;
    cfg.shm_ring_bytes = options.shm_ring_bytes;
    cfg.shm_eager_bytes = options.shm_eager_bytes;
    cfg.tcp_sockets_per_peer = options.tcp_sockets_per_peer;
    cfg.tcp_chunk_bytes = options.tcp_chunk_bytes;
    cfg.listen_host = options.listen_host;
    auto t = transport::CreateTransport(name, cfg);
    if (!t.ok()) return t.status().WithContext("transport " + name);
    auto addr = (*t)->Listen();
    if (!addr.ok()) return addr.status().WithContext("transport " + name + " listen");
    addrs.emplace_back(name, *addr);
    transports_.push_back(std::move(*t));
  }
  WEFT_RETURN_IF_ERROR(store.Set("peer/" + std::to_string(rank_),
                                 EncodePeer(rank_, host, static_cast<int>(getpid()), addrs)));

  std::vector<DecodedPeer> peers(world_size_);
  hosts_.assign(world_size_, "");
  for (int r = 0; r < world_size_; ++r) {
    auto rec = store.Get("peer/" + std::to_string(r), deadline);
    if (!rec.ok()) {
      return Status(rec.status().code(), "rank " + std::to_string(r) +
                                             " did not join the rendezvous in time (" +
                                             rec.status().message() + ")");
    }
    WEFT_ASSIGN_OR_RETURN(peers[r], DecodePeer(*rec));
    hosts_[r] = peers[r].host;
  }

  // Pick, for each peer, the first transport in preference order that both sides built and that
  // can reach it; then connect each transport's share of the peers.
  transport_names_.assign(world_size_, "self");
  endpoints_.resize(world_size_);
  std::vector<std::vector<transport::PeerInfo>> per_transport(transports_.size());
  transport::PeerInfo self{rank_, host, static_cast<int>(getpid()), ""};
  for (int r = 0; r < world_size_; ++r) {
    if (r == rank_) continue;
    bool chosen = false;
    for (size_t i = 0; i < transports_.size() && !chosen; ++i) {
      const std::string& name = options_.transports[i];
      for (const auto& [pname, paddr] : peers[r].addrs) {
        if (pname != name) continue;
        transport::PeerInfo info{r, peers[r].host, peers[r].pid, paddr};
        if (!transports_[i]->CanConnect(self, info)) break;
        per_transport[i].push_back(info);
        transport_names_[r] = name;
        chosen = true;
        break;
      }
    }
    if (!chosen) {
      std::string tried;
      for (const auto& n : options_.transports) tried += (tried.empty() ? "" : ",") + n;
      return UnavailableError("no transport can reach rank " + std::to_string(r) + " (host " +
                              peers[r].host + ") from rank " + std::to_string(rank_) + " (host " +
                              host + "); tried " + tried);
    }
  }
  transport_labels_.assign(world_size_, metrics::kTransportSelf);
  sent_counters_.assign(world_size_, 0);
  for (int r = 0; r < world_size_; ++r) {
    if (r == rank_) continue;
    transport_labels_[r] = metrics::TransportLabel(transport_names_[r]);
    sent_counters_[r] =
        metrics::SentCounter(transport_labels_[r], hosts_[r] == host ? metrics::PeerClass::kSameHost
                                                                     : metrics::PeerClass::kRemote);
  }
  for (size_t i = 0; i < transports_.size(); ++i) {
    if (per_transport[i].empty()) continue;
    auto eps = transports_[i]->Connect(per_transport[i], deadline);
    if (!eps.ok()) return eps.status().WithContext("connecting over " + options_.transports[i]);
    for (size_t j = 0; j < per_transport[i].size(); ++j) {
      endpoints_[per_transport[i][j].rank] = std::move((*eps)[j]);
    }
  }

  // Every rank listens for failure notices from every peer for the life of the connections.
  notice_in_.assign(world_size_, std::vector<char>(kNoticeBytes, 0));
  notice_recvs_.resize(world_size_);
  for (int r = 0; r < world_size_; ++r) {
    if (r == rank_) continue;
    auto req = endpoints_[r]->PostRecv(notice_in_[r].data(), kNoticeBytes, kNoticeTag);
    if (!req.ok()) return req.status();
    notice_recvs_[r] = *req;
  }
  std::vector<int> everyone(world_size_);
  for (int r = 0; r < world_size_; ++r) everyone[r] = r;
  if (WantsArena(everyone)) {
    auto arena = AttachArena("/weft-" + tjob + "-arena", rank_, everyone, deadline);
    if (!arena.ok()) return arena.status().WithContext("shared-memory arena");
    root_arena_ = std::move(*arena);
  }
  Status b = store.Barrier("connected", world_size_, deadline);
  if (!b.ok()) return b;
  if (root_arena_) root_arena_->Unlink();  // everyone has it mapped now
  WEFT_LOG(DEBUG) << "communicator of " << world_size_ << " ranks connected (job " << job_id_
                  << ")";
  return Status::Ok();
}

Result<std::unique_ptr<LocalArena>> CommShared::AttachArena(const std::string& name, int rank,
                                                            const std::vector<int>& world_ranks,
                                                            Deadline deadline) const {
  LocalArena::Config ac;
  ac.name = name;
  ac.rank = rank;
  ac.size = static_cast<int>(world_ranks.size());
  ac.slot_bytes = ArenaSlotBytes(options_.shm_coll_chunk_bytes, ac.size);
  ac.spin_us = options_.shm_coll_spin_us;
  ac.world_ranks = world_ranks;
  return LocalArena::Attach(ac, deadline);
}

bool CommShared::AllPeersOverShm(const std::vector<int>& world_ranks) const {
  for (int w : world_ranks) {
    if (w != rank_ && transport_names_[w] != "shm") return false;
  }
  return true;
}

CommShared::~CommShared() {
  // Give failure notices a moment to leave before the transports close under them.
  Deadline d = Deadline::AfterMs(200);
  for (auto& r : notice_sends_) {
    if (r) r->Wait(d).IgnoreError();
  }
  for (auto& t : transports_) t->Abort(CancelledError("communicator destroyed"));
  endpoints_.clear();
  notice_recvs_.clear();
  notice_sends_.clear();
  transports_.clear();
}

Status CommShared::KnownFailure() {
  if (!has_failed_.load(std::memory_order_acquire)) return Status::Ok();
  std::lock_guard<std::mutex> lock(mu_);
  return failed_;
}

Status CommShared::CheckFailed() {
  if (has_failed_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(mu_);
    return failed_;
  }
  for (int r = 0; r < world_size_; ++r) {
    auto& req = notice_recvs_[r];
    if (!req || !req->Test()) continue;
    Status s = req->status();
    if (!s.ok()) {
      // The connection went away without a notice: a peer that destroyed its communicator, or
      // one that died. Operations that still need that peer fail on their own requests (and
      // then notify everyone); a clean shutdown must not fail ranks that are done with it.
      req.reset();
      continue;
    }
    std::string text(notice_in_[r].data(), strnlen(notice_in_[r].data(), kNoticeBytes));
    req.reset();
    Fail(UnavailableError(text), -1);
    std::lock_guard<std::mutex> lock(mu_);
    return failed_;
  }
  return Status::Ok();
}

void CommShared::Fail(const Status& status, int culprit) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (has_failed_.load()) return;
    failed_ = status;
    has_failed_.store(true, std::memory_order_release);
    std::string text = status.message() + " (reported by rank " + std::to_string(rank_) + ")";
    if (text.size() >= kNoticeBytes) text.resize(kNoticeBytes - 1);
    notice_out_.assign(world_size_, std::vector<char>(kNoticeBytes, 0));
    for (int r = 0; r < world_size_; ++r) {
      if (r == rank_ || r == culprit || !endpoints_[r]) continue;
      std::memcpy(notice_out_[r].data(), text.data(), text.size());
      auto req = endpoints_[r]->PostSend(notice_out_[r].data(), kNoticeBytes, kNoticeTag);
      if (req.ok()) notice_sends_.push_back(*req);
    }
  }
  Deadline d = Deadline::AfterMs(200);
  for (auto& r : notice_sends_) r->Wait(d).IgnoreError();
  for (auto& t : transports_) t->Abort(status);
}

// ---------------------------------------------------------------------------------------------
// OpContext

OpContext::OpContext(CommImpl& comm, const char* op_name, uint32_t seq, Deadline deadline)
    : comm_(comm), op_name_(op_name), seq_(seq), label_seq_(seq), deadline_(deadline) {}

OpContext::OpContext(CommImpl& comm, const char* op_name, uint32_t seq, int64_t timeout_ms)
    : comm_(comm), op_name_(op_name), seq_(seq), label_seq_(seq), timeout_ms_(timeout_ms) {}

Hierarchy* OpContext::hierarchy() const { return comm_.hierarchy(); }
int64_t OpContext::rd_max_bytes() const { return comm_.shared().options().rd_max_bytes; }
int OpContext::ring_max_chunks() const { return comm_.shared().options().ring_max_chunks; }
size_t OpContext::hier_segment_bytes() const { return comm_.shared().options().hier_segment_bytes; }
size_t OpContext::streaming_copy_min_bytes() const {
  return comm_.shared().options().streaming_copy_min_bytes;
}

Result<bool> OpContext::ArenaSingleCopy(size_t bytes) {
  const size_t min = comm_.shared().options().shm_single_copy_min_bytes;
  if (min == 0 || bytes < min || bytes > comm_.shared().options().shm_single_copy_max_bytes) {
    return false;
  }
  auto r = comm_.arena()->SingleCopy(deadline());
  if (!r.ok()) return r.status().WithContext(OpLabel());
  return r;
}

int OpContext::rank() const { return comm_.rank(); }
int OpContext::size() const { return comm_.size(); }
size_t OpContext::chunk_bytes() const { return comm_.chunk_bytes(); }
uint8_t* OpContext::Scratch(size_t bytes, int slot) { return comm_.Scratch(bytes, slot); }

std::string OpContext::OpLabel() const {
  return std::string(op_name_) + " #" + std::to_string(label_seq_);
}

std::string OpContext::PeerLabel(int peer) const {
  int w = comm_.world_rank_of(peer);
  return "rank " + std::to_string(w) + " (" + comm_.shared().transport_name(w) + ")";
}

LocalArena* OpContext::arena() const { return comm_.arena(); }

Status OpContext::ArenaWritable(uint64_t seq) {
  return seq <= 2 ? Status::Ok() : WaitArena(LocalArena::Flag::kDone, seq - 2);
}

Status OpContext::WaitArena(LocalArena::Flag flag, uint64_t seq, int only_rank) {
  LocalArena* a = comm_.arena();
  auto check = [this]() { return comm_.shared().CheckFailed(); };
  Status s = a->Wait(flag, seq, deadline(), check, only_rank);
  if (s.ok()) return s;
  if (s.code() == StatusCode::kDeadlineExceeded) {
    double secs = static_cast<double>(comm_.shared().options().timeout_ms) / 1000.0;
    std::ostringstream msg;
    msg << OpLabel() << " timed out after " << secs << " s " << s.message();
    s = DeadlineExceededError(msg.str());
  } else if (s.code() == StatusCode::kUnavailable &&
             s.message().find("reported by") == std::string::npos) {
    s = s.WithContext(OpLabel());
  } else {
    return Status(s.code(), OpLabel() + " failed: " + s.message());
  }
  comm_.shared().Fail(s, -1);
  return s;
}

Result<transport::Endpoint*> OpContext::EndpointOf(int peer) {
  transport::Endpoint* ep = comm_.shared().endpoint(comm_.world_rank_of(peer));
  if (ep == nullptr) return InternalError(OpLabel() + ": no endpoint to " + PeerLabel(peer));
  return ep;
}

template <typename Post>
Result<Pending> OpContext::PostVia(int peer, Post&& post) {
  WEFT_ASSIGN_OR_RETURN(transport::Endpoint * ep, EndpointOf(peer));
  auto r = post(*ep);
  if (!r.ok()) return FailureOf(Pending{nullptr, peer}, r.status());
  return Pending{*r, peer};
}

void OpContext::CountSent(int peer, size_t bytes) {
  // Bytes are counted here, where every collective's and user's send is posted, rather than in
  // each transport.
  if (metrics::Enabled()) {
    metrics::AddSentBytes(comm_.shared().sent_counter(comm_.world_rank_of(peer)), bytes);
  }
}

Result<Pending> OpContext::SendTagged(int peer, const void* data, size_t bytes, uint64_t tag) {
  auto p = PostVia(peer, [&](transport::Endpoint& ep) { return ep.PostSend(data, bytes, tag); });
  if (p.ok()) CountSent(peer, bytes);
  return p;
}

Result<Pending> OpContext::RecvTagged(int peer, void* data, size_t bytes, uint64_t tag) {
  return PostVia(peer, [&](transport::Endpoint& ep) { return ep.PostRecv(data, bytes, tag); });
}

bool OpContext::CanRecvReduce(int peer) const {
  if (!comm_.shared().options().recv_reduce) return false;
  transport::Endpoint* ep = comm_.shared().endpoint(comm_.world_rank_of(peer));
  return ep != nullptr && ep->CanRecvReduce();
}

Result<Pending> OpContext::RecvReduce(int peer, void* acc, const void* in, size_t bytes,
                                      DType dtype, ReduceOp op, int step) {
  const uint64_t tag = comm_.CollectiveTag(seq_, step);
  return PostVia(peer, [&](transport::Endpoint& ep) {
    return ep.PostRecvReduce(acc, in, bytes, tag, dtype, op);
  });
}

Result<Pending> OpContext::Send(int peer, const void* data, size_t bytes, int step) {
  return SendTagged(peer, data, bytes, comm_.CollectiveTag(seq_, step));
}

Result<Pending> OpContext::Recv(int peer, void* data, size_t bytes, int step) {
  return RecvTagged(peer, data, bytes, comm_.CollectiveTag(seq_, step));
}

Status OpContext::Exchange(int peer, const void* send, void* recv, size_t bytes, int step) {
  WEFT_ASSIGN_OR_RETURN(transport::Endpoint * ep, EndpointOf(peer));
  auto x = ep->Exchange(send, recv, bytes, comm_.CollectiveTag(seq_, step));
  if (!x.ok()) return FailureOf(Pending{nullptr, peer}, x.status());
  CountSent(peer, bytes);
  Pending ps[2];
  size_t n = 0;
  if (x->recv) ps[n++] = Pending{std::move(x->recv), peer};
  if (x->send) ps[n++] = Pending{std::move(x->send), peer};
  return n == 0 ? Status::Ok() : WaitAll(ps, n);
}

Status OpContext::FailureOf(const Pending& p, const Status& s) {
  Status shared = comm_.shared().CheckFailed();
  if (!shared.ok()) return Status(shared.code(), OpLabel() + " failed: " + shared.message());
  int w = p.peer >= 0 ? comm_.world_rank_of(p.peer) : -1;
  // Transports name the peer themselves; add it only where they did not.
  bool named = s.message().find("rank " + std::to_string(w)) != std::string::npos;
  Status out = s.WithContext(named ? OpLabel() : OpLabel() + ": " + PeerLabel(p.peer));
  comm_.shared().Fail(out, w);
  return out;
}

Status OpContext::Wait(Pending& p) {
  // Already complete (as a small send usually is when PostSend returns): done without reading
  // the clock for a deadline. 2 ranks, 8-byte all-reduce over UCX shared memory, 6 interleaved
  // pairs: p50 0.60 -> 0.54-0.58 us; the one clock read below for both the slice and the
  // operation's deadline (two before) took it from 1.10 to 1.05-1.07 us with the vCPUs apart.
  if (p.req->Done()) {
    Status s = p.req->status();
    return s.ok() ? s : FailureOf(p, s);
  }
  while (true) {
    const Clock::time_point now = Clock::now();
    Deadline slice = Deadline::At(now + std::chrono::milliseconds(kSliceMs)).Min(deadline(now));
    Status s = p.req->Wait(slice);
    if (s.ok()) return s;
    if (s.code() != StatusCode::kDeadlineExceeded || p.req->Test()) {
      if (p.req->Test()) s = p.req->status();
      if (s.ok()) return s;
      return FailureOf(p, s);
    }
    Status shared = comm_.shared().CheckFailed();
    if (!shared.ok()) return Status(shared.code(), OpLabel() + " failed: " + shared.message());
    if (deadline().Expired()) return DeadlineExceededError("");  // WaitAll names the peers
  }
}

Status OpContext::WaitAt(std::vector<Pending>& ps, size_t i) {
  Status s = Wait(ps[i]);
  // Wait's bare timeout is WaitAll's cue to name the late peers.
  if (s.code() != StatusCode::kDeadlineExceeded || !s.message().empty()) return s;
  s = WaitAll(ps.data() + i, ps.size() - i);
  ps.clear();
  return s;
}

Status OpContext::WaitAll(std::vector<Pending>& ps) {
  Status s = WaitAll(ps.data(), ps.size());
  ps.clear();
  return s;
}

Status OpContext::WaitAll(Pending* ps, size_t n) {
  Status result;
  for (size_t i = 0; i < n; ++i) {
    Status s = Wait(ps[i]);
    if (s.ok()) continue;
    if (s.code() == StatusCode::kDeadlineExceeded && s.message().empty()) {
      std::vector<int> late;
      std::string transports;
      for (size_t j = i; j < n; ++j) {
        if (ps[j].req->Test()) continue;
        int w = comm_.world_rank_of(ps[j].peer);
        if (std::find(late.begin(), late.end(), w) == late.end()) late.push_back(w);
      }
      std::sort(late.begin(), late.end());
      std::string who;
      for (int w : late) {
        who += (who.empty() ? "" : ", ") + std::to_string(w);
        const std::string& t = comm_.shared().transport_name(w);
        if (transports.find(t) == std::string::npos) {
          transports += (transports.empty() ? "" : ",") + t;
        }
      }
      double secs = static_cast<double>(comm_.shared().options().timeout_ms) / 1000.0;
      std::ostringstream msg;
      msg << OpLabel() << " timed out after " << secs << " s waiting for rank"
          << (late.size() > 1 ? "s " : " ") << who << " (" << transports << ")";
      s = DeadlineExceededError(msg.str());
      comm_.shared().Fail(s, late.size() == 1 ? late[0] : -1);
    }
    result = std::move(s);
    break;
  }
  for (size_t j = 0; j < n; ++j) ps[j].req.reset();
  return result;
}

// ---------------------------------------------------------------------------------------------
// WorkState

void WorkState::Complete(Status s) {
  status_ = std::move(s);
  // No fence between the store and the load (that would cost as much as the rest of a small
  // operation's completion): a sleeper that counts itself just as done_ is raised may be missed,
  // and then wakes at the end of its nap (Wait naps 50 us at first, 20 ms at most) and finds
  // done_ set; the futex itself re-checks done_ as it goes to sleep.
  done_.store(1, std::memory_order_release);
  if (sleepers_.load(std::memory_order_relaxed) > 0) {
    FutexWakeAll(&done_);
  }
}

Status WorkState::Wait(Deadline deadline) {
  if (done()) return status_;
  auto c = comm.lock();
  if (c) c->TryRunInline(this);
  // Spin briefly: most small collectives finish within microseconds of the wait.
  for (int i = 0; i < 2000 && !done(); ++i) {
    CpuRelax();
  }
  // Then sleep, waking now and then to run this operation if the thread that was running an
  // earlier one has finished it without starting ours.
  auto nap = std::chrono::nanoseconds(50000);
  while (!done()) {
    if (deadline.Expired()) {
      return DeadlineExceededError(std::string(name) + " #" + std::to_string(seq) +
                                   " still running at the caller's deadline");
    }
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    if (done_.load(std::memory_order_seq_cst) == 0) {
      FutexWait(&done_, 0, std::min<std::chrono::nanoseconds>(nap, deadline.Remaining()));
    }
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    nap = std::min<std::chrono::nanoseconds>(nap * 2, std::chrono::milliseconds(20));
    if (c && !done()) c->TryRunInline(this);
  }
  return status_;
}

// ---------------------------------------------------------------------------------------------
// CommImpl

CommImpl::CommImpl(std::shared_ptr<CommShared> shared, std::vector<int> group, int rank,
                   uint32_t comm_id)
    : shared_(std::move(shared)), group_(std::move(group)), rank_(rank), comm_id_(comm_id) {
  bool first = true;
  for (int r = 0; r < size(); ++r) {
    if (r == rank_) continue;
    const uint8_t t = shared_->transport_label(group_[r]);
    if (first) transport_label_ = t;
    if (t != transport_label_) transport_label_ = metrics::kTransportMixed;
    first = false;
  }
  RefreshTuner();
}

CommImpl::~CommImpl() { Shutdown(); }

void CommImpl::RefreshTuner() {
  const ResolvedOptions& o = shared_->options();
  TunerInput in;
  in.world_size = size();
  in.forced = o.algorithm;
  in.rd_max_bytes = static_cast<size_t>(o.rd_max_bytes);
  in.rab_min_bytes = static_cast<size_t>(o.rab_min_bytes);
  in.rab_max_bytes =
      o.rab_max_bytes < 0 ? DefaultRabMaxBytes(size()) : static_cast<size_t>(o.rab_max_bytes);
  in.local_arena = arena_ != nullptr;
  in.hierarchical = hierarchy_ != nullptr;
  // The slowest measured link (largest alpha and beta).
  for (const auto& l : link_models_.links) {
    in.have_link_model = true;
    in.alpha_us = std::max(in.alpha_us, l.model.alpha_us);
    in.beta_us_per_byte = std::max(in.beta_us_per_byte, l.model.beta_us_per_byte);
  }
  if (arena_ != nullptr) {
    in.shm_slot_bytes = arena_->slot_bytes();
    const int local = arena_->size();
    const size_t limit = o.shm_direct_max_bytes >= 0
                             ? static_cast<size_t>(o.shm_direct_max_bytes)
                             : DefaultShmDirectMaxBytes(local, transport::RanksFitCores(local));
    // The direct all-reduce holds the whole vector in one slot.
    in.shm_direct_max_bytes = std::min(limit, in.shm_slot_bytes);
  }
  tuner_base_ = in;
}

void CommImpl::StartWorker() {
  worker_ = NamedThread("weft-worker", [this] { WorkerLoop(); });
}

void CommImpl::Shutdown() {
  {
    std::lock_guard<SpinLock> lock(qlock_);
    stop_.store(true);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);  // the worker checks stop_ under mu_ before it sleeps
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

uint8_t* CommImpl::Scratch(size_t bytes, int slot) {
  auto& v = scratch_[slot];
  if (v.size() < bytes) v.resize(bytes);
  return v.data();
}

uint64_t CommImpl::CollectiveTag(uint32_t seq, int step) const {
  return (static_cast<uint64_t>(comm_id_ & 0xffffff) << 39) |
         (static_cast<uint64_t>(seq & 0xffffff) << 15) | static_cast<uint64_t>(step & 0x7fff);
}

uint64_t CommImpl::UserTag(int tag) const {
  return (1ull << 63) | (static_cast<uint64_t>(comm_id_ & 0xffffff) << 31) |
         static_cast<uint64_t>(tag & 0x7fffffff);
}

Status CommImpl::error() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_.ok()) return error_;
  }
  return shared_->CheckFailed();
}

Status CommImpl::KnownError() {
  if (has_error_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }
  return shared_->KnownFailure();
}

Result<Work> CommImpl::Issue(metrics::OpName name, bool collective, WorkState::Fn fn,
                             std::optional<P2POp> p2p) {
  metrics::Algo algo = metrics::Algo::kUnspecified;
  if (p2p) algo = metrics::Algo::kDirect;
  if (name.op == metrics::Op::kGroup) algo = metrics::Algo::kGroup;
  auto state = NewWorkState(name, algo, 0u, std::move(fn), weak_from_this());
  state->p2p = p2p;
  return Enqueue(std::move(state), collective);
}

Result<Work> CommImpl::Issue(metrics::OpName name, metrics::Algo algo, WorkState::Fn fn) {
  return Enqueue(NewWorkState(name, algo, 0u, std::move(fn), weak_from_this()),
                 /*collective=*/true);
}

Result<Work> CommImpl::Enqueue(std::shared_ptr<WorkState> state, bool collective) {
  Work work(state);
  {
    std::lock_guard<SpinLock> lock(qlock_);
    if (stop_.load(std::memory_order_relaxed)) {
      return FailedPreconditionError(std::string(state->name) + " on a destroyed communicator");
    }
    if (collective) state->seq = next_seq_++;
    if (group_depth_ > 0) {
      group_ops_.push_back(std::move(state));
      return work;
    }
    state->ticket = ++next_ticket_;
    queue_.push_back(std::move(state));
  }
  // No wake-up here as a rule: a caller that waits runs the operation itself (no thread hand-off
  // on the latency path); the worker polls and starts operations nobody waits for (overlap).
  // Only a worker parked by a quiet spell is woken, once, by the first operation after it.
  if (parked_.load(std::memory_order_seq_cst) && parked_.exchange(false)) {
    { std::lock_guard<std::mutex> lock(mu_); }  // it checks parked_ under mu_ before it sleeps
    cv_.notify_all();
  }
  return work;
}

void CommImpl::GroupStart() {
  std::lock_guard<SpinLock> lock(qlock_);
  ++group_depth_;
}

Result<Work> CommImpl::GroupEnd() {
  std::vector<std::shared_ptr<WorkState>> members;
  {
    std::lock_guard<SpinLock> lock(qlock_);
    if (group_depth_ == 0) return FailedPreconditionError("GroupEnd without GroupStart");
    if (--group_depth_ > 0) return Work();
    members.swap(group_ops_);
  }
  // NCCL semantics: every member starts before any is waited on, so a rank's send and receive
  // to the same peer cannot block each other. Point-to-point members are posted first, the
  // collectives run in issue order, then the point-to-point members are waited on.
  auto group_fn = [members](OpContext& ctx) -> Status {
    Status first;
    std::vector<std::pair<std::shared_ptr<WorkState>, Pending>> posted;
    for (auto& m : members) {
      if (!m->p2p) continue;
      const P2POp& op = *m->p2p;
      auto p = op.is_send ? ctx.SendTagged(op.peer, op.buf, op.bytes, op.tag)
                          : ctx.RecvTagged(op.peer, op.buf, op.bytes, op.tag);
      if (!p.ok()) {
        if (first.ok()) first = p.status();
        m->Complete(p.status());
        continue;
      }
      posted.emplace_back(m, *p);
    }
    for (auto& m : members) {
      if (m->p2p) continue;
      OpContext mctx = ctx.ForOp(m->name, m->seq);
      Status s = first.ok() ? m->fn(mctx) : Status(first.code(), "not run: " + first.message());
      if (!s.ok() && first.ok()) first = s;
      m->Complete(s);
    }
    for (auto& [m, p] : posted) {
      std::vector<Pending> one{p};
      OpContext mctx = ctx.ForOp(m->name, m->seq);
      Status s = mctx.WaitAll(one);
      if (!s.ok() && first.ok()) first = s;
      m->Complete(s);
    }
    return first;
  };
  return Issue("group", false, std::move(group_fn));
}

void CommImpl::Execute(const std::shared_ptr<WorkState>& state) {
  // With metrics off this branch is all they cost.
  if (metrics::Enabled()) [[unlikely]] {
    ExecuteMeasured(*state);
    return;
  }
  state->Complete(Run(*state));
}

Status CommImpl::Run(WorkState& state) {
  // Only what is already known: peers' failure reports are polled while operations wait, not
  // before each one starts (that would pump every connection on the latency path).
  Status err = KnownError();
  if (!err.ok()) {
    return Status(err.code(), std::string(state.name) + " #" + std::to_string(state.seq) +
                                  " not run: communicator failed earlier: " + err.message());
  }
  OpContext ctx(*this, state.name, state.seq, shared_->options().timeout_ms);
  Status s = state.fn(ctx);
  if (!s.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = s;
    has_error_.store(true, std::memory_order_release);
  }
  return s;
}

void CommImpl::ExecuteMeasured(WorkState& state) {
  const auto start = Clock::now();
  Status s = Run(state);
  // Recorded before Complete, so whoever sees the operation done also sees it counted.
  if (s.ok()) {
    uint8_t transport = transport_label_;
    switch (state.algo) {
      case metrics::Algo::kShmDirect:
      case metrics::Algo::kShmChunked:
      case metrics::Algo::kShm:
        transport = metrics::kTransportArena;
        break;
      case metrics::Algo::kHierarchical:
        transport = metrics::kTransportMixed;
        break;
      case metrics::Algo::kDirect:
        transport = shared_->transport_label(group_[state.p2p->peer]);
        break;
      default:
        break;
    }
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start);
    metrics::ObserveLatency(state.op, state.algo, transport, ns.count());
  } else {
    metrics::CountError(state.op, s.code());
  }
  state.Complete(std::move(s));
}

void CommImpl::TryRunInline(WorkState* state) {
  // Runs queued operations in order, up to and including `state`, unless another thread is
  // already running one (then the caller waits for it).
  while (!state->done()) {
    std::shared_ptr<WorkState> next;
    {
      std::lock_guard<SpinLock> lock(qlock_);
      if (running_.load(std::memory_order_relaxed) || queue_.empty()) return;
      next = std::move(queue_.front());
      queue_.pop_front();
      running_.store(true, std::memory_order_relaxed);
    }
    Execute(next);
    // Without the lock: the worker polls, and a waiter that found it set tries again.
    running_.store(false, std::memory_order_release);
    if (next.get() == state) return;
  }
}

void CommImpl::WorkerLoop() {
  // Starts an operation nobody has started within one to two polls of its queueing (so callers
  // that do not wait still progress), and drains the queue on shutdown.
  //
  // Each wake-up of this thread takes a core from a rank for a moment, and on a host where ranks
  // fill the cores that moment lands inside someone's collective: with a wake-up every 500 us,
  // 4 ranks on 2 cores, the p99 of an 8-byte all-reduce over the arena was 33-39 us against
  // 9.5-13 us without (p50 7-9 us either way). So the poll backs off while callers start every
  // operation themselves (doubling up to kMaxPollFactor times WEFT_PROGRESS_POLL_US: an
  // operation left to the worker then starts within two of those polls), returns to the base
  // interval as soon as it finds one left to it, and parks while nothing is queued for a whole
  // poll (the next Enqueue wakes it).
  constexpr int kMaxPollFactor = 16;
  const auto base = std::chrono::microseconds(std::max<int64_t>(1, kProgressPollKnob.GetInt()));
  auto poll = base;
  uint64_t seen = 0;         // ticket at the front of the queue at the previous poll
  uint64_t last_ticket = 0;  // the newest ticket at the previous poll
  while (true) {
    std::shared_ptr<WorkState> state;
    bool park = false;
    {
      std::lock_guard<SpinLock> lock(qlock_);
      const bool running = running_.load(std::memory_order_acquire);
      const bool stop = stop_.load(std::memory_order_relaxed);
      if (stop && queue_.empty() && !running) return;
      if (!running && !queue_.empty() && (stop || queue_.front()->ticket == seen)) {
        state = std::move(queue_.front());
        queue_.pop_front();
        running_.store(true, std::memory_order_relaxed);
      } else {
        seen = queue_.empty() ? 0 : queue_.front()->ticket;
        // Nothing queued since the previous poll and nothing waiting: park. Under qlock_, so an
        // Enqueue() either came before (and is seen here) or sees parked_ and wakes us.
        park = queue_.empty() && next_ticket_ == last_ticket;
        if (park) parked_.store(true, std::memory_order_seq_cst);
        last_ticket = next_ticket_;
      }
    }
    if (state) {
      Execute(state);
      running_.store(false, std::memory_order_release);
      poll = base;
      continue;
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (park) {
      // Bounded only so that a lost wake-up could never strand a queued operation for long.
      if (parked_.load(std::memory_order_seq_cst) && !stop_.load()) {
        cv_.wait_for(lock, std::chrono::seconds(1));
      }
      parked_.store(false, std::memory_order_relaxed);
      poll = base;
      continue;
    }
    if (!stop_.load()) cv_.wait_for(lock, poll);
    poll = std::min<std::chrono::microseconds>(poll * 2, base * kMaxPollFactor);
  }
}

void CommImpl::Abort() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) {
      error_ = AbortedError("communicator aborted by rank " + std::to_string(shared_->rank()));
    }
    has_error_.store(true, std::memory_order_release);
  }
  shared_->Fail(
      AbortedError("rank " + std::to_string(shared_->rank()) + " aborted its communicator"), -1);
}

}  // namespace weft::collectives::internal
