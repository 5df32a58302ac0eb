// Prometheus text exposition (format 0.0.4): histograms with fixed buckets and a writer that emits
// HELP/TYPE lines once per family. Used by the scheduler and by ranks (collectives/metrics.h).
// Thread-compatible; owners guard their own.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace weft {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds)
      : bounds_(std::move(upper_bounds)), counts_(bounds_.size(), 0) {}
  void Observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  const std::vector<uint64_t>& counts() const { return counts_; }  // non-cumulative per bucket
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  double sum_ = 0;
};

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// Builds one exposition document. Label values are escaped; names must already be valid.
class MetricsWriter {
 public:
  void Family(const std::string& name, const std::string& type, const std::string& help);
  void Sample(const std::string& name, const MetricLabels& labels, double value);
  void WriteHistogram(const std::string& name, const std::string& help, const Histogram& h);
  // One labelled series of a histogram family already opened with Family(name, "histogram", ..):
  // name_bucket{labels, le} (cumulative, then le="+Inf"), name_sum and name_count. `counts` are
  // per bucket, not cumulative, one per bound; `count` is the total, which also holds the
  // observations above the last bound.
  void HistogramSeries(const std::string& name, const MetricLabels& labels,
                       const std::vector<double>& bounds, const std::vector<uint64_t>& counts,
                       uint64_t count, double sum);
  const std::string& text() const { return out_; }

 private:
  std::string out_;
};

// Escapes a label value per the exposition format (backslash, quote, newline).
std::string EscapeLabelValue(const std::string& v);

}  // namespace weft
