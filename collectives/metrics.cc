// The metrics registry: zero-initialised static arrays of relaxed atomics (so recording never
// allocates or locks), the label tables filled at set-up, the text rendering and the /metrics
// server started from the environment.
#include "collectives/metrics.h"

#include <memory>
#include <mutex>
#include <vector>

#include "base/env.h"
#include "base/http_metrics_server.h"
#include "base/logging.h"
#include "base/metrics_text.h"

namespace weft::collectives::metrics {

WEFT_ENV_KNOB(kMetricsPortKnob, "WEFT_METRICS_PORT", "",
              "serve Prometheus /metrics from every rank at this port + its local rank (0: an "
              "ephemeral port, logged); unset: no metrics are recorded");
WEFT_ENV_KNOB(kMetricsHostKnob, "WEFT_METRICS_HOST", "127.0.0.1",
              "address the ranks' /metrics servers listen on (see WEFT_METRICS_PORT)");

namespace internal {
std::atomic<bool> g_enabled{false};
std::atomic<uint64_t> g_sent_bytes[kMaxTransportLabels * 2];
}  // namespace internal

namespace {

// Upper bounds in nanoseconds: 0.25 µs (an intra-host small all-reduce) to 10 s, 1-2.5-5 steps.
constexpr int kNumBounds = 24;
constexpr int64_t kBoundsNs[kNumBounds] = {
    250,      500,       1000,      2500,      5000,       10000,      25000,      50000,
    100000,   250000,    500000,    1000000,   2500000,    5000000,    10000000,   25000000,
    50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000};

struct LatencySeries {
  std::atomic<uint64_t> buckets[kNumBounds + 1];  // the last: above the largest bound
  std::atomic<uint64_t> sum_ns;
};

constexpr int kNumSeries = kNumOps * kNumAlgos * kMaxTransportLabels;
constexpr int kNumCodes = static_cast<int>(StatusCode::kUnauthenticated) + 1;

LatencySeries g_latency[kNumSeries];
std::atomic<uint64_t> g_errors[kNumOps * kNumCodes];

int SeriesIndex(Op op, Algo algo, uint8_t transport) {
  return (static_cast<int>(op) * kNumAlgos + static_cast<int>(algo)) * kMaxTransportLabels +
         transport;
}

// Labels filled at set-up, read when rendering. Never destroyed: the server thread may render
// while the process exits.
struct LabelTables {
  std::mutex mu;
  std::vector<std::string> transports{"self", "arena", "mixed"};
  std::string rank, world_size;  // empty until a root communicator is created
};
LabelTables& Tables() {
  static auto* t = new LabelTables();
  return *t;
}

// Owns the /metrics server; destroyed (thread joined) at exit.
struct ServerHolder {
  std::mutex mu;
  std::unique_ptr<HttpMetricsServer> server;
};
ServerHolder& Server() {
  static ServerHolder h;
  return h;
}

int FindTransport(const std::vector<std::string>& names, const std::string& name) {
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name) return static_cast<int>(i);
  }
  return -1;
}

std::vector<double> BoundsSeconds() {
  std::vector<double> b(kNumBounds);
  for (int i = 0; i < kNumBounds; ++i) b[i] = static_cast<double>(kBoundsNs[i]) / 1e9;
  return b;
}

}  // namespace

uint8_t TransportLabel(const std::string& name) {
  LabelTables& t = Tables();
  std::lock_guard<std::mutex> lock(t.mu);
  int i = FindTransport(t.transports, name);
  if (i >= 0) return static_cast<uint8_t>(i);
  if (t.transports.size() >= kMaxTransportLabels) return kTransportMixed;
  t.transports.push_back(name);
  return static_cast<uint8_t>(t.transports.size() - 1);
}

void SetEnabled(bool on) { internal::g_enabled.store(on, std::memory_order_relaxed); }

