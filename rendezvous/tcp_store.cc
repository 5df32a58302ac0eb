#include "rendezvous/tcp_store.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <list>
#include <map>

#include "base/auth_handshake.h"
#include "base/env.h"
#include "base/logging.h"
#include "base/thread_name.h"

namespace weft::rendezvous {
namespace {

WEFT_ENV_KNOB(kStoreRequestTimeout, "WEFT_STORE_REQUEST_TIMEOUT_MS", "30000",
              "deadline for one non-waiting request to the TCP store");

enum Op : uint8_t { kSet = 1, kGet = 2, kAdd = 3, kCheck = 4, kDelete = 5 };
enum Reply : uint8_t { kOk = 0, kMissing = 1, kBad = 2 };
constexpr uint32_t kMaxFrame = 256u << 20;

void PutU32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void PutI64(std::string& s, int64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }
void PutStr(std::string& s, std::string_view v) {
  PutU32(s, static_cast<uint32_t>(v.size()));
  s.append(v);
}

// Reads from a frame body; every getter fails cleanly on truncated input.
struct Reader {
  std::string_view in;
  bool U32(uint32_t* v) {
    if (in.size() < 4) return false;
    std::memcpy(v, in.data(), 4);
    in.remove_prefix(4);
    return true;
  }
  bool I64(int64_t* v) {
    if (in.size() < 8) return false;
    std::memcpy(v, in.data(), 8);
    in.remove_prefix(8);
    return true;
  }
  bool Str(std::string* v) {
    uint32_t n;
    if (!U32(&n) || in.size() < n) return false;
    v->assign(in.data(), n);
    in.remove_prefix(n);
    return true;
  }
};

std::string Frame(uint8_t op, const std::string& body) {
  std::string f;
  PutU32(f, static_cast<uint32_t>(body.size() + 1));
  f.push_back(static_cast<char>(op));
  f.append(body);
  return f;
}

}  // namespace

struct TcpStoreServer::Impl {
  struct Conn {
    UniqueFd fd;
    ServerHandshakeState hs;
    bool authed = false;
    std::string in;
    std::string out;
    bool waiting = false;  // a GET is parked
    std::string wait_key;
    Clock::time_point wait_until;
    bool closing = false;
    explicit Conn(UniqueFd f, std::string secret) : fd(std::move(f)), hs(std::move(secret)) {}
  };

  std::string secret;
  UniqueFd listen_fd;
  UniqueFd wake_fd;
  std::atomic<bool> stop{false};
  std::atomic<int> refused{0};
  std::list<Conn> conns;
  std::map<std::string, std::string, std::less<>> data;

  void Reply(Conn& c, uint8_t status, std::string_view payload) {
    PutU32(c.out, static_cast<uint32_t>(payload.size() + 1));
    c.out.push_back(static_cast<char>(status));
    c.out.append(payload);
  }

  void WakeWaiters(std::string_view key) {
    auto it = data.find(key);
    if (it == data.end()) return;
    for (auto& c : conns) {
      if (c.waiting && c.wait_key == key) {
        c.waiting = false;
        Reply(c, kOk, it->second);
      }
    }
  }

  // Handles one complete frame; false closes the connection (malformed request).
  bool Handle(Conn& c, std::string_view body) {
    if (body.empty()) return false;
    uint8_t op = static_cast<uint8_t>(body[0]);
    Reader r{body.substr(1)};
    std::string key;
    if (!r.Str(&key)) return false;
    switch (op) {
      case kSet: {
        std::string value;
        if (!r.Str(&value)) return false;
        data[key] = std::move(value);
        Reply(c, kOk, "");
        WakeWaiters(key);
        return true;
      }
      case kGet: {
        int64_t wait_ms;
        if (!r.I64(&wait_ms)) return false;
        auto it = data.find(key);
        if (it != data.end()) {
          Reply(c, kOk, it->second);
        } else if (wait_ms <= 0) {
          Reply(c, kMissing, "");
        } else {
          c.waiting = true;
          c.wait_key = key;
          c.wait_until = Clock::now() + std::chrono::milliseconds(wait_ms);
        }
        return true;
      }
      case kAdd: {
        int64_t delta;
        if (!r.I64(&delta)) return false;
        int64_t v = 0;
        auto it = data.find(key);
        if (it != data.end()) {
          int64_t old;
          if (!ParseInt(it->second, &old)) {
            Reply(c, kBad, "value under '" + key + "' is not an integer");
            return true;
          }
          v = old;
        }
        v += delta;
        data[key] = std::to_string(v);
        std::string payload;
        PutI64(payload, v);
        Reply(c, kOk, payload);
        WakeWaiters(key);
        return true;
      }
      case kCheck:
        Reply(c, kOk, data.count(key) ? "1" : "0");
        return true;
      case kDelete:
        data.erase(key);
        Reply(c, kOk, "");
        return true;
      default:
        return false;
    }
  }

