// TcpPeer: everything the TCP transport keeps about one peer rank once connected — its sockets,
// the send queue striped over them in chunks, and the receive side that reassembles chunks and
// matches messages to posted receives. Private to transport/tcp; the transport owns the peers and
// its progress thread drives them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/socket_util.h"
#include "transport/tcp/tcp_request.h"
#include "transport/transport.h"

namespace weft::transport::tcp {

// Wire format of a data socket, after the handshake. Every message is cut into chunks of at most
// the sender's chunk size (a zero-byte message is one empty chunk); each chunk is this header
// followed by `length` payload bytes. Chunks of one message may travel on different sockets of
// the pair, in any order; `seq` numbers the messages of one direction of one pair from 0.
// Little-endian (the only byte order weft runs on; checked at compile time).
struct ChunkHeader {
  uint32_t magic;   // kChunkMagic: catches a stream that lost its framing
  uint32_t length;  // payload bytes of this chunk
  uint64_t seq;
  uint64_t tag;
  uint64_t total;   // bytes of the whole message
  uint64_t offset;  // where this chunk's payload starts within the message
};
static_assert(sizeof(ChunkHeader) == 40, "ChunkHeader is a wire format");
inline constexpr uint32_t kChunkMagic = 0x4b435457;  // "WTCK"

// The epoll registrations of the transport share this prefix so one event loop can dispatch on it.
struct PollTarget {
  enum class Kind { kWake, kListener, kHandshake, kSocket };
  explicit PollTarget(Kind k) : kind(k) {}
  const Kind kind;
};

// Which TCP congestion control a peer's sockets get. Traffic that stays on this machine has no
// congestion to control, and a model-based algorithm's pacing throttles it: with bbr (this
// machine's default) a 2-rank exchange of 512 KiB each way over loopback ran at ~100 or ~200 us
// depending on the run, against a steady ~100 us with cubic (see the README's TCP notes).
struct CongestionPolicy {
  std::string algorithm;         // empty: leave the system default
  bool this_host_only = false;   // only for peers on this host (loopback address or same host id)
};
// "auto" (cubic for peers on this host), "system" (never set) or an algorithm for every socket,
// which must be one this kernel has and lets this process use. InvalidArgument naming
// WEFT_TCP_CONGESTION and the available algorithms otherwise.
Result<CongestionPolicy> ParseCongestionPolicy(const std::string& value);

class TcpPeer;
struct InMessage;
struct SendOp;

// The progress thread, as the peers see it: Schedule() asks it to service a peer soon (new sends
// that the posting thread did not finish writing). Thread-safe.
class PeerScheduler {
 public:
  virtual ~PeerScheduler() = default;
  virtual void Schedule(TcpPeer* peer) = 0;
  // `peer` stopped listening for incoming data (its waiters poll it): the thread must give it
  // back its read events once nobody has spun on it for a while (TcpPeer::RearmIfQuiet).
  virtual void Unarmed(TcpPeer* peer) = 0;
};

// One TCP connection of a pair. Lives as long as its TcpPeer, which lives as long as the
// transport: epoll events carry its address, so it is never freed while the loop runs. All fields
// are guarded by the peer's mutex.
struct PeerSocket : PollTarget {
  PeerSocket(TcpPeer* p, int i) : PollTarget(Kind::kSocket), peer(p), index(i) {}

