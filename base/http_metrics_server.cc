// The scrape endpoint. Requests are read with a deadline (a slow client cannot stall the loop for
// more than a second) and answered with Connection: close.
#include "base/http_metrics_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "base/deadline.h"
#include "base/logging.h"

namespace weft {

Result<std::unique_ptr<HttpMetricsServer>> HttpMetricsServer::Start(
    const std::string& host, int port, std::function<std::string()> render) {
  std::unique_ptr<HttpMetricsServer> s(new HttpMetricsServer());
  WEFT_ASSIGN_OR_RETURN(Listener l, ListenTcp(host, port));
  s->listen_ = std::move(l.fd);
  s->port_ = l.port;
  int p[2];
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return ErrnoError("metrics server pipe", errno);
  s->wake_[0].Reset(p[0]);
  s->wake_[1].Reset(p[1]);
  s->render_ = std::move(render);
  s->thread_ = std::thread([raw = s.get()] { raw->Loop(); });
  return s;
}

HttpMetricsServer::~HttpMetricsServer() {
  if (thread_.joinable()) {
    char c = 1;
    (void)!write(wake_[1].get(), &c, 1);
    thread_.join();
  }
}

void HttpMetricsServer::Loop() {
  while (true) {
    pollfd fds[2] = {{listen_.get(), POLLIN, 0}, {wake_[0].get(), POLLIN, 0}};
    int n = poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (fds[1].revents & POLLIN)) return;
    if (fds[0].revents & POLLIN) {
      auto conn = AcceptTcp(listen_.get());
      if (conn.ok()) Serve(conn->get());
    }
  }
}

void HttpMetricsServer::Serve(int fd) {
  Deadline deadline = Deadline::AfterMs(1000);
  std::string req;
  char buf[1024];
  while (req.find("\r\n\r\n") == std::string::npos && req.size() < 8192) {
    pollfd p{fd, POLLIN, 0};
    int n = poll(&p, 1, deadline.RemainingMsForPoll());
    if (n <= 0) return;
    ssize_t r = recv(fd, buf, sizeof(buf), 0);
    if (r <= 0) {
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      break;
    }
    req.append(buf, static_cast<size_t>(r));
  }
  std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
  size_t sp1 = req.find(' '), sp2 = sp1 == std::string::npos ? sp1 : req.find(' ', sp1 + 1);
  std::string method = req.substr(0, sp1);
  std::string path = sp2 == std::string::npos ? "" : req.substr(sp1 + 1, sp2 - sp1 - 1);
  if (path.find('?') != std::string::npos) path.resize(path.find('?'));
  if (method != "GET") {
    status = "405 Method Not Allowed";
    body = "only GET\n";
  } else if (path == "/metrics") {
    body = render_();
  } else if (path == "/healthz") {
    body = "ok\n";
  } else {
    status = "404 Not Found";
    body = "not found; try /metrics\n";
  }
  std::string resp = "HTTP/1.0 " + status + "\r\nContent-Type: " + type +
                     "\r\nContent-Length: " + std::to_string(body.size()) +
                     "\r\nConnection: close\r\n\r\n" + body;
  Status s = WriteFull(fd, resp.data(), resp.size(), Deadline::AfterMs(2000));
  if (!s.ok()) {
    WEFT_LOG(DEBUG) << "metrics scrape: " << s.ToString();
  }
}

}  // namespace weft