  // Parses what arrived; false when the connection must close.
  bool Process(Conn& c) {
    if (!c.authed) {
      auto done = c.hs.Consume(c.in);
      if (!done.ok()) {
        WEFT_LOG(WARN) << "store: refused a connection: " << done.status().message();
        refused++;
        return false;
      }
      if (!*done) return true;
      c.authed = true;
      c.out += c.hs.reply();
    }
    while (!c.waiting && c.in.size() >= 4) {
      uint32_t len;
      std::memcpy(&len, c.in.data(), 4);
      if (len == 0 || len > kMaxFrame) {
        WEFT_LOG(WARN) << "store: refused a connection: frame of " << len << " bytes";
        refused++;
        return false;
      }
      if (c.in.size() < 4 + len) break;
      if (!Handle(c, std::string_view(c.in).substr(4, len))) {
        WEFT_LOG(WARN) << "store: refused a connection: malformed request";
        refused++;
        return false;
      }
      c.in.erase(0, 4 + len);
    }
    return true;
  }

  void Run() {
    std::vector<pollfd> fds;
    std::vector<Conn*> order;
    char buf[65536];
    while (!stop.load()) {
      fds.clear();
      order.clear();
      fds.push_back({wake_fd.get(), POLLIN, 0});
      fds.push_back({listen_fd.get(), POLLIN, 0});
      int timeout = 1000;
      auto now = Clock::now();
      for (auto& c : conns) {
        short ev = POLLIN;
        if (!c.out.empty()) ev |= POLLOUT;
        fds.push_back({c.fd.get(), ev, 0});
        order.push_back(&c);
        if (c.waiting) {
          auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(c.wait_until - now).count();
          timeout = std::max<int>(0, std::min<int>(timeout, static_cast<int>(ms) + 1));
        }
      }
      int n = poll(fds.data(), fds.size(), timeout);
      if (n < 0 && errno != EINTR) {
        WEFT_LOG(ERROR) << "store: poll failed: " << std::strerror(errno);
        return;
      }
      if (fds[1].revents & POLLIN) {
        while (true) {
          auto fd = AcceptTcp(listen_fd.get());
          if (!fd.ok()) break;
          conns.emplace_back(std::move(*fd), secret);
          Conn& c = conns.back();
          if (!c.hs.Start().ok()) {
            conns.pop_back();
            continue;
          }
          c.out = c.hs.greeting();
        }
      }
      now = Clock::now();
      for (size_t i = 0; i < order.size(); ++i) {
        Conn& c = *order[i];
        short re = fds[i + 2].revents;
        if (re & (POLLIN | POLLHUP | POLLERR)) {
          while (true) {
            ssize_t got = recv(c.fd.get(), buf, sizeof(buf), 0);
            if (got > 0) {
              c.in.append(buf, static_cast<size_t>(got));
              if (c.in.size() > kMaxFrame + 8) break;
              continue;
            }
            if (got == 0 || (errno != EAGAIN && errno != EINTR)) c.closing = true;
            break;
          }
          // Judge what arrived even from a client that already hung up.
          if (!c.in.empty() && !Process(c)) c.closing = true;
        }
        if (c.waiting && now >= c.wait_until) {
          c.waiting = false;
          Reply(c, kMissing, "");
          if (!Process(c)) c.closing = true;
        }
        while (!c.out.empty() && !c.closing) {
          ssize_t put = send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL);
          if (put > 0) {
            c.out.erase(0, static_cast<size_t>(put));
            continue;
          }
          if (put < 0 && (errno == EAGAIN || errno == EINTR)) break;
          c.closing = true;
        }
      }
      conns.remove_if([](const Conn& c) { return c.closing; });
    }
  }
};

Result<std::unique_ptr<TcpStoreServer>> TcpStoreServer::Start(const std::string& host, int port,
                                                              std::string secret) {
  WEFT_ASSIGN_OR_RETURN(Listener l, ListenTcp(host, port));
  std::unique_ptr<TcpStoreServer> s(new TcpStoreServer());
  s->impl_ = std::make_unique<Impl>();
  s->impl_->secret = std::move(secret);
  s->impl_->listen_fd = std::move(l.fd);
  int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) return ErrnoError("eventfd", errno);
  s->impl_->wake_fd.Reset(efd);
  s->port_ = l.port;
  s->thread_ = NamedThread("weft-store", [impl = s->impl_.get()] { impl->Run(); });
  return s;
}