  TcpPeer* const peer;
  const int index;
  UniqueFd fd;
  bool eof = false;       // the peer closed it cleanly between chunks
  bool readable = false;  // epoll said so and recv() has not yet hit EAGAIN
  bool writable = true;   // false from an EAGAIN until epoll reports EPOLLOUT
  // Receive side: bytes read ahead of the current position (headers and small payloads arrive in
  // batches), then the chunk being read.
  std::unique_ptr<char[]> staging;
  size_t staged_begin = 0;
  size_t staged_end = 0;
  ChunkHeader header{};
  bool in_payload = false;
  InMessage* msg = nullptr;
  uint64_t pos = 0;   // offset within the message of the next payload byte
  uint64_t left = 0;  // payload bytes of the current chunk still to read
  // A receive reduced as it lands (InMessage::reduce): large payload runs are read into `bounce`
  // and reduced from there; `carry` holds the first bytes of an element that a recv() cut off.
  std::unique_ptr<char[]> bounce;
  alignas(16) char carry[16] = {};
  size_t carry_len = 0;
  // Send side: the chunk this socket is writing, if any.
  std::shared_ptr<SendOp> out_op;
  ChunkHeader out_header{};
  size_t out_written = 0;  // of header + payload
};

// What a receive reduced as it lands (PostRecvReduce) reduces with: acc = in op message.
struct ReduceSpec {
  const char* in = nullptr;
  DType dtype = DType::kFloat32;
  ReduceOp op = ReduceOp::kSum;
};

// A message from the peer whose first chunk header has arrived. Owned by TcpPeer::messages_.
struct InMessage {
  enum class State {
    kStaged,      // a lower seq has not shown up yet, so it cannot be matched
    kUnexpected,  // matchable, no receive posted yet; data lands in `heap`
    kMatched,     // data lands in the receive's buffer
    kDropped,     // its receive failed (size mismatch); the rest is read and thrown away
  };
  uint64_t seq = 0;
  uint64_t tag = 0;
  uint64_t total = 0;
  uint64_t received = 0;    // payload bytes that arrived
  uint64_t high_water = 0;  // bytes at or above this offset were never written
  State state = State::kStaged;
  std::unique_ptr<char[]> heap;
  char* dest = nullptr;  // heap.get(), the receive's buffer, or null (dropped / empty)
  std::shared_ptr<TcpRequest> recv;
  // Matched to PostRecvReduce: `dest` is the accumulator; each payload byte range is reduced
  // into it with `spec` as it is read (fused), or, when some of the message had already arrived in
  // `heap` before the receive was posted (reduce_at_finish), the whole of it once complete.
  bool reduce = false;
  bool reduce_at_finish = false;
  ReduceSpec spec;
  char* acc = nullptr;  // reduce_at_finish: where the result goes
  bool complete() const { return received == total; }
};

// A posted send. Shared by the send queue and the sockets writing its chunks.
struct SendOp {
  std::shared_ptr<TcpRequest> req;
  const char* data = nullptr;
  uint64_t size = 0;
  uint64_t seq = 0;
  uint64_t tag = 0;
  uint64_t assigned = 0;  // bytes handed to sockets as chunks
  bool fully_assigned = false;
  int chunks_in_flight = 0;  // assigned chunks not yet fully written
};

// Contract: created by the transport's Connect() for one peer rank; sockets are attached as they
// connect; the Endpoint for the peer forwards to PostSend/PostRecv/Abort. Thread-safe (one mutex;
// the progress thread, or a spinning waiter, holds it while it moves a bounded amount of data).
// Where this host's ranks fit its cores, a waiter spinning on the peer puts it in poll mode
// (armed_): the waiter reads the sockets itself and the progress thread is not woken for them.
// Errors: InvalidArgument for bad arguments and size mismatches; once the connection is lost,
// Unavailable naming the rank, "tcp" and the address; after Abort, the abort status. Outlives every
// epoll event that names it.
class TcpPeer final : public ProgressSource, public std::enable_shared_from_this<TcpPeer> {
 public:
  struct Options {
    int self_rank = 0;
    int rank = 0;
    std::string address;  // the peer's listen address, for messages
    int num_sockets = 1;
    size_t chunk_bytes = 512 << 10;
    int64_t socket_buffer_bytes = 0;
    CongestionPolicy congestion;
    // The peer published this host's host id: its sockets stay on this machine whatever
    // address they use.
    bool same_host = false;
    int epoll_fd = -1;
    PeerScheduler* scheduler = nullptr;
    // This host's ranks fit its cores: a spinning waiter may poll without yielding at first.
    bool spin_tight = false;
    // Poll mode: while waiters spin on the peer they read its sockets themselves and the
    // progress thread is not woken for its data (see armed_).
    bool poll_mode = false;
    // How long a request's Wait() spins before it sleeps (TcpRequest::WaitSpinUs).
    int64_t wait_spin_us = 50;
  };
  explicit TcpPeer(Options options);
  ~TcpPeer() override;
  TcpPeer(const TcpPeer&) = delete;
  TcpPeer& operator=(const TcpPeer&) = delete;

