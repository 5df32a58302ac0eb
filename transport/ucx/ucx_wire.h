// What the UCX transport puts on the wire: the layout of the 64-bit UCP tags it uses and the
// headers of its control and authentication messages. Private to transport/ucx.
//
// Why a header at all: UCP matches tags per worker, not per endpoint, and a weft tag is a full
// 64-bit value, so (source rank, weft tag) does not fit in one UCP tag. Every weft message is
// therefore announced by a control message: a UCP active message carrying a CtrlHeader (source
// rank, weft tag, size, per-direction sequence number, per-pair token) as its AM header (id
// kCtrlAmId), or, for a small inline message sent on the immediate path, a ShortCtrlHeader at the
// start of its AM data (id kShortCtrlAmId: one contiguous block sends cheaper than header and
// data as an iov, and 24 bytes of header leave a 64-byte payload within UCP's short protocol
// over shared memory, where the 48 of a CtrlHeader pushed it to the slower bcopy one). Small
// messages travel inside the control message as (the rest of) its AM data (one UCP message; the receiver
// copies the payload from UCP's receive buffer straight into the matching receive, inside UCP's
// callback: no receive of ours is posted on the worker for it, none reposted, no tag searched).
// Larger ones follow as a separate UCP tag message on the tag kData|src|seq, which the receiver
// posts straight into the user's buffer once the header has matched a receive, so UCP's
// rendezvous moves them zero-copy. Matching (FIFO per peer and weft tag, exact sizes) is done by
// this transport on the headers; UCP only ever matches unique tags, so nothing depends on hashing
// or luck.
#pragma once

#include <cstdint>

namespace weft::transport::ucx {

// UCP tag: [63:62] kind, [61:42] source rank, [41:0] sequence number (data messages only). Kind 0
// is unused (control messages were tagged kind 0 before they became active messages).
enum class TagKind : uint64_t { kData = 1, kHello = 2, kProof = 3 };
// The UCP active-message ids of control messages: kCtrlAmId carries a CtrlHeader as its AM
// header; kShortCtrlAmId, for small inline messages, a ShortCtrlHeader at the start of its data.
inline constexpr unsigned kCtrlAmId = 0x57;
inline constexpr unsigned kShortCtrlAmId = 0x58;
inline constexpr int kRankBits = 20;
inline constexpr int kSeqBits = 42;
inline constexpr int kMaxWorldSize = 1 << kRankBits;
inline constexpr uint64_t kSeqMask = (uint64_t{1} << kSeqBits) - 1;
inline constexpr uint64_t kRankMask = ((uint64_t{1} << kRankBits) - 1) << kSeqBits;
inline constexpr uint64_t kFullMask = ~uint64_t{0};

inline constexpr uint64_t MakeTag(TagKind kind, int rank, uint64_t seq = 0) {
  return (static_cast<uint64_t>(kind) << 62) | (static_cast<uint64_t>(rank) << kSeqBits) |
         (seq & kSeqMask);
}
inline constexpr int TagRank(uint64_t ucp_tag) {
  return static_cast<int>((ucp_tag & kRankMask) >> kSeqBits);
}

// Announces one weft message: the AM header of a control message, or the start of its AM data;
// for kInline messages the payload is the (rest of the) AM data. Little-endian, like every weft
// wire format.
struct CtrlHeader {
  uint32_t magic;  // kCtrlMagic
  uint32_t flags;  // kInline, kBye
  uint64_t token;  // per-pair, per-direction secret from the handshake: forged headers are dropped
  uint64_t seq;    // numbers the messages of one direction of one pair from 0
  uint64_t tag;    // the weft tag
  uint64_t size;   // payload bytes
  uint32_t src;    // the sender's rank (an active message does not name its endpoint)
  uint32_t reserved;
};
static_assert(sizeof(CtrlHeader) == 48, "CtrlHeader is a wire format");

// The header of a small inline message (id kShortCtrlAmId): magic and flags implied (kInline),
// size from the message's length, and the sequence number's low 32 bits, which the receiver
// widens against the one it expects next (WidenSeq).
struct ShortCtrlHeader {
  uint64_t token;
  uint64_t tag;
  uint32_t src;
  uint32_t seq32;
};
static_assert(sizeof(ShortCtrlHeader) == 24, "ShortCtrlHeader is a wire format");

// The full sequence number nearest `expected` whose low 32 bits are `seq32` (messages of one
// direction never overtake each other by 2^31).
inline constexpr uint64_t WidenSeq(uint64_t expected, uint32_t seq32) {
  return expected + static_cast<uint64_t>(static_cast<int64_t>(
                        static_cast<int32_t>(seq32 - static_cast<uint32_t>(expected))));
}
inline constexpr uint32_t kCtrlMagic = 0x32435557;  // "WUC2"
inline constexpr uint32_t kInline = 1;
// The sender's transport is shutting down: it sends nothing after this (size 0, tag 0). Ordered
// with its other control messages by seq, so everything it sent before has been announced.
inline constexpr uint32_t kBye = 2;

// First message of each direction of a pair (tag kHello|src), then the proof (tag kProof|src):
//   proof(S -> R) = HMAC-SHA256(secret, "weft-ucx/1 proof|" job "|" S "|" R "|" nonce_S nonce_R)
// Fresh nonces on both sides make a recorded proof useless for a later connection.
struct HelloMsg {
  char magic[8];  // "weftucx1"
  uint32_t rank;
  uint32_t world_size;
  uint8_t job_hash[32];  // SHA-256 of the job id: a peer from another job is named as such
  uint8_t nonce[32];
};
static_assert(sizeof(HelloMsg) == 80, "HelloMsg is a wire format");

struct ProofMsg {
  uint8_t mac[32];
};

}  // namespace weft::transport::ucx