void ObserveLatency(Op op, Algo algo, uint8_t transport, int64_t nanoseconds) {
  if (nanoseconds < 0) nanoseconds = 0;
  LatencySeries& s = g_latency[SeriesIndex(op, algo, transport)];
  int b = 0;
  while (b < kNumBounds && nanoseconds > kBoundsNs[b]) ++b;
  s.buckets[b].fetch_add(1, std::memory_order_relaxed);
  s.sum_ns.fetch_add(static_cast<uint64_t>(nanoseconds), std::memory_order_relaxed);
}

void CountError(Op op, StatusCode code) {
  int c = static_cast<int>(code);
  if (c < 0 || c >= kNumCodes) c = static_cast<int>(StatusCode::kUnknown);
  g_errors[static_cast<int>(op) * kNumCodes + c].fetch_add(1, std::memory_order_relaxed);
}

void SetJobLabels(int rank, int world_size) {
  LabelTables& t = Tables();
  std::lock_guard<std::mutex> lock(t.mu);
  if (!t.rank.empty()) return;
  t.rank = std::to_string(rank);
  t.world_size = std::to_string(world_size);
}

std::string RenderText() {
  std::vector<std::string> transports;
  MetricLabels job;
  {
    LabelTables& t = Tables();
    std::lock_guard<std::mutex> lock(t.mu);
    transports = t.transports;
    if (!t.rank.empty()) job = {{"rank", t.rank}, {"world_size", t.world_size}};
  }
  auto with_job = [&job](MetricLabels l) {
    l.insert(l.end(), job.begin(), job.end());
    return l;
  };
  MetricsWriter w;
  const std::vector<double> bounds = BoundsSeconds();
  bool opened = false;
  for (int op = 0; op < kNumOps; ++op) {
    for (int algo = 0; algo < kNumAlgos; ++algo) {
      for (size_t tr = 0; tr < transports.size(); ++tr) {
        LatencySeries& s = g_latency[SeriesIndex(static_cast<Op>(op), static_cast<Algo>(algo),
                                                 static_cast<uint8_t>(tr))];
        std::vector<uint64_t> counts(kNumBounds);
        uint64_t total = 0;
        for (int b = 0; b <= kNumBounds; ++b) {
          uint64_t v = s.buckets[b].load(std::memory_order_relaxed);
          if (b < kNumBounds) counts[b] = v;
          total += v;
        }
        if (total == 0) continue;
        if (!opened) {
          w.Family("weft_collective_latency_seconds", "histogram",
                   "Wall time of successful collective and point-to-point operations on this "
                   "rank, by operation, algorithm and transport.");
          opened = true;
        }
        double sum = static_cast<double>(s.sum_ns.load(std::memory_order_relaxed)) / 1e9;
        w.HistogramSeries("weft_collective_latency_seconds",
                          with_job({{"op", kOpNames[op]},
                                    {"algorithm", kAlgoNames[algo]},
                                    {"transport", transports[tr]}}),
                          bounds, counts, total, sum);
      }
    }
  }
  opened = false;
  for (size_t tr = 0; tr < transports.size(); ++tr) {
    for (int pc = 0; pc < 2; ++pc) {
      uint64_t v = internal::g_sent_bytes[tr * 2 + pc].load(std::memory_order_relaxed);
      if (v == 0) continue;
      if (!opened) {
        w.Family("weft_transport_sent_bytes_total", "counter",
                 "Payload bytes this rank posted to transport endpoints, or wrote into a "
                 "shared-memory arena for its peers (transport=\"arena\"), by peer class.");
        opened = true;
      }
      w.Sample("weft_transport_sent_bytes_total",
               with_job({{"transport", transports[tr]},
                         {"peer_class", pc == 0 ? "same_host" : "remote"}}),
               static_cast<double>(v));
    }
  }
  opened = false;
  for (int op = 0; op < kNumOps; ++op) {
    for (int c = 0; c < kNumCodes; ++c) {
      uint64_t v = g_errors[op * kNumCodes + c].load(std::memory_order_relaxed);
      if (v == 0) continue;
      if (!opened) {
        w.Family("weft_collective_errors_total", "counter",
                 "Operations that returned an error on this rank, by operation and status code.");
        opened = true;
      }
      w.Sample("weft_collective_errors_total",
               with_job({{"op", kOpNames[op]},
                         {"code", std::string(StatusCodeName(static_cast<StatusCode>(c)))}}),
               static_cast<double>(v));
    }
  }
  return w.text();
}

