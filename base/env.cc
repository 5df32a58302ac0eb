#include "base/env.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>

namespace weft {
namespace {

struct Registry {
  std::mutex mu;
  std::vector<const EnvKnob*> knobs;
  std::map<const EnvKnob*, std::string> values;  // cached on first Get()
};

Registry& GetRegistry() {
  static Registry* registry = new Registry();  // never destroyed: knobs may be read at exit
  return *registry;
}

}  // namespace

EnvKnob::EnvKnob(const char* name, const char* default_value, const char* doc)
    : name_(name), default_(default_value), doc_(doc) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.knobs.push_back(this);
}

bool EnvKnob::IsSet() const { return std::getenv(name_) != nullptr; }

const std::string& EnvKnob::Get() const {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.values.find(this);
  if (it == r.values.end()) {
    const char* v = std::getenv(name_);
    it = r.values.emplace(this, v ? std::string(v) : std::string(default_)).first;
  }
  return it->second;
}

bool ParseInt(std::string_view text, int64_t* out) {
  if (text.empty()) return false;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size()) return false;
  *out = v;
  return true;
}

bool ParseBytes(std::string_view text, int64_t* out) {
  if (text.empty()) return false;
  int64_t mult = 1;
  char last = text.back();
  if (last == 'K' || last == 'k') mult = int64_t{1} << 10;
  if (last == 'M' || last == 'm') mult = int64_t{1} << 20;
  if (last == 'G' || last == 'g') mult = int64_t{1} << 30;
  if (mult != 1) text.remove_suffix(1);
  int64_t v = 0;
  if (!ParseInt(text, &v) || v < 0) return false;
  if (v > (INT64_MAX / mult)) return false;
  *out = v * mult;
  return true;
}

int64_t EnvKnob::GetInt() const {
  int64_t v = 0;
  if (ParseInt(Get(), &v)) return v;
  std::fprintf(stderr, "weft: %s='%s' is not an integer; using the default %s\n", name_,
               Get().c_str(), default_);
  ParseInt(default_, &v);
  return v;
}

int64_t EnvKnob::GetBytes() const {
  int64_t v = 0;
  if (ParseBytes(Get(), &v)) return v;
  std::fprintf(stderr, "weft: %s='%s' is not a size (e.g. 4096, 64K, 4M); using the default %s\n",
               name_, Get().c_str(), default_);
  ParseBytes(default_, &v);
  return v;
}

Result<std::optional<int64_t>> BytesOrAuto(const EnvKnob& knob, int64_t min, int64_t max,
                                           std::string_view hint) {
  const std::string& value = knob.Get();
  if (value == "auto") return std::optional<int64_t>();
  int64_t v = 0;
  if (!ParseBytes(value, &v) || v < min || v > max) {
    return InvalidArgumentError(std::string(knob.name()) + "=" + value + ": want a size " +
                                std::string(hint) + " or auto");
  }
  return std::optional<int64_t>(v);
}

double EnvKnob::GetDouble() const {
  const std::string& s = Get();
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (!s.empty() && end == s.c_str() + s.size()) return v;
  std::fprintf(stderr, "weft: %s='%s' is not a number; using the default %s\n", name_, s.c_str(),
               default_);
  return std::strtod(default_, nullptr);
}

bool EnvKnob::GetBool() const {
  const std::string& s = Get();
  if (s == "1" || s == "true" || s == "yes" || s == "on") return true;
  if (s == "0" || s == "false" || s == "no" || s == "off" || s.empty()) return false;
  std::fprintf(stderr, "weft: %s='%s' is not a boolean (1/0, true/false); using the default %s\n",
               name_, s.c_str(), default_);
  return std::string_view(default_) == "1";
}

std::vector<const EnvKnob*> AllEnvKnobs() {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<const EnvKnob*> out = r.knobs;
  std::sort(out.begin(), out.end(), [](const EnvKnob* a, const EnvKnob* b) {
    return std::string_view(a->name()) < std::string_view(b->name());
  });
  return out;
}

}  // namespace weft