  int rank() const { return opt_.rank; }
  int num_sockets() const { return opt_.num_sockets; }
  bool same_host() const { return opt_.same_host; }
  // "rank 3 (tcp 127.0.0.1:4711)"
  const std::string& name() const { return name_; }

  Result<RequestPtr> PostSend(const void* data, size_t size, uint64_t tag);
  Result<RequestPtr> PostRecv(void* data, size_t size, uint64_t tag);
  // Endpoint::PostRecvReduce. InvalidArgument for a size that is not whole elements, a bad
  // dtype or op, or null buffers.
  Result<RequestPtr> PostRecvReduce(void* acc, const void* in, size_t size, uint64_t tag,
                                    DType dtype, ReduceOp op);
  // Fails every pending request with `why`, closes the sockets and refuses new requests.
  void Abort(const Status& why);

  // Takes socket `index` (connected and authenticated) and registers it with epoll.
  // FailedPrecondition if that slot is taken or the peer already failed.
  Status AttachSocket(int index, UniqueFd fd);
  bool SocketAttached(int index);

  // Progress thread only. MarkReady records what epoll reported for `socket`; Service moves data
  // until sockets block or the budget is used up and returns true when it should run again soon.
  void MarkReady(PeerSocket* socket, uint32_t epoll_events);
  bool Service();
  // Any thread (a spinning Wait()): moves ready data if nobody else holds the peer.
  void PollOnce() override;
  void BeginSpin() override;
  void EndSpin(bool completed) override;
  void EndSleep() override {
    if (opt_.poll_mode) sleepers_.fetch_sub(1, std::memory_order_seq_cst);
  }
  bool SpinTight() const override { return opt_.spin_tight; }
  // Progress thread, for a peer it was told is Unarmed(): listens for its incoming data again
  // if nobody spins on it and someone sleeps or nobody has spun for `quiet`; true when it did
  // (or the peer is armed anyway), false to ask again later.
  bool RearmIfQuiet(Clock::time_point now, std::chrono::nanoseconds quiet);
  // Progress-thread bookkeeping, touched only by that thread.
  bool active = false;
  // Guarded by the scheduler's own lock.
  bool kick_pending = false;
  bool unarmed_listed = false;

 private:
  // Adds or removes EPOLLIN from every socket's registration; SetArmed takes mu_.
  void SetArmed(bool on);
  void SetArmedLocked(bool on);
  // Records a pending receive; one of kPollModeMaxBytes or more arms the sockets until it is done.
  void KeepArmedFor(const std::shared_ptr<TcpRequest>& recv);
  // The epoll events a socket is registered for, given armed_ and want_write_.
  uint32_t EpollEvents() const;
  // Registers every socket for EpollEvents() again.
  void UpdateEpollLocked();
  // Asks for EPOLLOUT exactly while sends wait for room (want_write_); PumpSends calls it.
  void WantWriteLocked();

  // All below run with mu_ held.
  // How long a Wait() on a receive of `size` bytes spins (kStreamQuiet in tcp_peer.cc).
  int64_t RecvSpinUsLocked(size_t size) const;
  // Reads every readable socket (all of them if `all`) and writes queued chunks; true when the
  // budget ran out with work left.
  bool ServiceLocked(bool all);
  // Writes queued chunks (WriteChunks), then registers EPOLLOUT exactly while a send still waits
  // for room (WantWriteLocked); true when the budget ran out with sockets still writable.
  bool PumpSends(size_t budget);
  bool WriteChunks(size_t budget);
  bool TakeChunk(PeerSocket& s);
  void ChunkWritten(PeerSocket& s);
  // True when it stopped for the budget with data possibly left.
  bool ReadSocket(PeerSocket& s, size_t budget);
  Status BeginChunk(PeerSocket& s);
  void Deliver(PeerSocket& s, const char* src, size_t n);
  // Deliver for a fused reduce: reduces the whole elements of src (message offset s.pos) into
  // the accumulator, keeping a cut-off element's bytes in s.carry.
  void ReduceLand(PeerSocket& s, const char* src, size_t n);
  void Advance(PeerSocket& s, size_t n);
  void AdvanceMatching();
  // `reduce` null: a plain receive into data.
  void Attach(InMessage* m, std::shared_ptr<TcpRequest> req, char* data, size_t size,
              const ReduceSpec* reduce);
  Result<RequestPtr> Post(void* data, size_t size, uint64_t tag, const ReduceSpec* reduce);
  void Finish(InMessage* m);
  void SocketClosedCleanly(PeerSocket& s);
  void CloseSocket(PeerSocket& s);
  // Fails every pending request with `why`; `keep_arrived` keeps fully arrived, unmatched
  // messages receivable (a peer that sent its last message and left is not an error for it).
  void Fail(const Status& why, bool keep_arrived);
  Status Lost(const std::string& why) const;

