// Per-process collective metrics: latency histograms by operation, algorithm and transport, bytes
// sent by transport and peer class, and errors by operation and status code, kept in fixed arrays
// of relaxed atomics and rendered as Prometheus text. Sits in collectives/: communicators record
// into it; with WEFT_METRICS_PORT set, every rank serves it on /metrics (base/http_metrics_server).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "base/status.h"

namespace weft::collectives::metrics {

// One registry per process, shared by every communicator in it (a process is normally one rank;
// tests that run ranks as threads see their sum). The rank and world_size labels on every sample
// are those of the first root communicator created in the process.
//
// Recording is off until Enable() (or WEFT_METRICS_PORT); while off, each place that records costs
// one predictable branch on a relaxed load. While on, recording is relaxed atomic adds into
// arrays indexed by small enums computed when an operation is issued: no allocation, no lock,
// no string work. Thread-safe throughout.
//
// What is recorded (docs in README.md, "Rank metrics"):
//   weft_collective_latency_seconds{op,algorithm,transport}: wall time of each operation that
//     succeeded, from when it starts running on this rank (after any earlier operation of its
//     communicator) to its completion. transport: the transport joining all of the
//     communicator's peers ("shm", "tcp", ...; a send/recv: the peer's), "arena" for algorithms
//     that move data through the intra-host shared-memory arena, "mixed" when several carry it
//     (hierarchical algorithms, peers over different transports), "self" for one rank.
//   weft_transport_sent_bytes_total{transport,peer_class}: payload bytes this rank posted to a
//     transport endpoint (collectives' messages and user sends), or wrote into an arena for its
//     peers to read (transport "arena"); peer_class same_host or remote, from host identity.
//   weft_collective_errors_total{op,code}: operations that returned an error, by canonical code
//     (DEADLINE_EXCEEDED, UNAVAILABLE, ABORTED, ...), including those refused because their
//     communicator had failed earlier.

enum class Op : uint8_t {
  kAllReduce,
  kReduce,
  kBroadcast,
  kAllGather,
  kReduceScatter,
  kAllToAll,
  kGather,
  kScatter,
  kBarrier,
  kSend,
  kRecv,
  kGroup,
};
inline constexpr int kNumOps = 12;
inline constexpr const char* kOpNames[kNumOps] = {
    "allreduce", "reduce",  "broadcast", "allgather", "reducescatter", "alltoall",
    "gather",    "scatter", "barrier",   "send",      "recv",          "group"};

// The algorithm label. kUnspecified: an operation issued without one (rendered "unspecified").
enum class Algo : uint8_t {
  kUnspecified,
  kRing,
  kRecursiveDoubling,
  kShmDirect,
  kShmChunked,
  kHierarchical,
  kBinomial,
  kShm,
  kDissemination,
  kPairwise,
  kLinear,
  kDirect,
  kGroup,
  kRabenseifner,
};
inline constexpr int kNumAlgos = 14;
inline constexpr const char* kAlgoNames[kNumAlgos] = {
    "unspecified", "ring", "recursive_doubling", "shm_direct", "shm_chunked", "hierarchical",
    "binomial",    "shm",  "dissemination",      "pairwise",   "linear",      "direct",
    "group",       "rabenseifner"};

namespace internal {
consteval bool SameText(const char* a, const char* b) {
  while (*a && *a == *b) ++a, ++b;
  return *a == *b;
}
}  // namespace internal

// The operation of a name, resolved at compile time: an unknown name does not compile.
consteval Op OpNamed(const char* name) {
  for (int i = 0; i < kNumOps; ++i) {
    if (internal::SameText(kOpNames[i], name)) return static_cast<Op>(i);
  }
  throw "unknown operation name: add it to metrics::Op and kOpNames";
}

// An operation's name (a string literal, kept for messages) with its Op, so that issuing an
// operation carries its metrics index at no run-time cost: `Issue("allreduce", ...)`.
struct OpName {
  consteval OpName(const char* name) : text(name), op(OpNamed(name)) {}  // NOLINT: implicit
  const char* text;
  Op op;
};

// Transport labels: fixed ones, then each transport's name as first seen (at most
// kMaxTransportLabels in all; further names share "mixed").
inline constexpr int kMaxTransportLabels = 8;
inline constexpr uint8_t kTransportSelf = 0;
inline constexpr uint8_t kTransportArena = 1;
inline constexpr uint8_t kTransportMixed = 2;
// The label index of a transport name ("shm", "tcp", "self", "arena", "mixed", ...). Takes a lock:
// for set-up (communicator creation), never per operation.
uint8_t TransportLabel(const std::string& name);

enum class PeerClass : uint8_t { kSameHost = 0, kRemote = 1 };
// Index of a bytes counter (transport label x peer class), precomputed per peer at set-up.
inline constexpr uint8_t SentCounter(uint8_t transport, PeerClass c) {
  return static_cast<uint8_t>(transport * 2 + static_cast<uint8_t>(c));
}

namespace internal {
extern std::atomic<bool> g_enabled;
extern std::atomic<uint64_t> g_sent_bytes[kMaxTransportLabels * 2];
}  // namespace internal

// Whether recording is on: the one branch the hot paths take while it is off.
inline bool Enabled() { return internal::g_enabled.load(std::memory_order_relaxed); }
// Turns recording on or off for the process (off by default; WEFT_METRICS_PORT turns it on).
void SetEnabled(bool on);

// Recording (call only when Enabled()).
inline void AddSentBytes(uint8_t counter, uint64_t bytes) {
  internal::g_sent_bytes[counter].fetch_add(bytes, std::memory_order_relaxed);
}
void ObserveLatency(Op op, Algo algo, uint8_t transport, int64_t nanoseconds);
void CountError(Op op, StatusCode code);

// The rank and world_size labels (first call wins; Communicator::Create calls it).
void SetJobLabels(int rank, int world_size);

// The registry as Prometheus text exposition (format 0.0.4). Series never recorded are left out.
std::string RenderText();

// Read-backs, for tests and tools: totals since the process started.
uint64_t LatencyCount(Op op, Algo algo, const std::string& transport);
double LatencySumSeconds(Op op, Algo algo, const std::string& transport);
uint64_t SentBytes(const std::string& transport, PeerClass peer_class);
uint64_t Errors(Op op, StatusCode code);

// Called by Communicator::Create for every root communicator; acts once per process. With
// WEFT_METRICS_PORT set, turns recording on and serves /metrics on WEFT_METRICS_HOST at
// WEFT_METRICS_PORT + local_rank (port 0: an ephemeral port, logged) for the life of the process.
// A server that cannot start is logged (WARN) and recording stays on; it never fails the caller.
void StartFromEnvironment(int rank, int world_size, int local_rank);
// The port /metrics is served on, 0 if none.
int ServerPort();

}  // namespace weft::collectives::metrics
