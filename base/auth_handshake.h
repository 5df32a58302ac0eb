// The mutual challenge-response that opens every weft TCP connection (store and transport), keyed
// by the per-job secret: neither side sends the secret, a stray or hostile client that does not
// know it is refused before it can send data, and the client learns it reached a real peer.
//
//   server -> client : "WEFT" v1 nonce_s[16]
//   client -> server : "WFTC" nonce_c[16] len[4] hello[len] HMAC(secret, "c"|nonce_s|nonce_c|hello)
//   server -> client : HMAC(secret, "s"|nonce_c|nonce_s|hello)
// `hello` is the client's self-description (e.g. its rank and socket index), at most 4 KiB.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "base/deadline.h"
#include "base/status.h"

namespace weft {

inline constexpr size_t kMaxHelloBytes = 4096;

// The server side as a state machine, for event loops that cannot block on one client:
//   state.Start() -> send state.greeting(); feed received bytes to Consume() until it returns
//   true, then send state.reply(); state.hello() is the client's hello.
class ServerHandshakeState {
 public:
  explicit ServerHandshakeState(std::string secret) : secret_(std::move(secret)) {}
  Status Start();
  const std::string& greeting() const { return greeting_; }
  // Takes what it needs from the front of `in`. False: more bytes needed. An error: refuse.
  Result<bool> Consume(std::string& in);
  const std::string& reply() const { return reply_; }
  const std::string& hello() const { return hello_; }

 private:
  std::string secret_;
  std::string greeting_;
  std::string reply_;
  std::string hello_;
};

// Runs the server side on a connected socket; on success *hello holds the client's hello.
// Unauthenticated for a wrong secret, InvalidArgument for malformed bytes, DeadlineExceeded.
Status ServerHandshake(int fd, std::string_view secret, Deadline deadline, std::string* hello);
// Runs the client side, sending `hello`.
Status ClientHandshake(int fd, std::string_view secret, std::string_view hello, Deadline deadline);

}  // namespace weft