TcpStoreServer::~TcpStoreServer() {
  if (impl_) {
    impl_->stop.store(true);
    uint64_t one = 1;
    ssize_t ignored = write(impl_->wake_fd.get(), &one, sizeof(one));
    (void)ignored;
  }
  if (thread_.joinable()) thread_.join();
}

int TcpStoreServer::refused_connections() const { return impl_->refused.load(); }

Result<std::unique_ptr<TcpStoreClient>> TcpStoreClient::Connect(const HostPort& addr,
                                                                std::string secret,
                                                                Deadline deadline) {
  std::string where = "tcp://" + addr.ToString();
  auto fd = ConnectTcp(addr, deadline);
  if (!fd.ok()) {
    return Status(fd.status().code(),
                  "cannot reach the rendezvous store at " + where + ": " + fd.status().message());
  }
  Status hs = ClientHandshake(fd->get(), secret, "store-client", deadline);
  if (!hs.ok()) return hs.WithContext("rendezvous store at " + where);
  return std::unique_ptr<TcpStoreClient>(new TcpStoreClient(addr, std::move(*fd)));
}

Result<TcpStoreClient::Reply> TcpStoreClient::RoundTrip(const std::string& frame,
                                                        Deadline deadline) {
  std::lock_guard<std::mutex> lock(mu_);
  auto fail = [&](const Status& s) {
    return Status(s.code() == StatusCode::kDeadlineExceeded ? s.code() : StatusCode::kUnavailable,
                  "rendezvous store " + Describe() + ": " + s.message());
  };
  if (!fd_.valid()) return UnavailableError("rendezvous store " + Describe() + ": connection lost");
  Status s = WriteFull(fd_.get(), frame.data(), frame.size(), deadline);
  uint32_t len = 0;
  if (s.ok()) s = ReadFull(fd_.get(), &len, 4, deadline);
  if (s.ok() && (len == 0 || len > kMaxFrame)) s = DataLossError("bad reply frame");
  std::string body;
  if (s.ok()) {
    body.resize(len);
    s = ReadFull(fd_.get(), body.data(), len, deadline);
  }
  if (!s.ok()) {
    fd_.Reset();  // the stream is out of sync now; later calls fail fast
    return fail(s);
  }
  Reply reply;
  reply.status = static_cast<uint8_t>(body[0]);
  reply.payload = body.substr(1);
  return reply;
}

namespace {
Deadline RequestDeadline() { return Deadline::AfterMs(kStoreRequestTimeout.GetInt()); }
}  // namespace

Status TcpStoreClient::Set(std::string_view key, std::string_view value) {
  std::string body;
  PutStr(body, key);
  PutStr(body, value);
  WEFT_ASSIGN_OR_RETURN(auto r, RoundTrip(Frame(kSet, body), RequestDeadline()));
  return Status::Ok();
}

Result<std::string> TcpStoreClient::Get(std::string_view key, Deadline deadline) {
  int64_t wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline.Remaining()).count();
  std::string body;
  PutStr(body, key);
  PutI64(body, wait_ms);
  // The server answers "missing" when wait_ms passes; allow it a little slack to say so.
  Deadline io = deadline.infinite() ? deadline : Deadline::After(deadline.Remaining() + std::chrono::seconds(5));
  WEFT_ASSIGN_OR_RETURN(auto r, RoundTrip(Frame(kGet, body), io));
  if (r.status == kMissing) {
    return DeadlineExceededError("key '" + std::string(key) + "' did not appear in the store " +
                                 Describe() + " in time");
  }
  return std::move(r.payload);
}

Result<int64_t> TcpStoreClient::Add(std::string_view key, int64_t delta) {
  std::string body;
  PutStr(body, key);
  PutI64(body, delta);
  WEFT_ASSIGN_OR_RETURN(auto r, RoundTrip(Frame(kAdd, body), RequestDeadline()));
  if (r.status != kOk || r.payload.size() != 8) {
    return InvalidArgumentError("store Add('" + std::string(key) + "'): " + r.payload);
  }
  int64_t v;
  std::memcpy(&v, r.payload.data(), 8);
  return v;
}

Result<bool> TcpStoreClient::Check(std::string_view key) {
  std::string body;
  PutStr(body, key);
  WEFT_ASSIGN_OR_RETURN(auto r, RoundTrip(Frame(kCheck, body), RequestDeadline()));
  return r.payload.size() == 1 && r.payload[0] == '1';
}

Status TcpStoreClient::Delete(std::string_view key) {
  std::string body;
  PutStr(body, key);
  WEFT_ASSIGN_OR_RETURN(auto r, RoundTrip(Frame(kDelete, body), RequestDeadline()));
  return Status::Ok();
}

}  // namespace weft::rendezvous
