#include "base/logging.h"

#include <sys/time.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>

#include "base/env.h"

namespace weft {
namespace {

WEFT_ENV_KNOB(kLogLevelKnob, "WEFT_LOG_LEVEL", "warn",
              "log verbosity: error, warn, info, debug or trace");

std::atomic<int> g_rank{-1};

int InitialLevel() {
  LogLevel level = LogLevel::kWarn;
  std::string text = kLogLevelKnob.Get();
  if (!ParseLogLevel(text, &level)) {
    std::fprintf(stderr, "weft: WEFT_LOG_LEVEL='%s' is not one of error|warn|info|debug|trace; "
                 "using warn\n", text.c_str());
    level = LogLevel::kWarn;
  }
  return static_cast<int>(level);
}

std::atomic<int>& LevelCell() {
  static std::atomic<int> level{InitialLevel()};
  return level;
}

}  // namespace

bool ParseLogLevel(std::string_view text, LogLevel* out) {
  static constexpr std::string_view kNames[] = {"error", "warn", "info", "debug", "trace"};
  for (int i = 0; i < 5; ++i) {
    if (text == kNames[i] || (text.size() == 1 && text[0] == '0' + i)) {
      *out = static_cast<LogLevel>(i);
      return true;
    }
  }
  if (text == "warning") {
    *out = LogLevel::kWarn;
    return true;
  }
  return false;
}

LogLevel CurrentLogLevel() { return static_cast<LogLevel>(LevelCell().load(std::memory_order_relaxed)); }
void SetLogLevel(LogLevel level) { LevelCell().store(static_cast<int>(level)); }
void SetLogRank(int rank) { g_rank.store(rank); }

namespace internal_log {

Line::Line(LogLevel level, const char* file, int line) : level_(level) {
  static constexpr char kLetters[] = "EWIDT";
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm parts;
  localtime_r(&tv.tv_sec, &parts);
  char when[32];
  std::snprintf(when, sizeof(when), "%02d:%02d:%02d.%03d", parts.tm_hour, parts.tm_min,
                parts.tm_sec, static_cast<int>(tv.tv_usec / 1000));
  const char* base = std::strrchr(file, '/');
  base = base ? base + 1 : file;
  int rank = g_rank.load(std::memory_order_relaxed);
  if (rank >= 0) {
    out_ << "weft[" << rank << "] ";
  } else {
    out_ << "weft ";
  }
  out_ << kLetters[static_cast<int>(level)] << ' ' << when << ' ' << base << ':' << line << "] ";
}

Line::~Line() {
  out_ << '\n';
  std::string text = out_.str();
  // One write per line keeps lines from different threads whole.
  std::fwrite(text.data(), 1, text.size(), stderr);
  (void)level_;
}

}  // namespace internal_log
}  // namespace weft
