#include "base/auth_handshake.h"

#include <cstdint>
#include <cstring>

#include "base/hmac.h"
#include "base/socket_util.h"

namespace weft {
namespace {

constexpr char kServerMagic[4] = {'W', 'E', 'F', 'T'};
constexpr char kClientMagic[4] = {'W', 'F', 'T', 'C'};
constexpr uint8_t kVersion = 1;
constexpr size_t kNonce = 16;

std::string Transcript(char role, const uint8_t* n1, const uint8_t* n2, std::string_view hello) {
  std::string t(1, role);
  t.append(reinterpret_cast<const char*>(n1), kNonce);
  t.append(reinterpret_cast<const char*>(n2), kNonce);
  t.append(hello);
  return t;
}

}  // namespace

Status ServerHandshakeState::Start() {
  greeting_.assign(4 + 1 + kNonce, '\0');
  std::memcpy(greeting_.data(), kServerMagic, 4);
  greeting_[4] = static_cast<char>(kVersion);
  return RandomBytes(greeting_.data() + 5, kNonce);
}

Result<bool> ServerHandshakeState::Consume(std::string& in) {
  constexpr size_t kHead = 4 + kNonce + 4;
  if (in.size() >= 4 && std::memcmp(in.data(), kClientMagic, 4) != 0) {
    return InvalidArgumentError("peer did not speak the weft handshake (bad magic)");
  }
  if (in.size() < kHead) return false;
  uint32_t len;
  std::memcpy(&len, in.data() + 4 + kNonce, 4);
  if (len > kMaxHelloBytes) {
    return InvalidArgumentError("handshake hello of " + std::to_string(len) + " bytes is too long");
  }
  if (in.size() < kHead + len + 32) return false;
  const uint8_t* nonce_s = reinterpret_cast<const uint8_t*>(greeting_.data() + 5);
  const uint8_t* nonce_c = reinterpret_cast<const uint8_t*>(in.data() + 4);
  std::string_view h(in.data() + kHead, len);
  Digest256 want = HmacSha256(secret_, Transcript('c', nonce_s, nonce_c, h));
  if (!ConstantTimeEqual(want.data(), in.data() + kHead + len, 32)) {
    return UnauthenticatedError("peer failed authentication (wrong job secret)");
  }
  Digest256 reply = HmacSha256(secret_, Transcript('s', nonce_c, nonce_s, h));
  reply_.assign(reinterpret_cast<const char*>(reply.data()), reply.size());
  hello_.assign(h);
  in.erase(0, kHead + len + 32);
  return true;
}

Status ServerHandshake(int fd, std::string_view secret, Deadline deadline, std::string* hello) {
  ServerHandshakeState state{std::string(secret)};
  WEFT_RETURN_IF_ERROR(state.Start());
  WEFT_RETURN_IF_ERROR(WriteFull(fd, state.greeting().data(), state.greeting().size(), deadline));
  std::string in;
  while (true) {
    WEFT_ASSIGN_OR_RETURN(bool done, state.Consume(in));
    if (done) break;
    char buf[512];
    // Read only what the handshake can still need, so no bytes after it are swallowed.
    size_t want = in.size() < 24 ? 24 - in.size() : 1;
    if (in.size() >= 24) {
      uint32_t len;
      std::memcpy(&len, in.data() + 20, 4);
      want = 24 + len + 32 - in.size();
    }
    if (want > sizeof(buf)) want = sizeof(buf);
    WEFT_RETURN_IF_ERROR(ReadFull(fd, buf, want, deadline));
    in.append(buf, want);
  }
  WEFT_RETURN_IF_ERROR(WriteFull(fd, state.reply().data(), state.reply().size(), deadline));
  *hello = state.hello();
  return Status::Ok();
}

Status ClientHandshake(int fd, std::string_view secret, std::string_view hello, Deadline deadline) {
  if (hello.size() > kMaxHelloBytes) return InvalidArgumentError("handshake hello too long");
  uint8_t greet[4 + 1 + kNonce];
  WEFT_RETURN_IF_ERROR(ReadFull(fd, greet, sizeof(greet), deadline));
  if (std::memcmp(greet, kServerMagic, 4) != 0 || greet[4] != kVersion) {
    return InvalidArgumentError("the server is not a weft endpoint of this version");
  }
  const uint8_t* nonce_s = greet + 5;
  std::string msg(4 + kNonce + 4, '\0');
  std::memcpy(msg.data(), kClientMagic, 4);
  uint8_t nonce_c[kNonce];
  WEFT_RETURN_IF_ERROR(RandomBytes(nonce_c, kNonce));
  std::memcpy(msg.data() + 4, nonce_c, kNonce);
  uint32_t len = static_cast<uint32_t>(hello.size());
  std::memcpy(msg.data() + 4 + kNonce, &len, 4);
  msg.append(hello);
  Digest256 mac = HmacSha256(secret, Transcript('c', nonce_s, nonce_c, hello));
  msg.append(reinterpret_cast<const char*>(mac.data()), mac.size());
  WEFT_RETURN_IF_ERROR(WriteFull(fd, msg.data(), msg.size(), deadline));
  uint8_t reply[32];
  Status s = ReadFull(fd, reply, sizeof(reply), deadline);
  if (!s.ok()) {
    if (s.code() == StatusCode::kUnavailable) {
      return UnauthenticatedError("the server closed the connection during authentication "
                                  "(wrong job secret?)");
    }
    return s;
  }
  Digest256 want = HmacSha256(secret, Transcript('s', nonce_c, nonce_s, hello));
  if (!ConstantTimeEqual(want.data(), reply, 32)) {
    return UnauthenticatedError("the server failed authentication (wrong job secret)");
  }
  return Status::Ok();
}

}  // namespace weft
