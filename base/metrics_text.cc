// Prometheus text format writer.
#include "base/metrics_text.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace weft {

namespace {
std::string FormatValue(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  // The shortest form that reads back exactly ("2.5e-07", not "2.4999999999999999e-07").
  char buf[64];
  for (int precision : {15, 16, 17}) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}
}  // namespace

void Histogram::Observe(double v) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (v <= bounds_[i]) {
      counts_[i]++;
      break;
    }
  }
  count_++;
  sum_ += v;
}

std::string EscapeLabelValue(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out.push_back(c);
  }
  return out;
}

void MetricsWriter::Family(const std::string& name, const std::string& type,
                           const std::string& help) {
  out_ += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void MetricsWriter::Sample(const std::string& name, const MetricLabels& labels, double value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += "{";
    for (size_t i = 0; i < labels.size(); ++i) {
      if (i) out_ += ",";
      out_ += labels[i].first + "=\"" + EscapeLabelValue(labels[i].second) + "\"";
    }
    out_ += "}";
  }
  out_ += ' ';
  out_ += FormatValue(value);
  out_ += '\n';
}

void MetricsWriter::WriteHistogram(const std::string& name, const std::string& help,
                                   const Histogram& h) {
  Family(name, "histogram", help);
  HistogramSeries(name, {}, h.bounds(), h.counts(), h.count(), h.sum());
}

void MetricsWriter::HistogramSeries(const std::string& name, const MetricLabels& labels,
                                    const std::vector<double>& bounds,
                                    const std::vector<uint64_t>& counts, uint64_t count,
                                    double sum) {
  MetricLabels with_le = labels;
  with_le.emplace_back("le", "");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds.size(); ++i) {
    cumulative += counts[i];
    with_le.back().second = FormatValue(bounds[i]);
    Sample(name + "_bucket", with_le, static_cast<double>(cumulative));
  }
  with_le.back().second = "+Inf";
  Sample(name + "_bucket", with_le, static_cast<double>(count));
  Sample(name + "_sum", labels, sum);
  Sample(name + "_count", labels, static_cast<double>(count));
}

}  // namespace weft
