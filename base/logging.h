// Logging with levels and a rank prefix: `WEFT_LOG(WARN) << "slow peer " << peer;` writes
// "weft[3] W 15:04:05.123 file.cc:42] slow peer 5" to stderr. The level comes from WEFT_LOG_LEVEL
// (error, warn, info, debug, trace; default warn); the rank from SetLogRank(). Thread-safe.
#pragma once

#include <sstream>
#include <string_view>

namespace weft {

enum class LogLevel : int { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3, kTrace = 4 };

// Parses "error|warn|info|debug|trace" (or 0-4); false for anything else.
bool ParseLogLevel(std::string_view text, LogLevel* out);
LogLevel CurrentLogLevel();
void SetLogLevel(LogLevel level);
// The rank shown in every line; -1 (the default) shows none.
void SetLogRank(int rank);

namespace internal_log {
class Line {
 public:
  Line(LogLevel level, const char* file, int line);
  ~Line();
  std::ostream& stream() { return out_; }

 private:
  LogLevel level_;
  std::ostringstream out_;
};
}  // namespace internal_log

}  // namespace weft

#define WEFT_LOG_LEVEL_ERROR ::weft::LogLevel::kError
#define WEFT_LOG_LEVEL_WARN ::weft::LogLevel::kWarn
#define WEFT_LOG_LEVEL_INFO ::weft::LogLevel::kInfo
#define WEFT_LOG_LEVEL_DEBUG ::weft::LogLevel::kDebug
#define WEFT_LOG_LEVEL_TRACE ::weft::LogLevel::kTrace

#define WEFT_LOG(level)                                          \
  if (WEFT_LOG_LEVEL_##level > ::weft::CurrentLogLevel()) {      \
  } else                                                         \
    ::weft::internal_log::Line(WEFT_LOG_LEVEL_##level, __FILE__, __LINE__).stream()