uint64_t LatencyCount(Op op, Algo algo, const std::string& transport) {
  int tr;
  {
    LabelTables& t = Tables();
    std::lock_guard<std::mutex> lock(t.mu);
    tr = FindTransport(t.transports, transport);
  }
  if (tr < 0) return 0;
  LatencySeries& s = g_latency[SeriesIndex(op, algo, static_cast<uint8_t>(tr))];
  uint64_t total = 0;
  for (int b = 0; b <= kNumBounds; ++b) total += s.buckets[b].load(std::memory_order_relaxed);
  return total;
}

double LatencySumSeconds(Op op, Algo algo, const std::string& transport) {
  int tr;
  {
    LabelTables& t = Tables();
    std::lock_guard<std::mutex> lock(t.mu);
    tr = FindTransport(t.transports, transport);
  }
  if (tr < 0) return 0;
  return static_cast<double>(g_latency[SeriesIndex(op, algo, static_cast<uint8_t>(tr))].sum_ns.load(
             std::memory_order_relaxed)) /
         1e9;
}

uint64_t SentBytes(const std::string& transport, PeerClass peer_class) {
  int tr;
  {
    LabelTables& t = Tables();
    std::lock_guard<std::mutex> lock(t.mu);
    tr = FindTransport(t.transports, transport);
  }
  if (tr < 0) return 0;
  return internal::g_sent_bytes[SentCounter(static_cast<uint8_t>(tr), peer_class)].load(
      std::memory_order_relaxed);
}

uint64_t Errors(Op op, StatusCode code) {
  return g_errors[static_cast<int>(op) * kNumCodes + static_cast<int>(code)].load(
      std::memory_order_relaxed);
}

void StartFromEnvironment(int rank, int world_size, int local_rank) {
  SetJobLabels(rank, world_size);
  static std::once_flag once;
  std::call_once(once, [&] {
    const std::string& text = kMetricsPortKnob.Get();
    if (text.empty()) return;
    int64_t base = 0;
    if (!ParseInt(text, &base) || base < 0 || base > 65535) {
      WEFT_LOG(WARN) << "WEFT_METRICS_PORT='" << text << "' is not a port (0..65535); no metrics";
      return;
    }
    const int64_t port = base == 0 ? 0 : base + local_rank;
    if (port > 65535) {
      WEFT_LOG(WARN) << "WEFT_METRICS_PORT " << base << " + local rank " << local_rank
                     << " is above 65535; no metrics";
      return;
    }
    SetEnabled(true);
    const std::string& host = kMetricsHostKnob.Get();
    auto server = HttpMetricsServer::Start(host, static_cast<int>(port), RenderText);
    if (!server.ok()) {
      WEFT_LOG(WARN) << "rank " << rank << ": cannot serve /metrics on " << host << ":" << port
                     << " (" << server.status().ToString() << "); recording without serving";
      return;
    }
    const int bound = (*server)->port();
    {
      ServerHolder& h = Server();
      std::lock_guard<std::mutex> lock(h.mu);
      h.server = std::move(*server);
    }
    // An ephemeral port is unknowable otherwise, so say it at the default level.
    if (base == 0) {
      WEFT_LOG(WARN) << "rank " << rank << " serves /metrics on " << host << ":" << bound;
    } else {
      WEFT_LOG(INFO) << "rank " << rank << " serves /metrics on " << host << ":" << bound;
    }
  });
}

int ServerPort() {
  ServerHolder& h = Server();
  std::lock_guard<std::mutex> lock(h.mu);
  return h.server ? h.server->port() : 0;
}

}  // namespace weft::collectives::metrics