  struct PostedRecv {
    std::shared_ptr<TcpRequest> req;
    char* data;
    size_t size;
    std::optional<ReduceSpec> reduce;
  };

  const Options opt_;
  const std::string name_;
  std::mutex mu_;
  std::vector<std::unique_ptr<PeerSocket>> sockets_;
  int open_sockets_ = 0;
  uint64_t polls_ = 0;  // waiters' polls (ServiceLocked with all), for the spare sockets' turn
  // Poll mode. While waiters spin on this peer they read its sockets themselves, and a wake-up of
  // the progress thread for the same data would only compete with them for the lock and the
  // core; so the sockets are registered without EPOLLIN (still EPOLLRDHUP and errors)
  // until nobody spins and someone sleeps, or nobody has spun for a while.
  // Receives of at least kPollModeMaxBytes keep the sockets armed while any is pending (pruned
  // lazily): their data should stream in on the thread while the caller waits on something
  // else, as a pipelined or ring algorithm does. Guarded by mu_, as is armed_.
  std::vector<std::shared_ptr<TcpRequest>> large_recvs_;
  bool armed_ = true;
  // EPOLLOUT is registered only while sends wait for room in a socket: registered all the time,
  // the edge-triggered event woke the progress thread for messages it had no part in (2 ranks,
  // 8 B all-reduce: 16k-96k context switches and p99 63-90 us in 6 runs of 8, against 34-53 us
  // with this). Guarded by mu_.
  bool want_write_ = false;
  std::atomic<int> spinners_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<int64_t> last_spin_end_ns_{0};  // Clock time, since its epoch
  int64_t last_send_ns_ = 0;  // Clock time a send of kPollModeMaxBytes or more was last posted; mu_
  Status error_;                              // sticky: set when the connection is lost or aborted
  bool aborted_ = false;                      // Abort(): refuse even messages that had arrived
  // Send side.
  uint64_t next_send_seq_ = 0;
  std::deque<std::shared_ptr<SendOp>> send_queue_;  // ops with chunks still to assign
  // Receive side.
  uint64_t next_match_seq_ = 0;  // lowest seq not yet matched or queued as unexpected
  std::map<uint64_t, std::unique_ptr<InMessage>> messages_;
  std::unordered_map<uint64_t, std::deque<InMessage*>> unexpected_;  // per tag, in seq order
  std::unordered_map<uint64_t, std::deque<PostedRecv>> posted_;      // per tag, in post order
};

// The Endpoint handed to the caller: a thin handle on a TcpPeer owned by the transport.
// Destroying it aborts the peer (pending requests fail with Cancelled; the sockets close).
class TcpEndpoint final : public Endpoint {
 public:
  explicit TcpEndpoint(TcpPeer* peer) : peer_(peer) {}
  ~TcpEndpoint() override;
  int peer() const override { return peer_->rank(); }
  Result<RequestPtr> PostSend(const void* data, size_t size, uint64_t tag) override {
    return peer_->PostSend(data, size, tag);
  }
  Result<RequestPtr> PostRecv(void* data, size_t size, uint64_t tag) override {
    return peer_->PostRecv(data, size, tag);
  }
  bool CanRecvReduce() const override { return true; }
  Result<RequestPtr> PostRecvReduce(void* acc, const void* in, size_t size, uint64_t tag,
                                    DType dtype, ReduceOp op) override {
    return peer_->PostRecvReduce(acc, in, size, tag, dtype, op);
  }
  void Abort(const Status& why) override { peer_->Abort(why); }

 private:
  TcpPeer* const peer_;
};

}  // namespace weft::transport::tcp
