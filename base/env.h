// Environment knobs: each WEFT_* variable is declared once, next to the code it steers, with its
// default and a one-line doc (`WEFT_ENV_KNOB(kName, "WEFT_X", "default", "doc")`). The value is
// read once, on first use, and cached; `weft env` lists every knob linked into the binary.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace weft {

class EnvKnob {
 public:
  // Registers the knob; knobs are globals, so this runs at static-initialisation time.
  EnvKnob(const char* name, const char* default_value, const char* doc);
  EnvKnob(const EnvKnob&) = delete;
  EnvKnob& operator=(const EnvKnob&) = delete;

  const char* name() const { return name_; }
  const char* default_value() const { return default_; }
  const char* doc() const { return doc_; }
  bool IsSet() const;
  // The value (environment or default), read once and cached. Thread-safe.
  const std::string& Get() const;
  // Parsed forms. A value that does not parse logs a warning naming the knob and gives the default.
  int64_t GetInt() const;
  double GetDouble() const;
  bool GetBool() const;
  // Size with optional K/M/G suffix (powers of 1024): "64K" -> 65536.
  int64_t GetBytes() const;

 private:
  const char* name_;
  const char* default_;
  const char* doc_;
};

// A size knob that also takes "auto": nullopt for auto, else its size, which must lie in
// [min, max]. Anything else is refused naming the knob, as "NAME=value: want a size <hint> or
// auto" (the caller fails with it rather than running on a default the user did not ask for).
Result<std::optional<int64_t>> BytesOrAuto(const EnvKnob& knob, int64_t min, int64_t max,
                                           std::string_view hint);

// All knobs linked into this binary, sorted by name.
std::vector<const EnvKnob*> AllEnvKnobs();

// Parses "123", "64K", "4M", "1G" into bytes; false on anything else (negative included).
bool ParseBytes(std::string_view text, int64_t* out);
bool ParseInt(std::string_view text, int64_t* out);

}  // namespace weft

#define WEFT_ENV_KNOB(var, name, default_value, doc) \
  const ::weft::EnvKnob var(name, default_value, doc)
