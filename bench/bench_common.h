// Shared by the baseline benchmark programs (Open MPI, Gloo, memory and loopback limits): size
// sweeps, timing statistics and the JSON line every program prints per measurement, so
// scripts/bench.sh can put weft and its peers side by side.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace weft::bench {

inline double NowUs() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Parses "8", "64K", "16M", "1G".
inline int64_t ParseSize(const char* s) {
  char* end = nullptr;
  double v = std::strtod(s, &end);
  if (end && (*end == 'K' || *end == 'k')) v *= 1024;
  if (end && (*end == 'M' || *end == 'm')) v *= 1024 * 1024;
  if (end && (*end == 'G' || *end == 'g')) v *= 1024.0 * 1024 * 1024;
  return static_cast<int64_t>(v);
}

inline std::vector<int64_t> Sizes(int64_t lo, int64_t hi, double f) {
  std::vector<int64_t> out;
  for (double b = static_cast<double>(lo); b <= hi * 1.0000001; b *= f) out.push_back(static_cast<int64_t>(b));
  return out;
}

// Median and 99th percentile of per-iteration times.
struct Stats {
  double mean = 0, p50 = 0, p99 = 0;
};
inline Stats Summarise(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / v.size();
  s.p50 = v[v.size() / 2];
  s.p99 = v[std::min(v.size() - 1, static_cast<size_t>(v.size() * 0.99))];
  return s;
}

inline void PrintRow(const std::string& lib, const std::string& coll, const std::string& algo,
                     int ranks, int64_t bytes, const Stats& s, double busbw_factor) {
  double algbw = s.p50 > 0 ? bytes / s.p50 / 1e3 : 0;
  std::printf("{\"lib\":\"%s\",\"collective\":\"%s\",\"algo\":\"%s\",\"ranks\":%d,\"size\":%lld,"
              "\"mean_us\":%.3f,\"p50_us\":%.3f,\"p99_us\":%.3f,\"algbw\":%.4f,\"busbw\":%.4f}\n",
              lib.c_str(), coll.c_str(), algo.c_str(), ranks, static_cast<long long>(bytes), s.mean,
              s.p50, s.p99, algbw, algbw * busbw_factor);
  std::fflush(stdout);
}

// Iterations for a size: many for small messages, few for large ones, bounded time.
inline int ItersFor(int64_t bytes, int base) {
  if (bytes <= (64 << 10)) return base * 10;
  if (bytes <= (4 << 20)) return base * 2;
  return std::max(3, base / 2);
}

}  // namespace weft::bench
