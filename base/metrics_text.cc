// Prometheus text format writer.
#include "base/metrics_text.h"

#include <cmath>
#include <cstdio>

namespace weft {

namespace {
std::string FormatValue(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
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

void MetricsWriter::Sample(const std::string& name,
                           const std::vector<std::pair<std::string, std::string>>& labels,
                           double value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += "{";
    for (size_t i = 0; i < labels.size(); ++i) {
      if (i) out_ += ",";
      out_ += labels[i].first + "=\"" + EscapeLabelValue(labels[i].second) + "\"";
    }
    out_ += "}";
  }
  out_ += " " + FormatValue(value) + "\n";
}

void MetricsWriter::WriteHistogram(const std::string& name, const std::string& help,
                                   const Histogram& h) {
  Family(name, "histogram", help);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < h.bounds().size(); ++i) {
    cumulative += h.counts()[i];
    Sample(name + "_bucket", {{"le", FormatValue(h.bounds()[i])}}, static_cast<double>(cumulative));
  }
  Sample(name + "_bucket", {{"le", "+Inf"}}, static_cast<double>(h.count()));
  Sample(name + "_sum", {}, h.sum());
  Sample(name + "_count", {}, static_cast<double>(h.count()));
}

}  // namespace weft
